"""The display page against hostile text (issue 16, item 5).

* A track name, label or bundle name such as ``<!--<script>`` left the page at "waiting":
  the inline JSON escaped only ``</``, and ``<!--<script>`` puts the HTML parser in a
  state where the data element swallows the page's code. Checked in headless Chromium.
"""

from __future__ import annotations

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
