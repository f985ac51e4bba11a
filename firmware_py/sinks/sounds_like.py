""""Sounds like": the indexed track nearest to what is playing, added to every state.

Settings: ``[similarity]`` (:class:`SimilarityConfig`, declared here). The index, the
embedding model and numpy are loaded only when an index is set.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..bounds import knob, setting
from ..errors import GenreEdgeError
from .base import Sink, SinkContext

if TYPE_CHECKING:
    import numpy as np

    from ..bundle import Bundle
    from ..pipeline import HopResult

log = logging.getLogger(__name__)


@dataclass
class SimilarityConfig:
    """"Sounds like" (the ``[similarity]`` section): publish the indexed track nearest to
    what is playing. Every key's meaning is the ``help`` on its field."""

    SECTION: ClassVar[str] = "similarity"
    SECTION_HELP: ClassVar[str] = (
        '"Sounds like": publish the indexed track nearest to what is playing, as '
        '"sounds_like" in the state.')

    index: str | None = setting(
        None, example="/var/lib/genre-edge/music-index.npz",
        help="The index made by `genre-edge index ~/Music --out INDEX` with the same model "
             "bundle. Default: unset = off.")
    every_s: float = knob(10.0, 1.0, 3600.0, " seconds", help="Seconds between look-ups.")
    window_s: float = knob(30.0, 3.0, 600.0, " seconds",
                           help="Seconds of recent audio whose embeddings are averaged for a "
                                "look-up.")


#: Last: it only adds a key to the states the others publish.
ORDER = 40
SETTINGS = SimilarityConfig


class SoundsLike(Sink):
    """The indexed track nearest to the last ``window_s`` of audio, every ``every_s``.

    Runs the bundle's int8 embedding model on the same windows as the classifier (one
    more ~0.3 ms inference per hop) and keeps the newest answer for every state
    (``"sounds_like": {"path", "similarity"}``, or null before the first answer).
    """

    name = "sounds_like"

    def __init__(self, config: Any, bundle: Bundle, threads: int,
                 inference_hop_s: float) -> None:
        from ..similarity import Index, open_embedding_model, pool_windows
        from ..smoothing import SILENCE

        self._pool, self._silence = pool_windows, SILENCE  # resolved once, not per hop
        self.index = Index.load(config.index)
        self.model = open_embedding_model(bundle, threads=threads)
        self.index.check_model(bundle, config.index, dim=int(self.model.output_shape[-1]))
        # in hops of the running pipeline (inference.hop_s may differ from the bundle's)
        self.every_hops = max(1, round(config.every_s / inference_hop_s))
        self.recent: Any = deque(maxlen=max(1, round(config.window_s / inference_hop_s)))
        self.hops = 0
        self.current: dict[str, Any] | None = None

    def update(self, window: np.ndarray, silent: bool) -> dict[str, Any] | None:
        if not silent:
            self.recent.append(self.model.predict(window))
        self.hops += 1
        if self.recent and self.hops % self.every_hops == 0:
            best = self.index.query(self._pool(list(self.recent)), top=1)
            if best:
                self.current = {"path": Path(best[0].path).name,
                                "similarity": round(float(best[0].similarity), 4)}
        return self.current

    def contribute(self, result: HopResult) -> Mapping[str, Any]:
        return {"sounds_like": self.update(result.window, result.state.genre == self._silence)}


def build(ctx: SinkContext) -> SoundsLike | None:
    """"Sounds like" for ``config.similarity`` (None when off, or when the index or the
    bundle's embedding model does not check out: one error line, and listening goes on,
    because a service that refused to start over an optional feature would loop)."""
    config = ctx.config
    if not config.similarity.index:
        return None
    try:
        return SoundsLike(config.similarity, ctx.bundle, config.inference.threads,
                          ctx.pipeline.inference_hop_s)
    except GenreEdgeError as exc:
        log.error("sounds like is off: %s", exc)
        return None
