"""The ``[source]`` settings: declared here, by the sources, and composed by the configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..bounds import knob, setting


def device_spec(device: str | int | None) -> str | int | None:
    """``--device`` as given: None (default input), an index, or a part of a name."""
    if isinstance(device, str):
        device = device.strip()
        if device == "":
            return None
        if device.isdecimal():  # an index; isdigit() is also true for '²', which int() refuses
            return int(device)
    return device


@dataclass
class SourceConfig:
    """Where audio comes from: a microphone (default) or a file (``input``). Every key's
    meaning is the ``help`` on its field."""

    SECTION: ClassVar[str] = "source"
    FLAG_GROUP: ClassVar[str] = "audio source"

    device: str | int | None = setting(
        None, example="USB", flag="--device", check=device_spec,
        help="Microphone: PortAudio device index (an integer) or a case-insensitive part of "
             "its name. Default: unset = the system's default input. `python3 -m "
             "sounddevice` (or `genre-edge listen --list-devices`) lists them.")
    input: str | None = setting(
        None, example="/var/lib/genre-edge/test.flac", flag="--input", metavar="FILE",
        help="Play an audio file instead of listening (wav, flac, ogg/opus, mp3). Default: "
             "unset. (The service cannot see /home: put the file under /var/lib/genre-edge.)")
    realtime: bool = setting(
        True, flag="--realtime/--fast",
        help="Play `input` at real time (true) or as fast as possible (false, for tests).")
    loop: bool = setting(False, flag="--loop", help="Play `input` over and over.")
    # Ranges (see firmware_py.bounds): a minute of queued audio is ~11 MB at 48 kHz stereo.
    block_s: float = knob(0.1, 0.001, 10.0, " seconds",
                          help="Length of the audio blocks handed to the device loop, seconds.")
    device_rate: int | None = knob(
        None, 1000, 768000, " Hz", example=48000, flag="--device-rate",
        help="Force the microphone's sample rate in Hz. Default: unset = try the model's "
             "rate, the device's default rate, then 48000, 44100, 32000, 22050.")
    retry_s: float = knob(2.0, 0.01, 3600.0, " seconds",
                          help="Seconds between attempts to reopen a microphone that was "
                               "unplugged.")
    stall_timeout_s: float = knob(2.0, 0.01, 3600.0, " seconds",
                                  help="Seconds without audio after which the microphone "
                                       "counts as gone.")
    max_queue_s: float = knob(2.0, 0.01, 60.0, " seconds",
                              help="Seconds of microphone audio buffered when the device loop "
                                   "falls behind; beyond that blocks are dropped and counted.")
