"""The MQTT sink against a real mosquitto on loopback: no mocks.

What is proven here: retained state and its keys, availability (online, offline on stop,
the broker's last will on a crash), Home Assistant discovery and the birth message,
ordered delivery of everything queued while the broker was killed, the queue bound,
one-line errors (login, TLS, unreachable, bad URL) and that the password never leaks.
"""

from __future__ import annotations

import json
import logging
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_py.errors import BrokerError, ConfigError
from firmware_py.mqtt import MqttPublisher, MqttSettings, parse_mqtt_url
from tests.mqtt_helpers import HOST, Broker, Subscriber, TlsMaterial
from tests.paths import REPO

pytestmark = pytest.mark.timeout(60)

LABELS = ["blues", "classical", "jazz", "rock"]
DEVICE = "pi-test"
PREFIX = f"genre-edge/{DEVICE}"
STATE = f"{PREFIX}/state"
AVAIL = f"{PREFIX}/availability"
STATS = f"{PREFIX}/stats"
PASSWORD = "s3cret-Pa55word"


def state(i: int = 0, genre: str = "rock") -> dict[str, Any]:
    probs = dict.fromkeys(LABELS, 0.1)
    probs[genre] = 0.7
    return {"genre": genre, "confidence": 0.7, "probabilities": probs, "level_dbfs": -20.5, "seq": i}


def settings(url: str, **kw: Any) -> MqttSettings:
    # Fast reconnects keep the suite quick; production defaults are 1 s -> 30 s.
    kw.setdefault("device_id", DEVICE)
    kw.setdefault("reconnect_min_s", 0.1)
    kw.setdefault("reconnect_max_s", 0.5)
    return MqttSettings(url=url, **kw)


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., MqttPublisher]]:
    pubs: list[MqttPublisher] = []

    def make(s: MqttSettings, **kw: Any) -> MqttPublisher:
        kw.setdefault("labels", LABELS)
        kw.setdefault("model_name", "test-model-v1")
        pub = MqttPublisher(s, **kw)
        pubs.append(pub)
        return pub

    yield make
    for pub in pubs:
        pub.stop()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text
    return text


