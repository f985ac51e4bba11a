"""Microphones through ``sounddevice`` (PortAudio): see :mod:`firmware_py.sources`."""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import DeviceError
from ..resample import StreamingResampler
from .base import WAKE, Source
from .settings import device_spec

log = logging.getLogger("firmware_py.sources")  # one logger for every source

#: Device rates tried, in this order, after the model rate and the device's default.
FALLBACK_RATES_HZ = (48000, 44100, 32000, 22050)
_DROP_WARNING_INTERVAL_S = 10.0


def import_sounddevice() -> ModuleType:
    """``sounddevice``, or a one-line :class:`DeviceError` saying what to install."""
    try:
        import sounddevice
    except OSError as exc:  # the module is there, libportaudio is not
        raise DeviceError(
            f"PortAudio is not installed ({' '.join(str(exc).split())}): "
            "run 'sudo apt install libportaudio2', or play a file with --input FILE"
        ) from None
    except ImportError:
        raise DeviceError(
            "the sounddevice package is not installed: run 'pip install sounddevice' "
            "(and 'sudo apt install libportaudio2'), or play a file with --input FILE"
        ) from None
    return sounddevice


def list_input_devices(sd_module: Any = None) -> list[dict[str, Any]]:
    """Input devices PortAudio sees: dicts with ``index``, ``name``,
    ``max_input_channels``, ``default_samplerate`` (Hz)."""
    sd = sd_module if sd_module is not None else import_sounddevice()
    try:
        devices = list(sd.query_devices())
    except Exception as exc:  # PortAudioError and friends: the message is the useful part
        raise DeviceError(
            f"cannot list audio devices ({' '.join(str(exc).split())}): check that the "
            "sound card is connected, or play a file with --input FILE"
        ) from None
    out = []
    for i, dev in enumerate(devices):
        info = dict(dev)
        info.setdefault("index", i)
        if int(info.get("max_input_channels", 0)) > 0:
            out.append(info)
    return out


def _listing(inputs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d['index']} {d['name']!r}" for d in inputs)


