"""What the MQTT publisher sends: JSON payloads (credentials masked) and queue items.

Standard library only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..text import jsonable, utc_timestamp


@dataclass
class Outgoing:
    """One message waiting in the publisher's queue."""

    topic: str
    payload: bytes
    retain: bool
    kind: str  # "state" | "stats" | "last_state" (re-send whatever state is newest at send time)


#: Keys whose values are credentials: masked wherever they appear in a payload.
_CREDENTIAL_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|api_?key", re.IGNORECASE)


def _without_credentials(obj: Any) -> Any:
    """``obj`` with the value of every credential-like key (``password``, ``mqtt_password``,
    ``secret``, ...) replaced by ``***``; every other value is left exactly as it is."""
    if isinstance(obj, Mapping):
        return {k: ("***" if isinstance(k, str) and _CREDENTIAL_KEY.search(k) and v is not None
                    else _without_credentials(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_credentials(v) for v in obj]
    return obj


def state_document(state: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """The state as sent: JSON-safe, with ``model`` and ``timestamp`` added when absent."""
    doc = jsonable(dict(state))
    doc.setdefault("model", model_name)
    doc.setdefault("timestamp", utc_timestamp())
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of ``doc``, the value of every credential-like key masked.

    Payload text is data (genres, labels, timestamps): it is never searched for the
    password, which would corrupt it and reveal the secret through the mask (password
    'rock' turned every genre 'rock' into '***'). Credentials can only enter a payload
    as a value under a credential-like key, so that is what is masked.
    """
    return json.dumps(_without_credentials(doc), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
