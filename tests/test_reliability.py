"""Reliability: broker faults during a live stream, bad input, a shortened long run.

The full 24 h long run is ``python -m firmware_py.bench.longrun --hours 24`` (see the
README); here it runs for a few audio minutes with the same code and checks.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from firmware_py.app import run_listen
from firmware_py.commands import DEMO_CLIP
from firmware_py.config import load_config

PREFIX = "genre-edge/reltest"
STATE = f"{PREFIX}/state"
AVAIL = f"{PREFIX}/availability"


def test_listen_stream_survives_ten_broker_kills_and_loses_nothing(broker_factory, mqtt_subscriber) -> None:
    broker = broker_factory(persistent=True)
    sub = mqtt_subscriber(broker, (f"{PREFIX}/#", "homeassistant/sensor/reltest/#"),
                          client_id="reliability-sub", clean_session=False)
    config = load_config(env={}, overrides={
        "source.input": str(DEMO_CLIP), "source.realtime": False, "source.loop": True,
        "mqtt.url": broker.url, "mqtt.device_id": "reltest", "mqtt.queue_size": 1000,
    })
    stop = threading.Event()
    parts: dict = {}
    published: list[float] = []

    def paced(payload: dict) -> None:
        # ~50 states/s: a file played 50x real time; outages last up to the reconnect
        # backoff (1-30 s), and what they queue must fit the 1000-state bound.
        published.append(payload["audio_t_s"])
        time.sleep(0.02)

    errors: list[BaseException] = []

    def device() -> None:
        try:
            with open(os.devnull, "w") as devnull:
                run_listen(config, on_payload=paced, stop=stop, console=devnull,
                           on_start=parts.update)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=device)
    thread.start()
    rng = random.Random(2026)
    kills = 0
    try:
        sub.wait_for(STATE, timeout=30)
        for _ in range(10):
            time.sleep(rng.uniform(0.1, 0.6))
            broker.kill()
            kills += 1
            time.sleep(rng.uniform(0.05, 0.6))
            mark = sub.mark()
            broker.start()
            # the device's own reconnect (the retained "online" would come back anyway)
            deadline = time.monotonic() + 40
            while parts["publisher"].counters["connects"] < kills + 1:
                assert time.monotonic() < deadline, "no reconnect within 40 s"
                time.sleep(0.02)
            sub.wait_for(AVAIL, lambda m: m.text == "online", timeout=15, start=mark)
            sub.wait_for("homeassistant/sensor/reltest/genre/config", timeout=15, start=mark)
        assert thread.is_alive(), "the device loop exited during the broker faults"
        deadline = time.monotonic() + 60  # let the last reconnect drain the queue
        while time.monotonic() < deadline and not (
            parts["publisher"].connected and parts["publisher"].counters["queued"] == 0
        ):
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert kills == 10
    pub = parts["publisher"]
    sub.wait_for(AVAIL, lambda m: m.text == "offline", timeout=15)
    received = [m.json()["audio_t_s"] for m in sub.on_topic(STATE)]
    counters = pub.counters
    assert counters["dropped"] == 0
    assert counters["reconnects"] >= 10
    # QoS 1 is at-least-once and the last state is re-sent after each reconnect: repeats
    # are allowed, losses and reordering are not.
    first_seen = list(dict.fromkeys(received))
    print(f"broker kills {kills}: published {len(published)}, received {len(received)} "
          f"({len(first_seen)} distinct), reconnects {counters['reconnects']}, "
          f"dropped {counters['dropped']}")
    assert first_seen == published, (len(first_seen), len(published))
    assert counters["states_delivered"] >= len(published)


def _wav(path: Path, data: np.ndarray, rate: int, subtype: str) -> Path:
    soundfile.write(path, data, rate, subtype=subtype)
    return path


def _bad_inputs(tmp: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(case, listen/classify args, env, a word the one-line error must contain)."""
    demo = str(DEMO_CLIP)
    from firmware_py.bundle import default_bundle_path

    good = default_bundle_path()
    cases = []

    def bundle_copy(name: str) -> Path:
        import shutil
        dst = tmp / name
        shutil.copytree(good, dst)
        return dst

    truncated = bundle_copy("truncated")
    model = truncated / "model.tflite"
    model.write_bytes(model.read_bytes()[:1000])
    cases.append(("truncated bundle model", ["classify", demo, "--bundle", str(truncated)], {}, "sha256"))
    newer = bundle_copy("newer")
    text = (newer / "manifest.json").read_text().replace('"schema_version": 1', '"schema_version": 99')
    (newer / "manifest.json").write_text(text)
    cases.append(("manifest from a newer schema", ["classify", demo, "--bundle", str(newer)], {}, "schema"))
    mism = bundle_copy("mismatch")
    text = (mism / "manifest.json").read_text().replace('"n_mels": 64', '"n_mels": 40')
    (mism / "manifest.json").write_text(text)
    cases.append(("model/front-end mismatch", ["classify", demo, "--bundle", str(mism)], {}, "input"))
    labels = bundle_copy("labels")
    text = (labels / "manifest.json").read_text().replace('"rock"\n', '"rock",\n    "jazz"\n', 1)
    (labels / "manifest.json").write_text(text)
    cases.append(("labels/output mismatch", ["classify", demo, "--bundle", str(labels)], {}, "label"))
    garbage = tmp / "garbage-bundle"
    garbage.mkdir()
    (garbage / "manifest.json").write_text("{not json")
    cases.append(("corrupt manifest", ["classify", demo, "--bundle", str(garbage)], {}, "manifest"))
    cases.append(("missing audio file", ["classify", str(tmp / "missing.wav")], {}, "missing.wav"))
    unreadable = tmp / "unreadable.mp3"
    unreadable.write_bytes(os.urandom(4096))
    cases.append(("unreadable audio", ["classify", str(unreadable)], {}, "unreadable.mp3"))
    empty = _wav(tmp / "empty.wav", np.zeros(0, np.float32), 16000, "PCM_16")
    cases.append(("zero-length audio", ["classify", str(empty)], {}, "empty.wav"))
    nan = _wav(tmp / "nan.wav", np.full(48000, np.nan, np.float32), 16000, "FLOAT")
    cases.append(("NaN samples", ["classify", str(nan)], {}, "nan.wav"))
    inf = np.zeros(48000, np.float32)
    inf[100] = np.inf
    infp = _wav(tmp / "inf.wav", inf, 16000, "FLOAT")
    cases.append(("Inf samples", ["classify", str(infp)], {}, "inf.wav"))
    bad_toml = tmp / "bad.toml"
    bad_toml.write_text("[mqtt\nurl = 1\n")
    cases.append(("bad TOML", ["listen", "--config", str(bad_toml)], {}, "bad.toml"))
    unknown = tmp / "unknown.toml"
    unknown.write_text('[mqtt]\nurll = "mqtt://127.0.0.1"\n')
    cases.append(("unknown config key", ["listen", "--config", str(unknown)], {}, "url"))
    wrong_type = tmp / "type.toml"
    wrong_type.write_text('[inference]\nthreads = "many"\n')
    cases.append(("wrong config type", ["listen", "--config", str(wrong_type)], {}, "threads"))
    cases.append(("bad MQTT URL", ["listen", "--input", demo, "--mqtt", "tcp://127.0.0.1"], {}, "mqtt"))
    cases.append(("bad smoothing env", ["listen", "--input", demo],
                  {"GENRE_EDGE_SMOOTHING_ENTER_THRESHOLD": "2"}, "enter_threshold"))
    cases.append(("no microphone with that name", ["listen", "--device", "no-such-mic-xyz"], {},
                  "no-such-mic-xyz"))
    cases.append(("edge TPU flag with a bad value", ["listen", "--edgetpu", "usb3"], {}, "usb3"))
    cases.append(("unwritable output path", ["features", demo, "--out", "/proc/genre-edge/x.npy"], {},
                  "/proc/genre-edge"))
    cases.append(("bad display address", ["listen", "--input", demo, "--http", "not a host:80"], {}, "HTTP"))
    cases.append(("missing bundle", ["classify", demo, "--bundle", str(tmp / "nope")], {}, "nope"))
    return cases


