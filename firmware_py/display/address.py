"""The display server's address: ``host:port`` (``[::1]:8080`` for IPv6).

Standard library only; the configuration checks ``output.http`` with it.
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import ConfigError

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def parse_http_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8080"`` for IPv6) -> ``(host, port)``.

    Raises
    ------
    ConfigError
        One line naming the bad value and the expected form.
    """
    example = "use host:port, e.g. 127.0.0.1:8080"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"bad HTTP address {text!r}: {example}")
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"bad HTTP address {value!r}: missing host or port; {example}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"bad HTTP address {value!r}: {host!r} is not an IPv6 address; "
                              f"{example}") from None
    elif ":" in host:
        raise ConfigError(
            f"bad HTTP address {value!r}: put an IPv6 host in brackets, e.g. [::1]:8080"
        )
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME_RE.match(host):
                raise ConfigError(f"bad HTTP address {value!r}: {host!r} is not a host name or "
                                  f"IP address; {example}") from None
    if not (port_text.isascii() and port_text.isdecimal()) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"bad HTTP address {value!r}: the port must be a number from 1 to 65535; {example}"
        )
    return host, int(port_text)

