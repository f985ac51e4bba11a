"""Distillation from a pre-trained tagger (training.teacher): probe, cross-fitting, targets."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from firmware_py.errors import GenreEdgeError  # noqa: E402
from firmware_py.features import DEFAULT_PARAMS  # noqa: E402
from tests.paths import require_music  # noqa: E402
from training import teacher  # noqa: E402
from training.fit import TrainConfig, WindowSampler  # noqa: E402


def _tracks(rng, n_per_class, n_labels, dim, separation):
    centres = rng.standard_normal((n_labels, dim)) * separation
    xs, labels = [], []
    for c in range(n_labels):
        for _ in range(n_per_class):
            windows = int(rng.integers(5, 30))
            xs.append(centres[c] + rng.standard_normal((windows, dim)))
            labels.append(c)
    return xs, labels


def test_probe_learns_separable_classes_and_outputs_probabilities():
    rng = np.random.default_rng(0)
    xs, labels = _tracks(rng, 12, 3, 20, separation=2.0)
    probe = teacher.fit_probe(xs, labels, 3, l2=1.0)
    probs = [probe.predict(x) for x in xs]
    assert all(p.shape == (len(x), 3) for p, x in zip(probs, xs, strict=True))
    assert np.allclose(np.concatenate(probs).sum(1), 1.0, atol=1e-5)
    assert teacher.track_accuracy(probs, labels) == 1.0


def test_cross_fitting_does_not_let_a_probe_label_its_own_training_tracks():
    # Pure noise embeddings with many dimensions: a probe fitted on every track memorises
    # them (training accuracy near 1), a cross-fitted one is at chance.
    rng = np.random.default_rng(0)
    n_labels, dim = 2, 300
    xs = [rng.standard_normal((1, dim)) + rng.standard_normal(dim) * 3 for _ in range(60)]
    labels = [i % n_labels for i in range(60)]
    memorised = teacher.fit_probe(xs, labels, n_labels, l2=1e-3)
    assert teacher.track_accuracy([memorised.predict(x) for x in xs], labels) > 0.95
    crossed = teacher.cross_fitted_targets(xs, labels, n_labels, folds=5, seed=0, l2=1e-3)
    assert len(crossed) == len(xs)
    assert teacher.track_accuracy(crossed, labels) < 0.75


def test_target_at_interpolates_between_teacher_windows_and_clamps():
    t = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    assert np.allclose(teacher.target_at(t, 0, 100.0), [1.0, 0.0])
    assert np.allclose(teacher.target_at(t, 25, 100.0), [0.75, 0.25])
    assert np.allclose(teacher.target_at(t, 100, 100.0), [0.0, 1.0])
    assert np.allclose(teacher.target_at(t, 1000, 100.0), [0.5, 0.5])  # past the end


def test_sampler_mixes_one_hot_with_the_teacher_target_at_the_crop_position():
    # Features encode track (x 10000) and frame index, so track and crop start can be read
    # back from x; every track has its own label and its own teacher targets.
    frames, wf, n_labels = 900, 300, 3
    feats = [np.repeat((10000 * i + np.arange(frames, dtype=np.float32))[:, None], 4, 1)
             for i in range(3)]
    rng = np.random.default_rng(0)
    soft = [rng.dirichlet(np.ones(n_labels), size=9 + i).astype(np.float32) for i in range(3)]
    labels = [2, 0, 1]
    cfg = TrainConfig(batch_size=12, crops_per_track=8, distill=0.4)
    cfg.augment = cfg.augment.none()
    sampler = WindowSampler(feats, labels, n_labels, wf, cfg, DEFAULT_PARAMS,
                            np.ones(n_labels, np.float32), soft=soft, soft_hop_frames=99.2)
    x, y, _ = next(iter(sampler))
    assert np.allclose(y.sum(1), 1.0, atol=1e-6)
    seen = set()
    for xi, yi in zip(x[..., 0], y, strict=True):
        track, start = divmod(int(xi[0, 0]), 10000)
        seen.add(track)
        expect = (0.6 * np.eye(n_labels)[labels[track]]
                  + 0.4 * teacher.target_at(soft[track], start, 99.2))
        assert np.allclose(yi, expect, atol=1e-6), (track, start)
    assert seen == {0, 1, 2}


def test_sampler_gives_hints_of_the_teacher_embedding_at_the_crop_and_its_room() -> None:
    # Hints (the teacher's whole embedding) follow the crop like the targets do, also when
    # the crop comes from one of the track's room renderings (aligned with the clean clip).
    frames, wf, n_labels, dim = 900, 300, 2, 5
    feats = [np.repeat((10000 * i + np.arange(frames, dtype=np.float32))[:, None], 4, 1)
             for i in range(2)]
    rooms = [[f + 0.5] for f in feats]  # a "rendering": same frames, marked by +0.5
    rng = np.random.default_rng(1)
    soft = [rng.dirichlet(np.ones(n_labels), size=9).astype(np.float32) for _ in range(2)]
    hints = [rng.normal(size=(9, dim)).astype(np.float32) for _ in range(2)]
    cfg = TrainConfig(batch_size=16, crops_per_track=8, distill=0.5, clean_p=0.5, hint=1.0)
    cfg.augment = cfg.augment.none()
    sampler = WindowSampler(feats, [0, 1], n_labels, wf, cfg, DEFAULT_PARAMS,
                            np.ones(n_labels, np.float32), soft=soft, soft_hop_frames=99.2,
                            variants=rooms, hints=hints)
    x, (y, h), (w, w2) = next(iter(sampler))
    assert h.shape == (16, dim) and np.array_equal(w, w2)
    kinds = set()
    for xi, hi in zip(x[..., 0], h, strict=True):
        value = float(xi[0, 0])
        kinds.add(value % 1.0)
        track, start = divmod(int(value), 10000)
        assert np.allclose(hi, teacher.target_at(hints[track], start, 99.2), atol=1e-6)
    assert kinds == {0.0, 0.5}  # clean crops and room crops both drawn


def test_cross_fitting_keeps_track_order_and_refuses_tiny_genres():
    rng = np.random.default_rng(0)
    xs, labels = _tracks(rng, 6, 2, 8, separation=3.0)
    crossed = teacher.cross_fitted_targets(xs, labels, 2, folds=5, seed=0)
    assert [len(c) for c in crossed] == [len(x) for x in xs]
    assert teacher.track_accuracy(crossed, labels) == 1.0  # each lands on its own track
    with pytest.raises(GenreEdgeError, match="at least 2 training tracks of every genre") as err:
        teacher.cross_fitted_targets(xs[:7], labels[:7], 2)  # genre 1 has one track
    assert "\n" not in str(err.value)


def test_train_flags_take_their_defaults_from_the_training_config():
    """No copies: the parsed defaults are TrainConfig's, and --help loads neither numpy nor
    TensorFlow (the presets and teachers are declared in training.presets)."""
    import argparse
    import subprocess
    import sys

    from training import commands

    parser = argparse.ArgumentParser()
    commands._train_configure(parser)
    args = parser.parse_args(["--data", "x", "--out", "y"])
    cfg = TrainConfig()
    for key in ("ema", "balance", "distill", "distill_temperature", "teacher_l2", "rooms",
                "clean_p", "val_rooms", "hint"):
        assert getattr(args, key) == getattr(cfg, key), key
    assert (args.room_p, args.mixup_p) == (cfg.augment.room_p, cfg.augment.mixup_p)
    assert set(commands.TEACHER_NAMES) == set(teacher.TEACHERS)
    code = ("import sys, argparse; from training import commands; "
            "commands._train_configure(argparse.ArgumentParser()); "
            "print([m for m in ('numpy', 'tensorflow', 'keras') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_musicnn_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GenreEdgeError, match=r"pip install --no-deps musicnn") as err:
        teacher.checkpoint_dir("musicnn-msd")
    assert "\n" not in str(err.value)
    with pytest.raises(GenreEdgeError, match="unknown teacher"):
        teacher.checkpoint_dir("nope")


@pytest.mark.skipif(importlib.util.find_spec("musicnn") is None,
                    reason="musicnn is not installed (make dev-env installs it)")
def test_real_musicnn_teacher_hears_classical_and_rock_apart():
    from firmware_py.audio import load_audio
    from firmware_py.features import logmel

    music_dir = require_music()
    tagger = teacher.MusicnnTagger("musicnn-msd")
    tags = {}
    for name in ("classical/gtzan-classical.00000.opus", "rock/gtzan-rock.00000.opus"):
        db = logmel(load_audio(music_dir / name, 16000), teacher.TEACHER_FRONTEND)
        emb = tagger.embed(db)
        # 30 s: windows of 187 frames every 62 frames.
        assert emb.shape == ((db.shape[0] - 187) // 62 + 1, 250)
        assert np.all(np.isfinite(emb)) and np.all((emb[:, 200:] >= 0) & (emb[:, 200:] <= 1))
        tags[name.split("/")[0]] = emb[:, 200:].mean(0)
    rock, instrumental = 0, 23  # MSD tag indices of 'rock' and 'instrumental'
    assert tags["rock"][rock] > 2 * tags["classical"][rock]
    assert tags["classical"][instrumental] > 2 * tags["rock"][instrumental]
