"""The model card of a bundle: ``python -m converter.model_card RUN BUNDLE [--command TEXT]``.

Writes ``BUNDLE/MODEL_CARD.md`` from the run (``run.json``, ``report.json``,
``report-val.json``) and the bundle manifest (int8 verification, Edge TPU report), so every
figure in the card is one the reproduce command measured. The data section quotes the
sources and terms of ``../shared/data/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firmware_py.bundle import load_bundle
from training.runfolder import RunRecord, read_run

DATA_TERMS = """\
- **GTZAN** (G. Tzanetakis and P. Cook, "Musical genre classification of audio signals", IEEE
  TSAP 2002): 30 s excerpts; distributed for research use, the recordings remain their owners'
  copyright.
- **Emotify** (A. Aljanaki, F. Wiering, R. C. Veltkamp, "Studying emotion induced by music through
  a crowdsourcing game", Information Processing & Management, 2015): one-minute excerpts of music
  from the Magnatune label, distributed for non-commercial research with attribution.

Both were decoded, mixed to mono, resampled to 16 kHz and stored as Ogg Opus (~32 kb/s) in the
project's shared data folder. The model's weights are derived from these recordings: use it for
research and personal, non-commercial purposes."""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _augmentation(aug: dict[str, Any], train: dict[str, Any] | None = None) -> str:
    """The augmentation a run really used, from its ``train.augment`` settings and its
    waveform-domain rooms (``train.rooms``, ``train.clean_p``)."""
    train = train or {}
    rooms = int(train.get("rooms") or 0)
    if not aug and not rooms:
        return "none"
    parts = []
    if rooms:
        where = "measured impulse responses" if train.get("rir_dir") else "simulated rooms"
        parts.append(f"every training track rendered through {rooms} {where} (speaker, room, "
                     f"noise, microphone, level; training/rooms.py), "
                     f"{100 * (1 - float(train.get('clean_p', 0.25))):.0f}% of the crops from "
                     "a rendering")
    if aug.get("gain_db"):
        parts.append(f"gain +-{aug['gain_db']:g} dB")
    if aug.get("time_masks") or aug.get("freq_masks"):
        parts.append(f"{aug.get('time_masks', 0)} time masks <= {aug.get('time_mask_frames', 0)} "
                     f"frames and {aug.get('freq_masks', 0)} frequency masks <= "
                     f"{aug.get('freq_mask_bands', 0)} bands")
    if aug.get("mixup_p"):
        parts.append(f"mixup on {100 * aug['mixup_p']:.0f}% of batches")
    if aug.get("room_p"):
        parts.append(f"feature-domain room and microphone on {100 * aug['room_p']:.0f}% of windows")
    if not aug.get("mixup_p"):
        parts.append("no mixup")
    if not rooms and not aug.get("room_p"):
        parts.append("no room/microphone simulation")
    return ", ".join(parts)


def _confusion(labels: list[str], matrix: list[list[int]]) -> list[str]:
    lines = ["| true \\ predicted | " + " | ".join(labels) + " |",
             "|---|" + "---|" * len(labels)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _teacher(run: RunRecord, train: dict[str, Any]) -> list[str]:
    t = run.get("teacher")
    if not t:
        return []
    return [
        f"Distilled from the pre-trained tagger `{t['teacher']}` (training/teacher.py: musicnn, "
        "J. Pons and X. Serra, ISMIR 2019 LBD, ISC licence, trained on the Million Song "
        "Dataset's last.fm tags; checkpoint sha1 "
        f"`{t['checkpoint_sha1']}`): a linear probe on its embeddings, fitted on the training "
        "tracks (cross-fitted in 5 folds for the training targets), gives soft targets, and "
        f"every training window's target is {1 - train.get('distill', 0):.2g} x its label + "
        f"{train.get('distill', 0):.2g} x the teacher (temperature "
        f"{train.get('distill_temperature', 1):g}). The teacher is not shipped and never runs "
        "on the device. Teacher probe track accuracy: val "
        f"{_pct(t.get('val_track_accuracy'))}, test {_pct(t.get('test_track_accuracy'))}. Like "
        "any tagger trained on a large commercial catalogue it may have heard some of these "
        "recordings (GTZAN's are commercial releases); the MagnaTagATune model is not used "
        "because it was trained on Magnatune music, where the Emotify excerpts come from.",
        "",
    ]


def _accuracy(ver: dict[str, Any], test: dict[str, Any]) -> list[str]:
    room = ver.get("in_room")
    head = "| | float (Keras) | int8 (TFLite, shipped) |"
    rule = "|---|---|---|"
    if room:
        head += " float, in rooms | int8, in rooms (shipped) |"
        rule += "---|---|"
    rows = [head, rule]
    row = (f"| window accuracy ({ver['windows']} windows) | {_pct(ver['float_window_accuracy'])} "
           f"| {_pct(ver['int8_window_accuracy'])} |")
    if room:
        row += f" {_pct(room['float_window_accuracy'])} | {_pct(room['int8_window_accuracy'])} |"
    rows.append(row)
    row = (f"| track accuracy, mean vote ({ver['tracks']} tracks"
           + (f"; {room['tracks']} renderings in rooms" if room else "") + ") | "
           f"{_pct(ver['float_track_accuracy'])} | {_pct(ver['int8_track_accuracy'])} |")
    if room:
        row += f" {_pct(room['float_track_accuracy'])} | {_pct(room['int8_track_accuracy'])} |"
    rows.append(row)
    row = f"| macro-F1 (tracks, float) | {test.get('macro_f1', 0):.3f} | |"
    if room and test.get("in_room"):
        row += f" {test['in_room'].get('macro_f1', 0):.3f} | |"
    rows.append(row)
    if "int8_window_ece" in ver:
        row = (f"| expected calibration error (windows) | {ver['float_window_ece']:.3f} "
               f"| {ver['int8_window_ece']:.3f} |")
        if room:
            row += f" {room['float_window_ece']:.3f} | {room['int8_window_ece']:.3f} |"
        rows.append(row)
    return rows


def _room_drop(ver: dict[str, Any]) -> str:
    """The float -> int8 drop in the held-out rooms, where the device listens."""
    room = ver.get("in_room") or {}
    if "track_drop_points" not in room:
        return ""
    return (f"; in rooms: track accuracy {room['track_drop_points']:+.2f} points, window "
            f"{room['window_drop_points']:+.2f} points, top-1 agreement {_pct(room['top1_agreement'])}")


def _rooms_note(ver: dict[str, Any]) -> list[str]:
    room = ver.get("in_room")
    if not room:
        return []
    c = room.get("conditions", {})

    def span(key: str, unit: str) -> str:
        lo, hi = c.get(key, [0, 0])
        return f"{lo:g}{unit}" if lo == hi else f"{lo:g}-{hi:g}{unit}"

    return [f"In rooms: every test track played through {room['per_track']} held-out simulated "
            f"rooms ({room['responses']} rooms none of which training saw; RT60 "
            f"{span('rt60_s', ' s')}, speaker-microphone distance {span('distance_m', ' m')}, "
            f"{room['noise']} noise at {span('snr_db', ' dB')} SNR, a "
            f"{span('mic_highpass_hz', ' Hz')}-{span('mic_lowpass_hz', ' Hz')} microphone, "
            f"{span('level_dbfs', ' dBFS')} RMS; `training/rooms.py`).", ""]


def _calibration(run: RunRecord, ver: dict[str, Any]) -> list[str]:
    cal = run.get("calibration")
    if not cal:
        return []
    refit = run.get("refit")
    if refit:
        return [f"Confidence is calibrated: the softmax temperature of {cal['temperature']:.2f} "
                f"fitted by run `{Path(refit['of']).name}` (the same recipe on the training tracks alone, on "
                "its validation windows) is folded into the last layer: this model trained on "
                "the validation tracks, so none is left to fit its own; test ECE in the table "
                "above.", ""]
    return [f"Confidence is calibrated: a softmax temperature of {cal['temperature']:.2f}, fitted "
            f"on {cal['windows']} validation windows ({cal['fitted_on']}), is folded into the "
            f"last layer (validation ECE {cal['val_ece_before']:.3f} -> {cal['val_ece_after']:.3f}); "
            "test ECE in the table above.", ""]


def _cross_source(cross: dict[str, Any]) -> list[str]:
    lines = ["## Across recording sources", "",
             "Classical, pop and rock come from both GTZAN and Emotify. Each row trains without "
             "one source's clips of those genres and tests on all of them: music the model never "
             "heard from a source it never heard (" + cross.get("recipe", "") + ").", "",
             *([cross["note"], ""] if cross.get("note") else []),
             "| held-out source | tracks | track accuracy | in-source (same genres, test split) |",
             "|---|---|---|---|"]
    for row in cross.get("rows", []):
        lines.append(f"| {row['source']} | {row['tracks']} | {_pct(row['track_accuracy'])} "
                     f"| {_pct(row.get('in_source_track_accuracy'))} |")
    return [*lines, ""]


def _members(run: Any) -> list[dict[str, Any]]:
    return list((run.get("ensemble") or {}).get("members") or [])


def _provenance(run: Any) -> str:
    members = _members(run)
    if not members:
        return (f"Seeded (seed {run.get('seed')}); trained on this project's CPU-only "
                f"workstation (2 cores) in {run.get('train_time_s', 0) / 60:.1f} min.")
    times = " and ".join(f"{float(m.get('train_time_s') or 0) / 60:.1f}" for m in members)
    return (f"An ensemble of {len(members)} training runs of one recipe (seeds "
            + ", ".join(str(m.get("seed")) for m in members)
            + f"), trained on this project's CPU-only workstation (2 cores) in {times} min, "
            "side by side (one TensorFlow thread each).")


def _best_epochs(run: Any) -> str:
    members = _members(run)
    if not members:
        return f"best epoch {run.get('best_epoch')}"
    return "best epochs " + ", ".join(str(m.get("best_epoch")) for m in members)


def _epoch_choice(run: Any, train: dict[str, Any]) -> str:
    refit = run.get("refit")
    if refit:
        val = refit.get("val_of_source") or {}
        return (f"the last epoch kept: a refit on the training and validation tracks "
                f"(`--train-on-val`) of run `{Path(refit['of']).name}`, whose validation chose the recipe "
                f"(best epoch {refit.get('source_best_epoch')}; validation track accuracy "
                f"{_pct(val.get('val_track_accuracy'))} clean"
                + (f", {_pct(val['val_room_track_accuracy'])} in rooms"
                   if "val_room_track_accuracy" in val else "") + ")")
    return (f"{_best_epochs(run)}, chosen on validation track accuracy"
            f"{', the mean of clean and in-room' if train.get('rooms') else ''}")


def _ensemble(run: Any) -> list[str]:
    members = _members(run)
    if not members:
        return []
    rows = []
    for m in members:
        v = m.get("val") or {}
        room = v.get("val_room_track_accuracy")
        rows.append(f"seed {m.get('seed')}: {_pct(v.get('val_track_accuracy', 0.0))}"
                    + (f" / {_pct(room)}" if room is not None else ""))
    v = run.get("val") or {}
    room = v.get("val_room_track_accuracy")
    return ["Ensemble (`python -m training.ensemble`): one graph holding every member; their "
            "pooled features side by side feed one dense layer whose output is the mean of the "
            "members' calibrated logits (one temperature refitted on validation). Validation "
            "track accuracy, clean / in rooms: " + "; ".join(rows) + f"; the ensemble "
            f"{_pct(v.get('val_track_accuracy', 0.0))}"
            + (f" / {_pct(room)}" if room is not None else "") + ".", ""]


def render(run_dir: Path, bundle_dir: Path, command: str) -> str:
    run = read_run(run_dir, need_model=False)
    test = json.loads((run_dir / "report.json").read_text())
    val_path = run_dir / "report-val.json"
    val = json.loads(val_path.read_text()) if val_path.is_file() else None
    splits = json.loads((run_dir / "splits.json").read_text()) if (run_dir / "splits.json").is_file() else {}
    bundle = load_bundle(bundle_dir)
    m = bundle.metrics
    ver = m["verification"]
    tpu = m["edgetpu"]
    quant = m["quantization"]
    labels = bundle.labels
    fe = bundle.frontend
    train = run.train

    counts = []
    for split in ("train", "val", "test"):
        tracks = splits.get(split) or []
        per = {g: 0 for g in labels}
        for t in tracks:
            g = t.get("label") if isinstance(t, dict) else t[-1]
            if g in per:
                per[g] += 1
        if tracks and any(per.values()):
            counts.append(f"| {split} | " + " | ".join(str(per[g]) for g in labels)
                          + f" | {sum(per.values())} |")
    lines = [
        f"# Model card: {bundle.name}",
        "",
        "The default model shipped with genre-edge (`firmware_py/models/default`): it classifies "
        "~3 s windows of music into " + ", ".join(labels) + "; the device averages and smooths the "
        "window probabilities (see the README).",
        "",
        "## Reproduce",
        "",
        "```sh",
        command,
        "```",
        "",
        _provenance(run) + f" Built from commit "
        f"`{bundle.provenance.get('commit')}` on {bundle.provenance.get('created')}.",
        "",
        "## Data",
        "",
        f"Genres {', '.join(labels)} of the project's real-music set (`shared/data/music`), with "
        "its manifest's track-level split (GTZAN rows follow the artist-filtered lists, so no GTZAN "
        "artist is in two splits; Emotify's, per genre 20% test and 10% val by a hash of the "
        "path): windows of one track "
        "never cross splits.",
        "",
    ]
    if counts:
        lines += ["| split | " + " | ".join(labels) + " | tracks |",
                  "|---|" + "---|" * (len(labels) + 1), *counts, ""]
    else:
        tr = run.get("tracks", {})
        lines += [f"Tracks: {tr.get('train')} train, {tr.get('val')} val, {tr.get('test')} test.", ""]
    lines += [
        "Sources and terms:", "", DATA_TERMS, "",
        "## Front-end and model",
        "",
        f"{'PCEN-mel' if fe.compression == 'pcen' else 'Log-mel'}: {fe.sample_rate} Hz mono, {fe.win_length}-sample {fe.window} window "
        f"({1000 * fe.win_length / fe.sample_rate:.0f} ms), hop {fe.hop_length} "
        f"({1000 * fe.hop_length / fe.sample_rate:.0f} ms), n_fft {fe.n_fft}, {fe.n_mels} mel bands "
        f"{fe.fmin:g}-{fe.fmax:g} Hz, "
        f"{'per-channel energy normalisation' if fe.compression == 'pcen' else 'power in dB'}; model window {fe.window_frames} frames "
        f"({fe.window_s:.2f} s), inference every {bundle.inference_hop_s:g} s.",
        "",
        f"Architecture `{run.get('arch')}` (training/models.py): {run.get('parameters', 0):,} "
        f"parameters; int8 TFLite {quant['model_bytes'] / 1024:.1f} KB (weights per channel, "
        f"int8 activations, int8 input and output), calibrated on "
        f"{quant['representative_windows']} real training windows. Training: up to "
        f"{train.get('epochs')} epochs ({_epoch_choice(run, train)}), batch {train.get('batch_size')}, {train.get('crops_per_track')} random "
        f"crops per track per epoch; augmentation: {_augmentation(train.get('augment') or {}, train)}.",
        "",
        *_ensemble(run),
        *_teacher(run, train),
        "## Accuracy (held-out test split: clean files and in held-out rooms)",
        "",
        *_accuracy(ver, test),
        "",
        f"float -> int8 drop (float minus int8): track accuracy {ver['track_drop_points']:+.2f} points, window "
        f"{ver['window_drop_points']:+.2f} points; top-1 agreement {_pct(ver['top1_agreement'])}; "
        f"probability difference max {ver['max_prob_diff']:.3f}, mean {ver['mean_prob_diff']:.4f}"
        + _room_drop(ver) + ".",
        "",
        *_rooms_note(ver),
        *_calibration(run, ver),
    ]
    if val:
        room = val.get("in_room")
        lines += [f"Validation split ({val['tracks']} tracks): window {_pct(val['window_accuracy'])}, "
                  f"track {_pct(val['track_accuracy_mean_vote'])} (float)"
                  + (f"; in rooms: window {_pct(room['window_accuracy'])}, track "
                     f"{_pct(room['track_accuracy_mean_vote'])}" if room else "") + ".", ""]
    lines += ["Per class (int8, clean tracks, rows true):", "",
              *_confusion(labels, ver["int8_track_confusion"]), ""]
    per = test.get("per_class") or {}
    room_per = (test.get("in_room") or {}).get("per_class") or {}
    if per:
        lines += ["| genre | test tracks | precision | recall | F1 | in-room recall |",
                  "|---|---|---|---|---|---|"]
        for g in labels:
            c = per.get(g, {})
            r = room_per.get(g)
            room_cell = f"{r['recall']:.2f}" if r else "–"
            lines.append(f"| {g} | {c.get('support', 0)} | {c.get('precision', 0):.2f} "
                         f"| {c.get('recall', 0):.2f} | {c.get('f1', 0):.2f} | {room_cell} |")
        lines.append("(float Keras model; some genres have 2-4 test tracks: one track is 25-50 "
                     "points of their recall.)")
        lines.append("")
    cross = run_dir / "cross_source.json"
    if cross.is_file():
        lines += _cross_source(json.loads(cross.read_text()))
    lines += [
        "## Coral Edge TPU",
        "",
        f"{tpu['summary']} (graph walk against the Edge TPU's supported-operations rules, "
        "`genre-edge edgetpu-check`). "
        + ("Compiled model included." if tpu.get("compiled") else
           "Not compiled here (no `edgetpu_compiler` on this machine): " + tpu.get("note", "")),
        "",
        "## Limits",
        "",
        f"- {len(labels)} genres; anything else is forced into one of them (the device "
        "publishes `unknown` when no genre is confident).",
        "- The rooms are simulated (image sources plus a statistical tail, synthetic household "
        "noise): no measured room or real microphone was available here. Measure your own "
        "room with `genre-edge evaluate RUN --rir-dir DIR --noise-dir DIR`.",
        "- Two recording sources (GTZAN, Emotify); music from elsewhere is scored by the "
        "cross-source figures above, not by the test split.",
        "- Small test split (2-47 tracks per genre): a track is worth 2-50 points of per-class "
        "accuracy.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m converter.model_card")
    p.add_argument("run")
    p.add_argument("bundle")
    p.add_argument("--command", default="make default-model", help="the reproduce command to quote")
    args = p.parse_args(argv)
    text = render(Path(args.run), Path(args.bundle), args.command)
    (Path(args.bundle) / "MODEL_CARD.md").write_text(text)
    print(f"wrote {Path(args.bundle) / 'MODEL_CARD.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
