"""The model bundle: a valid one loads and runs; every kind of damage is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_py.bundle import MANIFEST, load_bundle, write_bundle
from firmware_py.errors import BundleError, GenreEdgeError
from firmware_py.features import DEFAULT_PARAMS, FrontendParams
from tests.tflite_models import write_tiny_model

LABELS = ["classical", "electronic", "pop", "rock"]
P = DEFAULT_PARAMS


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    model = write_tiny_model(tmp_path / "m.tflite", P.window_frames, P.n_mels, len(LABELS))
    return write_bundle(
        tmp_path / "bundle", model=model, labels=LABELS, frontend=P, inference_hop_s=1.0,
        smoothing={"average_windows": 3}, provenance={"data": "test"}, metrics={"acc": 1.0},
        name="tiny",
    )


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def rewrite(bundle: Path, **changes) -> None:
    data = manifest(bundle)
    data.update(changes)
    (bundle / MANIFEST).write_text(json.dumps(data))


def expect_error(bundle: Path, pattern: str) -> str:
    with pytest.raises(BundleError, match=pattern) as exc:
        load_bundle(bundle)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_valid_bundle_loads_and_runs(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert b.labels == LABELS and b.frontend == P and b.inference_hop_s == 1.0 and b.inference_hop_frames == 100
    assert b.smoothing == {"average_windows": 3} and b.name == "tiny"
    model = b.open_model()
    assert model.quantized and model.input_dtype == np.int8 and model.output_dtype == np.int8
    probs = model.predict(np.full((P.window_frames, P.n_mels), -40, np.float32))
    assert probs.shape == (4,) and abs(probs.sum() - 1) < 0.05


def test_missing_bundle(tmp_path: Path) -> None:
    expect_error(tmp_path / "nowhere", "not found")


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST).unlink()
    expect_error(bundle_dir, "no manifest.json")


def test_bad_json(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST).write_text('{"schema_version": 1, "labels": [')
    expect_error(bundle_dir, r"not valid JSON \(line 1")


def test_newer_schema(bundle_dir: Path) -> None:
    rewrite(bundle_dir, schema_version=99)
    assert "upgrade genre-edge" in expect_error(bundle_dir, "schema 99")


def test_missing_schema(bundle_dir: Path) -> None:
    data = manifest(bundle_dir)
    del data["schema_version"]
    (bundle_dir / MANIFEST).write_text(json.dumps(data))
    expect_error(bundle_dir, "schema_version")


def test_hash_mismatch(bundle_dir: Path) -> None:
    model = bundle_dir / "model.tflite"
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    model.write_bytes(bytes(blob))
    expect_error(bundle_dir, "does not match its sha256")


def test_truncated_model(bundle_dir: Path) -> None:
    model = bundle_dir / "model.tflite"
    model.write_bytes(model.read_bytes()[:100])
    expect_error(bundle_dir, "sha256")


def test_missing_model_file(bundle_dir: Path) -> None:
    (bundle_dir / "model.tflite").unlink()
    expect_error(bundle_dir, "model.tflite is missing")


def test_frontend_shape_mismatch(bundle_dir: Path) -> None:
    rewrite(bundle_dir, frontend={**P.to_dict(), "n_mels": 40},
            inference={"window_frames": P.window_frames, "hop_s": 1.0})
    expect_error(bundle_dir, r"input shape \[1, 300, 64, 1\] does not match")


def test_label_count_mismatch(bundle_dir: Path) -> None:
    rewrite(bundle_dir, labels=LABELS + ["jazz"])
    expect_error(bundle_dir, "4 outputs but the manifest lists 5 labels")


def test_unknown_frontend_key(bundle_dir: Path) -> None:
    rewrite(bundle_dir, frontend={**P.to_dict(), "pcen": True})
    expect_error(bundle_dir, "unknown front-end parameter")


def test_inconsistent_window(bundle_dir: Path) -> None:
    rewrite(bundle_dir, inference={"window_frames": 200, "hop_s": 1.0})
    expect_error(bundle_dir, "window_frames")


def test_bad_labels_and_hop(bundle_dir: Path) -> None:
    rewrite(bundle_dir, labels=["rock", "rock", "pop", "jazz"])
    expect_error(bundle_dir, "labels repeat")
    rewrite(bundle_dir, labels=LABELS, inference={"hop_s": -1})
    expect_error(bundle_dir, "hop_s")


def test_path_escape_rejected(bundle_dir: Path) -> None:
    data = manifest(bundle_dir)
    data["files"]["model"]["path"] = "../m.tflite"
    (bundle_dir / MANIFEST).write_text(json.dumps(data))
    expect_error(bundle_dir, "plain file name")


def test_not_a_model(bundle_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 1000)
    out = write_bundle(tmp_path / "junk_bundle", model=junk, labels=LABELS, frontend=P, inference_hop_s=1.0)
    with pytest.raises(GenreEdgeError, match="not a valid TFLite model"):
        load_bundle(out)


def test_other_frontend_roundtrip(tmp_path: Path) -> None:
    p = FrontendParams(n_mels=40, window_frames=200)
    model = write_tiny_model(tmp_path / "m.tflite", 200, 40, 3)
    out = write_bundle(tmp_path / "b", model=model, labels=["a", "b", "c"], frontend=p, inference_hop_s=0.5)
    b = load_bundle(out)
    assert b.frontend == p and b.inference_hop_frames == 50


@pytest.mark.parametrize(("inference", "pattern"), [
    ({"window_frames": 300, "hop_s": float("inf")}, "hop_s must be a number of seconds"),
    ({"window_frames": 300, "hop_s": 1e300}, r"hop_s must be a number of seconds in \(0, 60\]"),
    ({"window_frames": 300, "hop_s": True}, "hop_s must be a number"),
])
def test_hand_edited_hop_is_one_line(bundle_dir: Path, inference: dict, pattern: str) -> None:
    rewrite(bundle_dir, inference=inference)  # json writes inf as Infinity, which it reads back
    expect_error(bundle_dir, pattern)


@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("window", "hanning2", "unknown window 'hanning2'"),
    ("window", "kaiser", "unknown window 'kaiser'"),  # needs a parameter: not usable by name
    ("window", None, "window must be a window name"),
    ("n_fft", 512.0, r"n_fft=512\.0"),
    ("hop_length", "160", "hop_length='160'"),
    ("n_mels", True, "n_mels=True"),
    ("fmax", float("nan"), "fmax=nan"),
])
def test_hand_edited_frontend_is_one_line(bundle_dir: Path, key: str, value, pattern: str) -> None:
    rewrite(bundle_dir, frontend={**P.to_dict(), key: value})
    expect_error(bundle_dir, pattern)


def test_missing_edge_tpu_is_one_line_without_a_stray_traceback(bundle_dir: Path) -> None:
    """No Coral here: one DeviceError line; the half-built delegate's __del__ prints nothing."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from firmware_py.bundle import load_bundle\n"
        "from firmware_py.errors import DeviceError\n"
        f"b = load_bundle({str(bundle_dir)!r})\n"
        "try:\n"
        "    b.open_model(edgetpu='usb')\n"
        "except DeviceError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no Coral Edge TPU found on usb") and out.stdout.count("\n") == 1
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr, out.stderr
