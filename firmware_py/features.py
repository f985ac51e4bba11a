"""The log-mel front-end: the one implementation used in training and on the device.

Training (``training.dataset``), conversion (``converter``) and the device loop
(``firmware_py.app``) all call this module; nothing else computes features. That is
how train/serve skew is ruled out by construction, and ``tests/test_features.py``
proves that the streaming path equals the batch path for any chunking.

Conventions follow librosa (parameter names ``sr``-style, Slaney mel scale and
area normalisation, ``10 * log10(max(S, amin))``) so that librosa can serve as a
test oracle, but librosa is never imported here.

Framing is *not* centred (``center=False`` in librosa terms): frame ``t`` covers
samples ``[t * hop_length, t * hop_length + n_fft)``. That makes streaming exact:
a frame is emitted as soon as its last sample has arrived, with no look-ahead and
no edge padding that would differ between a file and a live stream.

The parameters (:class:`FrontendParams`) and the analysis windows are
:mod:`firmware_py.frontend_params`, re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import GenreEdgeError
from .frontend_params import (
    COMPRESSIONS,
    DEFAULT_PARAMS,
    MAX_N_FFT,
    MAX_N_MELS,
    MAX_SAMPLE_RATE,
    MAX_WINDOW_FRAMES,
    MAX_WINDOW_S,
    PCEN_FIELDS,
    FrontendParams,
    periodic_window,
)

__all__ = [
    "COMPRESSIONS", "DEFAULT_PARAMS", "LOGMEL_BLOCK_FRAMES", "MAX_N_FFT", "MAX_N_MELS",
    "MAX_SAMPLE_RATE", "MAX_WINDOW_FRAMES", "MAX_WINDOW_S", "PCEN_FIELDS", "FrontendParams",
    "PcenState", "StreamingLogMel", "analysis_window", "logmel", "mel_filterbank",
    "num_frames", "periodic_window", "rfft", "windows",
]


# -- filter bank ------------------------------------------------------------------
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = hz / f_sp
    log_region = hz >= min_log_hz
    return np.where(
        log_region, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mel
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = f_sp * mel
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), hz)


def mel_filterbank(params: FrontendParams = DEFAULT_PARAMS) -> np.ndarray:
    """Triangular mel filters, Slaney-normalised, shape ``(n_mels, n_fft // 2 + 1)``."""
    fft_hz = np.fft.rfftfreq(params.n_fft, d=1.0 / params.sample_rate)
    edges_hz = _mel_to_hz(
        np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2)
    )
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney area normalisation: each filter has (roughly) constant energy.
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    if np.any(weights.max(axis=1) <= 0):
        raise GenreEdgeError(
            "some mel bands are empty: lower n_mels or raise n_fft for this sample rate"
        )
    return weights.astype(np.float32)


