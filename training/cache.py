"""The on-disk feature cache, and the :class:`Track` that reads through it.

Decoding, resampling and ``firmware_py.features.logmel`` run once per track; the
``(frames, n_mels)`` float32 dB array is stored as ``<cache>/<key>/<id>.npy`` where
``key`` is :func:`cache_key` (the front-end digest) and ``id`` is the file's name and a
hash of its bytes (:func:`content_digest`): an edited file is decoded again, and a fresh copy
or a moved data folder (new paths, new modification times, same audio) finds its features,
its room renderings and its teacher embeddings where they were.
:mod:`training.dataset` re-exports every public name here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import AudioError, skip_reason
from firmware_py.features import DEFAULT_PARAMS, FrontendParams

log = logging.getLogger("training.dataset")


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


@functools.lru_cache(maxsize=65536)
def _content_digest(path: str, size: int, mtime_ns: int, ctime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{size}:{h.hexdigest()}"


def content_digest(path: Path) -> str:
    """``"size:sha1"`` of the file's bytes (``"missing: PATH"`` when it cannot be read); read
    once per process and file version (memoised on path, size, modification and change time:
    a rewrite changes the change time even when the modification time is set back)."""
    path = Path(path).resolve()
    try:
        st = path.stat()
        return _content_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return f"missing:{path}"


def cache_file(path: Path, params: FrontendParams, cache_dir: Path) -> Path:
    """Where the features of ``path`` live in the cache (the file may not exist yet): keyed by
    the file's content, not its path or modification time (see :func:`content_digest`)."""
    path = Path(path).resolve()
    digest = hashlib.sha1(content_digest(path).encode()).hexdigest()[:16]
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

        from .forking import fork_is_safe

        ctx = multiprocessing.get_context("fork" if fork_is_safe() else "spawn")
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
