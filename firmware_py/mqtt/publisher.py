"""The MQTT sink: :class:`MqttPublisher` (see :mod:`firmware_py.mqtt`).

Its public methods run on the caller's thread (the device loop) and only touch the queue
and the shared state under the lock; :class:`~firmware_py.mqtt.session.Session` holds
the paho callbacks and the sender thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..errors import BrokerError
from ..text import jsonable
from .connection import (
    describe_os_error,
    farewell,
    join_loop,
    refusal_message,
    tls_message,
    tls_mismatch,
)
from .lifecycle import Lifecycle, LinkState
from .messages import Outgoing, encode, state_document, utc_timestamp
from .session import STOP_POLL_S, Session

log = logging.getLogger("firmware_py.mqtt")

#: The least time stop() gives a second connection to publish ``offline``.
FAREWELL_MIN_S = 0.5


class MqttPublisher(Session):
    """Publishes genre state to one broker; survives the broker going away and coming back.

    Usage::

        pub = MqttPublisher(settings, labels=bundle.labels, model_name=bundle.name)
        pub.start()                 # raises BrokerError / ConfigError (one line)
        pub.publish_state({...})    # queued (bounded) while the broker is away
        pub.stop()                  # retained "offline", within ~1 s
    """

    def start(self, timeout_s: float = 10.0, *, wait: bool = True,
              stop: threading.Event | None = None) -> None:
        """Connect, publish ``online`` and discovery, and start the background threads.

        ``wait=True`` (fail fast, for interactive use): raise a one-line BrokerError when
        the broker cannot be reached or does not answer within ``timeout_s``.
        ``wait=False`` (for a service that may boot before its broker): an unreachable
        broker only logs a warning; connecting goes on in the background with backoff
        and states are queued meanwhile.
        In both modes a refused login or a failed TLS verification raises, because
        retrying cannot fix them; with ``wait=False`` a broker that was unreachable at
        first and refuses or fails verification later is logged as an error (once per
        reason) and retried.
        ``stop`` (the device loop's SIGTERM event): every wait here, and the waits of
        :meth:`publish_state`, end within ~0.1 s of it being set; ``start`` then returns
        quietly and :meth:`stop` says ``offline`` as best it can.
        """
        if self._lifecycle is not Lifecycle.NEW:
            raise RuntimeError("MqttPublisher.start() called twice")
        self._lifecycle = Lifecycle.RUNNING
        self._stop_event = stop
        client = self._make_client()
        self._client = client
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        client.connect_timeout = max(0.5, min(self.settings.connect_timeout_s, timeout_s))
        host, port = self._addr.host, self._addr.port
        deadline = time.monotonic() + timeout_s
        tcp_up = True
        try:
            # Synchronous first attempt: paho's background retries swallow the reason,
            # and the user deserves "connection refused" or "certificate verify failed".
            if not self._connect_watching(client):
                return  # stopped while connecting: stop() takes it from here
        except ssl.SSLError as exc:
            self._abort()
            raise BrokerError(tls_message(self.settings, exc)) from None
        except (OSError, ValueError) as exc:
            problem = (tls_message(self.settings, exc) if tls_mismatch(self.settings, exc) else
                       f"cannot reach MQTT broker at {self._addr} ({describe_os_error(exc)})")
            if wait:
                self._abort()
                fix = "" if tls_mismatch(self.settings, exc) else ": is it running? check --mqtt"
                raise BrokerError(problem + fix) from None
            log.warning("%s; retrying in the background every %g-%g s, states are queued "
                        "(up to %d)", problem, self.settings.reconnect_min_s,
                        self.settings.reconnect_max_s, self.settings.queue_size)
            self._warned_unreachable = True
            self._down_since = time.monotonic()
            tcp_up = False
            client.connect_async(host, port, keepalive=self.settings.keepalive_s)
        if tcp_up:
            self._start_waiting = True
        client.loop_start()
        if not tcp_up:
            return
        with self._cond:
            while not (self._link_state is LinkState.READY or self._refusal is not None
                       or self._unanswered
                       or self._stopping()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, STOP_POLL_S))  # a signal cannot notify us
            ready = self._link_state is LinkState.READY
            refusal, unanswered = self._refusal, self._unanswered
            self._start_waiting = False
        if refusal is not None:
            self._abort()
            raise BrokerError(refusal_message(self.settings, refusal))
        if ready or self._stopping():
            return
        if unanswered:  # the broker hung up on our CONNECT: the usual sign of a TLS port
            message = (
                f"MQTT broker at {self._addr} closed the connection without answering the "
                "MQTT CONNECT: " + ("check the broker's log" if self._addr.tls else
                                    "if the port speaks TLS, use mqtts://host:port")
            )
        else:
            message = (
                f"no answer from MQTT broker at {self._addr} within {timeout_s:g} s: check "
                "that the port speaks MQTT" + ("" if self._addr.tls else " (use mqtts:// for a TLS port)")
            )
        if wait:
            self._abort()
            raise BrokerError(message)
        log.warning("%s; retrying in the background", message)

    def publish_state(self, state: Mapping[str, Any]) -> None:
        """Queue one retained state; adds ``model`` and ``timestamp`` when absent.

        Non-finite floats (a level of -inf dBFS for digital silence) become JSON null,
        which Home Assistant shows as "unknown". Never blocks while the broker is away;
        while connected it may wait up to ``max_block_s`` for room in a full queue.
        """
        payload = encode(state_document(state, self.model_name))
        with self._cond:
            if self._lifecycle is Lifecycle.CLOSING:
                self._warn_closed()
                return
            # Connected but the queue is full: the producer outruns the broker's PUBACKs
            # (a file played --fast). Wait for room rather than drop: nothing is lost
            # while the broker is there. While it is away, never block the audio loop.
            # After one fruitless wait, stop waiting until the sender moves again: a
            # silently dead link (no FIN, found only by keepalive) must not stall every hop.
            deadline = time.monotonic() + self.settings.max_block_s
            while (self._link_state is LinkState.READY and not self._stalled
                   and self._lifecycle is not Lifecycle.CLOSING
                   and len(self._queue) >= self.settings.queue_size and not self._stopping()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stalled = True
                    break
                self._cond.wait(min(remaining, STOP_POLL_S))
            self._n["states"] += 1
            self._last_state = payload
            self._enqueue(Outgoing(self.settings.state_topic, payload, True, "state"))

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Publish figures on ``<prefix>/stats`` with our counters under ``"mqtt"``.

        Not retained: a stats sample is only meaningful while the device is alive (a
        retained one would show stale latencies after the device died; availability says
        that). Not queued while the broker is away either: a stale sample must not evict
        a state change from the bounded queue; such samples are counted in
        ``stats_skipped``.
        """
        doc = jsonable(dict(stats))
        doc.setdefault("timestamp", utc_timestamp())
        doc["mqtt"] = self.counters
        payload = encode(doc)
        with self._cond:
            if self._lifecycle is Lifecycle.CLOSING:
                return
            if self._link_state is not LinkState.READY:
                self._n["stats_skipped"] += 1
                return
            self._enqueue(Outgoing(self.settings.stats_topic, payload, False, "stats"))

    def tcp_nodelay(self) -> bool | None:
        """Whether the broker connection has TCP_NODELAY set (None: no connection, or the
        socket cannot tell); for the benchmark, which explains its latency with it."""
        client = self._client
        sock = client.socket() if client is not None else None
        if sock is None:
            return None
        try:
            return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        except (OSError, AttributeError):
            return None

    def stop(self, timeout_s: float = 1.0) -> None:
        """Publish retained ``offline`` (waiting for its PUBACK), disconnect, stop threads.

        Bounded by ``timeout_s`` plus a little: pending states get up to half of it to
        drain, ``offline`` the rest. States still queued after that are lost (logged).
        When the main connection is down (the broker restarted a moment ago and we have
        not reconnected yet), ``offline`` goes out on a short-lived second connection,
        bounded by the rest of ``timeout_s`` (at least :data:`FAREWELL_MIN_S`): a retained
        ``online`` can survive a broker restart while our last will died with the old
        broker process, and nothing else would ever correct it.
        """
        with self._cond:
            if self._lifecycle is Lifecycle.CLOSING:
                return
            self._lifecycle = Lifecycle.CLOSING
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        client = self._client
        if client is None:
            self._stop_sender()
            return
        if self._connect_worker is not None and self._connect_worker.is_alive():
            # stop() during the first connect: that attempt ends by itself within
            # connect_timeout_s; its client is never touched again (paho is not thread-safe).
            self._stop_sender()
            farewell(self.settings, max(FAREWELL_MIN_S, deadline - time.monotonic()), self._on_log)
            return
        with self._cond:
            drain_until = time.monotonic() + timeout_s / 2
            while self._link_state is LinkState.READY and (self._queue or self._unacked):
                remaining = drain_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            # Not only READY: between CONNACK and the PUBACK of "online" we must still
            # overwrite that "online".
            connected = self._link_state is not LinkState.DOWN
            left = len(self._queue) + len(self._unacked)
        self._stop_sender()
        if left:
            log.warning("MQTT: stopping with %d state/stats message(s) not delivered", left)
        said = False
        if connected:
            info = client.publish(self.settings.availability_topic, b"offline", qos=1, retain=True)
            self._register(info.mid, "offline")
            try:
                info.wait_for_publish(max(0.05, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # connection gone meanwhile: the second connection below says it
            said = info.is_published()
        with self._cond:
            if self._link_state is LinkState.READY:  # the sender has stopped: no more sends
                self._link_state = LinkState.CONNECTED
        client.disconnect()  # before the farewell: paho must not reconnect behind its back
        if not said:
            said = farewell(self.settings, max(FAREWELL_MIN_S, deadline - time.monotonic()), self._on_log)
            if not said:
                log.warning("MQTT: could not publish 'offline' to %s within %.1f s (the "
                            "broker publishes our last will if it still holds the session)",
                            self._addr, max(FAREWELL_MIN_S, timeout_s))
        join_loop(client, max(0.2, deadline - time.monotonic()))
        log.info("MQTT: stopped (%s)", self._summary())
