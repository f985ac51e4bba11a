"""Choosing the epoch to keep: every epoch's validation at track level (clean and, with
``--rooms``, in the validation rooms), the ranking (:func:`selection_key`), the checkpoint
of the best epoch and early stopping (:class:`EpochSelector`). No TensorFlow import here:
the model and the export function are handed in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .metrics import summarize
from .train_config import TrainConfig


def selection_key(row: dict[str, Any]) -> tuple[float, float, float]:
    """How epochs are ranked: validation track accuracy, then window accuracy, then lower
    loss; with in-room validation each is the mean of the clean and the in-room figure
    (the device hears rooms, the reports show clean files too)."""
    if "val_room_track_accuracy" in row:
        return (0.5 * (row["val_track_accuracy"] + row["val_room_track_accuracy"]),
                0.5 * (row["val_window_accuracy"] + row["val_room_window_accuracy"]),
                -0.5 * (row["val_loss"] + row["val_room_loss"]))
    return (row["val_track_accuracy"], row["val_window_accuracy"], -row["val_loss"])


def validation_figures(clean: dict[str, Any], room: dict[str, Any] | None) -> dict[str, Any]:
    """The ``val_*`` (and ``val_room_*``) figures that rank a model (:func:`selection_key`),
    from :func:`training.metrics.summarize` of the clean and in-room validation tracks."""
    row = {"val_window_accuracy": clean["window_accuracy"],
           "val_track_accuracy": clean["track_accuracy_mean_vote"],
           "val_track_accuracy_majority": clean["track_accuracy_majority_vote"],
           "val_loss": clean["window_loss"]}
    if room is not None:
        row.update(val_room_window_accuracy=room["window_accuracy"],
                   val_room_track_accuracy=room["track_accuracy_mean_vote"],
                   val_room_loss=room["window_loss"])
    return row


class EpochSelector:
    """Called at the end of every epoch: validates, records ``history.json``, saves the
    model when the epoch is the best so far, and says when to stop early.

    Parameters
    ----------
    predict : callable
        ``predict(tracks) -> list of (windows, labels) probabilities`` of the model now.
    save_best : callable
        Writes the model as it is now (``model.keras``).
    val_tracks, val_room : sequence
        Clean validation tracks; in-room renderings of them (empty: none).
    labels : sequence of str
        Genre names.
    out : Path
        The run folder (``history.json``).
    cfg : TrainConfig
        Epochs, patience, ``min_epochs``, ``budget_min`` (a time budget ends the run, not
        patience).
    verbose : bool
        One line per epoch.
    t_start : float
        ``time.time()`` when the run began (the rows' ``elapsed_s``).
    """

    def __init__(self, *, predict: Callable[[Sequence[Any]], list[Any]],
                 save_best: Callable[[], None], val_tracks: Sequence[Any],
                 val_room: Sequence[Any], labels: Sequence[str], out: Path, cfg: TrainConfig,
                 verbose: bool, t_start: float) -> None:
        self.predict, self.save_best = predict, save_best
        self.val_tracks, self.val_room, self.labels = val_tracks, val_room, list(labels)
        self.out, self.cfg, self.verbose, self.t_start = out, cfg, verbose, t_start
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, float, float] | None = None
        self.best_epoch = 0
        self.waited = 0

    def _summary(self, tracks: Sequence[Any]) -> dict[str, Any]:
        return summarize(self.predict(tracks), [t.label for t in tracks], self.labels)

    def _record(self, row: dict[str, Any]) -> None:
        """Append the epoch's row and rewrite ``history.json``."""
        self.history.append(row)
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1) + "\n")

    def validates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) is validated: from ``cfg.validate_from`` on,
        and always the last one (so that a run always keeps a model). Without validation
        tracks (a refit, ``--train-on-val``) none is."""
        if not self.val_tracks:
            return False
        return epoch + 1 >= self.cfg.validate_from or epoch + 1 >= self.cfg.epochs

    def end_of_epoch(self, epoch: int, logs: dict[str, Any] | None, lr: float) -> bool:
        """Record epoch ``epoch`` (0-based); True when training should stop."""
        t0, logs = time.time(), logs or {}
        trained = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))),
                   "acc": float(logs.get("acc", logs.get("probs_acc", float("nan"))))}
        if not self.validates(epoch):
            # trained only: its row has the training figures and no val_* keys
            row = {**trained, "lr": lr, "elapsed_s": time.time() - self.t_start}
            if not self.val_tracks and epoch + 1 >= self.cfg.epochs:
                self.best_epoch = epoch + 1  # a refit keeps its last epoch
                self.save_best()
            self._record(row)
            if self.verbose:
                why = ("no validation: a refit keeps its last epoch" if not self.val_tracks
                       else f"not validated before epoch {self.cfg.validate_from}")
                print(f"epoch {row['epoch']:3d}/{self.cfg.epochs}  loss {row['loss']:.3f}  acc "
                      f"{row['acc']:.3f}  ({why})  lr {lr:.2e}  [{row['elapsed_s']:.0f} s]",
                      flush=True)
            return False
        m = self._summary(self.val_tracks)
        room = self._summary(self.val_room) if self.val_room else None
        row = {**trained, **validation_figures(m, room), "lr": lr,
               "elapsed_s": time.time() - self.t_start}
        key = selection_key(row)
        improved = self.best is None or key > self.best
        if improved:
            self.best, self.best_epoch, self.waited = key, epoch + 1, 0
            self.save_best()
        else:
            self.waited += 1
        self._record(row)
        if self.verbose:
            self._print(row, room is not None, improved, time.time() - t0)
        cfg = self.cfg
        min_epochs = cfg.min_epochs if cfg.min_epochs is not None else cfg.epochs // 2
        if cfg.budget_min:
            return False  # the wall clock ends it (TimeBudget), not patience
        if self.waited >= cfg.patience and epoch + 1 >= min_epochs:
            if self.verbose:
                print(f"early stop: no better validation track accuracy for {cfg.patience} "
                      "epochs", flush=True)
            return True
        return False

    def _print(self, row: dict[str, Any], rooms: bool, improved: bool, eval_s: float) -> None:
        print(f"epoch {row['epoch']:3d}/{self.cfg.epochs}  loss {row['loss']:.3f}  acc "
              f"{row['acc']:.3f}  val window {row['val_window_accuracy']:.3f}  val track "
              f"{row['val_track_accuracy']:.3f} (majority {row['val_track_accuracy_majority']:.3f})"
              f"  val loss {row['val_loss']:.3f}  "
              + (f"in-room val window {row['val_room_window_accuracy']:.3f} track "
                 f"{row['val_room_track_accuracy']:.3f}  " if rooms else "")
              + f"lr {row['lr']:.2e}  [{eval_s:.1f} s eval, {row['elapsed_s']:.0f} s]"
              f"{'  *best' if improved else ''}", flush=True)

    @property
    def best_row(self) -> dict[str, Any]:
        return self.history[self.best_epoch - 1]
