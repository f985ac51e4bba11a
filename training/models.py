"""Architectures: the ``edge`` model (our default) and presets of published designs.

Every model takes RAW front-end windows ``(window_frames, n_mels, 1)`` float32 dB and
normalises them itself with :class:`BandAffine` (a fixed per-mel-band ``x * scale +
offset`` from training-set statistics). That layer lowers to one MUL and one ADD with
constant tensors, which quantise to int8 and map to the Edge TPU, unlike
``keras.layers.Normalization`` (SQRT, DIV). Outputs are softmax probabilities.

Importing this module registers the custom layer, so ``keras.models.load_model`` works
after ``import training.models``.

Presets (sources and deviations; details are also in ``training/README.md``):

``edge``
    Ours. A strided 3x3 convolution downsamples time and frequency by 2 at once, then
    max-pooling and four depthwise-separable blocks (depthwise 3x3 + BN + ReLU,
    pointwise 1x1 + BN + ReLU), global average pooling and a dense softmax. Only
    Conv2D, DepthwiseConv2D, folded BatchNorm, ReLU, MaxPool, Mean, Dense and Softmax:
    all Edge TPU ops, static shapes, ~40k parameters (~70 KB int8), a few million MACs.
``dong2018``
    M. Dong, "Convolutional Neural Network Achieves Human-level Accuracy in Music Genre
    Classification", CCN 2018 (arXiv:1802.09697): a small CNN on 3 s mel-spectrogram
    segments, track label by voting. Reconstructed from the paper's description: two
    3x3 conv layers of 64 filters with max-pooling, a 32-unit dense layer, dropout,
    softmax. Deviations: 64 mel bands (our front-end), BN after each conv, Adam.
``hku``
    The 3-conv-layer network of the HKU student project (~2 s of context):
    3 x (3x3 conv + ReLU + 2x2 max-pool, 32/64/128 filters), dense 128, dropout 0.5.
    Deviations: 200-frame (2 s) windows of our 64-band front-end; BN after each conv.
``despois``
    J. Despois, "Finding the genre of a song with Deep Learning" (2016): 128x128
    spectrogram slices, 4 conv layers (2x2 kernels, 64/128/256/512 filters, ELU, 2x2
    max-pool), dense 1024, dropout 0.5, softmax. Deviations: 128 frames x 64 mel bands
    (1.28 s at our 10 ms hop instead of 128 x 128 at 20 ms), BN, Adam.
``pelchat2019``
    N. Pelchat and C. M. Gelowitz, "Neural Network Music Genre Classification",
    Canadian Journal of Electrical and Computer Engineering 43(3), 2020 (CCECE 2019):
    Despois-style slices of 2.56 s, 4 conv layers with 2x2 kernels, dense 1024,
    dropout 0.5, RMSProp. Deviations: 256 frames x 64 mel bands, BN, ReLU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from .presets import PRESETS  # noqa: E402  (re-exported: the presets build here)

#: Faster-moving BatchNorm statistics than Keras' 0.99: short CPU runs (a few hundred
#: steps) otherwise evaluate with statistics that still remember the initialisation.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="genre_edge")
class BandAffine(layers.Layer):
    """Fixed per-mel-band ``x * scale + offset`` on ``(batch, frames, n_mels, 1)`` input.

    ``scale = 1 / std`` and ``offset = -mean / std`` per mel band, from the training
    set; not trainable. Lowers to MUL + ADD with constants (int8 and Edge TPU friendly).
    """

    def __init__(self, n_mels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_mels = int(n_mels)

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(name="scale", shape=(1, self.n_mels, 1),
                                     initializer="ones", trainable=False)
        self.offset = self.add_weight(name="offset", shape=(1, self.n_mels, 1),
                                      initializer="zeros", trainable=False)

    def set_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Set from per-band ``mean`` and ``std`` (dB), shapes ``(n_mels,)``."""
        std = np.maximum(np.asarray(std, dtype=np.float32), 1e-3)
        mean = np.asarray(mean, dtype=np.float32)
        self.scale.assign((1.0 / std).reshape(1, -1, 1))
        self.offset.assign((-mean / std).reshape(1, -1, 1))

    def call(self, x: Any) -> Any:
        return x * keras.ops.cast(self.scale, x.dtype) + keras.ops.cast(self.offset, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_mels": self.n_mels}


def _input(window_frames: int, n_mels: int) -> tuple[Any, Any]:
    inputs = keras.Input((window_frames, n_mels, 1), name="logmel")
    return inputs, BandAffine(n_mels, name="band_norm")(inputs)


def _head(x: Any, n_labels: int) -> Any:
    # float32 softmax even under mixed precision (numerically safe probabilities).
    x = layers.Dense(n_labels, name="logits", dtype="float32")(x)
    return layers.Activation("softmax", name="probs", dtype="float32")(x)


def _conv_bn(x: Any, filters: int, kernel: int | tuple[int, int], *, strides: int = 1,
             activation: str = "relu", name: str) -> Any:
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def build_edge(window_frames: int, n_mels: int, n_labels: int, *, width: int = 40,
               dropout: float = 0.3) -> keras.Model:
    """Our Edge TPU / int8 model (see the module docstring)."""
    inputs, x = _input(window_frames, n_mels)
    x = _conv_bn(x, width, 3, strides=2, name="stem")             # T/2 x M/2
    x = layers.MaxPooling2D(2, name="stem_pool")(x)                # T/4 x M/4
    for i, (filters, pool) in enumerate(
        [(2 * width, 2), (3 * width, 2), (4 * width, 2), (5 * width, 0)], start=1
    ):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"b{i}_dw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"b{i}_dw_bn")(x)
        x = layers.ReLU(name=f"b{i}_dw_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"b{i}_pw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"b{i}_pw_bn")(x)
        x = layers.ReLU(name=f"b{i}_pw_relu")(x)
        if pool:
            x = layers.MaxPooling2D(pool, name=f"b{i}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, _head(x, n_labels), name="edge")


def build_dong2018(window_frames: int, n_mels: int, n_labels: int) -> keras.Model:
    """Dong 2018 (reconstructed; see the module docstring)."""
    inputs, x = _input(window_frames, n_mels)
    x = _conv_bn(x, 64, 3, name="c1")
    x = layers.MaxPooling2D((4, 2), name="p1")(x)
    x = _conv_bn(x, 64, 3, name="c2")
    x = layers.MaxPooling2D((4, 4), name="p2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, n_labels), name="dong2018")


def build_hku(window_frames: int, n_mels: int, n_labels: int) -> keras.Model:
    """HKU 3-conv-layer network (see the module docstring)."""
    inputs, x = _input(window_frames, n_mels)
    for i, filters in enumerate((32, 64, 128), start=1):
        x = _conv_bn(x, filters, 3, name=f"c{i}")
        x = layers.MaxPooling2D(2, name=f"p{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, n_labels), name="hku")


def _despois_like(window_frames: int, n_mels: int, n_labels: int, activation: str,
                  name: str) -> keras.Model:
    inputs, x = _input(window_frames, n_mels)
    for i, filters in enumerate((64, 128, 256, 512), start=1):
        x = _conv_bn(x, filters, 2, activation=activation, name=f"c{i}")
        x = layers.MaxPooling2D(2, name=f"p{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation=activation, name="fc")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, _head(x, n_labels), name=name)


def build_despois(window_frames: int, n_mels: int, n_labels: int) -> keras.Model:
    """Despois 2016 (see the module docstring)."""
    return _despois_like(window_frames, n_mels, n_labels, "elu", "despois")


def build_pelchat2019(window_frames: int, n_mels: int, n_labels: int) -> keras.Model:
    """Pelchat and Gelowitz 2019 (see the module docstring)."""
    return _despois_like(window_frames, n_mels, n_labels, "relu", "pelchat2019")


def build_model(arch: str, window_frames: int, n_mels: int, n_labels: int) -> keras.Model:
    """Build a preset by name (``edge``, ``dong2018``, ``hku``, ``despois``, ``pelchat2019``)."""
    from firmware_py.errors import GenreEdgeError

    if arch not in PRESETS:
        raise GenreEdgeError(f"unknown --arch '{arch}': use one of {', '.join(PRESETS)}")
    preset = PRESETS[arch]
    return globals()[preset.builder](window_frames, n_mels, n_labels, **preset.options)


def band_norm_layer(model: keras.Model) -> BandAffine:
    """The model's input normalisation layer."""
    for layer in model.layers:
        if isinstance(layer, BandAffine):
            return layer
    raise ValueError(f"model {model.name} has no BandAffine layer")
