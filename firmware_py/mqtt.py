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
the queue; paho callbacks run on paho's network thread. ``self._lock`` is never held
while calling into paho, because paho holds its own lock while calling ``on_publish``
(which takes ``self._lock``): holding ours while calling paho would be a lock-order
inversion and could deadlock.

Imports paho and the standard library only: this runs on the Raspberry Pi.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from . import __version__
from .errors import BrokerError, ConfigError
from .mqtt_rules import check_text, check_topic_part

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(__name__ + ".paho")

MANUFACTURER = "genre-edge"
# States the smoother may publish besides the model's labels.
EXTRA_GENRES = ("silence", "unknown")
_ID_RE = re.compile(r"^[a-z0-9_-]+$")
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# CONNACK reason codes (MQTT 5 numbering; paho maps the 3.1.1 return codes onto them).
_RC_BAD_LOGIN = 134  # 3.1.1 return code 4: bad user name or password
_RC_NOT_AUTHORIZED = 135  # 3.1.1 return code 5: not authorised
#: How often waits look at the stop event: a signal handler cannot notify a condition
#: (taking a lock in a handler can deadlock against the interrupted code).
_STOP_POLL_S = 0.1
#: The least time stop() gives a second connection to publish ``offline``.
FAREWELL_MIN_S = 0.5


class BrokerAddress(NamedTuple):
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``user:***@host``), for messages.

    Works on text that is not a valid URL too (no scheme, stray brackets): everything
    between the first ':' after the scheme and the last '@' is the password.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    else:
        head += sep
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{userinfo.split(':', 1)[0]}:***@{hostpart}"


def _bracket_problem(text: str, shown: str, example: str) -> str:
    opening, closing = text.find("["), text.find("]")
    if 0 <= opening < closing:
        return (f"bad MQTT URL {shown!r}: only an IPv6 address goes in brackets "
                f"(mqtt://[::1]:1883); write a host name or IPv4 address without them ({example})")
    return (f"bad MQTT URL {shown!r}: unbalanced '[' or ']' in the host; write an IPv6 address "
            f"in brackets, e.g. mqtt://[::1]:1883")


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Split ``mqtt://host[:port]`` or ``mqtts://host[:port]``; one-line ConfigError otherwise.

    Credentials in the URL are refused on purpose: URLs end up in logs and process
    listings, so the password belongs in the ``username``/``password`` settings. Errors
    show the URL with any password masked.
    """
    text = (url or "").strip()
    shown = redact_url(text)
    example = "e.g. mqtt://127.0.0.1:1883 or mqtts://broker.lan:8883"
    if "://" not in text:
        raise ConfigError(f"bad MQTT URL {shown!r}: expected mqtt://host:port or mqtts://host:port ({example})")
    try:
        parts = urlsplit(text)
    except ValueError:  # an unbalanced '[', or (newer Pythons) "[broker.lan]"
        raise ConfigError(_bracket_problem(text, shown, example)) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(
            f"bad MQTT URL {shown!r}: scheme {parts.scheme!r} is not supported; use mqtt:// "
            f"(plain) or mqtts:// (TLS), {example}"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "bad MQTT URL: it contains a login; remove it from the URL and set mqtt "
            "username/password (or GENRE_EDGE_MQTT_PASSWORD) instead"
        )
    try:
        host = parts.hostname
    except ValueError:  # "[broker.lan]": brackets around something that is not IPv6
        raise ConfigError(_bracket_problem(text, shown, example)) from None
    if not host:
        raise ConfigError(f"bad MQTT URL {shown!r}: the host is missing ({example})")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"bad MQTT URL {shown!r}: the port must be a number from 1 to 65535 ({example})"
        ) from None
    if port == 0:
        raise ConfigError(f"bad MQTT URL {shown!r}: the port must be a number from 1 to 65535 ({example})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"bad MQTT URL {shown!r}: only scheme, host and port are allowed ({example})")
    return BrokerAddress(host, port or _DEFAULT_PORTS[scheme], scheme == "mqtts")


def default_device_id() -> str:
    """The hostname, lower-cased and reduced to ``[a-z0-9_-]`` (safe in topics and HA ids)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-_")
    return name or "genre-edge"


