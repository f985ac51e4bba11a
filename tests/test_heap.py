"""training.heap: training processes keep freed activations instead of faulting them in
again every step (the measured effect: docs/training.md, "Reproduce the default model")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In a worker thread (as TensorFlow's), allocate and free 100 MB twice; report the minor
# page faults of the second allocation and what training.heap applied.
PROBE = r"""
import json, resource, sys, threading
import numpy as np
if sys.argv[1] == "training":
    import training, training.heap
    applied = training.heap.applied
else:
    applied = None
if len(sys.argv) > 2:  # a generator dataset's kernel (the training's input pipeline)
    import tensorflow as tf
    next(iter(tf.data.Dataset.from_generator(lambda: iter([1.0]), output_signature=tf.TensorSpec((), tf.float32))))
    if sys.argv[-1] == "again":
        training.heap.keep_steady_heap()
out = {}
def work():
    a = np.ones(25_000_000, np.float32); del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(25_000_000, np.float32); del b
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
t = threading.Thread(target=work); t.start(); t.join()
print(json.dumps({"faults": out["faults"], "applied": applied}))
"""

PAGES = 25_000_000 * 4 // 4096


def probe(*mode: str, **env: str) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE, *mode], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True)
    return json.loads(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_training_processes_reuse_freed_activations() -> None:
    tuned = probe("training")
    assert tuned["applied"] == {"arena_max": 1, "mmap_threshold": 1 << 30,
                                "trim_threshold": (1 << 31) - 1}
    plain = probe("plain")
    asked_off = probe("training", GENRE_EDGE_GLIBC_DEFAULTS="1")
    assert asked_off["applied"] == {}
    # glibc's defaults: the 100 MB block went back to the kernel and every page faults in
    # again (fewer faults with transparent huge pages, but never none)
    assert plain["faults"] > tuned["faults"] and asked_off["faults"] > tuned["faults"], (plain, tuned)
    assert tuned["faults"] < 0.05 * PAGES, tuned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_heap_stays_steady_after_tensorflows_generator_dataset() -> None:
    """Building a tf.data generator kernel sets glibc's mmap threshold back to 128 KB;
    keep_steady_heap() (which the fit calls before every step) sets it again."""
    reset = probe("training", "generator")
    again = probe("training", "generator", "again")
    assert reset["faults"] > again["faults"], (reset, again)
    assert again["faults"] < 0.05 * PAGES, again
