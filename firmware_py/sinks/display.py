"""The display-page sink: :class:`~firmware_py.display.DisplayServer` on ``output.http``.

The server (``http.server`` and friends) is imported only when the page is on.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .base import Sink, SinkContext

if TYPE_CHECKING:
    from ..state import HopState

log = logging.getLogger(__name__)
#: After the console; its setting is the console's [output] section (output.http).
ORDER = 20


class DisplaySink(Sink):
    """Feeds every state to the display page; says offline when the loop stops."""

    name = "display"

    def __init__(self, server: Any) -> None:
        self.server = self.handle = server

    def start(self, stop: threading.Event) -> None:
        self.server.start()
        log.warning("display page: %s", self.server.url)

    def publish(self, state: HopState) -> None:
        self.server.update(state.to_dict())

    def stop(self) -> None:
        self.server.set_online(False)
        self.server.stop()


def build(ctx: SinkContext) -> DisplaySink | None:
    """The display page for ``output.http`` (None when unset)."""
    if not ctx.config.output.http:
        return None
    from ..display import DisplayServer, parse_http_address

    host, port = parse_http_address(ctx.config.output.http)
    return DisplaySink(DisplayServer(host, port, labels=ctx.bundle.labels,
                                     model_name=ctx.bundle.name))
