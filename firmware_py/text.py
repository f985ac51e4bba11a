"""Text from outside (file names, labels, exception messages) on one printable line."""

from __future__ import annotations

import json
import math
from typing import Any


def display(text: object) -> str:
    """``text`` as one printable line: bytes of a file name that are not UTF-8 (read with
    ``surrogateescape``) become ``\\xNN``; newlines, tabs, ANSI escapes and other control
    or invisible characters become their ``\\n``/``\\x1b``/``\\u200b`` escapes.

    So a name can neither break a line-oriented console or log into two records, nor move
    the cursor or recolour a terminal, nor crash a strict UTF-8 stdout.
    """
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for c in s:
        if c.isprintable():
            out.append(c)
        elif "\udc80" <= c <= "\udcff":  # an undecodable byte, as os.fsdecode keeps it
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def finite(value: Any) -> Any:
    """``value`` with every NaN/Inf float inside it (dicts, lists, tuples) replaced by None:
    JSON has no NaN, and a hostile or broken model may emit one."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_line(value: Any) -> str:
    """One line of strict JSON (NaN/Inf as null; ``allow_nan=False`` proves none is left)."""
    return json.dumps(finite(value), allow_nan=False)
