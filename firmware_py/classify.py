"""Offline classification of whole files: track-level genre by mean-probability vote."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import load_audio
from .bundle import Bundle
from .errors import AudioError, GenreEdgeError
from .features import logmel, windows


@dataclass
class FileResult:
    file: str
    genre: str
    confidence: float
    probabilities: dict[str, float]
    windows: int
    duration_s: float
    window_probabilities: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    window_levels_dbfs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "genre": self.genre,
            "confidence": round(self.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "windows": self.windows,
            "duration_s": round(self.duration_s, 2),
        }


def window_levels_dbfs(samples: np.ndarray, n_windows: int, hop: int, win: int) -> np.ndarray:
    """RMS level in dBFS of the newest hop of audio of each window (what the device measures)."""
    from .smoothing import level_dbfs

    levels = np.empty(n_windows, dtype=np.float32)
    for i in range(n_windows):
        end = i * hop + win
        levels[i] = level_dbfs(samples[max(0, end - hop) : end])
    return levels


def classify_file(path: str | Path, bundle: Bundle, model: Any) -> FileResult:
    """Every window of the file through the model; the track's genre is the mean-probability vote."""
    from .smoothing import SmoothingParams, level_dbfs

    fe = bundle.frontend
    samples = load_audio(path, fe.sample_rate)
    duration_s = samples.shape[0] / fe.sample_rate
    win_samples = int(round(fe.window_s * fe.sample_rate))
    if samples.shape[0] < win_samples:
        raise AudioError(
            f"{path} holds {duration_s:.2f} s of audio, less than one {fe.window_s:.1f} s model "
            "window: give a longer file"
        )
    wins = windows(logmel(samples, fe), fe.window_frames, bundle.inference_hop_frames)
    hop_samples = bundle.inference_hop_frames * fe.hop_length
    levels = window_levels_dbfs(samples, len(wins), hop_samples, win_samples)
    gate = SmoothingParams.from_dict(bundle.smoothing).silence_dbfs
    # The per-window levels cover each window's newest hop; the first window's older part
    # (the file's first ~2 s) is measured on its own.
    loudest = max(float(levels.max()), level_dbfs(samples[: max(1, win_samples - hop_samples)]))
    if loudest < gate:
        raise AudioError(
            f"{path} is silent (loudest part at {loudest:.0f} dBFS, below the silence gate of "
            f"{gate:.0f} dBFS): nothing to classify; check the recording level"
        )
    probs = model.predict_many(wins)
    # A window the model answered with NaN/Inf is left out of the vote, as the device's
    # smoother leaves it out; a model that never gives a number is refused.
    usable = np.isfinite(probs).all(axis=1)
    if not usable.any():
        raise GenreEdgeError(
            f"the model gave NaN/Inf probabilities for every window of {path}: the bundle's "
            "model is broken; re-create the bundle"
        )
    mean = probs[usable].mean(axis=0)
    best = int(mean.argmax())
    return FileResult(
        file=str(path),
        genre=bundle.labels[best],
        confidence=float(mean[best]),
        probabilities={label: float(p) for label, p in zip(bundle.labels, mean, strict=True)},
        windows=len(wins),
        duration_s=duration_s,
        window_probabilities=probs,
        window_levels_dbfs=levels,
    )


def timeline(result: FileResult, bundle: Bundle, smoothing: dict[str, Any] | None = None):
    """The smoothed genre per window, as the device would publish it while playing the file."""
    from .smoothing import Smoother, SmoothingParams

    params = SmoothingParams.from_dict({**bundle.smoothing, **(smoothing or {})})
    inference_hop_s = bundle.framed_inference_hop_s
    window_s = bundle.frontend.window_s
    smoother = Smoother(bundle.labels, params, inference_hop_s, window_s)
    states = []
    for i, (p, level) in enumerate(
        zip(result.window_probabilities, result.window_levels_dbfs, strict=True)
    ):
        t_s = window_s + i * inference_hop_s  # audio time at the end of the window
        states.append(smoother.update(p, float(level), t_s))
    return states
