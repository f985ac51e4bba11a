"""The Edge TPU compatibility check: passes a clean int8 graph, names the first bad op."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.edgetpu import check_model
from tests.paths import REPO
from tests.tflite_models import write_tiny_model

tf = pytest.importorskip("tensorflow")


def _convert(model, int8: bool = True, batch_one: bool = True) -> bytes:
    if batch_one:
        inputs = tf.keras.Input(model.inputs[0].shape[1:], batch_size=1)
        model = tf.keras.Model(inputs, model(inputs))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        shape = (1, *model.inputs[0].shape[1:])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.uniform(-100, 20, shape).astype(np.float32)] for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _cnn(activation) -> tf.keras.Model:
    inputs = tf.keras.Input((100, 32, 1))
    x = tf.keras.layers.Conv2D(8, 3, strides=2)(inputs)
    x = activation(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(4, activation="softmax")(x))


def test_clean_int8_cnn_is_fully_mappable(tmp_path: Path) -> None:
    report = check_model(write_tiny_model(tmp_path / "ok.tflite", 300, 64, 4))
    assert report.all_mappable
    assert report.summary() == "4 of 4 ops mappable to the Edge TPU"
    assert [op.op for op in report.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    path = tmp_path / "leaky.tflite"
    path.write_bytes(_convert(_cnn(tf.keras.layers.LeakyReLU())))
    report = check_model(path)
    first = report.first_unmappable
    assert first is not None and first.op == "LEAKY_RELU" and first.index == 1
    assert "not in the Edge TPU's supported operations" in first.reason
    assert "first unmappable op #1 LEAKY_RELU" in report.summary()
    assert report.n_mappable == report.n_ops - 1


def test_lstm_float_graph_is_rejected(tmp_path: Path) -> None:
    inputs = tf.keras.Input((50, 16), batch_size=1)
    x = tf.keras.layers.LSTM(8)(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "lstm.tflite"
    path.write_bytes(_convert(model, int8=False, batch_one=False))
    report = check_model(path)
    assert not report.all_mappable
    assert "float32" in report.first_unmappable.reason or "not in" in report.first_unmappable.reason


def test_dynamic_batch_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.tflite"
    path.write_bytes(_convert(_cnn(tf.keras.layers.ReLU()), batch_one=False))
    report = check_model(path)
    assert not report.all_mappable
    assert "dynamic shape" in report.first_unmappable.reason


def test_cli_exit_codes(tmp_path: Path) -> None:
    ok = write_tiny_model(tmp_path / "ok.tflite", 300, 64, 4)
    bad = tmp_path / "leaky.tflite"
    bad.write_bytes(_convert(_cnn(tf.keras.layers.LeakyReLU())))
    run = [sys.executable, "-m", "firmware_py", "edgetpu-check"]
    res = subprocess.run([*run, str(ok)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and "4 of 4 ops mappable" in res.stdout
    res = subprocess.run([*run, str(bad)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1 and "LEAKY_RELU" in res.stdout
    res = subprocess.run([*run, str(tmp_path / "none.tflite")], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 2 and res.stderr.startswith("genre-edge: error: model not found")
