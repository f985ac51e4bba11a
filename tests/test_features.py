"""The front-end: streaming == batch for any chunking, and librosa parity on real music."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_py.audio import load_audio
from firmware_py.errors import GenreEdgeError
from firmware_py.features import (
    DEFAULT_PARAMS,
    FrontendParams,
    StreamingLogMel,
    logmel,
    mel_filterbank,
    num_frames,
    windows,
)
from tests.paths import clip

#: What the docs promise between two ways of computing the same frames (block sizes, streaming
#: chunks, BLAS kernels of other CPUs): float32 rounding, measured ~2e-6 dB, asserted 1e-4 dB.
FLOAT32_ROUNDING_DB = 1e-4

librosa = pytest.importorskip("librosa")

P = DEFAULT_PARAMS


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    return load_audio(clip("rock", 0), P.sample_rate)[: P.sample_rate * 8]


def librosa_logmel(x: np.ndarray, p: FrontendParams) -> np.ndarray:
    s = librosa.feature.melspectrogram(
        y=x, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.win_length,
        window=p.window, center=False, power=2.0, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax,
    )
    return librosa.power_to_db(s, ref=1.0, amin=p.amin, top_db=None).T


@pytest.mark.parametrize("genre", ["classical", "rock", "electronic", "pop", "jazz"])
def test_librosa_parity_on_real_music(genre: str) -> None:
    x = load_audio(clip(genre, 1, split="test"), P.sample_rate)
    ours = logmel(x, P)
    ref = librosa_logmel(x, P)
    assert ours.shape == ref.shape == (num_frames(x.shape[0]), P.n_mels)
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 0.01


def test_librosa_parity_other_params() -> None:
    p = FrontendParams(sample_rate=22050, n_fft=1024, win_length=1024, hop_length=512,
                       n_mels=96, fmin=0.0, fmax=8000.0, window_frames=128)
    # fmax 8 kHz: the clips are 16 kHz sources, so bands above 8 kHz hold only rounding noise.
    x = load_audio(clip("pop", 0), p.sample_rate)[: p.sample_rate * 10]
    assert np.abs(logmel(x, p) - librosa_logmel(x, p)).max() <= 0.01


def test_filterbank_matches_librosa() -> None:
    ref = librosa.filters.mel(sr=P.sample_rate, n_fft=P.n_fft, n_mels=P.n_mels,
                              fmin=P.fmin, fmax=P.fmax)
    assert np.allclose(mel_filterbank(P), ref, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=60))
def test_streaming_equals_batch_for_any_chunking(music: np.ndarray, chunks: list[int]) -> None:
    stream = StreamingLogMel(P)
    out, pos = [], 0
    for size in chunks:
        out.append(stream.push(music[pos : pos + size]))
        pos += size
    out.append(stream.push(music[pos:]))  # the rest in one go
    streamed = np.concatenate(out)
    batch = logmel(music, P)
    assert streamed.shape == batch.shape
    assert np.abs(streamed - batch).max() <= FLOAT32_ROUNDING_DB
    assert stream.frames_emitted == batch.shape[0]


def test_streaming_emits_frame_as_soon_as_complete() -> None:
    stream = StreamingLogMel(P)
    assert stream.push(np.zeros(P.n_fft - 1, np.float32)).shape == (0, P.n_mels)
    assert stream.push(np.zeros(1, np.float32)).shape == (1, P.n_mels)
    assert stream.push(np.zeros(P.hop_length - 1, np.float32)).shape[0] == 0
    assert stream.push(np.zeros(1, np.float32)).shape[0] == 1


def test_silence_hits_the_log_floor() -> None:
    out = logmel(np.zeros(P.sample_rate, np.float32), P)
    assert np.allclose(out, P.log_floor_db)


def test_params_validation_and_roundtrip() -> None:
    assert FrontendParams.from_dict(P.to_dict()) == P
    assert P.digest() == FrontendParams().digest()
    assert P.digest() != FrontendParams(n_mels=40).digest()
    with pytest.raises(GenreEdgeError, match="fmax"):
        FrontendParams(fmax=9000.0)
    with pytest.raises(GenreEdgeError, match="unknown front-end parameter"):
        FrontendParams.from_dict({**P.to_dict(), "pcen": True})
    with pytest.raises(GenreEdgeError, match="mono"):
        logmel(np.zeros((100, 2), np.float32))


def test_windows_fixed_hop_and_padding() -> None:
    feats = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4)
    w = windows(feats, 300, 100)
    assert w.shape == (8, 300, 4)
    assert np.array_equal(w[1], feats[100:400])
    assert np.shares_memory(w, feats) and not w.flags.writeable  # a view, not ~280 MB an hour
    w7 = windows(feats, 300, 7)
    assert w7.shape == (101, 300, 4) and np.array_equal(w7[100], feats[700:1000])
    assert windows(feats[:200], 300, 100).shape[0] == 0
    padded = windows(feats[:200], 300, 100, pad=True)
    assert padded.shape == (1, 300, 4) and np.array_equal(padded[0, :200], feats[:200])


def test_long_inputs_are_computed_in_blocks_to_float32_rounding(monkeypatch) -> None:
    """logmel splits long inputs (memory); a block boundary moves values by float32 rounding only.

    BLAS promises no bit-identical results across matrix shapes (on AMD EPYC with the Haswell
    or Zen kernels ~5,000 of 76,608 values differ by up to 1.9e-6 dB between block sizes), so
    the documented tolerance is asserted: |difference| <= 1e-4 dB, as for streaming vs batch.
    """
    import firmware_py.features as features

    rng = np.random.default_rng(5)
    x = (0.3 * rng.standard_normal(16000 * 12)).astype(np.float32)
    whole = logmel(x)
    assert whole.shape[0] == 1197
    # blocks that divide nothing, and remainders of 1 and 2 frames (BLAS's other path)
    for block in (257, 598, 1195, 1196):
        monkeypatch.setattr(features, "LOGMEL_BLOCK_FRAMES", block)
        blocked = features.logmel(x)
        assert blocked.shape == whole.shape, block
        assert float(np.abs(blocked - whole).max()) <= FLOAT32_ROUNDING_DB, block
    # a wrong block (a frame dropped or shifted at a boundary) is far outside the tolerance
    assert float(np.abs(whole[1:] - whole[:-1]).max()) > 100 * FLOAT32_ROUNDING_DB


# -- PCEN -------------------------------------------------------------------------------
PCEN = dataclasses.replace(P, compression="pcen")


def librosa_pcen(x: np.ndarray, p: FrontendParams) -> np.ndarray:
    """librosa.pcen on librosa's mel power, its smoother started at the first frame (ours)."""
    s = librosa.feature.melspectrogram(
        y=x, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.win_length,
        window=p.window, center=False, power=2.0, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax,
    )
    s = np.maximum(s, p.amin)
    b = p.pcen_smoothing
    return librosa.pcen(s, sr=p.sample_rate, hop_length=p.hop_length, gain=p.pcen_gain,
                        bias=p.pcen_bias, power=p.pcen_power, eps=p.pcen_eps, b=b,
                        zi=(1 - b) * s[:, :1], axis=-1).T


