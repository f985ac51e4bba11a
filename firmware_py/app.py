"""Wiring of the device loop: source -> pipeline -> sinks (console, MQTT, display).

``run_listen(config)`` is what ``genre-edge listen`` and the systemd service run. It
takes every front-end and label setting from the bundle, opens the source, and
publishes one state per inference hop until the source ends (file) or a signal
arrives (SIGTERM/SIGINT: ``offline`` is published, the stream closed, exit 0).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .bundle import Bundle, default_bundle_path, load_bundle
from .errors import DeviceError, GenreEdgeError
from .pipeline import HopResult, Pipeline
from .smoothing import SILENCE
from .text import json_line

log = logging.getLogger(__name__)


def open_model(bundle: Bundle, threads: int, edgetpu: str | None) -> Any:
    """The bundle's model; with ``edgetpu`` set, falls back to the CPU when no TPU is found."""
    if edgetpu:
        try:
            model = bundle.open_model(threads=threads, edgetpu=edgetpu)
            log.info("running on the Coral Edge TPU (%s)", edgetpu)
            return model
        except DeviceError as exc:
            log.warning("%s; falling back to the CPU", exc)
    return bundle.open_model(threads=threads)


def state_payload(result: HopResult, labels: list[str], model_name: str) -> dict[str, Any]:
    st = result.state
    return {
        "genre": st.genre,
        "confidence": round(float(st.confidence), 4),
        "probabilities": {k: round(float(v), 4) for k, v in st.probabilities.items()},
        "level_dbfs": round(float(st.level_dbfs), 1),
        "model": model_name,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "audio_t_s": round(result.t_s, 2),
        "changed": bool(st.changed),
        # The model's own output: a broken or hostile model can emit NaN/Inf, which JSON
        # (console, MQTT, the display page) cannot carry: null instead.
        "raw": {k: round(float(v), 4) if math.isfinite(float(v)) else None
                for k, v in zip(labels, result.probabilities, strict=True)},
    }


class ConsoleSink:
    """Human lines (one per hop, ``*`` marks a change) or JSON lines."""

    def __init__(self, stream: TextIO = sys.stdout, as_json: bool = False,
                 changes_only: bool = False) -> None:
        self.stream = stream
        self.as_json = as_json
        self.changes_only = changes_only

    def __call__(self, payload: dict[str, Any]) -> None:
        if self.as_json:
            line = json_line(payload)
        else:
            if self.changes_only and not payload["changed"]:
                return
            mark = "*" if payload["changed"] else " "
            raw = {k: v for k, v in payload["raw"].items() if v is not None}
            top = max(raw, key=raw.get) if raw else None
            line = (
                f"{payload['audio_t_s']:8.1f} s {mark} {payload['genre']:<12} "
                f"{100 * payload['confidence']:5.1f}%  {payload['level_dbfs']:6.1f} dBFS"
                + (f"   (window: {top} {100 * raw[top]:.0f}%)" if top is not None
                   else "   (window: no score)")
            )
        try:
            print(line, file=self.stream, flush=True)
        except BrokenPipeError:
            pass


#: Latency samples kept between two ``/stats`` snapshots (an hour of hops at 1 s).
STATS_WINDOW = 3600


