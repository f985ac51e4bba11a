"""The ``[mqtt]`` settings: one dataclass for the configuration file and the publisher.

Standard library only (no paho): the configuration composes it without loading MQTT.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import ClassVar

from ..bounds import knob, setting, tuning
from ..errors import ConfigError
from .rules import check_text, check_topic_part
from .url import BrokerAddress, parse_mqtt_url

ID_RE = re.compile(r"^[a-z0-9_-]+$")


def default_device_id() -> str:
    """The hostname, lower-cased and reduced to ``[a-z0-9_-]`` (safe in topics and HA ids)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-_")
    return name or "genre-edge"


def checked_url(url: str) -> str:
    """``mqtt.url`` checked by the one URL grammar (raises ConfigError)."""
    parse_mqtt_url(url)
    return url


@dataclass
class MqttSettings:
    """The ``[mqtt]`` section, and everything the publisher needs (off while ``url`` is None).

    Every key's meaning is the ``help`` on its field; the password is never logged or
    shown in ``repr``. The fields marked :func:`~firmware_py.bounds.tuning` are not
    configuration keys: the code and the tests set them (reconnect delays, in-flight
    bounds). ``tls_insecure`` skips only the host-name check, like paho's
    ``tls_insecure_set``.
    """

    SECTION: ClassVar[str] = "mqtt"
    FLAG_GROUP: ClassVar[str] = "MQTT (password: GENRE_EDGE_MQTT_PASSWORD or the config file)"

    url: str | None = setting(
        None, example="mqtt://homeassistant.local:1883", flag="--mqtt", metavar="URL",
        check=checked_url,
        help="Broker URL: mqtt://host[:port] or mqtts://host[:port] (TLS). Default: unset = "
             "no MQTT.")
    username: str | None = setting(None, example="genre-edge", flag="--username",
                                   help="Broker login name. Default: unset.")
    password: str | None = setting(
        None, example="change-me", secret=True,
        help="Broker password. Default: unset. Prefer GENRE_EDGE_MQTT_PASSWORD (never a flag: "
             "other users can read a command line).")
    ca_file: str | None = setting(
        None, example="/etc/genre-edge/ca.crt", flag="--ca-file",
        help="TLS: CA certificate bundle. Default: unset = the system's CAs.")
    cert_file: str | None = setting(
        None, example="/etc/genre-edge/client.crt",
        help="TLS: client certificate for mutual TLS. Default: unset = none.")
    key_file: str | None = setting(
        None, example="/etc/genre-edge/client.key",
        help="TLS: the client certificate's key. Default: unset = none.")
    tls_insecure: bool = setting(
        False, help="Skip the TLS host-name check (the certificate must still chain to "
                    "ca_file); for brokers reached by an IP address their certificate does "
                    "not name.")
    device_id: str | None = setting(
        None, example="livingroom", flag="--device-id",
        help="Device id used in topics and in Home Assistant (a-z, 0-9, _ and -). Default: "
             "unset = the host name.")
    topic_prefix: str | None = setting(
        None, example="genre-edge/livingroom", flag="--topic-prefix",
        help="Topic prefix. Default: unset = genre-edge/<device_id>.")
    discovery_prefix: str = setting("homeassistant",
                                    help="Home Assistant MQTT discovery prefix.")
    qos: int = setting(1, choices=(0, 1, 2), help="QoS of every message: 0, 1 or 2.")
    # MQTT carries the keep-alive in 16 bits; a queued state is ~0.5 KB (100,000: ~50 MB).
    # Home Assistant marks the sensors unavailable when no state came for expire_after_s
    # (0 disables); the device publishes every hop (~1 s), so 2 minutes is generous.
    keepalive_s: int = knob(30, 5, 65535, " seconds", help="MQTT keep-alive, seconds.")
    expire_after_s: int = knob(120, 0, 604800, " seconds (0: never)",
                               help="Home Assistant shows the sensors as unavailable after "
                                    "this many seconds without a state (0 = never).")
    queue_size: int = knob(1000, 1, 100_000,
                           help="Messages kept while the broker is unreachable (oldest "
                                "dropped, count reported).")
    stats_interval_s: float = knob(60.0, 1.0, 86400.0, " seconds",
                                   help="Seconds between messages on <prefix>/stats (latency, "
                                        "CPU, memory).")
    # -- not configuration keys ---------------------------------------------------------
    client_id: str = tuning("")
    reconnect_min_s: float = tuning(1.0)
    reconnect_max_s: float = tuning(30.0)
    connect_timeout_s: float = tuning(5.0)
    # Messages handed to paho but not yet acknowledged; bounds paho's own (unbounded)
    # store so that our queue, with its drop-oldest rule, is the only place that grows.
    max_inflight: int = tuning(100)
    # publish_state() waits up to this long for room in a full queue while connected
    # (see publish_state); 0 never waits.
    max_block_s: float = tuning(5.0)

    def __post_init__(self) -> None:
        """Check the settings as a whole and fill in the derived ones (device id, topic
        prefix, client id); one-line :class:`ConfigError` otherwise. Nothing happens while
        ``url`` is None (MQTT off): the configuration builds the section key by key and
        checks each value as it is set; the publisher gets a completed copy
        (``dataclasses.replace``)."""
        if self.url is None:
            return
        self.address  # validates the URL  # noqa: B018
        self.device_id = (self.device_id or default_device_id()).strip()
        if not ID_RE.match(self.device_id):
            raise ConfigError(
                f"bad MQTT device id {self.device_id!r}: use only a-z, 0-9, '_' and '-' "
                "(set --device-id)"
            )
        self.topic_prefix = (self.topic_prefix or f"genre-edge/{self.device_id}").strip()
        # What the broker would refuse (and drop us for) or silently never deliver, here
        # as one line instead of a reconnect loop: see firmware_py.mqtt.rules.
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
