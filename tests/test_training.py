"""Training: track-level splits, feature cache, presets, int8 size and synthetic train -> evaluate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io.wavfile

from firmware_py.audio import load_audio
from firmware_py.errors import GenreEdgeError
from firmware_py.features import DEFAULT_PARAMS, logmel
from tests.paths import MUSIC, require_music
from training import commands, dataset
from training.augment import AugmentParams, augment_batch
from training.dataset import (
    SPLITS,
    Track,
    build_cache,
    check_disjoint,
    eval_windows,
    load_run_splits,
    prepare_dataset,
    to_tracks,
)
from training.synthetic import make_dataset


def run_command(cmd, *argv: str) -> int:
    """Run a training subcommand exactly as the CLI does (parse, then ``run``)."""
    parser = argparse.ArgumentParser(prog=f"genre-edge {cmd.name}")
    cmd.configure(parser)
    return cmd.run(parser.parse_args(list(argv)))


def write_tone(path: Path, freq_hz: float, seconds: float = 1.0, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    scipy.io.wavfile.write(path, rate, (0.3 * np.sin(2 * np.pi * freq_hz * t) * 32767).astype(np.int16))


def ids(parts) -> dict[str, set[str]]:
    return {k: {e.track_id for e in v} for k, v in parts.items()}


def assert_disjoint(parts) -> None:
    s = ids(parts)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not s[a] & s[b], f"{a} and {b} share {sorted(s[a] & s[b])[:3]}"
    check_disjoint(parts)


# -- splits -----------------------------------------------------------------------------
def test_random_split_is_by_track_stratified_and_seeded(tmp_path: Path) -> None:
    for g, f in (("a", 300), ("b", 600), ("c", 900)):
        for k in range(10 if g != "c" else 4):
            write_tone(tmp_path / g / f"{g}.{k:05d}.wav", f + k, 0.1)
    spec, parts = prepare_dataset(tmp_path, seed=1)
    assert spec.split == "random" and spec.genres == ("a", "b", "c")
    assert_disjoint(parts)
    assert sum(len(v) for v in parts.values()) == 24
    for part in SPLITS:  # stratified: every genre in every split
        assert {e.genre for e in parts[part]} == {"a", "b", "c"}
    assert [len([e for e in parts[p] if e.genre == "a"]) for p in SPLITS] == [7, 1, 2]
    assert ids(prepare_dataset(tmp_path, seed=1)[1]) == ids(parts)
    assert ids(prepare_dataset(tmp_path, seed=2)[1]) != ids(parts)
    # choosing genres leaves the other genres' split unchanged
    _, ab = prepare_dataset(tmp_path, seed=1, genres=["a", "b"])
    assert ids(ab)["test"] == {t for t in ids(parts)["test"] if not t.startswith("c/")}
    _, big = prepare_dataset(tmp_path, seed=1, min_clips=5)
    assert {e.genre for e in big["train"]} == {"a", "b"}


def test_gtzan_filtered_split_on_a_fake_gtzan_tree(tmp_path: Path) -> None:
    lists = {p: (Path(dataset.__file__).parent / "splits" / f"gtzan-filtered.{p}.txt").read_text().split()
             for p in SPLITS}
    assert [len(lists[p]) for p in SPLITS] == [443, 197, 290]
    root = tmp_path / "genres"
    wanted: dict[str, set[str]] = {p: set() for p in SPLITS}
    for part in SPLITS:
        for name in [*[n for n in lists[part] if n.startswith("blues/")][:2],
                     *[n for n in lists[part] if n.startswith("jazz/")][:2]]:
            write_tone(root / name, 440.0, 0.05)
            wanted[part].add(Path(name).with_suffix("").as_posix())
    listed = {n for v in lists.values() for n in v}
    faulty = next(f"jazz/jazz.{k:05d}.wav" for k in range(100) if f"jazz/jazz.{k:05d}.wav" not in listed)
    write_tone(root / faulty, 440.0, 0.05)  # a file the filtered split leaves out
    spec, parts = prepare_dataset(root, split="gtzan-filtered")
    assert spec.split == "gtzan-filtered"
    assert ids(parts) == wanted
    assert_disjoint(parts)
    assert "gtzan-filtered" in dataset.named_splits()
    with pytest.raises(GenreEdgeError, match="unknown split 'nope'"):
        prepare_dataset(root, split="nope")


GENRES11 = ["blues", "classical", "country", "disco", "electronic", "hiphop", "jazz", "metal",
            "pop", "reggae", "rock"]


def test_manifest_split_of_the_real_music() -> None:
    """The shared set's split as its README defines it, not pinned counts of one copy."""
    require_music()
    spec, parts = prepare_dataset(MUSIC)
    assert spec.split == "manifest" and spec.manifest == str((MUSIC / "manifest.csv").resolve())
    assert list(spec.genres) == GENRES11
    assert_disjoint(parts)
    for part in SPLITS:
        assert {e.genre for e in parts[part]} == set(GENRES11), part  # every genre everywhere
    n = {p: len(v) for p, v in parts.items()}
    assert sum(n.values()) >= 776 and n["test"] >= 0.15 * sum(n.values()) and n["val"] >= 50
    # GTZAN rows follow the artist-filtered lists: test there is test here, train is train,
    # valid is val or (where a genre would train on too few clips) train; so no GTZAN
    # artist is in two splits. An unlisted (faulty or repeated) clip is in train.
    filtered = MUSIC.parent / "gtzan-fault-filtered"
    lists = {part: {dataset._gtzan_key(line) for line in
                    (filtered / f"{name}_filtered.txt").read_text().split()}
             for part, name in (("train", "train"), ("val", "valid"), ("test", "test"))}
    allowed = {"train": {"train"}, "val": {"val", "train"}, "test": {"test"}}
    seen = 0
    for part, entries in parts.items():
        for e in entries:
            stem = Path(e.track_id).name
            if not stem.startswith("gtzan-"):
                continue
            key = stem[len("gtzan-"):]
            listed = [p for p, names in lists.items() if key in names]
            expected = allowed[listed[0]] if listed else {"train"}
            assert part in expected, (e.track_id, part, listed)
            seen += 1
    assert seen >= 450


