"""Window- and track-level metrics (numpy only; shared by training and evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """``m[true, predicted]`` counts, ``(n_labels, n_labels)`` int."""
    m = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return m


def per_class(m: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    out = {}
    for i, name in enumerate(labels):
        tp = float(m[i, i])
        predicted = float(m[:, i].sum())
        actual = float(m[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(actual)}
    return out


def macro_f1(m: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over classes that occur."""
    scores = []
    for i in range(m.shape[0]):
        if m[i, :].sum() == 0:
            continue
        tp = m[i, i]
        p = tp / m[:, i].sum() if m[:, i].sum() else 0.0
        r = tp / m[i, :].sum()
        scores.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def mean_vote(probs: np.ndarray) -> int:
    """Track label from the mean of its window probabilities."""
    return int(np.asarray(probs).mean(axis=0).argmax())


def majority_vote(probs: np.ndarray) -> int:
    """Track label from the most frequent window argmax (ties: the higher mean probability)."""
    probs = np.asarray(probs)
    counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]).astype(float)
    return int(np.argmax(counts + 1e-6 * probs.mean(axis=0)))


def summarize(
    track_probs: Sequence[np.ndarray], track_labels: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """All metrics of one split from per-track window probabilities.

    Parameters
    ----------
    track_probs : sequence of np.ndarray
        One ``(windows, n_labels)`` array of softmax probabilities per track.
    track_labels : sequence of int
        The true label of each track.
    labels : sequence of str
        Label names (index = output index).

    Returns
    -------
    dict
        ``window_accuracy``, ``track_accuracy_mean_vote``, ``track_accuracy_majority_vote``,
        ``macro_f1`` (track level, mean vote), ``window_macro_f1``, ``per_class`` (track
        level), ``confusion`` (track level, mean vote), ``window_confusion``, counts and
        ``window_loss`` (mean cross-entropy, nats).
    """
    n = len(labels)
    y_track = np.asarray(track_labels, dtype=int)
    all_probs = np.concatenate(track_probs) if track_probs else np.zeros((0, n))
    y_win = np.concatenate([np.full(len(p), y) for p, y in zip(track_probs, y_track, strict=True)])
    pred_win = all_probs.argmax(axis=1)
    pred_mean = np.array([mean_vote(p) for p in track_probs], dtype=int)
    pred_major = np.array([majority_vote(p) for p in track_probs], dtype=int)
    cm = confusion_matrix(y_track, pred_mean, n)
    wcm = confusion_matrix(y_win, pred_win, n)
    eps = 1e-7
    loss = float(-np.log(np.clip(all_probs[np.arange(len(y_win)), y_win], eps, 1.0)).mean())
    return {
        "tracks": int(len(y_track)),
        "windows": int(len(y_win)),
        "window_accuracy": float((pred_win == y_win).mean()),
        "track_accuracy_mean_vote": float((pred_mean == y_track).mean()),
        "track_accuracy_majority_vote": float((pred_major == y_track).mean()),
        "macro_f1": macro_f1(cm),
        "window_macro_f1": macro_f1(wcm),
        "window_loss": loss,
        "per_class": per_class(cm, labels),
        "confusion": cm.tolist(),
        "window_confusion": wcm.tolist(),
    }
