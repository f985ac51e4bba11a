"""The state the device publishes after every inference hop: one typed object
(:class:`HopState`), turned into the JSON document at the edges (:meth:`HopState.to_dict`).

The document, in this key order::

    {"genre", "confidence", "probabilities", "level_dbfs", "model", "timestamp",
     "audio_t_s", "changed", "raw"[, keys of optional features: "sounds_like"]}

``confidence`` and the probabilities are 0..1 rounded to 4 places, ``level_dbfs`` to 0.1 dB,
``audio_t_s`` to 0.01 s; ``raw`` is the model's own output per label (``None`` where it is
not finite: a broken or hostile model can emit NaN/Inf, which JSON cannot carry).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .text import utc_timestamp

if TYPE_CHECKING:
    from .pipeline import HopResult


@dataclass(frozen=True)
class HopState:
    """One published state (see the module docstring for the document it becomes)."""

    genre: str
    confidence: float
    probabilities: dict[str, float]
    level_dbfs: float
    model: str
    timestamp: str  # text.utc_timestamp(): ISO 8601 UTC with milliseconds, "+00:00"
    audio_t_s: float
    changed: bool
    raw: dict[str, float | None]
    #: Keys added by optional features (``sounds_like``), after the fixed ones.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hop(cls, result: HopResult, labels: list[str], model_name: str) -> HopState:
        """The state of one pipeline result, stamped now."""
        st = result.state
        return cls(
            genre=st.genre,
            confidence=round(float(st.confidence), 4),
            probabilities={k: round(float(v), 4) for k, v in st.probabilities.items()},
            level_dbfs=round(float(st.level_dbfs), 1),
            model=model_name,
            timestamp=utc_timestamp(),
            audio_t_s=round(result.t_s, 2),
            changed=bool(st.changed),
            raw={k: round(float(v), 4) if math.isfinite(float(v)) else None
                 for k, v in zip(labels, result.probabilities, strict=True)},
        )

    def with_extra(self, extra: Mapping[str, Any]) -> HopState:
        """This state with ``extra`` keys added (a copy; nothing to add: itself)."""
        if not extra:
            return self
        return dataclasses.replace(self, extra={**self.extra, **extra})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (a new dict each call)."""
        return {
            "genre": self.genre,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "level_dbfs": self.level_dbfs,
            "model": self.model,
            "timestamp": self.timestamp,
            "audio_t_s": self.audio_t_s,
            "changed": self.changed,
            "raw": dict(self.raw),
            **self.extra,
        }
