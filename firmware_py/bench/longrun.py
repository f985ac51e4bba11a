"""Long-run check: hours of audio through the device loop, watching memory, threads, fds.

    python -m firmware_py.bench.longrun --hours 24 --mqtt mqtt://127.0.0.1:1883 --json longrun.json

Real music (the bundled clip, or ``--clip FILE``) alternates with gaps of silence and
quieter passages, looped through ``listen``'s own loop (:func:`firmware_py.app.run_listen`)
as fast as possible, publishing every state to MQTT when ``--mqtt`` is given. Every
``--checkpoint-min`` minutes of *audio* it records the resident set (VmRSS), its peak
(VmHWM), threads and open file descriptors of this process. The report compares the first
and the last hour (or tenth, for runs shorter than 10 hours): RSS growth must stay below
5 MB and threads/fds must not grow. Device dependencies only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def build_programme(clip: str | Path | None, sample_rate: int, path: Path) -> float:
    """Music, silence, quieter music, silence: one loop of the long-run audio, as a WAV."""
    import wave

    from ..audio import load_audio
    from ..commands import DEMO_CLIP

    music = load_audio(clip or DEMO_CLIP, sample_rate)
    silence = np.zeros(int(8 * sample_rate), np.float32)
    short_gap = np.zeros(int(2 * sample_rate), np.float32)
    programme = np.concatenate([music, short_gap, 0.3 * music, silence, music, silence])
    pcm = (np.clip(programme, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return programme.shape[0] / sample_rate


def run(hours: float, mqtt_url: str | None, checkpoint_min: float, clip: str | None,
        bundle: str | None, log: Any = sys.stderr) -> dict[str, Any]:
    from ..app import run_listen
    from ..bundle import default_bundle_path, load_bundle
    from ..config import load_config
    from .end_to_end import proc_status

    rate = load_bundle(bundle or default_bundle_path(), check_model=False).frontend.sample_rate
    target_s = hours * 3600.0
    step_s = checkpoint_min * 60.0
    with tempfile.TemporaryDirectory(prefix="genre-edge-longrun-") as tmp:
        wav = Path(tmp) / "programme.wav"
        loop_s = build_programme(clip, rate, wav)
        overrides: dict[str, Any] = {
            "bundle": bundle, "source.input": str(wav), "source.realtime": False,
            "source.loop": True, "source.block_s": 1.0,
        }
        if mqtt_url:
            overrides.update({"mqtt.url": mqtt_url, "mqtt.device_id": "longrun",
                              "mqtt.stats_interval_s": 60.0})
        config = load_config(env={}, overrides=overrides)
        stop = threading.Event()
        parts: dict[str, Any] = {}
        points: list[dict[str, Any]] = []
        genres: dict[str, int] = {}
        next_point = [0.0]
        start = time.monotonic()

        def on_payload(payload: dict[str, Any]) -> None:
            t = float(payload["audio_t_s"])
            genres[payload["genre"]] = genres.get(payload["genre"], 0) + 1
            if t >= next_point[0]:
                st = proc_status(os.getpid())
                points.append({
                    "audio_h": round(t / 3600, 4), "wall_s": round(time.monotonic() - start, 1),
                    "rss_mb": round(st.get("VmRSS", 0) / 1024, 2),
                    "peak_rss_mb": round(st.get("VmHWM", 0) / 1024, 2),
                    "threads": int(st.get("Threads", threading.active_count())),
                    "fds": _fds(),
                })
                last = points[-1]
                print(f"audio {last['audio_h']:7.3f} h  wall {last['wall_s']:7.1f} s  "
                      f"rss {last['rss_mb']:6.1f} MB  threads {last['threads']}  fds {last['fds']}",
                      file=log, flush=True)
                next_point[0] += step_s
            if t >= target_s:
                stop.set()

        with open(os.devnull, "w") as devnull:
            run_listen(config, on_payload=on_payload, stop=stop, console=devnull,
                       on_start=parts.update)
        wall = time.monotonic() - start
    publisher = parts.get("publisher")
    audio_s = parts["pipeline"].audio_s
    span = 3600.0 if hours >= 10 else max(step_s, target_s / 10)
    first = [p["rss_mb"] for p in points if p["audio_h"] * 3600 <= span]
    last = [p["rss_mb"] for p in points if p["audio_h"] * 3600 >= target_s - span]
    report = {
        "audio_hours": round(audio_s / 3600, 4),
        "loop_s": round(loop_s, 1),
        "wall_s": round(wall, 1),
        "real_time_factor": round(wall / max(audio_s, 1e-9), 5),
        "rss_first_mb": round(float(np.max(first)), 2) if first else None,
        "rss_last_mb": round(float(np.max(last)), 2) if last else None,
        "compare_span_h": round(span / 3600, 3),
        "peak_rss_mb": max((p["peak_rss_mb"] for p in points), default=None),
        "threads_first_last": [points[0]["threads"], points[-1]["threads"]] if points else None,
        "fds_first_last": [points[0]["fds"], points[-1]["fds"]] if points else None,
        "states_by_genre": genres,
        "mqtt": publisher.counters if publisher is not None else None,
        "checkpoints": points,
    }
    if first and last:
        report["rss_growth_mb"] = round(report["rss_last_mb"] - report["rss_first_mb"], 2)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_py.bench.longrun", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=24.0, help="hours of audio (default 24)")
    p.add_argument("--mqtt", help="broker URL to publish every state to (recommended)")
    p.add_argument("--checkpoint-min", type=float, default=15.0,
                   help="audio minutes between memory samples (default 15)")
    p.add_argument("--clip", help="music to loop (default: the bundled demo clip)")
    p.add_argument("--bundle", help="model bundle (default: the bundled model)")
    p.add_argument("--json", help="write the report here ('-' = stdout)")
    args = p.parse_args(argv)
    from ..errors import GenreEdgeError

    try:
        report = run(args.hours, args.mqtt, args.checkpoint_min, args.clip, args.bundle)
    except GenreEdgeError as exc:
        print(f"genre-edge: error: {exc}", file=sys.stderr)
        return 2
    summary = (f"{report['audio_hours']:.2f} h of audio in {report['wall_s']:.0f} s "
               f"(RTF {report['real_time_factor']:.4f}); RSS first {report['rss_first_mb']} MB, "
               f"last {report['rss_last_mb']} MB (growth {report.get('rss_growth_mb')} MB), "
               f"threads {report['threads_first_last']}, fds {report['fds_first_last']}, "
               f"mqtt {report['mqtt']}")
    print(summary, file=sys.stderr)
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
