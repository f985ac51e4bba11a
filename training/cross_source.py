"""Accuracy on music from a source the model never heard: ``python -m training.cross_source``.

The test split holds other tracks of the same two sources (GTZAN, Emotify) that training
saw, recorded, mastered and excerpted the same way; a listener plays neither. Classical,
pop and rock exist in both sources, so for each source S this trains a model without any
of S's clips of those genres and tests it on all of them: the nearest thing in this data
to music from elsewhere. The in-source figure beside it is the same genres and source in
the normal test split of a reference run (``--reference RUN``, trained on everything).

Every extra argument goes to ``genre-edge train`` unchanged (the recipe being measured)::

    python -m training.cross_source --data ../shared/data/music --out runs/xsrc \\
        --reference runs/default -- --teacher musicnn-msd --distill 0.8 --rooms 4 --epochs 12

writes ``OUT/<source>/`` (the runs) and ``OUT/cross_source.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Genres recorded by both sources of the shared set.
SHARED_GENRES = ("classical", "pop", "rock")


def read_rows(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def held_out(rows: list[dict[str, str]], source: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(rows to train on, rows held out): every clip of ``source`` in the shared genres."""
    out = [r for r in rows if r["source"] == source and r["genre"] in SHARED_GENRES]
    keep = [r for r in rows if not (r["source"] == source and r["genre"] in SHARED_GENRES)]
    return keep, out


def write_manifest(rows: list[dict[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def score(run_dir: Path, data: Path, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Track accuracy (mean vote) of ``run_dir``'s model on ``rows``."""
    from .dataset import Track, build_cache
    from .fit import configure_tensorflow, predict_tracks
    from .metrics import summarize
    from .runfolder import read_run

    run = read_run(run_dir)
    labels, fe, cache = run.labels, run.frontend, run.cache_dir
    tracks = [Track(Path(r["path"]).with_suffix("").as_posix(), labels.index(r["genre"]),
                    r["genre"], data / r["path"], fe, cache) for r in rows]
    build_cache(tracks, progress=False)
    configure_tensorflow(1)
    import keras

    from . import models  # noqa: F401  (registers BandAffine)

    model = keras.models.load_model(run.model_path, compile=False)
    probs = predict_tracks(model, tracks, fe.window_frames, run.inference_hop_frames)
    m = summarize(probs, [t.label for t in tracks], labels)
    return {"tracks": m["tracks"], "track_accuracy": m["track_accuracy_mean_vote"],
            "window_accuracy": m["window_accuracy"],
            "per_genre_recall": {g: m["per_class"][g]["recall"] for g in SHARED_GENRES}}


def in_source(reference: Path, source: str) -> float | None:
    """The reference run's test track accuracy on ``source``'s clips of the shared genres."""
    report = reference / "report.json"
    splits = reference / "splits.json"
    if not report.is_file() or not splits.is_file():
        return None
    errors = {e["track"] for e in json.loads(report.read_text()).get("errors", [])}
    test = json.loads(splits.read_text()).get("test", [])
    ids = [tid for tid, _path, genre in test
           if genre in SHARED_GENRES and Path(tid).name.startswith(f"{source}-")]
    return sum(tid not in errors for tid in ids) / len(ids) if ids else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m training.cross_source", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the real-music folder holding manifest.csv")
    p.add_argument("--out", required=True, help="folder for the runs and cross_source.json")
    p.add_argument("--reference", help="a run trained on everything, for the in-source figure")
    p.add_argument("--sources", default="gtzan,emotify")
    args = p.parse_args(own)
    data, out = Path(args.data).resolve(), Path(args.out)
    rows = read_rows(data)
    result: dict[str, Any] = {"recipe": "genre-edge train " + " ".join(recipe), "rows": []}
    for source in args.sources.split(","):
        keep, test = held_out(rows, source)
        run_dir = out / source
        manifest = out / f"manifest-without-{source}.csv"
        write_manifest(keep, manifest)
        t0 = time.time()
        cmd = [sys.executable, "-m", "firmware_py", "train", "--data", str(data),
               "--manifest", str(manifest), "--out", str(run_dir), "--overwrite",
               "--no-evaluate", *recipe]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        row = {"source": source, **score(run_dir, data, test),
               "train_time_s": round(time.time() - t0)}
        if args.reference:
            row["in_source_track_accuracy"] = in_source(Path(args.reference), source)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        (out / "cross_source.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
