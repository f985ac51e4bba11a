"""Fit a model on cached features: tf.data input, class weights, schedule, track-level early stopping.

One training *epoch* draws ``crops_per_track`` random windows from every training track
(so long and short tracks count the same, and an epoch stays short on a 2-core CPU);
validation uses every window at a fixed hop and votes per track. The best epoch by
validation track-level accuracy (ties: window accuracy, then lower loss) is saved as
``RUN/model.keras``.

The pieces: :mod:`training.train_config` (hyper-parameters), :mod:`training.sampler`
(the input), :mod:`training.tf_setup` (TensorFlow and Keras set-up); re-exported here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.bundle import hop_frames_for
from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .dataset import DatasetSpec, Track, eval_windows, write_run_splits
from .heap import keep_steady_heap
from .sampler import WindowSampler, band_stats, class_weights
from .selection import EpochSelector, selection_key
from .tf_setup import (
    configure_tensorflow,
    distribution_strategy,
    export_float32,
    make_optimizer,
    time_budget,
    use_mixed_precision,
)
from .train_config import TrainConfig

__all__ = [
    "TrainConfig", "WindowSampler", "band_stats", "calibrate_saved_model", "class_weights",
    "configure_tensorflow", "export_float32", "predict_tracks", "selection_key", "time_budget",
    "train",
]

log = logging.getLogger(__name__)


def predict_tracks(model: Any, tracks: Sequence[Track], window_frames: int, hop_frames: int,
                   batch_size: int = 256) -> list[np.ndarray]:
    """Softmax probabilities of every fixed-hop window, one ``(windows, n_labels)`` per track.

    The model runs as a traced graph (:func:`_graph_forward`), not eagerly: ~1.5x faster on
    2 cores (4,096 windows of edge-l: 7.2 s vs 10.7 s, one thread), the same probabilities
    within 1e-5 (tests/test_training.py).
    """
    forward = _graph_forward(model)
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    sizes: list[int] = []

    def flush() -> None:
        if not pending:
            return
        x = np.concatenate(pending)[..., None]
        probs = np.concatenate([forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        start = 0
        for n in sizes:
            out.append(probs[start : start + n].astype(np.float32))
            start += n
        pending.clear()
        sizes.clear()

    for t in tracks:
        w = eval_windows(t, window_frames, hop_frames)
        pending.append(w)
        sizes.append(len(w))
        if sum(sizes) >= 2048:
            flush()
    flush()
    return out


def _graph_forward(model: Any) -> Any:
    """``model(x, training=False)`` traced once per model into a ``tf.function`` (any batch
    size; the model's variables are read at each call, so weights set later, e.g. the moving
    average swapped in before validation, are seen); returns numpy."""
    fn = getattr(model, "_genre_edge_forward", None)
    if fn is None:
        import tensorflow as tf

        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])

        def fn(x: np.ndarray) -> np.ndarray:
            return np.asarray(graph(x))

        model._genre_edge_forward = fn
    return fn


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide ``model``'s last dense layer (kernel and bias) by ``temperature``."""
    dense = model.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])


def calibrate_saved_model(model_path: Path, tracks: Sequence[Any], window_frames: int,
                          hop_frames: int) -> dict[str, Any]:
    """Fit a temperature on ``tracks``' windows and fold it into ``model_path``'s last dense
    layer (kernel and bias divided by T): the saved model's probabilities are calibrated."""
    import keras

    from .calibration import (
        apply_temperature,
        expected_calibration_error,
        fit_temperature,
        nll,
        window_labels,
    )

    model = keras.models.load_model(model_path, compile=False)
    probs = predict_tracks(model, tracks, window_frames, hop_frames)
    labels = [t.label for t in tracks]
    temperature = fit_temperature(probs, labels)
    p, y = window_labels(probs, labels)
    fold_temperature(model, temperature)
    model.save(model_path)
    calibrated = apply_temperature(p, temperature)
    return {"temperature": temperature, "fitted_on": "validation windows, clean and in-room",
            "windows": int(len(y)),
            "val_nll_before": nll(p, y), "val_nll_after": nll(calibrated, y),
            "val_ece_before": expected_calibration_error(p, y),
            "val_ece_after": expected_calibration_error(calibrated, y)}


