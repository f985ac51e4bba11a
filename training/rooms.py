"""Music as the device hears it: a small speaker, a living room, a cheap microphone, a low level.

The device never hears a clean file. It hears a loudspeaker across a room (reverberation:
the largest single loss, -17 points of track accuracy for a model trained on clean clips),
background noise, a microphone that passes ~120 Hz-7 kHz, at a level set by whoever holds
the remote. This module renders clean clips through that chain in the waveform domain:

1. speaker: a high-pass (small drivers have no bass), 2nd-order Butterworth;
2. room: convolution with a room impulse response, simulated (pyroomacoustics'
   image-source method for the direct sound and early reflections of a living-room-sized
   box, the absorption set for a drawn RT60 by Sabine's formula, plus a seeded diffuse
   tail at that RT60, :func:`simulate_rir`) or read from a user's folder of measured
   responses (``--rir-dir``);
3. noise: synthetic (pink, brown, ventilation, mains hum, speech-shaped babble) or a
   user's recordings (``--noise-dir``), at a drawn SNR against the music's RMS;
4. microphone: a band-pass, its own self-noise floor, a level in dBFS, clipping at full
   scale and 16-bit quantisation.

Then the one front-end (:func:`firmware_py.features.logmel`) turns the rendering into the
features the model sees, so training, evaluation and the device share that code.

Three seeded families of rooms never overlap: the training bank (``TRAIN_SEED``, random
conditions per rendering), validation rooms (``VAL_SEED``, used to choose checkpoints and
fit the calibration) and test rooms (``TEST_SEED``, reported, never used to choose
anything). Evaluation conditions are fixed: -25 dBFS, 120 Hz-7 kHz, SNR 15-25 dB.

pyroomacoustics and scipy.signal are training dependencies; nothing here reaches the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import GenreEdgeError

log = logging.getLogger(__name__)

TRAIN_SEED = 1729
VAL_SEED = 4104
TEST_SEED = 20683
#: Synthetic noise kinds (``synthetic_noise``); a user's recordings come as ``file:N``.
NOISE_KINDS = ("pink", "brown", "hvac", "hum", "babble")
#: Bump when the rendering changes: cached renderings of another version are not reused.
RENDER_VERSION = 2


@dataclass(frozen=True)
class RoomSim:
    """Ranges every rendering draws from (uniform). Units in the names.

    The defaults cover living rooms and small meeting rooms heard from a sofa or a shelf;
    evaluation uses :meth:`for_evaluation` (the same rooms, the device's conditions).
    """

    length_m: tuple[float, float] = (3.5, 8.0)
    width_m: tuple[float, float] = (3.0, 6.0)
    height_m: tuple[float, float] = (2.4, 3.2)
    rt60_s: tuple[float, float] = (0.25, 1.0)
    distance_m: tuple[float, float] = (1.0, 5.0)
    speaker_highpass_hz: tuple[float, float] = (60.0, 200.0)
    mic_highpass_hz: tuple[float, float] = (60.0, 250.0)
    mic_lowpass_hz: tuple[float, float] = (5000.0, 7800.0)
    snr_db: tuple[float, float] = (5.0, 30.0)
    level_dbfs: tuple[float, float] = (-45.0, -10.0)
    self_noise_dbfs: tuple[float, float] = (-90.0, -75.0)

    @classmethod
    def for_evaluation(cls) -> RoomSim:
        """The held-out conditions: a cheap microphone (120 Hz-7 kHz) at -25 dBFS RMS,
        background noise at 15-25 dB SNR, RT60 0.3-0.9 s at 1.5-4.5 m."""
        return cls(rt60_s=(0.3, 0.9), distance_m=(1.5, 4.5), speaker_highpass_hz=(100.0, 100.0),
                   mic_highpass_hz=(120.0, 120.0), mic_lowpass_hz=(7000.0, 7000.0),
                   snr_db=(15.0, 25.0), level_dbfs=(-25.0, -25.0),
                   self_noise_dbfs=(-85.0, -85.0))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Condition:
    """One rendering: which response, which noise, and every drawn number."""

    rir: int
    noise: str
    seed: int
    speaker_highpass_hz: float
    mic_highpass_hz: float
    mic_lowpass_hz: float
    snr_db: float
    level_dbfs: float
    self_noise_dbfs: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _draw(rng: np.random.Generator, span: tuple[float, float]) -> float:
    lo, hi = span
    return float(lo if hi <= lo else rng.uniform(lo, hi))


def draw_condition(rng: np.random.Generator, sim: RoomSim, n_rirs: int,
                   noises: Sequence[str]) -> Condition:
    """A random condition over ``n_rirs`` responses and the given noise kinds."""
    return Condition(
        rir=int(rng.integers(0, n_rirs)), noise=str(noises[int(rng.integers(0, len(noises)))]),
        seed=int(rng.integers(0, 2**31 - 1)),
        speaker_highpass_hz=_draw(rng, sim.speaker_highpass_hz),
        mic_highpass_hz=_draw(rng, sim.mic_highpass_hz),
        mic_lowpass_hz=_draw(rng, sim.mic_lowpass_hz), snr_db=_draw(rng, sim.snr_db),
        level_dbfs=_draw(rng, sim.level_dbfs), self_noise_dbfs=_draw(rng, sim.self_noise_dbfs))


# -- room impulse responses -------------------------------------------------------------
def _pra() -> Any:
    try:
        import pyroomacoustics
    except ImportError:
        raise GenreEdgeError("room simulation needs pyroomacoustics: pip install "
                             "'genre-edge[train]' (or pip install pyroomacoustics)") from None
    return pyroomacoustics


def align_rir(h: np.ndarray, pre_samples: int = 32) -> np.ndarray:
    """Start a response ``pre_samples`` before its direct path (its peak), unit peak:
    the rendering then lines up with the clean clip (teacher targets, crop positions)."""
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    if h.size == 0 or not np.all(np.isfinite(h)) or not np.any(h):
        raise GenreEdgeError("a room impulse response is empty, silent or not finite: "
                             "remove it from the --rir-dir")
    peak = int(np.argmax(np.abs(h)))
    h = h[max(0, peak - pre_samples):]
    return (h / np.abs(h).max()).astype(np.float32)


#: Octave-ish bands of the late tail and their RT60 relative to the drawn one: rooms decay
#: faster at high frequencies (air and furnishings absorb more there).
TAIL_BANDS = ((20.0, 500.0, 1.15), (500.0, 2000.0, 1.0), (2000.0, 4000.0, 0.85),
              (4000.0, 7900.0, 0.65))
#: Image-source order of the early part (the late tail is modelled statistically).
EARLY_ORDER = 8


def simulate_rir(rng: np.random.Generator, sim: RoomSim, fs: int) -> np.ndarray:
    """One response of a random shoebox room, speaker near a wall, deterministic in ``rng``.

    Early part: pyroomacoustics' image-source method to order 8 (direct sound and the
    first reflections, from the geometry; air absorption on). Late part: a diffuse tail,
    seeded noise in four bands decaying at the drawn RT60 (faster at high frequencies),
    whose energy against the direct sound follows the room's critical distance
    ``r_c = 0.057 sqrt(V / RT60)`` (the reverberant/direct ratio is ``(d / r_c)^2``).
    The full image-source order would take seconds per response (order 137 at RT60 0.9 s)
    and pyroomacoustics' ray tracer is not seeded by us, so responses would differ from
    machine to machine; this hybrid takes milliseconds and is the same everywhere.
    """
    import scipy.signal

    pra = _pra()
    dims = [_draw(rng, sim.length_m), _draw(rng, sim.width_m), _draw(rng, sim.height_m)]
    rt60 = _draw(rng, sim.rt60_s)
    try:
        e_abs, _ = pra.inverse_sabine(rt60, dims)
    except ValueError:  # too reverberant for Sabine in so small a room: the most it allows
        e_abs = 0.01
    speaker = np.array([rng.uniform(0.5, dims[0] - 0.5), rng.uniform(0.3, 0.7),
                        rng.uniform(0.6, 1.6)])
    lo, hi = sim.distance_m
    for _ in range(200):
        mic = np.array([rng.uniform(0.3, dims[0] - 0.3), rng.uniform(0.3, dims[1] - 0.3),
                        rng.uniform(0.7, 1.8)])
        d = float(np.linalg.norm(mic - speaker))
        if lo <= d <= hi:
            break
    room = pra.ShoeBox(dims, fs=fs, materials=pra.Material(float(e_abs)), max_order=EARLY_ORDER,
                       air_absorption=True)
    room.add_source(speaker.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    early = np.asarray(room.rir[0][0], dtype=np.float64)
    peak = int(np.argmax(np.abs(early)))
    direct_energy = float(np.sum(early[max(0, peak - 32) : peak + 32] ** 2))
    critical_m = 0.057 * np.sqrt(float(np.prod(dims)) / rt60)
    n_tail = int(min(2.0, 1.5 * rt60) * fs)
    t = np.arange(n_tail) / fs
    tail = np.zeros(n_tail)
    for f_lo, f_hi, factor in TAIL_BANDS:
        sos = scipy.signal.butter(2, [f_lo, min(f_hi, 0.49 * fs)], btype="bandpass", fs=fs,
                                  output="sos")
        band = scipy.signal.sosfilt(sos, rng.standard_normal(n_tail))
        tail += band * np.exp(-6.91 * t / (rt60 * factor))
    tail *= 1.0 - np.exp(-t / 0.004)  # the diffuse field builds up over a few milliseconds
    tail *= np.sqrt(direct_energy * (d / critical_m) ** 2 / max(float(np.sum(tail**2)), 1e-30))
    h = np.zeros(max(early.shape[0], peak + n_tail))
    h[: early.shape[0]] += early
    h[peak : peak + n_tail] += tail
    return align_rir(h)


def rir_bank(seed: int, n: int, sim: RoomSim, fs: int, cache_dir: Path | None) -> list[np.ndarray]:
    """``n`` simulated responses from ``seed``, the same on every machine (cached)."""
    key = hashlib.sha1(json.dumps({"seed": seed, "n": n, "sim": sim.to_dict(), "fs": fs,
                                   "v": RENDER_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cache_dir) / "rooms" / f"rirs-{key}.npz" if cache_dir else None
    if target is not None and target.is_file():
        try:
            with np.load(target) as z:
                bank = [z[f"h{i}"] for i in range(n)]
            return bank
        except (KeyError, ValueError, OSError, EOFError, zlib.error):
            log.warning("room response cache %s is damaged: simulating again", target)
    rng = np.random.default_rng(seed)
    bank = [simulate_rir(rng, sim, fs) for _ in range(n)]
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **{f"h{i}": h for i, h in enumerate(bank)})
        os.replace(tmp, target)
    return bank


def _audio_files(folder: Path, what: str, flag: str) -> list[Path]:
    from .dataset import AUDIO_SUFFIXES

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise GenreEdgeError(f"{flag} {folder} is not a folder: give a folder of {what}")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise GenreEdgeError(f"{flag} {folder} holds no audio files: put {what} "
                             "(wav, flac, ...) in it")
    return files


def load_rir_dir(folder: Path, fs: int, max_s: float = 2.0) -> list[np.ndarray]:
    """Measured responses from a folder of audio files (first channel, at ``fs``, aligned
    to the direct path, at most ``max_s`` long)."""
    from firmware_py.audio import read_audio, resample

    out = []
    for f in _audio_files(folder, "room impulse responses", "--rir-dir"):
        data, rate = read_audio(f)
        h = data if data.ndim == 1 else data[:, 0]
        out.append(align_rir(resample(h, rate, fs))[: int(max_s * fs)])
    return out


def load_noise_dir(folder: Path, fs: int) -> list[np.ndarray]:
    """Background recordings from a folder (mono, at ``fs``)."""
    from firmware_py.audio import load_audio

    out = []
    for f in _audio_files(folder, "background noise recordings", "--noise-dir"):
        x = load_audio(f, fs)
        if x.shape[0] < fs // 10 or not np.any(x):
            raise GenreEdgeError(f"noise recording {f} is shorter than 0.1 s or silent: "
                                 "remove it from the --noise-dir")
        out.append(x)
    return out


# -- noise ------------------------------------------------------------------------------
def _shaped(rng: np.random.Generator, n: int, fs: int, gain: Any) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    f[0] = f[1] if n > 1 else 1.0
    return np.fft.irfft(spec * gain(f), n)


def synthetic_noise(rng: np.random.Generator, n: int, fs: int, kind: str) -> np.ndarray:
    """``n`` samples of a household background (unit RMS): ``pink`` (1/f), ``brown``
    (1/f^2, traffic rumble), ``hvac`` (ventilation: low-passed at ~400 Hz), ``hum`` (mains
    at 50 or 60 Hz with harmonics over a little pink noise), ``babble`` (speech-shaped
    noise, 200-3500 Hz, modulated at syllable rate 2-6 Hz)."""
    if kind == "pink":
        x = _shaped(rng, n, fs, lambda f: f ** -0.5)
    elif kind == "brown":
        x = _shaped(rng, n, fs, lambda f: 1.0 / np.maximum(f, 20.0))
    elif kind == "hvac":
        corner = rng.uniform(250.0, 600.0)
        x = _shaped(rng, n, fs, lambda f: 1.0 / (1.0 + (f / corner) ** 2))
    elif kind == "hum":
        t = np.arange(n) / fs
        mains = 50.0 if rng.random() < 0.5 else 60.0
        x = sum(0.7 ** k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 9))
        pink = _shaped(rng, n, fs, lambda f: f ** -0.5)
        x = x / np.std(x) + 0.3 * pink / np.std(pink)
    elif kind == "babble":
        x = _shaped(rng, n, fs, lambda f: ((f > 200) & (f < 3500)) / (1.0 + (f / 600.0) ** 2)
                    + 1e-3)
        # several talkers: a sum of slow random envelopes at syllable rate
        env = np.zeros(n)
        for _ in range(int(rng.integers(2, 6))):
            rate = rng.uniform(2.0, 6.0)
            env += np.abs(_shaped(rng, n, fs, lambda f, r=rate: np.exp(-((f / r) ** 2))))
        x = x * env
    else:
        raise GenreEdgeError(f"unknown noise kind '{kind}': use one of {', '.join(NOISE_KINDS)}")
    x = np.asarray(x, dtype=np.float64)
    return x / max(float(np.std(x)), 1e-12)


# -- rendering --------------------------------------------------------------------------
def _sos(kind: str, hz: Any, fs: int) -> np.ndarray:
    import scipy.signal

    return scipy.signal.butter(2, hz, btype=kind, fs=fs, output="sos")


def render(x: np.ndarray, fs: int, cond: Condition, rir: np.ndarray,
           noises: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Play mono ``x`` (float, at ``fs``) through ``cond``: speaker, ``rir``, noise,
    microphone. Returns float32 samples in [-1, 1], as long as ``x`` and aligned with it.

    ``noises`` are a user's recordings, used when ``cond.noise`` is ``file:N``.
    """
    import scipy.signal

    rng = np.random.default_rng(cond.seed)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    y = scipy.signal.sosfilt(_sos("highpass", cond.speaker_highpass_hz, fs), x)
    y = scipy.signal.oaconvolve(y, np.asarray(rir, dtype=np.float64))[:n]
    band = _sos("bandpass", [cond.mic_highpass_hz, min(cond.mic_lowpass_hz, 0.49 * fs)], fs)
    y = scipy.signal.sosfilt(band, y)
    rms = float(np.sqrt(np.mean(y * y)))
    if rms <= 1e-9:  # a silent clip stays silent (plus the microphone's own floor)
        y = np.zeros(n)
        rms = 10.0 ** (cond.level_dbfs / 20.0)
    else:
        y *= 10.0 ** (cond.level_dbfs / 20.0) / rms
        rms = 10.0 ** (cond.level_dbfs / 20.0)
    if cond.noise.startswith("file:"):
        src = noises[int(cond.noise[5:]) % len(noises)]
        reps = -(-n // src.shape[0]) + 1
        start = int(rng.integers(0, src.shape[0]))
        noise = np.tile(np.asarray(src, dtype=np.float64), reps)[start : start + n]
    else:
        noise = synthetic_noise(rng, n, fs, cond.noise)
    noise = scipy.signal.sosfilt(band, noise)
    noise *= rms * 10.0 ** (-cond.snr_db / 20.0) / max(float(np.sqrt(np.mean(noise**2))), 1e-12)
    y += noise + rng.standard_normal(n) * 10.0 ** (cond.self_noise_dbfs / 20.0)
    y = np.clip(y, -1.0, 1.0)
    return (np.round(y * 32767.0) / 32767.0).astype(np.float32)


# -- room sets -----------------------------------------------------------------------------
@dataclass
class RoomSet:
    """Responses, noise recordings and how conditions are drawn, with a digest for caches."""

    rirs: list[np.ndarray]
    noises: list[np.ndarray]
    sim: RoomSim
    seed: int
    source: str  # "simulated" or the --rir-dir
    digest: str

    @property
    def noise_kinds(self) -> list[str]:
        return [f"file:{i}" for i in range(len(self.noises))] if self.noises else list(NOISE_KINDS)

    def conditions(self, count: int, salt: str = "") -> list[Condition]:
        """``count`` conditions, the same for the same set and ``salt`` (e.g. a track id)."""
        mix = zlib.crc32(salt.encode()) if salt else 0
        rng = np.random.default_rng([self.seed, mix])
        return [draw_condition(rng, self.sim, len(self.rirs), self.noise_kinds)
                for _ in range(count)]


def _files_digest(folder: Path | None) -> str:
    """The folder's files by relative path and content (not modification time: a copied or
    moved folder of the same recordings keeps its renderings; an edited file does not)."""
    if folder is None:
        return "-"
    from .cache import content_digest

    root = Path(folder).expanduser()
    h = hashlib.sha1()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(root).as_posix()}|{content_digest(f)}\n".encode())
    return h.hexdigest()[:12]


