"""``genre-edge bench``: the JSON schema on short runs (docs/performance.md is the contract).

Two real runs: the bundled int8 model without a broker, and a bundle that also carries a
float32 model, against a real mosquitto. Both run in a child process, the way a user
runs them, and the first also proves the device benchmark imports neither TensorFlow nor
librosa. No timing is asserted: speed targets are reported by the benchmark, not tested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from firmware_py.bench.common import is_absent, not_present
from firmware_py.bench.end_to_end import BENCH_TOPIC_PREFIX, check_broker
from firmware_py.bench.suite import TARGETS, failures, format_table, targets
from firmware_py.bundle import write_bundle
from firmware_py.cli import main
from firmware_py.features import DEFAULT_PARAMS
from tests.mqtt_helpers import free_port
from tests.paths import REPO
from tests.tflite_models import tiny_float_model, write_tiny_model

LABELS = ["classical", "electronic", "pop", "rock"]
PCT_KEYS = {"p50", "p95", "p99", "mean", "min", "max", "n"}
TOP_KEYS = {"schema_version", "kind", "genre_edge_version", "created", "command", "settings",
            "device", "bundle", "stages", "end_to_end", "device_after", "targets", "duration_s"}
DEVICE_KEYS = {"cpu_model", "cores", "machine", "os", "memory_mb", "pi_model", "cpu_governor",
               "temperature_c", "throttled", "cpu_mhz", "load_avg", "runtime", "python",
               "python_implementation", "numpy", "blas_threads", "scipy", "paho_mqtt"}
NP = "not present"


def run_bench(out: Path, *args: str, timeout: float = 120) -> tuple[dict[str, Any], str, list[str]]:
    """Run the benchmark in a child process; return (JSON, stdout, heavy modules imported)."""
    code = (
        "import sys, json\n"
        "from firmware_py.cli import main\n"
        f"rc = main(['bench', *{list(args)!r}, '--json', {str(out)!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'librosa'})\n"
        "print('HEAVY', json.dumps(heavy))\n"
        "sys.exit(rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENRE_EDGE_")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, cwd=REPO, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    heavy_line = [ln for ln in res.stdout.splitlines() if ln.startswith("HEAVY ")][-1]
    return json.loads(out.read_text()), res.stdout, json.loads(heavy_line[6:])


def walk(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in walk(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [x for i, v in enumerate(obj) for x in walk(v, f"{path}[{i}]")]
    return [(path, obj)]


def check_pct(summary: Any, what: str) -> None:
    assert isinstance(summary, dict), f"{what}: {summary}"
    assert set(summary) == PCT_KEYS, what
    assert summary["n"] > 0, what
    assert 0 <= summary["min"] <= summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"], what


def check_common(doc: dict[str, Any], seconds: float) -> None:
    """Everything that holds for any bundle, with or without a broker, on any machine."""
    assert set(doc) == TOP_KEYS
    assert doc["schema_version"] == 1 and doc["kind"] == "genre-edge-bench"
    assert doc["settings"]["seconds"] == seconds
    # nothing failed; what this machine lacks says so instead
    broken = [(p, v) for p, v in walk(doc) if isinstance(v, str) and v.startswith("failed")]
    assert not broken, broken

    dev = doc["device"]
    assert set(dev) == DEVICE_KEYS
    assert isinstance(dev["cores"], int) and dev["cores"] >= 1
    assert dev["runtime"]["name"] in ("ai_edge_litert", "tflite_runtime")
    if not Path("/proc/device-tree/model").exists():
        assert dev["pi_model"] == NP
    if not list(Path("/sys/class/thermal").glob("thermal_zone*")):
        assert dev["temperature_c"] == NP
    else:
        assert isinstance(dev["temperature_c"], float) or dev["temperature_c"].startswith(NP)
    if not any((Path(p) / "vcgencmd").exists() for p in os.get_exec_path()):
        assert dev["throttled"] == NP
    assert set(doc["device_after"]) == {"temperature_c", "throttled", "cpu_mhz", "load_avg"}

    st = doc["stages"]
    assert set(st) == {"resample", "frontend", "inference", "edgetpu"}
    assert set(st["resample"]) == {"44100", "48000"}
    for rate, r in st["resample"].items():
        assert r["source_rate_hz"] == int(rate) and r["target_rate_hz"] == 16000
        check_pct(r["per_audio_s_ms"], f"resample {rate}")
        # CPU against the former polyphase FIR, same process: reported, never asserted
        assert r["resampler"] == "soxr-HQ"
        assert r["cpu_ms_per_audio_s"] > 0 and r["polyphase_cpu_ms_per_audio_s"] > 0
        assert r["speedup_vs_polyphase"] > 0
    fe = st["frontend"]
    for key in ("per_frame_hop_ms", "per_block_ms", "per_inference_hop_ms"):
        check_pct(fe[key], key)
    assert fe["cpu_ms_per_audio_s"] > 0 and fe["frame_hop_samples"] == 160

    inf = st["inference"]
    assert "tensorflow" not in inf["backends"] and inf["backends"]
    assert inf["window_shape"] == [doc["bundle"]["window_frames"], doc["bundle"]["n_mels"]]
    for run in inf["runs"]:
        assert set(run) == {"backend", "file", "threads", "xnnpack", "model", "per_window_ms"}
        check_pct(run["per_window_ms"], f"inference {run}")
    int8 = [r for r in inf["runs"] if r["model"] == "int8"]
    assert sorted((r["backend"], r["threads"], r["xnnpack"]) for r in int8) == sorted(
        (b, t, x) for b in inf["backends"] for t in range(1, dev["cores"] + 1) for x in (True, False))
    tpu = st["edgetpu"]
    assert isinstance(tpu, dict) or tpu.startswith(NP)  # no Coral here: "not present: ..."

    e2e = doc["end_to_end"]
    assert set(e2e) == {"listen_fast", "realtime_process", "memory_by_import", "mqtt_latency"}
    fast = e2e["listen_fast"]
    assert fast["rtf"] > 0 and fast["wall_s"] > 0 and fast["states"] > 0
    assert fast["audio_s"] >= 30 * seconds
    rt = e2e["realtime_process"]
    assert rt["peak_rss_mb"] > 0 and rt["peak_rss_mb"] >= rt["rss_mb"] > 0
    assert rt["cpu_percent"] >= 0 and rt["run_s"] >= seconds and rt["exit_code"] == 0
    assert rt["command"].startswith("genre-edge listen ") and "--realtime" in rt["command"]
    mem = e2e["memory_by_import"]
    assert mem["steps"][0]["module"] == "python"
    assert any(m["module"] == "numpy" and m["added_mb"] > 0 for m in mem["steps"])
    assert "numpy" in mem["third_party"] and not {"tensorflow", "librosa"} & set(mem["third_party"])
    modules = [m["module"] for m in mem["steps"]]
    assert modules.index("front-end, first push") < modules.index("resampler 48 kHz, first push")
    assert "soxr" in mem["third_party"]  # loaded by the first resampler, not by an import

    assert [t["key"] for t in doc["targets"]] == [t[0] for t in TARGETS]
    for t in doc["targets"]:
        assert t["met"] in (True, False, None)
        assert (t["met"] is None) == is_absent(t["measured"]), t
    by_key = {t["key"]: t for t in doc["targets"]}
    assert by_key["inference_p50_ms"]["measured"] == next(
        r for r in int8 if r["threads"] == 1 and r["xnnpack"])["per_window_ms"]["p50"]
    assert by_key["frontend_speedup_vs_librosa"]["met"] is None  # that is 'bench frontend'


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, list[str]]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    return run_bench(out, "--seconds", "1")


def test_bench_int8_bundle_without_broker(int8_run) -> None:
    doc, stdout, heavy = int8_run
    assert heavy == []  # device-light: no TensorFlow, no librosa
    check_common(doc, 1.0)
    assert doc["bundle"]["files"]["model"]["path"] == "model.tflite"
    inf = doc["stages"]["inference"]
    assert inf["float_model_bytes"].startswith(NP)
    assert {r["model"] for r in inf["runs"]} == {"int8"}
    e2e = doc["end_to_end"]
    assert e2e["mqtt_latency"].startswith(NP) and "--mqtt" in e2e["mqtt_latency"]
    assert e2e["listen_fast"]["mqtt"].startswith(NP)
    assert e2e["realtime_process"]["mqtt"].startswith(NP)
    by_key = {t["key"]: t for t in doc["targets"]}
    assert by_key["capture_to_mqtt_p95_ms"]["met"] is None
    assert "MQTT off: no broker given" in by_key["listen_fast_rtf"]["note"]
    for text in ("device", "stages", "end to end", "targets", "infer int8", "Edge TPU",
                 "capture -> MQTT receipt", NP):
        assert text in stdout, text


def test_table_and_targets_survive_missing_sections(int8_run) -> None:
    doc = json.loads(json.dumps(int8_run[0]))
    doc["device"]["runtime"] = not_present("no runtime")
    doc["stages"] = {"resample": "failed: x", "frontend": not_present(), "inference":
                     {**doc["stages"]["inference"], "runs": not_present("no runtime")},
                     "edgetpu": not_present()}
    doc["end_to_end"] = {k: not_present("skipped") for k in doc["end_to_end"]}
    doc["targets"] = targets(doc)
    measured = {t["key"]: t["met"] for t in doc["targets"]}
    assert measured["model_kb"] is True
    assert all(v is None for k, v in measured.items() if k != "model_kb")
    table = format_table(doc)
    assert "failed: x" in table and "not measured" in table
    assert failures(doc) == ["stages.resample: failed: x"]  # what makes the command exit 1
    assert failures(int8_run[0]) == []


@pytest.fixture(scope="module")
def float_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with an int8 model and a float32 model_float.tflite (as convert --float makes)."""
    d = tmp_path_factory.mktemp("float-bundle")
    # a 1 s window: the real-time runs reach their first state 2 s sooner than with 3 s
    p = dataclasses.replace(DEFAULT_PARAMS, window_frames=100)
    int8 = write_tiny_model(d / "int8.tflite", p.window_frames, p.n_mels, len(LABELS))
    flt = d / "float.tflite"
    flt.write_bytes(tiny_float_model(p.window_frames, p.n_mels, len(LABELS)))
    return write_bundle(d / "bundle", model=int8, float_model=flt, labels=LABELS, frontend=p,
                        inference_hop_s=1.0, name="tiny-float")


