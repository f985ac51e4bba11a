"""End-to-end figures: ``listen`` as fast as possible, a real-time device process, and
capture-to-MQTT-receipt latency.

* **Fast listen**: :func:`~firmware_py.app.run_listen` on a looped file, not paced,
  publishing every state to the broker when one is given; real-time factor = wall
  seconds / audio seconds (start-up, model load, connect and the final flush included).
* **Real-time process**: ``genre-edge listen --input F --realtime --loop`` in a child
  process (the way the service runs); CPU time and peak RSS (``VmHWM``) come from
  ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` over ``seconds`` of steady state,
  starting at its first published state.
* **Capture -> MQTT receipt**: the listen loop's own pieces (file source paced at real
  time, pipeline, :class:`~firmware_py.mqtt.MqttPublisher`) with a subscriber in the
  same process: latency is the time from a block entering the pipeline to the
  subscriber receiving the state that block completed (same monotonic clock).

Benchmark messages go to device id ``bench`` (``genre-edge/bench/...``) with the Home
Assistant discovery prefix ``genre-edge-bench`` so that a real Home Assistant never
sees the benchmark as a device; retained benchmark messages are cleared afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..bundle import Bundle
from .common import failed, not_present, summarize_ms
from .stages import BLOCK_S

BENCH_DEVICE_ID = "bench"
BENCH_DISCOVERY_PREFIX = "genre-edge-bench"
BENCH_TOPIC_PREFIX = f"genre-edge/{BENCH_DEVICE_ID}"


def _mqtt_overrides(mqtt_url: str | None) -> dict[str, Any]:
    if not mqtt_url:
        return {}
    return {"mqtt.url": mqtt_url, "mqtt.device_id": BENCH_DEVICE_ID,
            "mqtt.discovery_prefix": BENCH_DISCOVERY_PREFIX}


def check_broker(mqtt_url: str) -> str | None:
    """None when ``mqtt_url`` is a plain-MQTT broker that accepts a TCP connection, else why not."""
    from ..errors import GenreEdgeError
    from ..mqtt import parse_mqtt_url

    try:
        addr = parse_mqtt_url(mqtt_url)
    except GenreEdgeError as exc:
        return str(exc)
    if addr.tls:
        return "the benchmark subscriber speaks plain mqtt:// only"
    try:
        with socket.create_connection((addr.host, addr.port), timeout=2.0):
            return None
    except OSError as exc:
        return f"cannot reach {addr} ({exc.strerror or exc})"


class StateSubscriber:
    """Records the arrival time (``time.perf_counter``) of every live state message."""

    def __init__(self, mqtt_url: str, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from ..mqtt import parse_mqtt_url, set_tcp_nodelay

        addr = parse_mqtt_url(mqtt_url)
        self.topic = topic
        self.arrivals: dict[float, float] = {}  # audio_t_s -> receipt time
        self.count = 0
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"genre-edge-bench-sub-{os.getpid()}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_socket_open = set_tcp_nodelay
        self.client.connect(addr.host, addr.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(5.0):
            self.close()
            raise TimeoutError(f"the benchmark subscriber got no SUBACK from {addr} in 5 s")

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        t = time.perf_counter()
        if msg.retain:  # a state left by an earlier run, not one of ours
            return
        try:
            key = json.loads(msg.payload)["audio_t_s"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            self.arrivals.setdefault(key, t)
            self.count += 1
            self._cond.notify_all()

    def wait_count(self, n: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.count < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self.count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_retained(mqtt_url: str) -> int:
    """Remove the retained messages the benchmark left (state, availability, discovery)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ..mqtt import parse_mqtt_url

    addr = parse_mqtt_url(mqtt_url)
    topics: set[str] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"genre-edge-bench-clean-{os.getpid()}")
    client.on_connect = lambda c, *_: c.subscribe(
        [(f"{BENCH_TOPIC_PREFIX}/#", 0), (f"{BENCH_DISCOVERY_PREFIX}/#", 0)])
    client.on_message = lambda _c, _u, msg: topics.add(msg.topic) if msg.retain else None
    client.connect(addr.host, addr.port, keepalive=30)
    client.loop_start()
    try:
        time.sleep(0.5)  # retained messages arrive right after the SUBACK
        infos = [client.publish(t, b"", qos=1, retain=True) for t in sorted(topics)]
        for info in infos:
            info.wait_for_publish(2.0)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(topics)