@pytest.mark.parametrize("genre", ["classical", "metal", "reggae"])
def test_pcen_matches_librosa_on_real_music(genre: str) -> None:
    x = load_audio(clip(genre, 0, split="test"), P.sample_rate)
    ours = logmel(x, PCEN)
    ref = librosa_pcen(x, PCEN)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    # relative to PCEN's own scale (values ~0.05-4): float32 mel power vs librosa's float64
    assert np.abs(ours - ref).max() <= 1e-4
    assert PCEN.pcen_smoothing == pytest.approx(0.025, rel=0.02)  # librosa's for 0.4 s at 10 ms


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40))
def test_pcen_streaming_equals_batch_for_any_chunking(music: np.ndarray, chunks: list[int]) -> None:
    stream = StreamingLogMel(PCEN)
    out, pos = [], 0
    for size in chunks:
        out.append(stream.push(music[pos : pos + size]))
        pos += size
    out.append(stream.push(music[pos:]))
    streamed, batch = np.concatenate(out), logmel(music, PCEN)
    assert streamed.shape == batch.shape
    # the state is carried exactly; only the mel power's float32 rounding across batch
    # shapes (see FLOAT32_ROUNDING_DB) reaches the output
    assert np.abs(streamed - batch).max() <= 1e-5
    stream.reset()
    assert np.abs(stream.push(music) - batch).max() <= 1e-5  # reset starts a new stream


def test_pcen_removes_the_playback_level(music: np.ndarray) -> None:
    ref_pcen, ref_log = logmel(music, PCEN), logmel(music, P)
    for gain_db in (-30.0, -15.0, 10.0):
        g = np.float32(10 ** (gain_db / 20))
        # log-mel moves by the gain itself; PCEN by a few per cent of its values
        assert np.abs(logmel(music * g, P) - ref_log).mean() == pytest.approx(abs(gain_db), abs=0.5)
        assert np.abs(logmel(music * g, PCEN) - ref_pcen).mean() < 0.15 * np.abs(ref_pcen).mean()


def test_a_log_front_end_keeps_its_digest_and_pcen_is_validated() -> None:
    assert P.digest() == "780ffe4dd89b3f25"  # every cache and bundle made before PCEN
    assert "compression" not in P.to_dict() and PCEN.to_dict()["compression"] == "pcen"
    assert FrontendParams.from_dict(PCEN.to_dict()) == PCEN and PCEN.digest() != P.digest()
    with pytest.raises(GenreEdgeError, match="compression must be one of log, pcen"):
        dataclasses.replace(P, compression="mfcc")
    with pytest.raises(GenreEdgeError, match="pcen_gain <= 1"):
        dataclasses.replace(PCEN, pcen_gain=1.5)
