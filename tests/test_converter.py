"""Converter end to end: a trained run -> int8 bundle that validates, runs and matches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.convert import compare, convert_run, representative_windows
from firmware_py.bundle import load_bundle
from firmware_py.errors import GenreEdgeError
from tests.paths import REPO


def test_bundle_validates_and_is_full_int8(synthetic_bundle: Path) -> None:
    bundle = load_bundle(synthetic_bundle)
    model = bundle.open_model()
    assert model.input_dtype == np.int8 and model.output_dtype == np.int8
    assert model.input_shape == (1, 300, 64, 1)
    assert bundle.labels == ["ambient", "bossa", "rockish", "techno"]
    assert bundle.file("float_model") is not None
    float_model = bundle.open_model(which="float_model")
    assert float_model.input_dtype == np.float32

    m = bundle.metrics
    q, v, e = m["quantization"], m["verification"], m["edgetpu"]
    assert q["representative_windows"] >= 200
    assert q["model_bytes"] == (synthetic_bundle / "model.tflite").stat().st_size <= 250_000
    assert e["all_mappable"] and e["summary"].endswith("ops mappable to the Edge TPU")
    for key in ("float_window_accuracy", "int8_window_accuracy", "float_track_accuracy",
                "int8_track_accuracy", "top1_agreement", "max_prob_diff", "mean_prob_diff"):
        assert 0.0 <= v[key] <= 1.0, key
    assert v["int8_track_accuracy"] >= 0.75  # synthetic genres are easy; chance is 0.25
    assert abs(v["track_drop_points"]) <= 12.5  # at most one of 8 test tracks
    assert bundle.smoothing and "average_windows" in bundle.smoothing
    prov = bundle.provenance
    assert prov["arch"] == "edge" and prov["created"] and prov["dataset"]["genres"]


def test_runtime_output_equals_verification(synthetic_run: Path, synthetic_bundle: Path) -> None:
    """The int8 model in the device runtime gives the figures the converter reported."""
    import keras

    import training.models  # noqa: F401
    from training.dataset import load_run_splits

    bundle = load_bundle(synthetic_bundle)
    model = bundle.open_model()
    keras_model = keras.models.load_model(synthetic_run / "model.keras", compile=False)
    tracks = load_run_splits(synthetic_run)["test"]
    again = compare(keras_model, model, tracks, 300, bundle.inference_hop_frames, bundle.labels)
    reported = bundle.metrics["verification"]
    for key in ("int8_window_accuracy", "int8_track_accuracy", "top1_agreement"):
        assert again[key] == pytest.approx(reported[key]), key


def test_representative_set_is_stratified(synthetic_run: Path) -> None:
    from training.dataset import load_run_splits

    tracks = load_run_splits(synthetic_run)["train"]
    wins = representative_windows(tracks, 4, 300, 200, seed=0)
    assert wins.shape == (200, 300, 64)
    # Spread over tracks and offsets: (almost) no two windows identical. The synthetic
    # tracks are 6 s (~300 offsets each), so a few repeated crops are expected.
    flat = wins.reshape(len(wins), -1)
    assert len({w.tobytes() for w in flat}) >= 0.95 * len(flat)


def test_cli_convert_and_errors(synthetic_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = subprocess.run(
        [sys.executable, "-m", "firmware_py", "convert", str(synthetic_run), "--out", str(out),
         "--representative", "200", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ops mappable to the Edge TPU" in res.stdout and "track accuracy" in res.stdout
    assert "Saved artifact" not in res.stdout  # converter chatter stays out of the report
    assert json.loads((tmp_path / "r.json").read_text())["edgetpu"]["all_mappable"]
    load_bundle(out)
    with pytest.raises(GenreEdgeError, match="at least 200"):
        convert_run(synthetic_run, tmp_path / "x", representative=50)
    with pytest.raises(GenreEdgeError, match="training run not found"):
        convert_run(tmp_path / "nope", tmp_path / "x")
    with pytest.raises(GenreEdgeError, match="not a finished training run"):
        convert_run(tmp_path, tmp_path / "x")


def test_convert_refuses_bad_arguments_and_mixed_runs_before_converting(synthetic_run: Path,
                                                                        tmp_path: Path) -> None:
    import shutil

    for hop in (-0.5, 0.0, float("inf")):
        with pytest.raises(GenreEdgeError, match="is not a hop: give seconds in"):
            convert_run(synthetic_run, tmp_path / "x", inference_hop_s=hop)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(GenreEdgeError, match="is a file: give a folder"):
        convert_run(synthetic_run, afile)
    mixed = tmp_path / "mixed"  # what an interrupted --overwrite with other genres left
    shutil.copytree(synthetic_run, mixed)
    run = json.loads((mixed / "run.json").read_text())
    run["labels"] = [*run["labels"], "jazz"]
    (mixed / "run.json").write_text(json.dumps(run))
    with pytest.raises(GenreEdgeError, match=r"outputs but run.json lists \d+ labels"):
        convert_run(mixed, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing written