def test_bad_input_gives_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GenreEdgeError, match="data folder not found"):
        prepare_dataset(tmp_path / "missing")
    (tmp_path / "empty" / "rock").mkdir(parents=True)
    with pytest.raises(GenreEdgeError, match="no audio files found"):
        prepare_dataset(tmp_path / "empty")
    for g, n in (("a", 5), ("b", 2)):
        for k in range(n):
            write_tone(tmp_path / "d" / g / f"{g}{k}.wav", 300, 0.05)
    with pytest.raises(GenreEdgeError, match="unknown genre.*jazz"):
        prepare_dataset(tmp_path / "d", genres=["a", "jazz"])
    with pytest.raises(GenreEdgeError, match="genre 'b' has 2 track.*too few"):
        prepare_dataset(tmp_path / "d")
    with pytest.raises(GenreEdgeError, match="need at least 2 genres"):
        prepare_dataset(tmp_path / "d", min_clips=5)
    for msg in (str(e) for e in [GenreEdgeError("x")]):
        assert "\n" not in msg


# -- cache --------------------------------------------------------------------------------
def test_feature_cache_decodes_once_and_notices_edits(tmp_path: Path) -> None:
    for k in range(3):
        write_tone(tmp_path / "data" / "g" / f"t{k}.wav", 200 + 100 * k, 1.0, rate=22050)
    cache = tmp_path / "cache"
    tracks = [Track(f"g/t{k}", 0, "g", tmp_path / "data" / "g" / f"t{k}.wav", DEFAULT_PARAMS, cache)
              for k in range(3)]
    first = build_cache(tracks, workers=2, progress=False)
    assert (first.decoded, first.cached, first.failed) == (3, 0, {})
    mtimes = {t.track_id: t.cache_path.stat().st_mtime_ns for t in tracks}
    assert all(t.cache_path.parent.name == DEFAULT_PARAMS.digest() for t in tracks)
    second = build_cache(tracks, progress=False)
    assert (second.decoded, second.cached) == (0, 3)
    assert {t.track_id: t.cache_path.stat().st_mtime_ns for t in tracks} == mtimes
    # the cached array is the device front-end's output (computed in a worker process: equal
    # to float32 rounding, not bit for bit, as BLAS may take other paths there)
    expected = logmel(load_audio(tracks[1].path, 16000))
    cached = np.asarray(tracks[1].features())
    assert cached.shape == expected.shape and np.abs(cached - expected).max() <= 1e-4
    # an edited file is decoded again; another front-end gets its own folder
    write_tone(tracks[0].path, 1000.0, 2.0)
    third = build_cache(tracks, progress=False)
    assert (third.decoded, third.cached) == (1, 2)
    other = dataclasses.replace(DEFAULT_PARAMS, n_mels=40)
    assert Track("x", 0, "g", tracks[0].path, other, cache).cache_path.parent != tracks[0].cache_path.parent
    # a fresh copy of the data elsewhere (new paths, new modification times) finds it all
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "data", copy)
    for t in tracks:
        os.utime(copy / "g" / t.path.name, ns=(1, 1))
    copied = [Track(t.track_id, 0, "g", copy / "g" / t.path.name, DEFAULT_PARAMS, cache)
              for t in tracks]
    assert [c.cache_path for c in copied] == [t.cache_path for t in tracks]
    assert (build_cache(copied, progress=False).decoded) == 0
    # the same size and modification time, other bytes: decoded again (keyed by content)
    st = copied[1].path.stat()
    write_tone(copied[1].path, 1234.0, 1.0, rate=22050)
    os.utime(copied[1].path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert copied[1].path.stat().st_size == st.st_size
    assert build_cache([Track("g/t1", 0, "g", copied[1].path, DEFAULT_PARAMS, cache)],
                       progress=False).decoded == 1
    # an unreadable file is reported, not fatal
    bad = tmp_path / "data" / "g" / "bad.wav"
    bad.write_bytes(b"not audio")
    stats = build_cache([Track("g/bad", 0, "g", bad, DEFAULT_PARAMS, cache)], progress=False)
    assert list(stats.failed) == [str(bad)]


def test_eval_windows_cover_short_tracks(tmp_path: Path) -> None:
    write_tone(tmp_path / "g" / "short.wav", 440.0, 0.5)
    t = Track("g/short", 0, "g", tmp_path / "g" / "short.wav", DEFAULT_PARAMS, tmp_path / "c")
    w = eval_windows(t, 300, 100)
    assert w.shape == (1, 300, 64) and w.dtype == np.float32


# -- augmentation -------------------------------------------------------------------------
def test_augmentation_keeps_shapes_and_mixes_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(-40, 15, (16, 300, 64)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 16)]
    w = np.ones(16, dtype=np.float32)
    p = dataclasses.replace(AugmentParams(), room_p=1.0, mixup_p=1.0)
    xa, ya, wa = augment_batch(x.copy(), y.copy(), w.copy(), rng, p)
    assert xa.shape == x.shape and xa.dtype == np.float32 and np.isfinite(xa).all()
    assert not np.allclose(xa, x)
    assert np.allclose(ya.sum(1), 1.0) and (ya.max(1) >= 0.5).all() and (ya.max(1) < 1).any()
    xn, yn, _ = augment_batch(x.copy(), y.copy(), w.copy(), rng, AugmentParams.none())
    assert np.array_equal(xn, x) and np.array_equal(yn, y)


