"""A damaged or mismatched similarity index (issue 16, item 3).

Vectors of another dimension under the right model hash, meta without ``root``, ``root``
a number, tracks not a list: ``similar`` crashed with tracebacks and ``listen`` died at
its first look-up (a crash loop for the service). Now an index that does not check out
is one line (exit 2) for ``similar``, and ``listen`` logs one line and goes on without
"sounds like". Real components: the bundled model and embedding model in the TFLite
interpreter, an index built from real clips, the ``genre-edge`` CLI.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from firmware_py.bundle import default_bundle_path, load_bundle
from firmware_py.commands import DEMO_CLIP
from firmware_py.similarity import build_index, open_embedding_model
from tests.hostile import cli, lines_with, one_line_error
from tests.paths import clip


@pytest.fixture(scope="module")
def good_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = tmp_path_factory.mktemp("music")
    shutil.copy(DEMO_CLIP, library / "the-demo.opus")
    for genre in ("classical", "pop"):
        shutil.copy(clip(genre, 0, "test"), library / f"{genre}.opus")
    bundle = load_bundle(default_bundle_path())
    out = library.parent / "index.npz"
    build_index(library, out, bundle, open_embedding_model(bundle))
    return out


def _edit(meta: dict, emb: np.ndarray, kind: str) -> tuple[dict, np.ndarray]:
    if kind == "vectors of another dimension":
        emb = np.ones((len(emb), emb.shape[1] // 2), np.float32) / np.sqrt(emb.shape[1] // 2)
    elif kind == "meta without root":
        del meta["root"]
    elif kind == "root a number":
        meta["root"] = 5
    elif kind == "tracks not a list":
        meta["tracks"] = {"a": 1}
    elif kind == "a track that is not an object":
        meta["tracks"][0] = "classical.opus"
    elif kind == "a track without a path":
        del meta["tracks"][1]["path"]
    elif kind == "vectors that are not finite":
        emb = emb.copy()
        emb[0, 0] = np.nan
    elif kind == "no model hash":
        meta["model_sha256"] = None
    return meta, emb


DAMAGE = ["vectors of another dimension", "meta without root", "root a number",
          "tracks not a list", "a track that is not an object", "a track without a path",
          "vectors that are not finite", "no model hash"]


@pytest.fixture
def damaged(good_index: Path, tmp_path: Path) -> Callable[[str], Path]:
    def make(kind: str) -> Path:
        with np.load(good_index, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            emb = np.asarray(data["embeddings"])
        meta, emb = _edit(meta, emb, kind)
        out = tmp_path / "damaged.npz"
        with open(out, "wb") as fh:
            np.savez(fh, embeddings=emb, meta=np.array(json.dumps(meta)))
        return out
    return make


@pytest.mark.parametrize("kind", DAMAGE)
def test_similar_with_a_damaged_index_is_one_line(damaged: Callable[[str], Path], kind: str) -> None:
    query = clip("rock", 0, "test")  # not in the index: it is embedded and looked up
    out = cli("similar", str(query), "--index", str(damaged(kind)), "--json")
    one_line_error(out, "index")
    assert out.stdout == ""


@pytest.mark.parametrize("kind", ["vectors of another dimension", "meta without root",
                                  "tracks not a list"])
def test_listen_goes_on_without_sounds_like(damaged: Callable[[str], Path], tmp_path: Path,
                                            kind: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[similarity]\nindex = "{damaged(kind)}"\nevery_s = 2.0\nwindow_s = 4.0\n')
    out = cli("listen", "--config", str(cfg), "--input", str(DEMO_CLIP), "--fast", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert len(lines_with(out.stderr, ["sounds like is off"])) == 1, out.stderr
    states = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(states) >= 10 and states[-1]["genre"] == "rock"
    assert not any("sounds_like" in s for s in states)


def test_a_good_index_still_answers(good_index: Path) -> None:
    out = cli("similar", str(DEMO_CLIP), "--index", str(good_index), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["neighbours"][0]["path"].endswith("the-demo.opus")
