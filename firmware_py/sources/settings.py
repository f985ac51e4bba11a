"""The ``[source]`` settings: declared here, by the sources, and composed by the configuration."""

from __future__ import annotations

from dataclasses import dataclass

from ..bounds import knob


@dataclass
class SourceConfig:
    """Where audio comes from: a microphone (default) or a file (``input``).

    Attributes
    ----------
    device : str or int or None
        Microphone: PortAudio device index or case-insensitive name substring; None is
        the system default input. A string of digits is an index.
    input : str or None
        Audio file to play instead of a microphone (wav, flac, ogg/opus, mp3).
    realtime : bool
        Play ``input`` at real time (True) or as fast as the device loop takes it.
    loop : bool
        Play ``input`` over and over (demos, long-run tests).
    block_s : float
        Audio block length in seconds handed to the device loop.
    device_rate : int or None
        Force this microphone sample rate in Hz; None negotiates one.
    retry_s : float
        Seconds between attempts to reopen a microphone that went away.
    stall_timeout_s : float
        Seconds without audio after which a microphone counts as gone.
    max_queue_s : float
        Seconds of microphone audio buffered before blocks are dropped (and counted).
    """

    device: str | int | None = None
    input: str | None = None
    realtime: bool = True
    loop: bool = False
    # Ranges (see firmware_py.bounds): a minute of queued audio is ~11 MB at 48 kHz stereo.
    block_s: float = knob(0.1, 0.001, 10.0, " seconds")
    device_rate: int | None = knob(None, 1000, 768000, " Hz")
    retry_s: float = knob(2.0, 0.01, 3600.0, " seconds")
    stall_timeout_s: float = knob(2.0, 0.01, 3600.0, " seconds")
    max_queue_s: float = knob(2.0, 0.01, 60.0, " seconds")
