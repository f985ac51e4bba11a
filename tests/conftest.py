"""Shared fixtures: a real mosquitto broker on a free loopback port, TLS material, subscribers.

    def test_x(mqtt_broker, mqtt_subscriber):         # anonymous broker, already running
        sub = mqtt_subscriber(mqtt_broker)            # records "#"; wait_for(topic, pred)

    def test_y(broker_factory, tls_material):         # custom brokers
        b = broker_factory(users={"dev": "pw"}, tls=tls_material, persistent=True)
        b.kill(); b.start()                           # same ports: SIGKILL and restart

A missing mosquitto fails the test (not a skip): CI installs it, and a silently
skipped broker suite would hide broken MQTT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mqtt_helpers import Broker, Subscriber, TlsMaterial, find_mosquitto, make_tls_material


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    try:
        return find_mosquitto()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def broker_factory(mosquitto_bin: str, tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start brokers with ``Broker`` options (``start=False``: configured, not running yet);
    all are killed at teardown."""
    brokers: list[Broker] = []

    def make(*, start: bool = True, **options: Any) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mqtt_broker(broker_factory: Callable[..., Broker]) -> Broker:
    """An anonymous mosquitto on 127.0.0.1:<free port>, no persistence."""
    return broker_factory()


@pytest.fixture
def mqtt_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """``mqtt_subscriber(broker, topics=("#",), **Subscriber options)`` → subscribed client."""
    subs: list[Subscriber] = []

    def make(broker: Broker, topics: tuple[str, ...] = ("#",), **options: Any) -> Subscriber:
        sub = Subscriber(broker.port, topics, **options)
        subs.append(sub)
        return sub.wait_subscribed()

    yield make
    for sub in subs:
        sub.close()


# -- a small real model, trained once per session on synthetic music ----------------------
@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished edge-model training run on the synthetic dataset (~30 s on 2 cores)."""
    from firmware_py.cli import main
    from training.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic-run")
    data = make_dataset(root / "data", clips_per_genre=8, duration_s=6.0, seed=0)
    out = root / "run"
    code = main([
        "train", "--data", str(data), "--out", str(out), "--cache", str(root / "cache"),
        "--epochs", "6", "--crops-per-track", "16", "--batch-size", "32", "--seed", "0",
        "--workers", "2", "--no-evaluate", "-q",
    ])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def synthetic_bundle(synthetic_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic run converted to an int8 bundle (with a float model for comparison)."""
    from converter.convert import convert_run

    out = tmp_path_factory.mktemp("synthetic-bundle") / "bundle"
    convert_run(synthetic_run, out, with_float=True, representative=200)
    return out
