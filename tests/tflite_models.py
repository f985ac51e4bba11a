"""Tiny real TFLite models for tests that need an interpreter but not a trained network."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


def _tiny_keras(frames: int, mels: int, n_out: int):
    """Conv -> GAP -> Dense -> Softmax with the given shapes, seeded."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((frames, mels, 1), batch_size=1)
    x = tf.keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(n_out, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs)


@functools.cache
def tiny_float_model(frames: int, mels: int, n_out: int) -> bytes:
    """The float32 twin of :func:`tiny_int8_model` (no quantisation)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(_tiny_keras(frames, mels, n_out)).convert()


@functools.cache
def tiny_int8_model(frames: int, mels: int, n_out: int) -> bytes:
    """A full-integer int8 Conv -> GAP -> Dense -> Softmax model with the given shapes."""
    import tensorflow as tf

    model = _tiny_keras(frames, mels, n_out)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.uniform(-100, 20, (1, frames, mels, 1)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def write_tiny_model(path: Path, frames: int, mels: int, n_out: int) -> Path:
    path.write_bytes(tiny_int8_model(frames, mels, n_out))
    return path