# -- models -------------------------------------------------------------------------------
def test_every_preset_builds_with_its_input_shape() -> None:
    from training.models import PRESETS, BandAffine, build_model

    assert set(PRESETS) == set(commands.ARCHS)
    for name, preset in PRESETS.items():
        assert commands.ARCH_WINDOW_FRAMES[name] == preset.window_frames
        model = build_model(name, preset.window_frames, 64, 4)
        assert tuple(model.inputs[0].shape) == (None, preset.window_frames, 64, 1), name
        assert tuple(model.outputs[0].shape) == (None, 4), name
        assert isinstance(model.layers[1], BandAffine), name
        assert not any(type(layer).__name__ == "Normalization" for layer in model.layers)
    with pytest.raises(GenreEdgeError, match="unknown --arch"):
        build_model("resnet", 300, 64, 4)


def test_edge_model_is_small_int8_and_edge_tpu_mappable(tmp_path: Path) -> None:
    from converter.edgetpu import check_model
    from training.models import band_norm_layer, build_model
    from training.quantize import to_int8

    model = build_model("edge", 300, 64, 11)
    band_norm_layer(model).set_stats(np.linspace(-60, -20, 64), np.linspace(8, 15, 64))
    rng = np.random.default_rng(0)
    rep = [rng.normal(-40, 12, (300, 64, 1)).astype(np.float32) for _ in range(16)]
    blob = to_int8(model, rep)
    assert len(blob) <= 250_000, f"edge model is {len(blob)} bytes int8"
    path = tmp_path / "edge.tflite"
    path.write_bytes(blob)
    report = check_model(path)
    assert report.all_mappable, report.summary()


