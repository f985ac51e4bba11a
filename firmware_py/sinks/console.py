"""The console sink: one human line per hop (``*`` marks a change) or JSON lines, and the
``[output]`` settings it shares with the display page (``http``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ..text import json_line
from .base import Sink, SinkContext

if TYPE_CHECKING:
    from ..state import HopState


@dataclass
class OutputConfig:
    """Local outputs.

    Attributes
    ----------
    json : bool
        Console output as JSON lines instead of human lines (applied live on SIGHUP).
    changes_only : bool
        Human console output: print only when the published genre changes (live).
    http : str or None
        ``host:port`` for a small local HTTP status endpoint (the display page,
        :mod:`firmware_py.sinks.display`); None is off.
    """

    json: bool = False
    changes_only: bool = False
    http: str | None = None


class ConsoleSink(Sink):
    """Human lines (one per hop, ``*`` marks a change) or JSON lines."""

    name = "console"

    def __init__(self, stream: TextIO = sys.stdout, as_json: bool = False,
                 changes_only: bool = False) -> None:
        self.stream = stream
        self.as_json = as_json
        self.changes_only = changes_only

    def publish(self, state: HopState) -> None:
        self(state.to_dict())

    def __call__(self, payload: dict[str, Any]) -> None:
        if self.as_json:
            line = json_line(payload)
        else:
            if self.changes_only and not payload["changed"]:
                return
            mark = "*" if payload["changed"] else " "
            raw = {k: v for k, v in payload["raw"].items() if v is not None}
            top = max(raw, key=raw.get) if raw else None
            line = (
                f"{payload['audio_t_s']:8.1f} s {mark} {payload['genre']:<12} "
                f"{100 * payload['confidence']:5.1f}%  {payload['level_dbfs']:6.1f} dBFS"
                + (f"   (window: {top} {100 * raw[top]:.0f}%)" if top is not None
                   else "   (window: no score)")
            )
        try:
            print(line, file=self.stream, flush=True)
        except BrokenPipeError:
            pass

    def reload(self, config: Any) -> None:
        self.as_json = config.output.json
        self.changes_only = config.output.changes_only


def build(ctx: SinkContext) -> ConsoleSink:
    out = ctx.config.output
    return ConsoleSink(ctx.console, as_json=out.json, changes_only=out.changes_only)
