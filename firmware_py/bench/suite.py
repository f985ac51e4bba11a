"""``genre-edge bench``: the device benchmark, as one JSON document and a readable table.

:func:`run_bench` measures, in this order: the device description, the per-stage
latencies (resampling, front-end, inference matrix, Edge TPU), then the end-to-end
figures (listen as fast as possible, a real-time listen process, capture-to-MQTT
latency), and checks them against the project's speed targets. Every section that
cannot run on this machine is a ``"not present: <why>"`` string; a section that raised
is ``"failed: <error>"``; the rest of the run goes on either way. The key names are
documented in ``docs/performance.md`` and only ever grow (``schema_version`` changes
if one is renamed or removed).

Device-light: numpy, scipy, paho-mqtt and the TFLite runtime only; no TensorFlow,
no librosa (the librosa comparison is ``genre-edge bench frontend``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..audio import load_audio
from ..bundle import load_bundle
from .common import FAILED, failed, is_absent, not_present
from .end_to_end import (
    bench_listen_fast,
    bench_mqtt_latency,
    bench_realtime_process,
    check_broker,
    clear_retained,
    import_footprint,
)
from .stages import (
    BLOCK_S,
    bench_edgetpu,
    bench_frontend,
    bench_inference,
    bench_resample,
    real_windows,
)
from .system import changing_state, describe_device

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Seconds of audio for the resampling and front-end stages (cheap: well under a second).
STAGE_AUDIO_S = 60.0
#: ``listen --fast`` plays this many times ``--seconds`` of audio.
FAST_AUDIO_PER_SECOND = 30.0
RESAMPLE_RATES_HZ = (44100, 48000)

#: (key, description, comparison, limit, unit); measured values come from :func:`targets`.
TARGETS = (
    ("inference_p50_ms", "inference p50 per window (int8, 1 thread)", "<=", 1.0, "ms"),
    ("model_kb", "model size (int8)", "<=", 250.0, "kB"),
    ("frontend_cpu_ms_per_audio_s", "streaming front-end CPU per audio second", "<=", 1.0, "ms"),
    ("frontend_speedup_vs_librosa", "front-end speed-up vs librosa per hop", ">=", 10.0, "x"),
    ("listen_fast_rtf", "listen --fast real-time factor (MQTT on)", "<=", 0.01, ""),
    ("capture_to_mqtt_p95_ms", "capture -> MQTT receipt p95", "<=", 50.0, "ms"),
    ("peak_rss_mb", "device process peak RSS", "<=", 60.0, "MB"),
)


def _section(name: str, fn: Callable[[], Any], progress: Callable[[str], None]) -> Any:
    progress(name)
    start = time.perf_counter()
    try:
        return fn()
    except Exception as exc:  # one broken section must not lose the others' figures
        log.debug("bench section %s failed", name, exc_info=True)
        return failed(f"{type(exc).__name__}: {exc}")
    finally:
        log.info("bench: %s took %.1f s", name, time.perf_counter() - start)


def run_bench(
    bundle_path: str | Path,
    input_path: str | Path,
    *,
    seconds: float = 20.0,
    mqtt_url: str | None = None,
    command: str = "genre-edge bench",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure everything; return the JSON document (see ``docs/performance.md``).

    Parameters
    ----------
    bundle_path : path
        Model bundle directory.
    input_path : path
        Real audio (any format :func:`~firmware_py.audio.load_audio` reads), looped as needed.
    seconds : float
        Length of each real-time run (the listen process and the MQTT latency run, each
        after its first state); ``listen --fast`` plays ``30 * seconds`` of audio and each
        inference configuration gets up to ``seconds / 10`` s (0.2 to 2 s).
    mqtt_url : str, optional
        Broker for the MQTT parts (``mqtt://host:port``); None skips them.
    """
    progress = progress or (lambda _msg: None)
    t_start = time.perf_counter()
    bundle_path, input_path = Path(bundle_path), Path(input_path)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "genre-edge-bench",
        "genre_edge_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "settings": {"seconds": seconds, "input": input_path.name, "bundle": str(bundle_path),
                     "mqtt_url": mqtt_url, "block_s": BLOCK_S,
                     "stage_audio_s": STAGE_AUDIO_S,
                     "fast_audio_s": FAST_AUDIO_PER_SECOND * seconds},
    }
    # The bundle and the input first: a bad one is the command's one-line error, before
    # any progress line.
    bundle = load_bundle(bundle_path)
    fe = bundle.frontend
    audio = load_audio(input_path, fe.sample_rate)
    windows = real_windows(audio, fe)
    doc["device"] = _section("device", describe_device, progress)
    doc["bundle"] = {
        "path": str(bundle.path), "name": bundle.name, "labels": bundle.labels,
        "sample_rate_hz": fe.sample_rate, "window_frames": fe.window_frames,
        "n_mels": fe.n_mels, "inference_hop_s": bundle.inference_hop_s,
        "files": {key: {"path": e["path"], "bytes": (bundle.path / e["path"]).stat().st_size}
                  for key, e in bundle.files.items()},
    }
    cores = int(doc["device"]["cores"]) if isinstance(doc["device"], dict) else 1
    budget_s = min(2.0, max(0.2, seconds / 10.0))

    stages: dict[str, Any] = {}
    stages["resample"] = _section(
        "resampling",
        lambda: bench_resample({r: load_audio(input_path, r) for r in RESAMPLE_RATES_HZ},
                               fe.sample_rate, audio_s=STAGE_AUDIO_S), progress)
    stages["frontend"] = _section(
        "front-end", lambda: bench_frontend(audio, fe, bundle.inference_hop_s, audio_s=STAGE_AUDIO_S),
        progress)
    stages["inference"] = _section(
        "inference", lambda: bench_inference(bundle, windows, max_threads=cores,
                                             budget_s=budget_s), progress)
    stages["edgetpu"] = _section(
        "edge tpu", lambda: bench_edgetpu(bundle, windows, budget_s=budget_s), progress)
    doc["stages"] = stages

    broker_problem = check_broker(mqtt_url) if mqtt_url else "no broker given (--mqtt URL)"
    url = None if broker_problem else mqtt_url
    e2e: dict[str, Any] = {}
    e2e["listen_fast"] = _section(
        "listen --fast",
        lambda: bench_listen_fast(bundle_path, input_path, FAST_AUDIO_PER_SECOND * seconds, url),
        progress)
    e2e["realtime_process"] = _section(
        "listen --realtime process",
        lambda: bench_realtime_process(bundle_path, input_path, seconds, url, fe.window_s),
        progress)
    if not url:  # say why MQTT was off (no --mqtt, or a broker that cannot be reached)
        for key in ("listen_fast", "realtime_process"):
            if isinstance(e2e[key], dict):
                e2e[key]["mqtt"] = not_present(broker_problem)
    e2e["memory_by_import"] = _section("memory by import",
                                       lambda: import_footprint(bundle_path), progress)
    if url:
        e2e["mqtt_latency"] = _section(
            "capture -> MQTT", lambda: bench_mqtt_latency(bundle, input_path, seconds, url),
            progress)
        try:
            clear_retained(url)
        except Exception as exc:  # cosmetic: stale retained bench topics on the broker
            log.warning("could not clear the benchmark's retained MQTT messages: %s", exc)
    else:
        e2e["mqtt_latency"] = not_present(broker_problem)
    doc["end_to_end"] = e2e
    doc["device_after"] = changing_state()
    doc["targets"] = targets(doc)
    doc["duration_s"] = round(time.perf_counter() - t_start, 1)
    return doc


