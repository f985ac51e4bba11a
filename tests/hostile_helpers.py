"""Shared by the hostile-input tests: the real CLI in a subprocess or in-process, hand-made
WAV headers, and the one-line error contract."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cli(args: Sequence[str | bytes | os.PathLike], *, timeout: float = 120,
        env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """``python -m firmware_py ARGS`` in a subprocess (text output, ``errors=replace``)."""
    return subprocess.run(
        [sys.executable, "-m", "firmware_py", *args], capture_output=True, timeout=timeout,
        text=True, errors="replace", cwd=REPO,
        env={**os.environ, "GENRE_EDGE_CONFIG": "", "PYTHONPATH": str(REPO), **(env or {})},
        **kw)


def cli_in_process(args: Sequence[str]) -> tuple[int, str, str]:
    """``firmware_py.cli.main(args)`` with stdout and stderr captured, log records included
    (logging is bound to the stream of the first basicConfig, so it is re-bound per call)."""
    from firmware_py.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = logging.root.handlers[:]
    logging.root.handlers.clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        logging.root.handlers[:] = saved
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, stderr: str, *words: str) -> str:
    """Exit status 2 and exactly one stderr line, ``genre-edge: error: ...``, no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 2, (code, stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("genre-edge: error: "), stderr[-2000:]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def strict_json_lines(stdout: str) -> list[dict]:
    """Every stdout line parsed as strict JSON (NaN/Infinity refused, as JSON requires)."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in stdout.splitlines() if line]


def wav_bytes(*, rate: int, channels: int = 1, bits: int = 16, fmt: int = 1,
              payload: bytes | None = None, data_size: int | None = None,
              byte_rate: int | None = None, block_align: int | None = None) -> bytes:
    """A RIFF/WAVE file with exactly the header fields given (any may lie)."""
    if payload is None:
        rng = np.random.default_rng(0)
        payload = (rng.standard_normal(rate * channels if 0 < rate * channels < 10**7 else 48000)
                   * 3000).astype("<i2").tobytes()
    align = block_align if block_align is not None else (channels * bits // 8) & 0xFFFF
    brate = byte_rate if byte_rate is not None else (rate * align) & 0xFFFFFFFF
    fmt_chunk = struct.pack("<HHIIHH", fmt & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF,
                            brate, align, bits & 0xFFFF)
    size = len(payload) if data_size is None else data_size
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + b"data"
            + struct.pack("<I", size & 0xFFFFFFFF) + payload)
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def music_wav(path: Path, seconds: float = 5.0, rate: int = 16000) -> Path:
    """A real-music clip (the bundled demo) as a 16-bit WAV at ``rate``."""
    import soundfile

    from firmware_py.audio import load_audio
    from firmware_py.commands import DEMO_CLIP

    soundfile.write(path, load_audio(DEMO_CLIP, rate)[: int(seconds * rate)], rate,
                    subtype="PCM_16")
    return path
