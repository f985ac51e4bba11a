"""Knowledge distillation from a pre-trained music tagger (training only).

Our training set is small (344 tracks for four genres), and the model that fits the device
budget learns pop vs rock from it alone. A tagger pre-trained on a large catalogue knows
much more about music; we use it as a *teacher*: its 200-d penultimate embedding and its
50 tag probabilities of every ~3 s window feed a linear probe (multinomial logistic
regression) fitted on the training tracks, and the probe's genre probabilities become soft
targets for the student (``genre-edge train --teacher musicnn-msd``). The teacher never
reaches the device or the bundle: it only shapes the training targets.

The teacher is *musicnn* (J. Pons and X. Serra, "musicnn: pre-trained convolutional neural
networks for music audio tagging", ISMIR 2019 LBD; ISC licence), the ``MSD_musicnn`` model
trained on the Million Song Dataset's last.fm tags. It is not the MagnaTagATune model on
purpose: MagnaTagATune is made of Magnatune recordings, the label the Emotify excerpts of
our data come from, so that teacher may have heard our test tracks. Install it with
``pip install --no-deps musicnn==0.1.0`` (its metadata pins a 2019 numpy; only its
checkpoint files are used: the graph is read from the checkpoint and frozen here, no
musicnn code runs).

Soft targets of *training* tracks are cross-fitted: the probe that labels a track was
fitted on the other folds, so the student never learns the probe's memory of its own
training windows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import GenreEdgeError
from firmware_py.features import FrontendParams

from .presets import TEACHERS

log = logging.getLogger(__name__)

#: musicnn's input: 16 kHz, 512-point FFT and window, 256-sample hop, 96 Slaney mel bands
#: 0-8 kHz (librosa's mel defaults, which our front-end reproduces; our frames are not
#: centred, librosa's are: one teacher frame, 16 ms, of offset), 187 frames = 3 s windows.
TEACHER_FRONTEND = FrontendParams(
    sample_rate=16000, n_fft=512, win_length=512, hop_length=256, window="hann", n_mels=96,
    fmin=0.0, fmax=8000.0, amin=1e-10, window_frames=187)
#: Teacher windows every 62 frames (0.992 s; musicnn's extractor with a 1 s step uses 61).
TEACHER_HOP_FRAMES = 62
#: Output tensors of the frozen graph: penultimate dense layer (ReLU) and the tag sigmoid.
_OUTPUTS = ("model/dense/Relu", "model/Sigmoid")
_INPUT, _IS_TRAINING = "model/Placeholder:0", "model/Placeholder_2:0"


def teacher_hop_s() -> float:
    return TEACHER_HOP_FRAMES * TEACHER_FRONTEND.hop_length / TEACHER_FRONTEND.sample_rate


def checkpoint_dir(name: str) -> Path:
    """The installed musicnn checkpoint folder of teacher ``name`` (one-line error if absent)."""
    if name not in TEACHERS:
        raise GenreEdgeError(f"unknown teacher '{name}': choose one of {', '.join(TEACHERS)}")
    spec = importlib.util.find_spec("musicnn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise GenreEdgeError(f"teacher '{name}' needs the musicnn package: "
                             "pip install --no-deps musicnn==0.1.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / TEACHERS[name]
    if not (folder / ".meta").is_file() or not (folder / ".index").is_file():
        raise GenreEdgeError(f"musicnn is installed but {folder} holds no checkpoint: "
                             "reinstall with pip install --no-deps --force-reinstall musicnn==0.1.0")
    return folder


class MusicnnTagger:
    """A musicnn checkpoint frozen into a TensorFlow graph: log-mel windows -> embeddings.

    Parameters
    ----------
    name : str
        Teacher name (``TEACHERS``).
    """

    def __init__(self, name: str = "musicnn-msd") -> None:
        import tensorflow as tf
        from tensorflow.core.framework import graph_pb2
        from tensorflow.core.protobuf import meta_graph_pb2

        folder = checkpoint_dir(name)
        self.name = name
        meta = meta_graph_pb2.MetaGraphDef()
        meta.ParseFromString((folder / ".meta").read_bytes())
        # Only the forward graph (the checkpoint's meta graph also holds the optimiser and
        # gradients, whose recorded shapes TensorFlow 2 refuses); variables become constants.
        sub = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, list(_OUTPUTS))
        reader = tf.compat.v1.train.NewCheckpointReader(str(folder) + "/")
        frozen = graph_pb2.GraphDef()
        for node in sub.node:
            out = frozen.node.add()
            if node.op in ("VariableV2", "VarHandleOp"):
                value = reader.get_tensor(node.name)
                out.name, out.op = node.name, "Const"
                out.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
                out.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            else:
                out.CopyFrom(node)
                out.attr.pop("_output_shapes", None)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(frozen, name="")
        self.session = tf.compat.v1.Session(graph=self.graph)
        self._x = self.graph.get_tensor_by_name(_INPUT)
        self._training = self.graph.get_tensor_by_name(_IS_TRAINING)
        self._outputs = [self.graph.get_tensor_by_name(n + ":0") for n in _OUTPUTS]
        self.digest = hashlib.sha1((folder / ".index").read_bytes()).hexdigest()[:12]

    def embed(self, logmel_db: np.ndarray, batch: int = 64) -> np.ndarray:
        """Embeddings of every teacher window of a track.

        Parameters
        ----------
        logmel_db : np.ndarray
            ``(frames, 96)`` log-mel power in dB from :data:`TEACHER_FRONTEND`.

        Returns
        -------
        np.ndarray
            ``(windows, 250)`` float32: 200 penultimate activations then 50 tag
            probabilities, one row per window of 187 frames every 62 frames.
        """
        wf = TEACHER_FRONTEND.window_frames
        # musicnn's input compression: log10(10000 * mel power + 1), in float32 (musicnn's
        # own float16 cast overflows on loud music).
        x = np.log10(10000.0 * np.power(10.0, np.asarray(logmel_db, np.float64) / 10.0) + 1.0)
        x = x.astype(np.float32)
        if x.shape[0] < wf:
            x = np.concatenate([x, np.zeros((wf - x.shape[0], x.shape[1]), np.float32)])
        starts = range(0, x.shape[0] - wf + 1, TEACHER_HOP_FRAMES)
        windows = np.stack([x[s : s + wf] for s in starts])
        rows = []
        for i in range(0, len(windows), batch):
            pen, tags = self.session.run(self._outputs, {self._x: windows[i : i + batch],
                                                         self._training: False})
            rows.append(np.hstack([pen, tags]).astype(np.float32))
        return np.concatenate(rows)


def embedding_cache_path(track_cache_path: Path, tagger_digest: str) -> Path:
    """Where a track's teacher embeddings live: beside its teacher-front-end features."""
    p = Path(track_cache_path)
    return p.parent.parent / f"teacher-{tagger_digest}" / p.name


