"""A trained run becomes a model bundle: quantise, verify on held-out data, check, write.

``convert_run(RUN, OUT)``:

1. loads ``RUN/model.keras`` and ``RUN/run.json`` (labels, front-end, dataset);
2. draws a stratified representative set of real training windows (>= 200) and
   quantises to full-integer int8 (optionally also float32);
3. verifies float Keras against the int8 TFLite model, run by the device's own
   interpreter, on the test split: window- and track-level accuracy, top-1 agreement,
   probability differences; a drop over 1 point is a warning;
4. checks the graph against the Edge TPU rules, and compiles it when
   ``edgetpu_compiler`` is on PATH;
5. quantises the embedding sub-model (input -> the pooled layer before the classifier
   Dense) with the same representative windows, for ``genre-edge index`` / ``similar``;
6. writes the bundle (``firmware_py.bundle.write_bundle``) with every figure above.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.bundle import MAX_HOP_S, hop_frames_for, hop_s_ok, load_bundle, write_bundle
from firmware_py.errors import GenreEdgeError
from firmware_py.inference import Model
from training.quantize import to_float, to_int8
from training.runfolder import read_run

from .edgetpu import check_model, compile_for_edgetpu

log = logging.getLogger(__name__)

MIN_REPRESENTATIVE = 200
DROP_WARNING_POINTS = 1.0


def _git_commit() -> str:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return res.stdout.strip() if res.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def portable(value: Any) -> Any:
    """Provenance without this machine's paths: absolute paths become their last two parts.

    A bundle travels to other machines (and the default one ships in the package); the
    folder layout of the workstation that built it is noise there, and can be private.
    """
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str):
        return " ".join(
            "/".join(Path(tok).parts[-2:]) if tok.startswith("/") else tok for tok in value.split(" ")
        )
    return value


def representative_windows(
    tracks: list[Any], n_labels: int, window_frames: int, count: int, seed: int
) -> np.ndarray:
    """``count`` real windows, equally many per class, spread over tracks and offsets."""
    from training.dataset import random_crops

    rng = np.random.default_rng(seed)
    per_class = int(np.ceil(count / n_labels))
    chosen: list[np.ndarray] = []
    for label in range(n_labels):
        pool = [t for t in tracks if t.label == label]
        if not pool:
            continue
        # Round-robin over the class's tracks in random order, one random crop per visit.
        visits = np.resize(rng.permutation(len(pool)), per_class)
        for i in visits:
            feats = np.asarray(pool[i].features(), dtype=np.float32)
            chosen.append(random_crops(feats, window_frames, 1, rng)[0])
    order = rng.permutation(len(chosen))[:count]
    return np.stack([chosen[i] for i in order])


def compare(
    keras_model: Any, tflite_model: Model, tracks: list[Any], window_frames: int, hop_frames: int,
    labels: list[str],
) -> dict[str, Any]:
    """Float Keras vs the TFLite model on every window of ``tracks``."""
    from training.dataset import eval_windows
    from training.fit import predict_tracks

    win_true, float_probs, q_probs, track_ids = [], [], [], []
    for t, pf in zip(tracks, predict_tracks(keras_model, tracks, window_frames, hop_frames),
                     strict=True):
        wins = eval_windows(t, window_frames, hop_frames)
        pq = tflite_model.predict_many(wins)
        float_probs.append(pf)
        q_probs.append(pq)
        win_true += [t.label] * len(wins)
        track_ids += [len(float_probs)] * len(wins)  # by item: one track in 3 rooms is 3 items
    pf = np.concatenate(float_probs)
    pq = np.concatenate(q_probs)
    y = np.asarray(win_true)
    ids = np.asarray(track_ids)

    def track_acc(p: np.ndarray) -> float:
        correct = []
        for tid in dict.fromkeys(track_ids):
            mask = ids == tid
            correct.append(p[mask].mean(axis=0).argmax() == y[mask][0])
        return float(np.mean(correct))

    def confusion(p: np.ndarray) -> list[list[int]]:
        m = np.zeros((len(labels), len(labels)), dtype=int)
        for tid in dict.fromkeys(track_ids):
            mask = ids == tid
            m[y[mask][0], p[mask].mean(axis=0).argmax()] += 1
        return m.tolist()

    from training.calibration import expected_calibration_error

    out = {
        "tracks": len(tracks),
        "windows": int(len(y)),
        "float_window_accuracy": float((pf.argmax(1) == y).mean()),
        "int8_window_accuracy": float((pq.argmax(1) == y).mean()),
        "float_track_accuracy": track_acc(pf),
        "int8_track_accuracy": track_acc(pq),
        "top1_agreement": float((pf.argmax(1) == pq.argmax(1)).mean()),
        "max_prob_diff": float(np.abs(pf - pq).max()),
        "mean_prob_diff": float(np.abs(pf - pq).mean()),
        "int8_track_confusion": confusion(pq),
        "float_track_confusion": confusion(pf),
        "int8_track_predictions": [int(pq[ids == i].mean(axis=0).argmax()) for i in dict.fromkeys(track_ids)],
        "int8_window_ece": expected_calibration_error(pq, y),
        "float_window_ece": expected_calibration_error(pf, y),
    }
    out["window_drop_points"] = 100 * (out["float_window_accuracy"] - out["int8_window_accuracy"])
    out["track_drop_points"] = 100 * (out["float_track_accuracy"] - out["int8_track_accuracy"])
    return out


def embedding_layer(model: Any) -> Any:
    """The pooled penultimate layer: ``gap`` (edge model), else the classifier Dense's input.

    Dropout between the pooling and the classifier is the identity at inference, so the
    pooling output is what the classifier sees.
    """
    import keras

    names = {layer.name for layer in model.layers}
    if "gap" in names:
        return model.get_layer("gap")
    dense = (model.get_layer("logits") if "logits" in names
             else next((la for la in reversed(model.layers)
                        if isinstance(la, keras.layers.Dense)), None))
    if dense is None:
        raise GenreEdgeError(f"model {model.name} has no classifier Dense layer to take "
                             "embeddings before: use a genre-edge architecture")
    # The layer that produced the Dense's input (skipping Dropout, the identity here).
    producer = dense.input._keras_history.operation
    while isinstance(producer, keras.layers.Dropout):
        producer = producer.input._keras_history.operation
    return producer


def embedding_submodel(model: Any) -> Any:
    """A Keras model from the classifier's input to its pooled embedding (shared weights)."""
    import keras

    layer = embedding_layer(model)
    return keras.Model(model.inputs, layer.output, name=f"{model.name}_embedding")