def send(broker: Broker, topic: str, payload: bytes, retain: bool = False) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sender")
    c.connect(HOST, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def seqs(sub: Subscriber, start: int = 0) -> list[int]:
    """State sequence numbers in order of first arrival.

    Skips retained replays (a re-subscription re-sends the retained state) and QoS 1
    duplicates: after a SIGKILL the broker may re-deliver messages whose PUBACK it had not
    saved yet; at-least-once allows that, and order is judged by first arrival.
    """
    out: list[int] = []
    seen: set[int] = set()
    for m in sub.on_topic(STATE, start):
        seq = m.json()["seq"]
        if not m.retain and seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


# ---------------------------------------------------------------------- settings and URLs

@pytest.mark.parametrize("url, expected", [
    ("mqtt://127.0.0.1", ("127.0.0.1", 1883, False)),
    ("mqtts://broker.lan", ("broker.lan", 8883, True)),
    ("mqtt://localhost:1884/", ("localhost", 1884, False)),
    ("MQTTS://[::1]:9999", ("::1", 9999, True)),
])
def test_parse_mqtt_url(url: str, expected: tuple[str, int, bool]) -> None:
    assert tuple(parse_mqtt_url(url)) == expected


@pytest.mark.parametrize("url, words", [
    ("127.0.0.1:1883", "expected mqtt://"),
    ("http://127.0.0.1:1883", "scheme 'http' is not supported"),
    ("mqtt://:1883", "host is missing"),
    ("mqtt://127.0.0.1:99999", "port must be a number"),
    ("mqtt://127.0.0.1:abc", "port must be a number"),
    ("mqtt://127.0.0.1:0", "port must be a number"),
    ("mqtt://user:pw@127.0.0.1", "set mqtt username/password"),
    ("mqtt://[::1", "unbalanced '[' or ']'"),
    ("mqtt://[broker.lan]:1883", "only an IPv6 address goes in brackets"),
    ("mqtt://[::1]:\u00b2", "port must be a number"),
    ("tcp://user:pw@127.0.0.1:1883", "'tcp://user:***@127.0.0.1:1883': scheme 'tcp'"),
    ("ssl://user:pw@x@127.0.0.1", "'ssl://user:***@127.0.0.1'"),
    ("user:pw@127.0.0.1:1883", "'user:***@127.0.0.1:1883': expected mqtt://"),
    ("mqtt://user:pw@[::1", "'mqtt://user:***@[::1'"),
    ("mqtt://127.0.0.1/topic", "only scheme, host and port"),
    ("", "expected mqtt://"),
])
def test_bad_urls_give_one_line_config_error(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        MqttSettings(url=url)
    assert words in one_line(err.value)
    assert "pw@" not in str(err.value)


def test_settings_defaults_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "Living Room.Pi_4.local")
    s = MqttSettings(url="mqtt://127.0.0.1", username="dev", password=PASSWORD)
    assert s.device_id == "living-room"
    assert s.topic_prefix == "genre-edge/living-room" and s.client_id == "genre-edge-living-room"
    assert (s.qos, s.queue_size, s.discovery_prefix) == (1, 1000, "homeassistant")
    assert PASSWORD not in repr(s) and "password" not in repr(s)
    bad: list[dict[str, Any]] = [
        {"device_id": "Kitchen/1"}, {"topic_prefix": "a/#"}, {"topic_prefix": "/a"},
        {"ca_file": "/x/ca.pem"}, {"password": "p"}, {"queue_size": 0}, {"qos": 3},
        {"key_file": "k.pem"},
    ]
    for kw in bad:
        with pytest.raises(ConfigError) as err:
            MqttSettings(url="mqtt://127.0.0.1", **kw)
        one_line(err.value)


# ---------------------------------------------------------------------- state, availability

def test_retained_state_has_the_documented_keys(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    pub = make_publisher(settings(mqtt_broker.url))
    pub.start()
    assert pub.connected
    sock = pub._client.socket() if pub._client else None
    assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    pub.publish_state({**state(0), "level_dbfs": float("-inf")})  # digital silence
    # A subscriber that arrives later gets the retained message: what HA sees on restart.
    deadline = time.monotonic() + 5
    while pub.counters["states_delivered"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    sub = mqtt_subscriber(mqtt_broker, (STATE,))
    msg = sub.wait_for(STATE)
    assert msg.retain and msg.qos == 1
    doc = msg.json()
    assert {"genre", "confidence", "probabilities", "level_dbfs", "model", "timestamp"} <= set(doc)
    assert doc["genre"] == "rock" and doc["model"] == "test-model-v1"
    assert set(doc["probabilities"]) == set(LABELS)
    assert doc["level_dbfs"] is None  # -inf is not JSON: Home Assistant would reject it
    ts = datetime.fromisoformat(doc["timestamp"])  # Python 3.10 reads it: no "Z"
    assert ts.tzinfo is not None and abs((datetime.now(timezone.utc) - ts).total_seconds()) < 60


def test_availability_online_then_offline_within_1s_on_stop(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    sub = mqtt_subscriber(mqtt_broker, (AVAIL,))
    pub = make_publisher(settings(mqtt_broker.url))
    pub.start()
    assert sub.wait_for(AVAIL, lambda m: m.text == "online").retain is False  # live delivery
    pub.publish_state(state(1))
    t0 = time.monotonic()
    pub.stop()
    assert time.monotonic() - t0 < 1.0
    sub.wait_for(AVAIL, lambda m: m.text == "offline", timeout=1.0)
    assert not pub.connected
    late = mqtt_subscriber(mqtt_broker, (AVAIL, STATE))
    assert late.wait_for(AVAIL).text == "offline"  # retained for whoever comes later
    assert late.wait_for(STATE).json()["seq"] == 1  # the state was flushed before offline


LWT_SCRIPT = """
import sys, time
from firmware_py.mqtt import MqttPublisher, MqttSettings
s = MqttSettings(url=sys.argv[1], device_id="crashy", keepalive_s=5)
p = MqttPublisher(s, labels=["rock"], model_name="m")
p.start(timeout_s=5)
p.publish_state({"genre": "rock", "confidence": 1.0, "probabilities": {"rock": 1.0},
                 "level_dbfs": -10.0})
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_offline_when_the_process_dies(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
) -> None:
    topic = "genre-edge/crashy/availability"
    sub = mqtt_subscriber(mqtt_broker, (topic,))
    proc = subprocess.Popen([sys.executable, "-c", LWT_SCRIPT, mqtt_broker.url], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        sub.wait_for(topic, lambda m: m.text == "online")
        proc.send_signal(signal.SIGKILL)  # no stop(), no DISCONNECT: only the will can say it
        proc.wait(5)
        sub.wait_for(topic, lambda m: m.text == "offline", timeout=5)
    finally:
        proc.kill()
        proc.wait(5)
    late = mqtt_subscriber(mqtt_broker, (topic,))
    assert late.wait_for(topic).text == "offline"


# ---------------------------------------------------------------------- Home Assistant discovery

def check_discovery(configs: dict[str, dict[str, Any]]) -> None:
    assert set(configs) == {
        f"homeassistant/sensor/{DEVICE}/{o}/config" for o in ("genre", "confidence", "level")
    }
    uids = set()
    for topic, c in configs.items():
        # What Home Assistant needs for an MQTT sensor grouped under one device.
        for key in ("name", "unique_id", "state_topic", "value_template", "device",
                    "availability_topic", "payload_available", "payload_not_available",
                    "expire_after", "default_entity_id"):
            assert key in c, (topic, key)
        assert c["state_topic"] == STATE and c["availability_topic"] == AVAIL
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["expire_after"] == 120 and c["qos"] == 1
        assert c["device"]["identifiers"] == [f"genre-edge_{DEVICE}"]
        assert c["device"]["manufacturer"] == "genre-edge"
        assert c["device"]["model"] == "test-model-v1" and c["device"]["sw_version"]
        assert c["default_entity_id"].startswith("sensor.pi_test_")
        uids.add(c["unique_id"])
    assert len(uids) == 3
    genre = configs[f"homeassistant/sensor/{DEVICE}/genre/config"]
    assert genre["device_class"] == "enum"
    assert genre["options"] == [*LABELS, "silence", "unknown"]
    assert genre["json_attributes_topic"] == STATE
    assert genre["value_template"] == "{{ value_json.genre }}"
    level = configs[f"homeassistant/sensor/{DEVICE}/level/config"]
    assert level["unit_of_measurement"] == "dBFS" and level["state_class"] == "measurement"
    conf = configs[f"homeassistant/sensor/{DEVICE}/confidence/config"]
    assert conf["unit_of_measurement"] == "%"


def test_discovery_and_the_home_assistant_birth_message(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    sub = mqtt_subscriber(mqtt_broker, ("homeassistant/sensor/#", STATE))
    pub = make_publisher(settings(mqtt_broker.url))
    pub.start()
    configs = {}
    for obj in ("genre", "confidence", "level"):
        m = sub.wait_for(f"homeassistant/sensor/{DEVICE}/{obj}/config")
        configs[m.topic] = m.json()
    check_discovery(configs)
    pub.publish_state(state(7))
    sub.wait_for(STATE, lambda m: m.json()["seq"] == 7)

    mark = sub.mark()
    send(mqtt_broker, "homeassistant/status", b"online")  # Home Assistant restarted
    for topic in configs:
        sub.wait_for(topic, start=mark)
    assert sub.wait_for(STATE, start=mark).json()["seq"] == 7  # and the last state again

    mark = sub.mark()
    send(mqtt_broker, "homeassistant/status", b"offline")
    time.sleep(0.3)
    assert sub.on_topic(f"homeassistant/sensor/{DEVICE}/genre/config", mark) == []


# ---------------------------------------------------------------------- broker faults

def test_broker_killed_and_restarted_every_queued_state_arrives_in_order(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="firmware_py.mqtt")
    # Persistent broker + persistent subscriber session: the subscriber cannot miss what
    # the publisher flushes right after the restart, whichever reconnects first.
    broker = broker_factory(persistent=True)
    sub = mqtt_subscriber(broker, (f"{PREFIX}/#", "homeassistant/sensor/#"),
                          client_id="test-restart-sub", clean_session=False)
    pub = make_publisher(settings(broker.url))
    pub.start()
    for i in range(5):
        pub.publish_state(state(i))
    sub.wait_for(STATE, lambda m: m.json()["seq"] == 4)

    broker.kill()
    deadline = time.monotonic() + 5
    while pub.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pub.connected
    n = 40
    for i in range(5, 5 + n):
        pub.publish_state(state(i, genre=LABELS[i % 4]))
    assert pub.counters["queued"] == n
    mark = sub.mark()
    broker.start()

    sub.wait_for(STATE, lambda m: m.json()["seq"] == 4 + n, timeout=15)
    got = seqs(sub)
    assert got == list(range(5 + n)), got  # nothing lost, nothing reordered
    sub.wait_for(AVAIL, lambda m: m.text == "online", start=mark)
    sub.wait_for(f"homeassistant/sensor/{DEVICE}/genre/config", start=mark)
    deadline = time.monotonic() + 5
    while pub.counters["states_delivered"] < 5 + n and time.monotonic() < deadline:
        time.sleep(0.01)
    c = pub.counters
    assert (c["states"], c["states_delivered"], c["dropped"], c["queued"]) == (5 + n, 5 + n, 0, 0)
    assert c["reconnects"] == 1 and c["connected"] == 1
    assert "lost the broker" in caplog.text and "sending 40 queued" in caplog.text


def test_queue_bound_drops_the_oldest_and_counts_them(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    broker = broker_factory(persistent=True)
    sub = mqtt_subscriber(broker, (STATE,), client_id="test-bound-sub", clean_session=False)
    pub = make_publisher(settings(broker.url, queue_size=10))
    pub.start()
    broker.kill()
    deadline = time.monotonic() + 5
    while pub.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(25):
        pub.publish_state(state(i))
    c = pub.counters
    assert (c["queued"], c["dropped"], c["states"]) == (10, 15, 25)
    assert "dropping the oldest" in caplog.text
    pub.publish_stats({"inference_ms": 1.0})  # a stale sample must not evict a state
    assert pub.counters["stats_skipped"] == 1 and pub.counters["queued"] == 10
    broker.start()
    sub.wait_for(STATE, lambda m: m.json()["seq"] == 24, timeout=15)
    assert seqs(sub) == list(range(15, 25))  # the newest 10, in order
    pub.publish_stats({"inference_ms": 1.0})
    assert pub.counters["dropped"] == 15


def test_stream_survives_repeated_broker_kills(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(persistent=True)
    sub = mqtt_subscriber(broker, (f"{PREFIX}/#",), client_id="test-kills-sub", clean_session=False)
    pub = make_publisher(settings(broker.url))
    pub.start()
    done = threading.Event()
    produced = [0]

    def produce() -> None:  # ~100 states/s, like a file played fast
        while not done.is_set():
            pub.publish_state(state(produced[0]))
            produced[0] += 1
            time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(9)
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.2, 0.5))
            broker.kill()
            time.sleep(rng.uniform(0.05, 0.5))
            broker.start()
    finally:
        done.set()
        producer.join()
    n = produced[0]
    sub.wait_for(STATE, lambda m: m.json()["seq"] == n - 1, timeout=15)
    assert seqs(sub) == list(range(n))
    assert [m.text for m in sub.on_topic(AVAIL)][-1] == "online"
    assert pub.counters["dropped"] == 0 and pub.counters["reconnects"] >= 1


def test_qos0_messages_lost_with_the_link_do_not_stall_the_sender(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    # paho discards unsent QoS 0 packets with the connection and never calls on_publish
    # for them: they must not keep in-flight slots, or after max_inflight such losses the
    # sender never sends again.
    pub = make_publisher(settings(mqtt_broker.url, qos=0, max_inflight=2,
                                  reconnect_min_s=0.05, reconnect_max_s=0.2))
    pub.start()
    done = threading.Event()

    def produce() -> None:  # as fast as a file played --fast
        i = 0
        while not done.is_set():
            pub.publish_state(state(i))
            i += 1
            time.sleep(0.0005)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for _ in range(8):
            time.sleep(0.15)
            mqtt_broker.kill()
            time.sleep(0.05)
            mqtt_broker.start()
            deadline = time.monotonic() + 5
            while not pub.connected and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        done.set()
        producer.join()
    sub = mqtt_subscriber(mqtt_broker, (STATE,))
    mark = sub.mark()
    pub.publish_state(state(-1, genre="jazz"))
    assert sub.wait_for(STATE, lambda m: m.json()["seq"] == -1, timeout=10, start=mark)
    deadline = time.monotonic() + 5
    while pub.counters["inflight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    c = pub.counters
    assert c["inflight"] == 0 and c["queued"] == 0 and c["reconnects"] >= 8, c


def test_stop_is_bounded_while_the_broker_is_away(
    mqtt_broker: Broker, make_publisher: Callable[..., MqttPublisher],
) -> None:
    pub = make_publisher(settings(mqtt_broker.url, reconnect_min_s=1.0, reconnect_max_s=30.0))
    pub.start()
    mqtt_broker.kill()
    time.sleep(0.2)  # paho is now sleeping in its reconnect backoff
    pub.publish_state(state(1))
    t0 = time.monotonic()
    pub.stop()
    assert time.monotonic() - t0 < 1.5


def test_unreachable_broker_fails_fast_or_connects_later(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(start=False)  # its port is free: nothing listens yet
    with pytest.raises(BrokerError) as err:
        make_publisher(settings(broker.url)).start(timeout_s=2)
    assert one_line(err.value) == (
        f"cannot reach MQTT broker at 127.0.0.1:{broker.port} (connection refused): "
        "is it running? check --mqtt"
    )

    pub = make_publisher(settings(broker.url))
    t0 = time.monotonic()
    pub.start(wait=False)  # a service that boots before its broker
    assert time.monotonic() - t0 < 1 and not pub.connected
    pub.publish_state(state(1))
    broker.start()
    sub = mqtt_subscriber(broker, (STATE, AVAIL))
    assert sub.wait_for(STATE, timeout=10).json()["seq"] == 1
    assert sub.wait_for(AVAIL).text == "online"


def test_plain_client_on_a_tls_port_names_the_mismatch(
    broker_factory: Callable[..., Broker], tls_material: TlsMaterial,
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(tls=tls_material)
    t0 = time.monotonic()
    with pytest.raises(BrokerError) as err:
        make_publisher(settings(f"mqtt://127.0.0.1:{broker.tls_port}")).start(timeout_s=5)
    # mosquitto's TLS listener hangs up on the plain CONNECT: no need to wait for a timeout.
    assert time.monotonic() - t0 < 3
    assert "closed the connection without answering" in one_line(err.value)
    assert "if the port speaks TLS, use mqtts://" in str(err.value)


# ---------------------------------------------------------------------- security

def test_refused_credentials_are_one_line_errors(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = broker_factory(users={"dev": PASSWORD})
    with pytest.raises(BrokerError) as err:
        make_publisher(settings(broker.url, username="dev", password="wrong-password")).start(timeout_s=5)
    assert one_line(err.value) == (
        f"MQTT broker at 127.0.0.1:{broker.port} refused the login (bad username or password): "
        "check mqtt username/password"
    )
    with pytest.raises(BrokerError) as err:
        make_publisher(settings(broker.url)).start(timeout_s=5)
    assert "requires a login" in one_line(err.value)

    pub = make_publisher(settings(broker.url, username="dev", password=PASSWORD))
    pub.start()
    sub = mqtt_subscriber(broker, (STATE, STATS), username="dev", password=PASSWORD)
    pub.publish_state(state(3))
    pub.publish_stats({"inference_ms": 0.7})
    stats = sub.wait_for(STATS)
    assert not stats.retain and stats.json()["inference_ms"] == 0.7
    # one timestamp format for states and stats: ISO 8601, milliseconds, +00:00
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00",
                        stats.json()["timestamp"])
    for key in ("published", "delivered", "queued", "dropped", "reconnects"):
        assert key in stats.json()["mqtt"]
    pub.stop()
    # The password never leaves the process except in the CONNECT packet.
    assert PASSWORD not in caplog.text and "wrong-password" not in caplog.text
    assert all(PASSWORD.encode() not in m.payload for m in sub.messages)
    assert PASSWORD not in repr(pub.settings) and PASSWORD not in json.dumps(pub.counters)


def test_password_in_a_stats_payload_is_masked(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    # Defence in depth: even a careless caller cannot publish the login.
    pub = make_publisher(settings(mqtt_broker.url, username="dev", password=PASSWORD))
    pub.start()
    sub = mqtt_subscriber(mqtt_broker, (STATS,))
    pub.publish_stats({"config": {"mqtt_password": PASSWORD}})
    assert sub.wait_for(STATS).json()["config"]["mqtt_password"] == "***"


@pytest.mark.parametrize("password", ["rock", "2026", "genre", "true"])
def test_a_password_that_is_also_payload_text_changes_no_payload(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
    password: str,
) -> None:
    # The old mask replaced the password anywhere in the payload text: with password 'rock'
    # every subscriber read "genre":"***" (and so learnt the password), with '2026' every
    # timestamp read "***-12-01...". Payloads are data: published exactly as made.
    broker = broker_factory(users={"dev": password})
    sub = mqtt_subscriber(broker, ("homeassistant/sensor/#", STATE), username="dev",
                          password=password)
    pub = make_publisher(settings(broker.url, username="dev", password=password))
    pub.start()
    sent = {**state(4, genre="rock"), "timestamp": "2026-12-01T10:00:00+00:00",
            "flags": {"genre": True}}
    pub.publish_state(sent)
    got = sub.wait_for(STATE, lambda m: m.json()["seq"] == 4).json()
    assert got["genre"] == "rock" and got["timestamp"] == "2026-12-01T10:00:00+00:00"
    assert got["probabilities"] == sent["probabilities"] and got["flags"] == {"genre": True}
    genre = sub.wait_for(f"homeassistant/sensor/{DEVICE}/genre/config").json()
    assert genre["options"] == [*LABELS, "silence", "unknown"]
    assert "***" not in json.dumps(got) + json.dumps(genre)
    assert "masked" not in caplog.text


def test_tls_with_a_generated_ca_and_a_wrong_ca(
    broker_factory: Callable[..., Broker], tls_material: TlsMaterial,
    mqtt_subscriber: Callable[..., Subscriber], make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(tls=tls_material)
    sub = mqtt_subscriber(broker, (STATE,))  # on the plain listener
    pub = make_publisher(settings(broker.tls_url, ca_file=str(tls_material.ca_file)))
    pub.start()
    pub.publish_state(state(5))
    assert sub.wait_for(STATE).json()["seq"] == 5
    pub.stop()

    wrong = str(tls_material.other_ca_file)
    with pytest.raises(BrokerError) as err:
        make_publisher(settings(broker.tls_url, ca_file=wrong)).start(timeout_s=5)
    text = one_line(err.value)
    assert wrong in text and "failed verification" in text and "check mqtt ca_file" in text

    with pytest.raises(ConfigError) as cerr:
        make_publisher(settings(broker.tls_url, ca_file="/nonexistent/ca.pem")).start()
    assert "/nonexistent/ca.pem not found" in one_line(cerr.value)


def wait_for_log(caplog: pytest.LogCaptureFixture, words: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while words not in caplog.text:
        assert time.monotonic() < deadline, f"no log line with {words!r}: {caplog.text}"
        time.sleep(0.02)


def test_service_mode_logs_a_tls_verification_failure_after_a_late_broker(
    broker_factory: Callable[..., Broker], tls_material: TlsMaterial,
    make_publisher: Callable[..., MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    # A service boots before its broker (start(wait=False)); when the broker comes up with
    # a certificate that does not verify, the journal must say so, not only "unreachable".
    caplog.set_level(logging.INFO, logger="firmware_py.mqtt")
    broker = broker_factory(tls=tls_material, start=False)
    wrong = str(tls_material.other_ca_file)
    pub = make_publisher(settings(broker.tls_url, ca_file=wrong))
    pub.start(wait=False)
    assert "(connection refused)" in caplog.text
    broker.start()
    wait_for_log(caplog, "failed verification")
    time.sleep(1.5)  # several more attempts (backoff 0.1-0.5 s): still logged once
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert wrong in errors[0] and "check mqtt ca_file" in errors[0] and "\n" not in errors[0]
    assert not pub.connected and pub.counters["connects"] == 0


def test_lost_broker_warning_names_the_reason(
    mqtt_broker: Broker, make_publisher: Callable[..., MqttPublisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="firmware_py.mqtt")
    pub = make_publisher(settings(mqtt_broker.url))
    pub.start()
    mqtt_broker.kill()
    wait_for_log(caplog, "is unreachable")
    line = next(r.getMessage() for r in caplog.records if "is unreachable" in r.getMessage())
    assert f"127.0.0.1:{mqtt_broker.port} is unreachable (connection refused); retrying" in line


def test_tls_client_certificate(
    broker_factory: Callable[..., Broker], tls_material: TlsMaterial,
    mqtt_subscriber: Callable[..., Subscriber], make_publisher: Callable[..., MqttPublisher],
) -> None:
    broker = broker_factory(tls=tls_material, require_client_cert=True)
    sub = mqtt_subscriber(broker, (STATE,))
    pub = make_publisher(settings(
        broker.tls_url, ca_file=str(tls_material.ca_file), cert_file=str(tls_material.client_cert),
        key_file=str(tls_material.client_key),
    ))
    pub.start()
    pub.publish_state(state(6))
    assert sub.wait_for(STATE).json()["seq"] == 6


# ---------------------------------------------------------------------- concurrency, paho

def test_publishing_from_several_threads_loses_nothing(
    mqtt_broker: Broker, mqtt_subscriber: Callable[..., Subscriber],
    make_publisher: Callable[..., MqttPublisher],
) -> None:
    sub = mqtt_subscriber(mqtt_broker, (STATE,))
    # A small queue forces the "connected but full: wait for room" path.
    pub = make_publisher(settings(mqtt_broker.url, queue_size=20, max_inflight=10))
    pub.start()
    per_thread = 300

    def produce(t: int) -> None:
        for i in range(per_thread):
            pub.publish_state(state(t * per_thread + i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sub.wait_count(STATE, 3 * per_thread, timeout=20)
    got = seqs(sub)
    assert sorted(got) == list(range(3 * per_thread))
    for t in range(3):  # each producer's own order is kept
        mine = [s for s in got if s // per_thread == t]
        assert mine == sorted(mine)
    assert pub.counters["dropped"] == 0


def test_paho_alone_keeps_qos1_messages_published_while_disconnected(
    broker_factory: Callable[..., Broker], mqtt_subscriber: Callable[..., Subscriber],
) -> None:
    """Pins the paho 2.x behaviour the publisher relies on at the edges of an outage.

    A QoS 1 message handed to paho just as the link dies (publish() returns
    MQTT_ERR_NO_CONN) stays in paho's store and is re-sent first after the reconnect. paho
    alone is not enough, though: its store is unbounded and it never drops the oldest, so
    the publisher keeps its own bounded queue and hands paho messages only while connected.
    """
    broker = broker_factory(persistent=True)
    sub = mqtt_subscriber(broker, ("raw/#",), client_id="test-raw-sub", clean_session=False)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-raw-pub")
    c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
    c.connect(HOST, broker.port)
    c.loop_start()
    try:
        c.publish("raw/x", b"before", qos=1).wait_for_publish(5)
        broker.kill()
        deadline = time.monotonic() + 5
        while c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        infos = [c.publish("raw/x", str(i).encode(), qos=1) for i in range(3)]
        assert all(i.rc == mqtt.MQTT_ERR_NO_CONN for i in infos)
        broker.start()
        sub.wait_for("raw/x", lambda m: m.payload == b"2", timeout=10)
        assert [m.payload for m in sub.on_topic("raw/x") if not m.retain] == [b"before", b"0", b"1", b"2"]
    finally:
        c.disconnect()
        c.loop_stop()
