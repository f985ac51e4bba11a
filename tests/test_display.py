"""The live display page: HTTP endpoints, the SSE stream, slow clients, headless Chromium.

The browser tests drive a real Debian ``chromium`` over the DevTools protocol (a minimal
WebSocket client below, standard library only), so the page is proven to render its
inline snapshot *and* to follow live updates pushed over ``/events``. A screenshot is
kept at ``test-artifacts/display.png``. Without Chromium the browser tests skip, except
under ``CI`` where they fail: CI installs it, and a silent skip would hide a broken page.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from firmware_py.display import DisplayServer, parse_http_address
from firmware_py.errors import ConfigError
from tests.paths import REPO

ARTIFACTS = REPO / "test-artifacts"
LABELS = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop",
          "reggae", "rock"]


def payload(genre: str, confidence: float = 0.8, level_dbfs: float = -23.4,
            changed: bool = False) -> dict[str, Any]:
    """A state payload as the device loop builds it (firmware_py.app.state_payload)."""
    rest = (1.0 - confidence) / (len(LABELS) - 1)
    probs = {label: (confidence if label == genre else rest) for label in LABELS}
    raw = {label: min(1.0, p * (1.1 if label == genre else 0.9)) for label, p in probs.items()}
    return {
        "genre": genre, "confidence": confidence, "probabilities": probs, "raw": raw,
        "level_dbfs": level_dbfs, "model": "test-model",
        "timestamp": "2025-06-01T12:34:56.000+00:00", "audio_t_s": 12.5, "changed": changed,
    }


@pytest.fixture
def display() -> Iterator[DisplayServer]:
    server = DisplayServer("127.0.0.1", 0, labels=LABELS, model_name="test-model")
    server.start()
    yield server
    server.stop()


def get(server: DisplayServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(0.05)


class SseReader:
    """Reads an ``/events`` stream event by event (comments kept, so heartbeats are seen)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()

    def next_block(self) -> list[str]:
        lines: list[str] = []
        while True:
            line = self.resp.fp.readline()
            if not line:
                raise EOFError("stream closed")
            text = line.decode().rstrip("\n")
            if text == "":
                if lines:
                    return lines
                continue
            lines.append(text)

    def next_data(self) -> dict[str, Any]:
        while True:
            block = self.next_block()
            data = [line[len("data: "):] for line in block if line.startswith("data: ")]
            if data:
                return json.loads("\n".join(data))

    def close(self) -> None:
        self.resp.close()  # the response's file object holds the socket open too
        self.conn.close()


# -- address parsing ---------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("localhost:80", ("localhost", 80)),
    (" [::1]:8081 ", ("::1", 8081)),
])
def test_parse_http_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_http_address(text) == expected


