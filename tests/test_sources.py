"""Audio sources: files (fast and real time) and microphones through a fake sounddevice.

Microphones are exercised with :class:`FakeSoundDevice` (a real, virtual device is in
``tests/test_virtual_audio.py``; the fake does what no device does on demand),
a stand-in for the ``sounddevice`` module: it lists devices, accepts or rejects rates
like PortAudio's ``check_input_settings``, and its input streams run a thread that calls
the source's real PortAudio callback with real audio, in one reused buffer (as PortAudio
does, so a source that keeps the buffer without copying it gets corrupted audio).
Devices can be unplugged (the stream stops, or stalls) and plugged back in.
The fake is importable by other tests: ``from tests.test_sources import FakeSoundDevice``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from firmware_py.audio import load_audio, resample
from firmware_py.errors import AudioError, DeviceError
from firmware_py.features import logmel
from firmware_py.sources import (
    FileSource,
    MicrophoneSource,
    SourceConfig,
    import_sounddevice,
    list_input_devices,
    open_source,
)
from tests.paths import clip

RATE = 16000


# -- the fake sounddevice module ----------------------------------------------------------
class FakePortAudioError(Exception):
    pass


@dataclass
class FakeDevice:
    """One PortAudio device. ``audio`` is ``(frames, channels)`` at ``rates[0]``, looped."""

    name: str
    index: int
    max_input_channels: int = 2
    default_samplerate: float = 48000.0
    rates: tuple[int, ...] = (48000,)
    channels: tuple[int, ...] = (2,)
    audio: np.ndarray | None = None
    present: bool = True
    unplug_mode: str = "stop"  # "stop": the stream goes inactive; "stall": no more callbacks

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "index": self.index, "hostapi": 0,
            "max_input_channels": self.max_input_channels, "max_output_channels": 0,
            "default_samplerate": self.default_samplerate,
        }


class FakeInputStream:
    def __init__(self, sd: FakeSoundDevice, device: FakeDevice, samplerate: float,
                 channels: int, blocksize: int, callback: Callable, speed: float) -> None:
        self.sd, self.device = sd, device
        self.samplerate, self.channels, self.blocksize = int(samplerate), channels, blocksize
        self.callback = callback
        self.speed = speed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = False
        self.closed = False
        self.frames_delivered = 0

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        self._active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        dev = self.device
        audio = dev.audio if dev.audio is not None else np.zeros((self.samplerate, self.channels))
        audio = np.asarray(audio, dtype=np.float32)
        buffer = np.empty((self.blocksize, self.channels), dtype=np.float32)  # reused
        pos = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            if not dev.present:
                if dev.unplug_mode == "stop":
                    self._active = False
                    return
                time.sleep(0.005)  # stalled: alive but silent
                continue
            idx = (pos + np.arange(self.blocksize)) % audio.shape[0]
            buffer[:] = audio[idx]
            pos += self.blocksize
            status = self.sd.next_status
            self.sd.next_status = ""
            self.callback(buffer, self.blocksize, None, status)
            buffer[:] = np.nan  # PortAudio reuses the buffer: copies made late see garbage
            self.frames_delivered += self.blocksize
            next_due += self.blocksize / self.samplerate / self.speed
            delay = next_due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._active = False

    def close(self) -> None:
        self.stop()
        self.closed = True
        self.sd.open_streams.discard(self)


@dataclass
class FakeSoundDevice:
    """The parts of the ``sounddevice`` module that ``MicrophoneSource`` uses."""

    devices: list[FakeDevice]
    default_input: int | None = None  # index; None: PortAudio has no default input
    speed: float = 1.0  # callbacks run this many times faster than real time
    fail_open: bool = False
    next_status: str = ""
    open_streams: set = field(default_factory=set)
    streams: list = field(default_factory=list)
    reinitialisations: int = 0
    PortAudioError: type = FakePortAudioError

    def _present(self) -> list[FakeDevice]:
        return sorted((d for d in self.devices if d.present), key=lambda d: d.index)

    def _get(self, index: int) -> FakeDevice:
        for dev in self._present():
            if dev.index == index:
                return dev
        raise FakePortAudioError(f"Error querying device {index}")

    def query_devices(self, device: int | None = None, kind: str | None = None) -> Any:
        if kind == "input":
            if self.default_input is None:
                raise FakePortAudioError("Error querying device -1")
            return self._get(self.default_input).info()
        if device is not None:
            return self._get(device).info()
        return [d.info() for d in self._present()]

    def check_input_settings(self, device: int | None = None, channels: int | None = None,
                             dtype: str | None = None, samplerate: float | None = None) -> None:
        dev = self._get(device)
        if channels not in dev.channels:
            raise FakePortAudioError("Invalid number of channels [PaErrorCode -9998]")
        if int(samplerate) not in dev.rates:
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, device: int, samplerate: float, channels: int, dtype: str,  # noqa: N802
                    blocksize: int, callback: Callable, **_: Any) -> FakeInputStream:
        dev = self._get(device)
        self.check_input_settings(device, channels, dtype, samplerate)
        if self.fail_open:
            raise FakePortAudioError("Device unavailable [PaErrorCode -9985]")
        stream = FakeInputStream(self, dev, samplerate, channels, blocksize, callback, self.speed)
        self.open_streams.add(stream)
        self.streams.append(stream)
        return stream

    # sounddevice's private re-initialisation (re-enumerates devices after a re-plug)
    def _terminate(self) -> None:
        pass

    def _initialize(self) -> None:
        self.reinitialisations += 1


def two_mics(**kwargs: Any) -> FakeSoundDevice:
    return FakeSoundDevice(
        devices=[
            FakeDevice("Built-in Mic", 0, max_input_channels=1, rates=(44100,), channels=(1,),
                       default_samplerate=44100.0),
            FakeDevice("HDMI Output", 1, max_input_channels=0),
            FakeDevice("USB Audio Device: - (hw:2,0)", 2),
        ],
        default_input=0,
        **kwargs,
    )


def take(source: Any, seconds: float, timeout_s: float = 20.0) -> np.ndarray:
    """At least ``seconds`` of audio from a source (then stop iterating)."""
    got, n = [], 0
    deadline = time.monotonic() + timeout_s
    for block in source.blocks():
        assert block.dtype == np.float32 and block.ndim == 1
        got.append(block)
        n += block.shape[0]
        if n >= seconds * source.sample_rate:
            break
        assert time.monotonic() < deadline, "source too slow"
    return np.concatenate(got) if got else np.zeros(0, np.float32)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- files ----------------------------------------------------------------------------------
@pytest.fixture
def stereo_44k(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * 44100)) / 44100
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)
    right = 0.2 * np.sin(2 * np.pi * 660 * t)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    return path


def test_file_fast_yields_the_whole_file_at_the_model_rate(stereo_44k: Path) -> None:
    src = FileSource(stereo_44k, RATE, realtime=False, block_s=0.1)
    blocks = list(src.blocks())
    expected = load_audio(stereo_44k, RATE)
    assert sum(b.shape[0] for b in blocks) == expected.shape[0] == round(2.5 * RATE)
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    assert {b.shape[0] for b in blocks[:-1]} == {1600}
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
    # Mono mix of the two channels, resampled: the 660 Hz tone is in it, attenuated by half.
    data, rate = soundfile.read(stereo_44k, dtype="float32")
    np.testing.assert_allclose(
        np.concatenate(blocks), resample(data.mean(axis=1), rate, RATE), atol=1e-6
    )


def test_file_realtime_is_paced_to_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "one_second.wav"
    soundfile.write(path, 0.1 * np.ones(RATE, dtype=np.float32), RATE)
    start = time.monotonic()
    blocks = list(FileSource(path, RATE, realtime=True, block_s=0.05).blocks())
    elapsed_s = time.monotonic() - start
    assert sum(b.shape[0] for b in blocks) == RATE
    assert elapsed_s >= 0.8, f"1 s of audio played in {elapsed_s:.2f} s"


def test_file_close_ends_iteration_promptly(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(30 * RATE, dtype=np.float32), RATE)
    src = FileSource(path, RATE, realtime=True)
    timer = threading.Timer(0.3, src.close)
    start = time.monotonic()
    timer.start()
    n = sum(b.shape[0] for b in src.blocks())
    assert time.monotonic() - start < 5.0  # not the 30 s of the file
    assert 0 < n < 10 * RATE
    assert list(src.blocks()) == []  # closed stays closed


def test_file_loop_repeats_until_closed(stereo_44k: Path) -> None:
    src = FileSource(stereo_44k, RATE, realtime=False, loop=True)
    out = take(src, 6.0)  # the file is 2.5 s
    src.close()
    once = load_audio(stereo_44k, RATE)
    np.testing.assert_array_equal(out[: 2 * once.shape[0]], np.concatenate([once, once]))


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found") as err:
        FileSource(tmp_path / "missing.wav", RATE)
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(AudioError, match="empty"):
        FileSource(empty, RATE)


# -- microphone: selection and negotiation -------------------------------------------------------
def test_select_by_name_substring_case_insensitive() -> None:
    src = MicrophoneSource("usb", RATE, sd_module=two_mics())
    assert (src.device_index, src.device_rate, src.channels) == (2, 48000, 2)
    assert MicrophoneSource("BUILT-IN", RATE, sd_module=two_mics()).device_index == 0


def test_select_by_index_and_digit_string() -> None:
    assert MicrophoneSource(2, RATE, sd_module=two_mics()).device_name.startswith("USB Audio")
    assert MicrophoneSource("0", RATE, sd_module=two_mics()).device_name == "Built-in Mic"


def test_a_non_ascii_digit_device_is_a_name_not_a_traceback() -> None:
    # '²'.isdigit() is True but int('²') raises: it must be matched as a name.
    with pytest.raises(DeviceError) as err:
        MicrophoneSource("²", RATE, sd_module=two_mics())
    assert "no input device matching '²'" in str(err.value) and "\n" not in str(err.value)
    assert MicrophoneSource(" 2 ", RATE, sd_module=two_mics()).device_index == 2


def test_default_device_and_no_default() -> None:
    assert MicrophoneSource(None, RATE, sd_module=two_mics()).device_index == 0
    sd = two_mics()
    sd.default_input = None  # PortAudio without a default input: the first input device
    assert MicrophoneSource(None, RATE, sd_module=sd).device_index == 0


def test_exact_name_beats_substring() -> None:
    sd = FakeSoundDevice([FakeDevice("USB Audio Device 2", 3), FakeDevice("USB Audio", 5)])
    assert MicrophoneSource("usb audio", RATE, sd_module=sd).device_index == 5


def test_missing_device_lists_the_input_devices() -> None:
    with pytest.raises(DeviceError) as err:
        MicrophoneSource("focusrite", RATE, sd_module=two_mics())
    message = str(err.value)
    assert "no input device matching 'focusrite'" in message
    assert "available: 0 'Built-in Mic', 2 'USB Audio Device: - (hw:2,0)'" in message
    assert "HDMI" not in message  # output-only devices are not offered
    assert "--device NAME|INDEX" in message and "\n" not in message
    with pytest.raises(DeviceError, match=r"no input device with index 1: available: 0 "):
        MicrophoneSource(1, RATE, sd_module=two_mics())


def test_no_input_devices_suggests_a_file() -> None:
    sd = FakeSoundDevice([FakeDevice("HDMI", 0, max_input_channels=0)])
    with pytest.raises(DeviceError, match="no audio input device found.*--input FILE"):
        MicrophoneSource(None, RATE, sd_module=sd)


def test_real_sounddevice_here() -> None:
    """On this machine PortAudio is installed but has no devices: a one-line error."""
    try:
        sd = import_sounddevice()
    except DeviceError as exc:  # no libportaudio: that message must say how to install it
        assert "libportaudio2" in str(exc) or "pip install sounddevice" in str(exc)
        return
    if list_input_devices(sd):
        pytest.skip("this machine has a real input device")
    with pytest.raises(DeviceError, match="--input FILE") as err:
        MicrophoneSource(None, RATE)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("rates", "default_hz", "forced", "expected"),
    [
        ((16000, 48000), 48000.0, None, 16000),  # the model rate first
        ((44100, 96000), 96000.0, None, 96000),  # then the device's default
        ((22050, 32000), 96000.0, None, 32000),  # then 48000, 44100, 32000, 22050
        ((44100, 48000), 48000.0, 44100, 44100),  # forced
    ],
)
def test_rate_negotiation(rates: tuple, default_hz: float, forced: int | None,
                          expected: int, caplog: pytest.LogCaptureFixture) -> None:
    sd = FakeSoundDevice([FakeDevice("Mic", 0, rates=rates, default_samplerate=default_hz)], 0)
    with caplog.at_level(logging.INFO, logger="firmware_py.sources"):
        src = MicrophoneSource(None, RATE, device_rate=forced, sd_module=sd)
    assert src.device_rate == expected
    assert f"{expected} Hz" in caplog.text  # the negotiated rate is logged


def test_no_usable_rate_is_a_one_line_error() -> None:
    sd = FakeSoundDevice([FakeDevice("Odd Mic", 0, rates=(11025,), default_samplerate=0)], 0)
    with pytest.raises(DeviceError, match="accepts none of the sample rates") as err:
        MicrophoneSource(None, RATE, sd_module=sd)
    assert "device_rate" in str(err.value) and "\n" not in str(err.value)


def test_mono_preferred_when_the_device_allows_it() -> None:
    sd = FakeSoundDevice([FakeDevice("Mic", 0, channels=(1, 2))], 0)
    assert MicrophoneSource(None, RATE, sd_module=sd).channels == 1


def test_stream_that_cannot_open_is_a_one_line_error() -> None:
    src = MicrophoneSource("usb", RATE, sd_module=two_mics(fail_open=True))
    with pytest.raises(DeviceError, match="cannot open input device 2") as err:
        next(src.blocks())
    assert "\n" not in str(err.value)


# -- microphone: audio ----------------------------------------------------------------------------
def test_microphone_48k_stereo_matches_the_file_log_mel() -> None:
    """A real clip played through the fake 48 kHz stereo device gives the file's features."""
    x = load_audio(clip("rock", 0), RATE)[: 8 * RATE]
    x48 = resample(x, RATE, 48000)
    noise = 0.05 * np.random.default_rng(1).standard_normal(x48.shape).astype(np.float32)
    stereo = np.stack([x48 + noise, x48 - noise], axis=1)  # mono mix == x48 exactly
    sd = FakeSoundDevice([FakeDevice("USB Audio", 2, audio=stereo)], 2, speed=20.0)
    src = MicrophoneSource("usb", RATE, block_s=0.1, max_queue_s=30.0, sd_module=sd)
    assert (src.device_rate, src.channels) == (48000, 2)
    got = take(src, 7.5)
    src.close()
    assert src.dropped_blocks == 0
    n = 7 * RATE
    mic, ref = logmel(got[:n]), logmel(x[:n])
    core = slice(10, -10)  # away from the edges
    bands = slice(0, 60)  # the top bands sit on the resamplers' transition band (~8 kHz)
    diff = np.abs(mic[core, bands] - ref[core, bands])
    assert float(np.median(diff)) < 0.05, float(np.median(diff))
    assert float(np.percentile(diff, 99)) < 0.25, float(np.percentile(diff, 99))
    # Left channel alone would carry the added noise: the features would be far off.
    left_only = resample(stereo[: 3 * n, 0], 48000, RATE)[:n]
    assert float(np.median(np.abs(logmel(left_only)[core, bands] - ref[core, bands]))) > 0.5


