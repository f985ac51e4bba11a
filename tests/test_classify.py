"""``genre-edge classify`` with the bundled default model on real held-out music."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_py.bundle import default_bundle_path, load_bundle
from firmware_py.classify import classify_file
from firmware_py.cli import main
from tests.paths import MUSIC, clip, manifest_rows

#: The genres the bundled model names (README "The default model").
ELEVEN = ["blues", "classical", "country", "disco", "electronic", "hiphop", "jazz", "metal",
          "pop", "reggae", "rock"]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def test_bundled_model_is_small_int8_and_fully_edgetpu_mappable(bundle) -> None:
    model = bundle.open_model()
    assert model.input_dtype == np.int8 and model.output_dtype == np.int8
    assert bundle.file("model").stat().st_size <= 250 * 1024
    assert bundle.metrics["edgetpu"]["all_mappable"] is True
    assert bundle.labels == ELEVEN


def test_classify_test_split_matches_the_model_card(bundle) -> None:
    """Every track the card was verified on, through the device code path.

    The bundle records the ids of its verification tracks, so the card is checked on
    exactly those tracks even after the shared data's split moves on.
    """
    ids = set(bundle.metrics["verification"]["track_ids"])
    rows = [r for r in manifest_rows() if Path(r["path"]).with_suffix("").as_posix() in ids]
    assert len(rows) == len(ids) >= 150
    model = bundle.open_model()
    correct = 0
    confusion = np.zeros((len(bundle.labels),) * 2, dtype=int)
    for r in rows:
        result = classify_file(MUSIC / r["path"], bundle, model)
        correct += result.genre == r["genre"]
        confusion[bundle.labels.index(r["genre"]), bundle.labels.index(result.genre)] += 1
    accuracy = correct / len(rows)
    card = bundle.metrics["verification"]["int8_track_accuracy"]
    # Same windows, same interpreter: only decoding/resampling differences remain.
    assert abs(accuracy - card) <= 0.03, (accuracy, card, confusion.tolist())
    assert accuracy > 1 / len(bundle.labels) + 0.3  # far above chance


def test_classify_json_lines(capsys) -> None:
    files = [clip("classical", 0, "test"), clip("rock", 0, "test")]
    assert main(["classify", "--json", *map(str, files)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in records] == [str(f) for f in files]
    for r in records:
        assert set(r) >= {"file", "genre", "confidence", "probabilities"}
        assert abs(sum(r["probabilities"].values()) - 1.0) < 0.02
        assert r["confidence"] == max(r["probabilities"].values())
        assert r["genre"] == max(r["probabilities"], key=r["probabilities"].get)


def test_classify_timeline_and_errors(capsys, tmp_path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not audio")
    path = clip("rock", 1, "test")
    code = main(["classify", "--timeline", str(path), str(bad)])
    captured = capsys.readouterr()
    assert code == 1  # one file failed, the other was still classified
    assert str(path) in captured.out and "rock" in captured.out
    assert "  s " not in captured.err
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "broken.wav" in err[0]


def test_too_short_and_silent_files_are_one_line_errors(capsys, tmp_path) -> None:
    """No confident-looking genre for a file with nothing to classify; the others still run."""
    import soundfile as sf

    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(16000, np.float32) + 0.1 * np.sin(np.arange(16000) / 5), 16000)
    silent = tmp_path / "silent.wav"
    rng = np.random.default_rng(0)
    sf.write(silent, 1e-5 * rng.standard_normal(10 * 16000).astype(np.float32), 16000)
    path = clip("classical", 0, "test")
    code = main(["classify", "--json", str(short), str(silent), str(path)])
    captured = capsys.readouterr()
    assert code == 1
    err = captured.err.strip().splitlines()
    assert len(err) == 2
    assert "short.wav holds 1.00 s of audio, less than one 3.0 s model window" in err[0]
    assert "silent.wav is silent" in err[1] and "below the silence gate of -60 dBFS" in err[1]
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in records] == [str(path)]
    # sound only in the first 2 s (before the first window's newest hop) is not silence
    from firmware_py.audio import load_audio

    early = tmp_path / "early.wav"
    music = load_audio(path, 16000)[: 2 * 16000]
    sf.write(early, np.concatenate([music, np.zeros(int(1.5 * 16000), np.float32)]), 16000)
    assert main(["classify", "--json", str(early)]) == 0


@pytest.mark.parametrize("hop_s", [1.0, 2.5, 0.333])  # 0.333 s: 33 frames
def test_device_pipeline_sees_the_windows_classify_sees_for_any_hop(bundle, hop_s) -> None:
    """listen --hop: same windows, times and smoothed states as classify --timeline."""
    import dataclasses

    from firmware_py.audio import load_audio
    from firmware_py.classify import timeline
    from firmware_py.pipeline import Pipeline

    hopped = dataclasses.replace(bundle, inference_hop_s=hop_s)
    model = bundle.open_model()
    path = clip("rock", 0, "test")
    result = classify_file(path, hopped, model)
    states = timeline(result, hopped)
    audio = load_audio(path, bundle.frontend.sample_rate)
    pipeline = Pipeline(hopped, model)
    step = 1234  # blocks that divide neither the hop nor the frame step
    hops = [r for i in range(0, audio.shape[0], step) for r in pipeline.push(audio[i : i + step])]
    assert len(hops) == result.windows
    assert np.allclose([h.t_s for h in hops], [s.t_s for s in states], atol=1e-9)
    assert np.allclose(np.stack([h.probabilities for h in hops]), result.window_probabilities, atol=1e-6)
    assert [h.state.genre for h in hops] == [s.genre for s in states]


def test_labelled_recordings_are_scored(tmp_path, capsys, bundle) -> None:
    """A user's own recordings, one folder per genre, scored with the device's model."""
    rows = [r for r in manifest_rows(split="test") if r["genre"] in bundle.labels]
    picked = {}
    for r in rows:
        picked.setdefault(r["genre"], []).append(r)
    for genre, rs in list(picked.items())[:3]:
        (tmp_path / "rec" / genre).mkdir(parents=True)
        for r in rs[:2]:
            (tmp_path / "rec" / genre / Path(r["path"]).name).symlink_to(MUSIC / r["path"])
    (tmp_path / "rec" / "polka").mkdir()
    (tmp_path / "rec" / "polka" / "x.opus").symlink_to(MUSIC / rows[0]["path"])
    code = main(["classify", "--labelled", "--json", str(tmp_path / "rec")])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    summary = records[-1]["summary"]
    assert code == 1  # the polka file was refused, the others scored
    assert "polka" in captured.err and "not a genre of the model" in captured.err
    assert summary["files"] == 6 == len(records) - 1
    right = sum(Path(r["file"]).parent.name == r["genre"] for r in records[:-1])
    assert summary["correct"] == right and summary["accuracy"] == right / 6
    assert sum(v["files"] for v in summary["recall"].values()) == 6
    assert sum(summary["confusions"].values()) == 6 - right
