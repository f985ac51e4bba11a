"""Wiring of the device loop: source -> pipeline -> sinks (console, display, MQTT, ...).

``run_listen(config)`` is what ``genre-edge listen`` and the systemd service run. It
takes every front-end and label setting from the bundle, opens the source, and
publishes one state per inference hop until the source ends (file) or a signal
arrives (SIGTERM/SIGINT: ``offline`` is published, the stream closed, exit 0).
"""

from __future__ import annotations

import logging
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .bounds import live_keys, restart_needed
from .bundle import Bundle, default_bundle_path, load_bundle
from .errors import DeviceError, GenreEdgeError
from .pipeline import HopResult, Pipeline
from .sinks.base import Sink
from .sinks.console import ConsoleSink
from .state import HopState

__all__ = ["STATS_WINDOW", "CallbackSink", "ConsoleSink", "Stats", "open_model", "run_listen",
           "state_payload"]

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
    """The JSON document of one pipeline result (:class:`~firmware_py.state.HopState`)."""
    return HopState.from_hop(result, labels, model_name).to_dict()


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


class CallbackSink(Sink):
    """``on_payload``: every state's JSON document to a function (tests, benchmarks)."""

    name = "callback"

    def __init__(self, function: Callable[[dict[str, Any]], None]) -> None:
        self.function = function

    def publish(self, state: HopState) -> None:
        self.function(state.to_dict())


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
    (tests drive the microphone path with a fake stream). ``on_payload`` receives every
    state's JSON document, right after the console. ``on_start`` receives the running
    parts (``pipeline``, ``source``, ``publisher``, ``display``, ``bundle``, ``sinks``)
    before the first block, for benchmarks and tests that count what was published.

    The outputs are :class:`~firmware_py.sinks.base.Sink` objects built from the registry
    (:mod:`firmware_py.sinks`): each hop's :class:`~firmware_py.state.HopState` goes to
    every sink in registry order; they start before the first block and stop in
    ``finally``. Threads: this loop runs on the caller's thread and calls every sink
    method there; signal handlers only set events and close the source.
    """
    from .sinks import SinkContext, build_sinks
    from .sources import open_source

    stop = stop or threading.Event()
    hup = threading.Event()
    bundle = load_bundle(config.bundle or default_bundle_path())
    model = open_model(bundle, config.inference.threads, config.inference.edgetpu)
    pipeline = Pipeline(bundle, model, config.smoothing_params(bundle.smoothing),
                        inference_hop_s=config.inference.hop_s)
    # Validates the MQTT settings before any I/O.
    sinks = build_sinks(SinkContext(config, bundle, pipeline, console or sys.stdout))
    if on_payload:
        sinks.insert(1, CallbackSink(on_payload))  # right after the console
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
    stats_sinks = [sink for sink in sinks if sink.wants_stats]
    stats_interval_s = float(config.mqtt.stats_interval_s or 60)
    next_stats = time.monotonic() + stats_interval_s
    try:
        for sink in sinks:
            sink.start(stop)
        log.info("listening to %s: bundle %s (%s), hop %.2f s, window %.2f s",
                 source.describe(), bundle.name, ", ".join(bundle.labels), pipeline.inference_hop_s,
                 bundle.frontend.window_s)
        if on_start is not None:
            handles = {sink.name: sink.handle for sink in sinks}
            on_start({"pipeline": pipeline, "source": source, "publisher": handles.get("mqtt"),
                      "display": handles.get("display"), "bundle": bundle, "sinks": sinks})
        for block in source.blocks():
            if stop.is_set():
                break
            for result in pipeline.push(block):
                stats.add(result)
                state = HopState.from_hop(result, bundle.labels, bundle.name)
                extra: dict[str, Any] = {}
                for sink in sinks:
                    extra.update(sink.contribute(result))
                state = state.with_extra(extra)
                for sink in sinks:
                    sink.publish(state)
            if hup.is_set() and reload is not None:
                hup.clear()
                _apply_reload(config, reload, pipeline, bundle, sinks)
            if stats_sinks and time.monotonic() >= next_stats:
                _send_stats(stats_sinks, stats.snapshot(pipeline))
                next_stats = time.monotonic() + stats_interval_s
        if stats_sinks and pipeline.inferences:
            _send_stats(stats_sinks, stats.snapshot(pipeline))
    finally:
        source.close()
        for sink in sinks:
            sink.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pipeline.inferences == 0 and not stop.is_set():
        raise GenreEdgeError(
            f"the audio ended after {pipeline.audio_s:.1f} s, before one full "
            f"{bundle.frontend.window_s:.1f} s window: give a longer input"
        )
    return 0


def _send_stats(sinks: Sequence[Sink], snapshot: dict[str, Any]) -> None:
    for sink in sinks:
        sink.stats(snapshot)


def _apply_reload(config: Any, reload: Callable[[], Any], pipeline: Pipeline, bundle: Bundle,
                  sinks: Sequence[Sink]) -> None:
    """SIGHUP: re-read the configuration; apply smoothing and the sinks' live settings
    (console output).

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
    for sink in sinks:
        sink.reload(new)
    restart = restart_needed(config, new)
    log.warning("SIGHUP: configuration reloaded (applied live: %s)%s", ", ".join(live_keys(new)),
                f"; restart to apply changes to {', '.join(restart)}" if restart else "")
