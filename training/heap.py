"""A steady heap for TensorFlow training on the CPU (glibc).

Each training step allocates and frees activations of tens of megabytes. With glibc's
defaults, a thread's arena (64 MB heaps) or the dynamic mmap threshold (at most 32 MB)
hands such blocks back to the kernel when they are freed, and the next step faults every
page in again, zero-filled: measured on the default recipe's model (edge-l, batch 64, one
TensorFlow thread, an AMD EPYC with glibc 2.36), 1.67 s per step, 15.3 s of the 32.8 s CPU
spent in the kernel and 5.2 million minor faults in 20 steps; with the settings below
0.82 s per step, 0.8 s in the kernel, 58 thousand faults, and the same loss to the last
bit (the allocator moves no arithmetic).

TensorFlow undoes one of them: building a ``tf.data.Dataset.from_generator`` kernel sets the
mmap threshold back to 128 KB (``tensorflow::data::ApplyPython311MemoryPatch``, found with a
breakpoint on ``mallopt`` in a real training), and the training's input pipeline is one, so
the fit calls :func:`keep_steady_heap` before every step.

The settings: one arena (every thread allocates from the main heap, which is not limited
to 64 MB), blocks up to 1 GB from that heap instead of mmap, and freed memory kept (no
trimming). The cost is that the process keeps its peak heap until it exits: what a
training process does anyway. Applied once, when the ``training`` package is first
imported (before TensorFlow starts its threads); ``GENRE_EDGE_GLIBC_DEFAULTS=1`` keeps
glibc's defaults. The device code (``firmware_py``) never imports this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1

#: What steady_heap() did in this process: None (not called yet), or the settings applied
#: ({} when glibc is absent or the defaults were asked for).
applied: dict[str, int] | None = None
_mallopt = None


def steady_heap() -> dict[str, int]:
    """Apply the settings above (once per process); returns those that glibc accepted."""
    global applied, _mallopt
    if applied is not None:
        return applied
    applied = {}
    if os.environ.get("GENRE_EDGE_GLIBC_DEFAULTS") == "1":
        return applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _mallopt = mallopt
    for name, param, value in (("arena_max", M_ARENA_MAX, 1),
                               ("mmap_threshold", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                               ("trim_threshold", M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if mallopt(param, value) == 1:
            applied[name] = value
    return applied


def keep_steady_heap() -> None:
    """Set the mmap threshold again where :func:`steady_heap` set it (cheap: call it before
    every training step; TensorFlow's generator datasets reset it)."""
    if applied and "mmap_threshold" in applied and _mallopt is not None:
        _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
