"""The smoother's settings (:class:`SmoothingParams`: the ``[smoothing]`` section and a
bundle's smoothing defaults), each knob with its range; :mod:`firmware_py.smoothing`
re-exports every name here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

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
    """Every knob of the smoother, with defaults for hop 1 s and a 3 s model window; each
    knob's meaning and range are on its field (``help``, :func:`~firmware_py.bounds.knob`).
    Every one is applied live on SIGHUP. The config file, the environment and a bundle
    manifest are all checked against these ranges, and nothing outside them can reach the
    smoother (1e20 windows was an OverflowError in deque).
    """

    SECTION: ClassVar[str] = "smoothing"
    SECTION_HELP: ClassVar[str] = (
        "How per-window probabilities become the published genre. Defaults come from the "
        "model bundle; the values shown are genre-edge's own defaults (for a 1 s hop, 3 s "
        "window).")

    average_windows: int = knob(4, 1, MAX_WINDOWS, live=True,
                                help="Number of most recent windows whose probabilities are "
                                     "averaged.")
    enter_threshold: float = knob(0.4, 0.0, 1.0, live=True,
                                  help="Averaged probability (0-1) a new genre needs to take "
                                       "over.")
    leave_threshold: float = knob(0.25, 0.0, 1.0, live=True,
                                  help="The current genre is kept while its averaged "
                                       "probability stays at or above this (at most "
                                       "enter_threshold): the hysteresis.")
    min_dwell_s: float = knob(3.0, 0.0, MAX_SECONDS, " seconds", live=True,
                              help="Seconds a genre stays published at least before another "
                                   "genre may replace it.")
    silence_dbfs: float = knob(-60.0, LEVEL_FLOOR_DBFS, 0.0, " dBFS", live=True,
                               help="RMS level in dBFS (full-scale square wave = 0 dBFS) below "
                                    "which audio is silence.")
    silence_hysteresis_db: float = knob(6.0, 0.0, -LEVEL_FLOOR_DBFS, " dB", live=True,
                                        help="Once silent, the level must rise this many dB "
                                             "above silence_dbfs to count as sound.")
    silence_hold_s: float = knob(2.0, 0.0, MAX_SECONDS, " seconds", live=True,
                                 help='Seconds below silence_dbfs before "silence" is '
                                      "published (a pause between songs does not flap).")
    unknown_threshold: float = knob(0.35, 0.0, 1.0, live=True,
                                    help='"unknown" is published when no genre\'s averaged '
                                         "probability reaches this (at most enter_threshold) "
                                         "for unknown_after_s.")
    unknown_after_s: float = knob(10.0, 0.0, MAX_SECONDS, " seconds", live=True,
                                  help="Seconds of low confidence before \"unknown\".")
    switch_margin: float = knob(0.2, 0.0, 1.0, live=True,
                                help="A new genre also takes over when it beats the current "
                                     "one by this much, even while the current one is above "
                                     "leave_threshold.")
    min_top_windows: int = knob(2, 1, MAX_WINDOWS, live=True,
                                help="A new genre must be the top class in at least this many "
                                     "of the averaged windows (at most average_windows).")
    max_gap_hops: float = knob(3.0, 1.0, MAX_WINDOWS, " hops", live=True,
                               help="A gap in the audio longer than this many hops (an "
                                    "unplugged microphone) clears the averaging history.")
    segment_windows: float = knob(80.0, 1.0, MAX_SEGMENT_WINDOWS, live=True,
                                  help="Time constant, in windows, of the segment average: how "
                                       "the model behaves on the music playing now (its usual "
                                       "confusions on this song included).")
    surprise_margin: float = knob(0.6, 0.0, 1.0, live=True,
                                  help="A new genre takes over quickly only when its averaged "
                                       "probability exceeds its segment average by this much "
                                       "(the music changed); otherwise only once the segment "
                                       "average prefers it. 1.0 disables the quick path.")

    gap_dip_db: float = knob(0.0, 0.0, -LEVEL_FLOOR_DBFS, " dB", live=True,
                             help="A hop this many dB quieter than the music's running level "
                                  "is a pause between songs: the windows that overlap it are "
                                  "no evidence, and then, for gap_follow_s, a convincing genre "
                                  "takes over without the surprise or segment test. 0 disables.")
    gap_follow_s: float = knob(20.0, 0.0, MAX_SECONDS, " seconds", live=True,
                               help="Seconds after a pause's last window during which the quick "
                                    "path stays open.")

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