def test_predict_tracks_graph_matches_the_eager_model_and_sees_new_weights() -> None:
    """Validation runs the model as a traced graph; its probabilities are the eager call's
    (within 1e-5, the tolerance predict_tracks documents) for tracks of any length, and weights set after the first
    call (the moving average swapped in) are used."""
    from keras import ops

    from training.dataset import eval_windows
    from training.fit import predict_tracks
    from training.models import band_norm_layer, build_model

    class Item:
        def __init__(self, frames: int, seed: int) -> None:
            self.feats = np.random.default_rng(seed).normal(-40, 12, (frames, 64)).astype(np.float32)
            self.label = 0

        def features(self) -> np.ndarray:
            return self.feats

    model = build_model("edge", 300, 64, 4)
    band_norm_layer(model).set_stats(np.linspace(-60, -20, 64), np.linspace(8, 15, 64))
    head = [layer for layer in model.layers if type(layer).__name__ == "Dense"][-1]
    rng = np.random.default_rng(0)

    def new_head() -> None:  # a fresh model's head is near-uniform: give it weights that differ
        kernel, bias = head.get_weights()
        head.set_weights([rng.normal(0, 1, kernel.shape), rng.normal(0, 1, bias.shape)])

    new_head()
    items = [Item(300, 1), Item(1290, 2), Item(4100, 3)]  # 1, 24 and 89 windows: odd batches

    def eager() -> list[np.ndarray]:
        return [ops.convert_to_numpy(model(eval_windows(t, 300, 43)[..., None], training=False))
                for t in items]

    got = predict_tracks(model, items, 300, 43, batch_size=32)
    assert [len(p) for p in got] == [1, 24, 89]
    for g, e in zip(got, eager(), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)
    new_head()
    again = predict_tracks(model, items, 300, 43, batch_size=32)
    for g, e in zip(again, eager(), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)
    assert not np.allclose(again[1], got[1], atol=1e-3)


# -- end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    data = make_dataset(root / "data", clips_per_genre=8, duration_s=6.0, seed=0)
    out = root / "run"
    code = run_command(
        commands.train, "--data", str(data), "--out", str(out), "--cache", str(root / "cache"),
        "--epochs", "6", "--crops-per-track", "16", "--batch-size", "32", "--seed", "0",
        "--workers", "2", "--no-evaluate", "-q", "--rooms", "2", "--validate-from", "3",
    )
    assert code == 0
    return out


