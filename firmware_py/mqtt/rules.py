"""What an MQTT broker accepts in topics and strings, checked before the first connect.

A setting the broker rejects is worse than an error at start-up: mosquitto drops the
connection on a malformed topic ("disconnected due to malformed packet") and the device
reconnects and is dropped again for ever; a topic it accepts but nobody can match
(``$...``, reserved for the broker) publishes into the void. The rules (MQTT 3.1.1
section 1.5.3 and 4.7, and mosquitto's UTF-8 check, which also refuses control
characters and non-characters):

* text: encodable as UTF-8, at most 65535 bytes, no U+0000, no control characters
  (U+0001-U+001F, U+007F-U+009F), no non-characters (U+FDD0-U+FDEF, U+nFFFE, U+nFFFF);
* topic names: text, and no wildcard ``+`` or ``#``, no leading ``$``, no empty level
  (a leading, trailing or doubled ``/``).

Standard library only.
"""

from __future__ import annotations

from ..errors import ConfigError

#: The longest string MQTT can carry: its length is a 16-bit number.
MAX_BYTES = 65535


def text_problem(value: str, *, binary: bool = False) -> str | None:
    """Why a broker would refuse ``value`` as an MQTT string (None: it would not).

    ``binary``: a field MQTT carries as bytes (the password): only the length counts.
    """
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8 text"
    if size > MAX_BYTES:
        return f"it is {size} bytes long in UTF-8, more than MQTT's {MAX_BYTES}"
    if binary:
        return None
    for ch in value:
        code = ord(ch)
        if code == 0:
            return "it contains a NUL character"
        if code <= 0x1F or 0x7F <= code <= 0x9F:
            return f"it contains the control character U+{code:04X}"
        if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFF) >= 0xFFFE:
            return f"it contains the non-character U+{code:04X}"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to and subscribed back (None: it can)."""
    problem = text_problem(topic)
    if problem:
        return problem
    if "+" in topic or "#" in topic:
        return "it contains the wildcard '+' or '#'"
    if topic.startswith("$"):
        return "topics starting with '$' are reserved for the broker ($SYS)"
    if "" in topic.split("/"):
        return "it has an empty level (a leading, trailing or doubled '/')"
    return None


def check_topic_part(what: str, value: str, fix: str) -> None:
    """One-line :class:`ConfigError` when ``value`` cannot start an MQTT topic."""
    problem = topic_problem(value) if value else "it is empty"
    if problem:
        raise ConfigError(f"bad {what} {_shown(value)}: {problem}; {fix}")


def check_text(what: str, value: str | None, fix: str, *, secret: bool = False) -> None:
    """One-line :class:`ConfigError` when the broker would refuse ``value`` as a string;
    a ``secret`` is never shown and is checked as MQTT's binary password field."""
    problem = text_problem(value, binary=secret) if value else None
    if problem:
        shown = "" if secret else f" {_shown(value or '')}"
        raise ConfigError(f"bad {what}{shown}: {problem}; {fix}")


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
