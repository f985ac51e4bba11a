"""A real Home Assistant consumes genre-edge's MQTT discovery (slow: still run in CI).

Home Assistant core (``tests/homeassistant.py``: its own virtualenv in a cached Debian root,
no pip at run time) is onboarded through its HTTP API, the MQTT integration is added through
its config flow and pointed at the test's mosquitto, and ``deploy/homeassistant/
automations.yaml`` is its automation file, unchanged. ``genre-edge listen`` then plays real
music (a rock clip, then a classical one) at real time with ``--device-id livingroom``.
Checked through Home Assistant's REST API: the three discovered sensors exist under the ids
the docs name, with the genre, confidence and level that were published; the example
"classical dims the lights" automation fires on the change to classical and dims a light;
after SIGTERM of listen the sensors become unavailable.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from firmware_py.audio import load_audio
from tests.homeassistant import HomeAssistant, build, default_root, missing
from tests.mqtt_helpers import free_port
from tests.paths import REPO, clip

pytestmark = pytest.mark.slow

DEVICE_ID = "livingroom"  # the id deploy/homeassistant/automations.yaml is written for
PREFIX = f"genre-edge/{DEVICE_ID}"
SENSORS = ("genre", "confidence", "level")
RATE = 16000

CONFIGURATION = """\
homeassistant:
  name: genre-edge test
  latitude: 52.0
  longitude: 5.0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
logger:
  default: warning
automation: !include automations.yaml
# light.living_room, as the example automations expect: a template light whose on/off and
# brightness are helpers the test can read.
input_boolean:
  living_room_power:
    name: Living room power
    initial: true
input_number:
  living_room_brightness:
    name: Living room brightness
    min: 0
    max: 255
    initial: 255
template:
  - light:
      - name: Living room
        unique_id: genre_edge_test_living_room
        state: "{{{{ is_state('input_boolean.living_room_power', 'on') }}}}"
        level: "{{{{ states('input_number.living_room_brightness') | int }}}}"
        turn_on:
          - action: input_boolean.turn_on
            target: {{entity_id: input_boolean.living_room_power}}
        turn_off:
          - action: input_boolean.turn_off
            target: {{entity_id: input_boolean.living_room_power}}
        set_level:
          - action: input_number.set_value
            target: {{entity_id: input_number.living_room_brightness}}
            data: {{value: "{{{{ brightness }}}}"}}
"""


@pytest.fixture(scope="module")
def ha_root() -> Path:
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"Home Assistant cannot run in CI: {why}", pytrace=False)
        pytest.skip(f"Home Assistant cannot run here: {why}")
    return build(default_root())  # minutes the first time, then cached


@pytest.fixture
def home_assistant(ha_root: Path, tmp_path: Path):
    config = tmp_path / "ha-config"
    config.mkdir()
    port = free_port()
    (config / "configuration.yaml").write_text(CONFIGURATION.format(port=port))
    shutil.copy(REPO / "deploy" / "homeassistant" / "automations.yaml", config)
    ha = HomeAssistant(ha_root, config, port)
    try:
        yield ha.start()
    finally:
        ha.stop()


def _wait(what: str, check: Callable[[], Any], timeout: float, ha: HomeAssistant) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout} s (last: {last!r}); Home Assistant's log:\n"
                         f"{ha.log_text()[-3000:]}")


def _rock_then_classical(path: Path) -> Path:
    rock = load_audio(clip("rock", 0, "test"), RATE)[: 20 * RATE]
    classical = load_audio(clip("classical", 1, "test"), RATE)
    soundfile.write(path, np.concatenate([rock, classical]), RATE, subtype="FLOAT")
    return path


def _matches(ha: HomeAssistant, published: dict[str, Any]) -> bool:
    genre = ha.state(f"sensor.{DEVICE_ID}_genre")
    confidence = ha.state(f"sensor.{DEVICE_ID}_confidence")
    level = ha.state(f"sensor.{DEVICE_ID}_level")
    if not (genre and confidence and level):
        return False
    try:
        return (genre["state"] == published["genre"]
                and float(confidence["state"]) == round(published["confidence"] * 100, 1)
                and abs(float(level["state"]) - published["level_dbfs"]) < 1e-3)
    except ValueError:  # "unknown"/"unavailable" while it starts
        return False


def test_home_assistant_discovers_the_sensors_and_runs_the_example_automation(
        home_assistant: HomeAssistant, mqtt_broker, mqtt_subscriber, tmp_path: Path) -> None:
    ha = home_assistant
    ha.add_mqtt(mqtt_broker.port)
    sub = mqtt_subscriber(mqtt_broker, (f"{PREFIX}/#",))
    wav = _rock_then_classical(tmp_path / "rock-then-classical.wav")
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "listen", "--input", str(wav), "--realtime",
         "--mqtt", mqtt_broker.url, "--device-id", DEVICE_ID, "--changes-only"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GENRE_EDGE_CONFIG": ""},
    )
    try:
        # Discovery: the three sensors under the ids the docs and the automations use.
        _wait("the discovered sensors", lambda: all(
            ha.state(f"sensor.{DEVICE_ID}_{s}") for s in SENSORS), 60, ha)
        genre = ha.state(f"sensor.{DEVICE_ID}_genre")
        assert genre["attributes"]["device_class"] == "enum"
        assert ha.state(f"sensor.{DEVICE_ID}_confidence")["attributes"]["unit_of_measurement"] == "%"
        assert ha.state(f"sensor.{DEVICE_ID}_level")["attributes"]["unit_of_measurement"] == "dBFS"

        # Their states are what was published (the newest state, as both move every second).
        def consistent() -> bool:
            states = sub.on_topic(f"{PREFIX}/state")
            return bool(states) and _matches(ha, states[-1].json())

        _wait("Home Assistant showing the published genre, confidence and level", consistent,
              30, ha)
        labels = set(sub.on_topic(f"{PREFIX}/state")[-1].json()["probabilities"])
        attributes = ha.state(f"sensor.{DEVICE_ID}_genre")["attributes"]
        assert labels <= set(attributes), attributes  # every label's probability

        # The example automation: classical for 30 s dims light.living_room to 30 %.
        def dimmed() -> dict[str, Any] | None:
            light = ha.state("light.living_room")
            return light if light and light["attributes"].get("brightness") in (76, 77) else None

        automation = next(s for s in ha.states() if s["entity_id"].startswith("automation.")
                          and s["attributes"].get("id") == "genre_edge_classical_dim_lights")
        _wait("the classical automation dimming the light", dimmed, 110, ha)
        states = sub.on_topic(f"{PREFIX}/state")
        genres = [m.json()["genre"] for m in states]
        assert "rock" in genres[: genres.index("classical")], genres  # it was a change
        # ... and it fired once classical had held for the automation's 30 s, not before.
        first_classical = states[genres.index("classical")]
        classical_since = time.time() - (time.monotonic() - first_classical.t)
        fired = datetime.fromisoformat(
            ha.state(automation["entity_id"])["attributes"]["last_triggered"]).timestamp()
        assert fired >= classical_since + 30 - 1.0, (fired - classical_since, genres)

        # SIGTERM: 'offline' is published and every sensor becomes unavailable.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
        _wait("every sensor unavailable", lambda: all(
            ha.state(f"sensor.{DEVICE_ID}_{s}")["state"] == "unavailable" for s in SENSORS), 15, ha)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
