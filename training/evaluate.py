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

from firmware_py.bundle import hop_frames_for
from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .dataset import SPLITS, load_run_splits

REPORT_KEYS = ("window_accuracy", "track_accuracy_mean_vote", "track_accuracy_majority_vote",
               "macro_f1", "window_macro_f1", "per_class", "confusion")


def report_names(split: str) -> dict[str, str]:
    """The report files ``evaluate_run`` writes for ``split``."""
    suffix = "" if split == "test" else f"-{split}"
    return {"json": f"report{suffix}.json", "md": f"report{suffix}.md",
            "confusion": f"confusion{suffix}.png"}


def evaluate_run(run_dir: str | Path, split: str = "test", *, verbose: int = 1) -> dict[str, Any]:
    """Evaluate ``RUN/model.keras`` on ``split`` (train, val or test) and write the report.

    Parameters
    ----------
    run_dir : str or Path
        Training run folder.
    split : str
        Which tracks to evaluate on.
    verbose : int
        0 silent, 1 prints the summary.

    Returns
    -------
    dict
        The report (also written as JSON).
    """
    from .fit import configure_tensorflow, predict_tracks
    from .metrics import summarize

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise GenreEdgeError(f"unknown --split '{split}': use one of {', '.join(SPLITS)}")
    run_json = run_dir / "run.json"
    if not run_json.is_file() or not (run_dir / "model.keras").is_file():
        raise GenreEdgeError(
            f"{run_dir} is not a finished training run (needs run.json and model.keras): "
            "train first with 'genre-edge train'"
        )
    run = json.loads(run_json.read_text())
    configure_tensorflow(int(run.get("train", {}).get("threads", 0)))
    import keras

    from . import models  # noqa: F401  (registers BandAffine)

    labels = list(run["labels"])
    window_frames = int(run["frontend"]["window_frames"])
    hop_frames = hop_frames_for(float(run.get("hop_s", 1.0)), FrontendParams.from_dict(run["frontend"]))
    tracks = load_run_splits(run_dir)[split]
    if not tracks:
        raise GenreEdgeError(f"run {run_dir} has no '{split}' tracks: pick another --split")
    t0 = time.time()
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    probs = predict_tracks(model, tracks, window_frames, hop_frames)
    report = summarize(probs, [t.label for t in tracks], labels)
    report.update({
        "split": split, "labels": labels, "arch": run.get("arch"), "hop_s": run.get("hop_s", 1.0),
        "parameters": int(model.count_params()), "best_epoch": run.get("best_epoch"),
        "train_time_s": run.get("train_time_s"), "eval_time_s": round(time.time() - t0, 1),
        "errors": [
            {"track": t.track_id, "true": labels[t.label], "predicted": labels[int(p.mean(0).argmax())]}
            for t, p in zip(tracks, probs, strict=True) if int(p.mean(0).argmax()) != t.label
        ],
    })
    names = report_names(split)
    (run_dir / names["json"]).write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / names["md"]).write_text(format_markdown(report, run))
    plot_confusion(report, run_dir / names["confusion"])
    history = run_dir / "history.json"
    if history.is_file():
        plot_curves(json.loads(history.read_text()), run_dir / "curves.png")
    run.setdefault("metrics", {})[split] = {
        k: report[k] for k in ("tracks", "windows", "window_accuracy", "track_accuracy_mean_vote",
                               "track_accuracy_majority_vote", "macro_f1", "window_macro_f1")
    }
    run_json.write_text(json.dumps(run, indent=2) + "\n")
    if verbose:
        print(f"{split}: {report['tracks']} tracks, {report['windows']} windows; window accuracy "
              f"{report['window_accuracy']:.3f}, track accuracy {report['track_accuracy_mean_vote']:.3f} "
              f"(mean vote) / {report['track_accuracy_majority_vote']:.3f} (majority), macro-F1 "
              f"{report['macro_f1']:.3f} -> {run_dir / names['json']}", flush=True)
    return report


def format_markdown(report: dict[str, Any], run: dict[str, Any]) -> str:
    """``report.md``: summary, per-class table and confusion matrix."""
    labels = report["labels"]
    ds = run.get("dataset", {})
    lines = [
        f"# Evaluation: {run.get('arch')} on the {report['split']} split",
        "",
        f"Data: `{ds.get('data_dir')}` (split `{ds.get('split')}`, seed {ds.get('seed')}), "
        f"genres {', '.join(labels)}. {report['tracks']} tracks, {report['windows']} windows "
        f"of {run['frontend']['window_frames'] / 100:.2f} s at a {report['hop_s']} s hop. "
        f"Model: {report['parameters']:,} parameters, best epoch {report.get('best_epoch')}, "
        f"trained in {report.get('train_time_s')} s.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| window accuracy | {report['window_accuracy']:.4f} |",
        f"| track accuracy, mean-probability vote | {report['track_accuracy_mean_vote']:.4f} |",
        f"| track accuracy, majority vote | {report['track_accuracy_majority_vote']:.4f} |",
        f"| macro-F1 (track, mean vote) | {report['macro_f1']:.4f} |",
        f"| macro-F1 (window) | {report['window_macro_f1']:.4f} |",
        "",
        "## Per class (track level, mean vote)",
        "",
        "| genre | precision | recall | F1 | tracks |",
        "|---|---|---|---|---|",
    ]
    for name in labels:
        c = report["per_class"][name]
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    lines += ["", "## Confusion (tracks; rows true, columns predicted)", "",
              "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, row in zip(labels, report["confusion"], strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    if report.get("errors"):
        lines += ["", "## Misclassified tracks", ""]
        lines += [f"- `{e['track']}`: {e['true']} -> {e['predicted']}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


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
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(ep, [h["loss"] for h in history], label="train loss (augmented)")
    a.plot(ep, [h["val_loss"] for h in history], label="val window loss")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [h["acc"] for h in history], label="train window acc (augmented)")
    b.plot(ep, [h["val_window_accuracy"] for h in history], label="val window acc")
    b.plot(ep, [h["val_track_accuracy"] for h in history], label="val track acc (mean vote)")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    b.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
