"""The final fit of a recipe chosen on validation: ``genre-edge train ... --train-on-val RUN``.

A recipe (its flags, epochs, temperature) is chosen on the validation tracks by a run on the
training tracks alone (RUN). Once chosen, validation has done its job; the final model of
that recipe can learn from those tracks too. With this data that matters most where tracks
are fewest: validation holds 5-6 of the 17-18 country and disco clips, 17 of the 69 blues.

The refit trains on the training and validation tracks as one list (in track order, as a
split is), validates nothing, keeps its last epoch (the schedule is the recipe's own) and
folds in RUN's fitted temperature: no held-out track is left to fit one on. Its test split is
RUN's. Its validation figures are RUN's (``run.json`` ``refit``); nothing may be tuned on the
refit's validation tracks, because it trained on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .runfolder import RunRecord, read_run


def check_refit_source(source: Path, out: Path) -> RunRecord:
    """RUN of ``--train-on-val RUN``, checked before any decoding (one-line errors)."""
    if source.resolve() == out.resolve():
        raise GenreEdgeError(f"--train-on-val {source} is the --out folder: the refit needs its "
                             "own --out (RUN must stay as it is)")
    run = read_run(source)
    if run.train.get("refit_of"):
        raise GenreEdgeError(f"{source} is itself a refit (trained on its validation tracks): "
                             "pass the run on the training tracks alone")
    return run


def refit_splits(source: RunRecord, splits: dict[str, list[Any]], labels: list[str],
                 frontend: FrontendParams) -> dict[str, list[Any]]:
    """``{"train": train + val in track order, "val": [], "test": test}``, after checking that
    RUN had the same genres, front-end and tracks (else its temperature and validation would
    describe another model's data)."""
    from .dataset import load_run_splits

    if list(source.labels) != list(labels):
        raise GenreEdgeError(f"{source.folder} has genres {source.labels}, this data {labels}: "
                             "refit with the data and --genres of RUN")
    if source.frontend.to_dict() != frontend.to_dict():
        raise GenreEdgeError(f"{source.folder} was trained on another front-end: refit with "
                             "RUN's --compression and front-end flags")
    theirs = load_run_splits(source)
    for part in ("train", "val", "test"):
        ours = {t.track_id for t in splits.get(part, [])}
        if ours != {t.track_id for t in theirs.get(part, [])}:
            raise GenreEdgeError(f"the {part} tracks differ from {source.folder}'s: refit with "
                                 "RUN's data, manifest and --split/--seed")
    return {"train": train_and_val(splits), "val": [], "test": list(splits.get("test", []))}


def train_and_val(splits: dict[str, list[Any]]) -> list[Any]:
    """The refit's training list: the training and validation tracks in track order."""
    return sorted([*splits["train"], *splits["val"]], key=lambda t: t.track_id)


def source_temperature(source: RunRecord) -> float | None:
    """RUN's fitted softmax temperature (None: RUN was not calibrated)."""
    cal = source.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("temperature"), (int, float)):
        return float(cal["temperature"])
    return None


def refit_report(source: RunRecord, temperature: float | None) -> dict[str, Any]:
    """``run.json`` ``refit``: where the settings came from, and RUN's validation figures."""
    return {"of": str(source.folder), "val_of_source": dict(source.get("val") or {}),
            "source_best_epoch": source.get("best_epoch"),
            "temperature_of_source": temperature}
