"""Small helpers shared by the benchmarks: percentiles, "not present" values, audio looping."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

#: Every value the benchmark could not measure is a string starting with this.
NOT_PRESENT = "not present"
#: A section that was tried and raised starts with this instead.
FAILED = "failed"


def not_present(reason: str = "") -> str:
    """``"not present"`` or ``"not present: <reason>"`` (the JSON convention for absent things)."""
    return f"{NOT_PRESENT}: {reason}" if reason else NOT_PRESENT


def failed(reason: str) -> str:
    return f"{FAILED}: {' '.join(str(reason).split())}"


def is_absent(value: Any) -> bool:
    """True for a ``not present`` / ``failed`` string (or None)."""
    return value is None or (isinstance(value, str)
                             and (value.startswith(NOT_PRESENT) or value.startswith(FAILED)))


def summarize_ms(values_s: Sequence[float]) -> dict[str, float | int]:
    """Latency summary in milliseconds: ``p50``, ``p95``, ``p99``, ``mean``, ``min``, ``max``, ``n``.

    Percentiles use linear interpolation between closest ranks (numpy's default).
    """
    ms = 1000.0 * np.asarray(values_s, dtype=np.float64)
    if ms.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "min": None, "max": None,
                "n": 0}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": round(float(p50), 4), "p95": round(float(p95), 4), "p99": round(float(p99), 4),
        "mean": round(float(ms.mean()), 4), "min": round(float(ms.min()), 4),
        "max": round(float(ms.max()), 4), "n": int(ms.size),
    }


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage-collector pauses inside a timed loop (they would land in p99)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def time_calls(fn: Callable[[int], Any], *, warmup: int, min_runs: int, max_runs: int,
               budget_s: float) -> list[float]:
    """Wall seconds of ``fn(i)`` per call, after ``warmup`` untimed calls.

    Runs at least ``min_runs`` and at most ``max_runs`` calls, stopping after ``budget_s``
    once ``min_runs`` are in.
    """
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    with gc_paused():
        start = time.perf_counter()
        while len(times) < max_runs and (len(times) < min_runs
                                          or time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            fn(len(times))
            times.append(time.perf_counter() - t0)
    return times


def loop_to(samples: np.ndarray, n: int) -> np.ndarray:
    """``samples`` repeated (looped) to exactly ``n`` samples, float32 contiguous."""
    if samples.shape[0] == 0:
        raise ValueError("cannot loop empty audio")
    if samples.shape[0] < n:
        samples = np.tile(samples, int(np.ceil(n / samples.shape[0])))
    return np.ascontiguousarray(samples[:n], dtype=np.float32)