def _load_rfft() -> Callable[[np.ndarray], np.ndarray]:
    """A batched float32 real FFT over the last axis, as light as possible.

    ``scipy.fft.rfft`` is ~5x faster than ``numpy.fft.rfft`` on batches of short frames
    (SIMD across transforms), but ``import scipy.fft`` costs ~28 MB of resident memory
    (``scipy._lib`` and friends) on a device whose whole budget is 60 MB. Its engine,
    the ``pypocketfft`` extension, needs none of that, so it is loaded on its own
    (2 MB) and checked against numpy once; any surprise falls back to ``scipy.fft``.
    """
    try:
        import importlib.machinery
        import importlib.util
        import os

        spec = importlib.util.find_spec("scipy")  # finds the package, does not run it
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("scipy not found")
        folder = os.path.join(list(spec.submodule_search_locations)[0], "fft", "_pocketfft")
        name = next(f for f in os.listdir(folder) if f.startswith("pypocketfft") and
                    f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
        loader = importlib.machinery.ExtensionFileLoader("pypocketfft", os.path.join(folder, name))
        spec = importlib.util.spec_from_file_location("pypocketfft", loader.path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        r2c = module.r2c

        def rfft(frames: np.ndarray) -> np.ndarray:
            return r2c(frames, (frames.ndim - 1,), True, 0, None, 1)

        # A deterministic, irregular probe: ``numpy.random`` would cost ~2.5 MB resident
        # (its extensions, ``secrets``, ``hmac``) in a device process that draws no
        # random number.
        probe = np.cos(np.arange(3 * 64, dtype=np.float64) ** 1.5).reshape(3, 64)
        probe = probe.astype(np.float32)
        got = rfft(probe)
        if got.dtype != np.complex64 or not np.allclose(got, np.fft.rfft(probe, axis=-1), atol=1e-4):
            raise ValueError("pypocketfft disagrees with numpy")
        return rfft
    except Exception:  # another scipy layout: the public, heavier way
        import scipy.fft

        return lambda frames: scipy.fft.rfft(frames, axis=-1)


_rfft: Callable[[np.ndarray], np.ndarray] | None = None


def rfft(frames: np.ndarray) -> np.ndarray:
    """Real FFT of float32 frames over the last axis (complex64)."""
    global _rfft
    if _rfft is None:
        _rfft = _load_rfft()
    return _rfft(frames)


def analysis_window(params: FrontendParams = DEFAULT_PARAMS) -> np.ndarray:
    """Periodic window of ``win_length`` centred in ``n_fft`` zeros (librosa's convention)."""
    win = periodic_window(params.window, params.win_length)
    left = (params.n_fft - params.win_length) // 2
    padded = np.zeros(params.n_fft, dtype=np.float64)
    padded[left : left + params.win_length] = win
    return padded.astype(np.float32)


def num_frames(num_samples: int, params: FrontendParams = DEFAULT_PARAMS) -> int:
    """Frames that ``logmel`` returns for ``num_samples`` samples."""
    if num_samples < params.n_fft:
        return 0
    return 1 + (num_samples - params.n_fft) // params.hop_length


class _Kernel:
    """Precomputed window and filter bank; turns frames of samples into log-mel rows."""

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        self.window = analysis_window(params)
        # The rfft output viewed as float32 is [re0, im0, re1, im1, ...]: squared in place,
        # then re^2 + im^2 by one strided add, then one (frames x bins) @ (bins x mels)
        # GEMM (half the size of folding the add into a GEMM with every row repeated).
        self.mel_t = np.ascontiguousarray(mel_filterbank(params).T)
        self.log_scale = np.float32(10.0)
        self.amin = np.float32(params.amin)

    def frames_view(self, samples: np.ndarray) -> np.ndarray:
        """(n_frames, n_fft) strided view: no copy."""
        p = self.params
        n = num_frames(samples.shape[0], p)
        if n == 0:
            return np.empty((0, p.n_fft), dtype=np.float32)
        # A strided view over the contiguous float32 samples (no copy); building the
        # ndarray directly is several times cheaper than as_strided per push.
        return np.ndarray(
            (n, p.n_fft), dtype=np.float32, buffer=samples, strides=(4 * p.hop_length, 4)
        )

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.shape[0] == 0:
            return np.empty((0, self.params.n_mels), dtype=np.float32)
        spec = rfft(frames * self.window)
        parts = spec.view(np.float32)
        np.square(parts, out=parts)
        power = np.add(parts[:, 0::2], parts[:, 1::2])
        mel = power @ self.mel_t
        np.maximum(mel, self.amin, out=mel)
        if self.params.compression == "pcen":
            return mel  # power: PcenState compresses it, frame after frame
        np.log10(mel, out=mel)
        mel *= self.log_scale
        return mel


#: PCEN's smoother runs over at most this many frames per matrix product (1.28 s).
PCEN_CHUNK_FRAMES = 128


class PcenState:
    """PCEN's running state: the smoothed energy ``M`` of the last frame, one row.

    ``M[t] = (1 - b) M[t-1] + b E[t]``, started at the first frame, is computed per chunk of
    at most :data:`PCEN_CHUNK_FRAMES` frames as one product with a lower-triangular matrix
    of ``b (1 - b)^(t-j)`` plus the decayed previous state, not a Python loop per frame
    (the device's 0.1 s blocks are 10 frames). Everything is float32, in place, with one
    ``power`` for ``(eps + M)^-gain``: on 10 x 64 values each numpy call costs ~1-2 us of
    overhead, so the count of calls is the cost (float64 and ``exp(log())`` took twice as
    long for differences of ~5e-7). The smoother is a stable first-order filter, so float32
    rounding does not accumulate: the batch front-end and the streaming one, fed the same
    mel power frames in chunks of other sizes, agree within 1e-5 (tested), and both match
    ``librosa.pcen`` in float64 within 1e-4 (tested).
    """

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        b = params.pcen_smoothing
        lag = np.arange(PCEN_CHUNK_FRAMES)
        diff = lag[:, None] - lag[None, :]
        self._lower = np.where(diff >= 0, b * (1.0 - b) ** np.maximum(diff, 0), 0.0).astype(np.float32)
        self._decay = ((1.0 - b) ** (lag + 1.0)).astype(np.float32)[:, None]
        self._eps = np.float32(params.pcen_eps)
        self._neg_gain = np.float32(-params.pcen_gain)
        self._bias = np.float32(params.pcen_bias)
        self._power = np.float32(params.pcen_power)
        self._offset = np.float32(params.pcen_bias**params.pcen_power)
        self.m: np.ndarray | None = None

    def reset(self) -> None:
        self.m = None

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """``(frames, n_mels)`` mel power -> PCEN frames (float32); advances the state."""
        e = np.asarray(mel, dtype=np.float32)
        n = e.shape[0]
        if n == 0:
            return np.zeros(e.shape, dtype=np.float32)
        m = self.m if self.m is not None else e[0]
        if n <= PCEN_CHUNK_FRAMES:  # the streaming case: one product
            smooth = self._lower[:n, :n] @ e
            smooth += self._decay[:n] * m
        else:
            smooth = np.empty_like(e)
            for start in range(0, n, PCEN_CHUNK_FRAMES):
                k = min(PCEN_CHUNK_FRAMES, n - start)
                part = smooth[start : start + k]
                np.matmul(self._lower[:k, :k], e[start : start + k], out=part)
                part += self._decay[:k] * m
                m = part[-1]
        self.m = smooth[-1].copy()
        # (E / (eps + M)^gain + bias)^power - bias^power, in place
        smooth += self._eps
        np.power(smooth, self._neg_gain, out=smooth)
        smooth *= e
        smooth += self._bias
        if self._power == 0.5:
            np.sqrt(smooth, out=smooth)
        else:
            np.power(smooth, self._power, out=smooth)
        smooth -= self._offset
        return smooth


_KERNELS: dict[FrontendParams, _Kernel] = {}


def _kernel(params: FrontendParams) -> _Kernel:
    kernel = _KERNELS.get(params)
    if kernel is None:
        kernel = _KERNELS[params] = _Kernel(params)
    return kernel


def _as_mono_float32(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise GenreEdgeError(
            f"front-end expects mono 1-D samples, got shape {x.shape}: mix down first "
            "(firmware_py.audio does this)"
        )
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


#: ``logmel`` computes longer inputs this many frames at a time (~41 s at a 10 ms hop).
LOGMEL_BLOCK_FRAMES = 4096
_MIN_BLOCK_FRAMES = 16


def logmel(samples: np.ndarray, params: FrontendParams = DEFAULT_PARAMS) -> np.ndarray:
    """Log-mel (or, with ``compression="pcen"``, PCEN-mel) spectrogram of a whole clip.

    Parameters
    ----------
    samples : np.ndarray
        Mono audio at ``params.sample_rate``, float in [-1, 1], shape ``(n,)``.
    params : FrontendParams
        Front-end parameters.

    Returns
    -------
    np.ndarray
        ``(num_frames(n), n_mels)`` float32 log-mel power in dB (re 1.0, floor
        ``10*log10(amin)``), or PCEN values (PCEN's state starts at the first frame).
    """
    x = _as_mono_float32(samples)
    kernel = _kernel(params)
    frames = kernel.frames_view(x)
    if params.compression == "pcen":
        return _blocks(kernel, frames, params, PcenState(params))
    if frames.shape[0] <= LOGMEL_BLOCK_FRAMES:
        return kernel(frames)
    return _blocks(kernel, frames, params)


def _blocks(kernel: _Kernel, frames: np.ndarray, params: FrontendParams,
            pcen: PcenState | None = None) -> np.ndarray:
    # Long files in blocks: the FFT's temporaries stay ~25 MB instead of ~2 GB an hour.
    # Rows are independent in exact arithmetic; BLAS promises no bit-identical results across
    # matrix shapes (its kernels differ by CPU), so a block boundary can move a value by float32
    # rounding (~2e-6 dB, tested <= 1e-4 dB). A short remainder joins the previous block so no
    # block takes BLAS's 1-2 row path.
    n = frames.shape[0]
    out = np.empty((n, params.n_mels), dtype=np.float32)
    start = 0
    while start < n:
        stop = n if n - start < LOGMEL_BLOCK_FRAMES + _MIN_BLOCK_FRAMES else start + LOGMEL_BLOCK_FRAMES
        block = kernel(frames[start:stop])
        out[start:stop] = block if pcen is None else pcen(block)
        start = stop
    return out


class StreamingLogMel:
    """Push any number of samples, get the frames they complete.

    The output of all pushes concatenated equals ``logmel`` of all samples
    concatenated, for any chunking, to float32 rounding (the same kernel runs on
    batches of other sizes: differences of ~1e-5 dB, tested <= 1e-4): frames are
    computed once, as soon as their last sample arrives.
    """

    def __init__(self, params: FrontendParams = DEFAULT_PARAMS) -> None:
        self.params = params
        self._kernel = _kernel(params)
        self._pcen = PcenState(params) if params.compression == "pcen" else None
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_emitted = 0
        if self._pcen is not None:
            self._pcen.reset()

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples; return the newly completed frames, ``(k, n_mels)`` float32."""
        x = _as_mono_float32(samples)
        if self._pending.shape[0]:
            x = np.concatenate((self._pending, x))
        frames = self._kernel.frames_view(x)
        n = frames.shape[0]
        out = self._kernel(frames)
        if self._pcen is not None:
            out = self._pcen(out)
        # Keep what the next frame still needs: from the start of frame n onwards.
        self._pending = x[n * self.params.hop_length :].copy() if n else x.copy()
        self.frames_emitted += n
        return out


def windows(
    features: np.ndarray, window_frames: int, hop_frames: int, *, pad: bool = False
) -> np.ndarray:
    """Fixed-hop windows over a ``(frames, n_mels)`` array: ``(n, window_frames, n_mels)``.

    With ``pad=True`` a clip shorter than one window is padded at the end with its own
    floor value so that every clip yields at least one window; otherwise short clips
    yield none. The windows are a read-only view of ``features`` (no copy: an hour of
    audio would otherwise stack ~280 MB of overlapping windows).
    """
    n_frames = features.shape[0]
    if n_frames < window_frames:
        if not pad or n_frames == 0:
            return np.empty((0, window_frames, features.shape[1]), dtype=features.dtype)
        floor = features.min()
        padded = np.full((window_frames, features.shape[1]), floor, dtype=features.dtype)
        padded[:n_frames] = features
        return padded[None]
    view = np.lib.stride_tricks.sliding_window_view(features, window_frames, axis=0)
    return view[::hop_frames].transpose(0, 2, 1)  # (n, mels, frames) -> (n, frames, mels)
