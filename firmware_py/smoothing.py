"""From per-window probabilities to the genre the device publishes.

In the style of TensorFlow Lite Micro's ``RecognizeCommands``: one small class whose
constructor names every knob, fed one probability vector per inference hop, easy to
test with synthetic score sequences.

The published state is a genre label, ``"silence"`` or ``"unknown"``:

* **averaging** -- the mean of the last ``average_windows`` probability vectors;
* **enter / leave (hysteresis)** -- a new genre takes over when its averaged probability
  reaches ``enter_threshold`` *and* the shown genre's averaged probability has fallen
  below ``leave_threshold`` (or is beaten by at least ``switch_margin``); the shown
  genre is kept while it stays at or above ``leave_threshold`` and is not so beaten;
* **dwell** -- no change from one genre to another genre before the shown genre has
  been up for ``min_dwell_s`` seconds (silence and unknown are not held back by it);
* **silence gate** -- decided from the level alone: below ``silence_dbfs`` for
  ``silence_hold_s`` seconds gives ``silence`` (and clears the averaging history, so
  stale music does not carry over); the gate re-opens when the level is back above
  ``silence_dbfs + silence_hysteresis_db``. While the level is below the gate the
  probabilities are ignored (quiet audio classifies badly);
* **unknown** -- ``unknown`` when, for ``unknown_after_s`` seconds, no genre's averaged
  probability reaches ``unknown_threshold`` or the shown genre has lost its support
  (below ``leave_threshold``) without a successor reaching ``enter_threshold``.
  The smoother starts in ``unknown`` and leaves it once ``average_windows`` windows
  have arrived and a genre reaches ``enter_threshold``. After silence, the state stays
  ``silence`` until a genre enters (or ``unknown_after_s`` passes), so that music
  resuming publishes ``silence -> genre`` rather than ``silence -> unknown -> genre``.

* **segment average and surprise** -- on real music the model's mistakes are not
  independent noise: a rock song can look "pop" for 5-10 windows in a row, with
  confidence. So the smoother also keeps an exponential average of every window since
  the shown genre took over (``segment_windows``), which learns the model's usual
  confusions on the song playing now. A convincing new genre takes over quickly only when
  its averaged probability exceeds its segment average by ``surprise_margin`` (the music
  changed: classical after rock); a genre the model often confuses with the current song
  takes over only once the segment average itself prefers it (slowly).

* **song gaps** -- between two songs there is usually a fade and a pause: a hop whose level
  is ``gap_dip_db`` below the music's running level (an exponential average over
  :data:`MUSIC_LEVEL_S` of the hops that are no dip) is a pause, for at most
  :data:`MAX_PAUSE_S` (a longer dip is quieter music: it becomes the running level). The
  model windows that overlap it (``window_s``) are no evidence (half a window of silence is no genre), and the
  ``gap_follow_s`` seconds after them open the quick path: a convincing new genre then takes
  over on its own evidence, without the surprise or segment test (the dwell and the
  hysteresis still apply). Inside a song the slow rules hold back the model's confident
  error streaks; after a pause the display follows the new song in seconds.

Latency of a genuine change (hop 1 s, model window 3 s): the first window made only of
the new genre ends 3 s after the switch; the new genre must then win ``min_top_windows``
of the last ``average_windows`` windows with a mean of at least ``enter_threshold`` and a
surprise of ``surprise_margin``: typically 4--7 s after the switch for dissimilar genres.

The defaults come from ``python -m converter.tune_smoothing`` on the validation split of
the real-music set with the bundled model (back-to-back clips; see the README for the
figures): the two targets (few changes in steady music, quick follow of a real change)
pull against each other, and the point chosen is on the measured Pareto front.

Real-clip tests: :func:`run_smoother` plays a whole sequence of probability vectors and
levels through a fresh :class:`Smoother` and :func:`changes` lists the published
changes, e.g. with ``firmware_py.classify`` output.

The knobs are :class:`SmoothingParams` (:mod:`firmware_py.smoothing_params`); the level
measurement is :func:`~firmware_py.level.level_dbfs`; both are re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GenreEdgeError
from .level import LEVEL_FLOOR_DBFS, level_dbfs
from .smoothing_params import MAX_SECONDS, MAX_SEGMENT_WINDOWS, MAX_WINDOWS, SmoothingParams

__all__ = [
    "LEVEL_FLOOR_DBFS", "MAX_PAUSE_S", "MAX_SECONDS", "MAX_SEGMENT_WINDOWS", "MAX_WINDOWS",
    "MUSIC_LEVEL_S", "SILENCE",
    "UNKNOWN", "SmoothedState", "Smoother", "SmoothingParams", "changes", "level_dbfs",
    "run_smoother",
]

SILENCE = "silence"
UNKNOWN = "unknown"

#: Time constant (seconds) of the music's running level that a song gap is measured against.
MUSIC_LEVEL_S = 10.0
#: A dip longer than this (seconds) is no pause but quieter music (classical after rock): the
#: running level takes the new level and the windows are evidence again.
MAX_PAUSE_S = 4.0


@dataclass
class SmoothedState:
    """What the device publishes after one inference hop.

    Attributes
    ----------
    genre : str
        A label, ``"silence"`` or ``"unknown"``.
    confidence : float
        Averaged probability (0--1) of ``genre``; 0.0 for ``silence`` and ``unknown``.
    probabilities : dict[str, float]
        Averaged probability per label (all 0.0 while the history is empty).
    level_dbfs : float
        RMS level of the newest hop of audio, dBFS.
    changed : bool
        The published genre changed at this update.
    t_s : float
        Audio time of the update in seconds (end of the model window).
    """

    genre: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)
    level_dbfs: float = LEVEL_FLOOR_DBFS
    changed: bool = False
    t_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Smoother:
    """Averaging, hysteresis, dwell, silence gate and unknown state over a stream.

    Parameters
    ----------
    labels : Sequence[str]
        Class labels in model output order. ``"silence"`` and ``"unknown"`` are reserved.
    params : SmoothingParams
        The knobs (defaults when omitted).
    inference_hop_s : float
        Inference hop in seconds: the expected spacing of ``t_s`` between updates.
    window_s : float
        The model window in seconds (a window ending at ``t_s`` began at ``t_s - window_s``):
        which windows overlap a pause between songs.

    Notes
    -----
    The smoother is deterministic: it depends only on the sequence of
    ``(probabilities, level_dbfs, t_s)`` given to :meth:`update`, never on the wall
    clock, so a file played fast gives the same states as played in real time.
    """

    def __init__(
        self, labels: Sequence[str], params: SmoothingParams | None = None,
        inference_hop_s: float = 1.0, window_s: float = 3.0
    ) -> None:
        self.labels = [str(label) for label in labels]
        if not self.labels:
            raise GenreEdgeError("the smoother needs at least one label: check the bundle")
        reserved = {SILENCE, UNKNOWN} & set(self.labels)
        if reserved:
            raise GenreEdgeError(
                f"label(s) {', '.join(sorted(reserved))} are reserved for the smoother's "
                "own states: rename the class in training"
            )
        hop_s = inference_hop_s
        if not (isinstance(hop_s, (int, float)) and math.isfinite(hop_s) and hop_s > 0):
            raise GenreEdgeError(
                f"inference_hop_s must be a positive number of seconds, got {hop_s!r}")
        if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
            raise GenreEdgeError(f"window_s must be a positive number of seconds, got {window_s!r}")
        self.params = params or SmoothingParams()
        self.inference_hop_s = float(hop_s)
        self.window_s = float(window_s)
        self.ignored_vectors = 0  # malformed or non-finite probability vectors skipped
        self.reset()

    # -- state ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: back to the initial ``unknown`` state."""
        self._history: deque[np.ndarray] = deque(maxlen=self.params.average_windows)
        self._segment: np.ndarray | None = None  # exponential average since the last change
        self.genre = UNKNOWN
        self._since_s: float | None = None  # when the shown state began (None: at start)
        self._silent = False
        self._below_since_s: float | None = None  # level below the gate since
        self._weak_since_s: float | None = None  # low confidence since
        self._last_t_s: float | None = None
        self._music_db: float | None = None  # running level of the music (song gaps)
        self._pause_t_s: float | None = None  # the end of the last hop that was a pause
        self._dip_since_s: float | None = None  # the level has been a dip since then

    def set_params(self, params: SmoothingParams) -> None:
        """New knobs (a config reload) without forgetting the current genre or history."""
        # The new history first: if anything fails, the old knobs stay whole.
        history = deque(self._history, maxlen=params.average_windows)
        self.params, self._history = params, history

    @property
    def latency_bound_s(self) -> float:
        """Upper bound on the delay of a clean genre change, given a 3-window blend.

        Rough: the model window (taken as 3 hops) plus the averaging window.
        """
        return (3 + self.params.average_windows) * self.inference_hop_s

    def averaged(self) -> np.ndarray:
        """The current averaged probability vector (zeros when the history is empty)."""
        if not self._history:
            return np.zeros(len(self.labels), dtype=np.float64)
        return np.mean(np.stack(self._history), axis=0)

    def _coerce(self, probabilities: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        if probabilities is None:
            return None
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if p.shape[0] != len(self.labels):
            raise GenreEdgeError(
                f"the model gave {p.shape[0]} probabilities for {len(self.labels)} labels: "
                "the bundle's labels do not match its model; re-create the bundle"
            )
        if not np.all(np.isfinite(p)):
            self.ignored_vectors += 1
            return None
        return np.clip(p, 0.0, 1.0)

    # -- the update -------------------------------------------------------------------
    def update(
        self,
        probabilities: np.ndarray | Sequence[float] | None,
        level_dbfs: float,
        t_s: float,
    ) -> SmoothedState:
        """Feed one inference hop; return the state to publish.

        Parameters
        ----------
        probabilities : np.ndarray or None
            Model output for the newest window, shape ``(len(labels),)``, 0--1; ``None``
            when no inference ran (e.g. the caller skipped it during silence).
            Non-finite vectors are ignored (counted in ``ignored_vectors``).
        level_dbfs : float
            RMS level of the newest hop of audio in dBFS (:func:`level_dbfs`).
        t_s : float
            Audio time of this update in seconds; non-decreasing. A gap of more than
            ``max_gap_hops`` hops, or time going backwards, clears the averaging history.
        """
        prm = self.params
        t_s = float(t_s)
        level = float(level_dbfs) if math.isfinite(float(level_dbfs)) else LEVEL_FLOOR_DBFS
        p = self._coerce(probabilities)
        if self._since_s is None:
            self._since_s = t_s
        if self._last_t_s is not None:
            gap_s = t_s - self._last_t_s
            if gap_s < 0 or gap_s > prm.max_gap_hops * self.inference_hop_s:
                self._history.clear()
                self._weak_since_s = None
                if gap_s < 0:  # a new stream: timers restart from here
                    self._since_s = t_s
                    self._below_since_s = None
        self._last_t_s = t_s
        previous = self.genre

        # 1. The silence gate, from the level alone.
        if self._silent:
            if level >= prm.silence_dbfs + prm.silence_hysteresis_db:
                self._silent = False
                self._below_since_s = None
        elif level < prm.silence_dbfs:
            if self._below_since_s is None:
                self._below_since_s = t_s
            if t_s - self._below_since_s >= prm.silence_hold_s:
                self._silent = True
                self._history.clear()
                self._weak_since_s = None
                self._set(SILENCE, t_s)
        else:
            self._below_since_s = None
        gated = self._silent or self._below_since_s is not None
        # quiet audio and windows that overlap a pause between songs are no evidence
        overlaps_pause = self._watch_for_pause(level, t_s)  # every hop: it tracks the level
        evidence = not gated and not overlaps_pause

        # 2. Evidence: average, then decide.
        if evidence and p is not None:
            self._history.append(p)
        avg = self.averaged()
        if evidence and self._history:
            self._decide(avg, t_s)
            if p is not None:
                a = 1.0 / self.params.segment_windows
                self._segment = p.copy() if self._segment is None else (1 - a) * self._segment + a * p
        elif gated:
            self._segment = None

        genre = self.genre
        confidence = float(avg[self.labels.index(genre)]) if genre in self.labels else 0.0
        return SmoothedState(
            genre=genre,
            confidence=confidence,
            probabilities={label: float(v) for label, v in zip(self.labels, avg, strict=True)},
            level_dbfs=level,
            changed=genre != previous,
            t_s=t_s,
        )

    def _watch_for_pause(self, level: float, t_s: float) -> bool:
        """Whether the window ending at ``t_s`` overlaps a pause between songs: a hop well
        below the music's running level (which the other hops update)."""
        dip = self.params.gap_dip_db
        if dip <= 0:
            return False
        if self._music_db is not None and level <= self._music_db - dip:
            if self._dip_since_s is None:
                self._dip_since_s = t_s
            if t_s - self._dip_since_s < MAX_PAUSE_S:
                self._pause_t_s = t_s
            else:  # no pause: quieter music, the new running level
                self._music_db, self._dip_since_s = level, None
        else:
            self._dip_since_s = None
            a = min(1.0, self.inference_hop_s / MUSIC_LEVEL_S)
            self._music_db = level if self._music_db is None else (1 - a) * self._music_db + a * level
        # the window [t_s - window_s, t_s] overlaps the pause's hop, which ended at _pause_t_s
        return self._pause_t_s is not None and t_s - self.window_s < self._pause_t_s - 1e-9

    def _after_pause(self, t_s: float) -> bool:
        """Within ``gap_follow_s`` of the first window after a pause: the quick path."""
        if self._pause_t_s is None or self.params.gap_dip_db <= 0:
            return False
        return t_s <= self._pause_t_s + self.window_s + self.params.gap_follow_s

    def _set(self, genre: str, t_s: float) -> None:
        if genre != self.genre:
            self.genre = genre
            self._since_s = t_s
            self._weak_since_s = None
            # a new segment: it starts from the evidence that made the change
            self._segment = self.averaged() if self._history else None

    def _decide(self, avg: np.ndarray, t_s: float) -> None:
        prm = self.params
        best = int(np.argmax(avg))
        best_p = float(avg[best])
        full = len(self._history) >= prm.average_windows
        # A single loud window can lift the mean; the new genre must also win most windows.
        tops = sum(1 for p in self._history if int(np.argmax(p)) == best)
        convincing = full and best_p >= prm.enter_threshold and tops >= prm.min_top_windows
        shown = self.labels.index(self.genre) if self.genre in self.labels else None
        shown_p = float(avg[shown]) if shown is not None else 0.0

        if shown is None:  # unknown or silence: a genre enters on full evidence alone
            if convincing:
                self._set(self.labels[best], t_s)
                return
        else:
            since_s = t_s if self._since_s is None else self._since_s
            held = t_s - since_s < prm.min_dwell_s
            segment = self._segment if self._segment is not None else avg
            # quick: this genre is new to the segment (the music changed); slow: the
            # segment average itself has come to prefer it.
            surprising = best_p - float(segment[best]) >= prm.surprise_margin
            settled = int(np.argmax(segment)) == best
            after_gap = self._after_pause(t_s)
            if (
                best != shown
                and convincing
                and (shown_p < prm.leave_threshold or best_p - shown_p >= prm.switch_margin)
                and (surprising or settled or after_gap)
                and not held
            ):
                self._set(self.labels[best], t_s)
                return

        # No change: is the shown state still supported? (Silence with sound back is not.)
        if self.genre == UNKNOWN:
            self._weak_since_s = None
            return
        successor_waiting = convincing and best != shown  # held back by the dwell only
        weak = self.genre == SILENCE or (
            not successor_waiting
            and (best_p < prm.unknown_threshold or shown_p < prm.leave_threshold)
        )
        if not weak:
            self._weak_since_s = None
            return
        if self._weak_since_s is None:
            self._weak_since_s = t_s
        if t_s - self._weak_since_s >= prm.unknown_after_s:
            self._set(UNKNOWN, t_s)


# -- helpers for tests and offline evaluation -------------------------------------------
def run_smoother(
    labels: Sequence[str],
    probabilities: Iterable[np.ndarray | None],
    levels_dbfs: Iterable[float] | None = None,
    *,
    params: SmoothingParams | None = None,
    inference_hop_s: float = 1.0,
    window_s: float = 3.0,
    t0_s: float = 0.0,
) -> list[SmoothedState]:
    """Play a sequence of per-hop probability vectors through a fresh :class:`Smoother`.

    Parameters
    ----------
    probabilities : iterable of np.ndarray or None
        One vector per hop (e.g. ``FileResult.window_probabilities`` rows).
    levels_dbfs : iterable of float, optional
        One level per hop; loud (-20 dBFS) when omitted.
    t0_s : float
        ``t_s`` of the first hop; hop ``i`` is at ``t0_s + i * inference_hop_s``.
    """
    smoother = Smoother(labels, params, inference_hop_s, window_s)
    probs = list(probabilities)
    levels = [-20.0] * len(probs) if levels_dbfs is None else list(levels_dbfs)
    if len(levels) != len(probs):
        raise ValueError(f"{len(probs)} probability vectors but {len(levels)} levels")
    return [
        smoother.update(p, lv, t0_s + i * inference_hop_s) for i, (p, lv) in enumerate(zip(probs, levels, strict=True))
    ]


def changes(states: Iterable[SmoothedState]) -> list[tuple[float, str]]:
    """``(t_s, genre)`` for every update at which the published genre changed."""
    return [(s.t_s, s.genre) for s in states if s.changed]
