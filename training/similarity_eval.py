"""How well do track embeddings find same-genre neighbours? precision@k, leave-one-out.

    python -m training.similarity_eval --bundle BUNDLE --data ../shared/data/music

For every test-split track of the chosen genres, the k most cosine-similar other test
tracks are its neighbours; precision@k is the fraction of them with the query's genre,
averaged over queries. Compared representations (one vector per track each):

* ``model embedding``: the bundle's int8 embedding model (pooled penultimate layer),
  per-window L2-normalised, averaged, L2-normalised, exactly as ``genre-edge index``;
* ``model embedding, centred``: the same minus the evaluated set's mean embedding (a
  variant; ``genre-edge similar`` uses the plain one);
* ``model probabilities``: the classifier's mean softmax over windows (reference: what
  the genre decision alone gives);
* ``log-mel mean+std``: per-band mean and standard deviation of the log-mel
  spectrogram (2 x n_mels), each dimension standardised over the evaluated tracks;
* ``MFCC mean``: mean of 20 MFCCs (orthonormal DCT-II of the log-mel dB), standardised.

Also reported: precision@1, per-genre precision@k, and the share of neighbours that come
from the query's source dataset (the manifest's ``source`` column): the data mixes two
collections, and a representation that clusters by recording source rather than by
genre would show there.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.audio import load_audio
from firmware_py.bundle import Bundle, load_bundle
from firmware_py.errors import GenreEdgeError
from firmware_py.features import logmel, windows
from firmware_py.similarity import embed_features, open_embedding_model

N_MFCC = 20


def read_tracks(data: Path, genres: list[str], split: str) -> list[dict[str, str]]:
    manifest = data / "manifest.csv"
    if not manifest.is_file():
        raise GenreEdgeError(f"{manifest} not found: pass --data, the folder with manifest.csv")
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh)
                if r["genre"] in genres and (split == "all" or r["split"] == split)]
    if not rows:
        raise GenreEdgeError(f"no '{split}' tracks of {', '.join(genres)} in {manifest}: "
                             "check --genres and --split")
    return rows


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per dimension over the evaluated tracks (no labels used)."""
    return (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)


def mfcc_mean(features: np.ndarray, n_mfcc: int = N_MFCC) -> np.ndarray:
    from scipy.fft import dct

    return dct(features, type=2, norm="ortho", axis=1)[:, :n_mfcc].mean(axis=0)


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per query: share of its k nearest others (cosine) with the same label."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)  # leave the query out
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return (labels[nearest] == labels[:, None]).mean(axis=1)


def chance_precision(labels: np.ndarray) -> float:
    """Expected precision of random neighbours: (same-label others) / (all others)."""
    counts = {lab: int((labels == lab).sum()) for lab in set(labels.tolist())}
    return float(np.mean([(counts[lab] - 1) / (len(labels) - 1) for lab in labels]))


