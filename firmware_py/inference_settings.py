"""The ``[inference]`` settings (:class:`InferenceConfig`) and the inference hop's bounds:
declared here, without numpy, so that the configuration and ``--help`` load no numerics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .bounds import knob, setting

#: Longest inference hop a bundle or the configuration may ask for, seconds.
MAX_HOP_S = 60.0
#: The Coral Edge TPU's attachments (``inference.edgetpu``).
EDGETPU_KINDS = ("usb", "pci")


@dataclass
class InferenceConfig:
    """How the model runs (the ``[inference]`` section); every key's meaning is the
    ``help`` on its field."""

    SECTION: ClassVar[str] = "inference"
    FLAG_GROUP: ClassVar[str] = "inference"

    threads: int = knob(1, 1, 64, flag="--threads",
                        help="Interpreter threads. 1 leaves cores free for audio and MQTT on a "
                             "Raspberry Pi.")
    edgetpu: str | None = setting(
        None, example="usb", flag="--edgetpu", choices=EDGETPU_KINDS,
        help='Coral Edge TPU: "usb" or "pci". Falls back to the CPU when no TPU is found. '
             "Default: unset = CPU.")
    # The inference hop (the front-end's 10 ms frame hop is the bundle's frame_hop_s).
    hop_s: float | None = knob(None, 0.01, MAX_HOP_S, " seconds", example=1.0, flag="--hop",
                               metavar="SECONDS",
                               help="Seconds between inferences (the inference hop). Default: "
                                    "unset = the bundle's value (about 1 s).")
