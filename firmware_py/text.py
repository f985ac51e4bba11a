"""Text from outside (file names, labels, exception messages) on one printable line."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
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


def jsonable(obj: Any) -> Any:
    """JSON-safe copy of a payload: NaN/inf become null (Home Assistant and the browser's
    ``JSON.parse`` reject them; a digitally silent level is -inf dBFS), numpy scalars and
    arrays become Python, keys become strings, anything else its ``str``. The MQTT sink and
    the display page both send it."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy array
        return jsonable(obj.tolist())
    return str(obj)


def json_line(value: Any) -> str:
    """One line of strict JSON (NaN/Inf as null; ``allow_nan=False`` proves none is left)."""
    return json.dumps(finite(value), allow_nan=False)


def utc_timestamp() -> str:
    """Now as ISO 8601 UTC with milliseconds and ``+00:00`` (``2026-12-01T10:00:00.000+00:00``):
    the one timestamp format of every document the device publishes (states and stats;
    Python 3.10's ``datetime.fromisoformat`` reads it, unlike a ``Z`` suffix)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
