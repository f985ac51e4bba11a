"""Device-side subcommands (light imports only; work happens inside ``run``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .cli import Command
from .errors import GenreEdgeError

DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo-rock.opus"


def write_output(path: str | Path, writer) -> None:
    """Run ``writer(path)``, turning an unwritable path into a one-line error."""
    path = Path(path)
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
    except OSError as exc:
        raise GenreEdgeError(
            f"cannot write {path} ({exc.strerror or exc}): choose a writable output path"
        ) from None


def _frontend_params(bundle: str | None):
    """The front-end of ``bundle``, else of the bundled default model: the one the device
    runs (PCEN for the default model), never a second default that could drift from it."""
    from .bundle import default_bundle_path, load_bundle

    return load_bundle(bundle or default_bundle_path(), check_model=False).frontend


# -- features ---------------------------------------------------------------------------
def _features_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="audio file (wav, flac, ogg/opus, mp3)")
    p.add_argument("--out", required=True, help="output .npy: (frames, n_mels) float32 log-mel dB")
    p.add_argument("--bundle", help="take the front-end parameters from this model bundle "
                                    "(default: the bundled model's, as the device runs it)")


def _features_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .audio import load_audio
    from .features import logmel

    params = _frontend_params(args.bundle)
    out = Path(args.out)
    if out.suffix != ".npy":  # np.save would add it: name the file that is written
        out = out.with_name(out.name + ".npy")
    feats = logmel(load_audio(args.file, params.sample_rate), params)
    write_output(str(out), lambda p: np.save(p, feats))
    print(f"{out}: {feats.shape[0]} frames x {feats.shape[1]} mels "
          f"({feats.shape[0] * params.frame_hop_s:.2f} s at {params.frame_hop_s * 1000:.0f} ms hop)")
    return 0


features = Command(
    "features", "write the front-end features (log-mel or PCEN-mel) of an audio file (.npy)",
    _features_configure, _features_run,
)


# -- bench -----------------------------------------------------------------------------
def _bench_configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Benchmark the device pipeline: device description, per-stage latency (resampling, "
        "front-end, inference for every runtime x threads x XNNPACK on/off x int8/float32, "
        "Edge TPU), and end to end (listen as fast as possible, CPU and peak RSS of a "
        "real-time listen process, capture-to-MQTT latency with --mqtt). "
        "'bench frontend' compares the streaming front-end with librosa (needs librosa)."
    )
    p.add_argument("stage", nargs="?", default="device", choices=["device", "frontend"],
                   help="device: the whole device benchmark (default); frontend: "
                        "streaming front-end vs librosa")
    p.add_argument("--bundle", help="model bundle (default: the bundled model)")
    p.add_argument("--input", help=f"real audio to use (default: the bundled clip {DEMO_CLIP.name})")
    p.add_argument("--seconds", type=float,
                   help="device: seconds of each real-time run (default 20; listen --fast "
                        "plays 30x as much audio); frontend: seconds of audio (default 60)")
    p.add_argument("--mqtt", metavar="URL",
                   help="device: broker for the MQTT figures, e.g. mqtt://127.0.0.1:1883 "
                        "(publishes as device 'bench', no Home Assistant discovery)")
    p.add_argument("--repeats", type=int, default=5,
                   help="frontend: runs per method; the median is kept (default 5)")
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")


def _bench_frontend(args: argparse.Namespace, source: Path) -> dict:
    from .audio import load_audio
    from .bench.frontend import format_table, run_frontend_bench

    seconds = 60.0 if args.seconds is None else args.seconds
    params = _frontend_params(args.bundle)
    audio = load_audio(source, params.sample_rate)
    result = run_frontend_bench(audio, params, seconds=seconds, repeats=args.repeats,
                                source=source.name)
    print(format_table(result))
    return result


def _bench_device(args: argparse.Namespace, source: Path) -> dict:
    from .bench.suite import failures, format_table, run_bench, stderr_progress
    from .bundle import default_bundle_path

    seconds = 20.0 if args.seconds is None else args.seconds
    command = ["genre-edge", "bench"]
    for flag, value in (("--bundle", args.bundle), ("--input", args.input),
                        ("--seconds", args.seconds), ("--mqtt", args.mqtt),
                        ("--json", args.json_out)):
        if value is not None:
            command += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    result = run_bench(args.bundle or default_bundle_path(), source, seconds=seconds,
                       mqtt_url=args.mqtt, command=" ".join(command), progress=stderr_progress)
    print(format_table(result), flush=True)
    for failure in failures(result):
        print(f"genre-edge: bench: {failure}", file=sys.stderr)
    return result


#: Bounds of bench's --seconds and --repeats: beyond them a run takes hours (or, for the
#: front-end bench, asks for the whole audio in memory at once), a typo rather than a plan;
#: the day-long memory run is 'python -m firmware_py.bench.longrun'.
MAX_BENCH_SECONDS = 3600.0
MAX_BENCH_REPEATS = 1000


def _bench_run(args: argparse.Namespace) -> int:
    if args.seconds is not None and not 0 < args.seconds <= MAX_BENCH_SECONDS:  # NaN fails too
        raise GenreEdgeError(f"--seconds {args.seconds:g} is out of range: give seconds in "
                             f"(0, {MAX_BENCH_SECONDS:g}]")
    if not 0 < args.repeats <= MAX_BENCH_REPEATS:
        raise GenreEdgeError(f"--repeats {args.repeats} is out of range: give 1 to "
                             f"{MAX_BENCH_REPEATS}")
    source = Path(args.input) if args.input else DEMO_CLIP
    if args.stage == "frontend":
        result = _bench_frontend(args, source)
    else:
        result = _bench_device(args, source)
    if args.json_out:
        write_output(args.json_out, lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))
        print(f"wrote {args.json_out}", file=sys.stderr)
    if args.stage == "device":
        from .bench.suite import failures

        return 1 if failures(result) else 0  # "not present" is fine; a failed section is not
    return 0


bench = Command("bench", "benchmark the device: per-stage latency, CPU, memory, end to end",
                _bench_configure, _bench_run)


# -- classify --------------------------------------------------------------------------
def _classify_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg/opus, mp3)")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: file, genre, confidence, probabilities")
    p.add_argument("--timeline", action="store_true",
                   help="also show the smoothed genre per window, as the device would publish it")
    p.add_argument("--labelled", action="store_true",
                   help="score recordings of known genres: each file's folder name is its true "
                        "genre (recordings/jazz/take1.wav; folders are searched for audio "
                        "files); ends with the accuracy, per-genre recall and confusions")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")


def _labelled_files(paths: list[str], labels: list[str]) -> list[str]:
    """Files of ``paths`` (folders searched recursively) for ``--labelled``."""
    from .similarity import audio_files

    out: list[str] = []
    for p in paths:
        out += [str(f) for f in audio_files(Path(p))] if Path(p).is_dir() else [p]
    if not out:
        raise GenreEdgeError(f"no audio files in {', '.join(paths)}: record clips into "
                             f"folders named after genres ({', '.join(labels[:3])}, ...)")
    return out


def _score_summary(scored: list[tuple[str, str]], labels: list[str]) -> dict[str, Any]:
    """Accuracy, per-genre recall and the confusions of ``(true, predicted)`` pairs."""
    correct = sum(t == p for t, p in scored)
    per = {g: [sum(1 for t, p in scored if t == g and p == g), sum(1 for t, _ in scored if t == g)]
           for g in labels if any(t == g for t, _ in scored)}
    confusions: dict[str, int] = {}
    for t, p in scored:
        if t != p:
            confusions[f"{t} -> {p}"] = confusions.get(f"{t} -> {p}", 0) + 1
    return {"files": len(scored), "correct": correct,
            "accuracy": correct / len(scored) if scored else None,
            "recall": {g: {"correct": c, "files": n} for g, (c, n) in per.items()},
            "confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1]))}


def _classify_run(args: argparse.Namespace) -> int:
    from .bundle import default_bundle_path, load_bundle
    from .classify import classify_file, timeline
    from .errors import skip_reason
    from .text import display, json_line

    bundle = load_bundle(args.bundle or default_bundle_path())
    model = bundle.open_model(threads=args.threads)
    files = _labelled_files(args.files, bundle.labels) if args.labelled else args.files
    failures = 0
    scored: list[tuple[str, str]] = []
    for path in files:
        truth = Path(path).parent.name
        if args.labelled and truth not in bundle.labels:
            failures += 1
            print(f"genre-edge: error: {display(path)} is in a folder named {display(truth)}, "
                  f"which is not a genre of the model: put it in a folder named one of "
                  f"{', '.join(bundle.labels)}", file=sys.stderr, flush=True)
            continue
        try:
            result = classify_file(path, bundle, model)
            states = timeline(result, bundle) if args.timeline else []
        except Exception as exc:  # noqa: BLE001 - one bad file of any kind skips that file
            failures += 1
            print(f"genre-edge: error: {skip_reason(exc, path)}", file=sys.stderr, flush=True)
            continue
        if args.labelled:
            scored.append((truth, result.genre))
        if args.json:
            record = result.to_json()
            if args.timeline:
                record["timeline"] = [
                    {"t_s": round(s.t_s, 2), "genre": s.genre,
                     "confidence": round(s.confidence, 4)} for s in states
                ]
            print(json_line(record), flush=True)
            continue
        probs = "  ".join(f"{k} {100 * v:.1f}%" for k, v in result.probabilities.items())
        print(f"{display(path)}: {result.genre} ({100 * result.confidence:.1f}%)   {probs}   "
              f"[{result.windows} windows, {result.duration_s:.1f} s]", flush=True)
        for s in states:
            mark = "*" if s.changed else " "
            print(f"  {s.t_s:7.1f} s {mark} {s.genre:<12} {100 * s.confidence:5.1f}%")
    if scored:
        summary = _score_summary(scored, bundle.labels)
        if args.json:
            print(json_line({"summary": summary}), flush=True)
        else:
            recall = ", ".join(f"{g} {r['correct']}/{r['files']}" for g, r in summary["recall"].items())
            worst = ", ".join(f"{k} ({v})" for k, v in list(summary["confusions"].items())[:5])
            print(f"labelled: {summary['correct']} of {summary['files']} files right "
                  f"({100 * summary['accuracy']:.1f}%); recall {recall}"
                  + (f"; most confused: {worst}" if worst else ""), flush=True)
    if failures == len(files):
        return 2  # nothing classified: a usage error, like every other one
    return 1 if failures else 0


classify = Command(
    "classify", "classify audio files with the bundled (or any) model",
    _classify_configure, _classify_run,
)


# -- listen ----------------------------------------------------------------------------
def _listen_configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Classify live audio (microphone, or a file with --input) and publish the smoothed "
        "genre to the console, MQTT (Home Assistant discovery) and a display page. "
        "Settings: --config FILE < GENRE_EDGE_<SECTION>_<KEY> environment < these flags "
        "(see deploy/config.example.toml)."
    )
    from .config.flags import add_setting_flags

    p.add_argument("--config", help="TOML configuration file (default: $GENRE_EDGE_CONFIG)")
    # Every setting's flag, help and default come from its declaration (firmware_py.bounds).
    add_setting_flags(p)
    p.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (password redacted) and exit")
    p.add_argument("--example-config", action="store_true",
                   help="print the example configuration file (every key, its help and default) "
                        "and exit")


def _listen_run(args: argparse.Namespace) -> int:
    import logging

    from .app import run_listen
    from .config import load_config
    from .config.flags import overrides

    if args.list_devices:
        from .sources import list_input_devices

        devices = list_input_devices()
        for dev in devices:
            print(f"{dev['index']:3d}  {dev['name']}  ({dev['max_input_channels']} ch, "
                  f"{float(dev.get('default_samplerate') or 0):.0f} Hz)")
        if not devices:
            print("no audio input devices: plug in a microphone, or play a file with --input FILE",
                  file=sys.stderr)
            return 1
        return 0

    if args.example_config:
        from .config.example import render_example

        print(render_example(), end="")
        return 0

    def load():
        return load_config(args.config, overrides=overrides(args))

    config = load()
    if args.print_config:
        print(json.dumps(config.redacted(), indent=2))
        return 0
    if not args.verbose:  # -v/-vv on the command line win over the configured level
        logging.getLogger().setLevel(getattr(logging, config.log_level.upper()))
    return run_listen(config, reload=load)


listen = Command(
    "listen", "classify a microphone or file live: console, MQTT, display page",
    _listen_configure, _listen_run,
)
