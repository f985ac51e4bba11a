"""Hostile MQTT settings and brokers (issue 16, items 7 and 8 and the MQTT class).

* Settings a broker would reject (and drop the connection for) or silently never deliver
  are refused at start-up with one line; a TLS/plain mismatch names the mismatch.
* SIGTERM during start-up, while a broker accepts TCP and never answers, is honoured at
  once (it waited ~9 s).
* A broker SIGKILLed and restarted just before the device is SIGTERMed keeps no stale
  retained ``online``: shutdown publishes ``offline`` on a short second connection.

Real mosquitto, a real ``genre-edge listen`` process and real signals.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from firmware_py.commands import DEMO_CLIP
from firmware_py.errors import ConfigError
from firmware_py.mqtt import MqttSettings
from tests.hostile import cli, listen, one_line_error, terminate
from tests.mqtt_helpers import HOST, Broker, Subscriber, TlsMaterial

PREFIX = "genre-edge/hostile"
AVAIL = f"{PREFIX}/availability"


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


@pytest.fixture
def silent_broker() -> Iterator[socket.socket]:
    """A listening socket that accepts TCP (and TLS ClientHellos) and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((HOST, 0))
    server.listen(16)
    server.settimeout(60)
    yield server
    server.close()


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_sigterm_during_start_up_on_a_silent_broker_is_prompt(
    silent_broker: socket.socket, tls_material: TlsMaterial, scheme: str,
) -> None:
    """Item 7: the CONNACK wait (mqtt) and the TLS handshake (mqtts) watch SIGTERM."""
    port = silent_broker.getsockname()[1]
    extra = ["--ca-file", str(tls_material.ca_file)] if scheme == "mqtts" else []
    proc = listen("--input", str(DEMO_CLIP), "--realtime", "--loop", "--mqtt",
                  f"{scheme}://{HOST}:{port}", *extra)
    try:
        conn, _ = silent_broker.accept()  # the device connected: it now waits for an answer
        time.sleep(0.3)
        assert proc.poll() is None
    finally:
        code, took, err = terminate(proc)
    conn.close()  # (an accept that timed out has failed the test above)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    assert took < 3.0, f"exited {took:.1f} s after SIGTERM"


@pytest.mark.timeout(180)
def test_broker_restart_just_before_sigterm_leaves_offline_retained(
    broker_factory: Callable[..., Broker],
) -> None:
    """Item 8: broker SIGKILLed, back 1.6 s later, device SIGTERMed before its next
    reconnect: 'online' stayed retained for ever (the last will died with the old broker)."""
    broker = broker_factory(persistent=True)  # the retained 'online' survives the restart
    sub = Subscriber(broker.port, (AVAIL,)).wait_subscribed()
    proc = listen("--input", str(DEMO_CLIP), "--realtime", "--loop", "--mqtt", broker.url,
                  "--device-id", "hostile")
    try:
        sub.wait_for(AVAIL, lambda m: m.text == "online", timeout=60)
        time.sleep(1.0)  # let the broker save it
        sub.close()
        broker.kill()
        time.sleep(1.6)  # the device retried at 1 s (refused); its next try is at ~3 s
        broker.start()
    finally:
        code, took, err = terminate(proc)
    assert code == 0, err[-2000:]
    assert took < 3.0
    late = Subscriber(broker.port, (AVAIL,)).wait_subscribed()
    try:
        assert late.wait_for(AVAIL, timeout=5).text == "offline"
    finally:
        late.close()
