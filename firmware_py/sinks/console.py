"""The console sink: one human line per hop (``*`` marks a change) or JSON lines, and the
``[output]`` settings it shares with the display page (``http``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from ..bounds import setting
from ..text import json_line
from .base import Sink, SinkContext

if TYPE_CHECKING:
    from ..state import HopState


def http_address(text: str) -> str:
    """``output.http`` checked by the display server's own grammar (raises ConfigError;
    imported only when the page is asked for: the server's modules cost memory)."""
    from ..display.address import parse_http_address

    parse_http_address(text)
    return text


@dataclass
class OutputConfig:
    """Local outputs (the ``[output]`` section): the console's lines and the display page's
    address. Every key's meaning is the ``help`` on its field."""

    SECTION: ClassVar[str] = "output"
    FLAG_GROUP: ClassVar[str] = "output"

    json: bool = setting(False, live=True, flag="--json",
                         help="Console output as JSON lines instead of human-readable lines.")
    changes_only: bool = setting(False, live=True, flag="--changes-only",
                                 help="Human-readable console output: print only when the "
                                      "published genre changes.")
    http: str | None = setting(
        None, example="127.0.0.1:8080", flag="--http", metavar="HOST:PORT", check=http_address,
        help="host:port of the live display page (HTTP and server-sent events). Default: "
             "unset = off.")


#: Where the loop feeds this sink among the others (lower first), and its settings.
ORDER = 10
SETTINGS = OutputConfig


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
