"""The architecture presets and the teachers a run can name, declared without TensorFlow:
``genre-edge train --help`` lists them, and :mod:`training.models` builds from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """An architecture with the training choices its source made.

    Attributes
    ----------
    builder : str
        The function of :mod:`training.models` that builds it,
        ``builder(window_frames, n_mels, n_labels, **options) -> keras.Model``.
    window_frames : int
        Default input length in front-end frames (100 per second).
    optimizer : str
        ``adamw``, ``adam`` or ``rmsprop``.
    learning_rate : float
        Peak learning rate of the schedule.
    source : str
        Where the design comes from.
    options : dict
        Keyword arguments of ``builder`` (the width of the wider edge models).
    """

    builder: str
    window_frames: int
    optimizer: str
    learning_rate: float
    source: str
    options: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "edge": Preset("build_edge", 300, "adamw", 3e-3, "genre-edge (this project)"),
    "edge-l": Preset("build_edge", 300, "adamw", 3e-3, "genre-edge, 1.6x wider (this project)",
                     {"width": 64}),
    "edge-xl": Preset("build_edge", 300, "adamw", 3e-3, "genre-edge, 2.4x wider (this project)",
                      {"width": 96}),
    "dong2018": Preset("build_dong2018", 300, "adam", 1e-3, "Dong, CCN 2018, arXiv:1802.09697"),
    "hku": Preset("build_hku", 200, "adam", 1e-3, "HKU student project, 3 conv layers, ~2 s"),
    "despois": Preset("build_despois", 128, "adam", 1e-3,
                      "Despois 2016, 'Finding the genre of a song with Deep Learning'"),
    "pelchat2019": Preset("build_pelchat2019", 256, "rmsprop", 1e-4,
                          "Pelchat and Gelowitz, CCECE 2019 / CJECE 2020"),
}

#: Teacher name -> musicnn checkpoint folder (:mod:`training.teacher`).
TEACHERS: dict[str, str] = {"musicnn-msd": "MSD_musicnn"}
