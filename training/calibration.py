"""Calibrated confidence: temperature scaling (Guo et al., ICML 2017) and its measure.

A network trained with cross-entropy on a few hundred tracks is over- or under-confident;
the device publishes its probabilities as ``confidence`` and Home Assistant automations
compare it with thresholds, so it has to mean what it says. One scalar ``T`` fitted on the
validation windows (clean and in-room: what the device hears) divides the logits; since
``log p = logits - logsumexp(logits)``, ``softmax(log p / T)`` is the same thing computed
from probabilities. ``T`` is folded into the last dense layer before conversion (kernel and
bias divided by ``T``), so the int8 model and the device need no extra op.

Numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Bins of the expected calibration error (equal width over the top-1 confidence).
ECE_BINS = 15


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` row by row."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (nats)."""
    p = np.asarray(probs)[np.arange(len(labels)), np.asarray(labels, dtype=int)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """ECE: the window-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / len(labels))


def fit_temperature(probs: Sequence[np.ndarray], labels: Sequence[int]) -> float:
    """The ``T`` in [0.05, 20] that minimises the NLL of ``probs`` (windows of any number of
    tracks, one label each); 1.0 when there is nothing to fit."""
    from scipy.optimize import minimize_scalar

    p = np.concatenate([np.asarray(x, dtype=np.float64) for x in probs]) if probs else np.zeros((0, 1))
    y = np.concatenate([np.full(len(x), int(lab)) for x, lab in zip(probs, labels, strict=True)]) \
        if probs else np.zeros(0, dtype=int)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda log_t: nll(apply_temperature(p, float(np.exp(log_t))), y),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def window_labels(probs: Sequence[np.ndarray], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-track window probabilities and repeat each track's label per window."""
    p = np.concatenate([np.asarray(x) for x in probs])
    y = np.concatenate([np.full(len(x), int(lab)) for x, lab in zip(probs, labels, strict=True)])
    return p, y
