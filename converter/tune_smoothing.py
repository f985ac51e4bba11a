"""Tune the smoother on real music: ``python -m converter.tune_smoothing BUNDLE --data DIR``.

The two targets pull against each other: few changes while one genre plays (steady
music), and a quick follow when the genre really changes. This plays held-out clips of
the manifest's ``--split`` (default ``val``: never tune on test) through the bundle's
int8 model exactly as ``listen`` would (the window probabilities of back-to-back clips,
straddling windows included) and, for every point of a small grid of smoothing knobs,
measures:

* ``changes_per_10min``: published changes after the first lock, over >= minutes of
  music of one genre (the clips of each genre the model classifies right at track
  level, played back to back; the smoother cannot fix a wrong model);
* ``follow_6s``: the share of genre changes (pairs of such clips of two genres)
  published within 6 s of the boundary, and the median delay;
* ``follow_6s_ceiling``: the share of those changes in which the model itself puts the
  new genre on top in at least one window ending within 6 s of the boundary. A smoother
  that publishes only what the model votes for cannot do much better (its averages
  could in principle lift a genre that no single window puts first): the part of the
  follow goal that is the model's, not the smoother's.

Clips are joined with hard cuts (a DJ mix: the hardest case for steadiness and the one
the figures have always been measured on). ``--gaps`` joins them as a player does instead:
each clip fades out over ``FADE_OUT_S``, then ``PAUSE_S`` of silence (in a room: the room's
noise and reverberation), and the next one fades in over ``FADE_IN_S``; the smoother gets
each hop's level as ``listen`` measures it, so its pause rule (``gap_dip_db``) sees them.

It prints the Pareto front and the point it recommends (fewest changes among those
within 1 point of the best ``follow_6s`` that keep <= 1 change per 10 minutes, else
the best trade-off), as ``[smoothing]`` TOML.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.audio import load_audio
from firmware_py.bundle import load_bundle
from firmware_py.classify import window_levels_dbfs
from firmware_py.features import logmel, windows
from firmware_py.smoothing import SmoothingParams, run_smoother

#: The follow goal: a real genre change published within this many seconds.
FOLLOW_S = 6.0

#: How clips are joined into a stream of songs (seconds): fade-out, pause, fade-in.
FADE_OUT_S, PAUSE_S, FADE_IN_S = 1.0, 1.5, 0.5

GRID: dict[str, list[Any]] = {
    # eleven genres: the model's in-song error streaks last 10-30 windows, so steadiness needs
    # more windows that agree (up to 6 of 6) and a larger surprise for the quick path
    "average_windows": [3, 4, 6],
    "enter_threshold": [0.3, 0.4],
    "min_top_windows": [2, 3, 4],
    "surprise_margin": [0.6, 0.7, 0.8],
    "segment_windows": [20, 40, 80],
    "min_dwell_s": [3.0],
    "leave_threshold": [0.1, 0.25],
    # the pause rule stays off (gap_dip_db 0): at 10 dB it cut the changes with player gaps
    # (test: 1.69 -> 0.73 per 10 min clean), but classical's quiet passages dip as deep as a
    # pause, so its windows were dropped and rock -> classical took 20 s longer through the
    # device pipeline; its quick path (gap_follow_s) let the model's start-of-song mistakes
    # through in rooms (validation with gaps: 0.86 -> 4.3 changes per 10 min)
    "gap_dip_db": [0.0],
    "gap_follow_s": [0.0],
}


def window_probs(bundle: Any, model: Any, audio: np.ndarray) -> np.ndarray:
    """The model's probabilities for every window of ``audio`` at the bundle's hop."""
    fe = bundle.frontend
    return model.predict_many(windows(logmel(audio, fe), fe.window_frames, bundle.inference_hop_frames))


def as_song(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` faded in and out (raised cosine), followed by the pause before the next song."""
    out = np.asarray(audio, dtype=np.float32).copy()
    n_in, n_out = (min(int(s * sample_rate), out.shape[0] // 2) for s in (FADE_IN_S, FADE_OUT_S))
    if n_in:
        out[:n_in] *= (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_in))).astype(np.float32)
    if n_out:
        out[-n_out:] *= (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n_out))).astype(np.float32)
    return np.concatenate([out, np.zeros(int(PAUSE_S * sample_rate), dtype=np.float32)])


