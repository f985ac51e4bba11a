"""The publisher's two state machines, one value each instead of a handful of booleans:
the broker connection (:class:`LinkState`) and the publisher's own life (:class:`Lifecycle`).

Both are read and written under the session's lock (:mod:`firmware_py.mqtt.session`)::

    LinkState:  DOWN --CONNACK--> CONNECTED --PUBACK of "online"--> READY
                  ^--------------- disconnect (any state) -------------'
    Lifecycle:  NEW --start()--> RUNNING --stop()--> CLOSING
"""

from __future__ import annotations

import enum


class LinkState(enum.Enum):
    """Where the broker connection stands (``Session._link_state``, under the lock)."""

    DOWN = "down"  # no connection: before the first, between reconnects, after stop
    CONNECTED = "connected"  # CONNACK accepted; our retained "online" not yet acknowledged
    READY = "ready"  # "online" acknowledged: the sender may hand messages to paho


class Lifecycle(enum.Enum):
    """The publisher's own life (``Session._lifecycle``, under the lock)."""

    NEW = "new"  # constructed; start() not called
    RUNNING = "running"  # start() called (connected or retrying in the background)
    CLOSING = "closing"  # stop() called: nothing new is queued, "offline" goes out
