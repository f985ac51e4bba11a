"""Several training runs of the same data as one model: ``python -m training.ensemble
RUN RUN... --out RUN``.

Every member's trunk (its input normalisation and layers up to the pooled features) is kept
as it is; their pooled features are concatenated (``gap``: the embedding the converter
exports) and one dense layer holds every member's classifier side by side, its kernel and
bias scaled by ``1 / members``: its output is exactly the mean of the members' (calibrated)
logits, so the softmax is the normalised geometric mean of their probabilities. The graph has
the members' operations plus one CONCATENATION: full-integer int8 and Edge TPU rules are
those of the members. A temperature is then fitted on the validation windows (clean and in
the validation rooms, as ``genre-edge train`` does) and folded into that dense layer.

The result is a normal run folder (``run.json`` with ``ensemble`` naming its members,
``splits.json``, ``model.keras``): ``genre-edge evaluate``, ``genre-edge convert`` and the
model card read it like any other. Members must share labels, front-end, evaluation hop and
splits (seeds of one recipe, or different presets on one split).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import GenreEdgeError

from .runfolder import MODEL, RUN_JSON, RunRecord, read_run
from .train_config import TrainConfig


def check_members(runs: Sequence[RunRecord]) -> None:
    """One line naming the first member that cannot be averaged with the first."""
    if len(runs) < 2:
        raise GenreEdgeError("an ensemble needs at least two training runs: pass two or more "
                             "run folders")
    first = runs[0]
    splits0 = _track_sets(first)
    for run in runs[1:]:
        if run.labels != first.labels:
            raise GenreEdgeError(f"{run.folder} has labels {run.labels}, {first.folder} has "
                                 f"{first.labels}: ensemble runs trained on the same genres")
        if run.frontend.to_dict() != first.frontend.to_dict():
            raise GenreEdgeError(f"{run.folder} was trained on another front-end than "
                                 f"{first.folder}: ensemble runs of the same front-end")
        if run.inference_hop_s != first.inference_hop_s:
            raise GenreEdgeError(f"{run.folder} evaluates at a {run.inference_hop_s:g} s hop, "
                                 f"{first.folder} at {first.inference_hop_s:g} s: use one hop")
        for part, ids in _track_sets(run).items():
            if ids != splits0[part]:
                raise GenreEdgeError(
                    f"{run.folder} has other {part} tracks than {first.folder}: ensemble runs "
                    "of one split (a manifest's, or the same --seed), or its validation and "
                    "test would hold tracks a member trained on")


def _track_sets(run: RunRecord) -> dict[str, frozenset[str]]:
    from .dataset import load_run_splits

    return {part: frozenset(t.track_id for t in tracks)
            for part, tracks in load_run_splits(run).items()}


def combine(models: Sequence[Any], name: str = "ensemble") -> Any:
    """One Keras model whose logits are the mean of ``models``' logits (see the module doc).

    Every model needs a Dense layer named ``logits`` followed by the softmax output (the
    presets of :mod:`training.models`).
    """
    import keras
    from keras import layers

    inputs = keras.Input(models[0].inputs[0].shape[1:], name="logmel")
    pooled, kernels, biases = [], [], []
    for i, m in enumerate(models):
        try:
            dense = m.get_layer("logits")
        except ValueError:
            raise GenreEdgeError(f"model {m.name} has no 'logits' layer: ensemble the "
                                 "presets of training/models.py") from None
        trunk = keras.Model(m.inputs[0], dense.input, name=f"member{i}")
        pooled.append(trunk(inputs))
        k, b = dense.get_weights()
        kernels.append(np.asarray(k, dtype=np.float32))
        biases.append(np.asarray(b, dtype=np.float32))
    x = layers.Concatenate(name="gap")(pooled)
    dense = layers.Dense(kernels[0].shape[1], name="logits", dtype="float32")
    out = layers.Activation("softmax", name="probs", dtype="float32")(dense(x))
    model = keras.Model(inputs, out, name=name)
    n = float(len(models))
    dense.set_weights([np.concatenate(kernels, axis=0) / n, np.sum(biases, axis=0) / n])
    return model


def _validation(run: RunRecord, tracks: dict[str, list[Any]]) -> tuple[list[Any], list[Any]]:
    """The validation tracks and their renderings in the validation rooms, as training had
    them (``train.rooms`` / ``val_rooms``)."""
    val = tracks["val"]
    train = run.train
    if not int(train.get("rooms") or 0):
        return val, []
    from .room_features import training_renderings

    _, _, val_room = training_renderings(
        tracks["train"], val, run.frontend.sample_rate, run.cache_dir,
        rooms=int(train["rooms"]), val_rooms=int(train.get("val_rooms", TrainConfig.val_rooms)),
        rir_dir=train.get("rir_dir"), noise_dir=train.get("noise_dir"))
    return val, val_room


def ensemble_runs(members: Sequence[str | Path], out: str | Path, *, overwrite: bool = False,
                  calibrate: bool = True, verbose: int = 1) -> dict[str, Any]:
    """Combine the runs ``members`` into the run folder ``out`` and validate it.

    Returns the ensemble's ``run.json`` (also written); evaluate it with ``genre-edge
    evaluate OUT`` like any run.
    """
    from .dataset import load_run_splits, write_run_splits
    from .metrics import summarize
    from .selection import validation_figures

    t0 = time.time()
    runs = [read_run(m) for m in members]
    check_members(runs)
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise GenreEdgeError(f"{out} exists: pass --overwrite to replace it, or another --out")
        if any(out.resolve() == r.folder.resolve() for r in runs):
            raise GenreEdgeError(f"--out {out} is one of the members: write the ensemble elsewhere")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    first = runs[0]
    tracks = load_run_splits(first)
    val, val_room = _validation(first, tracks)  # rendered before TensorFlow: renderers fork

    from .fit import calibrate_saved_model, configure_tensorflow, predict_tracks

    configure_tensorflow(int(first.train.get("threads", 0)))
    import keras

    from . import models as _models  # noqa: F401  (registers BandAffine)

    loaded = [keras.models.load_model(r.model_path, compile=False) for r in runs]
    model = combine(loaded)
    write_run_splits(out, tracks)
    model.save(out / MODEL)
    wf, hop = first.window_frames, first.inference_hop_frames
    calibration = (calibrate_saved_model(out / MODEL, [*val, *val_room], wf, hop)
                   if calibrate else None)
    model = keras.models.load_model(out / MODEL, compile=False)
    def summary(tracks: list[Any]) -> dict[str, Any]:
        return summarize(predict_tracks(model, tracks, wf, hop), [t.label for t in tracks],
                         first.labels)

    vals = validation_figures(summary(val), summary(val_room) if val_room else None)
    archs = sorted({str(r.arch) for r in runs})
    run = dict(first.data)
    run.update({
        "arch": f"{len(runs)} x {archs[0]}" if len(archs) == 1 else " + ".join(str(r.arch) for r in runs),
        "seed": None,
        "parameters": int(model.count_params()),
        "best_epoch": None,
        "epochs_run": None,
        "val": vals,
        "calibration": calibration,
        "train_time_s": round(sum(float(r.get("train_time_s") or 0.0) for r in runs), 1),
        "metrics": {},
        "ensemble": {
            "combine": "mean of the members' calibrated logits, then one temperature fitted "
                       "on validation",
            "members": [{"run": r.folder.name, "arch": r.arch, "seed": r.seed,
                         "best_epoch": r.get("best_epoch"), "val": r.get("val"),
                         "train_time_s": r.get("train_time_s"),
                         "parameters": r.get("parameters"),
                         "test": (r.metrics or {}).get("test")} for r in runs],
            "combine_time_s": round(time.time() - t0, 1),
        },
    })
    (out / RUN_JSON).write_text(json.dumps(run, indent=2) + "\n")
    if verbose:
        line = (f"ensemble of {len(runs)}: {run['parameters']:,} parameters; validation track "
                f"{vals['val_track_accuracy']:.3f}")
        if val_room:
            line += f", in rooms {vals['val_room_track_accuracy']:.3f}"
        members_line = "; ".join(
            f"{r.folder.name} {float((r.get('val') or {}).get('val_track_accuracy', float('nan'))):.3f}"
            + (f" / {float((r.get('val') or {}).get('val_room_track_accuracy', float('nan'))):.3f}"
               if val_room else "") for r in runs)
        print(f"{line} (members: {members_line}) -> {out}", flush=True)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.ensemble",
        description="combine training runs of one split into one run (mean of their logits)")
    p.add_argument("members", nargs="+", help="run folders (the --out of 'genre-edge train')")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-calibrate", action="store_true",
                   help="keep the mean of the members' calibrated logits as it is")
    p.add_argument("--no-evaluate", action="store_true",
                   help="skip the evaluation on the val and test splits (clean and in rooms)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    args = p.parse_args(argv)
    verbose = 0 if args.quiet else 1
    try:
        ensemble_runs(args.members, args.out, overwrite=args.overwrite,
                      calibrate=not args.no_calibrate, verbose=verbose)
        if not args.no_evaluate:  # as 'genre-edge train' does: the model card reads both
            from .evaluate import evaluate_run

            for split in ("val", "test"):
                evaluate_run(args.out, split, verbose=verbose)
    except GenreEdgeError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