def test_callback_overflow_is_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    sd = FakeSoundDevice([FakeDevice("USB Audio", 0)], 0, speed=50.0)
    src = MicrophoneSource(None, RATE, block_s=0.01, max_queue_s=0.05, sd_module=sd)
    sd.next_status = "input overflow"
    with caplog.at_level(logging.WARNING, logger="firmware_py.sources"):
        gen = src.blocks()
        next(gen)  # opens the stream
        deadline = time.monotonic() + 10
        while src.dropped_blocks == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the consumer is "busy": the callback must not block
        next(gen)
        next(gen)
        src.close()
        gen.close()
    assert src.dropped_blocks > 0
    assert src.status_flags >= 1 and src.last_status == "input overflow"
    assert "dropped" in caplog.text and "input overflow" in caplog.text
    assert not sd.open_streams  # closed


@pytest.mark.parametrize(("mode", "spec"), [("stop", "usb"), ("stall", "usb"), ("stop", 2)])
def test_unplugged_device_recovers_without_ending_iteration(
    mode: str, spec: str | int, caplog: pytest.LogCaptureFixture
) -> None:
    tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    dev = FakeDevice("USB Audio", 2, audio=np.stack([tone, tone], axis=1), unplug_mode=mode)
    sd = FakeSoundDevice([FakeDevice("Built-in Mic", 0, channels=(1,), max_input_channels=1),
                          dev], default_input=0, speed=4.0)
    # Chosen by index 2, the device is found again by its name under index 5.
    src = MicrophoneSource(spec, RATE, retry_s=0.05, stall_timeout_s=0.3, sd_module=sd)
    events: list[str] = []
    received = [0, 0]  # samples before the unplug, after the return

    def consume() -> None:
        phase = 0
        for block in src.blocks():
            received[phase] += block.shape[0]
            if phase == 0 and received[0] >= RATE // 2:
                dev.present = False  # yank the cable
                events.append("unplugged")
                phase = 1
                threading.Timer(0.8, replug).start()
            if phase == 1 and received[1] >= RATE // 2 and src.reconnects:
                break
        events.append("ended")

    def replug() -> None:
        dev.index = 5  # re-plugged devices often come back under a new index
        dev.present = True
        events.append("replugged")

    with caplog.at_level(logging.INFO, logger="firmware_py.sources"):
        thread, out = in_thread(consume)
        thread.join(timeout=20)
    src.close()
    assert "error" not in out, out.get("error")
    assert events == ["unplugged", "replugged", "ended"], events
    assert src.reconnects == 1 and src.device_index == 5
    assert sd.reinitialisations >= 1  # PortAudio re-enumerated the devices
    assert "lost" in caplog.text and "is back" in caplog.text
    assert len(sd.streams) == 2 and sd.streams[0].closed and not sd.open_streams
    assert received[1] >= RATE // 2


