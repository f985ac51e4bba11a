"""``genre-edge listen``'s setting flags, generated from the settings' declarations.

A key declared with ``flag="--name"`` (:func:`~firmware_py.bounds.setting`) gets that
flag, its help text, its default and its choices; ``flag="--on/--off"`` on a boolean makes
two exclusive flags. :func:`overrides` turns the parsed flags back into the nested dict
:func:`~firmware_py.config.load_config` takes (None: not given).
"""

from __future__ import annotations

import argparse
import typing
from typing import Any

from ..bounds import declared, key_fields
from . import ALL_SECTIONS, section_class
from .values import union_members

_DEST = "setting__"


def _dest(section: str, name: str) -> str:
    return f"{_DEST}{section}__{name}"


def _help(spec: Any, *, default: bool = True) -> str:
    text = declared(spec, "help") or ""
    if default and spec.default is not None and "Default" not in text:
        shown = spec.default if not isinstance(spec.default, bool) else str(spec.default).lower()
        text += f" (default {shown})"
    if declared(spec, "live"):
        text += " (live on SIGHUP)"
    return text.replace("%", "%%")


def _add(group: Any, section: str, spec: Any, hint: Any) -> None:
    flag = declared(spec, "flag")
    dest = _dest(section, spec.name)
    members = union_members(hint)
    if bool in members:
        on, _, off = flag.partition("/")
        if off:
            pair = group.add_mutually_exclusive_group()
            pair.add_argument(on, dest=dest, action="store_const", const=True, help=_help(spec))
            pair.add_argument(off, dest=dest, action="store_const", const=False,
                              help=f"the opposite of {on}")
        else:  # a flag that turns it on: the default is off
            group.add_argument(on, dest=dest, action="store_const", const=True,
                               help=_help(spec, default=False))
        return
    kind = next((t for t in (int, float) if t in members and str not in members), str)
    choices = declared(spec, "choices")
    group.add_argument(flag, dest=dest, type=kind, choices=choices,
                       metavar=declared(spec, "metavar") or (None if choices else spec.name.upper()),
                       help=_help(spec))


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Every declared flag: the top-level keys on ``parser``, each section's in its group."""
    for section in ("", *ALL_SECTIONS):
        cls = section_class(section)
        specs = [s for s in key_fields(cls) if declared(s, "flag")]  # type: ignore[arg-type]
        if not specs:
            continue
        hints = typing.get_type_hints(cls)
        group = parser if not section else parser.add_argument_group(
            getattr(cls, "FLAG_GROUP", section))
        for spec in specs:
            _add(group, section, spec, hints[spec.name])


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The setting flags as ``{"mqtt": {"url": ...}, "bundle": ...}`` (None: not given)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_DEST):
            continue
        section, name = dest[len(_DEST):].split("__")
        if section:
            out.setdefault(section, {})[name] = value
        else:
            out[name] = value
    return out


__all__ = ["add_setting_flags", "overrides"]
