"""Hostile MQTT settings (issue 16, the MQTT class).

* Settings a broker would reject (and drop the connection for) or silently never deliver
  are refused at start-up with one line; a TLS/plain mismatch names the mismatch.

Real mosquitto and a real ``genre-edge listen`` process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from firmware_py.commands import DEMO_CLIP
from firmware_py.errors import ConfigError
from firmware_py.mqtt import MqttSettings
from tests.hostile import cli, one_line_error
from tests.mqtt_helpers import HOST, Broker, TlsMaterial


@pytest.mark.parametrize("option, value, needle", [
    ("--topic-prefix", "$SYS/genre-edge", "reserved for the broker"),
    ("--topic-prefix", "home//genre-edge", "empty level"),
    ("--topic-prefix", "home/genre-edge/", "empty level"),
    ("--topic-prefix", "home/#", "wildcard"),
    ("GENRE_EDGE_MQTT_TOPIC_PREFIX", "home/genre\u0085edge", "control character U+0085"),
    ("GENRE_EDGE_MQTT_DISCOVERY_PREFIX", "home\tassistant", "control character U+0009"),
    ("GENRE_EDGE_MQTT_DISCOVERY_PREFIX", "home\ufffeassistant", "non-character U+FFFE"),
    ("--username", "genre\x7fedge", "control character U+007F"),
])
def test_mqtt_settings_the_broker_would_refuse_are_one_line(
    mqtt_broker: Broker, option: str, value: str, needle: str,
) -> None:
    args = ["listen", "--input", str(DEMO_CLIP), "--fast", "--mqtt", mqtt_broker.url,
            "--device-id", "hostile"]
    env = {}
    if option.startswith("--"):
        args += [option, value]
    else:
        env[option] = value
    one_line_error(cli(*args, env=env), needle)
    assert "New client connected" not in mqtt_broker.log_text(), "refused before connecting"


def test_topics_longer_than_mqtt_can_carry_are_refused() -> None:
    # The config caps text at 4096 characters; MqttSettings checks what MQTT can carry.
    with pytest.raises(ConfigError, match="more than MQTT's 65535"):
        MqttSettings(url="mqtt://127.0.0.1:1883", topic_prefix="a" * 70_000)
    with pytest.raises(ConfigError, match="more than MQTT's 65535") as err:
        MqttSettings(url="mqtt://127.0.0.1:1883", username="u", password="p" * 70_000)
    assert "ppp" not in str(err.value)


def test_plain_mqtt_to_a_tls_port_names_the_mismatch(broker_factory: Callable[..., Broker],
                                                     tls_material: TlsMaterial) -> None:
    broker = broker_factory(tls=tls_material)
    t0 = time.monotonic()
    out = cli("listen", "--input", str(DEMO_CLIP), "--fast", "--mqtt",
              f"mqtt://{HOST}:{broker.tls_port}")
    one_line_error(out, "if the port speaks TLS, use mqtts://")
    assert time.monotonic() - t0 < 8, "named at once, not after the 10 s answer timeout"


def test_tls_to_a_plain_port_names_the_mismatch(broker_factory: Callable[..., Broker],
                                                tls_material: TlsMaterial) -> None:
    broker = broker_factory(tls=tls_material)
    out = cli("listen", "--input", str(DEMO_CLIP), "--fast", "--mqtt", f"mqtts://{HOST}:{broker.port}",
              "--ca-file", str(tls_material.ca_file))
    one_line_error(out, "a plain MQTT port needs mqtt://")
