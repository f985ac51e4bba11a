"""Per-stage latency of the device pipeline: resampling, streaming front-end, inference.

Every figure is wall time per call after warm-up, summarised as p50/p95/p99 in ms
(:func:`~firmware_py.bench.common.summarize_ms`), with the garbage collector paused in
the timed loops. Inference runs over every light runtime installed here
(``ai_edge_litert``, ``tflite_runtime``; TensorFlow is never imported on a device),
every thread count from 1 to the usable cores, XNNPACK on and off, the bundle's int8
model and its float32 model when it has one, and the Edge TPU when one is attached.
"""

from __future__ import annotations

import ctypes
import importlib.util
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..errors import AudioError, DeviceError, GenreEdgeError
from ..features import FrontendParams, StreamingLogMel, logmel
from ..inference import EDGETPU_LIBRARY
from ..resample import RESAMPLER_ID, StreamingResampler
from .common import failed, gc_paused, loop_to, not_present, summarize_ms, time_calls
from .polyphase import PolyphaseResampler

#: Light interpreter runtimes, tried in this order; TensorFlow is deliberately absent.
LIGHT_BACKENDS = ("ai_edge_litert", "tflite_runtime")
#: Block length the device loop (``listen``) hands to the pipeline, seconds.
BLOCK_S = 0.1


# -- resampling -------------------------------------------------------------------------
def resample_cpu_ms_per_audio_s(make: Callable[[], Any], blocks: np.ndarray,
                                blocks_per_s: int, passes: int = 3) -> float:
    """Process CPU ms per second of audio for a fresh ``make()`` resampler fed ``blocks``
    (after one second of warm-up), median of ``passes``.

    Each pass starts with glibc's allocator warm: a freed 16 MB block raises its mmap
    threshold, so ~1 MB temporaries (the polyphase FIR's gather matrices) come from the
    heap. Without that they can be fresh mmaps, page-faulted on every push: the FIR then
    costs ~5x more, mostly system time (15 vs 2.5 ms per second of 48 kHz here), depending
    on what the process allocated before. The reference is measured at its best.
    """
    n_seconds = blocks.shape[0] / blocks_per_s
    cpu = []
    for _ in range(passes):
        warm = np.ones(2 << 20)  # 16 MB, freed at once
        del warm
        res = make()
        for b in blocks[:blocks_per_s]:
            res.push(b)
        with gc_paused():
            t0 = time.process_time()
            for b in blocks:
                res.push(b)
            cpu.append(time.process_time() - t0)
    return round(1000.0 * float(np.median(cpu)) / n_seconds, 4)


def bench_resample(audio_by_rate: dict[int, np.ndarray], target_rate: int, *,
                   audio_s: float = 60.0, block_s: float = BLOCK_S) -> dict[str, Any]:
    """Time :class:`StreamingResampler` per second of audio, fed ``block_s`` blocks, and
    its CPU per second of audio against the former polyphase FIR's in this process.

    Parameters
    ----------
    audio_by_rate : dict
        Source rate in Hz -> mono float32 audio at that rate (looped to ``audio_s``).
    target_rate : int
        Model rate in Hz.
    """
    out: dict[str, Any] = {}
    for rate, audio in audio_by_rate.items():
        block = max(1, round(block_s * rate))
        blocks_per_s = max(1, round(1.0 / block_s))
        n_seconds = max(2, int(audio_s))
        x = loop_to(audio, (n_seconds + 1) * blocks_per_s * block)
        blocks = x.reshape(-1, block)
        res = StreamingResampler(rate, target_rate)
        for b in blocks[:blocks_per_s]:  # warm-up: one second
            res.push(b)
        times = []
        with gc_paused():
            for s in range(1, n_seconds + 1):
                chunk = blocks[s * blocks_per_s : (s + 1) * blocks_per_s]
                t0 = time.perf_counter()
                for b in chunk:
                    res.push(b)
                times.append(time.perf_counter() - t0)
        timed = blocks[blocks_per_s:]
        cpu = resample_cpu_ms_per_audio_s(partial(StreamingResampler, rate, target_rate),
                                          timed, blocks_per_s)
        ref = resample_cpu_ms_per_audio_s(partial(PolyphaseResampler, rate, target_rate),
                                          timed, blocks_per_s)
        out[str(rate)] = {
            "source_rate_hz": rate, "target_rate_hz": target_rate,
            "block_samples": block, "per_audio_s_ms": summarize_ms(times),
            "resampler": RESAMPLER_ID, "cpu_ms_per_audio_s": cpu,
            "polyphase_cpu_ms_per_audio_s": ref,
            "speedup_vs_polyphase": round(ref / cpu, 2) if cpu > 0 else None,
        }
    return out


