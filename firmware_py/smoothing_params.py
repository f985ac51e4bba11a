"""The smoother's settings (:class:`SmoothingParams`: the ``[smoothing]`` section and a
bundle's smoothing defaults), each knob with its range; :mod:`firmware_py.smoothing`
re-exports every name here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .bounds import knob, range_problem
from .errors import GenreEdgeError, brief
from .level import LEVEL_FLOOR_DBFS

#: Upper bounds of the smoothing knobs: an hour of hops is the longest memory that makes
#: sense for a genre, and a day the longest hold; both keep the smoother's state small.
MAX_WINDOWS = 3600
MAX_SEGMENT_WINDOWS = 100_000
MAX_SECONDS = 86_400.0


@dataclass(frozen=True)
class SmoothingParams:
    """Every knob of the smoother, with defaults for hop 1 s and a 3 s model window.

    Attributes
    ----------
    average_windows : int
        Number of most recent probability vectors averaged (4 = the last 4 s at hop 1 s).
    enter_threshold : float
        Averaged probability (0--1) a new genre needs to take over.
    leave_threshold : float
        The shown genre is kept while its averaged probability is at least this
        (0--1, at most ``enter_threshold``): the hysteresis.
    min_dwell_s : float
        Seconds the shown genre stays up at least before another genre may replace it.
    silence_dbfs : float
        RMS level in dBFS (see :func:`level_dbfs`) below which audio counts as silence.
    silence_hysteresis_db : float
        Once silent, the level must rise this many dB above ``silence_dbfs`` to count
        as sound again.
    silence_hold_s : float
        Seconds the level must stay below ``silence_dbfs`` before ``silence`` is
        published (a quiet passage or a pause between songs does not flap).
    unknown_threshold : float
        Averaged probability (0--1, at most ``enter_threshold``) that some genre must
        reach for the state not to drift to ``unknown``.
    unknown_after_s : float
        Seconds of low confidence (see the module docstring) before ``unknown``.
    switch_margin : float
        A genre that reaches ``enter_threshold`` also takes over (dwell permitting)
        when its averaged probability beats the shown genre's by this much, even if the
        shown genre is still above ``leave_threshold``: without it a genre the model
        keeps at second place could hold on for ever.
    max_gap_hops : float
        A gap in ``t_s`` longer than this many hops (the stream stopped, e.g. a
        microphone was unplugged) clears the averaging history.
    segment_windows : float
        Time constant, in windows, of the *segment average*: an exponential average of
        every window since the shown genre took over. It learns how the model behaves
        on the music playing now, its usual confusions included (a rock song the model
        calls "pop" a fifth of the time).
    surprise_margin : float
        A new genre takes over quickly (``min_dwell_s`` permitting) only when its
        averaged probability exceeds its segment average by this much: the music
        changed, rather than the model's usual confusion on this song. Otherwise it
        takes over only once the segment average itself prefers it (slowly).
        1.0 disables the quick path; 0.0 makes every convincing genre quick.
    """

    # Every knob's sane range sits next to it (see :func:`knob`): the config file, the
    # environment and a bundle manifest are all checked against these, and nothing
    # outside them can reach the smoother (1e20 windows was an OverflowError in deque).
    average_windows: int = knob(4, 1, MAX_WINDOWS)
    enter_threshold: float = knob(0.4, 0.0, 1.0)
    leave_threshold: float = knob(0.25, 0.0, 1.0)
    min_dwell_s: float = knob(3.0, 0.0, MAX_SECONDS, " seconds")
    silence_dbfs: float = knob(-60.0, LEVEL_FLOOR_DBFS, 0.0, " dBFS")
    silence_hysteresis_db: float = knob(6.0, 0.0, -LEVEL_FLOOR_DBFS, " dB")
    silence_hold_s: float = knob(2.0, 0.0, MAX_SECONDS, " seconds")
    unknown_threshold: float = knob(0.35, 0.0, 1.0)
    unknown_after_s: float = knob(10.0, 0.0, MAX_SECONDS, " seconds")
    switch_margin: float = knob(0.2, 0.0, 1.0)
    min_top_windows: int = knob(2, 1, MAX_WINDOWS)
    max_gap_hops: float = knob(3.0, 1.0, MAX_WINDOWS, " hops")
    segment_windows: float = knob(80.0, 1.0, MAX_SEGMENT_WINDOWS)
    surprise_margin: float = knob(0.6, 0.0, 1.0)

    def __post_init__(self) -> None:
        problems = self.field_problems(dataclasses.asdict(self))
        if not problems:
            if self.leave_threshold > self.enter_threshold:
                problems.append(
                    f"leave_threshold ({self.leave_threshold}) must be <= "
                    f"enter_threshold ({self.enter_threshold})"
                )
            if self.min_top_windows > self.average_windows:
                problems.append(
                    f"min_top_windows ({self.min_top_windows}) must be <= "
                    f"average_windows ({self.average_windows})"
                )
            if self.unknown_threshold > self.enter_threshold:
                problems.append(
                    f"unknown_threshold ({self.unknown_threshold}) must be <= "
                    f"enter_threshold ({self.enter_threshold})"
                )
        if problems:
            raise GenreEdgeError(
                f"invalid smoothing parameters: {'; '.join(problems)}: "
                "fix the [smoothing] settings"
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_problems(cls, values: dict[str, Any]) -> list[str]:
        """Per-field problems (type and range) of some or all fields, without cross-checks.

        Used by :mod:`firmware_py.config` to check partial overrides before the
        bundle's defaults are known.
        """
        problems = []
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, value in values.items():
            spec = fields.get(name)
            if spec is None:
                problems.append(f"unknown parameter {brief(name)}")
                continue
            want_int = spec.type in ("int", int)  # annotations are strings here
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                kind = "an integer" if want_int else "a number"
                problems.append(f"{name} must be {kind}, got {type(value).__name__}")
                continue
            out_of_range = range_problem(spec, value)
            if out_of_range:
                problems.append(f"{name} {out_of_range}")
            elif want_int and not float(value).is_integer():
                problems.append(f"{name} must be an integer, got {value!r}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SmoothingParams:
        """Parameters from a dict (bundle manifest, config); missing keys take defaults.

        Raises
        ------
        GenreEdgeError
            One line naming an unknown key (and the valid ones) or a bad value.
        """
        data = dict(data or {})
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GenreEdgeError(
                f"unknown smoothing parameter(s) {', '.join(unknown)}: "
                f"valid ones are {', '.join(known)}"
            )
        problems = cls.field_problems(data)
        if problems:
            raise GenreEdgeError(
                f"invalid smoothing parameters: {'; '.join(problems)}: "
                "fix the [smoothing] settings"
            )
        for name in ("average_windows", "min_top_windows"):
            if name in data:
                data[name] = int(data[name])
        return cls(**data)

    def replace(self, **changes: Any) -> SmoothingParams:
        return SmoothingParams.from_dict({**self.to_dict(), **changes})
