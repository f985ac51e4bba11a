"""Rooms: music as the device hears it (training.rooms, training.room_features, calibration)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from firmware_py.audio import load_audio
from firmware_py.errors import GenreEdgeError
from firmware_py.features import DEFAULT_PARAMS, logmel
from tests.paths import clip
from training import rooms
from training.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
)
from training.dataset import Track
from training.room_features import build_room_cache, room_tracks

FS = 16000


def rms_dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2))))


@pytest.fixture(scope="module")
def test_rooms(tmp_path_factory: pytest.TempPathFactory) -> rooms.RoomSet:
    return rooms.room_set("test", FS, tmp_path_factory.mktemp("rooms-cache"))


def test_room_sets_are_seeded_disjoint_and_cached(tmp_path: Path, test_rooms: rooms.RoomSet) -> None:
    again = rooms.room_set("test", FS, tmp_path)
    assert again.digest == test_rooms.digest and len(again.rirs) == 8
    assert all(np.array_equal(a, b) for a, b in zip(again.rirs, test_rooms.rirs, strict=True))
    cached = rooms.room_set("test", FS, tmp_path)  # from the cache file this time
    assert all(np.array_equal(a, b) for a, b in zip(cached.rirs, again.rirs, strict=True))
    val = rooms.room_set("val", FS, tmp_path)
    assert val.digest != test_rooms.digest
    assert not any(len(a) == len(b) and np.allclose(a, b) for a in val.rirs for b in test_rooms.rirs)
    # the same track always meets the same conditions; another track other ones
    assert test_rooms.conditions(3, "rock/a") == test_rooms.conditions(3, "rock/a")
    assert test_rooms.conditions(3, "rock/a") != test_rooms.conditions(3, "rock/b")
    assert test_rooms.conditions(2, "rock/a") == test_rooms.conditions(3, "rock/a")[:2]
    # evaluation conditions are the device's: -25 dBFS, 120 Hz - 7 kHz, SNR 15-25 dB
    for c in test_rooms.conditions(20, "x"):
        assert (c.level_dbfs, c.mic_highpass_hz, c.mic_lowpass_hz) == (-25.0, 120.0, 7000.0)
        assert 15.0 <= c.snr_db <= 25.0 and c.noise in rooms.NOISE_KINDS


def test_simulated_responses_decay_like_rooms(test_rooms: rooms.RoomSet) -> None:
    for h in test_rooms.rirs:
        assert int(np.argmax(np.abs(h))) == 32 and np.abs(h).max() == pytest.approx(1.0)
        energy = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]  # Schroeder integral
        edc = 10 * np.log10(energy / energy[0])
        # a living room: -20 dB reached within ~0.1-0.6 s (RT60 0.3-0.9 s would give 0.1-0.3 s)
        t20 = np.argmax(edc < -20.0) / FS
        assert 0.03 <= t20 <= 0.8, t20


def test_rendering_is_aligned_at_the_level_and_band_asked_for(test_rooms: rooms.RoomSet) -> None:
    x = load_audio(clip("rock", 0, "test"), FS)[: 10 * FS]
    cond = test_rooms.conditions(1, "align")[0]
    y = rooms.render(x, FS, cond, test_rooms.rirs[cond.rir])
    assert y.shape == x.shape and y.dtype == np.float32 and np.abs(y).max() <= 1.0
    assert rms_dbfs(y) == pytest.approx(-25.0, abs=0.5)
    # aligned with the clean clip: the cross-correlation peaks within two frames (20 ms;
    # strong early reflections and the filters' group delay can outweigh the direct path)
    lag = np.argmax(np.correlate(y[FS : 3 * FS], x[FS : 3 * FS - 400], mode="valid"))
    assert lag <= 320, lag
    # the microphone band: little left below 60 Hz
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / FS)
    assert spec[f < 60].sum() < 0.02 * spec[(f > 200) & (f < 4000)].sum()
    # the same condition renders the same samples (seeded noise)
    assert np.array_equal(y, rooms.render(x, FS, cond, test_rooms.rirs[cond.rir]))


def test_reverberation_smears_and_noise_fills_the_gaps(test_rooms: rooms.RoomSet) -> None:
    # a click train: in a room the frames between clicks fill with the reverberant tail
    x = np.zeros(4 * FS)
    x[:: FS // 2] = 0.9
    cond = dataclasses.replace(test_rooms.conditions(1, "clicks")[0], snr_db=60.0,
                               self_noise_dbfs=-120.0)
    y = rooms.render(x, FS, cond, test_rooms.rirs[cond.rir])
    clean, room = logmel(x.astype(np.float32)), logmel(y)
    gap = slice(10, 40)  # 0.1-0.4 s after the first click
    assert room[gap].mean() - room.max() > clean[gap].mean() - clean.max() + 30


@pytest.mark.parametrize("kind", rooms.NOISE_KINDS)
def test_synthetic_noises_have_unit_rms_and_their_own_colour(kind: str) -> None:
    n = rooms.synthetic_noise(np.random.default_rng(1), 4 * FS, FS, kind)
    assert n.shape == (4 * FS,) and np.std(n) == pytest.approx(1.0, rel=1e-6)
    spec = np.abs(np.fft.rfft(n)) ** 2
    f = np.fft.rfftfreq(len(n), 1 / FS)
    low, high = spec[(f > 50) & (f < 500)].sum(), spec[(f > 2000) & (f < 7000)].sum()
    assert low > high  # every household background is darker than white noise
    with pytest.raises(GenreEdgeError, match="unknown noise kind"):
        rooms.synthetic_noise(np.random.default_rng(1), 10, FS, "jet")


def test_user_responses_and_noises_from_folders(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "rir").mkdir()
    t = np.arange(int(0.4 * 48000)) / 48000
    h = np.concatenate([np.zeros(500), rng.standard_normal(t.size) * np.exp(-t / 0.08)])
    sf.write(tmp_path / "rir" / "livingroom.wav", (0.5 * h / np.abs(h).max()), 48000)
    (tmp_path / "noise").mkdir()
    sf.write(tmp_path / "noise" / "fridge.wav", 0.1 * rng.standard_normal(FS), FS)
    rs = rooms.room_set("test", FS, tmp_path / "c", rir_dir=tmp_path / "rir",
                        noise_dir=tmp_path / "noise")
    assert rs.source == str(tmp_path / "rir") and len(rs.rirs) == 1 and len(rs.noises) == 1
    assert int(np.argmax(np.abs(rs.rirs[0]))) == 32  # aligned, resampled to 16 kHz
    cond = rs.conditions(1, "x")[0]
    assert cond.noise == "file:0" and cond.rir == 0
    y = rooms.render(np.sin(np.arange(2 * FS) / 5.0), FS, cond, rs.rirs[0], rs.noises)
    assert rms_dbfs(y) == pytest.approx(-25.0, abs=0.5)
    # The recordings were resampled: another resampler makes other renderings (another
    # digest, so their room features are not reused); simulated rooms are not resampled.
    import firmware_py.audio

    simulated = rooms.room_set("test", FS, None, n_rirs=1).digest
    monkeypatch.setattr(firmware_py.audio, "RESAMPLER_ID", "another-resampler")
    again = rooms.room_set("test", FS, tmp_path / "c", rir_dir=tmp_path / "rir",
                           noise_dir=tmp_path / "noise")
    assert again.digest != rs.digest
    assert rooms.room_set("test", FS, None, n_rirs=1).digest == simulated
    monkeypatch.undo()
    # keyed by content: a copy of the folders (new modification times) keeps the digest,
    # another response written with the old modification time does not
    shutil.copytree(tmp_path / "rir", tmp_path / "rir-copy")
    shutil.copytree(tmp_path / "noise", tmp_path / "noise-copy")
    os.utime(tmp_path / "rir-copy" / "livingroom.wav", ns=(1, 1))
    copy = rooms.room_set("test", FS, tmp_path / "c", rir_dir=tmp_path / "rir-copy",
                          noise_dir=tmp_path / "noise-copy")
    assert copy.digest == rs.digest
    st = (tmp_path / "rir-copy" / "livingroom.wav").stat()
    sf.write(tmp_path / "rir-copy" / "livingroom.wav", (0.4 * h / np.abs(h).max()), 48000)
    os.utime(tmp_path / "rir-copy" / "livingroom.wav", ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = rooms.room_set("test", FS, tmp_path / "c", rir_dir=tmp_path / "rir-copy",
                            noise_dir=tmp_path / "noise-copy")
    assert edited.digest != copy.digest
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenreEdgeError, match="--rir-dir .* holds no audio files"):
        rooms.room_set("test", FS, None, rir_dir=tmp_path / "empty")
    with pytest.raises(GenreEdgeError, match="--noise-dir .* is not a folder"):
        rooms.room_set("test", FS, None, noise_dir=tmp_path / "missing")
    silent = tmp_path / "silent-rir"
    silent.mkdir()
    sf.write(silent / "zero.wav", np.zeros(100), FS)
    with pytest.raises(GenreEdgeError, match="empty, silent or not finite"):
        rooms.room_set("test", FS, None, rir_dir=silent)


def test_room_tracks_are_rendered_once_and_read_from_the_cache(tmp_path: Path,
                                                               test_rooms: rooms.RoomSet) -> None:
    paths = [clip("jazz", 0, "test"), clip("metal", 0, "test")]
    tracks = [Track(f"g/{i}", i, "g", p, DEFAULT_PARAMS, tmp_path) for i, p in enumerate(paths)]
    items = room_tracks(tracks, test_rooms, 2)
    assert [(it.track_id, it.k) for it in items] == [("g/0", 0), ("g/0", 1), ("g/1", 0), ("g/1", 1)]
    assert build_room_cache(items, workers=1, progress=False) == {}
    mtimes = [it.cache_path.stat().st_mtime_ns for it in items]
    assert build_room_cache(items, workers=1, progress=False) == {}
    assert [it.cache_path.stat().st_mtime_ns for it in items] == mtimes
    f = np.asarray(items[1].features())
    expected = logmel(rooms.render(load_audio(paths[0], FS), FS, items[1].condition,
                                   test_rooms.rirs[items[1].condition.rir]))
    assert f.shape == expected.shape and np.abs(f - expected).max() <= 1e-4
    assert f.shape[0] == np.asarray(tracks[0].features()).shape[0]  # aligned, same length
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00not audio")
    bad = room_tracks([Track("g/b", 0, "g", broken, DEFAULT_PARAMS, tmp_path)], test_rooms, 1)
    failed = build_room_cache(bad, workers=1, progress=False)
    assert list(failed) == [str(broken)] and "\n" not in failed[str(broken)]


# -- calibration ----------------------------------------------------------------------
def test_temperature_scaling_fixes_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), labels] += 1.2  # ~60 % accurate
    # with unit Gaussian noise and a shift of 1.2 the true posterior is softmax(1.2 * logits)
    truth = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1 / 1.2)
    assert expected_calibration_error(truth, labels) < 0.03
    overconfident = apply_temperature(truth, 0.3)  # logits x 3.3
    assert expected_calibration_error(overconfident, labels) > 0.15
    t = fit_temperature([overconfident[:2000]], [0])  # one "track" of label 0 is not enough...
    assert t > 0  # ...but it still fits something finite
    per_window = [overconfident[i : i + 1] for i in range(n)]
    t = fit_temperature(per_window, labels.tolist())
    assert t == pytest.approx(1 / 0.3, rel=0.1)
    fixed = apply_temperature(overconfident, t)
    assert expected_calibration_error(fixed, labels) < 0.03
    assert nll(fixed, labels) < nll(overconfident, labels)
    assert (fixed.argmax(1) == overconfident.argmax(1)).all()  # the ranking is untouched
    assert fit_temperature([], []) == 1.0


def test_expected_calibration_error_of_known_cases() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = np.eye(2)[labels]
    assert expected_calibration_error(perfect, labels) == 0.0
    always_wrong = np.eye(2)[1 - labels]
    assert expected_calibration_error(always_wrong, labels) == 1.0
    half = np.full((4, 2), 0.5)
    half[:, 0] += 1e-9
    assert expected_calibration_error(half, labels) == pytest.approx(0.0, abs=1e-6)