def test_bench_float_bundle_with_broker(float_bundle, mqtt_broker, mqtt_subscriber,
                                        tmp_path: Path) -> None:
    doc, stdout, _ = run_bench(tmp_path / "bench.json", "--bundle", str(float_bundle),
                               "--seconds", "1", "--mqtt", mqtt_broker.url)
    check_common(doc, 1.0)
    assert set(doc["bundle"]["files"]) == {"model", "float_model"}
    inf = doc["stages"]["inference"]
    assert isinstance(inf["float_model_bytes"], int) and inf["float_model_bytes"] > 0
    floats = [r for r in inf["runs"] if r["model"] == "float32"]
    assert floats and all(r["file"] == "model_float.tflite" for r in floats)
    assert sorted((r["backend"], r["threads"], r["xnnpack"]) for r in floats) == sorted(
        (b, t, x) for b in inf["backends"] for t in range(1, doc["device"]["cores"] + 1)
        for x in (True, False))
    assert "infer float32" in stdout

    e2e = doc["end_to_end"]
    fast = e2e["listen_fast"]
    assert fast["mqtt"] == mqtt_broker.url and fast["states_received"] == fast["states"]
    assert e2e["realtime_process"]["mqtt"] == mqtt_broker.url
    lat = e2e["mqtt_latency"]
    assert lat["url"] == mqtt_broker.url and lat["tcp_nodelay"] is True
    assert lat["states_sent"] > 0 and lat["states_received"] == lat["states_sent"]
    for key in ("capture_to_receipt_ms", "pipeline_ms", "publish_to_receipt_ms"):
        check_pct(lat[key], key)
    by_key = {t["key"]: t for t in doc["targets"]}
    assert by_key["capture_to_mqtt_p95_ms"]["measured"] == lat["capture_to_receipt_ms"]["p95"]
    assert by_key["capture_to_mqtt_p95_ms"]["met"] in (True, False)
    assert "note" not in by_key["listen_fast_rtf"]

    # the benchmark cleans up after itself: no retained bench state or discovery remains
    sub = mqtt_subscriber(mqtt_broker, (f"{BENCH_TOPIC_PREFIX}/#", "genre-edge-bench/#",
                                        "homeassistant/#"))
    time.sleep(0.5)
    assert [m.topic for m in sub.messages] == []


def test_unreachable_broker_is_reported_not_fatal() -> None:
    why = check_broker(f"mqtt://127.0.0.1:{free_port()}")
    assert why and "cannot reach" in why
    assert "plain mqtt://" in check_broker("mqtts://127.0.0.1:8883")
    assert check_broker("http://x") is not None


def test_bench_rejects_bad_seconds(capsys) -> None:
    assert main(["bench", "--seconds", "0"]) == 2
    assert "--seconds 0 is out of range: give seconds in (0, 3600]" in capsys.readouterr().err