def in_room(audio: np.ndarray, track_id: str, split: str, sample_rate: int) -> np.ndarray:
    """``audio`` heard in the held-out rooms of ``split`` (the first condition drawn for the
    track: the same rendering the in-room evaluation uses)."""
    from training.dataset import default_cache_dir
    from training.rooms import render, room_set

    rooms = room_set("val" if split == "val" else "test", sample_rate, default_cache_dir())
    cond = rooms.conditions(1, salt=track_id)[0]
    return render(audio, sample_rate, cond, rooms.rirs[cond.rir], rooms.noises)


#: What the forked workers of prepare() and search() read (set just before they fork,
#: cleared after).
_SHARED: dict[str, Any] = {}


def _worker_model() -> Any:
    """This process's interpreter: one per forked worker (an interpreter is not shared)."""
    if "model" not in _SHARED or _SHARED.get("pid") != os.getpid():
        _SHARED["model"], _SHARED["pid"] = _SHARED["bundle"].open_model(), os.getpid()
    return _SHARED["model"]


def _prepare_clip(i: int) -> tuple[str, np.ndarray, bool]:
    """Clip ``i`` of the split as the smoother will hear it, and whether the model gets it
    right at track level (on the clip itself, not its pause)."""
    bundle, music, r = _SHARED["bundle"], _SHARED["music"], _SHARED["rows"][i]
    sr = bundle.frontend.sample_rate
    clip = load_audio(music / r["path"], sr)
    length = clip.shape[0]
    audio = as_song(clip, sr) if _SHARED["gaps"] else clip
    if _SHARED["rooms"]:
        audio = in_room(audio, Path(r["path"]).with_suffix("").as_posix(), _SHARED["split"], sr)
    probs = window_probs(bundle, _worker_model(), audio[:length])
    return r["genre"], audio, bundle.labels[int(probs.mean(0).argmax())] == r["genre"]


