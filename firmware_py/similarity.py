"""Musical similarity: track embeddings from the bundle's embedding model, an index, queries.

A track's embedding is the pooled penultimate layer of the classifier (the global
pooling output the classifier Dense reads), computed for every window of the track at
the bundle's inference hop, each window L2-normalised, averaged, and L2-normalised
again; so the dot product of two embeddings is their cosine similarity.

The index is one ``.npz`` file (numpy only, no pickle)::

    embeddings   float32 (n_tracks, dim), unit rows, in the order of meta["tracks"]
    meta         a JSON string: format, version, root folder, the embedding model's
                 sha256 (an index only answers queries from that model), bundle name,
                 front-end digest, and per track its path (relative to root), size,
                 mtime_ns, duration and window count (for incremental re-indexing)

Device-light: numpy and the bundle's int8 interpreter; no TensorFlow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AUDIO_SUFFIXES
from .bundle import Bundle, BundleError
from .errors import GenreEdgeError, brief, skip_reason
from .files import open_regular, path_problem
from .text import display

INDEX_FORMAT = "genre-edge-index"
INDEX_VERSION = 1
RECONVERT = "re-convert the bundle with genre-edge convert"


class SimilarityIndexError(GenreEdgeError):
    """A missing, unreadable or mismatched similarity index."""


# -- embeddings -------------------------------------------------------------------------
def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit vectors along ``axis``; all-zero vectors stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def pool_windows(window_embeddings: np.ndarray) -> np.ndarray:
    """Track embedding from ``(n_windows, dim)``: L2-normalise each, mean, L2-normalise."""
    e = l2_normalize(np.asarray(window_embeddings, dtype=np.float32).reshape(
        len(window_embeddings), -1))
    return l2_normalize(e.mean(axis=0))


def embedding_id(bundle: Bundle) -> str:
    """The embedding model's sha256: an index is valid for exactly this model."""
    entry = bundle.files.get("embedding")
    if entry is None:
        raise BundleError(f"bundle {bundle.path} has no embedding model "
                          f"(model_embedding.tflite): {RECONVERT}")
    return str(entry["sha256"])


def open_embedding_model(bundle: Bundle, *, threads: int = 1) -> Any:
    """The bundle's int8 embedding interpreter (one-line error when the bundle lacks it)."""
    embedding_id(bundle)
    return bundle.open_model(which="embedding", threads=threads)


def embed_features(features: np.ndarray, bundle: Bundle, model: Any) -> tuple[np.ndarray, int]:
    """Track embedding of a ``(frames, n_mels)`` log-mel array: (unit vector, windows used)."""
    from .features import windows

    fe = bundle.frontend
    if len(features) == 0:
        features = np.full((1, fe.n_mels), fe.log_floor_db, np.float32)
    wins = windows(features, fe.window_frames, bundle.inference_hop_frames, pad=True)
    return pool_windows(model.predict_many(wins)), len(wins)


def embed_file(path: str | Path, bundle: Bundle, model: Any) -> tuple[np.ndarray, int, float]:
    """Track embedding of an audio file: (unit vector, windows, duration in seconds)."""
    from .audio import load_audio
    from .features import logmel

    fe = bundle.frontend
    samples = load_audio(path, fe.sample_rate)
    vec, n = embed_features(logmel(samples, fe), bundle, model)
    return vec, n, samples.shape[0] / fe.sample_rate


# -- the index --------------------------------------------------------------------------
@dataclass
class Neighbour:
    rank: int
    path: str
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "path": self.path, "similarity": round(self.similarity, 4)}


