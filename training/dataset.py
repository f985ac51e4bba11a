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
``key`` is :func:`cache_key` (the front-end digest) and ``id`` hashes the file's
absolute path, size and modification time, so an edited file is decoded again.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import AudioError, GenreEdgeError, skip_reason
from firmware_py.features import DEFAULT_PARAMS, FrontendParams, windows

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".opus", ".mp3", ".au", ".aiff", ".aif")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "dev": "val", "test": "test", "testing": "test"}
#: How many tracks a genre needs for a seeded random split (one per split at least).
MIN_TRACKS_PER_GENRE = 3


def default_cache_dir() -> Path:
    """``$GENRE_EDGE_CACHE`` or ``$XDG_CACHE_HOME/genre-edge`` (``~/.cache/genre-edge``)."""
    env = os.environ.get("GENRE_EDGE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "genre-edge"


def cache_key(params: FrontendParams) -> str:
    """Cache folder name for a front-end: ``params.digest()`` with the window length neutralised.

    ``window_frames`` only decides how the cached frames are cut, not the frames
    themselves, so presets with other window lengths share one cache.
    """
    return dataclasses.replace(params, window_frames=DEFAULT_PARAMS.window_frames).digest()


# -- tracks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Track:
    """One labelled audio file.

    Attributes
    ----------
    track_id : str
        Unique id: the path relative to the data folder, without extension (posix).
    label : int
        Index into the run's label list (= the model's output index).
    genre : str
        Label name.
    path : Path
        The audio file.
    frontend : FrontendParams
        Front-end used for :meth:`features`.
    cache_dir : Path
        Root of the feature cache.
    """

    track_id: str
    label: int
    genre: str
    path: Path
    frontend: FrontendParams = field(default=DEFAULT_PARAMS, compare=False)
    cache_dir: Path = field(default_factory=default_cache_dir, compare=False)

    @property
    def cache_path(self) -> Path:
        return cache_file(self.path, self.frontend, self.cache_dir)

    def features(self) -> np.ndarray:
        """Cached log-mel of the whole track, ``(frames, n_mels)`` float32 dB (a memmap).

        Decodes and caches the track first if it is not cached yet.
        """
        target = self.cache_path
        feats = load_cached(target, self.frontend)
        if feats is None:
            _compute_and_store(self.path, self.frontend, target)
            feats = np.load(target, mmap_mode="r")
        return feats


def load_cached(target: Path, params: FrontendParams) -> np.ndarray | None:
    """The cached features at ``target`` (a memmap), or None when there are none usable;
    a damaged entry (truncated by a full disk, edited, empty) is deleted so that it is
    computed again."""
    if not target.is_file():
        return None
    try:
        feats = np.load(target, mmap_mode="r")
        ok = feats.ndim == 2 and feats.shape[0] > 0 and feats.shape[1] == params.n_mels
    except (ValueError, EOFError):  # not an .npy, or cut short; an OSError (e.g. too many
        ok = False                  # open files) is not damage: it propagates
    if ok:
        return feats
    log.warning("feature cache entry %s is damaged: computing it again", target)
    target.unlink(missing_ok=True)
    return None


def cache_entry_ok(target: Path, params: FrontendParams) -> bool:
    """True when ``target`` holds usable features (see :func:`load_cached`)."""
    return load_cached(target, params) is not None


def cache_file(path: Path, params: FrontendParams, cache_dir: Path) -> Path:
    """Where the features of ``path`` live in the cache (the file may not exist yet)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    digest = hashlib.sha1(f"{path}|{stamp}".encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:48]
    return Path(cache_dir) / cache_key(params) / f"{stem}-{digest}.npy"


def _compute_and_store(path: Path, params: FrontendParams, target: Path) -> int:
    """Decode ``path``, compute its log-mel and write it atomically to ``target``; frames."""
    from firmware_py.audio import load_audio
    from firmware_py.features import logmel

    feats = logmel(load_audio(path, params.sample_rate), params)
    if feats.shape[0] == 0:
        raise AudioError(f"{path} is shorter than one analysis frame ({params.n_fft} samples): "
                         "remove it from the data")
    save_npy_atomic(target, feats.astype(np.float32, copy=False))
    return int(feats.shape[0])


def save_npy_atomic(target: Path, array: np.ndarray) -> None:
    """``np.save`` to ``target`` through a temporary file and a rename (parents created):
    a killed run never leaves a half-written cache entry."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def progress_bar() -> Callable[..., Any]:
    """``tqdm.tqdm``, or a pass-through when tqdm is missing (a training dependency)."""
    try:
        from tqdm import tqdm
    except ImportError:
        def tqdm(it, **_):
            return it
    return tqdm


def _cache_worker(job: tuple[str, dict[str, Any], str]) -> tuple[str, str | None]:
    path, params, target = job
    try:
        _compute_and_store(Path(path), FrontendParams.from_dict(params), Path(target))
        return path, None
    except Exception as exc:  # noqa: BLE001 - one bad file of any kind skips that file
        return path, skip_reason(exc, path)


@dataclass
class CacheStats:
    """What :func:`build_cache` did: tracks decoded now, found cached, and failed."""

    decoded: int = 0
    cached: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def build_cache(
    tracks: Sequence[Track], *, workers: int | None = None, progress: bool = True
) -> CacheStats:
    """Decode every track that is not cached yet (``workers`` processes, tqdm progress bar).

    Unreadable files are reported in ``CacheStats.failed`` (path -> reason), not raised,
    because real collections contain a few broken files (GTZAN's ``jazz.00054``).
    """
    stats = CacheStats()
    todo = []
    for t in tracks:
        target = t.cache_path
        if cache_entry_ok(target, t.frontend):
            stats.cached += 1
        else:
            todo.append((str(t.path), t.frontend.to_dict(), str(target)))
    if not todo:
        return stats
    if workers is None:
        workers = min(len(todo), max(1, (os.cpu_count() or 1)))
    tqdm = progress_bar()
    import sys

    # In a log file (not a terminal) a redraw per track would flood it: one line every 10 s.
    bar_args = dict(total=len(todo), desc="caching features", unit="track",
                    disable=not progress, dynamic_ncols=True,
                    mininterval=0.1 if sys.stderr.isatty() else 10.0)
    if workers <= 1 or len(todo) < 4:
        results: Iterable[tuple[str, str | None]] = (_cache_worker(j) for j in todo)
        for path, err in tqdm(results, **bar_args):
            _record(stats, path, err)
    else:
        import multiprocessing

        # fork is cheap and needs no __main__ guard, but is unsafe once TensorFlow's
        # threads exist in this process; then spawn.
        fork_ok = "tensorflow" not in sys.modules and "fork" in multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if fork_ok else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for path, err in tqdm(pool.map(_cache_worker, todo, chunksize=4), **bar_args):
                _record(stats, path, err)
    return stats


def _record(stats: CacheStats, path: str, err: str | None) -> None:
    if err is None:
        stats.decoded += 1
    else:
        stats.failed[path] = err
        log.warning("skipping unreadable file: %s", err)


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
            if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS:
                entries.append(Entry(_track_id(f.relative_to(data_dir)), genre_dir.name, f))
    if not entries:
        raise GenreEdgeError(
            f"no audio files found under {data_dir}/<genre>/: give a folder with one "
            "sub-folder per genre (e.g. GTZAN's genres/) or a --manifest"
        )
    return entries


def read_manifest(data_dir: Path, manifest: Path) -> list[Entry]:
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
    for ext in AUDIO_EXTENSIONS:
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
    entries = read_manifest(data, man) if man else scan_tree(data)
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


def load_run_splits(run_dir: str | Path) -> dict[str, list[Track]]:
    """The train / val / test tracks of a finished run, as they were when it trained.

    Parameters
    ----------
    run_dir : str or Path
        The ``--out`` folder of ``genre-edge train`` (holds ``run.json``).

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}`` lists of :class:`Track`, whose
        ``features()`` come from the run's cache folder (computed if missing).
    """
    run_dir = Path(run_dir)
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        raise GenreEdgeError(f"{run_dir} is not a training run (no run.json): pass the --out of 'genre-edge train'")
    run = json.loads(run_json.read_text())
    labels = list(run["labels"])
    frontend = FrontendParams.from_dict(run["frontend"])
    cache_dir = Path(run.get("cache_dir") or default_cache_dir())
    stored = run_dir / SPLITS_FILE
    if stored.is_file():
        index = {g: i for i, g in enumerate(labels)}
        raw = json.loads(stored.read_text())
        return {part: [Track(tid, index[g], g, Path(p), frontend, cache_dir) for tid, p, g in raw.get(part, [])]
                for part in SPLITS}
    spec = DatasetSpec.from_dict(run["dataset"])
    _, parts = prepare_dataset(spec.data_dir, manifest=spec.manifest, genres=spec.genres,
                               split=spec.split, seed=spec.seed, val_fraction=spec.val_fraction,
                               test_fraction=spec.test_fraction)
    return to_tracks(parts, labels, frontend, cache_dir)


# -- windows --------------------------------------------------------------------------
def pad_to(features: np.ndarray, window_frames: int) -> np.ndarray:
    """Pad a clip shorter than one window with its own floor value (as the front-end does)."""
    n = features.shape[0]
    if n >= window_frames:
        return features
    if n == 0:
        raise GenreEdgeError("a track has no frames (shorter than one FFT): remove it from the data")
    out = np.full((window_frames, features.shape[1]), features.min(), dtype=np.float32)
    out[:n] = features
    return out


def eval_windows(track: Track, window_frames: int, hop_frames: int) -> np.ndarray:
    """Fixed-hop windows over a whole track, ``(n, window_frames, n_mels)`` float32 dB.

    Every track yields at least one window (short tracks are padded). ``hop_frames``
    is in front-end frames (100 per second by default).
    """
    # A copy, not a view of the memory-mapped cache file: callers keep windows of many
    # tracks at once, and every view would hold that track's file open.
    feats = pad_to(np.array(track.features(), dtype=np.float32), window_frames)
    return windows(feats, window_frames, max(1, int(hop_frames)), pad=True)


def random_crops(
    features: np.ndarray, window_frames: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` windows at uniformly random offsets, ``(count, window_frames, n_mels)``."""
    feats = pad_to(features, window_frames)
    starts = rng.integers(0, feats.shape[0] - window_frames + 1, size=count)
    return np.stack([feats[s : s + window_frames] for s in starts])
