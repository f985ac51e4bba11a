"""``genre-edge convert`` and ``genre-edge edgetpu-check`` (light imports; work in ``run``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from firmware_py.cli import Command


def _convert_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory (the --out of 'genre-edge train')")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--representative", type=int, default=400,
                   help="real training windows to calibrate on, stratified (>= 200; default 400)")
    p.add_argument("--float", dest="with_float", action="store_true",
                   help="also add a float32 TFLite model for comparison")
    p.add_argument("--split", default="test", help="held-out split to verify on (default test)")
    p.add_argument("--inference-hop-s", "--hop-s", dest="inference_hop_s", type=float,
                   help="seconds between inferences (default: the run's)")
    p.add_argument("--name", default="", help="bundle name (default: the directory name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rooms", action="store_true",
                   help="verify on clean files only (default: also in the held-out rooms)")
    p.add_argument("--json", dest="json_out", help="also write the report as JSON")


def _convert_run(args: argparse.Namespace) -> int:
    from firmware_py.commands import write_output

    from .convert import convert_run, format_report

    command = "genre-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = convert_run(
        args.run, args.out, representative=args.representative, with_float=args.with_float,
        split=args.split, inference_hop_s=args.inference_hop_s, name=args.name, seed=args.seed, command=command,
        rooms=not args.no_rooms,
    )
    print(format_report(report))
    if args.json_out:
        write_output(args.json_out,
                     lambda p: p.write_text(json.dumps(report["metrics"], indent=2) + "\n"))
    return 0


convert = Command(
    "convert", "quantise a training run to an int8 TFLite model bundle",
    _convert_configure, _convert_run,
)


def _check_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".tflite model (or a bundle directory)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _check_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .edgetpu import COMPILE_HINT, check_model

    path = Path(args.model)
    if path.is_dir():
        path = path / "model.tflite"
    report = check_model(path)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        print(report.summary())
        if report.all_mappable:
            print(f"to run on a Coral, {COMPILE_HINT}")
    return 0 if report.all_mappable else 1


edgetpu_check = Command(
    "edgetpu-check", "report which ops of a TFLite model the Coral Edge TPU can run",
    _check_configure, _check_run,
)