def track_vectors(rows: list[dict[str, str]], data: Path, bundle: Bundle,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    embedder = open_embedding_model(bundle)
    classifier = bundle.open_model()
    fe = bundle.frontend
    out: dict[str, list[np.ndarray]] = {
        "model embedding": [], "model probabilities": [], "log-mel mean+std": [], "MFCC mean": [],
    }
    for i, row in enumerate(rows, start=1):
        feats = logmel(load_audio(data / row["path"], fe.sample_rate), fe)
        wins = windows(feats, fe.window_frames, bundle.inference_hop_frames, pad=True)
        out["model embedding"].append(embed_features(feats, bundle, embedder)[0])
        out["model probabilities"].append(classifier.predict_many(wins).mean(axis=0))
        out["log-mel mean+std"].append(np.concatenate([feats.mean(axis=0), feats.std(axis=0)]))
        out["MFCC mean"].append(mfcc_mean(feats))
        if progress:
            progress(i, len(rows))
    vectors = {name: np.stack(v).astype(np.float64) for name, v in out.items()}
    # Variant: embeddings centred on the evaluated set (ReLU features are all positive,
    # so raw cosines are all high; centring spreads them). Not what `similar` does.
    emb = vectors["model embedding"]
    vectors = {"model embedding": emb, "model embedding, centred": emb - emb.mean(axis=0),
               **{k: v for k, v in vectors.items() if k != "model embedding"}}
    for name in ("log-mel mean+std", "MFCC mean"):
        vectors[name] = standardise(vectors[name])
    return vectors


def evaluate(vectors: dict[str, np.ndarray], rows: list[dict[str, str]], k: int) -> dict[str, Any]:
    labels = np.asarray([r["genre"] for r in rows])
    sources = np.asarray([r.get("source", "") for r in rows])
    genres = sorted(set(labels.tolist()))
    results: dict[str, Any] = {}
    for name, x in vectors.items():
        pk = precision_at_k(x, labels, k)
        results[name] = {
            "dim": int(x.shape[1]),
            f"precision@{k}": float(pk.mean()),
            "precision@1": float(precision_at_k(x, labels, 1).mean()),
            "per_genre": {g: float(pk[labels == g].mean()) for g in genres},
            "same_source": float(precision_at_k(x, sources, k).mean()),
        }
    return {
        "k": k, "tracks": len(rows), "genres": {g: int((labels == g).sum()) for g in genres},
        "chance": {f"precision@{k}": chance_precision(labels),
                   "same_source": chance_precision(sources)},
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    k = report["k"]
    genres = list(report["genres"])
    head = (f"| representation | dim | P@{k} | P@1 | " + " | ".join(f"P@{k} {g}" for g in genres)
            + f" | same source@{k} |")
    lines = [head, "|" + "---|" * (5 + len(genres))]
    for name, r in report["results"].items():
        per = " | ".join(f"{r['per_genre'][g]:.3f}" for g in genres)
        lines.append(f"| {name} | {r['dim']} | {r[f'precision@{k}']:.3f} | "
                     f"{r['precision@1']:.3f} | {per} | {r['same_source']:.3f} |")
    c = report["chance"]
    lines.append(f"| chance | | {c[f'precision@{k}']:.3f} | {c[f'precision@{k}']:.3f} | "
                 + " | ".join("" for _ in genres) + f" | {c['same_source']:.3f} |")
    counts = ", ".join(f"{g} {n}" for g, n in report["genres"].items())
    return f"{report['tracks']} tracks ({counts}), leave-one-out, cosine\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.similarity_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="model bundle with model_embedding.tflite")
    p.add_argument("--data", required=True, help="music folder with manifest.csv")
    p.add_argument("--genres", default="",
                   help="comma-separated genres (default: the bundle's labels)")
    p.add_argument("--split", default="test", help="manifest split, or 'all' (default test)")
    p.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        data = Path(args.data)
        bundle = load_bundle(args.bundle)
        genres = [g for g in args.genres.split(",") if g] or list(bundle.labels)
        rows = read_tracks(data, genres, args.split)
        start = time.perf_counter()

        def progress(i: int, n: int) -> None:
            if sys.stderr.isatty():
                print(f"\rembedding tracks {i}/{n}", end="" if i < n else "\n",
                      file=sys.stderr, flush=True)
            elif i % 25 == 0 or i == n:
                print(f"embedding tracks {i}/{n}", file=sys.stderr, flush=True)

        vectors = track_vectors(rows, data, bundle, progress)
        report = evaluate(vectors, rows, args.k)
        report.update({
            "bundle": bundle.name, "embedding_sha256": bundle.files["embedding"]["sha256"],
            "split": args.split, "seconds": round(time.perf_counter() - start, 1),
        })
    except GenreEdgeError as exc:
        print(f"similarity_eval: error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle '{report['bundle']}' (embedding {report['embedding_sha256'][:12]}), "
          f"{args.split} split: " + format_table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
