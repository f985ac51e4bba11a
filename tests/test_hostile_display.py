"""The display page against hostile text and idle connections (issue 16, items 5 and 9).

* A track name, label or bundle name such as ``<!--<script>`` left the page at "waiting":
  the inline JSON escaped only ``</``, and ``<!--<script>`` puts the HTML parser in a
  state where the data element swallows the page's code. Checked in headless Chromium.
* Eight ``/events`` clients that never read held every slot for hours (the kernel's send
  buffers absorbed megabytes); the kiosk, ninth, got HTTP 503.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from firmware_py.display import DisplayServer
from tests.test_display import LABELS, Browser, chromium, payload, text_of, wait_until

__all__ = ["chromium"]  # the session fixture, shared with tests/test_display.py

HOSTILE = "<!--<script>"


def _hostile_server(where: str) -> tuple[DisplayServer, list[str], dict]:
    labels = [*LABELS, f"{HOSTILE}x</script>"] if where == "label" else list(LABELS)
    model = f"{HOSTILE}model" if where == "bundle name" else "test-model"
    server = DisplayServer("127.0.0.1", 0, labels=labels, model_name=model)
    state = {**payload("rock", confidence=0.66), "model": model}
    if where == "label":
        state["probabilities"] = {**state["probabilities"], labels[-1]: 0.01}
    if where == "track name":
        state["sounds_like"] = {"path": f"{HOSTILE}.opus", "similarity": 0.93}
    return server, labels, state


@pytest.mark.timeout(180)
@pytest.mark.parametrize("where", ["track name", "label", "bundle name"])
def test_no_text_can_change_the_page_structure(chromium: str, where: str) -> None:
    server, labels, state = _hostile_server(where)
    server.start()
    server.update(state)
    browser = Browser(chromium, server.url)
    try:
        # The inline snapshot renders: not stuck at "waiting" ...
        wait_until(lambda: text_of(browser, "genre") == "rock", what="the inline state")
        assert browser.js("document.querySelectorAll('#bars li').length") == len(labels)
        names = browser.js("[...document.querySelectorAll('#bars .name')].map(e => e.textContent)")
        assert names == labels  # shown as text, exactly
        assert browser.js("document.querySelectorAll('script').length") == 2
        if where == "bundle name":
            assert text_of(browser, "model") == f"genre-edge · {HOSTILE}model"
        # ... and the stream keeps it live with the same text in it.
        wait_until(lambda: server.clients == 1, what="the page's SSE connection")
        server.update({**state, **payload("classical", confidence=0.9), "model": state["model"],
                       "sounds_like": {"path": f"{HOSTILE}</script>.opus", "similarity": 0.5}})
        wait_until(lambda: text_of(browser, "genre") == "classical", what="the pushed state")
        assert text_of(browser, "link") == "online"
    finally:
        browser.close()
        server.stop()


def _idle_client(port: int) -> socket.socket:
    """Opens /events and never reads a byte (default buffers, as anyone would)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


@pytest.fixture
def idle_clients() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


@pytest.mark.timeout(180)
def test_eight_idle_clients_cannot_lock_the_kiosk_out(chromium: str,
                                                      idle_clients: list[socket.socket]) -> None:
    server = DisplayServer("127.0.0.1", 0, labels=LABELS, model_name="test-model")  # 8 slots
    server.start()
    try:
        server.update(payload("rock"))
        idle_clients += [_idle_client(server.port) for _ in range(server.max_clients)]
        wait_until(lambda: server.clients == server.max_clients, what="8 idle streams")
        browser = Browser(chromium, server.url)  # the kiosk, ninth
        try:
            wait_until(lambda: text_of(browser, "genre") == "rock", what="the inline state")
            # Its stream is served (the stalest idle one made room), so it follows live.
            server.update(payload("jazz", changed=True))
            wait_until(lambda: text_of(browser, "genre") == "jazz", timeout_s=15,
                       what="a state pushed to the kiosk")
            assert text_of(browser, "link") == "online"
            assert server.clients == server.max_clients
        finally:
            browser.close()
    finally:
        server.stop()


def test_a_client_that_never_reads_is_dropped_after_a_bounded_amount(
    idle_clients: list[socket.socket],
) -> None:
    """The send timeout holds for real: with the kernel's autotuned send buffer a client
    that never read absorbed ~3 MB (an hour of states) before a write could block."""
    server = DisplayServer("127.0.0.1", 0, labels=LABELS, model_name="m", send_timeout_s=0.5)
    server.start()
    try:
        idle = _idle_client(server.port)
        idle_clients.append(idle)
        wait_until(lambda: server.clients == 1, what="the idle stream")
        state = {**payload("rock"), "pad": "x" * 1000}
        deadline = time.monotonic() + 60
        n = 0
        while server.clients and time.monotonic() < deadline:
            server.update({**state, "n": n})
            n += 1
            time.sleep(0.003)
        assert server.clients == 0, "the idle client was never dropped"
    finally:
        server.stop()
    # Everything the server wrote is now in the client's buffers: read it to the end.
    idle.settimeout(10)
    total = 0
    while chunk := idle.recv(1 << 16):
        total += len(chunk)
    print(f"idle client dropped after {total // 1000} KB")
    assert total < 512_000, f"dropped only after {total // 1000} KB"
