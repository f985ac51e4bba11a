"""The MQTT publisher's machinery: the state its threads share, paho's callbacks and the
sender thread (see :mod:`firmware_py.mqtt` for the delivery model and the thread model).

:class:`Session` is the base of :class:`~firmware_py.mqtt.publisher.MqttPublisher`, whose
public methods run on the caller's thread; the ``_on_*`` callbacks here run on paho's
network thread and :meth:`Session._send_loop` on the sender thread. All shared state is
guarded by ``self._lock`` (``self._cond``), never held while calling into paho.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections import deque
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from .. import __version__
from .client import mqtt
from .connection import (
    base_client,
    describe_os_error,
    join_loop,
    refusal_message,
    tls_message,
    tls_mismatch,
)
from .discovery import discovery_messages
from .lifecycle import Lifecycle, LinkState
from .messages import Outgoing, encode
from .settings import MqttSettings

log = logging.getLogger("firmware_py.mqtt")
_paho_log = logging.getLogger("firmware_py.mqtt.paho")

#: How often waits look at the stop event: a signal handler cannot notify a condition
#: (taking a lock in a handler can deadlock against the interrupted code).
STOP_POLL_S = 0.1


class Session:
    """Connection state, delivery bookkeeping and paho callbacks of one publisher.

    The connection is one :class:`LinkState` (DOWN -> CONNECTED on CONNACK -> READY on the
    PUBACK of "online" -> DOWN on disconnect) and the publisher's life one
    :class:`Lifecycle` (NEW -> RUNNING -> CLOSING); the other flags only remember what
    was already logged once per outage.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        labels: list[str],
        model_name: str,
        device_name: str | None = None,
        sw_version: str = __version__,
    ) -> None:
        self.settings = settings
        self.labels = list(labels)
        self.model_name = model_name
        self.device_name = device_name or f"genre-edge {settings.device_id}"
        self.sw_version = sw_version
        self._addr = settings.address
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[Outgoing] = deque()
        self._unacked: dict[int, str] = {}  # mid -> kind, handed to paho, no PUBACK yet
        # The QoS 0 mids in _unacked. paho drops unsent QoS 0 packets with the connection
        # and never calls on_publish for them: they leave _unacked on disconnect instead,
        # or they would hold in-flight slots for ever (and stall the sender at max_inflight).
        self._unacked_qos0: set[int] = set()
        self._generation = 0  # connection generation: +1 on every disconnect
        self._early_acks: set[int] = set()  # PUBACK seen before the publisher registered the mid
        self._last_state: bytes | None = None
        self._online_mid: int | None = None
        self._link_state = LinkState.DOWN
        self._lifecycle = Lifecycle.NEW
        self._stalled = False  # a producer waited max_block_s for room in vain
        self._refusal: mqtt.ReasonCode | None = None
        self._start_waiting = False  # start() reports refusals itself; later ones are logged
        self._unanswered = False  # the broker closed the link before any CONNACK (start)
        self._stop_event: threading.Event | None = None
        self._connect_worker: threading.Thread | None = None
        self._sender_exit = False
        self._sender: threading.Thread | None = None
        self._down_since: float | None = None
        self._warned_unreachable = False
        self._logged_fail_reasons: set[str] = set()  # TLS failures logged this outage
        self._warned_drop = False
        self._warned_closed = False
        self._n = dict.fromkeys(
            ("states", "states_delivered", "published", "delivered", "dropped",
             "stats_skipped", "connects", "reconnects", "disconnects"), 0)

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True while the broker has accepted us and acknowledged our ``online``."""
        with self._lock:
            return self._link_state is LinkState.READY

    @property
    def counters(self) -> dict[str, int]:
        """Delivery counters (no credentials): also sent as ``"mqtt"`` in every stats message.

        ``states``: publish_state calls; ``states_delivered``: their PUBACKs (re-sends of the
        last state after a reconnect included); ``published``/``delivered``: all PUBLISH
        packets handed to paho / acknowledged (for QoS 0: written to the socket);
        ``queued``: waiting for the broker; ``inflight``: handed to paho, not yet
        acknowledged; ``dropped``: evicted from the full queue (oldest first), or (QoS 0
        only) lost with the connection; ``reconnects``: successful connects after the first.
        """
        with self._lock:
            out = dict(self._n)
            out["queued"] = len(self._queue)
            out["inflight"] = len(self._unacked)
            out["connected"] = int(self._link_state is LinkState.READY)
            return out

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant discovery: (topic, config) for the genre, confidence and level sensors."""
        return discovery_messages(self.settings, labels=self.labels, model_name=self.model_name,
                                  device_name=self.device_name, sw_version=self.sw_version)

    # ------------------------------------------------------------------ client setup

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = base_client(s, s.client_id, self._on_log)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type]
        # Unlimited in paho: our sender already bounds what is in flight, and paho's own
        # limit would add a second queue with its own ordering rules.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _connect_watching(self, client: mqtt.Client) -> bool:
        """``client.connect()`` on a helper thread, watching the stop event: a SYN that is
        never answered or a silent TLS handshake blocks for connect_timeout, and SIGTERM
        must not wait for it. Raises what connect raised; False: stopped first."""
        outcome: list[BaseException | None] = []

        def attempt() -> None:
            try:
                client.connect(self._addr.host, self._addr.port,
                               keepalive=self.settings.keepalive_s)
            except BaseException as exc:  # noqa: BLE001 (re-raised on the caller's thread)
                outcome.append(exc)
            else:
                outcome.append(None)

        worker = threading.Thread(target=attempt, name="mqtt-connect", daemon=True)
        self._connect_worker = worker
        worker.start()
        while worker.is_alive():
            if self._stopping():
                return False
            worker.join(STOP_POLL_S)
        if outcome and outcome[0] is not None:
            raise outcome[0]
        return True

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason_code: mqtt.ReasonCode, _properties: Any) -> None:
        if reason_code.is_failure:
            with self._cond:
                first = self._refusal is None or self._refusal.value != reason_code.value
                self._refusal = reason_code
                self._cond.notify_all()
            if first and not self._start_waiting:
                log.error("%s; retrying", refusal_message(self.settings, reason_code))
            return
        if self._lifecycle is Lifecycle.CLOSING:
            # stop() ran while this connect was under way: leave "offline", not "online".
            client.publish(self.settings.availability_topic, b"offline", qos=1, retain=True)
            client.disconnect()
            return
        with self._cond:
            self._refusal = None
            self._link_state = LinkState.CONNECTED
            self._n["connects"] += 1
            reconnect = self._n["connects"] > 1 or self._down_since is not None
            if self._n["connects"] > 1:
                self._n["reconnects"] += 1
            down_s = time.monotonic() - self._down_since if self._down_since is not None else 0.0
            self._down_since = None
            self._warned_unreachable = False
            self._logged_fail_reasons.clear()
            self._warned_drop = False
            queued = len(self._queue)
            self._request_last_state()
        if reconnect:
            log.info("MQTT: connected to %s after %.1f s away; sending %d queued message(s) "
                     "(%d dropped so far)", self._addr, down_s, queued, self._n["dropped"])
        else:
            log.info("MQTT: connected to %s as %s", self._addr, self.settings.client_id)
        client.subscribe(self.settings.ha_status_topic, qos=1)
        info = client.publish(self.settings.availability_topic, b"online", qos=1, retain=True)
        with self._cond:
            self._online_mid = info.mid
        self._register(info.mid, "online")
        self._publish_discovery(client)

    def _on_log(self, _client: mqtt.Client, _userdata: Any, level: int, buf: str) -> None:
        # paho logs every lost connection and retry as an error; our own callbacks say
        # that once per outage. What must reach the journal is a bug in a callback
        # (paho catches it, see suppress_exceptions).
        if level == mqtt.MQTT_LOG_ERR and buf.startswith("Caught exception"):
            log.error("MQTT (paho): %s", buf)
        else:
            _paho_log.debug("%s", buf)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` around reconnect(): the
        # exception being handled is the reason (refused, unknown host, TLS verification).
        exc = sys.exc_info()[1]
        tls_problem = (tls_message(self.settings, exc) if isinstance(exc, ssl.SSLError)
                       or (exc is not None and tls_mismatch(self.settings, exc)) else None)
        with self._cond:
            if self._down_since is None:
                self._down_since = time.monotonic()
            if tls_problem is not None:
                # Retrying cannot fix it, but a service keeps trying (the broker's
                # certificate may be replaced): once per distinct reason, as an error.
                warn = tls_problem not in self._logged_fail_reasons
                self._logged_fail_reasons.add(tls_problem)
            else:
                # Once per outage: a broker that is away for a day must not fill the journal.
                warn = not self._warned_unreachable
                self._warned_unreachable = True
        if not warn:
            return
        if tls_problem is not None:
            log.error("%s; retrying every %g-%g s", tls_problem,
                      self.settings.reconnect_min_s, self.settings.reconnect_max_s)
            return
        reason = f" ({describe_os_error(exc)})" if exc is not None else ""
        log.warning("MQTT broker at %s is unreachable%s; retrying every %g-%g s", self._addr,
                    reason, self.settings.reconnect_min_s, self.settings.reconnect_max_s)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason_code: mqtt.ReasonCode, _properties: Any) -> None:
        with self._cond:
            was_ready = self._link_state is LinkState.READY
            if self._link_state is LinkState.DOWN and self._start_waiting:
                self._unanswered = True
            self._link_state = LinkState.DOWN
            self._online_mid = None
            closing = self._lifecycle is Lifecycle.CLOSING
            # paho discards unsent QoS 0 packets with the connection, without on_publish.
            self._generation += 1
            for mid in self._unacked_qos0:
                if self._unacked.pop(mid, None) is not None:
                    self._n["dropped"] += 1
            self._unacked_qos0.clear()
            if was_ready:
                self._n["disconnects"] += 1
                self._down_since = time.monotonic()
            self._cond.notify_all()
        if was_ready and not closing:
            why = "connection lost" if reason_code.value in (0, 128) else str(reason_code)
            log.warning("MQTT: lost the broker at %s (%s); reconnecting with backoff %g-%g s, "
                        "queueing up to %d states", self._addr, why,
                        self.settings.reconnect_min_s, self.settings.reconnect_max_s,
                        self.settings.queue_size)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int,
                    _reason_code: Any, _properties: Any) -> None:
        # Runs with paho's message lock held: touch only our own state, never call paho.
        with self._cond:
            kind = self._unacked.pop(mid, None)
            if kind is None:
                self._early_acks.add(mid)
                return
            self._unacked_qos0.discard(mid)
            self._count_ack(kind)
            if mid == self._online_mid and self._lifecycle is not Lifecycle.CLOSING:
                self._online_mid = None
                self._link_state = LinkState.READY
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Home Assistant's birth message: it (re)started and forgot non-retained state.
        # A retained "online" is only the broker replaying an old birth to our new
        # subscription: we sent discovery on connect already.
        if msg.topic != self.settings.ha_status_topic or msg.retain:
            return
        if msg.payload.strip().lower() != b"online":
            return
        log.info("MQTT: Home Assistant came online; re-sending discovery and the last state")
        self._publish_discovery(client)
        with self._cond:
            self._request_last_state()

    # ------------------------------------------------------------------ internals

    def _publish_discovery(self, client: mqtt.Client) -> None:
        for topic, config in self.discovery_messages():
            info = client.publish(topic, encode(config), qos=1, retain=True)
            self._register(info.mid, "discovery")

    def _request_last_state(self) -> None:
        """Queue a re-send of the newest state unless it is already on its way (lock held).

        The broker may have lost it (restart without persistence) or Home Assistant may
        have restarted; the sender resolves the marker to the newest state at send time,
        so it can never overwrite a newer retained state with an older one.
        """
        if self._last_state is None:
            return
        if any(o.kind in ("state", "last_state") for o in self._queue):
            return
        if "state" in self._unacked.values():
            return  # paho re-sends it after the reconnect
        self._enqueue(Outgoing(self.settings.state_topic, b"", True, "last_state"))

    def _enqueue(self, item: Outgoing) -> None:
        """Append under the lock; when full, drop the oldest (the freshest state matters most)."""
        if len(self._queue) >= self.settings.queue_size:
            self._queue.popleft()
            self._n["dropped"] += 1
            if not self._warned_drop:
                self._warned_drop = True  # once per outage; the reconnect log has the total
                why = ("outruns the broker" if self._link_state is LinkState.READY
                       else "while the broker is away")
                log.warning("MQTT: queue full (%d messages) %s; dropping the oldest "
                            "(dropped so far: %d)", self.settings.queue_size, why,
                            self._n["dropped"])
        self._queue.append(item)
        self._cond.notify_all()

    def _send_loop(self) -> None:
        """The only thread that hands queued messages to paho: keeps them in order."""
        while True:
            with self._cond:
                while not self._sender_exit and not (
                    self._link_state is LinkState.READY and self._queue
                    and len(self._unacked) < self.settings.max_inflight
                ):
                    self._cond.wait()
                if self._sender_exit:
                    return
                item = self._queue.popleft()
                self._stalled = False
                self._cond.notify_all()  # a producer may wait for room (publish_state)
                payload = self._last_state if item.kind == "last_state" else item.payload
                kind = "state" if item.kind == "last_state" else item.kind
                link = self._generation
            client = self._client
            if client is None or payload is None:
                continue
            qos = self.settings.qos
            try:
                info = client.publish(item.topic, payload, qos=qos, retain=item.retain)
            except (ValueError, RuntimeError) as exc:  # paho refuses a malformed message
                log.error("MQTT: cannot publish on %s: %s", item.topic, exc)
                continue
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or (
                qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
            ):
                with self._cond:  # a QoS 0 message without a connection is gone
                    self._n["dropped"] += 1
                    self._cond.notify_all()
                continue
            # MQTT_ERR_NO_CONN is fine for QoS>0: paho keeps those messages and re-sends
            # them first after the reconnect.
            self._register(info.mid, kind, qos0_link=link if qos == 0 else None)

    def _register(self, mid: int, kind: str, qos0_link: int | None = None) -> None:
        """Track a mid handed to paho until on_publish; ``qos0_link``: the connection
        generation a QoS 0 message was sent on (None for QoS>0)."""
        with self._cond:
            self._n["published"] += 1
            if mid in self._early_acks:
                self._early_acks.discard(mid)
                self._count_ack(kind)
                self._cond.notify_all()
            elif qos0_link is not None and qos0_link != self._generation:
                # The link it was sent on died before we got here: paho has already
                # discarded the packet (no on_publish will come).
                self._n["dropped"] += 1
                self._cond.notify_all()
            else:
                self._unacked[mid] = kind
                if qos0_link is not None:
                    self._unacked_qos0.add(mid)

    def _count_ack(self, kind: str) -> None:
        self._n["delivered"] += 1
        if kind == "state":
            self._n["states_delivered"] += 1

    def _stop_sender(self) -> None:
        with self._cond:
            self._sender_exit = True
            self._cond.notify_all()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(timeout=1.0)

    def _abort(self) -> None:
        with self._cond:
            self._lifecycle = Lifecycle.CLOSING
        self._stop_sender()
        client = self._client
        if client is not None:
            try:
                client.disconnect()
            finally:
                join_loop(client, 1.0)

    def _warn_closed(self) -> None:
        if not self._warned_closed:
            self._warned_closed = True
            log.warning("MQTT: publish after stop() ignored")

    def _summary(self) -> str:
        n = self.counters
        return (f"states {n['states']}, delivered {n['states_delivered']}, dropped {n['dropped']}, "
                f"reconnects {n['reconnects']}")
