"""Reading one configuration value: its type (TOML, flags, environment text), its bounds
and its rules, each problem a one-line :class:`~firmware_py.errors.ConfigError`.

The numeric ranges are declared on the components' settings fields
(:func:`~firmware_py.bounds.knob`); the rules here are the few that are not ranges.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from ..bounds import range_problem
from ..errors import ConfigError, brief

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Size bound of each text value (file, environment or flag; PATH_MAX is 4096).
MAX_TEXT = 4096


# -- types --------------------------------------------------------------------------------
def type_name(tp: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return " or ".join(type_name(a) for a in args)


#: The dotted keys declared secret (:func:`~firmware_py.bounds.is_secret`, the rule
#: :meth:`Config.redacted` uses too); :mod:`firmware_py.config` fills it from the
#: declarations when it composes ``Config`` (this module must not import it).
SECRET_KEYS: set[str] = set()


def secret(key: str) -> bool:
    """Whether the dotted ``key``'s value must never appear in a message (``mqtt.password``)."""
    return key in SECRET_KEYS


def got(value: Any, key: str = "") -> str:
    """``integer 4`` for a message; only the type for a secret key (a PIN-like password
    written without quotes must not reach the journal)."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = kinds.get(type(value), type(value).__name__)
    if secret(key):
        return f"{kind} (value hidden)"
    return f"{kind} {brief(value)}"


def shown(value: Any, key: str) -> str:
    return "(value hidden)" if secret(key) else brief(value)


def optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """A typed value (TOML, flags) checked against ``tp``; ints widen to float."""
    if value is None and optional(tp):
        return None
    members = union_members(tp)
    if isinstance(value, bool):
        if bool in members:
            return value
    elif isinstance(value, int) and int in members:
        return value
    elif isinstance(value, (int, float)) and float in members:
        return float(value)
    elif isinstance(value, str) and str in members:
        return value
    fix = "write it in quotes" if secret(key) and str in members else "fix the value"
    raise ConfigError(
        f"config key '{key}'{where} must be {type_name(tp)}, got {got(value, key)}: {fix}"
    )


def parse_text(text: str, tp: Any, key: str, where: str) -> Any:
    """A string (environment variable) parsed to ``tp``."""
    check_text(key, text, where)  # bounded before it is parsed
    text = text.strip()
    if text == "" and optional(tp):
        return None
    members = union_members(tp)
    if bool in members:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    if int in members:
        try:
            return int(text)
        except ValueError:
            pass
    if float in members:
        try:
            return float(text)
        except ValueError:
            pass
    if str in members:
        return text
    raise ConfigError(
        f"config key '{key}'{where} must be {type_name(tp)}, got {shown(text, key)}: fix the value"
    )


# -- value checks -------------------------------------------------------------------------
def one_of(choices: tuple[Any, ...]) -> str:
    """``'usb' or 'pci'``, ``0, 1 or 2``."""
    shown_choices = [repr(c) if isinstance(c, str) else str(c) for c in choices]
    return (", ".join(shown_choices[:-1]) + " or " + shown_choices[-1]
            if len(shown_choices) > 1 else shown_choices[0])


def check_text(key: str, value: str, where: str) -> None:
    """Every text setting: at most MAX_TEXT characters of encodable Unicode (an environment
    value that is not UTF-8 arrives with lone surrogates and fails far from here)."""
    if len(value) > MAX_TEXT:
        raise ConfigError(f"config key '{key}'{where} is {len(value)} characters long, more than "
                          f"{MAX_TEXT}: fix the value")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"config key '{key}'{where} is not valid UTF-8 text: fix the value "
                          "(check the locale or encoding it was written with)") from None
    if "\0" in value:
        raise ConfigError(f"config key '{key}'{where} contains a NUL character: fix the value")


def check_value(key: str, value: Any, where: str,
                spec: dataclasses.Field[Any] | None = None) -> Any:
    """``value`` of ``key`` checked (and normalised) by the rules ``spec`` declares: its
    range, its choices and its own check (:func:`~firmware_py.bounds.setting`)."""
    if value is None:
        return None
    if isinstance(value, str):
        check_text(key, value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"config key '{key}'{where} must be finite, got {shown(value, key)}: fix the value"
        )
    if spec is None:
        return value
    out_of_range = range_problem(spec, value)
    if out_of_range:
        raise ConfigError(f"config key '{key}'{where} {out_of_range}: fix the value")
    check = spec.metadata.get("check")
    if check is not None:
        try:
            value = check(value)
        except ConfigError as exc:
            raise ConfigError(f"config key '{key}'{where}: {exc}") from None
        if value is None:
            return None
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(
            f"config key '{key}'{where} must be {one_of(choices)}, got {shown(value, key)}")
    return value


def unknown(kind: str, name: str, valid: list[str], where: str) -> ConfigError:
    import difflib  # only for a misspelt name: not loaded on every start

    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"unknown config {kind} '{name}'{where}: {hint}valid: {', '.join(valid)}")
