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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GenreEdgeError


@dataclass(frozen=True)
class FrontendParams:
    """Every parameter that decides the features a model sees.

    Attributes
    ----------
    sample_rate : int
        Model sample rate in Hz. Audio at any other rate is resampled first.
    n_fft : int
        FFT size in samples (512 = 32 ms at 16 kHz).
    win_length : int
        Analysis window length in samples (400 = 25 ms), zero-padded to ``n_fft``
        symmetrically, as librosa does.
    hop_length : int
        Frame step in samples (160 = 10 ms, i.e. 100 frames per second).
    window : str
        Window name understood by ``scipy.signal.get_window`` (periodic form).
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Lowest and highest mel filter edge in Hz.
    amin : float
        Power floor before the log (1e-10 = -100 dB): the log floor.
    window_frames : int
        Frames per model input window (300 frames = 3.0 s of hops).
    compression : str
        ``"log"``: ``10 * log10(max(mel, amin))`` dB. ``"pcen"``: per-channel energy
        normalisation (Wang et al., ICASSP 2017, "Trainable frontend for robust and
        far-field keyword spotting"): ``(mel / (eps + M) ** gain + bias) ** power -
        bias ** power`` with ``M`` a first-order smoother of ``mel`` along time, started
        at the first frame; an automatic gain control per band that removes the playback
        level and slowly varying backgrounds. It streams: its state is one row.
    pcen_time_constant_s, pcen_gain, pcen_bias, pcen_power, pcen_eps : float
        PCEN's smoother time constant (s) and ``gain`` (alpha), ``bias`` (delta),
        ``power`` (r), ``eps``; librosa's names and defaults except ``eps``, which is in
        our units (mel power of full-scale float audio): 1e-12 keeps quiet music (-45 dBFS)
        above it.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    window: str = "hann"
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    amin: float = 1e-10
    window_frames: int = 300
    compression: str = "log"
    pcen_time_constant_s: float = 0.4
    pcen_gain: float = 0.98
    pcen_bias: float = 2.0
    pcen_power: float = 0.5
    pcen_eps: float = 1e-12

    def __post_init__(self) -> None:
        problems = []
        ints = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "window_frames")
        wrong = [k for k in ints if isinstance(getattr(self, k), bool)
                 or not isinstance(getattr(self, k), (int, np.integer))]
        wrong += [k for k in ("fmin", "fmax", "amin", *PCEN_FIELDS) if isinstance(getattr(self, k), bool)
                  or not isinstance(getattr(self, k), (int, float, np.integer, np.floating))
                  or not np.isfinite(getattr(self, k))]
        if wrong:
            raise GenreEdgeError(
                "invalid front-end parameters: "
                + ", ".join(f"{k}={getattr(self, k)!r}" for k in wrong)
                + f" (need whole numbers for {', '.join(ints)} and finite numbers for fmin, "
                "fmax, amin and the pcen_ settings)"
            )
        window_problem = _window_problem(self.window)
        if window_problem:
            problems.append(window_problem)
        if not 0 < self.sample_rate <= MAX_SAMPLE_RATE:
            problems.append(f"need 0 < sample_rate <= {MAX_SAMPLE_RATE}")
        if not (0 < self.win_length <= self.n_fft <= MAX_N_FFT):
            problems.append(f"need 0 < win_length <= n_fft <= {MAX_N_FFT}")
        if not 0 < self.hop_length <= self.n_fft:
            problems.append("need 0 < hop_length <= n_fft (a longer hop skips audio)")
        if not 0 < self.n_mels <= MAX_N_MELS:
            problems.append(f"need 0 < n_mels <= {MAX_N_MELS}")
        if not (0 <= self.fmin < self.fmax <= self.sample_rate / 2):
            problems.append("need 0 <= fmin < fmax <= sample_rate / 2")
        if self.amin <= 0:
            problems.append("amin must be > 0")
        if not 0 < self.window_frames <= MAX_WINDOW_FRAMES:
            problems.append(f"need 0 < window_frames <= {MAX_WINDOW_FRAMES}")
        elif not problems and self.window_s > MAX_WINDOW_S:
            problems.append(f"a model window of {self.window_s:.4g} s is longer than "
                            f"{MAX_WINDOW_S:g} s")
        if self.compression not in COMPRESSIONS:
            problems.append(f"compression must be one of {', '.join(COMPRESSIONS)}, "
                            f"got {self.compression!r}")
        if not (0 < self.pcen_time_constant_s <= 60 and 0 <= self.pcen_gain <= 1
                and self.pcen_bias > 0 and 0 < self.pcen_power <= 1 and self.pcen_eps > 0):
            problems.append("need 0 < pcen_time_constant_s <= 60, 0 <= pcen_gain <= 1, "
                            "pcen_bias > 0, 0 < pcen_power <= 1, pcen_eps > 0")
        if problems:
            raise GenreEdgeError(f"invalid front-end parameters: {'; '.join(problems)}")

    # -- derived quantities (named with units) -------------------------------------
    @property
    def hop_s(self) -> float:
        return self.hop_length / self.sample_rate

    @property
    def window_s(self) -> float:
        """Audio seconds covered by one model window."""
        return ((self.window_frames - 1) * self.hop_length + self.n_fft) / self.sample_rate

    @property
    def log_floor_db(self) -> float:
        return float(10.0 * np.log10(self.amin))

    @property
    def pcen_smoothing(self) -> float:
        """PCEN's per-frame smoothing coefficient ``b`` from its time constant (librosa's)."""
        t_frames = self.pcen_time_constant_s * self.sample_rate / self.hop_length
        return float((np.sqrt(1.0 + 4.0 * t_frames**2) - 1.0) / (2.0 * t_frames**2))

    def to_dict(self) -> dict[str, Any]:
        """Every field; a log front-end leaves the (unused) PCEN fields out, so its dict, and
        hence its digest and every cache and bundle made before PCEN existed, is unchanged."""
        data = dataclasses.asdict(self)
        if self.compression == "log":
            for k in ("compression", *PCEN_FIELDS):
                data.pop(k)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GenreEdgeError(
                f"unknown front-end parameter(s) {', '.join(unknown)}: "
                "the bundle was made by a newer genre-edge; upgrade genre-edge"
            )
        return cls(**data)

    def digest(self) -> str:
        """Short stable hash of the parameters (cache keys, bundle checks)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