@pytest.mark.parametrize("text, words", [
    ("", "host:port"),
    ("8080", "missing host or port"),
    (":8080", "missing host or port"),
    ("127.0.0.1:", "port must be a number"),
    ("127.0.0.1:0", "port must be a number"),
    ("127.0.0.1:70000", "port must be a number"),
    ("127.0.0.1:http", "port must be a number"),
    ("127.0.0.1:\u00b2", "port must be a number"),  # a superscript two: isdigit() but not int()
    ("::1:8080", "brackets"),
    ("[nope]:8080", "not an IPv6 address"),
    ("bad host:8080", "not a host name"),
])
def test_parse_http_address_errors_are_one_line(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_http_address(text)
    message = str(err.value)
    assert words in message and "\n" not in message
    assert "127.0.0.1:8080" in message or "[::1]:8080" in message  # names the fix


def test_busy_port_is_a_config_error(display: DisplayServer) -> None:
    other = DisplayServer("127.0.0.1", display.port, labels=LABELS, model_name="m")
    with pytest.raises(ConfigError, match="cannot serve the display on 127.0.0.1"):
        other.start()


# -- plain endpoints -----------------------------------------------------------------------
def test_page_state_and_health(display: DisplayServer) -> None:
    status, headers, body = get(display, "/state")
    assert status == 200 and headers["Content-Type"] == "application/json"
    snap = json.loads(body)
    assert snap == {"seq": 0, "online": True, "model": "test-model", "labels": LABELS,
                    "state": None}

    display.update(payload("rock", changed=True))
    snap = json.loads(get(display, "/state")[2])
    assert snap["seq"] == 1 and snap["state"]["genre"] == "rock"
    assert snap["state"]["probabilities"]["rock"] == pytest.approx(0.8)

    status, headers, body = get(display, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    html = body.decode()
    # The current snapshot is inlined, so the page is complete before the stream opens.
    assert '"genre":"rock"' in html and "/*__SNAPSHOT__*/" not in html
    assert "http://" not in html and "https://" not in html  # no CDN, nothing external
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert headers["Cache-Control"] == "no-store"

    status, _, body = get(display, "/healthz")
    health = json.loads(body)
    assert status == 200 and health["ok"] is True and health["online"] is True
    assert health["last_update_age_s"] < 5

    assert get(display, "/nope")[0] == 404
    status, headers, body = get(display, "/state", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_snapshot_cannot_break_out_of_the_page(display: DisplayServer) -> None:
    display.update({**payload("rock"), "model": "</script><script>alert(1)</script>"})
    html = get(display, "/")[2].decode()
    assert "</script><script>alert(1)" not in html
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in html


def test_non_finite_numbers_become_null(display: DisplayServer) -> None:
    # A digitally silent input has a level of -inf dBFS; browsers' JSON.parse rejects
    # -Infinity, so it must arrive as null.
    display.update(payload("silence", confidence=float("nan"), level_dbfs=float("-inf")))
    body = get(display, "/state")[2]
    assert b"Infinity" not in body and b"NaN" not in body
    state = json.loads(body)["state"]
    assert state["level_dbfs"] is None and state["confidence"] is None


def test_set_online(display: DisplayServer) -> None:
    display.set_online(False)
    assert json.loads(get(display, "/state")[2])["online"] is False
    assert json.loads(get(display, "/healthz")[2])["online"] is False
    seq = display.snapshot()["seq"]
    display.set_online(False)  # no change, no event
    assert display.snapshot()["seq"] == seq
    display.set_online(True)
    assert display.snapshot()["online"] is True and display.snapshot()["seq"] == seq + 1


# -- the SSE stream ------------------------------------------------------------------------
def test_sse_sends_current_state_then_updates(display: DisplayServer) -> None:
    display.update(payload("jazz"))
    reader = SseReader(display.port)
    try:
        assert reader.resp.status == 200
        assert reader.resp.getheader("Content-Type") == "text/event-stream"
        assert reader.next_block() == ["retry: 2000"]
        first = reader.next_data()
        assert first["state"]["genre"] == "jazz" and first["labels"] == LABELS
        wait_until(lambda: display.clients == 1, what="the SSE client to register")

        display.update(payload("rock", changed=True))
        event = reader.next_data()
        assert event["state"]["genre"] == "rock" and event["state"]["changed"] is True
        assert event["seq"] == first["seq"] + 1

        display.set_online(False)
        assert reader.next_data()["online"] is False
    finally:
        reader.close()
    wait_until(lambda: display.clients == 0, what="the closed client to be forgotten")


def test_sse_heartbeat_comment() -> None:
    server = DisplayServer("127.0.0.1", 0, labels=LABELS, model_name="m", heartbeat_s=0.2)
    server.start()
    reader = SseReader(server.port)
    try:
        reader.next_block()  # retry
        reader.next_data()  # initial snapshot
        assert reader.next_block() == [": ping"]
    finally:
        reader.close()
        server.stop()


def test_stream_ends_when_server_stops(display: DisplayServer) -> None:
    reader = SseReader(display.port)
    reader.next_data()
    t0 = time.monotonic()
    display.stop()
    with pytest.raises((EOFError, OSError)):
        while True:
            reader.next_block()
    assert time.monotonic() - t0 < 3
    reader.close()


def _stuck_client(port: int) -> socket.socket:
    """Opens /events and never reads: its receive buffer fills, then the server's send."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_stuck_clients_never_block_update_and_are_dropped() -> None:
    server = DisplayServer("127.0.0.1", 0, labels=LABELS, model_name="m", max_clients=4,
                           send_timeout_s=0.5)
    server.start()
    stuck = [_stuck_client(server.port) for _ in range(4)]
    try:
        wait_until(lambda: server.clients == 4, what="4 stuck clients to connect")
        # The streams are full: a fifth client takes the slot of the stalest (bounded
        # threads and memory, and idle connections cannot lock a kiosk out) ...
        fifth = SseReader(server.port)
        try:
            assert fifth.resp.status == 200
            assert server.clients == 4
        finally:
            fifth.close()
        # ... and plain requests still work.
        assert get(server, "/healthz")[0] == 200

        # A state far larger than any socket buffer: every stuck client's write blocks.
        big = {**payload("rock"), "blob": "x" * 8_000_000}
        worst = 0.0
        t_all = time.monotonic()
        for i in range(300):
            t0 = time.perf_counter()
            server.update(big if i == 0 else payload("rock", confidence=0.5 + i / 1000))
            worst = max(worst, time.perf_counter() - t0)
        elapsed = time.monotonic() - t_all
        # update() only encodes and swaps bytes: the 8 MB one costs some ms, the rest µs.
        assert worst < 0.5, f"update() took {worst:.3f} s with stuck clients"
        assert elapsed < 2.0
        assert server.snapshot()["state"]["confidence"] == pytest.approx(0.5 + 299 / 1000)

        # Handlers send only the newest state, so they may have skipped the big one above;
        # leave a big one as the newest so that every stuck client's write must block.
        server.update(big)
        # Clients that accept nothing for send_timeout_s are dropped, freeing their slots.
        wait_until(lambda: server.clients == 0, timeout_s=10, what="stuck clients to be dropped")
        reader = SseReader(server.port)
        try:
            assert reader.resp.status == 200
            reader.next_block()
            assert reader.next_data()["state"]["genre"] == "rock"
        finally:
            reader.close()
    finally:
        for sock in stuck:
            sock.close()
        server.stop()


def test_stop_is_prompt_with_stuck_clients() -> None:
    server = DisplayServer("127.0.0.1", 0, labels=LABELS, model_name="m", send_timeout_s=60)
    server.start()
    stuck = [_stuck_client(server.port) for _ in range(3)]
    try:
        wait_until(lambda: server.clients == 3, what="stuck clients to connect")
        server.update({**payload("rock"), "blob": "x" * 8_000_000})
        time.sleep(0.2)  # let the handlers block in their writes
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 3
    finally:
        for sock in stuck:
            sock.close()


# -- headless Chromium ---------------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=800,480",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    for name in (os.environ.get("GENRE_EDGE_CHROMIUM"), "chromium", "chromium-browser"):
        path = shutil.which(name) if name else None
        if path:
            return path
    reason = "chromium not found: install Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class Browser:
    """A headless Chromium driven over the DevTools protocol (a WebSocket, RFC 6455)."""

    def __init__(self, chromium: str, url: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="genre-edge-chromium-")
        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: renderers go with it
        )
        self.sock: socket.socket | None = None
        self._buf = b""
        self._id = 0
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"
            port = int(wait_until(lambda: port_file.is_file() and port_file.read_text().split()[0],
                                  timeout_s=30, what="Chromium's DevTools port"))
            ws_url = wait_until(lambda: self._page_ws(port), timeout_s=15, what="the page target")
            self._connect(ws_url)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _page_ws(port: int) -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
            targets = json.load(resp)
        pages = [t for t in targets if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
        return pages[0]["webSocketDebuggerUrl"] if pages else None

    def _connect(self, ws_url: str) -> None:
        parts = urlsplit(ws_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self._buf:
            self._buf += self._recv()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("DevTools connection closed")
        return chunk

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self._recv()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _send_frame(self, opcode: int, data: bytes) -> None:
        assert self.sock is not None
        header = bytearray([0x80 | opcode])
        if len(data) < 126:
            header.append(0x80 | len(data))
        elif len(data) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(data))
        mask = os.urandom(4)  # clients must mask every frame
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _message(self) -> dict[str, Any]:
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            data = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self._send_frame(0xA, data)
                continue
            if opcode == 0x8:
                raise EOFError("DevTools closed the WebSocket")
            parts.append(data)
            if b0 & 0x80:  # FIN
                return json.loads(b"".join(parts))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._send_frame(0x1, json.dumps({"id": self._id, "method": method,
                                          "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        return png

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack("!II", png[16:24])


def text_of(browser: Browser, element_id: str) -> str | None:
    # None while the page is still loading (the target can be about:blank at first).
    return browser.js(f"document.getElementById({element_id!r})?.textContent ?? null")


@pytest.mark.timeout(180)
def test_chromium_renders_the_page_and_follows_live_updates(
    chromium: str, display: DisplayServer
) -> None:
    display.update(payload("rock", confidence=0.71, changed=True))
    browser = Browser(chromium, display.url)
    try:
        browser.call("Emulation.setDeviceMetricsOverride", width=800, height=480,
                     deviceScaleFactor=1, mobile=False)
        # No CSS transitions (the page honours reduced motion): screenshots show the
        # final state, not a bar half-way through its animation.
        browser.call("Emulation.setEmulatedMedia",
                     features=[{"name": "prefers-reduced-motion", "value": "reduce"}])
        # The inline snapshot renders at once; then the page opens /events.
        wait_until(lambda: text_of(browser, "genre") == "rock", what="genre 'rock' on the page")
        wait_until(lambda: display.clients == 1, what="the page's SSE connection")
        assert text_of(browser, "link") == "online"
        assert text_of(browser, "confidence") == "71%"
        assert browser.js("document.querySelectorAll('#bars li').length") == len(LABELS)
        assert browser.js("document.querySelector('#bars li.current .name').textContent") == "rock"
        # The CSP hashes match the inline style: it applied (the genre is large).
        assert browser.js("getComputedStyle(document.getElementById('genre')).fontSize") == "92px"

        # A new state reaches the open page over the stream, no reload.
        display.update(payload("classical", confidence=0.93, level_dbfs=-31.0, changed=True))
        wait_until(lambda: text_of(browser, "genre") == "classical",
                   what="genre 'classical' pushed over SSE")
        assert text_of(browser, "level") == "-31.0 dBFS"
        assert browser.js("document.title").startswith("classical")
        # The long word shrinks to fit its column instead of being cut off.
        assert browser.js("(e => e.scrollWidth <= e.clientWidth)(document.getElementById('genre'))")
        assert browser.js("parseFloat(getComputedStyle(document.getElementById('genre')).fontSize)"
                          ) < 92
        png = browser.screenshot(ARTIFACTS / "display.png")
        assert png_size(png) == (800, 480) and len(png) > 5000

        display.update(payload("silence", confidence=0.0, level_dbfs=float("-inf")))
        wait_until(lambda: browser.js("document.body.classList.contains('silence')"),
                   what="the silence style")
        assert text_of(browser, "level") == "−∞ dBFS"
        browser.screenshot(ARTIFACTS / "display-silence.png")

        display.update(payload("unknown", confidence=0.3))
        wait_until(lambda: browser.js("document.body.classList.contains('unknown')"),
                   what="the unknown style")
        assert not browser.js("document.body.classList.contains('silence')")
        assert browser.js("(e => e.scrollWidth <= e.clientWidth)(document.getElementById('genre'))")

        display.set_online(False)
        wait_until(lambda: text_of(browser, "link") == "offline", what="device offline")
        assert browser.js("document.body.classList.contains('offline')")
        display.set_online(True)
        wait_until(lambda: text_of(browser, "link") == "online", what="device online again")

        # The device process goes away: the lost stream shows as offline.
        display.stop()
        wait_until(lambda: text_of(browser, "link") == "offline", what="stream lost -> offline")
        assert "lost" in text_of(browser, "status")
        browser.screenshot(ARTIFACTS / "display-offline.png")
    finally:
        browser.close()


def dump_dom(chromium: str, url: str) -> str:
    """``chromium --dump-dom``: the DOM after the load event (inline scripts have run)."""
    with tempfile.TemporaryDirectory(prefix="genre-edge-chromium-") as profile:
        result = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.timeout(180)
def test_chromium_dump_dom_shows_the_current_state(
    chromium: str, display: DisplayServer
) -> None:
    # (the page may set a font size on the genre element to fit a long name)
    display.update(payload("rock"))
    assert re.search(r'<div id="genre"[^>]*>rock</div>', dump_dom(chromium, display.url))
    display.update(payload("classical"))
    dom = dump_dom(chromium, display.url)
    assert re.search(r'<div id="genre"[^>]*>classical</div>', dom)
    assert '<span id="link">online</span>' in dom
