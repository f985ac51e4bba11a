"""Device-side subcommands (light imports only; work happens inside ``run``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    from .features import DEFAULT_PARAMS

    if not bundle:
        return DEFAULT_PARAMS
    from .bundle import load_bundle

    return load_bundle(bundle, check_model=False).frontend


# -- features ---------------------------------------------------------------------------
def _features_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="audio file (wav, flac, ogg/opus, mp3)")
    p.add_argument("--out", required=True, help="output .npy: (frames, n_mels) float32 log-mel dB")
    p.add_argument("--bundle", help="take the front-end parameters from this model bundle")


def _features_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .audio import load_audio
    from .features import logmel

    params = _frontend_params(args.bundle)
    feats = logmel(load_audio(args.file, params.sample_rate), params)
    write_output(args.out, lambda p: np.save(p, feats))
    print(f"{args.out}: {feats.shape[0]} frames x {feats.shape[1]} mels "
          f"({feats.shape[0] * params.hop_s:.2f} s at {params.hop_s * 1000:.0f} ms hop)")
    return 0


features = Command(
    "features", "write the log-mel features of an audio file (.npy)",
    _features_configure, _features_run,
)


# -- bench -----------------------------------------------------------------------------
def _bench_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", nargs="?", default="frontend", choices=["frontend"],
                   help="what to benchmark (default: frontend)")
    p.add_argument("--bundle", help="front-end parameters from this bundle (default: built-in)")
    p.add_argument("--input", help=f"real audio to use (default: the bundled clip {DEMO_CLIP.name})")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of audio (default 60)")
    p.add_argument("--repeats", type=int, default=5, help="runs per method; the median is kept")
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")


def _bench_run(args: argparse.Namespace) -> int:
    from .audio import load_audio
    from .bench.frontend import format_table, run_frontend_bench

    if args.seconds <= 0 or args.repeats <= 0:
        raise GenreEdgeError("--seconds and --repeats must be > 0")
    params = _frontend_params(args.bundle)
    source = Path(args.input) if args.input else DEMO_CLIP
    audio = load_audio(source, params.sample_rate)
    result = run_frontend_bench(audio, params, seconds=args.seconds, repeats=args.repeats,
                                source=source.name)
    print(format_table(result))
    if args.json_out:
        write_output(args.json_out, lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


bench = Command("bench", "benchmark the device pipeline", _bench_configure, _bench_run)
