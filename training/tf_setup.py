"""TensorFlow and Keras set-up for training: threads, distribution strategy, mixed
precision, optimisers, the wall-clock schedule, and the float32 export the converter loads.
TensorFlow is imported only inside these functions; :mod:`training.fit` re-exports them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import GenreEdgeError

log = logging.getLogger("training.fit")


def configure_tensorflow(threads: int) -> Any:
    """Import TensorFlow with quiet logs and the given thread count; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    n = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        # Two inter-op threads: the input pipeline and the model overlap, more only thrash 2 cores.
        tf.config.threading.set_inter_op_parallelism_threads(min(2, n))
    except RuntimeError:  # already initialised in this process (tests); keep its settings
        pass
    return tf


def distribution_strategy(tf: Any, distribute: str) -> Any:
    """The ``--distribute`` strategy: ``none`` or ``mirrored`` (several GPUs)."""
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) < 2:
            log.warning("--distribute mirrored with %d GPU(s): it still works, but does not help",
                        len(gpus))
        return tf.distribute.MirroredStrategy()
    raise GenreEdgeError(f"unknown --distribute '{distribute}': use none or mirrored")


def use_mixed_precision(tf: Any, mode: str) -> bool:
    """Whether ``--mixed-precision`` (auto, on, off) turns mixed precision on here."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if mode != "auto":
        raise GenreEdgeError(f"unknown --mixed-precision '{mode}': use auto, on or off")
    return bool(tf.config.list_physical_devices("GPU"))


def make_optimizer(keras: Any, name: str, schedule: Any, weight_decay: float, ema: float = 0.0) -> Any:
    """The Keras optimiser ``name`` (adamw, adam, rmsprop), with weight EMA when ``ema`` > 0."""
    kw: dict[str, Any] = {"use_ema": True, "ema_momentum": ema} if ema > 0 else {}
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay, **kw)
    if name == "adam":
        return keras.optimizers.Adam(schedule, **kw)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(schedule, **kw)
    raise ValueError(f"unknown optimizer {name}")


def export_float32(model: Any, arch: str, window_frames: int, n_mels: int, n_labels: int,
                   path: Path) -> None:
    """Save ``model``'s weights in a float32, strategy-free copy (what the converter loads)."""
    import keras

    from .models import build_model

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clean = build_model(arch, window_frames, n_mels, n_labels)
        clean.set_weights([np.asarray(w) for w in model.get_weights()])
        clean.save(path)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def time_budget(keras: Any, budget_s: float, peak_lr: float, t_start: float) -> Any:
    """A callback that runs the learning-rate schedule on the wall clock: linear warm-up over
    the first 5 % of ``budget_s``, cosine decay to 1 % of ``peak_lr`` at the end, then stops
    (the epoch in progress ends there and is validated). For comparing architectures on the
    same training time when none of them can be trained to convergence on this CPU."""

    class TimeBudget(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            progress = min(1.0, (time.time() - t_start) / budget_s)
            if progress < 0.05:
                lr = peak_lr * (0.05 + 0.95 * progress / 0.05)
            else:
                q = (progress - 0.05) / 0.95
                lr = peak_lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * q)))
            self.model.optimizer.learning_rate.assign(lr)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if time.time() - t_start >= budget_s:
                self.model.stop_training = True

    return TimeBudget()