@dataclass
class MqttSettings:
    """Everything the publisher needs; derived fields are filled in by ``__post_init__``.

    ``tls_insecure`` skips only the host-name check (the certificate must still chain to
    ``ca_file``), like paho's ``tls_insecure_set``: for brokers reached by an IP address
    their certificate does not name.
    """

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    device_id: str = ""
    topic_prefix: str = ""
    discovery_prefix: str = "homeassistant"
    qos: int = 1
    keepalive_s: int = 30
    # Home Assistant marks the sensors unavailable when no state came for this long
    # (0 disables); the device publishes every hop (~1 s), so 2 minutes is generous.
    expire_after_s: int = 120
    queue_size: int = 1000
    client_id: str = ""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 5.0
    # Messages handed to paho but not yet acknowledged; bounds paho's own (unbounded)
    # store so that our queue, with its drop-oldest rule, is the only place that grows.
    max_inflight: int = 100
    # publish_state() waits up to this long for room in a full queue while connected
    # (see publish_state); 0 never waits.
    max_block_s: float = 5.0

    def __post_init__(self) -> None:
        self.address  # validates the URL  # noqa: B018
        self.device_id = (self.device_id or default_device_id()).strip()
        if not _ID_RE.match(self.device_id):
            raise ConfigError(
                f"bad MQTT device id {self.device_id!r}: use only a-z, 0-9, '_' and '-' "
                "(set --device-id)"
            )
        self.topic_prefix = (self.topic_prefix or f"genre-edge/{self.device_id}").strip()
        # What the broker would refuse (and drop us for) or silently never deliver, here
        # as one line instead of a reconnect loop: see firmware_py.mqtt_rules.
        check_topic_part("MQTT topic prefix", self.topic_prefix, "e.g. genre-edge/livingroom")
        check_topic_part("Home Assistant discovery prefix", self.discovery_prefix,
                         "the default is homeassistant")
        longest = max((self.availability_topic, self.discovery_topic("confidence")), key=len)
        check_topic_part("MQTT topic", longest, "shorten mqtt topic_prefix, discovery_prefix "
                         "or device_id")
        self.client_id = self.client_id or f"genre-edge-{self.device_id}"
        self.password = self.password or None
        self.username = self.username or None
        check_text("MQTT username", self.username, "fix mqtt username")
        check_text("MQTT password", self.password, "fix mqtt password", secret=True)
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"bad MQTT qos {self.qos!r}: use 0, 1 or 2 (1 is recommended)")
        if self.max_inflight < 1 or self.max_block_s < 0:
            raise ConfigError("bad MQTT max_inflight/max_block_s: need max_inflight >= 1, max_block_s >= 0")
        if self.queue_size < 1:
            raise ConfigError(f"bad MQTT queue_size {self.queue_size!r}: use 1 or more")
        if self.keepalive_s < 5:
            raise ConfigError(f"bad MQTT keepalive_s {self.keepalive_s!r}: use 5 s or more")
        if self.expire_after_s < 0:
            raise ConfigError(f"bad MQTT expire_after_s {self.expire_after_s!r}: use 0 (off) or more")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError("bad MQTT reconnect delays: need 0 < reconnect_min_s <= reconnect_max_s")
        if self.password and not self.username:
            raise ConfigError("an MQTT password is set without a username: set mqtt username too")
        if self.key_file and not self.cert_file:
            raise ConfigError("an MQTT key_file is set without cert_file: set mqtt cert_file too")
        if (self.ca_file or self.cert_file or self.tls_insecure) and not self.address.tls:
            raise ConfigError(
                f"MQTT TLS options are set but {self.url} is plain MQTT: use mqtts://host:port"
            )

    @property
    def address(self) -> BrokerAddress:
        return parse_mqtt_url(self.url)

    @property
    def state_topic(self) -> str:
        return f"{self.topic_prefix}/state"

    @property
    def availability_topic(self) -> str:
        return f"{self.topic_prefix}/availability"

    @property
    def stats_topic(self) -> str:
        return f"{self.topic_prefix}/stats"

    @property
    def ha_status_topic(self) -> str:
        return f"{self.discovery_prefix}/status"

    def discovery_topic(self, sensor: str) -> str:
        """Home Assistant's discovery topic for one of our sensors."""
        return f"{self.discovery_prefix}/sensor/{self.device_id}/{sensor}/config"


@dataclass
class _Outgoing:
    topic: str
    payload: bytes
    retain: bool
    kind: str  # "state" | "stats" | "last_state" (re-send whatever state is newest at send time)


