"""``genre-edge index`` and ``genre-edge similar`` (light imports; work happens in ``run``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli import Command
from .errors import GenreEdgeError
from .text import display

INDEX_ENV = "GENRE_EDGE_INDEX"


def default_index_path() -> Path:
    """``$GENRE_EDGE_INDEX``, else ``$XDG_DATA_HOME/genre-edge/index.npz``."""
    env = os.environ.get(INDEX_ENV)
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "genre-edge" / "index.npz"


def _open(bundle_arg: str | None, threads: int):
    from .bundle import default_bundle_path, load_bundle
    from .similarity import open_embedding_model

    bundle = load_bundle(bundle_arg or default_bundle_path(), check_model=False)
    return bundle, open_embedding_model(bundle, threads=threads)


class _Progress:
    """One updating line on a terminal; a line per decoded file otherwise (logs, pipes)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, rel: str, action: str) -> None:
        if self.quiet:
            return
        width = len(str(total))
        if self.tty:
            line = f"[{done:>{width}}/{total}] {action:<9} {display(rel)}"[:110]
            print(f"\r{line:<110}", end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif action != "unchanged":
            print(f"[{done:>{width}}/{total}] {action} {display(rel)}", file=sys.stderr,
                  flush=True)


# -- index -------------------------------------------------------------------------------
def _index_configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Index a music folder for 'genre-edge similar': one embedding per track from the "
        "bundle's embedding model. Re-running updates the index: files with unchanged size "
        "and mtime are skipped, deleted files are dropped."
    )
    p.add_argument("folder", help="music folder (searched recursively)")
    p.add_argument("--out", help=f"index file (.npz) to create or update (default: "
                                 f"${INDEX_ENV} or ~/.local/share/genre-edge/index.npz)")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--rebuild", action="store_true",
                   help="ignore an existing index at --out and embed every file again")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _index_run(args: argparse.Namespace) -> int:
    from .similarity import build_index

    out = Path(args.out) if args.out else default_index_path()
    bundle, model = _open(args.bundle, args.threads)
    progress = _Progress(args.quiet)
    index, stats = build_index(args.folder, out, bundle, model, rebuild=args.rebuild,
                               progress=progress)
    for failure in stats.failed:
        print(f"genre-edge: warning: skipped {failure}", file=sys.stderr)
    print(f"{display(out)}: {stats.summary()}, {index.embeddings.shape[1]}-d embeddings from bundle "
          f"'{bundle.name}' (model {index.model_sha256[:12]})", flush=True)
    return 1 if stats.failed else 0


index = Command("index", "index a music folder for 'similar' (track embeddings)",
                _index_configure, _index_run)


# -- similar -----------------------------------------------------------------------------
def _similar_configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "List the indexed tracks that sound most like FILE (cosine similarity of track "
        "embeddings; 1.0 = identical). Build the index first with 'genre-edge index'."
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s) to find neighbours of")
    p.add_argument("--index", help=f"index file (default: ${INDEX_ENV} or "
                                   "~/.local/share/genre-edge/index.npz)")
    p.add_argument("--bundle", help="model bundle the index was built with "
                                    "(default: the bundled model)")
    p.add_argument("--top", type=int, default=5, help="neighbours to list (default 5)")
    p.add_argument("--exclude-self", action="store_true",
                   help="leave FILE itself out when it is in the index")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per FILE: file, index, model, neighbours")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")


def _similar_run(args: argparse.Namespace) -> int:
    from .errors import skip_reason
    from .similarity import Index, embed_file
    from .text import json_line

    if args.top < 1:
        raise GenreEdgeError(f"--top {args.top}: give at least 1")
    index_path = Path(args.index) if args.index else default_index_path()
    idx = Index.load(index_path)
    bundle, model = _open(args.bundle, args.threads)
    idx.check_model(bundle, index_path, dim=int(model.output_shape[-1]))
    failures = 0
    for path in args.files:
        row = idx.lookup(path)
        try:
            # An indexed, unchanged file already has its embedding: no decoding needed.
            vec = idx.embeddings[row] if row is not None else embed_file(path, bundle, model)[0]
        except Exception as exc:  # noqa: BLE001 - one bad file of any kind skips that file
            failures += 1
            print(f"genre-edge: error: {skip_reason(exc, path)}", file=sys.stderr, flush=True)
            continue
        exclude = [row] if (args.exclude_self and row is not None) else []
        if args.exclude_self and row is None:  # indexed but changed since: still itself
            exclude = [i for i in range(len(idx)) if idx.path_of(i) == Path(path).resolve()]
        neighbours = idx.query(vec, top=args.top, exclude=exclude)
        if args.json:
            print(json_line({
                "file": str(path), "index": str(index_path), "tracks": len(idx),
                "model": idx.model_sha256[:12],
                "neighbours": [n.to_json() for n in neighbours],
            }), flush=True)
            continue
        print(f"{display(path)}: {len(neighbours)} nearest of {len(idx)} indexed tracks")
        for n in neighbours:
            print(f"  {n.rank:>2}. {n.similarity:6.3f}  {display(n.path)}", flush=True)
    if failures == len(args.files):
        return 2
    return 1 if failures else 0


similar = Command("similar", "list the indexed tracks that sound most like a file",
                  _similar_configure, _similar_run)
