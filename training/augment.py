"""Cheap augmentation on batches of raw log-mel windows (dB), numpy only.

Everything works on the front-end's output, not on audio, so a batch costs a few
milliseconds on one core and the cache never has to be recomputed. Effects that are
additive in power (noise, reverberation tails) are applied in the power domain
(``10 ** (dB / 10)``) and converted back, which is exact for the mel energies up to the
cross terms that average out over a mel band.

The *room* chain simulates playback through a speaker into a cheap microphone:
reverberation-like smearing (an exponentially decaying power tail along time), an EQ
tilt plus a bass cut (small speakers and MEMS microphones), additive noise at a
random SNR, and a random overall gain (the device never knows the playback level).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.signal


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation strengths; every probability is per window.

    Attributes
    ----------
    gain_db : float
        Uniform random gain in ``[-gain_db, gain_db]`` dB.
    room_p : float
        Probability of the simulated room / microphone chain. Off by default: on the
        4-genre music set it did not raise validation accuracy (see docs/training.md);
        ``genre-edge train --room-p 0.3`` turns it on for microphone robustness.
    reverb_t60_s : tuple of float
        Range of the reverberation time (s, 60 dB power decay).
    reverb_wet_db : tuple of float
        Range of the tail's level relative to the direct sound (dB).
    tilt_db : float
        EQ tilt across the mel range, uniform in ``[-tilt_db, tilt_db]`` dB.
    bass_cut_db : float
        Largest attenuation of the lowest bands (small speaker), dB.
    snr_db : tuple of float
        Range of the signal-to-noise ratio of the additive noise (dB, mean power).
    time_masks, time_mask_frames : int
        Number of time masks and the largest mask width (frames).
    freq_masks, freq_mask_bands : int
        Number of frequency masks and the largest mask width (mel bands).
    mixup_alpha : float
        Beta(alpha, alpha) mixup between windows of a batch; 0 disables it.
    mixup_p : float
        Fraction of batches that are mixed. Off by default: with mixup the edge model
        underfitted (training accuracy ~70 %, see docs/training.md).
    """

    gain_db: float = 10.0
    room_p: float = 0.0
    reverb_t60_s: tuple[float, float] = (0.2, 1.2)
    reverb_wet_db: tuple[float, float] = (-12.0, 0.0)
    tilt_db: float = 8.0
    bass_cut_db: float = 15.0
    snr_db: tuple[float, float] = (10.0, 40.0)
    time_masks: int = 2
    time_mask_frames: int = 25
    freq_masks: int = 2
    freq_mask_bands: int = 6
    mixup_alpha: float = 0.3
    mixup_p: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def none(cls) -> AugmentParams:
        """No augmentation at all."""
        return cls(gain_db=0.0, room_p=0.0, time_masks=0, freq_masks=0, mixup_alpha=0.0, mixup_p=0.0)


def _db_to_power(x: np.ndarray) -> np.ndarray:
    return np.power(np.float32(10.0), x * np.float32(0.1), dtype=np.float32)


def _power_to_db(p: np.ndarray, floor_db: float) -> np.ndarray:
    out = np.log10(np.maximum(p, np.float32(10.0 ** (floor_db / 10.0))), dtype=np.float32)
    return out * np.float32(10.0)