def _prepare_stream(parts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Window probabilities and each window's newest-hop level (what listen measures) of the
    correct clips ``parts`` played back to back."""
    bundle = _SHARED["bundle"]
    fe = bundle.frontend
    audio = np.concatenate([_SHARED["audio"][k] for k in parts])
    probs = window_probs(bundle, _worker_model(), audio)
    hop_samples = bundle.inference_hop_frames * fe.hop_length
    win_samples = int(round(fe.window_s * fe.sample_rate))
    return probs, window_levels_dbfs(audio, probs.shape[0], hop_samples, win_samples)


def _pool_size(workers: int) -> int:
    """``--workers``: 0 is one per core."""
    return workers or os.cpu_count() or 1


def _forked_map(fn: Any, items: list[Any], workers: int, chunksize: int = 1) -> list[Any]:
    """``[fn(x) for x in items]``, shared between ``workers`` forked processes (in order;
    0: one per core). Unlike the training's pools it forks even where TensorFlow is loaded
    (``training.forking.fork_is_safe`` would say no): the children run numpy, the room
    renderer and LiteRT, never TensorFlow, so they take none of its locks. The tests rely
    on it: under pytest TensorFlow is loaded, and they compare forked with serial."""
    n = min(_pool_size(workers), len(items))
    if n <= 1 or "fork" not in mp.get_all_start_methods():
        return [fn(x) for x in items]
    with ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(fn, items, chunksize=chunksize))


def prepare(bundle_dir: str, data: str, split: str, pairs_per_genre_pair: int = 3,
            rooms: bool = False, gaps: bool = False, workers: int = 0,
            max_per_genre: int | None = None) -> dict[str, Any]:
    """Window probabilities and hop levels of the split's clips, steady and in pairs;
    ``rooms``: each clip as heard in a held-out room (the device's case) instead of the
    clean file; ``gaps``: songs joined by a fade and a pause (else hard cuts);
    ``workers`` forked processes (0: one per core) share the clips and the streams, each
    with its own interpreter, so the figures are the serial ones; ``max_per_genre``: only
    the first clips of each genre (a quick look)."""
    bundle = load_bundle(bundle_dir)
    music = Path(data)
    with open(music / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split and r["genre"] in bundle.labels]
    if max_per_genre is not None:
        seen: Counter[str] = Counter()
        kept = []
        for r in rows:
            seen[r["genre"]] += 1
            if seen[r["genre"]] <= max_per_genre:
                kept.append(r)
        rows = kept
    _SHARED.update(bundle=bundle, music=music, rows=rows, gaps=gaps, rooms=rooms, split=split)
    try:
        tracks = _forked_map(_prepare_clip, list(range(len(rows))), workers)
        correct = [(g, a) for g, a, right in tracks if right]
        _SHARED["audio"] = [a for _, a in correct]
        by_genre = {g: [k for k, (gg, _) in enumerate(correct) if gg == g] for g in bundle.labels}
        steady_genres = [g for g in bundle.labels if by_genre[g]]
        pair_specs = []
        for g1, g2 in itertools.permutations(bundle.labels, 2):
            for k in range(min(pairs_per_genre_pair, len(by_genre[g1]), len(by_genre[g2]))):
                pair_specs.append((g1, g2, by_genre[g1][k], by_genre[g2][k]))
        jobs = [tuple(by_genre[g]) for g in steady_genres] + [(i, j) for _, _, i, j in pair_specs]
        streams = _forked_map(_prepare_stream, jobs, workers)
    finally:
        _SHARED.clear()
    steady = dict(zip(steady_genres, streams[: len(steady_genres)], strict=True))
    pairs = []
    for (g1, g2, i, _j), stream in zip(pair_specs, streams[len(steady_genres):], strict=True):
        boundary_s = correct[i][1].shape[0] / bundle.frontend.sample_rate  # the next song begins
        pairs.append((g1, g2, boundary_s, *stream))
    return {"bundle": bundle, "labels": bundle.labels, "steady": steady, "pairs": pairs,
            "tracks": len(tracks), "correct": len(correct), "gaps": gaps}


def evaluate(data: dict[str, Any], params: SmoothingParams) -> dict[str, float]:
    labels = data["labels"]
    bundle = data["bundle"]
    t0 = bundle.frontend.window_s
    hop_s = bundle.framed_inference_hop_s
    changes = 0
    minutes = 0.0
    for g, (probs, levels) in data["steady"].items():
        states = run_smoother(labels, probs, levels, params=params, inference_hop_s=hop_s,
                              window_s=t0, t0_s=t0)
        first = next((i for i, s in enumerate(states) if s.genre == g), None)
        if first is None:
            changes += 10
            continue
        changes += sum(s.changed for s in states[first + 1 :])
        minutes += len(probs) * hop_s / 60
    delays, reachable = [], []
    for _g1, g2, boundary_s, probs, levels in data["pairs"]:
        states = run_smoother(labels, probs, levels, params=params, inference_hop_s=hop_s,
                              window_s=t0, t0_s=t0)
        follow = next((s.t_s for s in states if s.t_s > boundary_s and s.genre == g2), None)
        delays.append(np.inf if follow is None else follow - boundary_s)
        ends_s = t0 + np.arange(len(probs)) * hop_s  # when each window is complete
        soon = (ends_s > boundary_s) & (ends_s <= boundary_s + FOLLOW_S)
        reachable.append(bool(np.any(np.argmax(probs[soon], axis=1) == labels.index(g2))))
    d = np.array(delays)
    return {
        "changes_per_10min": changes / max(minutes, 1e-9) * 10,
        "follow_6s": float(np.mean(d <= FOLLOW_S)) if d.size else float("nan"),
        "follow_30s": float(np.mean(d <= 30.0)) if d.size else float("nan"),
        "follow_90s": float(np.mean(d <= 90.0)) if d.size else float("nan"),
        "follow_6s_ceiling": float(np.mean(reachable)) if reachable else float("nan"),
        "median_delay_s": float(np.median(d)) if d.size else float("nan"),
        "minutes": minutes,
        "pairs": int(d.size),
    }


def _evaluate_point(i: int) -> dict[str, float]:
    return evaluate(_SHARED["data"], _SHARED["points"][i][1])


def grid_points(grid: dict[str, list[Any]] = GRID) -> list[tuple[dict, SmoothingParams]]:
    """The grid's valid points, in grid order, with their smoothing settings."""
    out = []
    base = SmoothingParams()
    keys = list(grid)
    for values in itertools.product(*grid.values()):
        knobs = dict(zip(keys, values, strict=True))
        if knobs["min_top_windows"] > knobs["average_windows"]:
            continue
        try:
            params = params_for(base, knobs)
        except Exception:  # noqa: BLE001 - an invalid combination: skip it
            continue
        out.append((knobs, params))
    return out


def search(data: dict[str, Any], grid: dict[str, list[Any]] = GRID,
           workers: int = 0) -> list[tuple[dict, dict]]:
    """Every grid point's figures, in grid order. ``workers`` processes (0: one per core)
    share the points; each forks with ``data`` in its memory, so nothing large is copied,
    and the figures are the serial search's exactly (the same code on the same numbers)."""
    points = grid_points(grid)
    n = _pool_size(workers)
    _SHARED.update(data=data, points=points)
    try:
        metrics = _forked_map(_evaluate_point, list(range(len(points))), n,
                              chunksize=max(1, len(points) // (8 * n)))
    finally:
        _SHARED.clear()
    return [(knobs, m) for (knobs, _), m in zip(points, metrics, strict=True)]


def params_for(base: SmoothingParams, knobs: dict[str, Any]) -> SmoothingParams:
    """``base`` with a grid point's knobs; the leave and unknown thresholds never above the
    enter threshold (eleven genres share the probability: a top genre at 0.3 is common)."""
    knobs = dict(knobs)
    enter = knobs["enter_threshold"]
    leave = min(knobs.pop("leave_threshold", base.leave_threshold), enter)
    return base.replace(**knobs, leave_threshold=leave,
                        unknown_threshold=min(base.unknown_threshold, round(0.75 * enter, 4)))


def write_smoothing(bundle_dir: str, params: SmoothingParams) -> None:
    """Store ``params`` as the bundle's smoothing defaults (manifest.json, atomically);
    the bundle must load afterwards."""
    import json
    import os

    path = Path(bundle_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["smoothing"] = params.to_dict()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)
    load_bundle(bundle_dir)


def pareto(results: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    ordered = sorted(results, key=lambda r: (-r[1]["follow_6s"], r[1]["changes_per_10min"]))
    front, best = [], float("inf")
    for r in ordered:
        if r[1]["changes_per_10min"] < best:
            best = r[1]["changes_per_10min"]
            front.append(r)
    return front


def combine(clean: list[tuple[dict, dict]], room: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """One result per grid point that must hold clean and in-room: the worse change rate,
    the mean follow share and median delay (both conditions weigh the same)."""
    out = []
    for (knobs, a), (knobs_b, b) in zip(clean, room, strict=True):
        assert knobs == knobs_b
        out.append((knobs, {
            "changes_per_10min": max(a["changes_per_10min"], b["changes_per_10min"]),
            "follow_6s": 0.5 * (a["follow_6s"] + b["follow_6s"]),
            "median_delay_s": 0.5 * (a["median_delay_s"] + b["median_delay_s"]),
            "clean": a, "in_room": b}))
    return out


def recommend(results: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    ok = [r for r in results if r[1]["changes_per_10min"] <= 1.0]
    if ok:
        top = max(r[1]["follow_6s"] for r in ok)
        near = [r for r in ok if r[1]["follow_6s"] >= top - 0.01]
        return min(near, key=lambda r: (r[1]["changes_per_10min"], r[1]["median_delay_s"]))
    return max(results, key=lambda r: r[1]["follow_6s"] - 0.1 * r[1]["changes_per_10min"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m converter.tune_smoothing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--data", required=True, help="the real-music folder holding manifest.csv")
    p.add_argument("--split", default="val", help="clips to tune on (default val; never test)")
    p.add_argument("--write", action="store_true",
                   help="store the recommended settings as the bundle's smoothing defaults")
    p.add_argument("--no-rooms", action="store_true",
                   help="tune on clean files only (default: clean and in held-out rooms, "
                        "both must hold)")
    p.add_argument("--gaps", action="store_true",
                   help="join the clips as a player does, with a fade and a pause between "
                        "songs (default: hard cuts)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that share the clips and the grid search (default 0: one per core)")
    args = p.parse_args(argv)
    refit_of = load_bundle(args.bundle).provenance.get("refit_of")
    if refit_of and args.split != "test":
        raise SystemExit(f"error: {args.bundle}'s model trained on the {args.split} tracks too "
                         f"(a refit of run {refit_of}, --train-on-val): tune on that run's "
                         "bundle and copy its [smoothing], which this tuner cannot do for you")
    if args.workers < 0:
        p.error(f"--workers {args.workers}: give 0 (one per core) or a positive count")
    conditions = {"clean": False} if args.no_rooms else {"clean": False, "in-room": True}
    per = {}
    for name, rooms in conditions.items():
        t0 = time.time()
        data = prepare(args.bundle, args.data, args.split, rooms=rooms, gaps=args.gaps,
                       workers=args.workers)
        print(f"{args.split} ({name}): {data['correct']} of {data['tracks']} clips classified "
              f"right; {sum(len(v[0]) for v in data['steady'].values()) / 60:.1f} min of steady "
              f"music, {len(data['pairs'])} genre changes ({time.time() - t0:.0f} s)", file=sys.stderr)
        base = evaluate(data, SmoothingParams())
        print(f"current defaults ({name}): {base}")
        print(f"the model puts the new genre on top within {FOLLOW_S:g} s in "
              f"{100 * base['follow_6s_ceiling']:.0f}% of the changes ({name}): the follow "
              "share no smoother of its votes can much exceed")
        t0 = time.time()
        per[name] = search(data, workers=args.workers)
        print(f"searched {len(per[name])} grid points ({name}) in {time.time() - t0:.0f} s "
              f"with {_pool_size(args.workers)} workers", file=sys.stderr)
    results = per["clean"] if args.no_rooms else combine(per["clean"], per["in-room"])
    print("Pareto front (follow within 6 s vs changes per 10 min of one genre):")
    for knobs, m in pareto(results):
        print(f"  follow {100 * m['follow_6s']:5.1f}%  median {m['median_delay_s']:5.1f} s  "
              f"changes {m['changes_per_10min']:5.2f}/10 min  {knobs}")
    knobs, m = recommend(results)
    print(f"recommended: {m}")
    chosen = params_for(SmoothingParams(), knobs)
    print("[smoothing]")
    for k, v in chosen.to_dict().items():
        print(f"{k} = {v}")
    if args.write:
        write_smoothing(args.bundle, chosen)
        print(f"wrote the [smoothing] defaults into {Path(args.bundle) / 'manifest.json'}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