def compare_embeddings(keras_model: Any, tflite_model: Model, windows: np.ndarray) -> dict[str, Any]:
    """Float Keras vs int8 TFLite embeddings of the same windows (cosine similarity)."""
    ef = np.asarray(keras_model.predict(windows[..., None], verbose=0, batch_size=64),
                    dtype=np.float64)
    eq = tflite_model.predict_many(windows).astype(np.float64)
    nf = np.linalg.norm(ef, axis=1)
    nq = np.linalg.norm(eq, axis=1)
    cos = (ef * eq).sum(1) / np.maximum(nf * nq, 1e-12)
    return {
        "windows": int(len(windows)),
        "dim": int(ef.shape[1]),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }


def default_smoothing() -> dict[str, Any]:
    try:
        from firmware_py.smoothing import SmoothingParams
    except ImportError:
        return {}
    return SmoothingParams().to_dict()


def convert_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    representative: int = 400,
    with_float: bool = False,
    split: str = "test",
    inference_hop_s: float | None = None,
    name: str = "",
    seed: int = 0,
    command: str = "",
    rooms: bool = True,
) -> dict[str, Any]:
    """Convert, verify, check and bundle; returns the report written into the manifest.

    With ``rooms`` the int8 model is also verified on the split played through the held-out
    rooms (``training.evaluate.in_room_tracks``), reported under ``verification.in_room``.
    """
    from training.dataset import eval_windows, load_run_splits

    if representative < MIN_REPRESENTATIVE:
        raise GenreEdgeError(
            f"--representative {representative} is too small: use at least {MIN_REPRESENTATIVE}"
        )
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = read_run(run_dir)
    labels, frontend = run.labels, run.frontend
    hop_s = float(inference_hop_s if inference_hop_s is not None else run.inference_hop_s)
    if not hop_s_ok(hop_s):
        raise GenreEdgeError(f"--inference-hop-s {hop_s:g} is not a hop: give seconds in "
                             f"(0, {MAX_HOP_S:g}]")
    if out_dir.exists() and not out_dir.is_dir():
        raise GenreEdgeError(f"--out {out_dir} is a file: give a folder for the bundle")
    hop_frames = hop_frames_for(hop_s, frontend)
    splits = load_run_splits(run)
    if not splits.get("train"):
        raise GenreEdgeError(f"run {run_dir} has no training tracks to calibrate on: check its data")
    eval_tracks = splits.get(split) or []
    if not eval_tracks:
        raise GenreEdgeError(f"run {run_dir} has no '{split}' tracks to verify on: pick --split")

    room_items: list[Any] = []
    if rooms:  # rendered first: the renderers fork, which TensorFlow's threads forbid later
        from training.evaluate import in_room_tracks

        room_items, room_info = in_room_tracks(
            eval_tracks, split, frontend, run.cache_dir)
    import keras

    import training.models  # noqa: F401  (registers the custom layers)

    model = keras.models.load_model(run.model_path, compile=False)
    outputs = int(model.output_shape[-1])
    if outputs != len(labels):
        raise GenreEdgeError(
            f"run {run_dir}: model.keras has {outputs} outputs but run.json lists {len(labels)} "
            "labels (a training run into this folder was interrupted or is still going): "
            "train again into it, or convert another run"
        )
    calibration_tracks = list(splits["train"])
    train_cfg = run.train
    if int(train_cfg.get("rooms") or 0) > 0:
        # The device hears rooms: calibrate the int8 ranges on clean and in-room windows.
        from training.room_features import training_renderings

        _, rendered, _ = training_renderings(
            splits["train"], [], frontend.sample_rate, run.cache_dir,
            rooms=int(train_cfg["rooms"]), val_rooms=0, rir_dir=train_cfg.get("rir_dir"),
            noise_dir=train_cfg.get("noise_dir"))
        calibration_tracks += rendered
    rep = representative_windows(calibration_tracks, len(labels), frontend.window_frames,
                                 representative, seed)
    log.info("calibrating on %d representative windows", len(rep))
    int8_bytes = to_int8(model, rep)
    embedder = embedding_submodel(model)
    embedding_bytes = to_int8(embedder, rep)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        int8_path = tmp_dir / "model.tflite"
        int8_path.write_bytes(int8_bytes)
        float_path = None
        if with_float:
            float_path = tmp_dir / "model_float.tflite"
            float_path.write_bytes(to_float(model))

        tflite = Model(int8_path, threads=os.cpu_count() or 1)
        verification = compare(model, tflite, eval_tracks, frontend.window_frames, hop_frames,
                               labels)
        verification["split"] = split
        verification["track_ids"] = [t.track_id for t in eval_tracks]
        if room_items:
            room = compare(model, tflite, room_items, frontend.window_frames, hop_frames, labels)
            verification["in_room"] = {**room_info, **room,
                                       "items": [[t.track_id, t.k] for t in room_items]}
        if with_float:
            float_tflite = Model(float_path)
            fv = compare(model, float_tflite, eval_tracks, frontend.window_frames, hop_frames, labels)
            verification["float_tflite_track_accuracy"] = fv["int8_track_accuracy"]
            verification["float_tflite_window_accuracy"] = fv["int8_window_accuracy"]

        tpu = check_model(int8_path)
        compiled, compile_note = compile_for_edgetpu(int8_path, tmp_dir)

        embedding_path = tmp_dir / "model_embedding.tflite"
        embedding_path.write_bytes(embedding_bytes)
        embedding_tflite = Model(embedding_path, threads=os.cpu_count() or 1)
        check_windows = np.concatenate([
            eval_windows(t, frontend.window_frames, hop_frames)[:4] for t in eval_tracks
        ])
        embedding_tpu = check_model(embedding_path)
        embedding = {
            "layer": embedding_layer(model).name,
            "model_bytes": len(embedding_bytes),
            "output_dtype": str(embedding_tflite.output_dtype),
            "float_vs_int8": compare_embeddings(embedder, embedding_tflite, check_windows),
            "edgetpu": {k: v for k, v in embedding_tpu.to_dict().items() if k != "ops"},
        }
        embedding["edgetpu"]["model"] = "model_embedding.tflite"

        quant = {
            "representative_windows": int(len(rep)),
            "model_bytes": len(int8_bytes),
            "input_dtype": str(tflite.input_dtype),
            "output_dtype": str(tflite.output_dtype),
            "input_scale": float(tflite.input_scale),
            "input_zero_point": int(tflite.input_zero_point),
        }
        metrics = {
            "training": run.get("metrics", {}),
            "quantization": quant,
            "verification": verification,
            "edgetpu": {k: v for k, v in tpu.to_dict().items() if k != "ops"},
            "embedding": embedding,
        }
        metrics["edgetpu"]["compiled"] = compiled is not None
        metrics["edgetpu"]["note"] = compile_note if compiled is None else "compiled"
        metrics["edgetpu"]["model"] = "model.tflite"
        provenance = {
            "run": run_dir.name,
            "arch": run.get("arch"),
            "dataset": portable(run.get("dataset")),
            "seed": run.get("seed"),
            "commit": _git_commit(),
            "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            "command": portable(command),
        }
        if (run.train or {}).get("refit_of"):
            # trained on the validation tracks too (--train-on-val): nothing may be tuned on them
            provenance["refit_of"] = Path(run.train["refit_of"]).name
        write_bundle(
            out_dir, model=int8_path, labels=labels, frontend=frontend, inference_hop_s=hop_s,
            smoothing=run.get("smoothing") or default_smoothing(), provenance=provenance,
            metrics=metrics, name=name or out_dir.name, edgetpu_model=compiled,
            float_model=float_path, embedding_model=embedding_path,
        )
    (out_dir / "edgetpu_report.txt").write_text(
        tpu.table() + "\n" + tpu.summary() + "\n\nembedding model (model_embedding.tflite):\n"
        + embedding_tpu.table() + "\n" + embedding_tpu.summary() + "\n"
    )
    load_bundle(out_dir)  # the bundle we wrote must validate and run
    return {"metrics": metrics, "edgetpu_table": tpu.table(), "bundle": str(out_dir)}


