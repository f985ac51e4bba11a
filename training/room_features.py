"""Features of tracks played through rooms (:mod:`training.rooms`), cached like clean ones.

A :class:`RoomTrack` is one track heard in one condition. It quacks like
:class:`training.dataset.Track` (``track_id``, ``label``, ``genre``, ``path``,
``features()``), so every evaluation helper that takes tracks (``predict_tracks``,
``eval_windows``, the converter's float-vs-int8 comparison) takes room tracks as they are.

Renderings are computed once and cached under ``<cache>/rooms/<room set>/<front-end>/``;
the room set's digest covers its responses, noises and the rendering version, and each
file name the track's own cache name and the condition's hash, so nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_py.errors import AudioError, GenreEdgeError, skip_reason

from .dataset import Track, cache_key, load_cached, progress_bar, save_npy_atomic
from .forking import fork_is_safe
from .rooms import Condition, RoomSet, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoomTrack:
    """``track`` heard in ``condition`` of ``rooms`` (the ``k``-th condition drawn for it)."""

    track: Track
    rooms: RoomSet
    k: int
    condition: Condition
    dtype: str = "float32"

    @property
    def track_id(self) -> str:
        return self.track.track_id

    @property
    def label(self) -> int:
        return self.track.label

    @property
    def genre(self) -> str:
        return self.track.genre

    @property
    def path(self) -> Path:
        return self.track.path

    @property
    def frontend(self):  # noqa: ANN201 - FrontendParams, as on Track
        return self.track.frontend

    @property
    def cache_path(self) -> Path:
        cond = hashlib.sha1(json.dumps(self.condition.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        stem = self.track.cache_path.stem
        return (Path(self.track.cache_dir) / "rooms" / self.rooms.digest
                / cache_key(self.track.frontend) / f"{stem}-{self.k}-{cond}-{self.dtype}.npy")

    def features(self) -> np.ndarray:
        """Cached features of the rendering (a memmap), computed first when missing."""
        feats = load_cached(self.cache_path, self.track.frontend)
        if feats is None:
            compute_and_store([self])
            feats = np.load(self.cache_path, mmap_mode="r")
        return feats


def room_tracks(tracks: Sequence[Track], rooms: RoomSet, per_track: int,
                dtype: str = "float32") -> list[RoomTrack]:
    """``per_track`` renderings of every track, conditions seeded by the set and the track id
    (the same tracks in the same set always get the same conditions)."""
    out = []
    for t in tracks:
        for k, cond in enumerate(rooms.conditions(per_track, salt=t.track_id)):
            out.append(RoomTrack(t, rooms, k, cond, dtype))
    return out


def training_renderings(train: Sequence[Track], val: Sequence[Track], fs: int,
                        cache_dir: Path, *, rooms: int, val_rooms: int,
                        rir_dir: str | Path | None = None, noise_dir: str | Path | None = None,
                        ) -> tuple[RoomSet, list[RoomTrack], list[RoomTrack]]:
    """The renderings a training run uses: ``rooms`` per training track in the training
    rooms (float16; ``rir_dir``/``noise_dir``: the user's recordings), ``val_rooms`` per
    validation track in the validation rooms: ``(training rooms, train items, val items)``.
    ``genre-edge train`` renders and caches them before TensorFlow loads; the fit and the
    converter's calibration read the same items."""
    from .rooms import room_set

    def folder(text: str | Path | None) -> Path | None:
        return Path(text).expanduser() if text else None

    train_rooms = room_set("train", fs, cache_dir, rir_dir=folder(rir_dir),
                           noise_dir=folder(noise_dir))
    items = room_tracks(train, train_rooms, rooms, dtype="float16")
    val_items = (room_tracks(val, room_set("val", fs, cache_dir), val_rooms)
                 if val_rooms > 0 else [])
    return train_rooms, items, val_items


def compute_and_store(items: Sequence[RoomTrack]) -> None:
    """Decode the track once, render every item's condition, store each one's features."""
    from firmware_py.audio import load_audio
    from firmware_py.features import logmel

    if not items:
        return
    t = items[0].track
    x = load_audio(t.path, t.frontend.sample_rate)
    for it in items:
        y = render(x, t.frontend.sample_rate, it.condition, it.rooms.rirs[it.condition.rir],
                   it.rooms.noises)
        feats = logmel(y, t.frontend)
        if feats.shape[0] == 0:
            raise AudioError(f"{t.path} is shorter than one analysis frame: remove it from the data")
        save_npy_atomic(it.cache_path, feats.astype(it.dtype))


_JOBS: list[list[RoomTrack]] = []


def _worker(i: int) -> tuple[int, str | None]:
    try:
        compute_and_store(_JOBS[i])
        return i, None
    except Exception as exc:  # noqa: BLE001 - one bad file of any kind skips that file
        return i, skip_reason(exc, _JOBS[i][0].track.path)


def build_room_cache(items: Sequence[RoomTrack], *, workers: int | None = None,
                     progress: bool = True, desc: str = "rendering rooms") -> dict[str, str]:
    """Render and cache every item that is not cached yet; returns ``{path: reason}`` of
    tracks that failed (their renderings are skipped; the caller drops them)."""
    groups: dict[str, list[RoomTrack]] = {}
    for it in items:
        if load_cached(it.cache_path, it.track.frontend) is None:
            groups.setdefault(str(it.track.path), []).append(it)
    failed: dict[str, str] = {}
    if not groups:
        return failed
    jobs = list(groups.values())
    n_workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    tqdm = progress_bar()
    bar = dict(total=len(jobs), desc=desc, unit="track", disable=not progress,
               mininterval=0.1 if sys.stderr.isatty() else 10.0)
    # fork shares the responses with the workers for free; never fork under TensorFlow.
    if n_workers <= 1 or len(jobs) < 4 or not fork_is_safe():
        results = (_run(job) for job in jobs)
        for path, err in tqdm(results, **bar):
            if err:
                failed[path] = err
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        global _JOBS
        _JOBS = jobs
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                for i, err in tqdm(pool.map(_worker, range(len(jobs)), chunksize=2), **bar):
                    if err:
                        failed[str(jobs[i][0].track.path)] = err
        finally:
            _JOBS = []
    for err in failed.values():
        log.warning("skipping a track the room rendering could not read: %s", err)
    return failed


def _run(job: list[RoomTrack]) -> tuple[str, str | None]:
    try:
        compute_and_store(job)
        return str(job[0].track.path), None
    except Exception as exc:  # noqa: BLE001 - one bad file of any kind skips that file
        return str(job[0].track.path), skip_reason(exc, job[0].track.path)


def require_rooms_ok(items: Sequence[RoomTrack], failed: dict[str, str], what: str) -> list[RoomTrack]:
    """``items`` without the failed tracks; a one-line error when nothing is left."""
    kept = [it for it in items if str(it.track.path) not in failed]
    if items and not kept:
        raise GenreEdgeError(f"no {what} track could be rendered through the rooms "
                             f"(e.g. {next(iter(failed.values()))}): check the audio files")
    return kept