def test_close_ends_iteration_while_waiting_for_a_device() -> None:
    dev = FakeDevice("USB Audio", 0, unplug_mode="stall")
    sd = FakeSoundDevice([dev], 0, speed=1.0)
    src = MicrophoneSource(None, RATE, retry_s=30.0, stall_timeout_s=0.2, sd_module=sd)

    def consume() -> int:
        n = 0
        for block in src.blocks():
            n += block.shape[0]
            dev.present = False  # gone after the first block; retries every 30 s
        return n

    thread, out = in_thread(consume)
    time.sleep(0.8)  # lost, now waiting 30 s for the next attempt
    assert thread.is_alive()
    start = time.monotonic()
    src.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - start < 2.0
    assert out.get("value", 0) > 0 and not sd.open_streams


def test_close_from_a_signal_handler_ends_iteration(tmp_path: Path) -> None:
    """The device loop closes the source in its SIGTERM handler, on the main thread."""
    sd = FakeSoundDevice([FakeDevice("USB Audio", 0)], 0, speed=1.0)
    src = MicrophoneSource(None, RATE, sd_module=sd)
    previous = signal.signal(signal.SIGUSR1, lambda *_: src.close())
    try:
        threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        start = time.monotonic()
        n = sum(b.shape[0] for b in src.blocks())  # blocked in the queue most of the time
        assert time.monotonic() - start < 5.0
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert n > 0 and src.closed and not sd.open_streams


