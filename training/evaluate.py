"""Evaluate a training run on one split and write the report.

Files written into the run folder (``<split>`` is omitted from the names for ``test``):

* ``report[-<split>].json`` — every metric (:func:`training.metrics.summarize`);
* ``report[-<split>].md`` — the same as a readable table;
* ``confusion[-<split>].png`` — track-level (mean vote) and window-level confusion;
* ``curves.png`` — training loss / accuracy and validation accuracy per epoch.

The split's metrics are also stored in ``run.json`` under ``metrics.<split>``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .dataset import SPLITS, load_run_splits
from .runfolder import RunRecord, read_run

REPORT_KEYS = ("window_accuracy", "track_accuracy_mean_vote", "track_accuracy_majority_vote",
               "macro_f1", "window_macro_f1", "per_class", "confusion")


def report_names(split: str) -> dict[str, str]:
    """The report files ``evaluate_run`` writes for ``split``."""
    suffix = "" if split == "test" else f"-{split}"
    return {"json": f"report{suffix}.json", "md": f"report{suffix}.md",
            "confusion": f"confusion{suffix}.png"}


#: Conditions per track of the in-room evaluation (each track heard in this many rooms).
ROOMS_PER_TRACK = 3


def in_room_tracks(tracks: list[Any], split: str, frontend: FrontendParams, cache_dir: Path, *,
                   per_track: int = ROOMS_PER_TRACK, rir_dir: Path | None = None,
                   noise_dir: Path | None = None, workers: int | None = None,
                   progress: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """``tracks`` heard in the held-out rooms of ``split`` (validation rooms for val, test rooms
    otherwise; a user's responses/noises with ``rir_dir``/``noise_dir``), rendered and cached.

    Returns the room tracks and a description of the conditions for the report.
    """
    from .room_features import build_room_cache, require_rooms_ok, room_tracks
    from .rooms import room_set

    rooms = room_set("val" if split == "val" else "test", frontend.sample_rate, cache_dir,
                     rir_dir=rir_dir, noise_dir=noise_dir)
    items = room_tracks(tracks, rooms, per_track)
    failed = build_room_cache(items, workers=workers, progress=progress,
                              desc=f"rendering {split} rooms")
    items = require_rooms_ok(items, failed, split)
    info = {"rooms": rooms.source, "responses": len(rooms.rirs), "per_track": per_track,
            "noise": "recordings" if rooms.noises else "synthetic (" + ", ".join(rooms.noise_kinds) + ")",
            "conditions": rooms.sim.to_dict(), "room_set": rooms.digest}
    return items, info


def evaluate_run(run_dir: str | Path, split: str = "test", *, verbose: int = 1,
                 rooms: bool = True, rooms_per_track: int = ROOMS_PER_TRACK,
                 rir_dir: Path | None = None, noise_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate ``RUN/model.keras`` on ``split`` (train, val or test), clean and in the
    held-out rooms, and write the report.

    Parameters
    ----------
    run_dir : str or Path
        Training run folder.
    split : str
        Which tracks to evaluate on.
    verbose : int
        0 silent, 1 prints the summary.
    rooms : bool
        Also play every track through ``rooms_per_track`` held-out rooms
        (:mod:`training.rooms`) and report that beside the clean figures.
    rir_dir, noise_dir : Path or None
        Measured responses / background recordings instead of the simulated rooms.

    Returns
    -------
    dict
        The report (also written as JSON); the in-room figures under ``in_room``.
    """
    from .calibration import expected_calibration_error, window_labels
    from .metrics import summarize

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise GenreEdgeError(f"unknown --split '{split}': use one of {', '.join(SPLITS)}")
    run = read_run(run_dir)  # every file and key it reads, checked: a damaged run is one line
    labels, frontend = run.labels, run.frontend
    window_frames, hop_frames = run.window_frames, run.inference_hop_frames
    tracks = load_run_splits(run)[split]
    if not tracks:
        raise GenreEdgeError(f"run {run_dir} has no '{split}' tracks: pick another --split")
    room_items, room_info = [], None
    if rooms:  # rendered before TensorFlow loads: the renderers fork
        room_items, room_info = in_room_tracks(
            tracks, split, frontend, run.cache_dir,
            per_track=rooms_per_track, rir_dir=rir_dir, noise_dir=noise_dir,
            progress=bool(verbose))

    from .fit import configure_tensorflow, predict_tracks

    configure_tensorflow(int(run.train.get("threads", 0)))
    import keras

    from . import models  # noqa: F401  (registers BandAffine)

    t0 = time.time()
    model = keras.models.load_model(run.model_path, compile=False)
    probs = predict_tracks(model, tracks, window_frames, hop_frames)
    report = summarize(probs, [t.label for t in tracks], labels)
    report["window_ece"] = expected_calibration_error(*window_labels(probs, [t.label for t in tracks]))
    report.update({
        "split": split, "labels": labels, "arch": run.arch,
        "inference_hop_s": run.inference_hop_s,
        "parameters": int(model.count_params()), "best_epoch": run.get("best_epoch"),
        "train_time_s": run.get("train_time_s"),
        "errors": [
            {"track": t.track_id, "true": labels[t.label], "predicted": labels[int(p.mean(0).argmax())]}
            for t, p in zip(tracks, probs, strict=True) if int(p.mean(0).argmax()) != t.label
        ],
    })
    if room_items:
        room_probs = predict_tracks(model, room_items, window_frames, hop_frames)
        room = summarize(room_probs, [t.label for t in room_items], labels)
        room["window_ece"] = expected_calibration_error(
            *window_labels(room_probs, [t.label for t in room_items]))
        room.update(room_info)
        report["in_room"] = room
    report["eval_time_s"] = round(time.time() - t0, 1)
    names = report_names(split)
    (run_dir / names["json"]).write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / names["md"]).write_text(format_markdown(report, run))
    plot_confusion(report, run_dir / names["confusion"])
    history = run_dir / "history.json"
    if history.is_file():
        plot_curves(json.loads(history.read_text()), run_dir / "curves.png")
    run.store_metrics(split, summary_of(report))
    if verbose:
        line = (f"{split}: {report['tracks']} tracks, {report['windows']} windows; window accuracy "
                f"{report['window_accuracy']:.3f}, track accuracy {report['track_accuracy_mean_vote']:.3f} "
                f"(mean vote) / {report['track_accuracy_majority_vote']:.3f} (majority), macro-F1 "
                f"{report['macro_f1']:.3f}")
        if "in_room" in report:
            r = report["in_room"]
            line += (f"; in rooms ({r['tracks']} renderings): window {r['window_accuracy']:.3f}, "
                     f"track {r['track_accuracy_mean_vote']:.3f}, macro-F1 {r['macro_f1']:.3f}")
        print(f"{line} -> {run_dir / names['json']}", flush=True)
    return report