def failures(doc: Any, path: str = "") -> list[str]:
    """Dotted paths of every ``"failed: ..."`` value in the document."""
    if isinstance(doc, dict):
        return [f for k, v in doc.items() for f in failures(v, f"{path}.{k}" if path else k)]
    if isinstance(doc, list):
        return [f for i, v in enumerate(doc) for f in failures(v, f"{path}[{i}]")]
    return [f"{path}: {doc}"] if isinstance(doc, str) and doc.startswith(FAILED) else []


# -- targets ----------------------------------------------------------------------------------
def headline_inference(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The int8 model, first backend, 1 thread, XNNPACK on (the configuration listen uses)."""
    inf = doc.get("stages", {}).get("inference")
    if not isinstance(inf, dict) or not isinstance(inf.get("runs"), list):
        return None
    for run in inf["runs"]:
        if (run["file"] == doc["bundle"]["files"]["model"]["path"] and run["threads"] == 1
                and run["xnnpack"] and isinstance(run["per_window_ms"], dict)):
            return run
    return None


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return obj if is_absent(obj) else None
        obj = obj[key]
    return obj


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    head = headline_inference(doc)
    fast = _get(doc, "end_to_end", "listen_fast")
    measured: dict[str, Any] = {
        "inference_p50_ms": head["per_window_ms"]["p50"] if head else not_present(),
        "model_kb": round(doc["bundle"]["files"]["model"]["bytes"] / 1000.0, 1),
        "frontend_cpu_ms_per_audio_s": _get(doc, "stages", "frontend", "cpu_ms_per_audio_s"),
        "frontend_speedup_vs_librosa": not_present(
            "see 'genre-edge bench frontend'; it needs librosa, a dev dependency"),
        "listen_fast_rtf": _get(fast, "rtf"),
        "capture_to_mqtt_p95_ms": _get(doc, "end_to_end", "mqtt_latency",
                                       "capture_to_receipt_ms", "p95"),
        "peak_rss_mb": _get(doc, "end_to_end", "realtime_process", "peak_rss_mb"),
    }
    out = []
    for key, description, comparison, limit, unit in TARGETS:
        value = measured[key]
        if value is None:
            value = not_present()
        met = None
        if isinstance(value, (int, float)):
            met = value <= limit if comparison == "<=" else value >= limit
        entry = {"key": key, "description": description, "comparison": comparison,
                 "limit": limit, "unit": unit, "measured": value, "met": met}
        if key == "listen_fast_rtf" and isinstance(fast, dict) and is_absent(fast.get("mqtt")):
            entry["note"] = f"measured with MQTT off: {fast['mqtt'].partition(': ')[2]}"
        out.append(entry)
    return out


# -- table --------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct_row(label: str, s: Any, width: int) -> str:
    if not isinstance(s, dict):
        return f"  {label:<{width}}  {s}"
    return (f"  {label:<{width}}  {_fmt(s['p50']):>8} {_fmt(s['p95']):>8} {_fmt(s['p99']):>8}"
            f" {s['n']:>6}")


def format_table(doc: dict[str, Any]) -> str:
    width = 52
    lines: list[str] = []
    dev = doc["device"]
    b = doc["bundle"]
    lines.append(f"genre-edge bench: bundle {b['name']} "
                 f"({b['files']['model']['bytes'] / 1000:.1f} kB int8), audio "
                 f"{doc['settings']['input']}, {doc['duration_s']} s")
    lines.append("device")
    if isinstance(dev, dict):
        rt = dev["runtime"]
        runtime = f"{rt['name']} {rt['version']}" if isinstance(rt, dict) else rt
        rows = [
            ("CPU", f"{dev['cpu_model']}, {dev['cores']} cores ({dev['machine']})"),
            ("Raspberry Pi", dev["pi_model"]),
            ("temperature (C), start -> end",
             f"{dev['temperature_c']} -> {doc['device_after']['temperature_c']}"),
            ("throttling (end)", doc["device_after"]["throttled"]),
            ("load average 1/5/15 min, start", dev["load_avg"]),
            ("runtime", f"{runtime}; Python {dev['python']}; numpy {dev['numpy']}"),
            ("BLAS threads", dev["blas_threads"]),
        ]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    else:
        lines.append(f"  {dev}")
    lines.append(f"stages (wall ms)  {'':<{width - 17}}  {'p50':>8} {'p95':>8} {'p99':>8} {'n':>6}")
    st = doc["stages"]
    if isinstance(st["resample"], dict):
        for rate, r in st["resample"].items():
            lines.append(_pct_row(f"resample {rate} -> {r['target_rate_hz']} Hz, per audio s",
                                  r["per_audio_s_ms"], width))
            label = f"  CPU ms per audio s, {r['resampler']} vs polyphase FIR"
            lines.append(f"  {label:<{width}}  {_fmt(r['cpu_ms_per_audio_s']):>8} vs "
                         f"{_fmt(r['polyphase_cpu_ms_per_audio_s'])} "
                         f"({_fmt(r['speedup_vs_polyphase'])}x)")
    else:
        lines.append(_pct_row("resample", st["resample"], width))
    fe = st["frontend"]
    if isinstance(fe, dict):
        lines.append(_pct_row(f"front-end per 10 ms hop ({fe['frame_hop_samples']} samples)",
                              fe["per_frame_hop_ms"], width))
        lines.append(_pct_row(f"front-end per {BLOCK_S} s block", fe["per_block_ms"], width))
        lines.append(_pct_row(f"front-end per {fe['inference_hop_s']} s inference hop",
                              fe["per_inference_hop_ms"], width))
        lines.append(f"  {'front-end CPU ms per audio s':<{width}}  "
                     f"{_fmt(fe['cpu_ms_per_audio_s']):>8}")
    else:
        lines.append(_pct_row("front-end", fe, width))
    inf = st["inference"]
    if isinstance(inf, dict) and isinstance(inf["runs"], list):
        for run in inf["runs"]:
            label = (f"infer {run['model']} {run['backend']} {run['threads']} thr "
                     f"XNNPACK {'on' if run['xnnpack'] else 'off'}")
            lines.append(_pct_row(label, run["per_window_ms"], width))
        if is_absent(inf["float_model_bytes"]):
            lines.append(f"  {'infer float32':<{width}}  {inf['float_model_bytes']}")
    else:
        lines.append(_pct_row("inference", inf if not isinstance(inf, dict) else inf["runs"],
                              width))
    tpu = st["edgetpu"]
    lines.append(_pct_row(f"Edge TPU ({tpu['device']})", tpu["per_window_ms"], width)
                 if isinstance(tpu, dict) else f"  {'Edge TPU':<{width}}  {tpu}")
    lines.append("end to end")
    e2e = doc["end_to_end"]
    fast = e2e["listen_fast"]
    if isinstance(fast, dict):
        mq = "MQTT on" if not is_absent(fast["mqtt"]) else "MQTT off"
        label = f"listen --fast, {fast['audio_s']:.0f} s of audio, {mq}"
        lines.append(f"  {label:<{width}}  "
                     f"RTF {fast['rtf']:.4f} ({fast['wall_s']:.2f} s wall, steady RTF "
                     f"{_fmt(fast['rtf_steady'], 4)})")
    else:
        lines.append(f"  {'listen --fast':<{width}}  {fast}")
    rt_run = e2e["realtime_process"]
    if isinstance(rt_run, dict):
        label = f"listen --realtime process, {rt_run['run_s']:.0f} s"
        lines.append(f"  {label:<{width}}  "
                     f"CPU {rt_run['cpu_percent']:.1f} % of a core, peak RSS "
                     f"{rt_run['peak_rss_mb']:.1f} MB ({rt_run['threads']} threads)")
    else:
        lines.append(f"  {'listen --realtime process':<{width}}  {rt_run}")
    mem = e2e.get("memory_by_import")
    if isinstance(mem, dict):
        parts = ", ".join(f"{m['module']} +{m['added_mb']:.0f}" for m in mem["steps"]
                          if m["added_mb"] >= 1)
        lines.append(f"  {'resident MB added by each step':<{width}}  {parts}")
        lines.append(f"  {'third-party packages the device loads':<{width}}  "
                     f"{', '.join(mem['third_party'])}")
    elif mem is not None:
        lines.append(f"  {'resident MB added by each step':<{width}}  {mem}")
    lat = e2e["mqtt_latency"]
    if isinstance(lat, dict):
        lines.append(_pct_row("capture -> MQTT receipt", lat["capture_to_receipt_ms"], width))
        lines.append(_pct_row("  of which pipeline", lat["pipeline_ms"], width))
        lines.append(_pct_row("  of which publish -> receipt", lat["publish_to_receipt_ms"],
                              width))
        lines.append(f"  {'TCP_NODELAY on the publisher':<{width}}  {lat['tcp_nodelay']}")
    else:
        lines.append(f"  {'capture -> MQTT receipt':<{width}}  {lat}")
    lines.append("targets")
    for t in doc["targets"]:
        value = t["measured"]
        if isinstance(value, (int, float)):
            verdict = "met" if t["met"] else "NOT MET"
            shown = f"{value:g} {t['unit']}".strip() + f": {verdict}"
        else:
            shown = f"not measured ({value.partition(': ')[2] or value})"
        note = f" ({t['note']})" if t.get("note") else ""
        label = f"{t['description']} {t['comparison']} {t['limit']:g} {t['unit']}".strip()
        lines.append(f"  {label:<{width}}  {shown}{note}")
    load = dev.get("load_avg") if isinstance(dev, dict) else None
    if isinstance(load, list) and load[0] > 0.5 * max(1, dev["cores"]):
        lines.append(f"note: load average {load[0]} at the start: other processes share the CPU, "
                     "timings are noisy")
    return "\n".join(lines)


def stderr_progress(msg: str) -> None:
    print(f"bench: {msg} ...", file=sys.stderr, flush=True)
