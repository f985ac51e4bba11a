"""``genre-edge listen`` on a real audio stack: no fake ``sounddevice`` here.

A real clip is played (paplay, 44.1 kHz stereo) into a PulseAudio null sink; ``listen``
captures the sink's monitor through sounddevice -> PortAudio -> ALSA's pulse plugin at
44.1 kHz (``--device-rate``: the plugin would accept 16 kHz too and resample itself), asks
for one channel (PulseAudio mixes the stereo clip down), resamples to the model's 16 kHz
with libsoxr and publishes to a real mosquitto. The sink is then removed mid-stream and created again: the stream must reopen
and publishing resume. What a virtual device cannot do (rates it refuses, stalls without an
error, a block PortAudio reuses, overflow flags) stays with the fake stream in
``tests/test_sources.py``.

Skips (with the reason) when PulseAudio or ALSA's pulse plugin is missing; under CI
(``CI`` set) that is a failure, since ``.ci/run`` installs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from firmware_py.audio import load_audio
from tests.paths import clip
from tests.virtual_audio import PCM_NAME, VirtualMicrophone, missing

DEVICE_ID = "virtualmic"
PREFIX = f"genre-edge/{DEVICE_ID}"
RATE = 44100


@pytest.fixture
def virtual_microphone(tmp_path: Path) -> Iterator[VirtualMicrophone]:
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"virtual audio device unavailable in CI: {why}", pytrace=False)
        pytest.skip(f"virtual audio device unavailable: {why}")
    mic = VirtualMicrophone(tmp_path / "pulse", rate=RATE, channels=2).start()
    yield mic
    mic.stop()


def _client_env(mic: VirtualMicrophone) -> dict[str, str]:
    return {**os.environ, **mic.env, "GENRE_EDGE_CONFIG": "",
            "GENRE_EDGE_SOURCE_RETRY_S": "0.5"}


class _Lines:
    """Collects a pipe's lines in a thread; ``wait_for(text)`` returns once one holds it."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float, start: int = 0) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, line in enumerate(self.lines[start:], start):
                    if needle in line:
                        return i
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = "\n".join(self.lines[-20:])
                    raise TimeoutError(f"no {needle!r} in listen's log within {timeout} s:\n{tail}")
                self._cond.wait(remaining)


def test_list_devices_shows_the_virtual_microphone(virtual_microphone) -> None:
    out = subprocess.run([sys.executable, "-m", "firmware_py", "listen", "--list-devices"],
                         capture_output=True, text=True, timeout=60,
                         env=_client_env(virtual_microphone))
    assert out.returncode == 0, out.stderr
    assert PCM_NAME in out.stdout, out.stdout


def test_listen_on_a_real_audio_device_survives_unplugging(virtual_microphone, tmp_path: Path,
                                                           mqtt_broker, mqtt_subscriber) -> None:
    mic = virtual_microphone
    # A held-out classical clip of the real-music set, played as 44.1 kHz stereo.
    mono = load_audio(clip("classical", 1, "test"), RATE)
    wav = tmp_path / "clip-44k1.wav"
    soundfile.write(wav, np.stack([mono, 0.6 * mono], axis=1), RATE, subtype="FLOAT")
    mic.play_loop(wav)

    sub = mqtt_subscriber(mqtt_broker, (f"{PREFIX}/#",))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "listen", "--device", PCM_NAME,
         "--device-rate", str(RATE), "--mqtt", mqtt_broker.url, "--device-id", DEVICE_ID,
         "--log-level", "info", "--changes-only"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_client_env(mic),
    )
    log = _Lines(proc.stderr)
    state = f"{PREFIX}/state"
    try:
        log.wait_for(f"{PCM_NAME}': {RATE} Hz", timeout=60)
        assert "resampled to 16000 Hz" in log.text()
        first = sub.wait_for(state, lambda m: m.json()["genre"] == "classical", timeout=90)
        # well above the silence gate (-60 dBFS); this quiet classical clip reads -42 at times
        assert first.json()["level_dbfs"] > -50, "the captured audio is (nearly) silent"
        assert sub.wait_for(f"{PREFIX}/availability", timeout=5).text == "online"

        # Unplug: the stream dies, listen says so and publishes nothing while it is gone.
        mic.unplug()
        lost = log.wait_for("lost", timeout=15)
        time.sleep(1.5)  # a state already on its way when the device went
        gone = sub.mark()
        time.sleep(3.0)
        assert sub.on_topic(state, start=gone) == [], "states published without a device"
        assert proc.poll() is None, log.text()

        # Plug it back in (paplay's loop finds the sink again): the stream reopens.
        mic.plug()
        log.wait_for("is back", timeout=30, start=lost)
        back = sub.wait_for(state, lambda m: m.json()["genre"] == "classical", timeout=60,
                            start=gone)
        assert back.json()["audio_t_s"] > first.json()["audio_t_s"]
        n = len(sub.on_topic(state, start=gone))
        sub.wait_count(state, n + 3, timeout=20, start=gone)  # and it keeps publishing

        mark = sub.mark()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.text()
        sub.wait_for(f"{PREFIX}/availability", lambda m: m.text == "offline", timeout=5,
                     start=mark)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
