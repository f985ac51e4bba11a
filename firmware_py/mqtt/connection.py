"""The paho side of the publisher: building a client (last will, login, TLS), the farewell
connection that says ``offline``, stopping paho's thread, and the one-line wording of
every connection failure.

Imports paho and the standard library only.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from typing import Any

from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..errors import ConfigError
from .client import mqtt
from .settings import MqttSettings

log = logging.getLogger("firmware_py.mqtt")
# CONNACK reason codes (MQTT 5 numbering; paho maps the 3.1.1 return codes onto them).
_RC_BAD_LOGIN = 134  # 3.1.1 return code 4: bad user name or password
_RC_NOT_AUTHORIZED = 135  # 3.1.1 return code 5: not authorised


def base_client(s: MqttSettings, client_id: str, on_log: Any) -> mqtt.Client:
    """A paho client with our last will, login and TLS, and no callbacks of ours but
    ``on_log``."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.on_log = on_log
    # A bug in one of our callbacks must not kill paho's network thread (and with
    # it every reconnect for the rest of the device's uptime): log and go on.
    client.suppress_exceptions = True
    # Set before connecting so the broker publishes it if we vanish (power cut, crash).
    client.will_set(s.availability_topic, b"offline", qos=1, retain=True)
    if s.username:
        client.username_pw_set(s.username, s.password)
    if s.address.tls:
        configure_tls(s, client)
    client.on_socket_open = set_tcp_nodelay
    return client


def farewell(s: MqttSettings, timeout_s: float, on_log: Any) -> bool:
    """Publish the retained ``offline`` on a fresh connection, within ``timeout_s``.

    Its own client id, so it cannot take over (and be taken over by) the main session;
    the same last will, so even a farewell cut short leaves ``offline`` behind.
    """
    deadline = time.monotonic() + timeout_s
    answer: list[mqtt.ReasonCode] = []
    try:
        client = base_client(s, f"{s.client_id}-bye", on_log)
    except ConfigError:  # the TLS files went away since start(): nothing to say it with
        return False
    client.connect_timeout = max(0.1, timeout_s)
    client.on_connect = lambda _c, _u, _f, rc, _p: answer.append(rc)
    try:
        client.connect(s.address.host, s.address.port, keepalive=s.keepalive_s)

        def step() -> bool:  # one bounded turn of paho's loop; False: the link is gone
            wait_s = min(0.05, max(0.0, deadline - time.monotonic()))
            return client.loop(timeout=wait_s) == MQTTErrorCode.MQTT_ERR_SUCCESS

        while not answer and time.monotonic() < deadline and step():
            pass
        if not answer or answer[0].is_failure:
            return False
        info = client.publish(s.availability_topic, b"offline", qos=1, retain=True)
        while not info.is_published() and time.monotonic() < deadline and step():
            pass
        client.disconnect()
        return info.is_published()
    except (OSError, ValueError, RuntimeError) as exc:
        log.debug("MQTT: farewell connection failed: %s", describe_os_error(exc))
        return False
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()


def configure_tls(s: MqttSettings, client: mqtt.Client) -> None:
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
            f"cannot load the MQTT TLS files ({describe_os_error(exc)}): check mqtt "
            "ca_file/cert_file/key_file are PEM files and the key matches the certificate"
        ) from None
    if s.tls_insecure:
        client.tls_insecure_set(True)


def join_loop(client: mqtt.Client, timeout_s: float) -> None:
    """Stop paho's network thread, waiting at most ``timeout_s``."""
    # loop_stop() joins without a timeout and paho may sit in a blocking connect or
    # a 1 s backoff sleep; stop() must stay bounded, so join from a helper thread.
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        log.debug("MQTT: network thread still finishing after %.1f s", timeout_s)


def refusal_message(s: MqttSettings, rc: mqtt.ReasonCode) -> str:
    """One line for a CONNACK that refused us."""
    addr = s.address
    if rc.value in (_RC_BAD_LOGIN, _RC_NOT_AUTHORIZED):
        if not s.username:
            return (f"MQTT broker at {addr} requires a login ({rc}): set mqtt "
                    "username/password")
        return (f"MQTT broker at {addr} refused the login (bad username or password): "
                "check mqtt username/password")
    return f"MQTT broker at {addr} refused the connection ({rc}): check its configuration"


def tls_mismatch(s: MqttSettings, exc: BaseException) -> bool:
    """A TLS connection reset during the handshake: the mark of a plain-MQTT port."""
    return s.address.tls and isinstance(
        exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))


def tls_message(s: MqttSettings, exc: BaseException) -> str:
    """One line for a failed TLS connection: certificate verification or handshake."""
    addr = s.address
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _tls_verify_message(s, exc)
    why = (exc.reason or exc) if isinstance(exc, ssl.SSLError) else describe_os_error(exc)
    return (f"TLS handshake with MQTT broker at {addr} failed ({why}): check that "
            "the port speaks TLS (a plain MQTT port needs mqtt://) and the mqtt "
            "ca_file/cert_file/key_file")


def _tls_verify_message(s: MqttSettings, exc: ssl.SSLCertVerificationError) -> str:
    addr = s.address
    why = exc.verify_message or exc.reason or str(exc)
    ca = f"the CA file {s.ca_file}" if s.ca_file else "the system CA store"
    hint = " or set tls_insecure for an IP the certificate does not name" if "mismatch" in str(why).lower() else ""
    return (f"TLS certificate of MQTT broker at {addr} failed verification against "
            f"{ca} ({why}): check mqtt ca_file{hint}")


def set_tcp_nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """paho ``on_socket_open`` callback: TCP_NODELAY on the broker connection."""
    # Nagle + delayed ACK can hold a small PUBLISH back ~40 ms; latency matters more
    # than packet count for a few messages a second.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a failed connection (``connection refused``, ``timed out``, ...)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