class MicrophoneSource(Source):
    """A live input device through ``sounddevice``, as model-rate mono blocks.

    Parameters
    ----------
    device : str or int or None
        PortAudio device index, or a case-insensitive substring of its name (an exact
        name wins over a substring; the first of several matches is used); None is the
        system's default input. A string of digits is an index.
    sample_rate : int
        Model rate in Hz.
    block_s : float
        Length of the blocks PortAudio delivers, seconds.
    device_rate : int, optional
        Force this device rate in Hz instead of negotiating one.
    retry_s : float
        Seconds between attempts to reopen a device that went away.
    stall_timeout_s : float
        Seconds without audio after which the device counts as gone.
    max_queue_s : float
        Seconds of audio the callback may queue before blocks are dropped.
    sd_module : module, optional
        A ``sounddevice``-like module (tests pass a fake one: ``query_devices``,
        ``check_input_settings``, ``InputStream``); imported lazily when None.

    Raises
    ------
    DeviceError
        One line: PortAudio missing, no input devices at all, no device matching
        ``device`` (listing the available ones), or no usable sample rate.

    Attributes
    ----------
    device_index, device_name, device_rate, channels
        The device in use and the negotiated rate (Hz) and channel count.
    dropped_blocks : int
        Blocks dropped because the device loop fell behind.
    status_flags : int
        Callbacks that carried a PortAudio status flag (e.g. input overflow).
    reconnects : int
        Times the device came back after going away.
    connected : bool
        A stream is open and delivering (False while waiting for a device to return).
    """

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int = 16000,
        block_s: float = 0.1,
        *,
        device_rate: int | None = None,
        retry_s: float = 2.0,
        stall_timeout_s: float = 2.0,
        max_queue_s: float = 2.0,
        sd_module: Any = None,
    ) -> None:
        super().__init__(sample_rate)
        for name, value in (("block_s", block_s), ("retry_s", retry_s),
                            ("stall_timeout_s", stall_timeout_s), ("max_queue_s", max_queue_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
        self._sd = sd_module if sd_module is not None else import_sounddevice()
        self.device_spec = device_spec(device)
        self.block_s = float(block_s)
        self.forced_rate = int(device_rate) if device_rate else None
        self.retry_s = float(retry_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.max_queue_blocks = max(2, math.ceil(max_queue_s / block_s))
        self._poll_s = min(0.1, self.stall_timeout_s / 2)
        self.dropped_blocks = 0
        self.status_flags = 0
        self.last_status = ""
        self.reconnects = 0
        self.connected = False
        self._stream: Any = None
        self._generation = 0
        self._resampler: StreamingResampler | None = None
        self._last_data_s = 0.0
        self._warned_drops = 0
        self._warned_at_s = -math.inf
        self._reopen_reasons: set[str] = set()  # why re-opening failed, logged once each
        self._opened_as: tuple[int, int, int] | None = None  # (index, rate, channels) logged
        self._choose(list_input_devices(self._sd), first=True)

    # -- device and rate -------------------------------------------------------------------
    def _default_input(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            info = dict(self._sd.query_devices(kind="input"))
        except Exception:  # no default input (PortAudio says device -1): take the first
            return inputs[0]
        for dev in inputs:
            if dev["index"] == info.get("index") or dev["name"] == info.get("name"):
                return dev
        return inputs[0]

    def _find(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        fix = "use --device NAME|INDEX"
        if not inputs:
            wanted = "" if self.device_spec is None else f" (wanted --device {self.device_spec!r})"
            raise DeviceError(
                f"no audio input device found{wanted}: PortAudio lists none: plug in a "
                "microphone, or play a file with --input FILE"
            )
        spec = self.device_spec
        if spec is None:
            return self._default_input(inputs)
        if isinstance(spec, int):
            for dev in inputs:
                if dev["index"] == spec:
                    return dev
            raise DeviceError(
                f"no input device with index {spec}: available: {_listing(inputs)}; {fix}"
            )
        wanted = spec.lower()
        matches = [d for d in inputs if wanted in str(d["name"]).lower()]
        if not matches:
            raise DeviceError(
                f"no input device matching {spec!r}: available: {_listing(inputs)}; {fix}"
            )
        exact = [d for d in matches if str(d["name"]).lower() == wanted]
        chosen = (exact or matches)[0]
        if len(matches) > 1 and not exact:
            log.info("%d input devices match %r (%s): using %d %r", len(matches), spec,
                     _listing(matches), chosen["index"], chosen["name"])
        return chosen

    def _negotiate(self, dev: dict[str, Any]) -> tuple[int, int]:
        """First (rate, channels) the device accepts: mono if it can, else its own count."""
        if self.forced_rate:
            rates = [self.forced_rate]
        else:
            default = int(round(float(dev.get("default_samplerate") or 0)))
            rates = [self.sample_rate, default, *FALLBACK_RATES_HZ]
        rates = list(dict.fromkeys(r for r in rates if r > 0))
        max_channels = int(dev["max_input_channels"])
        channel_options = list(dict.fromkeys((1, max_channels)))
        last_error = ""
        for rate in rates:
            for channels in channel_options:
                try:
                    self._sd.check_input_settings(
                        device=dev["index"], channels=channels, dtype="float32", samplerate=rate
                    )
                except Exception as exc:  # PortAudioError / ValueError: try the next one
                    last_error = " ".join(str(exc).split())
                    continue
                return rate, channels
        fix = ("set source.device_rate to a rate it supports" if not self.forced_rate
               else "remove source.device_rate or choose a rate it supports")
        raise DeviceError(
            f"input device {dev['index']} {dev['name']!r} accepts none of the sample rates "
            f"{', '.join(map(str, rates))} Hz ({last_error}): {fix}, or choose another --device"
        )

    def _choose(self, inputs: list[dict[str, Any]], first: bool) -> None:
        if not first and hasattr(self, "device_name"):
            # Indices move when a device is re-plugged: look for the same name first.
            same = [d for d in inputs if d["name"] == self.device_name]
            if same:
                dev = same[0]
            elif isinstance(self.device_spec, int):
                raise DeviceError(f"input device {self.device_name!r} has not come back yet")
            else:
                dev = self._find(inputs)
        else:
            dev = self._find(inputs)
        rate, channels = self._negotiate(dev)
        self.device_index = int(dev["index"])
        self.device_name = str(dev["name"])
        self.device_rate = rate
        self.channels = channels
        if self._opened_as != (self.device_index, rate, channels):  # not on every retry
            self._opened_as = (self.device_index, rate, channels)
            log.info(
                "microphone %d %r: %d Hz, %d channel(s), mixed to mono and resampled to %d Hz",
                self.device_index, self.device_name, rate, channels, self.sample_rate,
            )

    def describe(self) -> str:
        state = "" if self.connected or not self.reconnects else ", reconnecting"
        return (f"microphone {self.device_index} {self.device_name!r} "
                f"({self.device_rate} Hz x {self.channels}{state})")

    # -- stream ----------------------------------------------------------------------------
    def _callback_for(self, generation: int) -> Any:
        put = self._queue.put
        qsize = self._queue.qsize
        limit = self.max_queue_blocks

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            # PortAudio's thread: copy and go. No locks, no logging, no allocation beyond
            # the copy; a full queue drops the block (counted, warned about elsewhere).
            if status:
                self.status_flags += 1
                self.last_status = str(status)
            if qsize() >= limit:
                self.dropped_blocks += 1
                return
            put((generation, indata.copy()))

        return callback

    def _open_stream(self) -> None:
        self._generation += 1
        stream = self._sd.InputStream(
            device=self.device_index,
            samplerate=self.device_rate,
            channels=self.channels,
            dtype="float32",
            blocksize=max(1, round(self.block_s * self.device_rate)),
            callback=self._callback_for(self._generation),
        )
        try:
            stream.start()
        except Exception:
            _close_quietly(stream)
            raise
        self._stream = stream
        self._resampler = StreamingResampler(self.device_rate, self.sample_rate)
        self._last_data_s = time.monotonic()
        self.connected = True

    def _release(self) -> None:
        stream, self._stream = self._stream, None
        self.connected = False
        if stream is not None:
            _close_quietly(stream)

    def _healthy(self) -> bool:
        """The stream is still running and audio arrived within ``stall_timeout_s``."""
        if self._stream is None:
            return False
        active = getattr(self._stream, "active", True)
        silent_s = time.monotonic() - self._last_data_s
        if active and silent_s <= self.stall_timeout_s:
            return True
        reason = "the stream stopped" if not active else f"no audio for {silent_s:.1f} s"
        log.warning(
            "microphone %r lost (%s): closing it and retrying every %.1f s",
            self.device_name, reason, self.retry_s,
        )
        self._release()
        return False

    def _reopen(self) -> bool:
        """One attempt to bring the device back; True when a stream runs again."""
        # PortAudio enumerates devices once, at initialisation: re-initialise it so that a
        # re-plugged device is seen (sounddevice's private helpers; absent in fakes).
        terminate = getattr(self._sd, "_terminate", None)
        initialize = getattr(self._sd, "_initialize", None)
        if callable(terminate) and callable(initialize):
            try:
                terminate()
                initialize()
            except Exception as exc:
                log.debug("re-initialising PortAudio failed: %s", exc)
        try:
            self._choose(list_input_devices(self._sd), first=False)
        except Exception as exc:  # not listed (still unplugged) or not usable: not back yet
            log.debug("microphone not back yet: %s", " ".join(str(exc).split()))
            return False
        try:
            self._open_stream()
        except Exception as exc:
            # Listed again but it will not open (held by another program, ...): say why,
            # once per reason, or the journal only shows "retrying" for ever.
            reason = " ".join(str(exc).split())
            if reason not in self._reopen_reasons:
                self._reopen_reasons.add(reason)
                log.warning("microphone %r is back but cannot be opened (%s); retrying",
                            self.device_name, reason)
            return False
        self._reopen_reasons.clear()
        self.reconnects += 1
        log.warning("microphone %r is back: %d Hz, %d channel(s)",
                    self.device_name, self.device_rate, self.channels)
        return True

    def _warn_drops(self) -> None:
        if self.dropped_blocks <= self._warned_drops:
            return
        now = time.monotonic()
        if now - self._warned_at_s < _DROP_WARNING_INTERVAL_S:
            return
        log.warning(
            "dropped %d microphone block(s) (%.1f s of audio in all): the device loop is "
            "too slow; PortAudio status flags: %d (last: %s)",
            self.dropped_blocks, self.dropped_blocks * self.block_s, self.status_flags,
            self.last_status or "none",
        )
        self._warned_drops = self.dropped_blocks
        self._warned_at_s = now

    def _mono(self, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 2:
            return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
        return data.reshape(-1)

    def blocks(self) -> Iterator[np.ndarray]:
        """Model-rate mono blocks; survives the device going away; ends after close().

        Raises
        ------
        DeviceError
            When the stream cannot be opened the first time (one line).
        """
        if self._closed:
            return
        self._running = True
        try:
            if self._stream is None:
                try:
                    self._open_stream()
                except DeviceError:
                    raise
                except Exception as exc:
                    raise DeviceError(
                        f"cannot open input device {self.device_index} {self.device_name!r} at "
                        f"{self.device_rate} Hz ({' '.join(str(exc).split())}): check that "
                        "no other program holds it, or choose another --device"
                    ) from None
            while not self._closed:
                if self._stream is None:
                    if not self._reopen() and not self._sleep(self.retry_s):
                        break
                    continue
                try:
                    item = self._queue.get(timeout=self._poll_s)
                except queue.Empty:
                    item = WAKE
                if self._closed:
                    break
                if item is WAKE:
                    self._healthy()
                    continue
                generation, data = item
                if generation != self._generation or self._resampler is None:
                    continue  # queued by a stream that has been closed since
                self._last_data_s = time.monotonic()
                out = self._resampler.push(self._mono(data))
                self._warn_drops()
                if out.shape[0]:
                    self._running = False
                    yield out
                    self._running = True
        finally:
            self._running = False
            self._release()


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception as exc:  # an unplugged device may fail to close: nothing to do
        log.debug("closing the audio stream: %s", exc)
