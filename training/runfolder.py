"""A training run folder, checked before anything uses it, and its typed record.

Everything that opens a run (``genre-edge evaluate``, ``convert``, the model card, the
comparisons) calls :func:`read_run` first and gets a :class:`RunRecord`: a run.json that
is not JSON, lacks a key or has one of the wrong type, a broken splits.json, or a
truncated model.keras is then one line naming the file and the key, never a traceback
from deep inside TensorFlow or a report writer. Only what those readers use is checked;
extra keys are left alone (:attr:`RunRecord.data` keeps the whole document).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_py.bundle import MAX_HOP_S, HopGeometry, hop_s_ok, name_ok
from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams
from firmware_py.files import open_regular, read_regular_bytes

from .cache import default_cache_dir

RUN_JSON = "run.json"
MODEL = "model.keras"
SPLITS_JSON = "splits.json"
PARTS = ("train", "val", "test")
RETRAIN = "train it again with 'genre-edge train --overwrite'"
#: Largest run.json or splits.json read (a run of 100,000 tracks stays far below).
MAX_JSON_BYTES = 256 << 20


class RunError(GenreEdgeError):
    """A training run folder that is missing, incomplete or damaged."""


def _json_file(path: Path) -> Any:
    raw = read_regular_bytes(path, RunError, RETRAIN, limit=MAX_JSON_BYTES)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunError(f"{path} is not UTF-8 text (damaged): {RETRAIN}") from None
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                       f"{exc.msg}): {RETRAIN}") from None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _optional(kind: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or kind(x)


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, kind)


#: key -> (required, check, what it must be), for the keys evaluate and convert read. None is
#: allowed only where the readers treat it as "not set" (``run.get(key) or default``).
_RUN_KEYS: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    "labels": (True, lambda x: isinstance(x, list) and len(x) >= 2
               and all(name_ok(v) for v in x) and len(set(x)) == len(x),
               "a list of at least 2 different genre names"),
    "frontend": (True, lambda x: isinstance(x, dict) and "window_frames" in x,
                 "an object of front-end parameters with window_frames"),
    "inference_hop_s": (False, hop_s_ok, f"a number of seconds in (0, {MAX_HOP_S:g}]"),
    "hop_s": (False, hop_s_ok, f"a number of seconds in (0, {MAX_HOP_S:g}]"),  # runs made before the rename
    "cache_dir": (False, _optional(_is(str)), "a folder name"),
    "train": (False, _is(dict), "an object"),
    "dataset": (False, _is(dict), "an object"),
    "smoothing": (False, _optional(_is(dict)), "an object"),
    "metrics": (False, _is(dict), "an object"),
    "arch": (False, _optional(_is(str)), "an architecture name"),
}
#: key -> (check, what it must be); every key optional.
_TRAIN_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "threads": (_whole, "a whole number >= 0"),
    "rooms": (_optional(_whole), "a whole number >= 0"),
    "rir_dir": (_optional(_is(str)), "a folder name"),
    "noise_dir": (_optional(_is(str)), "a folder name"),
}
#: What rebuilding the splits from the dataset reads (without a splits.json); every key
#: required but the fractions.
_DATASET_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data_dir": (_is(str), "a folder name"),
    "manifest": (_optional(_is(str)), "a file name or null"),
    "genres": (lambda x: isinstance(x, list) and all(isinstance(g, str) for g in x),
               "a list of genre names"),
    "split": (_is(str), "a split name"),
    "seed": (lambda x: isinstance(x, int) and not isinstance(x, bool), "a whole number"),
    "val_fraction": (_number, "a number"),
    "test_fraction": (_number, "a number"),
}


def _check_keys(where: str, data: dict[str, Any],
                keys: dict[str, tuple[Callable[[Any], bool], str]], required: bool) -> None:
    for key, (ok, what) in keys.items():
        if key not in data:
            if required and not key.endswith("_fraction"):
                raise RunError(f"{where} lacks '{key}': {RETRAIN}")
            continue
        if not ok(data[key]):
            raise RunError(f"{where}: '{key}' must be {what}, got {repr(data[key])[:60]}: "
                           f"{RETRAIN}")


def _check_splits(path: Path, labels: list[str]) -> None:
    raw = _json_file(path)
    if not isinstance(raw, dict):
        raise RunError(f"{path} is not a JSON object of split lists: {RETRAIN}")
    known = set(labels)
    for part in PARTS:
        rows = raw.get(part, [])
        if not isinstance(rows, list):
            raise RunError(f"{path}: '{part}' is not a list of tracks: {RETRAIN}")
        for row in rows:
            if not (isinstance(row, list) and len(row) == 3
                    and all(isinstance(v, str) for v in row)):
                raise RunError(f"{path}: '{part}' holds {repr(row)[:60]}, not a "
                               f"[track id, path, genre] entry: {RETRAIN}")
            if row[2] not in known:
                raise RunError(f"{path}: track {row[0]!r} has genre {row[2]!r}, which is not "
                               f"one of the run's labels: {RETRAIN}")


def _check_model(path: Path) -> None:
    """A Keras 3 ``.keras`` file is a zip archive: its directory and every member's CRC
    show truncation or damage without loading TensorFlow."""
    fd = open_regular(path, RunError, RETRAIN)
    try:
        with open(fd, "rb") as fh, zipfile.ZipFile(fh) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise RunError(f"{path} is damaged ({' '.join(str(exc).split())[:120]}: truncated or "
                       f"not a Keras model): {RETRAIN}") from None
    if bad is not None or "config.json" not in names:
        what = f"member {bad} is corrupt" if bad else "it holds no config.json"
        raise RunError(f"{path} is damaged ({what}): {RETRAIN}")


@dataclass(frozen=True)
class RunRecord(HopGeometry):
    """A training run as ``run.json`` describes it, checked and typed.

    Attributes
    ----------
    folder : Path
        The run folder (``--out`` of ``genre-edge train``).
    labels : list of str
        Genres in model output order.
    frontend : FrontendParams
        The front-end the model was trained on.
    inference_hop_s : float
        Seconds between evaluation windows (``inference_hop_s``; ``hop_s`` in runs made
        before the rename).
    arch, seed :
        The preset and the seed (None when not recorded).
    cache_dir : Path
        The feature cache the run used (the default cache when not recorded).
    train, dataset, metrics : dict
        The training settings, how the splits were made (empty when a splits.json holds
        them) and the metrics per split (``metrics.<split>``).
    smoothing : dict or None
        Smoothing defaults the run proposes (None: genre-edge's own).
    data : dict
        The whole document, for the report keys nobody types (``best_epoch``,
        ``teacher``, ``calibration``, ...); :meth:`get` reads it.
    """

    folder: Path
    labels: list[str]
    frontend: FrontendParams
    inference_hop_s: float
    arch: str | None
    seed: int | None
    cache_dir: Path
    train: dict[str, Any]
    dataset: dict[str, Any]
    smoothing: dict[str, Any] | None
    metrics: dict[str, Any]
    data: dict[str, Any]

    @property
    def json_path(self) -> Path:
        return self.folder / RUN_JSON

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL

    def get(self, key: str, default: Any = None) -> Any:
        """A report key of run.json (``best_epoch``, ``teacher``, ...) or ``default``."""
        return self.data.get(key, default)

    def store_metrics(self, split: str, metrics: dict[str, Any]) -> None:
        """Record ``metrics.<split>`` and rewrite run.json (``genre-edge evaluate``)."""
        self.metrics[split] = metrics
        self.data["metrics"] = self.metrics
        self.json_path.write_text(json.dumps(self.data, indent=2) + "\n")

    @classmethod
    def from_dict(cls, folder: Path, run: dict[str, Any]) -> RunRecord:
        """The record of a checked run.json document (:func:`read_run` checks it)."""
        hop = run.get("inference_hop_s", run.get("hop_s"))
        return cls(
            folder=folder, labels=list(run["labels"]),
            frontend=FrontendParams.from_dict(run["frontend"]),
            inference_hop_s=float(hop) if hop is not None else 1.0,
            arch=run.get("arch"), seed=run.get("seed"),
            cache_dir=Path(run.get("cache_dir") or default_cache_dir()),
            train=dict(run.get("train") or {}), dataset=dict(run.get("dataset") or {}),
            smoothing=run.get("smoothing"), metrics=dict(run.get("metrics") or {}), data=run,
        )


def read_run(run_dir: str | Path, *, need_model: bool = True) -> RunRecord:
    """``RUN/run.json`` as a :class:`RunRecord`, after checking every file and key a run's
    users read.

    Raises :class:`RunError` (one line) for a missing folder, a missing or damaged
    run.json / splits.json / model.keras (``need_model``), a key of the wrong type, or a
    front-end that does not validate.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise RunError(f"{run_dir} is a file, not a training run folder: pass the --out "
                           "of 'genre-edge train'")
        raise RunError(f"training run not found: {run_dir}: pass the --out of 'genre-edge train'")
    run_json, model = run_dir / RUN_JSON, run_dir / MODEL
    if not run_json.exists() or (need_model and not model.exists()):
        raise RunError(f"{run_dir} is not a finished training run (needs {RUN_JSON} and "
                       f"{MODEL}): train first with 'genre-edge train'")
    run = _json_file(run_json)
    if not isinstance(run, dict):
        raise RunError(f"{run_json} is not a JSON object: {RETRAIN}")
    for key, (required, ok, what) in _RUN_KEYS.items():
        if key not in run:
            if required:
                raise RunError(f"{run_json} lacks '{key}': {RETRAIN}")
        elif not ok(run[key]):
            raise RunError(f"{run_json}: '{key}' must be {what}, got {repr(run[key])[:60]}: "
                           f"{RETRAIN}")
    try:
        FrontendParams.from_dict(run["frontend"])
    except TypeError as exc:
        raise RunError(f"{run_json}: bad front-end parameters ({exc}): {RETRAIN}") from None
    except GenreEdgeError as exc:
        raise RunError(f"{run_json}: {exc}") from None
    _check_keys(f"{run_json} 'train'", run.get("train", {}), _TRAIN_KEYS, required=False)
    if (run_dir / SPLITS_JSON).exists():
        _check_splits(run_dir / SPLITS_JSON, run["labels"])
    elif "dataset" not in run:
        raise RunError(f"{run_dir} has neither {SPLITS_JSON} nor a 'dataset' in {RUN_JSON}: "
                       f"its tracks are unknown; {RETRAIN}")
    else:  # the splits are rebuilt from the dataset description
        _check_keys(f"{run_json} 'dataset'", run["dataset"], _DATASET_KEYS, required=True)
    if need_model:
        _check_model(model)
    return RunRecord.from_dict(run_dir, run)