def room_set(kind: str, fs: int, cache_dir: Path | None, *, rir_dir: Path | None = None,
             noise_dir: Path | None = None, n_rirs: int | None = None) -> RoomSet:
    """The ``train``, ``val`` or ``test`` rooms (see the module docstring).

    ``rir_dir``/``noise_dir`` replace the simulated responses / synthetic noises with
    a user's recordings (their own room, heard by their own microphone).
    """
    seeds = {"train": TRAIN_SEED, "val": VAL_SEED, "test": TEST_SEED}
    if kind not in seeds:
        raise ValueError(kind)
    sim = RoomSim() if kind == "train" else RoomSim.for_evaluation()
    n = n_rirs or (96 if kind == "train" else 8)
    if rir_dir is not None:
        rirs, source = load_rir_dir(rir_dir, fs), str(rir_dir)
    else:
        rirs, source = rir_bank(seeds[kind], n, sim, fs, cache_dir), "simulated"
    noises = load_noise_dir(noise_dir, fs) if noise_dir is not None else []
    spec = {"kind": kind, "seed": seeds[kind], "sim": sim.to_dict(), "fs": fs,
            "n": len(rirs), "rirs": _files_digest(rir_dir) if rir_dir else "sim",
            "noises": _files_digest(noise_dir), "v": RENDER_VERSION}
    if rir_dir is not None or noise_dir is not None:
        # A user's recordings are resampled to fs: renderings made with another resampler
        # (the polyphase FIR before soxr) are not reused. Simulated rooms and synthetic
        # noises are made at fs and keep their digest.
        from firmware_py.audio import RESAMPLER_ID

        spec["resampler"] = RESAMPLER_ID
    blob = json.dumps(spec, sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    return RoomSet(rirs, noises, sim, seeds[kind], source, digest)
