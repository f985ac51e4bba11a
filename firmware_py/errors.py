"""One exception type for every problem a user can fix.

The CLI prints ``genre-edge: error: <message>`` and exits non-zero, without a
traceback, for any :class:`GenreEdgeError`. Messages are one line and name the
problem and the fix.
"""

from __future__ import annotations


class GenreEdgeError(Exception):
    """A user-facing error: one line, says what is wrong and how to fix it."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages break log parsers and the CLI contract.
        super().__init__(" ".join(str(message).split()))


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
