"""Audio sources for the device loop: a microphone or a file, as model-rate mono blocks.

Every source has the same small interface (:class:`Source`)::

    source = MicrophoneSource("usb", sample_rate=16000)   # or FileSource(path, 16000)
    for block in source.blocks():      # float32, mono, at source.sample_rate
        ...
    source.close()                     # from any thread or a signal handler

``close()`` makes iteration end promptly (within ~0.1 s) and is safe to call from a
signal handler: it only sets a flag and puts a token on a ``queue.SimpleQueue`` (whose
``put`` is re-entrant), never taking a lock that the interrupted code might hold. The
microphone stream itself is closed by the iterating code on its way out (or by
``close()`` directly when nothing is iterating).

The microphone is read through ``sounddevice`` (PortAudio): the device is chosen by
index or name substring, opened at a rate it supports (the model rate first, then its
default rate, then 48000/44100/32000/22050 Hz), mixed down to mono and resampled with
:class:`~firmware_py.resample.StreamingResampler`. The PortAudio callback only copies the
block into a bounded queue: it never blocks, and when the device loop falls behind the
newest blocks are dropped and counted. A device that goes away (unplugged: the stream
stops, or no audio arrives for ``stall_timeout_s``) is closed and reopened every
``retry_s`` seconds until it is back; the iterator does not end meanwhile.

Layout: :mod:`.settings` (the ``[source]`` section, :class:`SourceConfig`), :mod:`.base`
(:class:`Source`, :class:`FileSource`), :mod:`.microphone` (:class:`MicrophoneSource` and
the PortAudio helpers); :func:`open_source` picks one for a configuration.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .settings import SourceConfig, device_spec

if TYPE_CHECKING:
    from .base import Source

#: Loaded on first use (PEP 562): the configuration imports this package for
#: ``SourceConfig`` alone, and the sources' modules bring numpy and the resampler.
_LAZY = {
    "FileSource": ".base", "Source": ".base", "FALLBACK_RATES_HZ": ".microphone",
    "MicrophoneSource": ".microphone", "import_sounddevice": ".microphone",
    "list_input_devices": ".microphone",
}

__all__ = [
    "FALLBACK_RATES_HZ", "FileSource", "MicrophoneSource", "Source", "SourceConfig",
    "device_spec", "import_sounddevice", "list_input_devices", "open_source",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_source(config: SourceConfig, sample_rate: int, sd_module: Any = None) -> Source:
    """The source a ``[source]`` configuration describes: the file ``input`` if set,
    else the microphone ``device``."""
    from .base import FileSource
    from .microphone import MicrophoneSource

    if config.input:
        return FileSource(config.input, sample_rate, realtime=config.realtime,
                          block_s=config.block_s, loop=config.loop)
    return MicrophoneSource(
        config.device, sample_rate, config.block_s, device_rate=config.device_rate,
        retry_s=config.retry_s, stall_timeout_s=config.stall_timeout_s,
        max_queue_s=config.max_queue_s, sd_module=sd_module,
    )