def test_synthetic_train_then_evaluate(synthetic_run: Path) -> None:
    run = json.loads((synthetic_run / "run.json").read_text())
    for key in ("labels", "frontend", "arch", "seed", "inference_hop_s", "dataset", "cache_dir", "metrics"):
        assert key in run
    assert run["labels"] == ["ambient", "bossa", "rockish", "techno"] and run["inference_hop_s"] == 1.0
    assert run["dataset"]["split"] == "random" and run["dataset"]["seed"] == 0
    assert (synthetic_run / "model.keras").is_file() and (synthetic_run / "history.json").is_file()

    assert run_command(commands.evaluate, str(synthetic_run), "--split", "test", "-q") == 0
    for name in ("report.json", "report.md", "confusion.png", "curves.png"):
        assert (synthetic_run / name).stat().st_size > 0, name
    report = json.loads((synthetic_run / "report.json").read_text())
    for key in ("window_accuracy", "track_accuracy_mean_vote", "track_accuracy_majority_vote",
                "macro_f1", "per_class", "confusion"):
        assert key in report
    assert report["tracks"] == 8 and set(report["per_class"]) == set(run["labels"])
    assert {"precision", "recall"} <= set(report["per_class"]["techno"])
    assert report["track_accuracy_mean_vote"] >= 0.75, report  # chance is 0.25
    assert report["window_accuracy"] >= 0.6, report
    run = json.loads((synthetic_run / "run.json").read_text())
    assert run["metrics"]["test"]["track_accuracy_mean_vote"] == report["track_accuracy_mean_vote"]
    assert "track accuracy, majority vote" in (synthetic_run / "report.md").read_text()
    # in-room figures beside the clean ones: every test track through 3 held-out rooms
    room = report["in_room"]
    assert room["tracks"] == 3 * report["tracks"] and room["per_track"] == 3
    assert room["conditions"]["level_dbfs"] == [-25.0, -25.0] and room["rooms"] == "simulated"
    assert 0.0 <= room["window_ece"] <= 1.0 and set(room["per_class"]) == set(run["labels"])
    assert run["metrics"]["test"]["in_room"]["track_accuracy_mean_vote"] == room["track_accuracy_mean_vote"]
    assert "| metric | clean | in-room |" in (synthetic_run / "report.md").read_text()
    # --validate-from 3: epochs 1-2 only trained (no val_* figures, never kept), 3-6 validated
    history = json.loads((synthetic_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6] and run["train"]["validate_from"] == 3
    assert [("val_track_accuracy" in h) for h in history] == [False, False, True, True, True, True]
    assert all(np.isfinite(h["loss"]) for h in history) and run["best_epoch"] >= 3
    # trained on rooms: validation in rooms chose the epoch, and a temperature was fitted
    best = history[run["best_epoch"] - 1]
    assert "val_room_track_accuracy" in best and "val_room_track_accuracy" in run["val"]
    cal = run["calibration"]
    assert 0.05 <= cal["temperature"] <= 20 and cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9


def test_run_contract_for_the_converter(synthetic_run: Path) -> None:
    import keras

    import training.models  # noqa: F401

    run = json.loads((synthetic_run / "run.json").read_text())
    splits = load_run_splits(synthetic_run)
    assert set(splits) == set(SPLITS)
    assert_disjoint(splits)
    assert [len(splits[p]) for p in SPLITS] == [20, 4, 8]
    t = splits["train"][0]
    feats = t.features()
    assert feats.dtype == np.float32 and feats.shape[1] == 64
    w = eval_windows(t, 300, 100)
    assert w.ndim == 3 and w.shape[1:] == (300, 64)
    # the same splits rebuilt from the dataset spec alone (no splits.json)
    spec = dataset.DatasetSpec.from_dict(run["dataset"])
    _, parts = prepare_dataset(spec.data_dir, genres=spec.genres, split=spec.split, seed=spec.seed)
    rebuilt = to_tracks(parts, run["labels"], DEFAULT_PARAMS, Path(run["cache_dir"]))
    assert {p: [x.track_id for x in v] for p, v in rebuilt.items()} == \
        {p: [x.track_id for x in v] for p, v in splits.items()}
    model = keras.models.load_model(synthetic_run / "model.keras", compile=False)
    assert tuple(model.inputs[0].shape)[1:] == (300, 64, 1)
    probs = np.asarray(model(w[..., None]))
    assert probs.shape == (len(w), 4) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    # the model normalises raw dB itself: scale and offset come from the training set
    scale, offset = model.get_layer("band_norm").get_weights()
    mean, std = np.asarray(run["band_mean_db"]), np.asarray(run["band_std_db"])
    assert np.allclose(scale.ravel(), 1 / std, rtol=1e-4)
    assert np.allclose(offset.ravel(), -mean / std, rtol=1e-4, atol=1e-4)


def test_train_refuses_bad_input(tmp_path: Path, synthetic_run: Path) -> None:
    with pytest.raises(GenreEdgeError, match="data folder not found"):
        run_command(commands.train, "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    with pytest.raises(GenreEdgeError, match="already holds a training run"):
        run_command(commands.train, "--data", str(tmp_path), "--out", str(synthetic_run))
    with pytest.raises(GenreEdgeError, match="not a finished training run"):
        run_command(commands.evaluate, str(tmp_path))
    with pytest.raises(GenreEdgeError, match="--distill only applies with a teacher: add --teacher"):
        run_command(commands.train, "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                    "--distill", "0.8")
    with pytest.raises(GenreEdgeError, match="--validate-from cannot be combined with --budget-min"):
        run_command(commands.train, "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                    "--budget-min", "5", "--validate-from", "3")
    assert os.path.isdir(synthetic_run)


def test_the_last_epoch_is_validated_whatever_validate_from_says(tmp_path: Path) -> None:
    """A --validate-from past --epochs still keeps a model: the last epoch is validated."""
    from training.selection import EpochSelector
    from training.train_config import TrainConfig

    tracks = [SimpleNamespace(label=i % 2) for i in range(4)]
    saved: list[int] = []
    epoch_now = [0]

    def predict(ts):  # right from epoch 2 on, wrong before: real summaries of real arrays
        right = epoch_now[0] >= 1
        return [np.eye(2, dtype=np.float32)[[t.label if right else 1 - t.label] * 3] for t in ts]

    sel = EpochSelector(predict=predict, save_best=lambda: saved.append(epoch_now[0] + 1),
                        val_tracks=tracks, val_room=[], labels=["a", "b"], out=tmp_path,
                        cfg=TrainConfig(epochs=3, validate_from=9), verbose=False, t_start=0.0)
    for e in range(3):
        epoch_now[0] = e
        assert sel.end_of_epoch(e, {"loss": 1.0, "acc": 0.5}, 1e-3) is False
    assert saved == [3] and sel.best_epoch == 3 and sel.best_row["val_track_accuracy"] == 1.0
    assert [("val_loss" in h) for h in json.loads((tmp_path / "history.json").read_text())] == \
        [False, False, True]


def test_validate_from_changes_which_epochs_are_kept_not_the_training(tmp_path: Path) -> None:
    """Validation reads the model and draws nothing: the same seed trains the same weights
    with or without the early validations (one thread, one process, one machine)."""
    data = make_dataset(tmp_path / "data", clips_per_genre=4, duration_s=4.0, seed=1)
    losses = []
    for v in ("1", "3"):
        assert run_command(
            commands.train, "--data", str(data), "--out", str(tmp_path / f"r{v}"), "--cache",
            str(tmp_path / "cache"), "--epochs", "3", "--crops-per-track", "8", "--batch-size",
            "16", "--threads", "1", "--no-evaluate", "-q", "--validate-from", v) == 0
        history = json.loads((tmp_path / f"r{v}" / "history.json").read_text())
        losses.append([h["loss"] for h in history])
        assert [("val_loss" in h) for h in history] == ([True] * 3 if v == "1" else [False, False, True])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_train_on_val_refits_on_train_and_val_with_the_source_temperature(
        tmp_path: Path, synthetic_run: Path) -> None:
    """--train-on-val RUN: the training and validation tracks in one list, no validation,
    the last epoch kept, RUN's temperature folded in; RUN's test split."""
    import keras

    import training.models  # noqa: F401
    from training.fit import fold_temperature

    source = json.loads((synthetic_run / "run.json").read_text())
    data, cache = source["dataset"]["data_dir"], source["cache_dir"]
    out = tmp_path / "refit"
    assert run_command(
        commands.train, "--data", data, "--out", str(out), "--cache", cache, "--epochs", "3",
        "--crops-per-track", "16", "--batch-size", "32", "--seed", "0", "--workers", "2",
        "--no-evaluate", "-q", "--rooms", "2", "--train-on-val", str(synthetic_run)) == 0
    run = json.loads((out / "run.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and run["best_epoch"] == 3
    assert not any(k.startswith("val_") for h in history for k in h) and run["val"] == {}
    assert run["calibration"]["temperature"] == source["calibration"]["temperature"]
    assert run["refit"]["of"] == str(synthetic_run) and run["train"]["refit_of"] == str(synthetic_run)
    assert run["refit"]["val_of_source"] == source["val"]
    theirs, ours = load_run_splits(synthetic_run), load_run_splits(out)
    merged = sorted(t.track_id for t in [*theirs["train"], *theirs["val"]])
    assert [t.track_id for t in ours["train"]] == merged and ours["val"] == []
    assert [t.track_id for t in ours["test"]] == [t.track_id for t in theirs["test"]]
    assert run["tracks"] == {"train": 24, "val": 0, "test": 8}
    assert "val_track_accuracy" not in (run["teacher"] or {})
    # the test report works; the folded temperature divides the last layer
    assert run_command(commands.evaluate, str(out), "--split", "test", "--no-rooms", "-q") == 0
    model = keras.models.load_model(out / "model.keras", compile=False)
    before = model.get_layer("logits").get_weights()
    fold_temperature(model, 2.0)
    after = model.get_layer("logits").get_weights()
    for a, b in zip(after, before, strict=True):
        np.testing.assert_allclose(a, b / 2.0, rtol=1e-6)
    # one-line errors: RUN as --out, a refit as RUN, other genres than RUN's
    with pytest.raises(GenreEdgeError, match="is the --out folder"):
        run_command(commands.train, "--data", data, "--out", str(synthetic_run), "--overwrite",
                    "--train-on-val", str(synthetic_run))
    with pytest.raises(GenreEdgeError, match="is itself a refit"):
        run_command(commands.train, "--data", data, "--out", str(tmp_path / "x"),
                    "--train-on-val", str(out))
    with pytest.raises(GenreEdgeError, match="--train-on-val cannot be combined with --budget-min"):
        run_command(commands.train, "--data", data, "--out", str(tmp_path / "x"),
                    "--train-on-val", str(synthetic_run), "--budget-min", "5")
    with pytest.raises(GenreEdgeError, match="has genres"):
        run_command(commands.train, "--data", data, "--out", str(tmp_path / "y"), "--cache", cache,
                    "--genres", "ambient,bossa,rockish", "--epochs", "1", "--no-evaluate", "-q",
                    "--train-on-val", str(synthetic_run))


# -- found by review: data and run-folder faults ---------------------------------------
def test_a_file_shorter_than_one_frame_is_skipped_not_fatal(tmp_path: Path) -> None:
    tiny = tmp_path / "g" / "tiny.wav"
    tiny.parent.mkdir(parents=True)
    scipy.io.wavfile.write(tiny, 16000, np.zeros(100, np.int16))  # < n_fft samples: 0 frames
    stats = build_cache([Track("g/tiny", 0, "g", tiny, DEFAULT_PARAMS, tmp_path / "c")],
                        progress=False)
    assert list(stats.failed) == [str(tiny)] and "shorter than one analysis frame" in stats.failed[str(tiny)]


def test_a_damaged_cache_entry_is_computed_again(tmp_path: Path, caplog) -> None:
    write_tone(tmp_path / "g" / "t.wav", 440.0, 2.0)
    t = Track("g/t", 0, "g", tmp_path / "g" / "t.wav", DEFAULT_PARAMS, tmp_path / "c")
    assert build_cache([t], progress=False).decoded == 1
    good = np.asarray(t.features()).copy()
    blob = t.cache_path.read_bytes()
    t.cache_path.write_bytes(blob[: len(blob) // 2])  # a full disk, a killed copy, ...
    with caplog.at_level("WARNING", logger="training.dataset"):
        again = build_cache([t], progress=False)
    assert (again.decoded, again.cached) == (1, 0) and "damaged" in caplog.text
    assert np.array_equal(np.asarray(t.features()), good)
    t.cache_path.write_bytes(b"\x93NUMPY garbage")
    assert np.array_equal(np.asarray(t.features()), good)  # also when read directly


def test_a_named_split_missing_a_genre_names_it(tmp_path: Path) -> None:
    lists = (Path(dataset.__file__).parent / "splits" / "gtzan-filtered.train.txt").read_text().split()
    for name in [n for n in lists if n.startswith("blues/")][:3]:
        write_tone(tmp_path / "genres" / name, 440.0, 0.05)
    for k in range(3):
        write_tone(tmp_path / "genres" / "electronic" / f"mine{k}.wav", 440.0, 0.05)
    with pytest.raises(GenreEdgeError, match="no training tracks of electronic.*--genres, or use --split random"):
        dataset.assign_splits(dataset.scan_tree(tmp_path / "genres"), "gtzan-filtered", seed=0)


def test_a_gtzan_copy_is_pointed_at_the_artist_filtered_split(tmp_path: Path, caplog) -> None:
    for genre in ("blues", "jazz"):
        for k in range(10):
            write_tone(tmp_path / "genres" / genre / f"{genre}.{k:05d}.wav", 440.0, 0.05)
    with caplog.at_level("WARNING", logger="training.dataset"):
        spec, _ = prepare_dataset(tmp_path / "genres")
    assert spec.split == "random" and "pass --split gtzan-filtered" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="training.dataset"):
        prepare_dataset(tmp_path / "genres", split="random")  # asked for: no nagging
    assert "gtzan-filtered" not in caplog.text


def test_overwrite_clears_the_old_run_and_bad_folders_fail_first(tmp_path: Path) -> None:
    old = tmp_path / "run"
    old.mkdir()
    mine = ("notes.txt", "report-meeting.md", "history.json")
    for name in mine:
        (old / name).write_text("mine")
    commands.clear_run_folder(old)  # no run.json: not a training run, nothing touched
    assert sorted(p.name for p in old.iterdir()) == sorted(mine)
    for name in ("run.json", "splits.json", "history.json", "model.keras", "report-val.json",
                 "report-val.md", "report.json", "report.md", "confusion.png",
                 "confusion-val.png", "curves.png"):
        (old / name).write_text("old")
    commands.clear_run_folder(old)
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "report-meeting.md"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    for flag, value in (("--out", afile), ("--cache", tmp_path / "afile" / "sub")):
        args = ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
        args = ([*args[:2], "--out", str(value)] if flag == "--out"
                else [*args, "--cache", str(value)])
        with pytest.raises(GenreEdgeError, match=f"cannot use {flag} .*choose a writable folder"):
            run_command(commands.train, *args)


def test_a_cache_read_error_is_not_taken_for_damage(tmp_path: Path, monkeypatch) -> None:
    """'Too many open files' while checking an entry must not delete a good one."""
    import errno

    write_tone(tmp_path / "g" / "t.wav", 440.0, 1.0)
    t = Track("g/t", 0, "g", tmp_path / "g" / "t.wav", DEFAULT_PARAMS, tmp_path / "c")
    build_cache([t], progress=False)

    def busy(*_args, **_kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(dataset.np, "load", busy)
    with pytest.raises(OSError, match="Too many open files"):
        dataset.cache_entry_ok(t.cache_path, DEFAULT_PARAMS)
    assert t.cache_path.is_file()


def test_eval_windows_do_not_hold_cache_files_open(tmp_path: Path) -> None:
    write_tone(tmp_path / "g" / "t.wav", 440.0, 5.0)
    t = Track("g/t", 0, "g", tmp_path / "g" / "t.wav", DEFAULT_PARAMS, tmp_path / "c")
    build_cache([t], progress=False)
    import gc

    kept = eval_windows(t, 300, 100)  # callers keep many tracks' windows at once
    gc.collect()
    maps = Path("/proc/self/maps").read_text()
    assert kept.shape[0] >= 1 and str(t.cache_path) not in maps  # no file kept mapped


def test_prepare_only_fills_the_caches_and_trains_nothing(tmp_path: Path, capsys) -> None:
    """``--prepare-only`` (make default-model, before its one-core runs side by side): the
    features and room renderings are cached, nothing is trained, and a second pass decodes
    and renders nothing."""
    data = make_dataset(tmp_path / "data", clips_per_genre=8, duration_s=4.0, seed=3)
    args = ("--data", str(data), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
            "--rooms", "1", "--val-rooms", "1", "--workers", "2", "--prepare-only")
    assert run_command(commands.train, *args) == 0
    first = capsys.readouterr().out
    assert "nothing trained" in first and "features: 32 decoded" in first
    assert not (tmp_path / "run" / "run.json").exists()
    assert not (tmp_path / "run" / "model.keras").exists()
    rendered = sorted(p for p in (tmp_path / "cache").rglob("*.npy") if "room" in str(p))
    assert rendered, "no room renderings were cached"
    # the val/test reports' held-out rooms too (3 per track), rendered before TensorFlow
    # loads: with --no-evaluate only the training's renderings are made
    n_eval = int(re.search(r"evaluation rooms: (\d+) renderings", first).group(1))
    assert n_eval > 0 and n_eval % 3 == 0
    bare = (*args[:5], str(tmp_path / "cache-bare"), *args[6:], "--no-evaluate")
    assert run_command(commands.train, *bare) == 0
    assert "evaluation rooms" not in capsys.readouterr().out
    training_only = [p for p in (tmp_path / "cache-bare").rglob("*.npy") if "room" in str(p)]
    # validation's training renderings (1 per track here) can be among its evaluation rooms
    assert len(rendered) - len(training_only) >= n_eval - n_eval // 3
    mtimes = [p.stat().st_mtime_ns for p in rendered]
    assert run_command(commands.train, *args) == 0
    second = capsys.readouterr().out
    assert "features: 0 decoded, 32 from cache" in second
    assert [p.stat().st_mtime_ns for p in rendered] == mtimes
    assert sorted(p for p in (tmp_path / "cache").rglob("*.npy") if "room" in str(p)) == rendered