#: Keys whose values are credentials: masked wherever they appear in a payload.
_CREDENTIAL_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|api_?key", re.IGNORECASE)


def _without_credentials(obj: Any) -> Any:
    """``obj`` with the value of every credential-like key (``password``, ``mqtt_password``,
    ``secret``, ...) replaced by ``***``; every other value is left exactly as it is."""
    if isinstance(obj, Mapping):
        return {k: ("***" if isinstance(k, str) and _CREDENTIAL_KEY.search(k) and v is not None
                    else _without_credentials(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_credentials(v) for v in obj]
    return obj


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (HA rejects them), numpy scalars become Python."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy array
        return _jsonable(obj.tolist())
    return str(obj)


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MqttPublisher:
    """Publishes genre state to one broker; survives the broker going away and coming back.

    Usage::

        pub = MqttPublisher(settings, labels=bundle.labels, model_name=bundle.name)
        pub.start()                 # raises BrokerError / ConfigError (one line)
        pub.publish_state({...})    # queued (bounded) while the broker is away
        pub.stop()                  # retained "offline", within ~1 s
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
        self._queue: deque[_Outgoing] = deque()
        self._unacked: dict[int, str] = {}  # mid -> kind, handed to paho, no PUBACK yet
        # The QoS 0 mids in _unacked. paho drops unsent QoS 0 packets with the connection
        # and never calls on_publish for them: they leave _unacked on disconnect instead,
        # or they would hold in-flight slots for ever (and stall the sender at max_inflight).
        self._unacked_qos0: set[int] = set()
        self._link = 0  # connection generation: +1 on every disconnect
        self._early_acks: set[int] = set()  # PUBACK seen before the publisher registered the mid
        self._last_state: bytes | None = None
        self._online_mid: int | None = None
        self._ready = False  # connected and our "online" acknowledged: the sender may run
        self._stalled = False  # a producer waited max_block_s for room in vain
        self._connected = False  # CONNACK accepted (ready follows one round trip later)
        self._refusal: mqtt.ReasonCode | None = None
        self._started = False
        self._start_waiting = False  # start() reports refusals itself; later ones are logged
        self._unanswered = False  # the broker closed the link before any CONNACK (start)
        self._stop_event: threading.Event | None = None
        self._connect_worker: threading.Thread | None = None
        self._closing = False
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
            return self._ready

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
            out["connected"] = int(self._ready)
            return out

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
        if self._started:
            raise RuntimeError("MqttPublisher.start() called twice")
        self._started = True
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
            raise BrokerError(self._tls_message(exc)) from None
        except (OSError, ValueError) as exc:
            problem = (self._tls_message(exc) if self._tls_mismatch(exc) else
                       f"cannot reach MQTT broker at {self._addr} ({_describe_os_error(exc)})")
            if wait:
                self._abort()
                fix = "" if self._tls_mismatch(exc) else ": is it running? check --mqtt"
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
            while not (self._ready or self._refusal is not None or self._unanswered
                       or self._stopping()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, _STOP_POLL_S))  # a signal cannot notify us
            ready, refusal, unanswered = self._ready, self._refusal, self._unanswered
            self._start_waiting = False
        if refusal is not None:
            self._abort()
            raise BrokerError(self._refusal_message(refusal))
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
        doc = _jsonable(dict(state))
        doc.setdefault("model", self.model_name)
        doc.setdefault("timestamp", utc_timestamp())
        payload = self._encode(doc)
        with self._cond:
            if self._closing:
                self._warn_closed()
                return
            # Connected but the queue is full: the producer outruns the broker's PUBACKs
            # (a file played --fast). Wait for room rather than drop: nothing is lost
            # while the broker is there. While it is away, never block the audio loop.
            # After one fruitless wait, stop waiting until the sender moves again: a
            # silently dead link (no FIN, found only by keepalive) must not stall every hop.
            deadline = time.monotonic() + self.settings.max_block_s
            while (self._ready and not self._stalled and not self._closing
                   and len(self._queue) >= self.settings.queue_size and not self._stopping()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stalled = True
                    break
                self._cond.wait(min(remaining, _STOP_POLL_S))
            self._n["states"] += 1
            self._last_state = payload
            self._enqueue(_Outgoing(self.settings.state_topic, payload, True, "state"))

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Publish figures on ``<prefix>/stats`` with our counters under ``"mqtt"``.

        Not retained: a stats sample is only meaningful while the device is alive (a
        retained one would show stale latencies after the device died; availability says
        that). Not queued while the broker is away either: a stale sample must not evict
        a state change from the bounded queue; such samples are counted in
        ``stats_skipped``.
        """
        doc = _jsonable(dict(stats))
        doc.setdefault("timestamp", utc_timestamp())
        doc["mqtt"] = self.counters
        payload = self._encode(doc)
        with self._cond:
            if self._closing:
                return
            if not self._ready:
                self._n["stats_skipped"] += 1
                return
            self._enqueue(_Outgoing(self.settings.stats_topic, payload, False, "stats"))

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
            if self._closing:
                return
            self._closing = True
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
            self._farewell(max(FAREWELL_MIN_S, deadline - time.monotonic()))
            return
        with self._cond:
            drain_until = time.monotonic() + timeout_s / 2
            while self._ready and (self._queue or self._unacked):
                remaining = drain_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            # Not _ready: between CONNACK and the PUBACK of "online" we must still
            # overwrite that "online".
            connected, left = self._connected, len(self._queue) + len(self._unacked)
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
            self._ready = False
        client.disconnect()  # before the farewell: paho must not reconnect behind its back
        if not said:
            said = self._farewell(max(FAREWELL_MIN_S, deadline - time.monotonic()))
            if not said:
                log.warning("MQTT: could not publish 'offline' to %s within %.1f s (the "
                            "broker publishes our last will if it still holds the session)",
                            self._addr, max(FAREWELL_MIN_S, timeout_s))
        self._join_loop(client, max(0.2, deadline - time.monotonic()))
        log.info("MQTT: stopped (%s)", self._summary())

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant discovery: (topic, config) for the genre, confidence and level sensors."""
        s = self.settings
        options = list(dict.fromkeys([*self.labels, *EXTRA_GENRES]))
        device = {
            "identifiers": [f"genre-edge_{s.device_id}"],
            "name": self.device_name,
            "model": self.model_name,
            "manufacturer": MANUFACTURER,
            "sw_version": self.sw_version,
        }
        entity_base = s.device_id.replace("-", "_")
        common: dict[str, Any] = {
            "state_topic": s.state_topic,
            "availability_topic": s.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": s.qos,
            "device": device,
            "origin": {"name": "genre-edge", "sw_version": self.sw_version},
        }
        if s.expire_after_s:
            common["expire_after"] = int(s.expire_after_s)
        sensors: dict[str, dict[str, Any]] = {
            "genre": {
                "name": "Genre",
                "device_class": "enum",
                "options": options,
                "value_template": "{{ value_json.genre }}",
                "json_attributes_topic": s.state_topic,
                "json_attributes_template": "{{ value_json.probabilities | tojson }}",
                "icon": "mdi:music",
            },
            # The state JSON carries confidence as 0..1; Home Assistant shows percent,
            # the unit people read on a dashboard.
            "confidence": {
                "name": "Confidence",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                # A JSON null renders "None", which HA reads as "unknown".
                "value_template": (
                    "{{ (value_json.confidence * 100) | round(1) "
                    "if value_json.confidence is number else none }}"
                ),
                "icon": "mdi:percent",
            },
            # No device_class: HA's sound_pressure class only accepts dB/dBA, not dBFS.
            "level": {
                "name": "Level",
                "unit_of_measurement": "dBFS",
                "state_class": "measurement",
                "value_template": "{{ value_json.level_dbfs }}",
                "icon": "mdi:volume-high",
            },
        }
        out = []
        for obj, config in sensors.items():
            config = {
                **config,
                "unique_id": f"genre-edge_{s.device_id}_{obj}",
                # Replaces the deprecated object_id (removed in HA 2026.4); older HA
                # versions drop unknown discovery keys, so it is safe everywhere.
                "default_entity_id": f"sensor.{entity_base}_{obj}",
                **common,
            }
            out.append((s.discovery_topic(obj), config))
        return out

    # ------------------------------------------------------------------ client setup

    def _base_client(self, client_id: str) -> mqtt.Client:
        """A paho client with our last will, login and TLS, and no callbacks of ours."""
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.on_log = self._on_log
        # A bug in one of our callbacks must not kill paho's network thread (and with
        # it every reconnect for the rest of the device's uptime): log and go on.
        client.suppress_exceptions = True
        # Set before connecting so the broker publishes it if we vanish (power cut, crash).
        client.will_set(s.availability_topic, b"offline", qos=1, retain=True)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if self._addr.tls:
            self._configure_tls(client)
        client.on_socket_open = set_tcp_nodelay
        return client

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = self._base_client(s.client_id)
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
            worker.join(_STOP_POLL_S)
        if outcome and outcome[0] is not None:
            raise outcome[0]
        return True

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def _farewell(self, timeout_s: float) -> bool:
        """Publish the retained ``offline`` on a fresh connection, within ``timeout_s``.

        Its own client id, so it cannot take over (and be taken over by) the main session;
        the same last will, so even a farewell cut short leaves ``offline`` behind.
        """
        deadline = time.monotonic() + timeout_s
        answer: list[mqtt.ReasonCode] = []
        try:
            client = self._base_client(f"{self.settings.client_id}-bye")
        except ConfigError:  # the TLS files went away since start(): nothing to say it with
            return False
        client.connect_timeout = max(0.1, timeout_s)
        client.on_connect = lambda _c, _u, _f, rc, _p: answer.append(rc)
        try:
            client.connect(self._addr.host, self._addr.port, keepalive=self.settings.keepalive_s)

            def step() -> bool:  # one bounded turn of paho's loop; False: the link is gone
                wait_s = min(0.05, max(0.0, deadline - time.monotonic()))
                return client.loop(timeout=wait_s) == MQTTErrorCode.MQTT_ERR_SUCCESS

            while not answer and time.monotonic() < deadline and step():
                pass
            if not answer or answer[0].is_failure:
                return False
            info = client.publish(self.settings.availability_topic, b"offline", qos=1,
                                  retain=True)
            while not info.is_published() and time.monotonic() < deadline and step():
                pass
            client.disconnect()
            return info.is_published()
        except (OSError, ValueError, RuntimeError) as exc:
            log.debug("MQTT: farewell connection failed: %s", _describe_os_error(exc))
            return False
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()

    def _configure_tls(self, client: mqtt.Client) -> None:
        s = self.settings
        for what, path in (("ca_file", s.ca_file), ("cert_file", s.cert_file), ("key_file", s.key_file)):
            if path and not os.path.isfile(path):
                raise ConfigError(f"MQTT {what} {path} not found: check mqtt {what}")
        try:
            client.tls_set(
                ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file,
                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the MQTT TLS files ({_describe_os_error(exc)}): check mqtt "
                "ca_file/cert_file/key_file are PEM files and the key matches the certificate"
            ) from None
        if s.tls_insecure:
            client.tls_insecure_set(True)

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any,
                    reason_code: mqtt.ReasonCode, _properties: Any) -> None:
        if reason_code.is_failure:
            with self._cond:
                first = self._refusal is None or self._refusal.value != reason_code.value
                self._refusal = reason_code
                self._cond.notify_all()
            if first and not self._start_waiting:
                log.error("%s; retrying", self._refusal_message(reason_code))
            return
        if self._closing:
            # stop() ran while this connect was under way: leave "offline", not "online".
            client.publish(self.settings.availability_topic, b"offline", qos=1, retain=True)
            client.disconnect()
            return
        with self._cond:
            self._refusal = None
            self._connected = True
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
        tls_problem = (self._tls_message(exc) if isinstance(exc, ssl.SSLError)
                       or (exc is not None and self._tls_mismatch(exc)) else None)
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
        reason = f" ({_describe_os_error(exc)})" if exc is not None else ""
        log.warning("MQTT broker at %s is unreachable%s; retrying every %g-%g s", self._addr,
                    reason, self.settings.reconnect_min_s, self.settings.reconnect_max_s)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any,
                       reason_code: mqtt.ReasonCode, _properties: Any) -> None:
        with self._cond:
            was_ready = self._ready
            if not self._connected and self._start_waiting:
                self._unanswered = True
            self._ready = False
            self._connected = False
            self._online_mid = None
            closing = self._closing
            # paho discards unsent QoS 0 packets with the connection, without on_publish.
            self._link += 1
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
            if mid == self._online_mid and not self._closing:
                self._online_mid = None
                self._ready = True
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
            info = client.publish(topic, self._encode(config), qos=1, retain=True)
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
        self._enqueue(_Outgoing(self.settings.state_topic, b"", True, "last_state"))

    def _enqueue(self, item: _Outgoing) -> None:
        """Append under the lock; when full, drop the oldest (the freshest state matters most)."""
        if len(self._queue) >= self.settings.queue_size:
            self._queue.popleft()
            self._n["dropped"] += 1
            if not self._warned_drop:
                self._warned_drop = True  # once per outage; the reconnect log has the total
                why = "outruns the broker" if self._ready else "while the broker is away"
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
                    self._ready and self._queue and len(self._unacked) < self.settings.max_inflight
                ):
                    self._cond.wait()
                if self._sender_exit:
                    return
                item = self._queue.popleft()
                self._stalled = False
                self._cond.notify_all()  # a producer may wait for room (publish_state)
                payload = self._last_state if item.kind == "last_state" else item.payload
                kind = "state" if item.kind == "last_state" else item.kind
                link = self._link
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
            elif qos0_link is not None and qos0_link != self._link:
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

    def _join_loop(self, client: mqtt.Client, timeout_s: float) -> None:
        # loop_stop() joins without a timeout and paho may sit in a blocking connect or
        # a 1 s backoff sleep; stop() must stay bounded, so join from a helper thread.
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            log.debug("MQTT: network thread still finishing after %.1f s", timeout_s)

    def _abort(self) -> None:
        with self._cond:
            self._closing = True
        self._stop_sender()
        client = self._client
        if client is not None:
            try:
                client.disconnect()
            finally:
                self._join_loop(client, 1.0)

    def _encode(self, doc: Mapping[str, Any]) -> bytes:
        # Payload text is data (genres, labels, timestamps): it is never searched for the
        # password, which would corrupt it and reveal the secret through the mask (password
        # 'rock' turned every genre 'rock' into '***'). Credentials can only enter a payload
        # as a value under a credential-like key, so that is what is masked.
        return json.dumps(_without_credentials(doc), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    def _warn_closed(self) -> None:
        if not self._warned_closed:
            self._warned_closed = True
            log.warning("MQTT: publish after stop() ignored")

    def _summary(self) -> str:
        n = self.counters
        return (f"states {n['states']}, delivered {n['states_delivered']}, dropped {n['dropped']}, "
                f"reconnects {n['reconnects']}")

    def _refusal_message(self, rc: mqtt.ReasonCode) -> str:
        if rc.value in (_RC_BAD_LOGIN, _RC_NOT_AUTHORIZED):
            if not self.settings.username:
                return (f"MQTT broker at {self._addr} requires a login ({rc}): set mqtt "
                        "username/password")
            return (f"MQTT broker at {self._addr} refused the login (bad username or password): "
                    "check mqtt username/password")
        return f"MQTT broker at {self._addr} refused the connection ({rc}): check its configuration"

    def _tls_mismatch(self, exc: BaseException) -> bool:
        """A TLS connection reset during the handshake: the mark of a plain-MQTT port."""
        return self._addr.tls and isinstance(
            exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))

    def _tls_message(self, exc: BaseException) -> str:
        """One line for a failed TLS connection: certificate verification or handshake."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._tls_verify_message(exc)
        why = (exc.reason or exc) if isinstance(exc, ssl.SSLError) else _describe_os_error(exc)
        return (f"TLS handshake with MQTT broker at {self._addr} failed ({why}): check that "
                "the port speaks TLS (a plain MQTT port needs mqtt://) and the mqtt "
                "ca_file/cert_file/key_file")

    def _tls_verify_message(self, exc: ssl.SSLCertVerificationError) -> str:
        why = exc.verify_message or exc.reason or str(exc)
        ca = f"the CA file {self.settings.ca_file}" if self.settings.ca_file else "the system CA store"
        hint = " or set tls_insecure for an IP the certificate does not name" if "mismatch" in str(why).lower() else ""
        return (f"TLS certificate of MQTT broker at {self._addr} failed verification against "
                f"{ca} ({why}): check mqtt ca_file{hint}")


def set_tcp_nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """paho ``on_socket_open`` callback: TCP_NODELAY on the broker connection."""
    # Nagle + delayed ACK can hold a small PUBLISH back ~40 ms; latency matters more
    # than packet count for a few messages a second.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