def track_embeddings(tracks: Sequence[Any], tagger: MusicnnTagger,
                     progress: bool = True) -> list[np.ndarray]:
    """Teacher embeddings of ``tracks`` (``Track`` objects with :data:`TEACHER_FRONTEND`), cached."""
    from .dataset import progress_bar, save_npy_atomic

    out = []
    for t in progress_bar()(tracks, desc="teacher embeddings", unit="track", disable=not progress,
                  mininterval=10.0):
        target = embedding_cache_path(t.cache_path, tagger.digest)
        if target.is_file():
            out.append(np.load(target))
            continue
        emb = tagger.embed(np.asarray(t.features()))
        save_npy_atomic(target, emb)
        out.append(emb)
    return out


@dataclass
class Probe:
    """Multinomial logistic regression on standardised teacher embeddings."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray   # (dim + 1, n_labels), last row = bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) * self.scale) @ self.weights[:-1] + self.weights[-1]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_probe(xs: Sequence[np.ndarray], labels: Sequence[int], n_labels: int,
              l2: float = 1.0) -> Probe:
    """Fit a class-balanced, L2-regularised softmax regression on per-track window embeddings.

    Within a genre every track weighs the same in total (long and short clips alike), and
    every genre weighs the same (balanced); the sample weights sum to 1 and the penalty
    on the weights (not the bias) is ``l2 / number of tracks``.
    """
    from scipy.optimize import minimize

    x = np.concatenate(xs).astype(np.float64)
    y = np.concatenate([np.full(len(e), lab) for e, lab in zip(xs, labels, strict=True)])
    per_track = np.concatenate([np.full(len(e), 1.0 / len(e)) for e in xs])
    counts = np.bincount(np.asarray(labels), minlength=n_labels).astype(np.float64)
    if np.any(counts == 0):
        raise GenreEdgeError("the teacher probe needs training tracks of every genre")
    sw = per_track * (counts.sum() / (n_labels * counts))[y]
    sw /= sw.sum()
    mean = x.mean(0)
    scale = 1.0 / np.maximum(x.std(0), 1e-6)
    xs_ = np.hstack([(x - mean) * scale, np.ones((len(x), 1))])
    onehot = np.eye(n_labels)[y]
    d = xs_.shape[1]
    reg = np.ones((d, 1))
    reg[-1] = 0.0  # no penalty on the bias

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(d, n_labels)
        z = xs_ @ w
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -(sw * (onehot * logp).sum(1)).sum() + 0.5 * l2 / len(xs) * (reg * w * w).sum()
        grad = xs_.T @ (sw[:, None] * (np.exp(logp) - onehot)) + l2 / len(xs) * reg * w
        return float(value), grad.ravel()

    res = minimize(loss, np.zeros(d * n_labels), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500})
    if not res.success:
        log.warning("teacher probe: L-BFGS stopped before converging (%s)", res.message)
    return Probe(mean.astype(np.float32), scale.astype(np.float32),
                 res.x.reshape(d, n_labels).astype(np.float32))


def cross_fitted_targets(xs: Sequence[np.ndarray], labels: Sequence[int], n_labels: int,
                         folds: int = 5, seed: int = 0, l2: float = 1.0) -> list[np.ndarray]:
    """Soft targets for training tracks, each from a probe fitted on the other folds.

    Folds are stratified by label and seeded; returns ``(windows, n_labels)`` per track,
    in the order of ``xs``. Folds are not grouped by artist: a near-duplicate of a track
    (GTZAN has a few) may sit in another fold.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise GenreEdgeError(f"teacher targets: labels must be in 0..{n_labels - 1}")
    counts = np.bincount(labels, minlength=n_labels)
    if np.any(counts < 2):
        bad = int(np.flatnonzero(counts < 2)[0])
        raise GenreEdgeError(f"--teacher needs at least 2 training tracks of every genre (label {bad} "
                             f"has {int(counts[bad])}): add tracks or drop that genre")
    folds = int(min(folds, counts.min()))
    rng = np.random.default_rng(seed)
    fold_of = np.full(len(labels), -1, dtype=int)
    for c in range(n_labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = np.arange(len(idx)) % folds
    out: list[np.ndarray | None] = [None] * len(xs)
    for f in range(folds):
        train_idx = np.flatnonzero(fold_of != f)
        probe = fit_probe([xs[i] for i in train_idx], labels[train_idx], n_labels, l2)
        for i in np.flatnonzero(fold_of == f):
            out[i] = probe.predict(xs[i])
    if any(o is None for o in out):  # cannot happen after the checks above; never misalign
        raise GenreEdgeError("teacher targets: a training track got no fold (internal error)")
    return out  # type: ignore[return-value]


def track_accuracy(probs: Sequence[np.ndarray], labels: Sequence[int]) -> float:
    """Mean-vote track accuracy of per-window probabilities."""
    from .metrics import mean_vote

    hits = [int(mean_vote(p) == lab) for p, lab in zip(probs, labels, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def soft_targets(splits: dict[str, Sequence[Any]], n_labels: int, teacher: str, *,
                 seed: int = 0, l2: float = 1.0, temperature: float = 1.0,
                 workers: int | None = None, progress: bool = True,
                 embeddings_out: list[np.ndarray] | None = None,
                 ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Cross-fitted teacher probabilities of every training track, and a report.

    Parameters
    ----------
    splits : dict
        ``train`` / ``val`` (/ ``test``) ``Track`` lists of the student's run.
    n_labels : int
        Number of genres.
    teacher : str
        Teacher name (``TEACHERS``).
    seed, l2 : int, float
        Fold assignment seed and the probe's L2 penalty.
    temperature : float
        Softening of the targets (``p ** (1 / T)``, renormalised).
    embeddings_out : list or None
        When given, receives the training tracks' raw teacher embeddings (for hints).

    Returns
    -------
    (list of np.ndarray, dict)
        Per training track ``(teacher windows, n_labels)`` float32 targets, and the
        teacher's track accuracy on the training tracks (cross-fitted) and on the
        validation and test tracks (probe fitted on all training tracks).
    """
    import dataclasses

    from .dataset import build_cache

    tagger = MusicnnTagger(teacher)
    teacher_splits = {k: [dataclasses.replace(t, frontend=TEACHER_FRONTEND) for t in v]
                      for k, v in splits.items()}
    every = [t for v in teacher_splits.values() for t in v]
    stats = build_cache(every, workers=workers, progress=progress)
    if stats.failed:
        raise GenreEdgeError(f"teacher features: {len(stats.failed)} track(s) failed to decode, "
                             f"e.g. {next(iter(stats.failed))}")
    emb = {k: track_embeddings(v, tagger, progress) for k, v in teacher_splits.items()}
    tagger.session.close()
    if embeddings_out is not None:
        embeddings_out.extend(emb["train"])
    labels = {k: [t.label for t in v] for k, v in splits.items()}
    targets = cross_fitted_targets(emb["train"], labels["train"], n_labels, seed=seed, l2=l2)
    report: dict[str, Any] = {
        "teacher": teacher, "checkpoint_sha1": tagger.digest, "probe_l2": l2,
        "temperature": temperature, "hop_s": teacher_hop_s(),
        "train_track_accuracy_cross_fitted": track_accuracy(targets, labels["train"]),
    }
    probe = fit_probe(emb["train"], labels["train"], n_labels, l2)
    for part in ("val", "test"):
        if emb.get(part):
            report[f"{part}_track_accuracy"] = track_accuracy(
                [probe.predict(e) for e in emb[part]], labels[part])
    if temperature != 1.0:
        sharpened = []
        for p in targets:
            q = np.power(np.maximum(p, 1e-12), 1.0 / temperature)
            sharpened.append((q / q.sum(1, keepdims=True)).astype(np.float32))
        targets = sharpened
    return targets, report


def target_at(targets: np.ndarray, start_frame: int, hop_frames: float) -> np.ndarray:
    """Teacher target of a student window starting at ``start_frame`` (linear interpolation).

    ``hop_frames`` is the teacher hop in student frames; teacher window ``k`` starts at
    ``k * hop_frames``.
    """
    pos = start_frame / hop_frames
    k0 = int(min(max(np.floor(pos), 0), len(targets) - 1))
    k1 = min(k0 + 1, len(targets) - 1)
    frac = float(min(max(pos - k0, 0.0), 1.0))
    return (1.0 - frac) * targets[k0] + frac * targets[k1]