@dataclass
class Index:
    root: Path
    model_sha256: str
    bundle_name: str = ""
    frontend_digest: str = ""
    tracks: list[dict[str, Any]] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def __len__(self) -> int:
        return len(self.tracks)

    def path_of(self, i: int) -> Path:
        return self.root / self.tracks[i]["path"]

    def meta(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "root": str(self.root),
            "model_sha256": self.model_sha256, "bundle_name": self.bundle_name,
            "frontend_digest": self.frontend_digest,
            "dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
            "tracks": self.tracks,
        }

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            if not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" suffix
                np.savez(fh, embeddings=self.embeddings.astype(np.float32),
                         meta=np.array(json.dumps(self.meta())))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SimilarityIndexError(
                f"cannot write index {path} ({exc.strerror or exc}): choose a writable --out"
            ) from None

    @classmethod
    def load(cls, path: str | Path) -> Index:
        path = Path(path)
        build = f"build it with 'genre-edge index FOLDER --out {path}'"
        if not path.exists():
            raise SimilarityIndexError(f"similarity index not found: {path}: {build}")
        if path.is_dir():
            raise SimilarityIndexError(f"{path} is a directory, not a similarity index (.npz): {build}")
        os.close(open_regular(path, SimilarityIndexError, build, "similarity index"))  # FIFO...
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"][()]))
                embeddings = np.asarray(data["embeddings"], dtype=np.float32)
        except Exception as exc:  # zip, KeyError, JSON, ValueError: all mean "not an index"
            reason = " ".join(str(exc).split())[:120] or type(exc).__name__
            raise SimilarityIndexError(
                f"{path} is not a genre-edge similarity index ({reason}): pass another file, "
                f"or {build} --rebuild"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise SimilarityIndexError(f"{path} is not a genre-edge similarity index: pass "
                                       f"another file, or {build} --rebuild")
        if meta.get("version") != INDEX_VERSION:
            raise SimilarityIndexError(
                f"index {path} has format version {brief(meta.get('version'))}, this genre-edge "
                f"reads {INDEX_VERSION}: rebuild it with --rebuild"
            )
        problem = _meta_problem(meta, embeddings)
        if problem:
            raise SimilarityIndexError(f"index {path} is damaged ({problem}): rebuild it with "
                                       f"'genre-edge index FOLDER --out {path} --rebuild'")
        return cls(root=Path(meta["root"]), model_sha256=meta["model_sha256"],
                   bundle_name=str(meta.get("bundle_name", "")),
                   frontend_digest=str(meta.get("frontend_digest", "")),
                   tracks=list(meta["tracks"]), embeddings=embeddings)

    def check_model(self, bundle: Bundle, index_path: str | Path, dim: int | None = None) -> None:
        """Refuse to compare embeddings of different models (their spaces are unrelated).

        ``dim``: the embedding model's output size, when it is open; an index whose vectors
        have another size cannot be queried even if its recorded hash matches.
        """
        mine = embedding_id(bundle)
        if mine != self.model_sha256:
            raise SimilarityIndexError(
                f"index {index_path} was built with another model (bundle "
                f"'{self.bundle_name}', embedding {self.model_sha256[:12]}; this bundle "
                f"'{bundle.name}' has {mine[:12]}): pass the --bundle it was built with, or "
                f"re-index with 'genre-edge index {self.root} --out {index_path} --rebuild'"
            )
        have = int(self.embeddings.shape[1])
        if dim is not None and len(self) and have != dim:
            raise SimilarityIndexError(
                f"index {index_path} holds {have}-d vectors but the embedding model of bundle "
                f"'{bundle.name}' makes {dim}-d ones (damaged or edited): re-index with "
                f"'genre-edge index {self.root} --out {index_path} --rebuild'"
            )

    def lookup(self, path: str | Path) -> int | None:
        """Row of ``path`` when it is indexed and unchanged on disk (same size and mtime)."""
        try:
            p = Path(path).resolve()
            rel = p.relative_to(self.root).as_posix()
            st = p.stat()
        except (ValueError, OSError):
            return None
        for i, t in enumerate(self.tracks):
            if t["path"] == rel:
                same = t["size"] == st.st_size and t["mtime_ns"] == st.st_mtime_ns
                return i if same else None
        return None

    def query(self, vector: np.ndarray, *, top: int = 5,
              exclude: Iterable[int] = ()) -> list[Neighbour]:
        """The ``top`` most cosine-similar tracks, best first (ties by path)."""
        if len(self) == 0:
            return []
        sims = self.embeddings @ l2_normalize(vector).astype(np.float32)
        skip = set(exclude)
        order = sorted(range(len(sims)), key=lambda i: (-float(sims[i]), self.tracks[i]["path"]))
        chosen = [i for i in order if i not in skip][: max(0, top)]
        return [Neighbour(rank=r, path=str(self.path_of(i)), similarity=float(sims[i]))
                for r, i in enumerate(chosen, start=1)]


def _meta_problem(meta: dict[str, Any], embeddings: np.ndarray) -> str | None:
    """What is wrong with a loaded index's metadata and vectors (None: it checks out).

    Everything the look-ups read is checked here, so a damaged index is one line at load
    time instead of a KeyError or a shape mismatch at the first query of a running device.
    """
    root, tracks, sha = meta.get("root"), meta.get("tracks"), meta.get("model_sha256")
    if not isinstance(root, str) or not root:
        return "'root' is not a folder name"
    if not isinstance(sha, str) or not sha:
        return "'model_sha256' is missing"
    if not isinstance(tracks, list):
        return "'tracks' is not a list"
    for t in tracks:
        if not (isinstance(t, dict) and isinstance(t.get("path"), str) and t["path"]
                and all(isinstance(t.get(k), int) and not isinstance(t.get(k), bool)
                        for k in ("size", "mtime_ns"))):
            return "a track lacks its path, size or mtime_ns"
    if embeddings.ndim != 2 or len(tracks) != len(embeddings):
        return f"{len(tracks)} tracks, embeddings {list(embeddings.shape)}"
    if len(tracks) and embeddings.shape[1] < 1:
        return "empty embeddings"
    if not np.all(np.isfinite(embeddings)):
        return "embeddings that are not finite"
    return None


# -- building ---------------------------------------------------------------------------
@dataclass
class IndexStats:
    tracks: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.tracks} tracks ({self.added} added, {self.updated} updated, "
                f"{self.unchanged} unchanged, {self.removed} removed")
        return text + (f", {len(self.failed)} unreadable)" if self.failed else ")")


def audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder``, recursively, in a stable order; hidden entries skipped.

    Symbolically linked folders are followed (a music library is often assembled from
    links), each real folder once (under its own path where it has one): a link back up
    the tree (a cycle) is not entered again.
    """
    found = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: done already
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        # Real sub-folders before links, so that a folder that is also linked is indexed
        # under its own path.
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")),
                             key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES:
                found.append(Path(dirpath) / name)
    return found


Progress = Callable[[int, int, str, str], None]  # (done, total, relative path, action)


def build_index(
    folder: str | Path, out: str | Path, bundle: Bundle, model: Any, *,
    rebuild: bool = False, progress: Progress | None = None,
) -> tuple[Index, IndexStats]:
    """Index every audio file under ``folder`` into ``out``, reusing an existing index.

    Files whose size and mtime match the existing index are not decoded again; files
    gone from the folder are dropped; unreadable files are reported and left out.
    """
    root = Path(folder).resolve()
    if not root.exists():
        raise GenreEdgeError(f"folder not found: {folder}: give the music folder to index")
    if not root.is_dir():
        raise GenreEdgeError(f"{folder} is not a folder: give the music folder to index")
    model_sha = embedding_id(bundle)
    old: Index | None = None
    if Path(out).exists() and not rebuild:
        old = Index.load(out)
        old.check_model(bundle, out, dim=int(model.output_shape[-1]))
        if old.root != root:
            raise SimilarityIndexError(
                f"index {out} was built from {old.root}, not {root}: pass that folder, another "
                "--out, or --rebuild"
            )
    previous = {t["path"]: (t, old.embeddings[i]) for i, t in enumerate(old.tracks)} if old else {}

    files = audio_files(root)
    stats = IndexStats()
    tracks: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    for n, path in enumerate(files, start=1):
        rel = path.relative_to(root).as_posix()
        seen.add(rel)
        try:
            st = path.stat()
        except OSError as exc:  # a broken link, a file that vanished while we walked
            stats.failed.append(f"{display(rel)}: {path_problem(path) or exc}")
            continue
        prev = previous.get(rel)
        if prev and prev[0]["size"] == st.st_size and prev[0]["mtime_ns"] == st.st_mtime_ns:
            tracks.append(prev[0])
            vectors.append(prev[1])
            stats.unchanged += 1
            if progress:
                progress(n, len(files), rel, "unchanged")
            continue
        if progress:
            progress(n, len(files), rel, "updating" if prev else "adding")
        try:
            vec, n_windows, duration_s = embed_file(path, bundle, model)
        except Exception as exc:  # noqa: BLE001 - one bad file of any kind skips that file
            stats.failed.append(f"{display(rel)}: {skip_reason(exc, rel)}")
            continue
        tracks.append({"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "duration_s": round(duration_s, 3), "windows": n_windows})
        vectors.append(vec)
        if prev:
            stats.updated += 1
        else:
            stats.added += 1
    stats.removed = len(set(previous) - seen)
    stats.tracks = len(tracks)
    if not files:
        raise GenreEdgeError(
            f"no audio files in {root} (looked for {', '.join(sorted(AUDIO_SUFFIXES))}): "
            "give the folder that holds your music"
        )
    dim = int(model.output_shape[-1])
    index = Index(
        root=root, model_sha256=model_sha, bundle_name=bundle.name,
        frontend_digest=bundle.frontend.digest(), tracks=tracks,
        embeddings=np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim),
                                                                                 np.float32),
    )
    index.save(out)
    return index, stats
