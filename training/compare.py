"""Compare finished runs: one Markdown table of size and accuracy (``python -m training.compare RUN...``).

For every run it reads ``run.json`` and ``report.json`` (evaluate first) and converts
``model.keras`` to full-integer int8 TFLite (with real training windows as the
representative set) to measure its size and its single-thread latency per window.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.runfolder import read_run


def int8_figures(run_dir: Path, representative: int = 64) -> dict[str, Any]:
    """Size (bytes) and 1-thread latency (ms per window) of the run's int8 TFLite model."""
    import keras

    import training.models  # noqa: F401
    from training.dataset import eval_windows, load_run_splits
    from training.quantize import to_int8

    run = read_run(run_dir)
    wf = run.window_frames
    model = keras.models.load_model(run.model_path, compile=False)
    rng = np.random.default_rng(0)
    train = load_run_splits(run)["train"]
    picks = rng.choice(len(train), size=min(representative, len(train)), replace=False)
    rep = []
    for i in picks:
        w = eval_windows(train[i], wf, wf)
        rep.append(w[rng.integers(len(w))][..., None])
    blob = to_int8(model, rep)
    import tempfile

    from firmware_py.errors import GenreEdgeError
    from firmware_py.inference import Model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(blob)
        xnnpack = True
        try:
            loaded = Model(path, threads=1)
        except GenreEdgeError:  # dong2018, hku: "failed to create XNNPACK runtime"
            xnnpack = False
            loaded = Model(path, threads=1, xnnpack=False)
        it = loaded.interpreter  # the file stays until the timing is done
        inp = it.get_input_details()[0]
        it.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
        for _ in range(3):
            it.invoke()
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            it.invoke()
        return {"int8_bytes": len(blob), "int8_ms_per_window": (time.perf_counter() - t0) / n * 1000,
                "int8_xnnpack": xnnpack}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the comparison rows."""
    head = ("| preset | input (frames x mels) | parameters | int8 size | int8 ms/window (1 thread) "
            "| epochs run | window acc | track acc (mean vote) | macro-F1 "
            "| in-room window acc | in-room track acc | in-room macro-F1 | train time |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def f3(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['input']} | {r['parameters']:,} | {r['int8_bytes'] / 1024:.0f} KB "
            f"| {r['int8_ms_per_window']:.2f} | {r['epochs_run']} "
            f"| {r['window_accuracy']:.3f} | {r['track_accuracy_mean_vote']:.3f} "
            f"| {r['macro_f1']:.3f} | {f3(r.get('room_window_accuracy'))} "
            f"| {f3(r.get('room_track_accuracy'))} | {f3(r.get('room_macro_f1'))} "
            f"| {r['train_time_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (evaluated on test)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    rows = []
    for r in a.runs:
        run_dir = Path(r)
        run = read_run(run_dir)
        report = json.loads((run_dir / "report.json").read_text())
        row = {
            "run": run_dir.name, "arch": run.arch,
            "input": f"{run.window_frames} x {run.frontend.n_mels}",
            "parameters": report["parameters"], "epochs_run": run.get("epochs_run"),
            "epochs_max": run.train.get("epochs"), "train_time_s": run.get("train_time_s"),
            **{k: report[k] for k in ("window_accuracy", "track_accuracy_mean_vote",
                                      "track_accuracy_majority_vote", "macro_f1")},
        }
        room = report.get("in_room") or {}
        row.update(room_window_accuracy=room.get("window_accuracy"),
                   room_track_accuracy=room.get("track_accuracy_mean_vote"),
                   room_macro_f1=room.get("macro_f1"))
        row.update(int8_figures(run_dir))
        rows.append(row)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
