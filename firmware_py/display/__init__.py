"""A live display page served by the device process: ``listen --http 127.0.0.1:8080``.

Endpoints::

    /          the page (HTML, CSS and JS inline; no CDN, no framework), sized for an
               800x480 Raspberry Pi touchscreen in kiosk mode, fine in any browser
    /events    Server-Sent Events: one ``data:`` message (the snapshot below) per change,
               a ``: ping`` comment every ``heartbeat_s`` when nothing changes
    /state     the latest snapshot as JSON
    /healthz   ``{"ok": true, ...}``: the server is up (says nothing about the audio)

The snapshot is ``{"seq", "online", "model", "labels", "state"}``; ``state`` is the last
payload given to :meth:`DisplayServer.update` (``None`` before the first window).

Threads. :meth:`DisplayServer.update` runs on the device loop: it encodes the snapshot
once, swaps it in under a lock and notifies a condition variable; it never touches a
socket, so no client can slow the device loop down. Each SSE client has its own handler
thread that waits on the condition and sends only the *newest* snapshot, so a slow client
skips states instead of queueing them (no memory grows per client).

Clients that stop reading. What holds: (1) each stream's send buffer is fixed at
:data:`SSE_SEND_BUFFER` (kernel autotuning would grow it to megabytes, hours of states), so
once the client's own receive window is full too (~150 KB with default buffers) its next
write blocks, and a write that makes no progress for ``send_timeout_s`` drops the client;
(2) until then a client that reads nothing cannot be told from a slow one, so the number
of streams is bounded by ``max_clients`` and, when all are taken, a new stream takes the
slot of the *stalest* one: blocked in a write the longest, else open the longest (a
browser evicted that way reconnects by itself 2 s later). So idle connections can never
lock the kiosk out, and each costs at most one thread and its send buffer.

Text never changes the page's structure: labels, names and track names reach the page
only as JSON, inline with ``<``, ``>`` and ``&`` escaped (as ``\\u003c`` and so on), or over
``/events``, and the page puts them in ``textContent``.

Standard library only: this runs on the Raspberry Pi.

Layout: :mod:`.address` (``host:port``), :mod:`.page` (the HTML template and its CSP),
:mod:`.server` (:class:`DisplayServer`, the HTTP and SSE handlers).
"""

from __future__ import annotations

from .address import parse_http_address
from .server import SSE_SEND_BUFFER, DisplayServer

__all__ = ["SSE_SEND_BUFFER", "DisplayServer", "parse_http_address"]
