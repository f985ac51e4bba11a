"""Helpers for the hostile-input tests: run the real CLI, check the one-line error contract."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.paths import REPO


def cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
        cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python -m firmware_py ARGS`` with ``env`` on top of ours (no config file)."""
    return subprocess.run(
        [sys.executable, "-m", "firmware_py", *args], capture_output=True, text=True,
        timeout=timeout, cwd=cwd, env={**os.environ, "GENRE_EDGE_CONFIG": "", **(env or {})},
    )


def one_line_error(out: subprocess.CompletedProcess[str], needle: str = "") -> str:
    """The contract: exit status 2, one stderr line ``genre-edge: error: ...``, no traceback.
    Returns the line; ``needle`` must be in it (case-insensitive)."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, f"rc={out.returncode}: {out.stderr[-1500:]}"
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("genre-edge: error: "), out.stderr[-1500:]
    assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def listen(*args: str, env: Mapping[str, str] | None = None,
           stdout: int | IO[Any] | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """A real ``genre-edge listen`` process (stderr captured) for signal tests."""
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "listen", *args], stdout=stdout,
        stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "GENRE_EDGE_CONFIG": "", **(env or {})},
    )


def terminate(proc: subprocess.Popen[str], timeout: float = 20) -> tuple[int, float, str]:
    """SIGTERM ``proc``: (exit status, seconds until it exited, its stderr)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, time.monotonic() - t0, err


def lines_with(text: str, needles: Sequence[str]) -> list[str]:
    return [line for line in text.splitlines() if all(n in line for n in needles)]
