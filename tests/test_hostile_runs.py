"""Issue 16, class "evaluate, bench and convert": damaged training runs and degenerate
inputs are one-line errors (exit 2, no traceback) and nothing is written. Copies of a real
training run, damaged one way each, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from firmware_py.commands import DEMO_CLIP
from tests.hostile_helpers import assert_one_line_error, cli, cli_in_process, wav_bytes


def _json_edit(name: str, edit):
    def damage(run: Path) -> None:
        data = json.loads((run / name).read_text())
        edit(data)
        (run / name).write_text(json.dumps(data))
    return damage


def _write(name: str, content: bytes):
    return lambda run: (run / name).write_bytes(content)


def _pop(key: str):
    return lambda data: data.pop(key)


def _put(key: str, value: Any):
    def edit(data: dict) -> None:
        *parents, last = key.split(".")
        for p in parents:
            data = data[p]
        data[last] = value
    return edit


def _truncate(run: Path) -> None:
    model = run / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _model_dir(run: Path) -> None:
    (run / "model.keras").unlink()
    (run / "model.keras").mkdir()


def _no_splits_no_dataset(run: Path) -> None:
    (run / "splits.json").unlink()
    _json_edit("run.json", _pop("dataset"))(run)


DAMAGE = [  # (case, damage, a word the error names)
    ("run.json not JSON", _write("run.json", b"{not json"), "not valid JSON"),
    ("run.json empty", _write("run.json", b""), "not valid JSON"),
    ("run.json not UTF-8", _write("run.json", b"\xff\xfe{}"), "UTF-8"),
    ("run.json a list", _write("run.json", b"[1, 2]"), "not a JSON object"),
    ("labels missing", _json_edit("run.json", _pop("labels")), "labels"),
    ("labels a string", _json_edit("run.json", _put("labels", "rock")), "labels"),
    ("one label", _json_edit("run.json", _put("labels", ["rock"])), "labels"),
    ("frontend missing", _json_edit("run.json", _pop("frontend")), "frontend"),
    ("n_mels a string", _json_edit("run.json", _put("frontend.n_mels", "64")), "n_mels"),
    ("n_fft 2**40", _json_edit("run.json", _put("frontend.n_fft", 2**40)), "n_fft"),
    ("inference_hop_s a string", _json_edit("run.json", _put("inference_hop_s", "1")), "inference_hop_s"),
    ("the old hop_s a string", _json_edit("run.json", _put("hop_s", "1")), "hop_s"),
    ("train a number", _json_edit("run.json", _put("train", 5)), "train"),
    ("train.threads a string", _json_edit("run.json", _put("train.threads", "many")), "threads"),
    ("metrics a list", _json_edit("run.json", _put("metrics", [])), "metrics"),
    ("no splits, no dataset", _no_splits_no_dataset, "splits.json"),
    ("splits.json not JSON", _write("splits.json", b'{"train": [['), "splits.json"),
    ("splits.json rows wrong", _json_edit("splits.json", _put("test", [[1, 2]])), "splits.json"),
    ("splits.json unknown genre",
     _json_edit("splits.json", lambda d: d["test"].append(["x", "/x.wav", "polka"])), "polka"),
    ("model.keras truncated", _truncate, "model.keras"),
    ("model.keras empty", _write("model.keras", b""), "model.keras"),
    ("model.keras a folder", _model_dir, "model.keras"),
]


@pytest.mark.parametrize("case, damage, word", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_evaluate_and_convert_of_a_damaged_run_are_one_line(synthetic_run: Path, tmp_path: Path,
                                                            case, damage, word) -> None:
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    damage(run)
    before = sorted(p.name for p in run.iterdir())
    code, _out, err = cli_in_process(["evaluate", str(run), "--no-rooms"])
    assert_one_line_error(code, err, word)
    bundle = tmp_path / "bundle"
    code, _out, err = cli_in_process(["convert", str(run), "--out", str(bundle), "--no-rooms"])
    assert_one_line_error(code, err, word)
    assert not bundle.exists()  # nothing written half-way
    assert sorted(p.name for p in run.iterdir()) == before  # no report written into the run


def test_a_run_file_that_is_a_fifo_is_refused_without_hanging(synthetic_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "run.json").unlink()
    os.mkfifo(run / "run.json")
    for args in (["evaluate", str(run), "--no-rooms"],
                 ["convert", str(run), "--out", str(tmp_path / "b"), "--no-rooms"]):
        out = cli(args, timeout=60)
        assert_one_line_error(out.returncode, out.stderr, "run.json", "named pipe")


def test_bench_refuses_degenerate_settings_and_inputs_in_one_line(tmp_path) -> None:
    tiny = tmp_path / "tiny.wav"
    tiny.write_bytes(wav_bytes(rate=16000, payload=bytes(200)))  # 100 samples: no frame
    liar = tmp_path / "liar.wav"
    liar.write_bytes(wav_bytes(rate=40_000_000))
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    cases = [
        (["bench", "frontend", "--seconds", "nan"], "--seconds nan"),
        (["bench", "frontend", "--seconds", "1e12"], "--seconds 1e+12"),
        (["bench", "--seconds", "-1"], "--seconds -1"),
        (["bench", "frontend", "--repeats", "0"], "--repeats 0"),
        (["bench", "frontend", "--repeats", "1000000000"], "--repeats"),
        (["bench", "frontend", "--input", str(liar)], "40000000 Hz"),
        (["bench", "frontend", "--input", str(tmp_path)], "directory"),
        (["bench", "--input", str(tiny), "--seconds", "1"], "analysis frame"),
        (["bench", "--bundle", str(broken), "--seconds", "1"], "manifest.json"),
        (["bench", "--input", str(DEMO_CLIP), "--seconds", "1", "--json",
          str(tmp_path / "out.json"), "--bundle", str(broken)], "manifest.json"),
    ]
    for args, word in cases:
        out = cli(args, timeout=120)
        assert_one_line_error(out.returncode, out.stderr, word)
    assert not (tmp_path / "out.json").exists()
