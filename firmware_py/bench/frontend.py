"""Front-end benchmark: streaming log-mel vs librosa recomputing the window per hop.

Same process, same real audio. The streaming front-end is fed 1024-sample blocks
(64 ms at 16 kHz, a typical sound-card block) and 160-sample (10 ms) blocks; the
reference is how peers do it: librosa recomputing the last window at every
inference hop (0.5 s). Figures are CPU milliseconds per second of audio, median of
``repeats`` runs.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from ..features import FrontendParams, StreamingLogMel, logmel


def _median_cpu(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def streaming_cpu_s(audio: np.ndarray, params: FrontendParams, block: int, repeats: int) -> float:
    def run() -> None:
        stream = StreamingLogMel(params)
        for i in range(0, audio.shape[0], block):
            stream.push(audio[i : i + block])

    run()  # warm-up: filter bank, FFT plans
    return _median_cpu(run, repeats)


def window_recompute_cpu_s(
    audio: np.ndarray, params: FrontendParams, hop_s: float, repeats: int, use_librosa: bool
) -> float:
    """Recompute the whole last window at every hop, with librosa or with our batch function."""
    hop = int(round(hop_s * params.sample_rate))
    win = int(round(params.window_s * params.sample_rate))
    ends = range(win, audio.shape[0] + 1, hop)
    if use_librosa:
        import librosa

        def compute(x: np.ndarray) -> None:
            s = librosa.feature.melspectrogram(
                y=x, sr=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
                win_length=params.win_length, window=params.window, center=False, power=2.0,
                n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax,
            )
            librosa.power_to_db(s, ref=1.0, amin=params.amin, top_db=None)
    else:
        def compute(x: np.ndarray) -> None:
            logmel(x, params)

    def run() -> None:
        for end in ends:
            compute(audio[end - win : end])

    run()
    return _median_cpu(run, repeats)


def run_frontend_bench(
    audio: np.ndarray, params: FrontendParams, *, seconds: float = 60.0, repeats: int = 5,
    hop_s: float = 0.5, source: str = "",
) -> dict[str, Any]:
    n = int(seconds * params.sample_rate)
    if audio.shape[0] < n:  # loop a short clip up to the requested length
        audio = np.tile(audio, int(np.ceil(n / audio.shape[0])))
    audio = np.ascontiguousarray(audio[:n], dtype=np.float32)
    audio_s = n / params.sample_rate

    from .system import blas_threads

    result: dict[str, Any] = {
        "audio_s": audio_s,
        # CPU time counts OpenBLAS worker threads spinning beside a matmul: with more than
        # one BLAS thread the window-recomputing references (big matmuls) look costlier
        # than they are. OPENBLAS_NUM_THREADS=1 is the fair, single-core comparison.
        "blas_threads": blas_threads(),
        "audio_source": source,
        "repeats": repeats,
        "inference_hop_s": hop_s,
        "frontend": params.to_dict(),
    }
    stream_1024 = streaming_cpu_s(audio, params, 1024, repeats)
    stream_160 = streaming_cpu_s(audio, params, 160, repeats)
    device_block = round(0.1 * params.sample_rate)  # listen's default block (source.block_s)
    stream_device = streaming_cpu_s(audio, params, device_block, repeats)
    numpy_window = window_recompute_cpu_s(audio, params, hop_s, repeats, use_librosa=False)
    result["streaming_ms_per_audio_s"] = 1000 * stream_1024 / audio_s
    result["streaming_block_samples"] = 1024
    result["streaming_10ms_blocks_ms_per_audio_s"] = 1000 * stream_160 / audio_s
    result["streaming_device_blocks_ms_per_audio_s"] = 1000 * stream_device / audio_s
    result["device_block_samples"] = device_block
    result["numpy_window_ms_per_audio_s"] = 1000 * numpy_window / audio_s
    try:
        librosa_window = window_recompute_cpu_s(audio, params, hop_s, max(1, repeats // 2), True)
    except ImportError:
        result["librosa_window_ms_per_audio_s"] = None
        result["speedup_vs_librosa"] = None
        result["speedup_vs_librosa_device_blocks"] = None
        result["note"] = "librosa not installed (pip install librosa) - reference skipped"
    else:
        result["librosa_window_ms_per_audio_s"] = 1000 * librosa_window / audio_s
        result["speedup_vs_librosa"] = librosa_window / stream_1024
        result["speedup_vs_librosa_device_blocks"] = librosa_window / stream_device
    return result


def format_table(result: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    rows = [
        ("streaming, 1024-sample blocks", result["streaming_ms_per_audio_s"]),
        ("streaming, 160-sample (10 ms) blocks", result["streaming_10ms_blocks_ms_per_audio_s"]),
        (f"streaming, {result['device_block_samples']}-sample (0.1 s, listen's) blocks",
         result["streaming_device_blocks_ms_per_audio_s"]),
        (f"numpy, recompute window every {result['inference_hop_s']} s",
         result["numpy_window_ms_per_audio_s"]),
        (f"librosa, recompute window every {result['inference_hop_s']} s",
         result["librosa_window_ms_per_audio_s"]),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"front-end benchmark: {result['audio_s']:.0f} s of audio ({result['audio_source']}),"
             f" median of {result['repeats']} runs",
             f"{'method':<{width}}  CPU ms per audio s"]
    lines += [f"{name:<{width}}  {fmt(v)}" for name, v in rows]
    lines.append(f"{'speedup vs librosa (1024 blocks)':<{width}}  {fmt(result['speedup_vs_librosa'])}x")
    lines.append(f"{'speedup vs librosa (0.1 s blocks)':<{width}}  "
                 f"{fmt(result['speedup_vs_librosa_device_blocks'])}x")
    if str(result.get("blas_threads", "")).startswith("not present"):
        lines.append("note: OPENBLAS_NUM_THREADS is not set: CPU time includes BLAS threads "
                     "spinning on other cores; run with OPENBLAS_NUM_THREADS=1 for the "
                     "single-core comparison")
    return "\n".join(lines)
