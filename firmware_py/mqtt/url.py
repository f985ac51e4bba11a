"""MQTT broker URLs: ``mqtt://host[:port]`` or ``mqtts://host[:port]``, and masking a
password in one for messages.

Standard library only: the configuration checks URLs without importing paho.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from ..errors import ConfigError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


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
    if scheme not in DEFAULT_PORTS:
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
    return BrokerAddress(host, port or DEFAULT_PORTS[scheme], scheme == "mqtts")

