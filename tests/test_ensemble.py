"""Ensembles of training runs (training/ensemble.py): one graph whose logits are the mean of
its members' logits, calibrated, evaluated and converted like any run.

Two real runs are trained on the synthetic data (seeds 0 and 1, the same split, two training
rooms per track); nothing is mocked.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from firmware_py.errors import GenreEdgeError
from training.dataset import eval_windows, load_run_splits


def _train(data: Path, out: Path, cache: Path, seed: int, *extra: str) -> Path:
    from firmware_py.cli import main

    code = main(["train", "--data", str(data), "--out", str(out), "--cache", str(cache),
                 "--epochs", "6", "--crops-per-track", "16", "--batch-size", "32",
                 "--seed", str(seed), "--workers", "2", "--no-evaluate", "-q",
                 "--rooms", "2", *extra])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic recipe with two training rooms per track, seed 0 (random split)."""
    from training.synthetic import make_dataset

    root = tmp_path_factory.mktemp("ensemble-runs")
    data = make_dataset(root / "data", clips_per_genre=8, duration_s=6.0, seed=0)
    return _train(data, root / "run0", root / "cache", 0)


@pytest.fixture(scope="module")
def second_run(first_run: Path) -> Path:
    """The same recipe with seed 1 on exactly the tracks of ``first_run`` (a manifest written
    from its splits.json: a random split would follow the seed)."""
    root = first_run.parent
    data = root / "data"
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "genre", "split"])
        for part, rows in json.loads((first_run / "splits.json").read_text()).items():
            for _track, path, genre in rows:
                w.writerow([Path(path).relative_to(data).as_posix(), genre, part])
    return _train(data, root / "run1", root / "cache", 1, "--manifest", str(manifest))


def _logits(model, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.Model(model.inputs, model.get_layer("logits").output)(x))


def test_an_ensemble_is_the_mean_of_its_members_logits(first_run: Path, second_run: Path,
                                                       tmp_path: Path) -> None:
    import keras

    import training.models  # noqa: F401
    from training.ensemble import ensemble_runs

    out = tmp_path / "ens"
    run = ensemble_runs([first_run, second_run], out, verbose=0)
    assert run["arch"] == "2 x edge" and [m["seed"] for m in run["ensemble"]["members"]] == [0, 1]
    assert {p: [t.track_id for t in v] for p, v in load_run_splits(out).items()} == \
        {p: [t.track_id for t in v] for p, v in load_run_splits(first_run).items()}
    members = [keras.models.load_model(r / "model.keras", compile=False)
               for r in (first_run, second_run)]
    ens = keras.models.load_model(out / "model.keras", compile=False)
    # the members' weights, with one shared bias for their side-by-side classifiers
    assert ens.count_params() == run["parameters"] == sum(m.count_params() for m in members) - 4
    t = load_run_splits(first_run)["test"][0]
    x = eval_windows(t, 300, 100)[..., None]
    # mean of the members' calibrated logits, divided by the ensemble's own temperature
    temperature = run["calibration"]["temperature"]
    expected = np.mean([_logits(m, x) for m in members], axis=0) / temperature
    np.testing.assert_allclose(_logits(ens, x), expected, rtol=1e-4, atol=1e-4)
    p = np.asarray(ens(x))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # the two seeds do disagree somewhere: the mean is not a copy of either member
    assert not np.allclose(_logits(members[0], x), _logits(members[1], x), atol=1e-2)
    # the calibration was fitted on validation like a training run's, and did not hurt it
    cal = run["calibration"]
    assert cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9
    assert "val_room_track_accuracy" in run["val"]


def test_an_ensemble_evaluates_and_converts_like_a_run(first_run: Path, second_run: Path,
                                                       tmp_path: Path) -> None:
    from converter.convert import convert_run
    from firmware_py.bundle import load_bundle
    from training.ensemble import ensemble_runs
    from training.evaluate import evaluate_run

    out = tmp_path / "ens"
    ensemble_runs([first_run, second_run], out, verbose=0)
    report = evaluate_run(out, "test", verbose=0)
    assert report["tracks"] == 8 and report["in_room"]["tracks"] == 24
    assert report["track_accuracy_mean_vote"] >= 0.75, report  # chance is 0.25
    bundle = tmp_path / "bundle"
    convert_run(out, bundle, representative=200, rooms=False)
    manifest = json.loads((bundle / "manifest.json").read_text())
    # every op of both members and the concatenation maps to the Edge TPU
    tpu = manifest["metrics"]["edgetpu"]
    assert tpu["all_mappable"] and tpu["ops_total"] >= 2 * 10, tpu
    # the embedding is both members' pooled features side by side
    emb = manifest["metrics"]["embedding"]
    assert emb["layer"] == "gap" and emb["float_vs_int8"]["dim"] == 2 * 5 * 40
    loaded = load_bundle(bundle)
    assert loaded.labels == ["ambient", "bossa", "rockish", "techno"]
    ver = manifest["metrics"]["verification"]
    assert ver["top1_agreement"] >= 0.9 and abs(ver["track_drop_points"]) <= 12.5, ver
    # the model card names the members, their seeds, epochs and validation figures
    from converter.model_card import render

    card = render(out, bundle, "make default-model")
    run = json.loads((out / "run.json").read_text())
    assert "An ensemble of 2 training runs of one recipe (seeds 0, 1)" in card
    epochs = [m["best_epoch"] for m in run["ensemble"]["members"]]
    assert f"best epochs {epochs[0]}, {epochs[1]}" in card and "seed 1: " in card


def test_members_of_different_splits_or_labels_are_refused(first_run: Path,
                                                           second_run: Path,
                                                           tmp_path: Path) -> None:
    from training.ensemble import ensemble_runs

    with pytest.raises(GenreEdgeError, match="at least two"):
        ensemble_runs([first_run], tmp_path / "one", verbose=0)
    # a member whose splits.json lists another validation set
    other = tmp_path / "other"
    shutil.copytree(second_run, other)
    splits = json.loads((other / "splits.json").read_text())
    splits["val"], splits["train"] = splits["val"][1:], splits["train"] + splits["val"][:1]
    (other / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(GenreEdgeError, match="other train tracks|other val tracks") as err:
        ensemble_runs([first_run, other], tmp_path / "bad", verbose=0)
    assert "\n" not in str(err.value)
    # a member of other genres
    relabelled = tmp_path / "relabelled"
    shutil.copytree(second_run, relabelled)
    run = json.loads((relabelled / "run.json").read_text())
    run["labels"] = list(reversed(run["labels"]))
    (relabelled / "run.json").write_text(json.dumps(run))
    with pytest.raises(GenreEdgeError, match="labels"):
        ensemble_runs([first_run, relabelled], tmp_path / "bad2", verbose=0)
    # --out must not replace a member, and an existing --out needs --overwrite
    with pytest.raises(GenreEdgeError, match="one of the members"):
        ensemble_runs([first_run, second_run], second_run, overwrite=True, verbose=0)
    with pytest.raises(GenreEdgeError, match="--overwrite"):
        ensemble_runs([first_run, second_run], second_run, verbose=0)
    assert (second_run / "model.keras").is_file()
