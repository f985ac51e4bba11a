"""The training input: per-band statistics, class weights, and :class:`WindowSampler`
(endless batches of augmented random crops); :mod:`training.fit` re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .augment import augment_batch
from .cache import Track
from .train_config import TrainConfig
from .windows import pad_to


def band_stats(tracks: Sequence[Track]) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and standard deviation (dB) over every frame of ``tracks``."""
    total = 0
    s = s2 = None
    for t in tracks:
        f = np.asarray(t.features(), dtype=np.float64)
        s = f.sum(0) if s is None else s + f.sum(0)
        s2 = (f * f).sum(0) if s2 is None else s2 + (f * f).sum(0)
        total += f.shape[0]
    mean = s / total
    std = np.sqrt(np.maximum(s2 / total - mean * mean, 1e-6))
    return mean.astype(np.float32), std.astype(np.float32)


def class_weights(labels: Sequence[int], n_labels: int) -> np.ndarray:
    """``total / (n_labels * count)`` per class: balanced classes weigh 1."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_labels).astype(np.float64)
    if np.any(counts == 0):
        missing = int(np.flatnonzero(counts == 0)[0])
        raise GenreEdgeError(f"label {missing} has no training tracks: every genre needs some")
    return (counts.sum() / (n_labels * counts)).astype(np.float32)


class WindowSampler:
    """Endless batches of augmented random crops: ``(x[..., None], y_onehot, weight)``."""

    def __init__(self, features: Sequence[np.ndarray], labels: Sequence[int], n_labels: int,
                 window_frames: int, cfg: TrainConfig, frontend: FrontendParams,
                 weights: np.ndarray, soft: Sequence[np.ndarray] | None = None,
                 soft_hop_frames: float = 100.0,
                 variants: Sequence[Sequence[np.ndarray]] | None = None,
                 hints: Sequence[np.ndarray] | None = None) -> None:
        self.features = features
        self.variants = variants
        self.hints = hints
        self.labels = np.asarray(labels, dtype=int)
        self.n_labels = n_labels
        self.window_frames = window_frames
        self.cfg = cfg
        self.frontend = frontend
        self.weights = weights
        self.soft = soft
        self.soft_hop_frames = soft_hop_frames
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.per_epoch = len(features) * cfg.crops_per_track
        self.steps_per_epoch = max(1, math.ceil(self.per_epoch / cfg.batch_size))

    def epoch_samples(self) -> np.ndarray:
        idx = np.repeat(np.arange(len(self.features)), self.cfg.crops_per_track)
        if self.cfg.balance:
            # Same number of windows per class: every track of a class equally often, the
            # remainder drawn at random without replacement.
            per_class = len(idx) // self.n_labels
            picks = []
            for c in range(self.n_labels):
                tracks = np.flatnonzero(self.labels == c)
                reps, rest = divmod(per_class, len(tracks))
                picks.append(np.repeat(tracks, reps))
                picks.append(self.rng.choice(tracks, rest, replace=False))
            idx = np.concatenate(picks)
        return self.rng.permutation(idx)

    def _batch(self, ids: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One random crop per track id and its target: the one-hot label, mixed with the
        teacher's probabilities at the crop's position when distilling."""
        wf = self.window_frames
        xs, starts = [], []
        for i in ids:
            feats = self.features[i]
            if self.variants is not None and self.variants[i] and self.rng.random() >= self.cfg.clean_p:
                # The same track heard in one of its rooms; renderings are aligned with the
                # clean clip, so the crop position (and the teacher's target) is the same.
                feats = self.variants[i][int(self.rng.integers(0, len(self.variants[i])))]
            feats = pad_to(feats, wf)
            s = int(self.rng.integers(0, feats.shape[0] - wf + 1))
            xs.append(np.asarray(feats[s : s + wf], dtype=np.float32))
            starts.append(s)
        y = eye[self.labels[ids]]
        if self.soft is not None:
            from .teacher import target_at

            teacher = np.stack([target_at(self.soft[i], s, self.soft_hop_frames)
                                for i, s in zip(ids, starts, strict=True)])
            y = (1.0 - self.cfg.distill) * y + self.cfg.distill * teacher
        self._last_hints = None
        if self.hints is not None:
            from .teacher import target_at

            self._last_hints = np.stack([target_at(self.hints[i], s, self.soft_hop_frames)
                                         for i, s in zip(ids, starts, strict=True)]).astype(np.float32)
        return np.stack(xs).astype(np.float32), y.astype(np.float32)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        bs = self.cfg.batch_size
        eye = np.eye(self.n_labels, dtype=np.float32)
        while True:
            order = self.epoch_samples()
            # Pad the epoch to whole batches so every step has a full, static-shape batch.
            need = self.steps_per_epoch * bs - len(order)
            if need > 0:
                order = np.concatenate([order, self.rng.choice(order, need)])
            for b in range(self.steps_per_epoch):
                ids = order[b * bs : (b + 1) * bs]
                x, y = self._batch(ids, eye)
                w = self.weights[self.labels[ids]]
                hints = self._last_hints
                x, y, w = augment_batch(x, y, w, self.rng, self.cfg.augment,
                                        frame_hop_s=self.frontend.frame_hop_s,
                                        floor_db=self.frontend.log_floor_db,
                                        log_domain=self.frontend.compression == "log")
                if hints is None:
                    yield x[..., None], y, w
                else:  # mixup would mix inputs without their hints: refused with --hint
                    yield x[..., None], (y, hints), (w, w)