class Stats:
    """Per-stage latency, CPU and memory, for the ``/stats`` topic and logs."""

    def __init__(self) -> None:
        self.start_wall = time.monotonic()
        self.start_cpu = time.process_time()
        # Bounded: without MQTT nothing takes snapshots, and a device runs for months.
        self.inference_ms: deque[float] = deque(maxlen=STATS_WINDOW)
        self.frontend_ms: deque[float] = deque(maxlen=STATS_WINDOW)

    def add(self, result: HopResult) -> None:
        self.inference_ms.append(result.inference_ms)
        self.frontend_ms.append(result.frontend_ms)

    def snapshot(self, pipeline: Pipeline) -> dict[str, Any]:
        wall = max(1e-9, time.monotonic() - self.start_wall)
        cpu = time.process_time() - self.start_cpu

        def p50(xs: deque[float]) -> float | None:
            return round(sorted(xs)[len(xs) // 2], 3) if xs else None

        out = {
            "uptime_s": round(wall, 1),
            "audio_s": round(pipeline.audio_s, 1),
            "inferences": pipeline.inferences,
            "inference_ms_p50": p50(self.inference_ms),
            "frontend_ms_per_hop_p50": p50(self.frontend_ms),
            "cpu_percent": round(100 * cpu / wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "threads": threading.active_count(),
        }
        self.start_wall, self.start_cpu = time.monotonic(), time.process_time()
        self.inference_ms.clear()
        self.frontend_ms.clear()
        return out


def make_publisher(config: Any, bundle: Bundle) -> Any:
    """An MQTT publisher for ``config.mqtt`` (None when no broker URL is set)."""
    m = config.mqtt
    if not m.url:
        return None  # without MQTT, paho and ssl (~9 MB resident) are never imported
    from .mqtt.publisher import MqttPublisher

    # The [mqtt] section is the publisher's own settings: a copy is checked as a whole and
    # completed (device id = host name, prefix = genre-edge/<device id>).
    return MqttPublisher(dataclasses.replace(m), labels=bundle.labels, model_name=bundle.name)


def make_display(config: Any, bundle: Bundle) -> Any:
    """The live display page server for ``config.output.http`` (None when unset)."""
    if not config.output.http:
        return None
    from .display import DisplayServer, parse_http_address

    host, port = parse_http_address(config.output.http)
    return DisplayServer(host, port, labels=bundle.labels, model_name=bundle.name)


class SoundsLike:
    """The indexed track nearest to the last ``window_s`` of audio, every ``every_s``.

    Runs the bundle's int8 embedding model on the same windows as the classifier (one
    more ~0.3 ms inference per hop) and keeps the newest answer for every payload.
    """

    def __init__(self, config: Any, bundle: Bundle, threads: int, hop_s: float) -> None:
        from .similarity import Index, open_embedding_model

        self.index = Index.load(config.index)
        self.model = open_embedding_model(bundle, threads=threads)
        self.index.check_model(bundle, config.index, dim=int(self.model.output_shape[-1]))
        # in hops of the running pipeline (inference.hop_s may differ from the bundle's)
        self.every_hops = max(1, round(config.every_s / hop_s))
        self.recent: Any = deque(maxlen=max(1, round(config.window_s / hop_s)))
        self.hops = 0
        self.current: dict[str, Any] | None = None

    def update(self, window: np.ndarray, silent: bool) -> dict[str, Any] | None:
        from .similarity import pool_windows

        if not silent:
            self.recent.append(self.model.predict(window))
        self.hops += 1
        if self.recent and self.hops % self.every_hops == 0:
            best = self.index.query(pool_windows(np.stack(self.recent)), top=1)
            if best:
                self.current = {"path": Path(best[0].path).name,
                                "similarity": round(float(best[0].similarity), 4)}
        return self.current


def open_sounds_like(config: Any, bundle: Bundle, hop_s: float) -> SoundsLike | None:
    """"Sounds like" for ``config.similarity`` (None when off, or when the index or the
    bundle's embedding model does not check out: one error line, and listening goes on,
    because a service that refused to start over an optional feature would loop)."""
    if not config.similarity.index:
        return None
    try:
        return SoundsLike(config.similarity, bundle, config.inference.threads, hop_s)
    except GenreEdgeError as exc:
        log.error("sounds like is off: %s", exc)
        return None


def run_listen(
    config: Any,
    *,
    on_payload: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    reload: Callable[[], Any] | None = None,
    sd_module: Any = None,
    console: TextIO | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Run the device loop until the source ends or ``stop`` is set.

    SIGTERM and SIGINT set ``stop`` (``offline`` is published, the stream closed, exit
    0). SIGHUP calls ``reload()`` (which returns a new config) and applies what can
    change without dropping the stream: smoothing and console output; other changed
    settings are logged as needing a restart. ``sd_module`` replaces ``sounddevice``
    (tests drive the microphone path with a fake stream). ``on_start`` receives the
    running parts (``pipeline``, ``source``, ``publisher``, ``display``) before the first
    block, for benchmarks and tests that count what was published.
    """
    from .sources import open_source

    stop = stop or threading.Event()
    hup = threading.Event()
    bundle = load_bundle(config.bundle or default_bundle_path())
    model = open_model(bundle, config.inference.threads, config.inference.edgetpu)
    pipeline = Pipeline(bundle, model, config.smoothing_params(bundle.smoothing),
                        hop_s=config.inference.hop_s)
    console_sink = ConsoleSink(stream=console or sys.stdout, as_json=config.output.json,
                               changes_only=config.output.changes_only)
    sinks: list[Callable[[dict[str, Any]], None]] = [console_sink]
    if on_payload:
        sinks.append(on_payload)
    publisher = make_publisher(config, bundle)  # validates MQTT settings before any I/O
    display = make_display(config, bundle)
    sounds_like = open_sounds_like(config, bundle, pipeline.hop_s)
    source = open_source(config.source, bundle.frontend.sample_rate, sd_module=sd_module)

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            hup.set()
            return
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()
        source.close()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        sigs = [signal.SIGTERM, signal.SIGINT]
        if reload is not None and hasattr(signal, "SIGHUP"):
            sigs.append(signal.SIGHUP)
        for sig in sigs:
            previous[sig] = signal.signal(sig, on_signal)
    stats = Stats()
    stats_interval_s = float(config.mqtt.stats_interval_s or 60)
    next_stats = time.monotonic() + stats_interval_s
    try:
        if display is not None:
            display.start()
            sinks.append(display.update)
            log.warning("display page: %s", display.url)
        if publisher is not None:
            # A file run fails fast on a wrong broker; a microphone (the service) may
            # start before its broker and connects in the background meanwhile.
            publisher.start(wait=bool(config.source.input), stop=stop)
            sinks.append(publisher.publish_state)
        log.info("listening to %s: bundle %s (%s), hop %.2f s, window %.2f s",
                 source.describe(), bundle.name, ", ".join(bundle.labels), pipeline.hop_s,
                 bundle.frontend.window_s)
        if on_start is not None:
            on_start({"pipeline": pipeline, "source": source, "publisher": publisher,
                      "display": display, "bundle": bundle})
        for block in source.blocks():
            if stop.is_set():
                break
            for result in pipeline.push(block):
                stats.add(result)
                payload = state_payload(result, bundle.labels, bundle.name)
                if sounds_like is not None:
                    payload["sounds_like"] = sounds_like.update(
                        result.window, result.state.genre == SILENCE)
                for sink in sinks:
                    sink(payload)
            if hup.is_set() and reload is not None:
                hup.clear()
                _apply_reload(config, reload, pipeline, bundle, console_sink)
            if publisher is not None and time.monotonic() >= next_stats:
                publisher.publish_stats(stats.snapshot(pipeline))
                next_stats = time.monotonic() + stats_interval_s
        if publisher is not None and pipeline.inferences:
            publisher.publish_stats(stats.snapshot(pipeline))
    finally:
        source.close()
        if display is not None:
            display.set_online(False)
            display.stop()
        if publisher is not None:
            publisher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pipeline.inferences == 0 and not stop.is_set():
        raise GenreEdgeError(
            f"the audio ended after {pipeline.audio_s:.1f} s, before one full "
            f"{bundle.frontend.window_s:.1f} s window: give a longer input"
        )
    return 0


def _apply_reload(config: Any, reload: Callable[[], Any], pipeline: Pipeline, bundle: Bundle,
                  console_sink: ConsoleSink) -> None:
    """SIGHUP: re-read the configuration; apply smoothing and console options live.

    A reload that fails for any reason (a bad value, an unreadable file, or a bug) keeps
    every running setting and logs one line: a service must not die of a config edit.
    """
    try:
        new = reload()
        params = new.smoothing_params(bundle.smoothing)
        pipeline.set_smoothing(params)  # changes nothing when it raises
    except GenreEdgeError as exc:
        log.error("SIGHUP: configuration not reloaded, keeping the running one: %s", exc)
        return
    except Exception as exc:  # noqa: BLE001 (any failure: keep running on the old settings)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        log.error("SIGHUP: configuration not reloaded, keeping the running one: %s", reason)
        return
    console_sink.as_json = new.output.json
    console_sink.changes_only = new.output.changes_only
    restart = [name for name in ("bundle", "log_level", "source", "inference", "mqtt", "similarity")
               if getattr(new, name) != getattr(config, name)]
    if new.output.http != config.output.http:
        restart.append("output.http")
    log.warning("SIGHUP: configuration reloaded (smoothing, console output)%s",
                f"; restart to apply changes to {', '.join(restart)}" if restart else "")
