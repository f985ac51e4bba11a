"""Training and evaluation windows cut from a track's cached features (re-exported by
:mod:`training.dataset`)."""

from __future__ import annotations

import numpy as np

from firmware_py.errors import GenreEdgeError
from firmware_py.features import windows

from .cache import Track


def pad_to(features: np.ndarray, window_frames: int) -> np.ndarray:
    """Pad a clip shorter than one window with its own floor value (as the front-end does)."""
    n = features.shape[0]
    if n >= window_frames:
        return features
    if n == 0:
        raise GenreEdgeError("a track has no frames (shorter than one FFT): remove it from the data")
    out = np.full((window_frames, features.shape[1]), features.min(), dtype=np.float32)
    out[:n] = features
    return out


def eval_windows(track: Track, window_frames: int, hop_frames: int) -> np.ndarray:
    """Fixed-hop windows over a whole track, ``(n, window_frames, n_mels)`` float32 dB.

    Every track yields at least one window (short tracks are padded). ``hop_frames``
    is in front-end frames (100 per second by default).
    """
    # A copy, not a view of the memory-mapped cache file: callers keep windows of many
    # tracks at once, and every view would hold that track's file open.
    feats = pad_to(np.array(track.features(), dtype=np.float32), window_frames)
    return windows(feats, window_frames, max(1, int(hop_frames)), pad=True)


def random_crops(
    features: np.ndarray, window_frames: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` windows at uniformly random offsets, ``(count, window_frames, n_mels)``."""
    feats = pad_to(features, window_frames)
    starts = rng.integers(0, feats.shape[0] - window_frames + 1, size=count)
    return np.stack([feats[s : s + window_frames] for s in starts])
