"""The device loop's outputs: every one a :class:`~firmware_py.sinks.base.Sink`, built
from :data:`REGISTRY` by :func:`build_sinks`.

============  ===========================  ============================================
name          settings                     what it does
============  ===========================  ============================================
console       ``[output]`` json,           one line per hop (human or JSON) on stdout
              changes_only
display       ``[output]`` http            the live display page (HTTP + SSE)
mqtt          ``[mqtt]``                   retained states, ``/stats``, availability,
                                           Home Assistant discovery
sounds_like   ``[similarity]``             adds ``sounds_like`` to every state
============  ===========================  ============================================

Order matters: states reach the sinks in registry order (keys contributed by any sink
first), sinks start in that order and stop in that order. Adding a sink: a module here
with a :class:`Sink` subclass and a ``build(ctx) -> Sink | None`` (None: off), its
settings dataclass (declared in that module, composed by :mod:`firmware_py.config`), and
its line in :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable

from . import console, display, mqtt, sounds_like
from .base import Sink, SinkContext

#: Every sink factory, in the order the loop feeds, starts and stops them.
REGISTRY: tuple[tuple[str, Callable[[SinkContext], Sink | None]], ...] = (
    ("console", console.build),
    ("display", display.build),
    ("mqtt", mqtt.build),
    ("sounds_like", sounds_like.build),
)


def build_sinks(ctx: SinkContext) -> list[Sink]:
    """The sinks ``ctx.config`` turns on, in registry order."""
    return [sink for _name, build in REGISTRY if (sink := build(ctx)) is not None]


__all__ = ["REGISTRY", "Sink", "SinkContext", "build_sinks"]
