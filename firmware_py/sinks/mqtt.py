"""The MQTT sink: :class:`~firmware_py.mqtt.publisher.MqttPublisher` for ``[mqtt]``.

Without a broker URL nothing is built, and paho and ssl (~9 MB resident) are never imported.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..mqtt.settings import MqttSettings
from .base import Sink, SinkContext

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..state import HopState

ORDER = 30
SETTINGS = MqttSettings


def make_publisher(config: Any, bundle: Bundle) -> Any:
    """An MQTT publisher for ``config.mqtt`` (None when no broker URL is set)."""
    m = config.mqtt
    if not m.url:
        return None
    from ..mqtt.publisher import MqttPublisher

    # The [mqtt] section is the publisher's own settings: a copy is checked as a whole and
    # completed (device id = host name, prefix = genre-edge/<device id>).
    return MqttPublisher(dataclasses.replace(m), labels=bundle.labels, model_name=bundle.name)


class MqttSink(Sink):
    """Retained states, ``/stats`` snapshots, availability and Home Assistant discovery."""

    name = "mqtt"
    wants_stats = True

    def __init__(self, publisher: Any, *, wait: bool) -> None:
        self.publisher = self.handle = publisher
        self.wait = wait

    def start(self, stop: threading.Event) -> None:
        # A file run fails fast on a wrong broker; a microphone (the service) may start
        # before its broker and connects in the background meanwhile.
        self.publisher.start(wait=self.wait, stop=stop)

    def publish(self, state: HopState) -> None:
        self.publisher.publish_state(state.to_dict())

    def stats(self, snapshot: Mapping[str, Any]) -> None:
        self.publisher.publish_stats(snapshot)

    def stop(self) -> None:
        self.publisher.stop()


def build(ctx: SinkContext) -> MqttSink | None:
    """Validates the MQTT settings before any I/O; None when no broker URL is set."""
    publisher = make_publisher(ctx.config, ctx.bundle)
    if publisher is None:
        return None
    return MqttSink(publisher, wait=bool(ctx.config.source.input))
