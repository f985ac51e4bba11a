"""Datasets: track discovery, track-level splits, the on-disk feature cache, windows.

A *track* is one audio file with one genre label. Everything that decides train /
val / test membership works on tracks, never on windows, so the windows of one track
can never end up in two splits.

Sources of tracks
-----------------
* a folder-per-genre tree (``DATA/<genre>/**/<file>.{wav,flac,ogg,opus,mp3,au}``);
  GTZAN's ``genres/<genre>/<genre>.000NN.wav`` layout works as is;
* a manifest CSV (``path,genre[,split]``; paths relative to the data folder), picked
  up automatically when ``DATA/manifest.csv`` exists.

Splits
------
* ``manifest``: the manifest's ``split`` column (the default when it has one);
* ``random``: seeded, stratified per genre (default 10 % val, 20 % test);
* a named, shipped split such as ``gtzan-filtered`` (``training/splits/<name>.<part>.txt``).

Feature cache
-------------
Decoding, resampling and ``firmware_py.features.logmel`` run once per track; the
``(frames, n_mels)`` float32 dB array is stored as ``<cache>/<key>/<id>.npy`` where
``key`` is :func:`cache_key` (the front-end digest) and ``id`` is the
file name and a hash of its bytes, so an edited file is decoded again
(:mod:`training.cache`, re-exported here).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.audio import AUDIO_SUFFIXES
from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .cache import (
    CacheStats,
    Track,
    build_cache,
    cache_entry_ok,
    cache_file,
    cache_key,
    default_cache_dir,
    load_cached,
    progress_bar,
    save_npy_atomic,
)
from .runfolder import RunRecord, read_run
from .windows import eval_windows, pad_to, random_crops

__all__ = [
    "AUDIO_SUFFIXES", "MIN_TRACKS_PER_GENRE", "SPLITS", "SPLITS_FILE", "CacheStats",
    "DatasetSpec", "Entry", "Track", "assign_splits", "build_cache", "cache_entry_ok",
    "cache_file", "cache_key", "check_disjoint", "default_cache_dir", "eval_windows",
    "find_manifest", "load_cached", "load_run_splits", "named_splits", "pad_to",
    "prepare_dataset", "progress_bar", "random_crops", "read_track_manifest", "save_npy_atomic",
    "scan_tree", "select_genres", "to_tracks", "write_run_splits",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "dev": "val", "test": "test", "testing": "test"}
#: How many tracks a genre needs for a seeded random split (one per split at least).
MIN_TRACKS_PER_GENRE = 3


# -- discovery ------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """A discovered file before labels are assigned: relative id, genre, path, split hint."""

    track_id: str
    genre: str
    path: Path
    split: str | None = None


def find_manifest(data_dir: Path, manifest: str | Path | None) -> Path | None:
    """The manifest to use: the given one, else ``DATA/manifest.csv`` if present."""
    if manifest:
        m = Path(manifest).expanduser()
        if not m.is_file():
            raise GenreEdgeError(f"manifest not found: {m}: check --manifest")
        return m.resolve()
    auto = data_dir / "manifest.csv"
    return auto.resolve() if auto.is_file() else None


def _track_id(rel: Path) -> str:
    return rel.with_suffix("").as_posix()


def scan_tree(data_dir: Path) -> list[Entry]:
    """Folder-per-genre tree: every audio file below ``DATA/<genre>/``."""
    entries = []
    for genre_dir in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(genre_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES:
                entries.append(Entry(_track_id(f.relative_to(data_dir)), genre_dir.name, f))
    if not entries:
        raise GenreEdgeError(
            f"no audio files found under {data_dir}/<genre>/: give a folder with one "
            "sub-folder per genre (e.g. GTZAN's genres/) or a --manifest"
        )
    return entries


def read_track_manifest(data_dir: Path, manifest: Path) -> list[Entry]:
    """Rows ``path,genre[,split]``; paths relative to ``data_dir``."""
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"path", "genre"} <= cols:
            raise GenreEdgeError(
                f"manifest {manifest} needs 'path' and 'genre' columns (has {sorted(cols)}): fix its header"
            )
        entries = []
        for row in reader:
            rel = Path(row["path"])
            split = row.get("split") or None
            if split is not None:
                if split.lower() not in _SPLIT_ALIASES:
                    raise GenreEdgeError(
                        f"manifest {manifest}: unknown split '{split}' for {rel}: use train, val or test"
                    )
                split = _SPLIT_ALIASES[split.lower()]
            entries.append(Entry(_track_id(rel), row["genre"], data_dir / rel, split))
    if not entries:
        raise GenreEdgeError(f"manifest {manifest} has no rows: add path,genre rows")
    return entries


def select_genres(
    entries: Sequence[Entry], genres: Sequence[str] | None, min_clips: int | None
) -> list[str]:
    """Genres to train on, sorted: ``genres`` as given, or all with >= ``min_clips`` clips."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.genre] = counts.get(e.genre, 0) + 1
    if genres:
        unknown = [g for g in genres if g not in counts]
        if unknown:
            raise GenreEdgeError(
                f"unknown genre(s) {', '.join(unknown)}: the data has {', '.join(sorted(counts))}"
            )
        if len(set(genres)) != len(genres):
            raise GenreEdgeError("--genres lists a genre twice: give each genre once")
        chosen = sorted(genres)
    else:
        chosen = sorted(g for g, n in counts.items() if n >= (min_clips or 0))
    if len(chosen) < 2:
        raise GenreEdgeError(
            f"need at least 2 genres, got {len(chosen)} ({', '.join(chosen) or 'none'}): "
            "lower --min-clips or list more --genres"
        )
    return chosen


