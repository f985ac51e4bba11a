"""Front-end benchmark: the streaming front-end vs librosa recomputing the window per hop
(librosa's log-mel, or its PCEN for a PCEN front-end).

Same process, same real audio. The streaming front-end is fed 1024-sample blocks
(64 ms at 16 kHz, a typical sound-card block) and 160-sample (10 ms) blocks; the
reference is how peers do it: librosa recomputing the last window at every
inference hop (0.5 s). Figures are CPU milliseconds per second of audio, median of
``repeats`` runs. The stage before it on a microphone, resampling from 48 kHz, is timed
too, against the former polyphase FIR (:mod:`firmware_py.bench.polyphase`).
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
    audio: np.ndarray, params: FrontendParams, inference_hop_s: float, repeats: int, use_librosa: bool
) -> float:
    """Recompute the whole last window at every hop, with librosa or with our batch function."""
    hop = int(round(inference_hop_s * params.sample_rate))
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
            if params.compression == "pcen":  # like for like: librosa's PCEN, same constants
                librosa.pcen(s, sr=params.sample_rate, hop_length=params.hop_length,
                             gain=params.pcen_gain, bias=params.pcen_bias,
                             power=params.pcen_power, eps=params.pcen_eps,
                             b=params.pcen_smoothing)
            else:
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
    inference_hop_s: float = 0.5, source: str = "",
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
        "inference_hop_s": inference_hop_s,
        "frontend": params.to_dict(),
    }
    stream_1024 = streaming_cpu_s(audio, params, 1024, repeats)
    stream_160 = streaming_cpu_s(audio, params, 160, repeats)
    device_block = round(0.1 * params.sample_rate)  # listen's default block (source.block_s)
    stream_device = streaming_cpu_s(audio, params, device_block, repeats)
    numpy_window = window_recompute_cpu_s(audio, params, inference_hop_s, repeats, use_librosa=False)
    result["streaming_ms_per_audio_s"] = 1000 * stream_1024 / audio_s
    result["streaming_block_samples"] = 1024
    result["streaming_10ms_blocks_ms_per_audio_s"] = 1000 * stream_160 / audio_s
    result["streaming_device_blocks_ms_per_audio_s"] = 1000 * stream_device / audio_s
    result["device_block_samples"] = device_block
    result["numpy_window_ms_per_audio_s"] = 1000 * numpy_window / audio_s
    try:
        librosa_window = window_recompute_cpu_s(audio, params, inference_hop_s, max(1, repeats // 2), True)
    except ImportError:
        result["librosa_window_ms_per_audio_s"] = None
        result["speedup_vs_librosa"] = None
        result["speedup_vs_librosa_device_blocks"] = None
        result["note"] = "librosa not installed (pip install librosa) - reference skipped"
    else:
        result["librosa_window_ms_per_audio_s"] = 1000 * librosa_window / audio_s
        result["speedup_vs_librosa"] = librosa_window / stream_1024
        result["speedup_vs_librosa_device_blocks"] = librosa_window / stream_device
    result.update(resample_figures(audio, params.sample_rate, repeats))
    return result


#: The microphone rate the resampling rows are measured from (USB microphones' usual rate).
RESAMPLE_FROM_HZ = 48000


def resample_figures(audio: np.ndarray, sample_rate: int, repeats: int) -> dict[str, Any]:
    """The stage before the front-end on a microphone: libsoxr's streaming resampler from
    48 kHz in listen's 0.1 s blocks, against the former polyphase FIR, same process, same
    audio (the clip brought to 48 kHz; the cost does not depend on the content)."""
    from ..resample import RESAMPLER_ID, StreamingResampler, resample
    from .polyphase import PolyphaseResampler
    from .stages import resample_cpu_ms_per_audio_s

    src = RESAMPLE_FROM_HZ
    block = round(0.1 * src)
    x = resample(audio, sample_rate, src)
    blocks = x[: x.shape[0] // block * block].reshape(-1, block)
    new = resample_cpu_ms_per_audio_s(lambda: StreamingResampler(src, sample_rate), blocks,
                                      10, repeats)
    old = resample_cpu_ms_per_audio_s(lambda: PolyphaseResampler(src, sample_rate), blocks,
                                      10, repeats)
    return {"resample_source_rate_hz": src, "resampler": RESAMPLER_ID,
            "resample_ms_per_audio_s": new, "polyphase_resample_ms_per_audio_s": old,
            "resample_speedup_vs_polyphase": old / new if new > 0 else None}


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
    if "resample_ms_per_audio_s" in result:
        khz = f"{result['resample_source_rate_hz'] / 1000:g} kHz"
        rs_rows = [(f"resampling {khz}, 0.1 s blocks, {result['resampler']}",
                    result["resample_ms_per_audio_s"]),
                   (f"resampling {khz}, former polyphase FIR",
                    result["polyphase_resample_ms_per_audio_s"])]
        lines += [f"{name:<{width}}  {fmt(v)}" for name, v in rs_rows]
        lines.append(f"{'resampler speed-up vs polyphase FIR':<{width}}  "
                     f"{fmt(result['resample_speedup_vs_polyphase'])}x")
    if str(result.get("blas_threads", "")).startswith("not present"):
        lines.append("note: OPENBLAS_NUM_THREADS is not set: CPU time includes BLAS threads "
                     "spinning on other cores; run with OPENBLAS_NUM_THREADS=1 for the "
                     "single-core comparison")
    return "\n".join(lines)
