"""MQTT sink: retained state, availability with a last will, Home Assistant discovery.

One device publishes under one prefix (default ``genre-edge/<device_id>``):

``<prefix>/state``         retained, QoS 1: ``{"genre", "confidence", "probabilities",
                           "level_dbfs", "model", "timestamp"}`` (confidence 0..1)
``<prefix>/availability``  retained, QoS 1: ``online`` / ``offline``; the broker publishes
                           ``offline`` itself (last will) when the device vanishes
``<prefix>/stats``         not retained, QoS 1: the caller's figures plus ``"mqtt"`` counters
``<discovery>/sensor/<device_id>/{genre,confidence,level}/config``
                           retained, QoS 1: Home Assistant discovery, one device, three sensors

Delivery model. Every state goes through one bounded FIFO (``queue_size``, oldest dropped)
drained by one sender thread, so messages reach the broker in the order they were made
and a device loop that publishes never blocks on the network. The sender only hands
messages to paho while the session is *ready*: connected and our ``online`` acknowledged.
Waiting for that acknowledgement is what keeps order across a reconnect: paho re-sends
the messages that were in flight when the link died right after the CONNACK, before it
can read the PUBACK of ``online``, so the queue is flushed strictly after them.

Threads. ``publish_state``/``publish_stats`` run on the caller's thread and only touch
the queue; paho callbacks run on paho's network thread. ``self._lock`` (:mod:`.session`)
is never held while calling into paho, because paho holds its own lock while calling
``on_publish`` (which takes ``self._lock``): holding ours while calling paho would be a
lock-order inversion and could deadlock.

Imports paho and the standard library only: this runs on the Raspberry Pi.

Layout: :mod:`.url` (broker URLs, masking a password), :mod:`.rules` (what a broker
accepts in topics and strings), :mod:`.settings` (:class:`MqttSettings`: the ``[mqtt]``
section and the publisher's settings, one class), :mod:`.messages` (payloads),
:mod:`.discovery` (Home Assistant sensors), :mod:`.connection` (paho clients and failure
wording), :mod:`.session` (shared state, paho callbacks, the sender thread),
:mod:`.publisher` (:class:`MqttPublisher`, the public API). Importing this package loads
no paho (the configuration reads the settings from it); :class:`MqttPublisher` and the
paho helpers load on first use.
"""

from __future__ import annotations

from typing import Any

from .discovery import EXTRA_GENRES, MANUFACTURER
from .messages import utc_timestamp
from .settings import MqttSettings, default_device_id
from .url import BrokerAddress, parse_mqtt_url, redact_url

__all__ = [
    "EXTRA_GENRES", "FAREWELL_MIN_S", "MANUFACTURER", "BrokerAddress", "MqttPublisher",
    "MqttSettings", "default_device_id", "parse_mqtt_url", "redact_url", "set_tcp_nodelay",
    "utc_timestamp",
]


def __getattr__(name: str) -> Any:
    """The names that need paho, imported on first use (PEP 562)."""
    if name in ("MqttPublisher", "FAREWELL_MIN_S"):
        from . import publisher

        return getattr(publisher, name)
    if name == "set_tcp_nodelay":
        from . import connection

        return connection.set_tcp_nodelay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
