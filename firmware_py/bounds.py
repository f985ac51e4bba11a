"""Settings declared once, on the dataclass field of the component they configure.

A setting is declared as ``threads: int = knob(1, 1, 64, help="Interpreter threads.",
flag="--threads")``: its default, its range, its help text, whether a SIGHUP applies it
live, its command-line flag and any rule of its own travel in the field's metadata. The
configuration file, the environment, the flags and a bundle manifest are all checked
against the same declaration (an average over 1e20 windows was an OverflowError in the
middle of a SIGHUP reload), and ``genre-edge listen --help`` and
``deploy/config.example.toml`` are generated from it (:mod:`firmware_py.config.example`).

A settings class names its configuration section in ``SECTION`` (a ``ClassVar``) and may
explain it in ``SECTION_HELP`` (the paragraph above the section in the example file) and
``FLAG_GROUP`` (the heading of its flags in ``--help``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from .errors import brief


def setting(default: Any, *, help: str = "", example: Any = None, live: bool = False,  # noqa: A002
            flag: str | None = None, metavar: str | None = None,
            choices: Sequence[Any] | None = None, check: Callable[[Any], Any] | None = None,
            secret: bool = False) -> Any:
    """A configuration key's dataclass field.

    Parameters
    ----------
    default : Any
        The value when nothing sets it (None: unset).
    help : str
        What it does, in sentences; the example file and ``--help`` show it.
    example : Any, optional
        The value the example file shows for a key that is unset by default.
    live : bool
        Whether a SIGHUP reload applies a new value without a restart.
    flag, metavar : str, optional
        The ``genre-edge listen`` flag that sets it (booleans: a flag that sets True).
    choices : sequence, optional
        The only values allowed (checked like a range; ``--help`` lists them).
    check : callable, optional
        ``check(value) -> value``: the key's own rule and normal form (raises
        :class:`~firmware_py.errors.ConfigError` without the key's name; the
        configuration adds it).
    secret : bool
        The value never appears in ``repr``, in :meth:`Config.redacted` (logs, the
        published config) or in an error message (the password): :func:`is_secret`.
    """
    meta: dict[str, Any] = {"help": help, "example": example, "live": live, "flag": flag,
                            "metavar": metavar, "choices": tuple(choices) if choices else None,
                            "check": check}
    return dataclasses.field(default=default, repr=not secret,
                             metadata={**meta, "secret": secret})


def is_secret(spec: dataclasses.Field[Any]) -> bool:
    """Whether a setting's value is secret: the one rule that redaction and error messages
    share (declared ``setting(..., secret=True)``)."""
    return bool(spec.metadata.get("secret"))


def knob(default: Any, low: float, high: float, unit: str = "", **declared: Any) -> Any:
    """A numeric :func:`setting` whose values must lie in ``[low, high]`` (``unit`` for
    messages); ``declared`` takes :func:`setting`'s keywords."""
    spec = setting(default, **declared)
    return dataclasses.field(default=default, repr=spec.repr,
                             metadata={**spec.metadata, "range": (low, high, unit)})


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


def declared(spec: dataclasses.Field[Any], what: str) -> Any:
    """One declared property of a key (``help``, ``live``, ``flag``, ``choices``, ...)."""
    return spec.metadata.get(what)


def key_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a settings class that are configuration keys, in declaration order."""
    return [f for f in dataclasses.fields(cls) if is_key(f)]


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """``(dotted name, field, value)`` of every field of a settings tree (dataclasses of
    dataclasses, like the configuration) that holds no dataclass itself, in field order."""
    out: list[tuple[str, dataclasses.Field[Any], Any]] = []
    for spec in dataclasses.fields(tree):
        value = getattr(tree, spec.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += _leaves(value, f"{prefix}{spec.name}.")
        else:
            out.append((prefix + spec.name, spec, value))
    return out


def restart_needed(old: Any, new: Any) -> list[str]:
    """The dotted keys whose value differs between two settings trees and that only a
    restart applies: every key not declared ``live``; fields that are no keys
    (:func:`tuning`) are skipped unless they are declared ``live`` (the ``smoothing``
    overrides)."""
    return [name for (name, spec, a), (_, _, b) in zip(_leaves(old), _leaves(new), strict=True)
            if is_key(spec) and not declared(spec, "live") and a != b]


def live_keys(tree: Any) -> list[str]:
    """The dotted names of every field of a settings tree declared ``live``."""
    return [name for name, spec, _ in _leaves(tree) if declared(spec, "live")]
