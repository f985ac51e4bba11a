"""Allowed ranges of numeric settings, declared once next to each setting.

A setting is declared as ``threads: int = knob(1, 1, 64)``: the range travels in the
dataclass field's metadata, so the configuration file, the environment, the flags and a
bundle manifest are all checked against the same numbers, and no value outside them
reaches the code that uses it (an average over 1e20 windows was an OverflowError in the
middle of a SIGHUP reload).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import brief


def knob(default: Any, low: float, high: float, unit: str = "") -> Any:
    """A dataclass field whose values must lie in ``[low, high]`` (``unit`` for messages)."""
    return dataclasses.field(default=default, metadata={"range": (low, high, unit)})


def range_problem(spec: dataclasses.Field[Any], value: Any) -> str | None:
    """Why ``value`` is outside the range declared on ``spec`` (None when it is inside or
    ``spec`` declares none). Integers are compared exactly: ``float()`` of a 400-digit
    integer raises."""
    bounds = spec.metadata.get("range")
    if bounds is None or value is None or isinstance(value, bool):
        return None
    if not isinstance(value, (int, float)):
        return None  # the type check is the caller's
    low, high, unit = bounds
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}{unit}, got {brief(value)}"
    return None


def tuning(default: Any) -> Any:
    """A dataclass field that is not a configuration key: code and tests set it, the
    file, the environment and the flags cannot (see :func:`is_key`)."""
    return dataclasses.field(default=default, metadata={"key": False})


def is_key(spec: dataclasses.Field[Any]) -> bool:
    """Whether ``spec`` is a configuration key (every field not declared with :func:`tuning`)."""
    return spec.metadata.get("key", True)
