"""The display server: :class:`DisplayServer` and its HTTP/SSE handlers (the thread model
is in :mod:`firmware_py.display`).

Standard library only: this runs on the Raspberry Pi.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import socketserver
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import ConfigError
from ..text import jsonable
from .page import Page

log = logging.getLogger("firmware_py.display")

_PEER_CHECK_S = 1.0  # how often an idle SSE handler looks for a closed client
#: Send buffer of an SSE stream (the kernel doubles it): a few dozen states, so that a
#: client that stops reading blocks a write within minutes, not hours.
SSE_SEND_BUFFER = 16 * 1024


@dataclass(eq=False)
class _Stream:
    """One open ``/events`` stream, for choosing the stalest when all slots are taken."""

    sock: socket.socket
    opened: float  # time.monotonic() when it was accepted
    writing_since: float | None = None  # a write under way since (None: not writing)
    evicted: bool = False

    def staleness(self, now: float) -> tuple[float, float]:
        """Sorts stalest last: blocked in a write the longest, then open the longest."""
        blocked = now - self.writing_since if self.writing_since is not None else -1.0
        return (blocked, now - self.opened)



class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never keeps the process alive
    block_on_close = False  # stop() must not wait for SSE handlers
    allow_reuse_address = True
    display: DisplayServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall
        # start-up for seconds on a Pi without network; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "genre-edge"
    # Socket timeout for reads and writes: a client that stops reading an SSE stream
    # fills its socket buffer, then the write times out and its slot is freed.
    timeout = 10.0

    def version_string(self) -> str:
        return self.server_version  # no Python version: nothing for a scanner to match

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        log.debug("http %s: " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        display = self.server.display
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = display._page
            self._send(HTTPStatus.OK, "text/html; charset=utf-8",
                       page.render(display._snapshot_text()), head=head,
                       extra={"Content-Security-Policy": page.csp})
        elif path == "/state":
            self._send(HTTPStatus.OK, "application/json", display._snapshot_bytes(), head=head)
        elif path == "/healthz":
            body = json.dumps(display.health()).encode()
            self._send(HTTPStatus.OK, "application/json", body, head=head)
        elif path == "/events" and not head:
            display._serve_events(self)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", head=head)

    def _send(self, status: HTTPStatus, ctype: str, body: bytes, *, head: bool = False,
              extra: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except OSError:  # the client went away: nothing to tell it
            pass


class DisplayServer:
    """Serves the live display page and pushes every state to connected browsers.

    Parameters
    ----------
    host, port : str, int
        Where to listen; port 0 picks a free port (see :attr:`port`). Keep the host on
        loopback unless the page must be reachable from other machines: there is no login.
    labels : list of str
        The model's labels, in the bundle's order (one bar each, in this order).
    model_name : str
        Shown in the page header.
    max_clients : int
        Concurrent ``/events`` streams; a new one beyond this closes the stalest (see
        the module docstring). While stopping, new ones get HTTP 503.
    heartbeat_s : float
        Seconds between ``: ping`` comments on an idle stream (keeps proxies and NAT
        from closing it and detects clients that vanished).
    send_timeout_s : float
        A client whose socket accepts nothing for this long is dropped (it blocks a write
        once its receive window and our :data:`SSE_SEND_BUFFER` are full).

    Usage::

        display = DisplayServer("127.0.0.1", 8080, labels=bundle.labels, model_name=bundle.name)
        display.start()
        display.update(payload)      # once per hop, from the device loop; never blocks
        display.set_online(False)    # the audio stream stopped
        display.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        labels: list[str],
        model_name: str,
        max_clients: int = 8,
        heartbeat_s: float = 15.0,
        send_timeout_s: float = 10.0,
    ) -> None:
        if not 0 <= int(port) <= 65535:
            raise ConfigError(f"bad HTTP port {port!r}: use 1 to 65535 (0 picks a free port)")
        if max_clients < 1 or heartbeat_s <= 0 or send_timeout_s <= 0:
            raise ConfigError("bad display options: need max_clients >= 1, heartbeat_s > 0, "
                              "send_timeout_s > 0")
        self.host = host
        self._requested_port = int(port)
        self.labels = list(labels)
        self.model_name = model_name
        self.max_clients = int(max_clients)
        self.heartbeat_s = float(heartbeat_s)
        self.send_timeout_s = float(send_timeout_s)
        self._page = Page()
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        self._online = True
        self._state: dict[str, Any] | None = None
        self._updated_at: float | None = None  # monotonic time of the last update()
        self._closing = False
        self._clients: set[_Stream] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._encode_locked()

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def clients(self) -> int:
        """Open ``/events`` streams."""
        with self._cond:
            return len(self._clients)

    def start(self) -> None:
        """Bind and serve on a daemon thread.

        Raises
        ------
        ConfigError
            The address cannot be bound (in use, not an address of this machine, ...).
        """
        if self._server is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("_BoundServer", (_Server,), {"address_family": family})
        try:
            server = server_cls((self.host, self._requested_port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the display on {self.host}:{self._requested_port} "
                f"({exc.strerror or exc}): pick another --http host:port"
            ) from None
        server.display = self
        with self._cond:
            self._closing = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5},
            name="genre-edge-display", daemon=True,
        )
        self._thread.start()
        log.info("display: serving %s", self.url)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close every stream and the listening socket (browsers then show "offline")."""
        server, self._server = self._server, None
        with self._cond:
            self._closing = True
            clients = list(self._clients)
            self._cond.notify_all()
        for stream in clients:
            _hang_up(stream.sock)
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def update(self, payload: Mapping[str, Any]) -> None:
        """Publish a new state (the device loop's per-hop payload). Never blocks on clients."""
        state = jsonable(payload)
        with self._cond:
            self._state = state
            self._updated_at = time.monotonic()
            self._changed_locked()

    def set_online(self, online: bool) -> None:
        """Device availability: False when the audio stream stopped (the page says offline)."""
        with self._cond:
            if self._online == bool(online):
                return
            self._online = bool(online)
            self._changed_locked()

    def snapshot(self) -> dict[str, Any]:
        """The current snapshot as a dict (what ``/state`` returns)."""
        return json.loads(self._snapshot_bytes())

    def health(self) -> dict[str, Any]:
        with self._cond:
            age = None if self._updated_at is None else time.monotonic() - self._updated_at
            return {
                "ok": True,
                "online": self._online,
                "clients": len(self._clients),
                "seq": self._seq,
                "last_update_age_s": None if age is None else round(age, 2),
            }

    # ------------------------------------------------------------------ internals

    def _changed_locked(self) -> None:
        self._seq += 1
        self._encode_locked()
        self._cond.notify_all()

    def _encode_locked(self) -> None:
        # Encoded once per change, shared by /state, the page and every stream, so the
        # per-client cost is a write of ready bytes.
        text = json.dumps({
            "seq": self._seq,
            "online": self._online,
            "model": self.model_name,
            "labels": self.labels,
            "state": self._state,
        }, separators=(",", ":"), allow_nan=False)
        self._text = text
        self._frame = f"id: {self._seq}\ndata: {text}\n\n".encode()

    def _snapshot_text(self) -> str:
        with self._cond:
            return self._text

    def _snapshot_bytes(self) -> bytes:
        return self._snapshot_text().encode()

    def _serve_events(self, handler: _Handler) -> None:
        sock = handler.connection
        me = _Stream(sock, time.monotonic())
        victim = None
        with self._cond:
            closing = self._closing
            if not closing:
                if len(self._clients) >= self.max_clients:
                    now = time.monotonic()
                    victim = max(self._clients, key=lambda c: c.staleness(now))
                    victim.evicted = True
                    self._clients.discard(victim)
                    self._cond.notify_all()  # wakes it if it waits for a state
                self._clients.add(me)
        if closing:
            handler._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
                          b"the display is stopping\n", extra={"Retry-After": "5"})
            return
        if victim is not None:
            log.info("display: %d streams open; closing the stalest for a new one",
                     self.max_clients)
            _hang_up(victim.sock)  # also ends a write it is blocked in
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SEND_BUFFER)
            sock.settimeout(self.send_timeout_s)  # how long one send() may wait for room
            handler.send_response(HTTPStatus.OK)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Cache-Control", "no-store")
            handler.send_header("Connection", "close")
            handler.send_header("X-Accel-Buffering", "no")  # reverse proxies: do not buffer
            handler.end_headers()
            # retry: the browser reconnects 2 s after losing the stream.
            self._write(me, handler, b"retry: 2000\n\n")
            self._stream(me, handler)
        except OSError as exc:  # client gone, stopped reading for send_timeout_s, or evicted
            log.debug("display: SSE client %s dropped (%s)", handler.address_string(), exc)
        finally:
            with self._cond:
                self._clients.discard(me)
            handler.close_connection = True

    def _write(self, me: _Stream, handler: _Handler, data: bytes) -> None:
        """Send ``data``; raises once the client accepts nothing for ``send_timeout_s``.

        send() in a loop rather than sendall(): sendall's timeout bounds the whole write,
        which would drop a client that reads a large state steadily but slowly.
        """
        sock = handler.connection
        view = memoryview(data)
        try:
            while view:
                me.writing_since = time.monotonic()  # "stalest": the longest without progress
                view = view[sock.send(view):]  # waits up to send_timeout_s for room
        finally:
            me.writing_since = None

    def _stream(self, me: _Stream, handler: _Handler) -> None:
        sent = -1
        next_ping = time.monotonic() + self.heartbeat_s
        while True:
            with self._cond:
                # Wake at least once a second to notice a browser that closed the stream
                # (reload, tab closed), so its slot is free long before the next heartbeat.
                self._cond.wait_for(
                    lambda last=sent: self._seq != last or self._closing or me.evicted,
                    timeout=min(_PEER_CHECK_S, max(0.0, next_ping - time.monotonic())),
                )
                if self._closing or me.evicted:
                    return
                frame = None
                if self._seq != sent:
                    frame, sent = self._frame, self._seq
            if frame is None:
                if time.monotonic() < next_ping:
                    if _peer_closed(handler.connection):
                        return
                    continue
                frame = b": ping\n\n"
            # Outside the lock: a slow socket delays only this client.
            self._write(me, handler, frame)
            next_ping = time.monotonic() + self.heartbeat_s


def _hang_up(sock: socket.socket) -> None:
    """Shut a stream's socket down: wakes its handler now, even inside a blocked write."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client closed its side (an SSE client never sends after the request)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
