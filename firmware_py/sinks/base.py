"""The one interface every output of the device loop implements (:class:`Sink`).

Thread model: the loop calls every method on its own thread, in this order: ``start``
once, then per inference hop ``contribute`` and ``publish``, now and then ``stats`` and
``reload``, and ``stop`` once (also after a failed start). A sink that needs threads of
its own (the MQTT sender, the display's HTTP handlers) keeps them inside; ``publish``
must never block on the network.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..pipeline import HopResult, Pipeline
    from ..state import HopState


@dataclass(frozen=True)
class SinkContext:
    """What a sink's factory may read: the configuration, the bundle, the running pipeline
    and the console stream."""

    config: Any  # firmware_py.config.Config (sinks never import the configuration)
    bundle: Bundle
    pipeline: Pipeline
    console: IO[str]


class Sink:
    """One output of the device loop; every method is optional (the defaults do nothing).

    Attributes
    ----------
    name : str
        The registry name (``console``, ``display``, ``mqtt``, ``sounds_like``).
    handle : object or None
        The running part, for benchmarks and tests (``on_start``): the MQTT publisher,
        the display server.
    wants_stats : bool
        Whether :meth:`stats` should receive the periodic ``/stats`` snapshots (taking a
        snapshot resets the latency samples, so the loop takes none when no sink wants it).
    """

    name = "sink"
    handle: Any = None
    wants_stats = False

    def start(self, stop: threading.Event) -> None:
        """Begin (bind, connect); ``stop`` is the loop's SIGTERM event."""

    def contribute(self, result: HopResult) -> Mapping[str, Any]:
        """Keys this sink adds to the state of ``result`` before any sink publishes it."""
        return {}

    def publish(self, state: HopState) -> None:
        """One state per inference hop."""

    def stats(self, snapshot: Mapping[str, Any]) -> None:
        """Latency, CPU and memory figures, every ``mqtt.stats_interval_s`` and at the end."""

    def reload(self, config: Any) -> None:
        """SIGHUP: apply the settings of the new ``config`` that can change live."""

    def stop(self) -> None:
        """End (say offline, close); called once, also when :meth:`start` failed or never ran."""
