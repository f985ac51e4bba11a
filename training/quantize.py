"""Keras -> TFLite: full-integer int8 post-training quantisation (and float32 for comparison).

Shared by the converter (bundles) and ``training.compare`` (size and latency of runs):
it lives in training, because the converter may import training but never the reverse.

The converted graph has batch 1 and static shapes everywhere (the Edge TPU needs
both), int8 weights (per channel for convolutions) and activations, and int8 input and
output tensors, calibrated on real feature windows.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger(__name__)


def _quiet_convert(converter) -> bytes:
    """Run the TFLite converter; its export chatter goes to the debug log, not stdout."""
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):
        blob = converter.convert()
    log.debug("converter output: %s", chatter.getvalue())
    return blob


def _static_batch_one(model: Any) -> Any:
    """Wrap ``model`` so its input has batch size 1: static shapes end to end."""
    import keras

    shape = tuple(model.inputs[0].shape[1:])
    inputs = keras.Input(shape, batch_size=1, name="logmel")
    return keras.Model(inputs, model(inputs, training=False), name=f"{model.name}_b1")


def to_int8(model: Any, representative: Iterable[np.ndarray]) -> bytes:
    """Full-integer int8 TFLite from a Keras model and ``(frames, mels[, 1])`` windows."""
    import tensorflow as tf

    windows = [np.asarray(w, dtype=np.float32) for w in representative]
    if not windows:
        raise ValueError("representative set is empty")
    shape = (1, *model.inputs[0].shape[1:])

    def dataset():
        for w in windows:
            yield [w.reshape(shape)]

    converter = tf.lite.TFLiteConverter.from_keras_model(_static_batch_one(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return _quiet_convert(converter)


def to_float(model: Any) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(_static_batch_one(model))
    return _quiet_convert(converter)
