"""The source interface and the file source (see :mod:`firmware_py.sources`)."""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio

log = logging.getLogger("firmware_py.sources")  # one logger for every source

#: Wake-up token on a source's queue (:meth:`Source.close` puts it there).
WAKE = object()


class Source:
    """Model-rate mono float32 blocks until the input ends or :meth:`close` is called.

    Attributes
    ----------
    sample_rate : int
        Rate of the yielded blocks in Hz (the model's rate).
    """

    def __init__(self, sample_rate: int) -> None:
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self._closed = False
        self._running = False  # the blocks() generator is executing (not parked at a yield)
        # Data (microphone) and wake-up tokens; SimpleQueue.put is re-entrant, so close()
        # may run in a signal handler that interrupted a get().
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @property
    def closed(self) -> bool:
        return self._closed

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield 1-D float32 blocks at :attr:`sample_rate`; ends after :meth:`close`."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks()

    def close(self) -> None:
        """End iteration promptly; idempotent; safe from other threads and signal handlers."""
        self._closed = True
        self._queue.put(WAKE)
        if not self._running:
            self._release()

    def _release(self) -> None:
        """Free device resources (no-op for files)."""

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (interrupted by :meth:`close`); False when closed.

        Anything else found on the queue meanwhile (stale microphone data) is discarded.
        """
        deadline = time.monotonic() + max(0.0, seconds)
        while not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                self._queue.get(timeout=remaining)
            except queue.Empty:
                return not self._closed
        return False


# -- files ----------------------------------------------------------------------------------
class FileSource(Source):
    """An audio file, decoded once, played at real time or as fast as it is consumed.

    Parameters
    ----------
    path : str or Path
        Any file :func:`~firmware_py.audio.load_audio` reads (wav, flac, ogg/opus, mp3).
    sample_rate : int
        Model rate in Hz; the file is mixed to mono and resampled (libsoxr) to it.
    realtime : bool
        Pace blocks to the wall clock: block ``k`` is released when its last sample
        would have been recorded (deadlines are absolute, so no drift accumulates).
        False yields blocks as fast as the consumer takes them.
    block_s : float
        Block length in seconds (the last block may be shorter).
    loop : bool
        Start again at the end, for ever (until :meth:`close`).

    Raises
    ------
    AudioError
        Missing, unreadable, empty or non-finite file (one line).
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        realtime: bool = True,
        block_s: float = 0.1,
        loop: bool = False,
    ) -> None:
        super().__init__(sample_rate)
        if not (block_s > 0 and math.isfinite(block_s)):
            raise ValueError(f"block_s must be > 0 seconds, got {block_s}")
        self.path = Path(path)
        self.realtime = bool(realtime)
        self.loop = bool(loop)
        self.block_samples = max(1, round(block_s * self.sample_rate))
        self.samples = load_audio(self.path, self.sample_rate)

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def describe(self) -> str:
        mode = "real time" if self.realtime else "fast"
        return f"file {self.path} ({self.duration_s:.1f} s, {mode}{', looped' if self.loop else ''})"

    def blocks(self) -> Iterator[np.ndarray]:
        n = self.samples.shape[0]
        step = self.block_samples
        start_s: float | None = None
        emitted = 0  # samples released so far, over all loops
        self._running = True
        try:
            while not self._closed:
                for i in range(0, n, step):
                    if self._closed:
                        return
                    block = self.samples[i : i + step].copy()
                    if self.realtime:
                        now = time.monotonic()
                        if start_s is None:
                            start_s = now
                        due_s = start_s + (emitted + block.shape[0]) / self.sample_rate
                        if due_s > now and not self._sleep(due_s - now):
                            return
                    emitted += block.shape[0]
                    self._running = False
                    yield block
                    self._running = True
                if not self.loop:
                    return
        finally:
            self._running = False

