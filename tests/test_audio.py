"""Audio loading, resampling (batch and streaming) and the ring buffer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from firmware_py.audio import (
    RingBuffer,
    StreamingResampler,
    load_audio,
    rate_ratio,
    resample,
)
from firmware_py.errors import AudioError
from firmware_py.features import logmel
from tests.paths import clip


@pytest.fixture(scope="module")
def music16k() -> np.ndarray:
    return load_audio(clip("classical", 0), 16000)[: 16000 * 5]


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_wav_rates_and_formats_load_to_model_rate(tmp_path, music16k, rate, subtype) -> None:
    src = resample(music16k, 16000, rate)
    path = tmp_path / f"x_{rate}_{subtype}.wav"
    sf.write(path, np.stack([src, 0.5 * src], axis=1), rate, subtype=subtype)  # stereo
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.shape[0] - music16k.shape[0]) <= 2
    if rate >= 16000:  # no band was lost: features match the original away from the edges
        n = min(y.shape[0], music16k.shape[0])
        ref = 0.75 * music16k[:n]  # mean of the two channels
        diff = np.abs(logmel(y[:n]) - logmel(ref))[5:-5]
        loud = logmel(ref)[5:-5] > -60
        assert np.median(diff[loud]) < 0.5


def test_8bit_wav_loads(tmp_path, music16k) -> None:
    path = tmp_path / "u8.wav"
    sf.write(path, music16k, 16000, subtype="PCM_U8")
    y = load_audio(path, 16000)
    assert np.corrcoef(y, music16k[: y.shape[0]])[0, 1] > 0.99


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_compressed_formats(tmp_path, music16k, fmt) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, music16k, 16000, format=fmt)
    assert load_audio(path, 16000).shape[0] == music16k.shape[0]


def test_resampling_is_anti_aliased() -> None:
    sr = 48000
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # above the 8 kHz output Nyquist
    y = resample(tone, sr, 16000)
    assert 20 * np.log10(np.sqrt(np.mean(y[200:-200] ** 2)) + 1e-12) < -60


@pytest.mark.parametrize("src_rate", [44100, 48000, 22050, 8000])
def test_streaming_resampler_equals_batch(music16k, src_rate) -> None:
    x = resample(music16k, 16000, src_rate)
    batch = resample(x, src_rate, 16000)
    rs = StreamingResampler(src_rate, 16000)
    rng = np.random.default_rng(src_rate)
    out, pos = [], 0
    while pos < x.shape[0]:
        n = int(rng.integers(1, 4000))
        out.append(rs.push(x[pos : pos + n]))
        pos += n
    y = np.concatenate(out)
    assert batch.shape[0] - y.shape[0] < 64  # only the filter's look-ahead is held back
    assert np.abs(y - batch[: y.shape[0]]).max() < 1e-5


def test_rate_ratio() -> None:
    assert rate_ratio(44100, 16000) == (160, 441)
    assert rate_ratio(48000, 16000) == (1, 3)
    up, down = rate_ratio(44123, 16000)  # odd rate: approximated within 0.01 %
    assert abs(44123 * up / down - 16000) / 16000 < 1e-4


def test_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav", 16000)
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path, 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="cannot decode") as exc:
        load_audio(junk, 16000)
    assert "\n" not in str(exc.value)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty, 16000)
    nan = tmp_path / "nan.wav"
    data = np.zeros(16000, np.float32)
    data[100] = np.nan
    data[200] = np.inf
    sf.write(nan, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="2 NaN/Inf"):
        load_audio(nan, 16000)
    loud = tmp_path / "unnormalised.wav"
    sf.write(loud, 30000.0 * np.sin(np.arange(16000, dtype=np.float32) / 7), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"samples up to 3e\+04, far outside \[-1, 1\]") as exc:
        load_audio(loud, 16000)
    assert "\n" not in str(exc.value)


def test_mastered_overs_load_and_a_low_rate_is_named(tmp_path, music16k, caplog) -> None:
    hot = tmp_path / "hot.wav"
    sf.write(hot, 1.5 * music16k / np.abs(music16k).max(), 16000, subtype="FLOAT")
    assert np.abs(load_audio(hot, 16000)).max() > 1.0  # a little over full scale is music
    # a lossy decode of a clipped master overshoots by several dB (real: a GTZAN hip-hop clip
    # in Opus peaks at 2.13): still music, still classified
    hotter = tmp_path / "hotter.wav"
    sf.write(hotter, 2.5 * music16k / np.abs(music16k).max(), 16000, subtype="FLOAT")
    assert np.abs(load_audio(hotter, 16000)).max() > 2.0
    phone = tmp_path / "phone.wav"
    sf.write(phone, resample(music16k, 16000, 8000), 8000)
    with caplog.at_level("WARNING", logger="firmware_py.audio"):
        load_audio(phone, 16000)
    assert "sampled at 8000 Hz: nothing above 4000 Hz reaches the model" in caplog.text


def test_ring_buffer_keeps_latest_rows_in_order() -> None:
    ring = RingBuffer(5, 2)
    rows = np.arange(26, dtype=np.float32).reshape(13, 2)
    ring.push(rows[:3])
    assert np.array_equal(ring.latest(3), rows[:3])
    ring.push(rows[3:7])
    assert np.array_equal(ring.latest(5), rows[2:7])
    ring.push(rows[7:])
    assert np.array_equal(ring.latest(5), rows[8:13])
    assert ring.count == 13
    with pytest.raises(ValueError):
        ring.latest(6)


def test_scipy_reference_unchanged() -> None:
    # Our batch resampler is scipy's resample_poly with its default filter design.
    x = np.random.default_rng(0).standard_normal(4410).astype(np.float32)
    ref = scipy.signal.resample_poly(x, 160, 441)
    assert np.allclose(resample(x, 44100, 16000), ref, atol=1e-6)


@pytest.mark.parametrize("src, dst", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000),
                                      (96000, 16000), (16000, 44100)])
def test_numpy_resampler_matches_scipy_resample_poly(src: int, dst: int) -> None:
    """The device resamples without scipy.signal (80 MB of RSS): same taps, same output."""
    from fractions import Fraction

    from firmware_py.audio import _design_filter

    f = Fraction(dst, src)
    up, down = f.numerator, f.denominator
    m = max(up, down)
    ref_taps = scipy.signal.firwin(20 * m + 1, 1.0 / m, window=("kaiser", 5.0)) * up
    np.testing.assert_allclose(_design_filter(up, down), ref_taps, atol=1e-12)
    x = np.random.default_rng(src).standard_normal(src * 2 + 7).astype(np.float32)
    ref = scipy.signal.resample_poly(x, up, down, window=("kaiser", 5.0))
    got = resample(x, src, dst)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.max(np.abs(got - ref)) < 1e-5


def test_periodic_windows_match_scipy() -> None:
    from firmware_py.features import periodic_window

    for name in ("hann", "hamming", "blackman"):
        ref = scipy.signal.get_window(name, 400, fftbins=True)
        np.testing.assert_allclose(periodic_window(name, 400), ref, atol=1e-12)