# -- splits ---------------------------------------------------------------------------
def named_splits() -> list[str]:
    """Names of the shipped splits (``training/splits/<name>.<part>.txt``)."""
    folder = resources.files("training") / "splits"
    names = {p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith(".txt")}
    return sorted(names)


def _named_split_lists(name: str) -> dict[str, set[str]]:
    folder = resources.files("training") / "splits"
    lists = {}
    for part in SPLITS:
        f = folder / f"{name}.{part}.txt"
        if not f.is_file():
            raise GenreEdgeError(
                f"unknown split '{name}': use manifest, random or one of {', '.join(named_splits())}"
            )
        lists[part] = {_gtzan_key(line) for line in f.read_text().split() if line.strip()}
    return lists


def _gtzan_key(name: str) -> str:
    """``blues/blues.00012.wav`` -> ``blues.00012``: layout- and extension-independent."""
    stem = Path(name).name
    for ext in AUDIO_SUFFIXES:
        if stem.lower().endswith(ext):
            return stem[: -len(ext)]
    return stem


def assign_splits(
    entries: Sequence[Entry], split: str, *, seed: int, val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> dict[str, list[Entry]]:
    """Put every track in exactly one of train / val / test.

    Parameters
    ----------
    entries : sequence of Entry
        Tracks of the chosen genres.
    split : str
        ``manifest``, ``random`` or a shipped split name (``gtzan-filtered``).
    seed : int
        Seed of the random split (ignored otherwise).
    val_fraction, test_fraction : float
        Fractions of each genre's tracks for the random split.
    """
    out: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    if split == "manifest":
        missing = [e.track_id for e in entries if e.split is None]
        if missing:
            raise GenreEdgeError(
                f"--split manifest needs a 'split' column for every row ({len(missing)} rows "
                f"lack one, e.g. {missing[0]}): fill it in or use --split random"
            )
        for e in entries:
            out[e.split].append(e)
    elif split == "random":
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise GenreEdgeError("--val-fraction and --test-fraction must be in (0, 1) with a sum < 1")
        by_genre: dict[str, list[Entry]] = {}
        for e in entries:
            by_genre.setdefault(e.genre, []).append(e)
        for genre in sorted(by_genre):
            group = sorted(by_genre[genre], key=lambda e: e.track_id)
            n = len(group)
            if n < MIN_TRACKS_PER_GENRE:
                raise GenreEdgeError(
                    f"genre '{genre}' has {n} track(s), too few for a train/val/test split "
                    f"(need {MIN_TRACKS_PER_GENRE}): add tracks or leave it out with --genres / --min-clips"
                )
            # One generator per genre, seeded by (seed, genre): adding a genre does not
            # reshuffle the others.
            gseed = int.from_bytes(hashlib.sha256(f"{seed}:{genre}".encode()).digest()[:8], "little")
            order = np.random.default_rng(gseed).permutation(n)
            n_test = max(1, round(test_fraction * n))
            n_val = max(1, round(val_fraction * n))
            for rank, idx in enumerate(order):
                part = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
                out[part].append(group[idx])
    else:
        lists = _named_split_lists(split)
        for e in entries:
            key = _gtzan_key(e.path.name)
            for part in SPLITS:
                if key in lists[part]:
                    out[part].append(e)
                    break
        listed = sum(len(v) for v in lists.values())
        found = sum(len(v) for v in out.values())
        if found == 0:
            raise GenreEdgeError(
                f"none of the files match split '{split}' (it lists GTZAN names like "
                "blues/blues.00012.wav): point --data at a full GTZAN genres/ folder"
            )
        if found < listed:
            log.info("split %s: %d of its %d listed files are in the data", split, found, listed)
        unlisted = sorted({e.genre for e in entries} - {e.genre for e in out["train"]})
        if unlisted:
            raise GenreEdgeError(
                f"split '{split}' has no training tracks of {', '.join(unlisted)} (it lists "
                f"GTZAN files only): leave {'them' if len(unlisted) > 1 else 'it'} out with "
                "--genres, or use --split random"
            )
    for part in SPLITS:
        out[part].sort(key=lambda e: e.track_id)
        if not out[part]:
            raise GenreEdgeError(
                f"the {part} split is empty: too few tracks for a split; add tracks or change --split"
            )
    return out


# -- the dataset spec that a run stores -------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to rebuild a run's splits (stored in ``run.json`` as ``dataset``)."""

    data_dir: str
    manifest: str | None
    genres: tuple[str, ...]
    split: str
    seed: int
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["genres"] = list(self.genres)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["genres"] = tuple(kw.get("genres") or ())
        return cls(**kw)


def _looks_like_gtzan(entries: Sequence[Entry]) -> bool:
    """Most files are named like GTZAN's and listed by the artist-filtered split."""
    if not entries:
        return False
    lists = _named_split_lists("gtzan-filtered")
    listed = set().union(*lists.values())
    return sum(_gtzan_key(e.path.name) in listed for e in entries) >= 0.5 * len(entries)


def prepare_dataset(
    data_dir: str | Path,
    *,
    manifest: str | Path | None = None,
    genres: Sequence[str] | None = None,
    min_clips: int | None = None,
    split: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> tuple[DatasetSpec, dict[str, list[Entry]]]:
    """Discover tracks, choose genres and split them by track.

    Returns the spec (for ``run.json``) and the entries of each split. ``split``
    defaults to ``manifest`` when the manifest has a split column, else ``random``.
    """
    data = Path(data_dir).expanduser()
    if not data.is_dir():
        raise GenreEdgeError(f"data folder not found: {data}: check --data")
    data = data.resolve()
    man = find_manifest(data, manifest)
    entries = read_track_manifest(data, man) if man else scan_tree(data)
    chosen = select_genres(entries, genres, min_clips)
    entries = [e for e in entries if e.genre in chosen]
    if split is None:
        split = "manifest" if man and all(e.split for e in entries) else "random"
        if split == "random" and _looks_like_gtzan(entries):
            log.warning("this looks like GTZAN: a random split puts one artist's songs in "
                        "training and test (10+ points too optimistic); pass --split "
                        "gtzan-filtered for the artist-filtered split")
    if split == "manifest" and man is None:
        raise GenreEdgeError("--split manifest needs a manifest: pass --manifest or use --split random")
    missing = [e for e in entries if not e.path.is_file()]
    if missing:
        raise GenreEdgeError(
            f"{len(missing)} listed file(s) are missing, e.g. {missing[0].path}: "
            "check --data (manifest paths are relative to it)"
        )
    parts = assign_splits(entries, split, seed=seed, val_fraction=val_fraction,
                          test_fraction=test_fraction)
    spec = DatasetSpec(str(data), str(man) if man else None, tuple(chosen), split, seed,
                       val_fraction, test_fraction)
    return spec, parts


def to_tracks(
    parts: dict[str, list[Entry]], labels: Sequence[str], frontend: FrontendParams,
    cache_dir: Path,
) -> dict[str, list[Track]]:
    """Entries -> :class:`Track` objects with label indices into ``labels``."""
    index = {g: i for i, g in enumerate(labels)}
    return {
        part: [Track(e.track_id, index[e.genre], e.genre, e.path, frontend, Path(cache_dir))
               for e in entries]
        for part, entries in parts.items()
    }


def check_disjoint(splits: dict[str, Sequence[Track]] | dict[str, Sequence[Entry]]) -> None:
    """Raise if any track (by id or by file) is in two splits."""
    seen: dict[str, str] = {}
    for part, items in splits.items():
        for t in items:
            for key in (t.track_id, str(Path(t.path).resolve())):
                other = seen.setdefault(key, part)
                if other != part:
                    raise GenreEdgeError(f"track {t.track_id} is in both {other} and {part}: fix the split lists")


# -- runs (the converter's entry point) -------------------------------------------------
SPLITS_FILE = "splits.json"


def write_run_splits(run_dir: Path, splits: dict[str, Sequence[Track]]) -> None:
    """Store the exact track lists of a run (``RUN/splits.json``)."""
    data = {part: [[t.track_id, str(t.path), t.genre] for t in tracks]
            for part, tracks in splits.items()}
    (Path(run_dir) / SPLITS_FILE).write_text(json.dumps(data, indent=0) + "\n")


def load_run_splits(run: RunRecord | str | Path) -> dict[str, list[Track]]:
    """The train / val / test tracks of a finished run, as they were when it trained.

    Parameters
    ----------
    run : RunRecord, str or Path
        The run (:func:`~training.runfolder.read_run`), or its ``--out`` folder.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` lists of :class:`Track`, whose
        ``features()`` come from the run's cache folder (computed if missing).
    """
    if not isinstance(run, RunRecord):
        run = read_run(run, need_model=False)
    labels, frontend, cache_dir = run.labels, run.frontend, run.cache_dir
    stored = run.folder / SPLITS_FILE
    if stored.is_file():
        index = {g: i for i, g in enumerate(labels)}
        raw = json.loads(stored.read_text())
        return {part: [Track(tid, index[g], g, Path(p), frontend, cache_dir) for tid, p, g in raw.get(part, [])]
                for part in SPLITS}
    spec = DatasetSpec.from_dict(run.dataset)
    _, parts = prepare_dataset(spec.data_dir, manifest=spec.manifest, genres=spec.genres,
                               split=spec.split, seed=spec.seed, val_fraction=spec.val_fraction,
                               test_fraction=spec.test_fraction)
    return to_tracks(parts, labels, frontend, cache_dir)
