"""A real mosquitto on loopback, test certificates and a collecting subscriber.

Used through the fixtures in ``tests/conftest.py`` (``mqtt_broker``, ``broker_factory``,
``tls_material``, ``mqtt_subscriber``); importable directly for scripts and benchmarks.
Loopback only: nothing here ever binds or connects to anything but 127.0.0.1.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HOST = "127.0.0.1"


def find_mosquitto() -> str:
    """The mosquitto binary; an error (not a skip) when missing, so CI cannot pass silently."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if not found:
        raise RuntimeError("mosquitto is not installed: apt-get install mosquitto (or make sysdeps)")
    return found


def find_mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd") if os.access(p, os.X_OK)),
        None,
    )
    if not found:
        raise RuntimeError("mosquitto_passwd is not installed: apt-get install mosquitto")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------- certificates

@dataclass(frozen=True)
class TlsMaterial:
    ca_file: Path  # signs server.crt and client.crt
    server_cert: Path  # SAN: IP 127.0.0.1 and DNS localhost
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path  # a CA that signed nothing here: "wrong CA" tests


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {res.stderr.strip()}")


def make_tls_material(directory: Path) -> TlsMaterial:
    """A throw-away CA, server and client certificates (EC P-256: fast to generate).

    Uses the openssl CLI, present wherever mosquitto is; the ``cryptography`` package is
    not a dependency of this project.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt",
                 "-days", "3", "-subj", f"/CN=genre-edge test {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    exts = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in exts.items():
        (d / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + ext
        )
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={'localhost' if name == 'server' else 'genre-edge-client'}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "3",
                 "-extfile", f"{name}.ext", cwd=d)
    return TlsMaterial(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                       d / "client.key", d / "other-ca.crt")


# ---------------------------------------------------------------------- broker

@dataclass
class Broker:
    """One mosquitto process on 127.0.0.1 with a generated config; restartable on its ports.

    ``users``: {name: password} → password file, anonymous refused. ``tls``: also a TLS
    listener (``tls_port``) with ``tls_material``'s server certificate. ``persistent``:
    sessions and queued messages survive ``kill()`` (saved after every change), so a
    subscriber with ``clean_session=False`` misses nothing across a broker restart.
    """

    workdir: Path
    users: dict[str, str] | None = None
    tls: TlsMaterial | None = None
    require_client_cert: bool = False
    persistent: bool = False
    port: int = field(default_factory=free_port)
    tls_port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    starts: int = 0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls is not None and self.tls_port is None:
            self.tls_port = free_port()
        self.config_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        self.config_file.write_text(self._config())

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("this broker has no TLS listener (use tls=...)")
        return f"mqtts://{HOST}:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _config(self) -> str:
        lines = [
            "per_listener_settings false",
            # Run as whoever runs the tests: as root, mosquitto would otherwise switch to
            # the 'mosquitto' user and lose access to the pytest tmp dir (mode 0700).
            f"user {getpass.getuser()}",
            "connection_messages true",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            # Large enough that the broker never drops what a test publishes.
            "max_queued_messages 100000",
            f"listener {self.port} {HOST}",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {HOST}",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
            ]
            if self.require_client_cert:
                lines.append("require_certificate true")
        if self.users:
            pw_file = self.workdir / "passwd"
            passwd = find_mosquitto_passwd()
            for i, (name, password) in enumerate(self.users.items()):
                args = [passwd, "-b"] + (["-c"] if i == 0 else []) + [str(pw_file), name, password]
                subprocess.run(args, check=True, capture_output=True, timeout=30)
            pw_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.persistent:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                # Save after every change: a SIGKILL must not lose the test subscriber's
                # session or the messages queued for it.
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10.0) -> Broker:
        if self.running:
            return self
        log = open(self.log_file, "ab")  # noqa: SIM115 (handed to the child process)
        try:
            self.proc = subprocess.Popen(
                [find_mosquitto(), "-c", str(self.config_file)], stdout=log, stderr=log,
                cwd=self.workdir,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}:\n{self.log_text()[-2000:]}"
                )
            if all(port_open(p) for p in ports):
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto did not open {ports}:\n{self.log_text()[-2000:]}")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (clean: a persistent broker saves its database)."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no will messages for clients, no final save."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(5)

    def restart(self, *, hard: bool = True) -> Broker:
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()


# ---------------------------------------------------------------------- subscriber

@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    t: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records every message; reconnects (and re-subscribes) on its own.

    ``clean_session=False`` with a fixed ``client_id`` and a ``persistent`` broker keeps
    its subscription and the messages queued for it across a broker kill.
    """

    def __init__(
        self,
        port: int,
        topics: Iterable[str] = ("#",),
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | str | None = None,
        qos: int = 1,
    ) -> None:
        self.topics = list(topics)
        self.qos = qos
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{os.getpid()}-{id(self):x}",
            clean_session=clean_session,
        )
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.connect_async(HOST, port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._subscribed.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, time.monotonic())
            )
            self._cond.notify_all()

    def wait_subscribed(self, timeout_s: float = 5.0) -> Subscriber:
        if not self._subscribed.wait(timeout_s):
            raise TimeoutError(f"subscriber not subscribed to {self.topics} within {timeout_s} s")
        return self

    def mark(self) -> int:
        """Index for ``wait_for(..., start=...)``: only messages received after now."""
        with self._cond:
            return len(self.messages)

    def on_topic(self, topic: str, start: int = 0) -> list[Received]:
        with self._cond:
            return [m for m in self.messages[start:] if m.topic == topic]

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Received], bool] | None = None,
        timeout: float = 5.0,
        start: int = 0,
    ) -> Received:
        """The first message on ``topic`` (from index ``start``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        checked = start
        with self._cond:
            while True:
                for m in self.messages[checked:]:
                    if m.topic == topic and (predicate is None or predicate(m)):
                        return m
                checked = max(checked, len(self.messages))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.payload[:80] for m in self.messages[start:] if m.topic == topic]
                    raise TimeoutError(
                        f"no matching message on {topic} within {timeout} s; seen: {seen[-5:]}"
                    )
                self._cond.wait(remaining)

    def wait_count(self, topic: str, n: int, timeout: float = 5.0, start: int = 0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.messages[start:] if m.topic == topic]
                if len(got) >= n:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(got)} of {n} messages on {topic} within {timeout} s")
                self._cond.wait(remaining)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
