"""The sink seam: the typed state, its JSON document, and a sink added through the registry."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import numpy as np

from firmware_py import sinks
from firmware_py.app import run_listen, state_payload
from firmware_py.commands import DEMO_CLIP
from firmware_py.config import load_config
from firmware_py.sinks.base import Sink, SinkContext
from firmware_py.smoothing import SmoothedState
from firmware_py.state import HopState

LABELS = ["classical", "rock"]


def _result(raw: list[float]) -> Any:
    state = SmoothedState(genre="rock", confidence=0.912345, level_dbfs=-20.04,
                          probabilities={"classical": 0.087655, "rock": 0.912345}, changed=True)
    return SimpleNamespace(state=state, t_s=3.014, probabilities=np.array(raw, dtype=np.float32))


def test_the_state_document_keeps_its_keys_order_and_rounding() -> None:
    doc = state_payload(_result([0.1, float("nan")]), LABELS, "m1")
    assert list(doc) == ["genre", "confidence", "probabilities", "level_dbfs", "model",
                         "timestamp", "audio_t_s", "changed", "raw"]
    assert doc["confidence"] == 0.9123 and doc["level_dbfs"] == -20.0 and doc["audio_t_s"] == 3.01
    assert doc["raw"] == {"classical": 0.1, "rock": None} and doc["changed"] is True
    assert doc["timestamp"].endswith("+00:00")


def test_extra_keys_come_last_and_leave_the_original_alone() -> None:
    state = HopState.from_hop(_result([0.2, 0.8]), LABELS, "m1")
    more = state.with_extra({"sounds_like": None})
    assert list(more.to_dict())[-1] == "sounds_like" and "sounds_like" not in state.to_dict()
    assert state.with_extra({}) is state
    more.to_dict()["raw"]["rock"] = 5.0  # every call is a new document
    assert more.to_dict()["raw"]["rock"] == 0.8


class Recorder(Sink):
    name = "recorder"

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    def start(self, stop: Any) -> None:
        self.calls.append("start")

    def contribute(self, result: Any) -> dict[str, Any]:
        return {"recorded": round(result.t_s, 2)}

    def publish(self, state: HopState) -> None:
        self.calls.append(state)

    def stop(self) -> None:
        self.calls.append("stop")


def test_a_sink_added_to_the_registry_is_started_fed_and_stopped(monkeypatch) -> None:
    """Adding a sink is a registry entry: the loop itself does not change."""
    calls: list[Any] = []

    def build(ctx: SinkContext) -> Recorder:
        assert ctx.bundle.labels and ctx.pipeline.inference_hop_s > 0
        return Recorder(calls)

    monkeypatch.setattr(sinks, "REGISTRY", (*sinks.REGISTRY, ("recorder", build)))
    config = load_config(env={}, overrides={"source.input": str(DEMO_CLIP),
                                            "source.realtime": False, "output.json": True})
    console = io.StringIO()
    got: list[dict] = []
    assert run_listen(config, on_payload=got.append, console=console) == 0
    assert calls[0] == "start" and calls[-1] == "stop"
    states = calls[1:-1]
    assert states and all(isinstance(s, HopState) for s in states)
    lines = [json.loads(line) for line in console.getvalue().splitlines()]
    # every sink saw every state, with the contributed key, as the same document
    assert [s.to_dict() for s in states] == lines == got
    assert all(doc["recorded"] == doc["audio_t_s"] for doc in got)


UDP_SINK = '''
"""A sink written for the test: every state as one UDP datagram to [udp] host:port."""
import json
import socket
from dataclasses import dataclass
from typing import ClassVar

from ..bounds import knob, setting
from .base import Sink

ORDER = 60


@dataclass
class UdpSettings:
    SECTION: ClassVar[str] = "udp"
    FLAG_GROUP: ClassVar[str] = "UDP broadcast"

    host: str | None = setting(None, example="127.0.0.1", flag="--udp-host",
                               help="Send every state to this host. Default: unset = off.")
    port: int = knob(9999, 1, 65535, help="Its UDP port.")
    genre_only: bool = setting(False, live=True, help="Send only the genre.")
    token: str | None = setting(None, secret=True, example="change-me",
                                help="A shared secret (unused here).")


SETTINGS = UdpSettings


class UdpSink(Sink):
    name = "udp"

    def __init__(self, settings):
        self.settings = settings
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def publish(self, state):
        doc = state.to_dict()
        if self.settings.genre_only:
            doc = {"genre": doc["genre"]}
        self.sock.sendto(json.dumps(doc).encode(), (self.settings.host, self.settings.port))

    def reload(self, config):
        self.settings.genre_only = config.udp.genre_only

    def stop(self):
        self.sock.close()


def build(ctx):
    return UdpSink(ctx.config.udp) if ctx.config.udp.host else None
'''


def test_a_new_sink_is_one_file_with_its_settings(tmp_path) -> None:
    """The issue's measure of the seam: a copy of the package plus one file, udp.py, and
    nothing else changed. Its [udp] section is read from the file and the environment, it
    has its flag in --help and its keys in the example file, and it gets every state."""
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import firmware_py

    copy = tmp_path / "firmware_py"
    shutil.copytree(Path(firmware_py.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "models"))
    (copy / "models").symlink_to(Path(firmware_py.__file__).parent / "models")
    (copy / "sinks" / "udp.py").write_text(UDP_SINK)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(60)
    port = receiver.getsockname()[1]
    (tmp_path / "config.toml").write_text(f'[udp]\nhost = "127.0.0.1"\nport = {port}\n')
    env = {"PYTHONPATH": str(tmp_path), "GENRE_EDGE_UDP_GENRE_ONLY": "yes",
           "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-c", "import sys; from firmware_py.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "listen"]

    def cli(*args: str) -> str:
        done = subprocess.run([*run, *args], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "--udp-host" in cli("--help") and "UDP broadcast" in cli("--help")
    example = cli("--example-config")
    assert "[udp]" in example and "# port = 9999" in example and "(live)" in example
    printed = json.loads(cli("--config", "config.toml", "--print-config"))
    assert printed["udp"] == {"host": "127.0.0.1", "port": port, "genre_only": True, "token": None}
    # a secret declared on the new sink's field is one rule: redacted when printed, and
    # never echoed by an error message (a PIN-like value without quotes)
    env["GENRE_EDGE_UDP_TOKEN"] = "s3cr3t-token"
    assert json.loads(cli("--config", "config.toml", "--print-config"))["udp"]["token"] == "***"
    del env["GENRE_EDGE_UDP_TOKEN"]
    (tmp_path / "bad.toml").write_text("[udp]\ntoken = 73914682\n")
    bad = subprocess.run([*run, "--config", "bad.toml", "--print-config"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode != 0 and "udp.token" in bad.stderr and "quotes" in bad.stderr
    assert "73914682" not in bad.stderr + bad.stdout
    cli("--config", "config.toml", "--input", str(DEMO_CLIP), "--fast", "--changes-only")
    first = json.loads(receiver.recv(65536))
    receiver.close()
    assert set(first) == {"genre"} and first["genre"]