def test_twenty_bad_inputs_each_give_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = _bad_inputs(tmp_path)
    assert len(cases) >= 20
    failures = []
    for name, args, env, word in cases:
        out = subprocess.run([sys.executable, "-m", "firmware_py", *args], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "GENRE_EDGE_CONFIG": "", **env})
        lines = out.stderr.strip().splitlines()
        ok = (
            out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr
            and lines[0].startswith("genre-edge: error:") and word.lower() in lines[0].lower()
        )
        if not ok:
            failures.append(f"{name}: rc={out.returncode} stderr={out.stderr.strip()[:300]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("subtype, rate, channels", [
    ("PCM_U8", 8000, 1), ("PCM_16", 44100, 2), ("PCM_24", 48000, 2), ("PCM_32", 96000, 1),
    ("FLOAT", 22050, 6),
])
def test_wav_formats_rates_and_channels_are_accepted(tmp_path: Path, subtype: str, rate: int,
                                                     channels: int) -> None:
    from firmware_py.audio import load_audio

    mono = load_audio(DEMO_CLIP, rate)[: rate * 6]
    data = np.repeat(mono[:, None], channels, axis=1) * 0.9
    ext = "wav"
    path = tmp_path / f"clip-{subtype}-{rate}.{ext}"
    if subtype == "PCM_U8":  # soundfile writes unsigned 8-bit WAV through the wave module's way
        with wave.open(str(path), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(1)
            w.setframerate(rate)
            w.writeframes(np.clip(data * 127 + 128, 0, 255).astype(np.uint8).tobytes())
    else:
        soundfile.write(path, data, rate, subtype=subtype)
    out = subprocess.run([sys.executable, "-m", "firmware_py", "classify", "--json", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"genre"' in out.stdout


@pytest.mark.parametrize("kind", ["zeros", "clipped"])
def test_silent_and_clipped_audio_keep_running(tmp_path: Path, kind: str) -> None:
    rate = 16000
    if kind == "zeros":
        data = np.zeros(rate * 8, np.float32)
    else:
        data = np.clip(load_audio_demo(rate)[: rate * 8] * 50, -1, 1)
    path = _wav(tmp_path / f"{kind}.wav", data, rate, "PCM_16")
    config = load_config(env={}, overrides={"source.input": str(path), "source.realtime": False})
    got: list[dict] = []
    with open(os.devnull, "w") as devnull:
        assert run_listen(config, on_payload=got.append, console=devnull) == 0
    assert len(got) == 5  # 8 s: windows ending at 3.0x .. 7.0x s
    if kind == "zeros":
        assert got[-1]["genre"] == "silence" and got[-1]["level_dbfs"] <= -100
    else:
        assert got[-1]["level_dbfs"] > -3 and got[-1]["genre"] != "silence"


def load_audio_demo(rate: int) -> np.ndarray:
    from firmware_py.audio import load_audio

    return load_audio(DEMO_CLIP, rate)


def test_short_long_run_has_no_growth(mqtt_broker) -> None:
    """A few audio minutes of the long-run benchmark: threads and descriptors stay flat."""
    out = subprocess.run(
        [sys.executable, "-m", "firmware_py.bench.longrun", "--hours", "0.1", "--mqtt", mqtt_broker.url,
         "--checkpoint-min", "1", "--json", "-"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    import json

    report = json.loads(out.stdout)
    points = report["checkpoints"]
    assert len(points) >= 5
    assert report["audio_hours"] >= 0.1
    assert points[-1]["threads"] == points[0]["threads"]
    assert points[-1]["fds"] <= points[0]["fds"] + 1
    assert report["mqtt"]["dropped"] == 0
    assert report["mqtt"]["states_delivered"] == report["mqtt"]["states"]
