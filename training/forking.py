"""When the training's helpers may fork worker processes.

fork is cheap, needs no ``__main__`` guard and shares what the parent has loaded (decoded
clips, room responses) with the children for free. It is unsafe once TensorFlow has been
imported: its thread pools exist in the parent, a child inherits their locks in whatever
state they were, and TensorFlow code in the child can deadlock. Callers then use spawn
or stay in one process.
"""
from __future__ import annotations

import multiprocessing
import sys


def fork_is_safe() -> bool:
    """True where this process may fork workers: the platform has fork and TensorFlow
    has not been imported here."""
    return "tensorflow" not in sys.modules and "fork" in multiprocessing.get_all_start_methods()