# -- listen as fast as possible -------------------------------------------------------------
def bench_listen_fast(bundle_path: Path, input_path: Path, audio_s: float,
                      mqtt_url: str | None) -> dict[str, Any]:
    """Real-time factor of the whole ``listen`` loop on a file played as fast as possible."""
    from ..app import run_listen
    from ..config import load_config

    overrides = {"bundle": str(bundle_path), "source.input": str(input_path),
                 "source.realtime": False, "source.loop": True, **_mqtt_overrides(mqtt_url)}
    config = load_config(env={}, overrides=overrides)
    stop = threading.Event()
    seen: list[tuple[float, float]] = []  # (wall, audio_t_s) per state

    def on_payload(payload: dict[str, Any]) -> None:
        seen.append((time.perf_counter(), float(payload["audio_t_s"])))
        if payload["audio_t_s"] >= audio_s:
            stop.set()

    sub = StateSubscriber(mqtt_url, f"{BENCH_TOPIC_PREFIX}/state") if mqtt_url else None
    try:
        with open(os.devnull, "w") as devnull:
            t0, cpu0 = time.perf_counter(), time.process_time()
            run_listen(config, on_payload=on_payload, stop=stop, console=devnull)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        received = sub.wait_count(len(seen), 5.0) if sub else None
    finally:
        if sub is not None:
            sub.close()
    if not seen:
        return failed("listen produced no state")
    played_s = seen[-1][1]
    steady = None
    if len(seen) >= 2 and seen[-1][1] > seen[0][1]:
        steady = (seen[-1][0] - seen[0][0]) / (seen[-1][1] - seen[0][1])
    return {
        "input": input_path.name,
        "audio_s": round(played_s, 2),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rtf": round(wall / played_s, 5),
        "rtf_steady": round(steady, 5) if steady is not None else None,
        "states": len(seen),
        "mqtt": mqtt_url if mqtt_url else not_present("no broker given (--mqtt URL)"),
        "states_received": received if sub else not_present("no broker given"),
    }


