"""The device loop's outputs: every one a :class:`~firmware_py.sinks.base.Sink`, found
here by :func:`discover` and built by :func:`build_sinks`.

============  ===========================  ============================================
name          settings                     what it does
============  ===========================  ============================================
console       ``[output]`` json,           one line per hop (human or JSON) on stdout
              changes_only, http
display       (``output.http``)            the live display page (HTTP + SSE)
mqtt          ``[mqtt]``                   retained states, ``/stats``, availability,
                                           Home Assistant discovery
sounds_like   ``[similarity]``             adds ``sounds_like`` to every state
============  ===========================  ============================================

**Adding a sink is one module** in this package that defines:

* ``build(ctx: SinkContext) -> Sink | None``: the sink, or None when it is off;
* ``ORDER`` (optional, default 50): states reach the sinks in ascending order (keys
  contributed by any sink first); they start and stop in that order;
* ``SETTINGS`` (optional): its settings dataclass, with ``SECTION`` naming its
  ``[section]``. The configuration composes it (file, environment, flags, the example
  file and ``--help`` all follow from its fields: :mod:`firmware_py.bounds`).

Nothing else changes: not the loop, not the configuration, not the command line.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .base import Sink, SinkContext

#: Where a sink module without ``ORDER`` goes.
DEFAULT_ORDER = 50


def discover() -> list[tuple[str, ModuleType]]:
    """Every sink module of this package (all but ``base``), ``(name, module)`` in feeding
    order. (No entry-point plugins: ``importlib.metadata`` alone costs the device ~4 MB
    of resident memory.)"""
    found: list[tuple[Any, str, ModuleType]] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append((getattr(module, "ORDER", DEFAULT_ORDER), info.name, module))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(name, module) for _order, name, module in found]


_MODULES = discover()
#: Every sink factory, in the order the loop feeds, starts and stops them.
REGISTRY: tuple[tuple[str, Callable[[SinkContext], Sink | None]], ...] = tuple(
    (name, module.build) for name, module in _MODULES
)
#: The settings dataclasses the sinks declare (composed by :mod:`firmware_py.config`).
SETTINGS: tuple[type, ...] = tuple(
    module.SETTINGS for _name, module in _MODULES if getattr(module, "SETTINGS", None)
)


def build_sinks(ctx: SinkContext) -> list[Sink]:
    """The sinks ``ctx.config`` turns on, in registry order."""
    return [sink for _name, build in REGISTRY if (sink := build(ctx)) is not None]


__all__ = ["DEFAULT_ORDER", "REGISTRY", "SETTINGS", "Sink", "SinkContext", "build_sinks",
           "discover"]