# -- front-end --------------------------------------------------------------------------
def bench_frontend(audio: np.ndarray, params: FrontendParams, inference_hop_s: float, *,
                   audio_s: float = 60.0, block_s: float = BLOCK_S) -> dict[str, Any]:
    """Streaming log-mel: per 10 ms frame hop, per device block, per inference hop, CPU/s.

    ``cpu_ms_per_audio_s`` is process CPU time over ``audio_s`` pushed in ``block_s``
    blocks (median of 3 passes), the figure the 1 ms-per-audio-second target is about.
    """
    n_seconds = max(2, int(audio_s))
    x = loop_to(audio, n_seconds * params.sample_rate)
    hop = params.hop_length

    def run(block: int) -> tuple[list[float], float]:
        stream = StreamingLogMel(params)
        stream.push(x[: params.sample_rate])  # warm-up: filter bank, FFT plan
        stream.reset()
        times = []
        with gc_paused():
            cpu0 = time.process_time()
            for i in range(0, x.shape[0], block):
                t0 = time.perf_counter()
                stream.push(x[i : i + block])
                times.append(time.perf_counter() - t0)
            cpu = time.process_time() - cpu0
        return times, cpu

    hop_times, _ = run(hop)
    block = max(1, round(block_s * params.sample_rate))
    # CPU per audio second: median of 3 passes (one pass is only ~20 ms of CPU on a PC).
    passes = [run(block) for _ in range(3)]
    block_cpu = float(np.median([cpu for _, cpu in passes]))
    block_times = passes[0][0]
    per_hop = max(1, round(inference_hop_s / block_s))
    grouped = [sum(block_times[i : i + per_hop])
               for i in range(0, len(block_times) - per_hop + 1, per_hop)]
    return {
        "audio_s": float(n_seconds),
        "frame_hop_samples": hop,
        "block_samples": block,
        "inference_hop_s": inference_hop_s,
        "per_frame_hop_ms": summarize_ms(hop_times),
        "per_block_ms": summarize_ms(block_times),
        "per_inference_hop_ms": summarize_ms(grouped),
        "cpu_ms_per_audio_s": round(1000.0 * block_cpu / n_seconds, 4),
    }


# -- inference --------------------------------------------------------------------------
def light_backends() -> list[str]:
    return [name for name in LIGHT_BACKENDS if importlib.util.find_spec(name) is not None]


def real_windows(audio: np.ndarray, params: FrontendParams, count: int = 16) -> np.ndarray:
    """``count`` real log-mel windows spread over ``audio`` (model-rate samples)."""
    feats = logmel(audio, params)
    w = params.window_frames
    if feats.shape[0] == 0:
        raise AudioError(f"the benchmark input holds {audio.shape[0]} samples, less than one "
                         f"analysis frame ({params.n_fft}): give a longer --input")
    if feats.shape[0] < w:
        feats = np.concatenate([feats] * int(np.ceil(w / feats.shape[0]) + 1))
    starts = np.linspace(0, feats.shape[0] - w, num=count).astype(int)
    return np.stack([feats[s : s + w] for s in starts]).astype(np.float32)


def _time_model(model: Any, windows: np.ndarray, budget_s: float, max_runs: int) -> list[float]:
    n = windows.shape[0]
    return time_calls(lambda i: model.predict(windows[i % n]), warmup=10, min_runs=30,
                      max_runs=max_runs, budget_s=budget_s)


def _model_kind(model: Any) -> str:
    return str(np.dtype(model.input_dtype).name) if model.quantized else "float32"


def bench_inference(bundle: Bundle, windows: np.ndarray, *, max_threads: int,
                    budget_s: float = 2.0, max_runs: int = 500) -> dict[str, Any]:
    """Every light backend x threads 1..max_threads x XNNPACK on/off x int8/float32."""
    backends = light_backends()
    files = [("model", bundle.file("model"))]
    float_path = bundle.file("float_model")
    if float_path is not None:
        files.append(("float_model", float_path))
    result: dict[str, Any] = {
        "backends": backends,
        "skipped_backends": {"tensorflow": "never imported by the device benchmark "
                                           "(a workstation runtime)"},
        "window_shape": list(windows.shape[1:]),
        "model_bytes": _bytes(bundle, "model"),
        "float_model_bytes": (_bytes(bundle, "float_model") if float_path is not None
                              else not_present("no model_float.tflite in the bundle "
                                               "(genre-edge convert --float adds it)")),
        "runs": [],
    }
    if not backends:
        result["runs"] = not_present("no ai-edge-litert or tflite-runtime installed "
                                     "(pip install ai-edge-litert)")
        return result
    for backend in backends:
        for key, path in files:
            for threads in range(1, max(1, max_threads) + 1):
                for xnnpack in (True, False):
                    entry: dict[str, Any] = {
                        "backend": backend, "file": path.name if path else key,
                        "threads": threads, "xnnpack": xnnpack,
                    }
                    try:
                        model = bundle.open_model(threads=threads, backend=backend,
                                                  xnnpack=xnnpack, which=key)
                        entry["model"] = _model_kind(model)
                        entry["per_window_ms"] = summarize_ms(
                            _time_model(model, windows, budget_s, max_runs))
                    except GenreEdgeError as exc:
                        entry["model"] = "int8" if key == "model" else "float32"
                        entry["per_window_ms"] = failed(str(exc))
                    result["runs"].append(entry)
    return result


def _bytes(bundle: Bundle, key: str) -> int | str:
    path = bundle.file(key)
    try:
        return path.stat().st_size if path is not None else not_present()
    except OSError as exc:
        return failed(str(exc))


def edgetpu_library_present() -> bool:
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        return False
    return True


def bench_edgetpu(bundle: Bundle, windows: np.ndarray, *, budget_s: float = 2.0,
                  max_runs: int = 500) -> dict[str, Any] | str:
    """The Coral Edge TPU (USB, then PCIe) with the bundle's Edge TPU model."""
    if not edgetpu_library_present():
        return not_present(f"{EDGETPU_LIBRARY} is not installed (no Coral runtime)")
    if bundle.file("edgetpu_model") is None:
        return not_present("the bundle has no model_edgetpu.tflite (compile one with "
                           "edgetpu_compiler; see genre-edge edgetpu-check)")
    reasons = []
    for device in ("usb", "pci"):
        try:
            model = bundle.open_model(threads=1, edgetpu=device)
        except (DeviceError, GenreEdgeError) as exc:
            reasons.append(f"{device}: {' '.join(str(exc).split())[:120]}")
            continue
        return {"device": device, "file": bundle.file("edgetpu_model").name,
                "per_window_ms": summarize_ms(_time_model(model, windows, budget_s, max_runs))}
    return not_present("no Coral Edge TPU found (" + "; ".join(reasons) + ")")