COMPRESSIONS = ("log", "pcen")
#: Upper bounds of the front-end's sizes. Every one is far beyond any sensible front-end
#: (16 kHz, 512-point FFT, 64 mels, 300 frames); past them a manifest is damaged or hostile
#: and would ask for gigabytes (the mel matrix is n_mels x (n_fft / 2 + 1) float64, a
#: window window_frames x n_mels): 192 kHz is the fastest studio rate, 65536 samples are
#: 1.4 s at 48 kHz, 512 mels are 8x the default, and no genre model looks at a minute at once.
MAX_SAMPLE_RATE = 192_000
MAX_N_FFT = 65_536
MAX_N_MELS = 512
MAX_WINDOW_FRAMES = 12_000
MAX_WINDOW_S = 60.0
PCEN_FIELDS = ("pcen_time_constant_s", "pcen_gain", "pcen_bias", "pcen_power", "pcen_eps")


# -- analysis windows -----------------------------------------------------------
_COSINE_WINDOWS = {  # periodic generalised cosine windows: sum_k a_k cos(2 pi k n / N)
    "hann": (0.5, 0.5),
    "hanning": (0.5, 0.5),
    "hamming": (0.54, 0.46),
    "blackman": (0.42, 0.5, 0.08),
}


def _window_problem(name: Any) -> str | None:
    """Why ``name`` is not a usable window (None when it is)."""
    if not isinstance(name, str) or not name:
        return f"window must be a window name such as 'hann', got {name!r}"
    if name.lower() in _COSINE_WINDOWS:
        return None
    try:
        periodic_window(name, 8)
    except Exception:  # noqa: BLE001 - scipy raises ValueError or TypeError by name
        return f"unknown window '{name}' (use e.g. 'hann' or 'hamming')"
    return None


def periodic_window(name: str, length: int) -> np.ndarray:
    """``scipy.signal.get_window(name, length, fftbins=True)`` for the usual names.

    Cosine windows are computed in numpy (``scipy.signal`` costs ~80 MB of resident
    memory on the device); other names fall back to scipy.
    """
    coeffs = _COSINE_WINDOWS.get(str(name).lower())
    if coeffs is None:
        import scipy.signal

        return scipy.signal.get_window(name, length, fftbins=True)
    phase = 2.0 * np.pi * np.arange(length) / length
    win = np.zeros(length, dtype=np.float64)
    for k, a in enumerate(coeffs):
        win += (-1) ** k * a * np.cos(k * phase)
    return win


DEFAULT_PARAMS = FrontendParams()


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

        probe = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
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


class PcenState:
    """PCEN's running state: the smoothed energy ``M`` of the last frame, one row.

    The batch front-end and the streaming one feed it the same mel power frames in the
    same order through the same per-frame arithmetic (float64 state), so a file and a live
    stream of it give the same PCEN frames, whatever the chunking.
    """

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        self.b = params.pcen_smoothing
        self.m: np.ndarray | None = None

    def reset(self) -> None:
        self.m = None

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """``(frames, n_mels)`` mel power -> PCEN frames (float32); advances the state."""
        p = self.params
        e = np.asarray(mel, dtype=np.float64)
        smooth = np.empty_like(e)
        m = self.m if self.m is not None or e.shape[0] == 0 else e[0].copy()
        b = self.b
        for t in range(e.shape[0]):  # the recursion is sequential; 100 rows a second
            m = m + b * (e[t] - m)
            smooth[t] = m
        self.m = m
        # (E / (eps + M)^gain + bias)^power - bias^power, in librosa's stable form
        gain = np.exp(-p.pcen_gain * (np.log(p.pcen_eps) + np.log1p(smooth / p.pcen_eps)))
        out = p.pcen_bias**p.pcen_power * np.expm1(p.pcen_power * np.log1p(e * gain / p.pcen_bias))
        return out.astype(np.float32)


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