def test_close_while_parked_at_a_yield_closes_the_stream() -> None:
    sd = FakeSoundDevice([FakeDevice("USB Audio", 0)], 0, speed=5.0)
    src = MicrophoneSource(None, RATE, sd_module=sd)
    gen = src.blocks()
    next(gen)
    assert sd.open_streams
    src.close()  # the generator is suspended: close() releases the stream itself
    assert not sd.open_streams
    assert list(gen) == []


# -- configuration ---------------------------------------------------------------------------
def test_open_source_from_config(stereo_44k: Path) -> None:
    src = open_source(SourceConfig(input=str(stereo_44k), realtime=False, block_s=0.2), RATE)
    assert isinstance(src, FileSource) and src.block_samples == 3200 and not src.realtime
    mic = open_source(SourceConfig(device="usb", retry_s=1.0), RATE, sd_module=two_mics())
    assert isinstance(mic, MicrophoneSource) and mic.device_index == 2 and mic.retry_s == 1.0


def test_a_device_that_returns_but_will_not_open_says_why_once(caplog: pytest.LogCaptureFixture) -> None:
    """Back in the list but held by another program: the reason reaches the log, once."""
    tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    dev = FakeDevice("USB Audio", 2, audio=np.stack([tone, tone], axis=1))
    sd = FakeSoundDevice([dev], default_input=2, speed=4.0)
    caplog.set_level(logging.INFO, logger="firmware_py.sources")
    src = MicrophoneSource("USB", RATE, retry_s=0.05, stall_timeout_s=0.3, sd_module=sd)

    def consume() -> None:
        for _ in src.blocks():
            if dev.present:
                dev.present = False  # unplugged after the first block ...
                threading.Timer(0.4, back_but_busy).start()

    def back_but_busy() -> None:
        sd.fail_open = True  # ... listed again, but InputStream() fails
        dev.present = True
        threading.Timer(1.5, src.close).start()

    thread, out = in_thread(consume)
    thread.join(timeout=20)
    assert "error" not in out, out.get("error")
    busy = [r for r in caplog.records if "is back but cannot be opened" in r.getMessage()]
    assert len(busy) == 1 and busy[0].levelno == logging.WARNING  # ~30 attempts, one line
    assert "Device unavailable" in busy[0].getMessage()
    opened = [r for r in caplog.records if r.getMessage().startswith("microphone 2 'USB Audio'")]
    assert len(opened) == 1  # the device/rate line is not repeated on every retry
