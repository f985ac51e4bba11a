"""One exception type for every problem a user can fix.

The CLI prints ``genre-edge: error: <message>`` and exits non-zero, without a
traceback, for any :class:`GenreEdgeError`. Messages are one line and name the
problem and the fix.
"""

from __future__ import annotations

from typing import Any

from .text import display


class GenreEdgeError(Exception):
    """A user-facing error: one line, says what is wrong and how to fix it."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One printable line, always: multi-line messages break log parsers and the CLI
        # contract, and a name with escape sequences in it must not drive the terminal.
        super().__init__(display(" ".join(str(message).split())))


class AudioError(GenreEdgeError):
    """Unreadable, empty, non-finite or otherwise unusable audio."""


class BundleError(GenreEdgeError):
    """A model bundle that is missing, corrupt or inconsistent."""


class ConfigError(GenreEdgeError):
    """A bad configuration file, flag or environment variable."""


class DeviceError(GenreEdgeError):
    """A missing or failing audio device or accelerator."""


class BrokerError(GenreEdgeError):
    """An MQTT broker that cannot be reached or refuses us."""


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages: a 4000-digit integer or a
    megabyte of text from a hostile config must not become a megabyte error line (and
    ``repr`` of an integer over 4300 digits raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def skip_reason(exc: BaseException, path: object) -> str:
    """The one line a batch (classify, index, train's caching) prints for a file it skips.

    A :class:`GenreEdgeError` says what is wrong already; anything else (a decoder bug, a
    ``MemoryError``) is named with the file, so that one bad file of any kind costs that
    file only, never the run.
    """
    if isinstance(exc, GenreEdgeError):
        return str(exc)
    reason = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return display(f"cannot process {path} ({reason[:300]}): skipped; check the file, and "
                   "report this error if the file plays elsewhere")