SUMMARY_KEYS = ("tracks", "windows", "window_accuracy", "track_accuracy_mean_vote",
                "track_accuracy_majority_vote", "macro_f1", "window_macro_f1", "window_ece")


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a report (``run.json`` ``metrics.<split>``), in-room included."""
    out = {k: report[k] for k in SUMMARY_KEYS if k in report}
    if "in_room" in report:
        out["in_room"] = {k: report["in_room"][k] for k in SUMMARY_KEYS if k in report["in_room"]}
    return out


def format_markdown(report: dict[str, Any], run: RunRecord) -> str:
    """``report.md``: summary, per-class table and confusion matrix."""
    labels = report["labels"]
    ds = run.dataset
    lines = [
        f"# Evaluation: {run.arch} on the {report['split']} split",
        "",
        f"Data: `{ds.get('data_dir')}` (split `{ds.get('split')}`, seed {ds.get('seed')}), "
        f"genres {', '.join(labels)}. {report['tracks']} tracks, {report['windows']} windows "
        f"of {run.window_frames / 100:.2f} s at a {report['inference_hop_s']} s hop. "
        f"Model: {report['parameters']:,} parameters, best epoch {report.get('best_epoch')}, "
        f"trained in {report.get('train_time_s')} s.",
        "",
        *_headline_table(report),
        "",
        "## Per class (track level, mean vote)",
        "",
        "| genre | precision | recall | F1 | tracks |"
        + (" in-room precision | in-room recall | in-room F1 | renderings |" if "in_room" in report else ""),
        "|---|---|---|---|---|" + ("---|---|---|---|" if "in_room" in report else ""),
    ]
    for name in labels:
        c = report["per_class"][name]
        row = f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        if "in_room" in report:
            r = report["in_room"]["per_class"][name]
            row += f" {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
        lines.append(row)
    lines += ["", "## Confusion (tracks; rows true, columns predicted)", "",
              "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, row in zip(labels, report["confusion"], strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    if "in_room" in report:
        r = report["in_room"]
        lines += ["", "## In-room confusion (renderings; rows true, columns predicted)", "",
                  f"Each track played through {r['per_track']} held-out rooms ({r['rooms']} "
                  f"responses: {r['responses']}; noise {r['noise']}; conditions "
                  f"`{json.dumps(r['conditions'])}`).", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for name, row in zip(labels, r["confusion"], strict=True):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    if report.get("errors"):
        lines += ["", "## Misclassified tracks", ""]
        lines += [f"- `{e['track']}`: {e['true']} -> {e['predicted']}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


def _headline_table(report: dict[str, Any]) -> list[str]:
    room = report.get("in_room")
    rows = [("window accuracy", "window_accuracy"),
            ("track accuracy, mean-probability vote", "track_accuracy_mean_vote"),
            ("track accuracy, majority vote", "track_accuracy_majority_vote"),
            ("macro-F1 (track, mean vote)", "macro_f1"), ("macro-F1 (window)", "window_macro_f1"),
            ("expected calibration error (windows)", "window_ece")]
    out = ["| metric | clean | in-room |" if room else "| metric | value |",
           "|---|---|---|" if room else "|---|---|"]
    for title, key in rows:
        if key not in report:
            continue
        cell = f"| {title} | {report[key]:.4f} |"
        if room:
            cell += f" {room[key]:.4f} |"
        out.append(cell)
    return out


def _matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: dict[str, Any], path: Path) -> None:
    """Track-level and window-level confusion matrices, row-normalised, as one PNG."""
    plt = _matplotlib()
    labels = report["labels"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(labels), 2 + 0.8 * len(labels)))
    for ax, key, title in ((axes[0], "confusion", "tracks (mean vote)"),
                           (axes[1], "window_confusion", "windows")):
        m = np.asarray(report[key], dtype=float)
        norm = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.suptitle(f"{report['arch']} — {report['split']} split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and accuracies per epoch as one PNG."""
    plt = _matplotlib()
    if not history:
        return
    ep = [h["epoch"] for h in history]

    def val(key: str) -> list[float]:  # epochs trained but not validated (--validate-from): gaps
        return [h.get(key, float("nan")) for h in history]

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(ep, [h["loss"] for h in history], label="train loss (augmented)")
    a.plot(ep, val("val_loss"), label="val window loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [h["acc"] for h in history], label="train window acc (augmented)")
    b.plot(ep, val("val_window_accuracy"), label="val window acc")
    b.plot(ep, val("val_track_accuracy"), label="val track acc (mean vote)")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    b.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