def format_report(report: dict[str, Any]) -> str:
    m = report["metrics"]
    v, q, e = m["verification"], m["quantization"], m["edgetpu"]
    lines = [
        f"bundle: {report['bundle']}",
        f"int8 model: {q['model_bytes'] / 1024:.1f} KB, input {q['input_dtype']}, "
        f"output {q['output_dtype']}, calibrated on {q['representative_windows']} windows",
        f"verification on {v['split']} ({v['tracks']} tracks, {v['windows']} windows):",
        f"  {'':<16}{'float (Keras)':>14}{'int8 (TFLite)':>15}{'drop (points)':>15}",
        f"  {'window accuracy':<16}{100 * v['float_window_accuracy']:>13.1f}%"
        f"{100 * v['int8_window_accuracy']:>14.1f}%{v['window_drop_points']:>15.2f}",
        f"  {'track accuracy':<16}{100 * v['float_track_accuracy']:>13.1f}%"
        f"{100 * v['int8_track_accuracy']:>14.1f}%{v['track_drop_points']:>15.2f}",
        f"  top-1 agreement {100 * v['top1_agreement']:.1f}%, probability difference max "
        f"{v['max_prob_diff']:.3f} mean {v['mean_prob_diff']:.4f}",
        f"  expected calibration error (windows): int8 {v['int8_window_ece']:.3f}",
    ]
    if "in_room" in v:
        r = v["in_room"]
        lines += [
            f"in held-out rooms ({r['tracks']} renderings, {r['per_track']} per track):",
            f"  {'window accuracy':<16}{100 * r['float_window_accuracy']:>13.1f}%"
            f"{100 * r['int8_window_accuracy']:>14.1f}%{r['window_drop_points']:>15.2f}",
            f"  {'track accuracy':<16}{100 * r['float_track_accuracy']:>13.1f}%"
            f"{100 * r['int8_track_accuracy']:>14.1f}%{r['track_drop_points']:>15.2f}",
            f"  expected calibration error (windows): int8 {r['int8_window_ece']:.3f}",
        ]
    lines += [
        f"Edge TPU: {e['summary']}",
        f"  {e['note']}",
    ]
    emb = m.get("embedding")
    if emb:
        fv = emb["float_vs_int8"]
        lines += [
            f"embedding model ({emb['layer']}, {fv['dim']}-d): {emb['model_bytes'] / 1024:.1f} KB "
            f"int8; float-vs-int8 cosine mean {fv['cosine_mean']:.4f} min "
            f"{fv['cosine_min']:.4f} on {fv['windows']} windows",
            f"  Edge TPU: {emb['edgetpu']['summary']}",
        ]
    for key in ("window_drop_points", "track_drop_points"):
        if v[key] > DROP_WARNING_POINTS:
            lines.append(
                f"WARNING: int8 loses {v[key]:.2f} points of {key.split('_')[0]} accuracy "
                f"(> {DROP_WARNING_POINTS}): calibrate on more windows (--representative) or "
                "check the model for outlier activations"
            )
    return "\n".join(lines)