def room(x: np.ndarray, rng: np.random.Generator, p: AugmentParams, hop_s: float,
         floor_db: float) -> np.ndarray:
    """Speaker -> room -> microphone on one window ``(frames, n_mels)`` dB; returns a new array."""
    frames, n_mels = x.shape
    power = _db_to_power(x)
    if rng.random() < 0.7:
        t60 = rng.uniform(*p.reverb_t60_s)
        decay = 10.0 ** (-6.0 * hop_s / t60)  # power factor per frame: -60 dB after t60
        wet = 10.0 ** (rng.uniform(*p.reverb_wet_db) / 10.0)
        # tail[t] = sum_{k>=1} decay^k * power[t-k]: a one-pole IIR along time.
        tail = scipy.signal.lfilter([0.0, decay], [1.0, -decay], power, axis=0)
        power = power + np.float32(wet * (1.0 - decay)) * tail.astype(np.float32)
    bands = np.linspace(-0.5, 0.5, n_mels, dtype=np.float32)
    eq_db = rng.uniform(-p.tilt_db, p.tilt_db) * bands
    if rng.random() < 0.5:
        cut_bands = rng.integers(2, max(3, n_mels // 6))
        ramp = np.clip(1.0 - np.arange(n_mels) / cut_bands, 0.0, 1.0)
        eq_db = eq_db - rng.uniform(0.0, p.bass_cut_db) * ramp
    power *= _db_to_power(eq_db.astype(np.float32))[None, :]
    # Noise: a random smooth spectrum (tilted), Rayleigh-like fluctuation per bin and frame.
    snr = rng.uniform(*p.snr_db)
    shape_db = rng.uniform(-12.0, 3.0) * bands + rng.normal(0.0, 2.0, n_mels)
    shape = _db_to_power(shape_db.astype(np.float32))
    level = power.mean() / shape.mean() * 10.0 ** (-snr / 10.0)
    noise = rng.exponential(1.0, size=(frames, n_mels)).astype(np.float32)
    power += np.float32(level) * shape[None, :] * noise
    return _power_to_db(power, floor_db)


def augment_batch(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, rng: np.random.Generator, p: AugmentParams,
    *, hop_s: float = 0.01, floor_db: float = -100.0, log_domain: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment a batch in place where possible.

    Parameters
    ----------
    x : np.ndarray
        ``(batch, frames, n_mels)`` float32 log-mel windows in dB.
    y : np.ndarray
        ``(batch, n_labels)`` float32 one-hot (or soft) targets.
    w : np.ndarray
        ``(batch,)`` float32 sample weights (class weights).
    rng : np.random.Generator
        Source of randomness (seeded by the caller).
    p : AugmentParams
        Strengths.
    hop_s : float
        Front-end hop in seconds (reverberation decay per frame).
    floor_db : float
        Front-end log floor in dB.
    log_domain : bool
        The windows are log-mel dB. PCEN windows (``False``) get no gain and no
        feature-domain room chain (both assume dB; PCEN removes the level itself, and
        rooms are rendered in the waveform domain, :mod:`training.rooms`), only masks
        and mixup.

    Returns
    -------
    tuple of np.ndarray
        ``(x, y, w)``; with mixup ``y`` is soft and ``w`` the mixed weight.
    """
    n, frames, n_mels = x.shape
    for i in range(n):
        if log_domain and p.room_p > 0 and rng.random() < p.room_p:
            x[i] = room(x[i], rng, p, hop_s, floor_db)
        if log_domain and p.gain_db > 0:
            x[i] += np.float32(rng.uniform(-p.gain_db, p.gain_db))
        fill = None
        for _ in range(p.time_masks):
            width = int(rng.integers(0, p.time_mask_frames + 1))
            if width:
                fill = x[i].mean() if fill is None else fill
                t0 = int(rng.integers(0, frames - width + 1))
                x[i, t0 : t0 + width] = fill
        for _ in range(p.freq_masks):
            width = int(rng.integers(0, p.freq_mask_bands + 1))
            if width:
                fill = x[i].mean() if fill is None else fill
                f0 = int(rng.integers(0, n_mels - width + 1))
                x[i, :, f0 : f0 + width] = fill
    if p.mixup_alpha > 0 and rng.random() < p.mixup_p:
        lam = rng.beta(p.mixup_alpha, p.mixup_alpha, size=n).astype(np.float32)
        lam = np.maximum(lam, 1.0 - lam)  # the first window dominates: its label stays the majority
        perm = rng.permutation(n)
        x = lam[:, None, None] * x + (1.0 - lam[:, None, None]) * x[perm]
        y = lam[:, None] * y + (1.0 - lam[:, None]) * y[perm]
        w = lam * w + (1.0 - lam) * w[perm]
    return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False), w.astype(np.float32, copy=False)
