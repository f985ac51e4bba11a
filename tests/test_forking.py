"""training.forking: the training's worker pools fork only where TensorFlow is not loaded."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fork_is_safe_until_tensorflow_is_imported() -> None:
    """A fresh process may fork; the same process after ``import tensorflow`` may not (the
    feature cache then spawns, the room renderer stays in one process)."""
    code = ("from training.forking import fork_is_safe; before = fork_is_safe(); "
            "import tensorflow; print(before, fork_is_safe())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, check=True)
    assert out.stdout.split()[-2:] == ["True", "False"]
