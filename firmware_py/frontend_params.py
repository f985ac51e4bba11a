"""The front-end's parameters (:class:`FrontendParams`, checked on construction), their
bounds, and the analysis windows; the computation is :mod:`firmware_py.features`, which
re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
    def frame_hop_s(self) -> float:
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