def train(
    spec: DatasetSpec,
    splits: dict[str, list[Track]],
    labels: Sequence[str],
    frontend: FrontendParams,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    cache_dir: Path,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train, keep the best epoch, write ``model.keras``, ``run.json``, ``history.json``.

    Parameters
    ----------
    spec : DatasetSpec
        How the splits were made (stored in ``run.json``).
    splits : dict
        ``train`` / ``val`` / ``test`` tracks (cached features).
    labels : sequence of str
        Label names; index = model output index.
    frontend : FrontendParams
        Front-end of the cached features; ``frontend.window_frames`` is the model input.
    out_dir : str or Path
        Run folder (created).
    cfg : TrainConfig
        Hyper-parameters.
    cache_dir : Path
        Feature cache root (stored in ``run.json``).
    verbose : int
        0 silent, 1 one line per epoch.

    Returns
    -------
    dict
        The ``run.json`` content.
    """
    t_start = time.time()
    tf = configure_tensorflow(cfg.threads)
    import keras

    from .models import PRESETS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    n_labels, wf = len(labels), frontend.window_frames
    hop_frames = hop_frames_for(cfg.inference_hop_s, frontend)
    refit_source = None
    if cfg.refit_of:
        from .refit import check_refit_source, refit_splits

        refit_source = check_refit_source(Path(cfg.refit_of), out)
        splits = refit_splits(refit_source, splits, list(labels), frontend)
    train_tracks, val_tracks = splits["train"], splits["val"]
    features = [np.ascontiguousarray(t.features(), dtype=np.float32) for t in train_tracks]
    mean, std = band_stats(train_tracks)
    weights = class_weights([t.label for t in train_tracks], n_labels)
    if cfg.balance:
        weights = np.ones_like(weights)
    soft, teacher_report, soft_hop, hints = _teacher_targets(cfg, splits, n_labels, frontend,
                                                             verbose)
    variants, val_room = _room_renderings(cfg, frontend, cache_dir, train_tracks, val_tracks)
    sampler = WindowSampler(features, [t.label for t in train_tracks], n_labels, wf, cfg,
                            frontend, weights, soft=soft, soft_hop_frames=soft_hop,
                            variants=variants, hints=hints)
    strategy = distribution_strategy(tf, cfg.distribute)
    mixed = use_mixed_precision(tf, cfg.mixed_precision)
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    ds, steps, global_batch = _input_pipeline(tf, sampler, cfg, frontend, n_labels, hints,
                                              strategy)
    preset = PRESETS[cfg.arch]
    peak_lr = cfg.learning_rate or preset.learning_rate
    with strategy.scope():
        model, trainee = _compiled_model(keras, cfg, frontend, n_labels, mean, std, steps,
                                         peak_lr, hints)
    n_params = int(model.count_params())
    if verbose:
        print(f"{cfg.arch}: {n_params:,} parameters, input {wf}x{frontend.n_mels}, labels {list(labels)}; "
              f"{len(train_tracks)} train / {len(val_tracks)} val / {len(splits.get('test', []))} test "
              f"tracks; {steps} steps of {global_batch} per epoch; "
              f"{'mixed float16' if mixed else 'float32'} on "
              f"{strategy.num_replicas_in_sync} replica(s)", flush=True)

    model_path = out / "model.keras"
    selector = EpochSelector(
        predict=lambda tracks: predict_tracks(model, tracks, wf, hop_frames),
        save_best=lambda: export_float32(model, cfg.arch, wf, frontend.n_mels, n_labels,
                                         model_path),
        val_tracks=val_tracks, val_room=val_room, labels=labels, out=out, cfg=cfg,
        verbose=bool(verbose), t_start=t_start)

    def end_of_epoch(epoch: int, logs: dict[str, Any] | None) -> None:
        lr = float(keras.ops.convert_to_numpy(trainee.optimizer.learning_rate))
        if selector.end_of_epoch(epoch, logs, lr):
            trainee.stop_training = True

    # Our dataset is shuffled by the sampler; Keras warns about its own shuffle flag.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    fit_verbose = 0 if not verbose else (1 if sys.stdout.isatty() else 0)
    # --budget-min counts the fitting only, not the teacher targets or room renderings
    # above (built once and cached: the first run of a comparison must not lose its budget
    # to them)
    t_fit = time.time()
    trainee.fit(ds, epochs=cfg.epochs, steps_per_epoch=steps, verbose=fit_verbose,
                callbacks=[
                    # EMA weights in the model from the end of each epoch (validation and
                    # checkpoint) to the start of the next; must run before the checkpoint.
                    *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if cfg.ema > 0 else []),
                    *([time_budget(keras, 60.0 * cfg.budget_min, peak_lr, t_fit)]
                      if cfg.budget_min else []),
                    # the input pipeline's generator kernel resets glibc's mmap threshold
                    # (training.heap): set it again before each step
                    keras.callbacks.LambdaCallback(
                        on_train_batch_begin=lambda batch, logs: keep_steady_heap()),
                    keras.callbacks.LambdaCallback(on_epoch_end=end_of_epoch)])
    if mixed:
        keras.mixed_precision.set_global_policy("float32")

    calibration = refit = None
    if refit_source is not None:
        from .refit import refit_report, source_temperature

        temperature = source_temperature(refit_source) if cfg.calibrate else None
        if temperature is not None:
            saved = keras.models.load_model(model_path, compile=False)
            fold_temperature(saved, temperature)
            saved.save(model_path)
            calibration = {"temperature": temperature,
                           "fitted_on": f"the validation windows of {refit_source.folder} "
                                        "(the same recipe on the training tracks alone)"}
        refit = refit_report(refit_source, temperature)
        if verbose:
            print(f"refit of {refit_source.folder}: last epoch kept, temperature "
                  f"{temperature if temperature is not None else 'none'}", flush=True)
    elif cfg.calibrate:
        calibration = calibrate_saved_model(model_path, [*val_tracks, *val_room], wf, hop_frames)
        if verbose:
            print(f"calibration: temperature {calibration['temperature']:.3f}, validation window "
                  f"ECE {calibration['val_ece_before']:.3f} -> {calibration['val_ece_after']:.3f}",
                  flush=True)
    best = selector.best_row
    run = {
        "labels": list(labels),
        "frontend": frontend.to_dict(),
        "arch": cfg.arch,
        "seed": cfg.seed,
        "inference_hop_s": cfg.inference_hop_s,
        "dataset": spec.to_dict(),
        "cache_dir": str(cache_dir),
        "splits_file": "splits.json",
        "tracks": {part: len(v) for part, v in splits.items()},
        "train": cfg.to_dict(),
        "parameters": n_params,
        "best_epoch": selector.best_epoch,
        "epochs_run": len(selector.history),
        "val": {k: best[k] for k in ("val_window_accuracy", "val_track_accuracy",
                                     "val_track_accuracy_majority", "val_loss",
                                     "val_room_window_accuracy", "val_room_track_accuracy",
                                     "val_room_loss") if k in best},
        "calibration": calibration,
        **({"refit": refit} if refit is not None else {}),
        "teacher": teacher_report,
        "band_mean_db": mean.tolist(),
        "band_std_db": std.tolist(),
        "train_time_s": round(time.time() - t_start, 1),
        "metrics": {},
    }
    write_run_splits(out, splits)
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


def prepare_teacher(cfg: TrainConfig, splits: dict[str, list[Track]], n_labels: int,
                    frontend: FrontendParams, verbose: int = 1) -> None:
    """Compute and cache the teacher's embeddings of every split with every core (``genre-edge
    train --prepare-only``; nothing without ``cfg.teacher``): runs of one core each then read
    them from the cache instead of each computing them on its one core."""
    if cfg.teacher:
        configure_tensorflow(0)
        _teacher_targets(cfg, splits, n_labels, frontend, verbose)


def _teacher_targets(cfg: TrainConfig, splits: dict[str, list[Track]], n_labels: int,
                     frontend: FrontendParams, verbose: int) -> tuple[Any, Any, float, Any]:
    """The teacher's soft targets (``--teacher``) and embeddings to hint (``--hint``):
    ``(soft, report, teacher hop in student frames, hints)``, all None without a teacher."""
    if cfg.hint > 0 and (not cfg.teacher or cfg.augment.mixup_p > 0):
        raise GenreEdgeError("--hint needs --teacher and no mixup: add --teacher "
                             "musicnn-msd, or drop --hint")
    if not cfg.teacher:
        return None, None, 100.0, None
    from .teacher import soft_targets, teacher_hop_s

    raw: list[np.ndarray] = []
    soft, report = soft_targets(
        splits, n_labels, cfg.teacher, seed=cfg.seed, l2=cfg.teacher_l2,
        temperature=cfg.distill_temperature, progress=bool(verbose),
        embeddings_out=raw if cfg.hint > 0 else None)
    hints = None
    if cfg.hint > 0:
        stacked = np.concatenate(raw)
        mu, sd = stacked.mean(0), np.maximum(stacked.std(0), 1e-3)
        hints = [((e - mu) / sd).astype(np.float32) for e in raw]
    if verbose:
        print("teacher " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in report.items()), flush=True)
    return soft, report, teacher_hop_s() / frontend.frame_hop_s, hints


def _room_renderings(cfg: TrainConfig, frontend: FrontendParams, cache_dir: Path,
                     train_tracks: list[Track], val_tracks: list[Track]) -> tuple[Any, list[Any]]:
    """``--rooms``: per training track its renderings' features, and the validation tracks
    rendered in the validation rooms (``(None, [])`` without rooms)."""
    if cfg.rooms <= 0:
        return None, []
    from .room_features import training_renderings

    _, rendered, val_room = training_renderings(
        train_tracks, val_tracks, frontend.sample_rate, cache_dir, rooms=cfg.rooms,
        val_rooms=cfg.val_rooms, rir_dir=cfg.rir_dir, noise_dir=cfg.noise_dir)
    variants = [[r.features() for r in rendered[i * cfg.rooms : (i + 1) * cfg.rooms]]
                for i in range(len(train_tracks))]
    return variants, val_room


def _input_pipeline(tf: Any, sampler: WindowSampler, cfg: TrainConfig, frontend: FrontendParams,
                    n_labels: int, hints: Any, strategy: Any) -> tuple[Any, int, int]:
    """The sampler as a ``tf.data`` pipeline: ``(dataset, steps per epoch, global batch)``."""
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    sig = (
        tf.TensorSpec((cfg.batch_size, frontend.window_frames, frontend.n_mels, 1), tf.float32),
        tf.TensorSpec((cfg.batch_size, n_labels), tf.float32),
        tf.TensorSpec((cfg.batch_size,), tf.float32),
    )
    if hints is not None:
        hint_dim = int(hints[0].shape[1])
        sig = (sig[0], (sig[1], tf.TensorSpec((cfg.batch_size, hint_dim), tf.float32)),
               (sig[2], sig[2]))
    ds = tf.data.Dataset.from_generator(lambda: iter(sampler), output_signature=sig)
    if strategy.num_replicas_in_sync > 1:
        ds = ds.unbatch().batch(global_batch, drop_remainder=True)
    steps = sampler.steps_per_epoch if strategy.num_replicas_in_sync == 1 else max(
        1, sampler.per_epoch // global_batch)
    return ds.prefetch(4), steps, global_batch


def _compiled_model(keras: Any, cfg: TrainConfig, frontend: FrontendParams, n_labels: int,
                    mean: np.ndarray, std: np.ndarray, steps: int, peak_lr: float,
                    hints: Any) -> tuple[Any, Any]:
    """``(model, trainee)``: the preset with the training set's band statistics, and what
    is fitted (the model itself, or with ``--hint`` the model plus a hint head that is
    left behind when the model is exported), compiled with the schedule."""
    from .models import PRESETS, band_norm_layer, build_model

    model = build_model(cfg.arch, frontend.window_frames, frontend.n_mels, n_labels)
    band_norm_layer(model).set_stats(mean, std)
    total_steps = steps * cfg.epochs
    warmup = int(min(total_steps // 2, steps * cfg.warmup_epochs))
    if cfg.budget_min:
        schedule = peak_lr  # a variable that TimeBudget moves along the wall clock
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            peak_lr * 0.05 if warmup else peak_lr, max(1, total_steps - warmup), alpha=0.01,
            warmup_target=peak_lr if warmup else None, warmup_steps=warmup)
    cce = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    if hints is None:
        trainee = model
        losses, loss_weights, metrics = cce, None, [keras.metrics.CategoricalAccuracy(name="acc")]
    else:
        # The hint head reads the pooled features the classifier reads.
        pooled = model.get_layer("logits").input
        hint_out = keras.layers.Dense(int(hints[0].shape[1]), name="hint", dtype="float32")(pooled)
        trainee = keras.Model(model.input, [model.output, hint_out], name="with_hint")
        losses, loss_weights = [cce, keras.losses.MeanSquaredError()], [1.0, cfg.hint]
        metrics = [[keras.metrics.CategoricalAccuracy(name="acc")], []]
    trainee.compile(
        optimizer=make_optimizer(keras, PRESETS[cfg.arch].optimizer, schedule, cfg.weight_decay,
                                 cfg.ema),
        loss=losses, loss_weights=loss_weights, metrics=metrics,
    )
    return model, trainee
