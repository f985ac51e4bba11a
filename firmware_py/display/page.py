"""The display page: the HTML template, read once, and its Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

SNAPSHOT_MARK = "/*__SNAPSHOT__*/null"


def csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


class Page:
    """The page template, read once; the CSP allows exactly its inline script and style."""

    def __init__(self) -> None:
        html = resources.files("firmware_py").joinpath("assets/display.html").read_text("utf-8")
        if SNAPSHOT_MARK not in html:
            raise RuntimeError("display.html lacks the snapshot placeholder")
        self.head, self.tail = html.split(SNAPSHOT_MARK, 1)
        # The snapshot sits in a non-executed <script type="application/json">, so only the
        # <style> and the code <script> need hashes; nothing else may run or load.
        styles = re.findall(r"<style>(.*?)</style>", html, re.S)
        scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
        self.csp = (
            "default-src 'none'; connect-src 'self'; img-src 'self' data:; "
            f"style-src {' '.join(csp_hash(s) for s in styles)}; "
            f"script-src {' '.join(csp_hash(s) for s in scripts)}; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )

    def render(self, snapshot_json: str) -> bytes:
        # No markup character may reach the inline <script>: "</" would end it early, and
        # "<!--<script>" (a track name) switches the HTML parser into a state in which
        # "</script>" no longer ends it, swallowing the page's code. JSON reads \u003c
        # back as "<".
        safe = (snapshot_json.replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("&", "\\u0026"))
        return (self.head + safe + self.tail).encode("utf-8")
