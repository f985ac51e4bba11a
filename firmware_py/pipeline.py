"""The streaming core of the device: audio blocks in, one result per inference hop out.

Each block of model-rate audio goes through the streaming front-end once; the frames
land in a ring buffer; every ``inference_hop_frames`` new frames (once a full window exists) the
newest window goes through the model and the smoother. Hops are cut at exact frame
boundaries even when one block spans several hops (fast file playback), so a file
played fast gives the same results as the same file played in real time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import RingBuffer
from .bundle import Bundle, hop_frames_for
from .errors import AudioError
from .features import StreamingLogMel
from .level import level_dbfs
from .resample import check_finite
from .smoothing import SmoothedState, Smoother, SmoothingParams


@dataclass
class HopResult:
    """One inference: raw probabilities, the smoothed state, and what it cost."""

    t_s: float  # audio time at the end of the window, seconds since the stream began
    probabilities: np.ndarray
    state: SmoothedState
    inference_ms: float
    frontend_ms: float
    window: np.ndarray  # the log-mel window the model saw (a copy), (window_frames, n_mels)


class Pipeline:
    def __init__(
        self, bundle: Bundle, model: Any, smoothing: SmoothingParams | None = None,
        inference_hop_s: float | None = None,
    ) -> None:
        self.bundle = bundle
        self.model = model
        fe = bundle.frontend
        self.frontend = StreamingLogMel(fe)
        self.ring = RingBuffer(fe.window_frames, fe.n_mels)
        self.inference_hop_frames = hop_frames_for(inference_hop_s or bundle.inference_hop_s, fe)
        self.inference_hop_s = self.inference_hop_frames * fe.frame_hop_s
        self.params = smoothing or SmoothingParams.from_dict(bundle.smoothing)
        self.smoother = Smoother(bundle.labels, self.params, self.inference_hop_s,
                                 bundle.frontend.window_s)
        # Recent audio with its absolute start sample, for the level of each hop.
        self._tail = np.zeros(0, dtype=np.float32)
        self._tail_start = 0
        self._hop_samples = self.inference_hop_frames * fe.hop_length
        self._frontend_s = 0.0
        self.nonfinite_blocks = 0
        self.inferences = 0
        self.samples_in = 0

    def set_smoothing(self, params: SmoothingParams) -> None:
        """Apply new smoothing knobs live (SIGHUP reload); the stream is not touched."""
        self.smoother.set_params(params)  # first: if it raises, nothing has changed
        self.params = params

    @property
    def audio_s(self) -> float:
        return self.samples_in / self.bundle.frontend.sample_rate

    def push(self, block: np.ndarray) -> list[HopResult]:
        """Feed model-rate mono samples; return the inferences they complete (often none)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        try:
            check_finite(block, "audio block")
        except AudioError:
            # A glitching driver must not poison the features: zero the bad samples, go on.
            self.nonfinite_blocks += 1
            block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
        self.samples_in += block.shape[0]
        self._append_tail(block)
        start = time.perf_counter()
        frames = self.frontend.push(block)
        self._frontend_s += time.perf_counter() - start
        frames_before = self.frontend.frames_emitted - frames.shape[0]
        cap, hop = self.ring.capacity, self.inference_hop_frames
        results = []
        pos = 0
        while pos < frames.shape[0]:
            # Windows end at frames cap, cap + hop, cap + 2 hop, ...: the windows that
            # classify (features.windows) takes from the start of the audio, for any hop.
            total = frames_before + pos
            due = cap if total < cap else cap + ((total - cap) // hop + 1) * hop
            take = min(frames.shape[0] - pos, due - total)
            self.ring.push(frames[pos : pos + take])
            pos += take
            if frames_before + pos == due:
                results.append(self._infer(due))
        return results

    def _append_tail(self, block: np.ndarray) -> None:
        fe = self.bundle.frontend
        keep = self._hop_samples + fe.n_fft + block.shape[0]
        tail = np.concatenate((self._tail, block))
        drop = max(0, tail.shape[0] - keep)
        self._tail = tail[drop:]
        self._tail_start += drop

    def _level_dbfs_before(self, end_sample: int) -> float:
        """RMS level of the hop of audio that ends at absolute sample ``end_sample``."""
        stop = end_sample - self._tail_start
        return level_dbfs(self._tail[max(0, stop - self._hop_samples) : max(0, stop)])

    def _infer(self, frames_total: int) -> HopResult:
        window = self.ring.latest(self.ring.capacity)
        start = time.perf_counter()
        probs = self.model.predict(window)
        inference_ms = 1000 * (time.perf_counter() - start)
        fe = self.bundle.frontend
        end_sample = (frames_total - 1) * fe.hop_length + fe.n_fft  # last sample of the window
        t_s = end_sample / fe.sample_rate
        state = self.smoother.update(probs, self._level_dbfs_before(end_sample), t_s)
        frontend_ms = 1000 * self._frontend_s
        self._frontend_s = 0.0
        self.inferences += 1
        return HopResult(t_s, probs, state, inference_ms, frontend_ms, window)
