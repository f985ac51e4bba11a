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

import numpy as np
import scipy.signal

from .train_config import AugmentParams  # declared there, without numpy


def _db_to_power(x: np.ndarray) -> np.ndarray:
    return np.power(np.float32(10.0), x * np.float32(0.1), dtype=np.float32)


def _power_to_db(p: np.ndarray, floor_db: float) -> np.ndarray:
    out = np.log10(np.maximum(p, np.float32(10.0 ** (floor_db / 10.0))), dtype=np.float32)
    return out * np.float32(10.0)


def room(x: np.ndarray, rng: np.random.Generator, p: AugmentParams, frame_hop_s: float,
         floor_db: float) -> np.ndarray:
    """Speaker -> room -> microphone on one window ``(frames, n_mels)`` dB; returns a new array."""
    frames, n_mels = x.shape
    power = _db_to_power(x)
    if rng.random() < 0.7:
        t60 = rng.uniform(*p.reverb_t60_s)
        decay = 10.0 ** (-6.0 * frame_hop_s / t60)  # power factor per frame: -60 dB after t60
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
    *, frame_hop_s: float = 0.01, floor_db: float = -100.0, log_domain: bool = True,
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
    frame_hop_s : float
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
            x[i] = room(x[i], rng, p, frame_hop_s, floor_db)
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