# -- a real-time device process -------------------------------------------------------------
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of all threads of ``pid`` (``/proc/<pid>/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def listen_command(bundle_path: Path, input_path: Path, mqtt_url: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "firmware_py", "listen", "--bundle", str(bundle_path),
           "--input", str(input_path), "--realtime", "--loop", "--json"]
    if mqtt_url:
        cmd += ["--mqtt", mqtt_url, "--device-id", BENCH_DEVICE_ID]
    return cmd


def bench_realtime_process(bundle_path: Path, input_path: Path, seconds: float,
                           mqtt_url: str | None, window_s: float) -> dict[str, Any] | str:
    """CPU % and peak RSS of ``genre-edge listen --realtime`` in its own process."""
    if not Path("/proc/self/stat").exists():
        return not_present("/proc is not available on this system")
    cmd = listen_command(bundle_path, input_path, mqtt_url)
    # Reproducible: the defaults, not whatever GENRE_EDGE_* this shell carries.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENRE_EDGE_")}
    if mqtt_url:
        env["GENRE_EDGE_MQTT_DISCOVERY_PREFIX"] = BENCH_DISCOVERY_PREFIX
    first_state: list[float] = []
    with tempfile.TemporaryFile() as err:
        t_spawn = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)

        def read() -> None:
            assert proc.stdout is not None
            for _line in proc.stdout:
                if not first_state:
                    first_state.append(time.perf_counter())

        reader = threading.Thread(target=read, name="bench-listen-stdout", daemon=True)
        reader.start()
        try:
            deadline = t_spawn + window_s + 60.0
            while not first_state and proc.poll() is None and time.perf_counter() < deadline:
                time.sleep(0.02)
            if not first_state:
                return failed(_child_failure(proc, err, "no state within "
                                             f"{window_s + 60:.0f} s"))
            cpu_a, t_a = _proc_cpu_s(proc.pid), time.perf_counter()
            while time.perf_counter() - t_a < seconds and proc.poll() is None:
                time.sleep(min(0.1, max(0.0, seconds - (time.perf_counter() - t_a))))
            if proc.poll() is not None:
                return failed(_child_failure(proc, err, "exited during the run"))
            cpu_b, t_b = _proc_cpu_s(proc.pid), time.perf_counter()
            status = proc_status(proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            reader.join(2.0)
    run_s = t_b - t_a
    return {
        "command": " ".join(["genre-edge", *cmd[3:]]),
        "run_s": round(run_s, 2),
        "cpu_percent": round(100.0 * (cpu_b - cpu_a) / run_s, 2),
        "startup_s": round(first_state[0] - t_spawn - window_s, 2),
        "startup_cpu_s": round(cpu_a, 2),
        "peak_rss_mb": round(status.get("VmHWM", 0) / 1024.0, 1),
        "rss_mb": round(status.get("VmRSS", 0) / 1024.0, 1),
        "threads": status.get("Threads"),
        "exit_code": proc.returncode,
        "mqtt": mqtt_url if mqtt_url else not_present("no broker given (--mqtt URL)"),
    }


def _child_failure(proc: subprocess.Popen, err: Any, what: str) -> str:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    err.seek(0)
    lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
    return f"listen {what} (exit {proc.returncode}): {lines[-1] if lines else 'no output'}"


# -- capture -> MQTT receipt ----------------------------------------------------------------
def bench_mqtt_latency(bundle: Bundle, input_path: Path, seconds: float,
                       mqtt_url: str) -> dict[str, Any]:
    """Block enters the pipeline -> subscriber receives the state it completed."""
    from ..app import state_payload
    from ..config import load_config
    from ..pipeline import Pipeline
    from ..sinks.mqtt import make_publisher
    from ..sources import FileSource

    config = load_config(env={}, overrides=_mqtt_overrides(mqtt_url))
    model = bundle.open_model(threads=1)
    # One state per block (hop = block = 0.1 s) gives ~10 samples a second; the
    # device's default hop is 1 s, which changes nothing per message but the count.
    pipeline = Pipeline(bundle, model, inference_hop_s=BLOCK_S)
    source = FileSource(input_path, bundle.frontend.sample_rate, realtime=True,
                        block_s=BLOCK_S, loop=True)
    sub = StateSubscriber(mqtt_url, f"{BENCH_TOPIC_PREFIX}/state")
    publisher = make_publisher(config, bundle)
    sent: dict[float, tuple[float, float]] = {}  # audio_t_s -> (block entered, published)
    nodelay = None
    try:
        publisher.start(wait=True)
        nodelay = publisher.tcp_nodelay()
        first = None
        for block in source.blocks():
            t_in = time.perf_counter()
            for result in pipeline.push(block):
                payload = state_payload(result, bundle.labels, bundle.name)
                t_pub = time.perf_counter()
                publisher.publish_state(payload)
                sent[payload["audio_t_s"]] = (t_in, t_pub)
                first = first if first is not None else t_in
            if first is not None and time.perf_counter() - first >= seconds:
                break
        sub.wait_count(len(sent), 5.0)
    finally:
        source.close()
        publisher.stop()
        sub.close()
    total, pipe, transport = [], [], []
    for key, (t_in, t_pub) in sent.items():
        t_rx = sub.arrivals.get(key)
        if t_rx is None:
            continue
        total.append(t_rx - t_in)
        pipe.append(t_pub - t_in)
        transport.append(t_rx - t_pub)
    return {
        "url": mqtt_url,
        "inference_hop_s": BLOCK_S,
        "block_s": BLOCK_S,
        "states_sent": len(sent),
        "states_received": len(total),
        "capture_to_receipt_ms": summarize_ms(total),
        "pipeline_ms": summarize_ms(pipe),
        "publish_to_receipt_ms": summarize_ms(transport),
        "tcp_nodelay": nodelay,
        "note": ("TCP_NODELAY on the publisher's socket: without it Nagle's algorithm plus the "
                 "broker's delayed ACK can hold a small PUBLISH back ~40 ms"),
    }


# -- where the memory goes --------------------------------------------------------------------
_FOOTPRINT_SCRIPT = """
import importlib, json, sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
steps = [["python", rss_mb()]]
for name in sys.argv[1:]:
    if name == "@frontend":  # lazy loads (the FFT engine) happen on the first push
        import numpy as np
        from firmware_py.features import StreamingLogMel
        StreamingLogMel().push(np.zeros(16000, np.float32))
        name = "front-end, first push"
    elif name == "@resampler":  # libsoxr loads with the first resampler that resamples
        import numpy as np
        from firmware_py.audio import StreamingResampler
        StreamingResampler(48000, 16000).push(np.zeros(4800, np.float32))
        name = "resampler 48 kHz, first push"
    elif name.startswith("@model="):
        import numpy as np
        from firmware_py.bundle import load_bundle
        model = load_bundle(name[7:]).open_model()
        model.predict(np.zeros(model.input_shape[1:3], np.float32))
        name = "model loaded, one inference"
    else:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    steps.append([name, rss_mb()])
std = set(sys.stdlib_module_names) | {"firmware_py", "_distutils_hack"}
tops = {m.split(".")[0] for m in list(sys.modules)}
print(json.dumps({"steps": steps, "third_party": sorted(t for t in tops
                  if t not in std and not t.startswith("_"))}))
"""
#: The device process's imports, in the order it makes them; each step's RSS growth is
#: reported, then which third-party packages the device ended up loading. paho is imported
#: the device's way, through firmware_py.mqtt.client (without urllib.request and uuid).
FOOTPRINT_MODULES = ("numpy", "firmware_py.mqtt.client", "ai_edge_litert.interpreter",
                     "tflite_runtime.interpreter", "firmware_py.features", "firmware_py.audio",
                     "firmware_py.app", "firmware_py.sources", "firmware_py.cli")


def import_footprint(bundle_path: Path) -> dict[str, Any] | str:
    """Resident memory added by each import of the device process, then by the first
    front-end push, the first resampler push (a 48 kHz microphone) and the model, in a
    fresh interpreter."""
    if not Path("/proc/self/status").exists():
        return not_present("/proc is not available on this system")
    steps_args = [*FOOTPRINT_MODULES, "@frontend", "@resampler", f"@model={bundle_path}"]
    res = subprocess.run([sys.executable, "-c", _FOOTPRINT_SCRIPT, *steps_args],
                         capture_output=True, text=True, timeout=120)
    if res.returncode:
        return failed(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "no output")
    data = json.loads(res.stdout)
    steps, before = [], 0.0
    for name, rss in data["steps"]:
        steps.append({"module": name, "rss_mb": round(rss, 1), "added_mb": round(rss - before, 1)})
        before = rss
    return {"steps": steps, "third_party": data["third_party"]}
