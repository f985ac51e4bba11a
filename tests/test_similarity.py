"""Musical similarity: embedding model in the bundle, ``index`` (incremental), ``similar``.

The bundle is the session's ``synthetic_bundle`` (an edge model trained on synthetic
music and converted by ``convert_run``, so the converter's embedding model is what is
tested); the music indexed and queried is real clips from the shared data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import firmware_py.similarity as sim
from firmware_py.bundle import MANIFEST, load_bundle, write_bundle
from firmware_py.cli import main
from firmware_py.errors import BundleError
from firmware_py.similarity import Index, build_index, l2_normalize, pool_windows
from tests.paths import REPO, clip

GENRES = ("classical", "rock", "electronic")


def one_line_errors(err: str) -> list[str]:
    lines = [line for line in err.strip().splitlines() if line]
    assert lines, "expected an error message"
    for line in lines:
        assert line.startswith("genre-edge: "), line
    return lines


@pytest.fixture(scope="module")
def sim_bundles(synthetic_bundle: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, Path]:
    """(the converted synthetic bundle, the same bundle without its embedding model)."""
    old = load_bundle(synthetic_bundle)
    without = write_bundle(tmp_path_factory.mktemp("old-bundle") / "old",
                           model=synthetic_bundle / "model.tflite", labels=old.labels,
                           frontend=old.frontend, inference_hop_s=old.inference_hop_s, name="old")
    return synthetic_bundle, without


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Six real test-split clips, two per genre, in genre folders (mtimes preserved)."""
    lib = tmp_path / "lib"
    for genre in GENRES:
        (lib / genre).mkdir(parents=True)
        for i in range(2):
            src = clip(genre, i, "test")
            shutil.copy2(src, lib / genre / src.name)
    return lib


def index_cli(lib: Path, out: Path, bundle: Path, *extra: str) -> int:
    return main(["index", str(lib), "--out", str(out), "--bundle", str(bundle), *extra])


# -- embeddings and the bundle -------------------------------------------------------------
def test_pool_windows_is_unit_mean_of_unit_windows() -> None:
    w = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 10.0], [0.0, 0.0, 0.0]], np.float32)
    vec = pool_windows(w)
    want = np.array([0.6, 0.8, 1.0]) / 3
    np.testing.assert_allclose(vec, want / np.linalg.norm(want), rtol=1e-6)
    assert np.linalg.norm(vec) == pytest.approx(1.0)
    assert np.all(l2_normalize(np.zeros(4)) == 0)  # silence stays finite


def test_bundle_loads_and_runs_embedding(sim_bundles: tuple[Path, Path]) -> None:
    bundle = load_bundle(sim_bundles[0])
    assert bundle.file("embedding").name == "model_embedding.tflite"
    emb = bundle.open_model(which="embedding")
    assert emb.input_shape == (1, 300, 64, 1)
    dim = emb.output_shape[1]
    assert emb.output_shape == (1, dim) and emb.output_dtype == np.int8
    rng = np.random.default_rng(0)
    out = emb.predict_many(rng.uniform(-80, 0, (3, 300, 64)).astype(np.float32))
    # Dequantised float vectors, not probabilities: ReLU + mean, so >= 0, no sum to 1.
    assert out.shape == (3, dim) and out.dtype == np.float32
    assert np.all(out >= 0) and not np.allclose(out.sum(axis=1), 1.0)


def test_bundle_rejects_bad_embedding(sim_bundles: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.tflite_models import write_tiny_model

    damaged = tmp_path / "damaged"
    shutil.copytree(sim_bundles[0], damaged)
    with open(damaged / "model_embedding.tflite", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="model_embedding.tflite does not match its sha256"):
        load_bundle(damaged)

    wrong = write_tiny_model(tmp_path / "wrong.tflite", 200, 64, 8)
    out = write_bundle(tmp_path / "wrong", model=sim_bundles[0] / "model.tflite",
                       embedding_model=wrong, labels=load_bundle(sim_bundles[0]).labels,
                       frontend=load_bundle(sim_bundles[0]).frontend, inference_hop_s=1.0)
    with pytest.raises(BundleError, match=r"embedding model input shape \[1, 200, 64, 1\]"):
        load_bundle(out)


def test_converter_adds_embedding_model(synthetic_bundle: Path) -> None:
    """convert_run quantises the pooled layer to int8, checks it for the Edge TPU, bundles it."""
    bundle = load_bundle(synthetic_bundle)
    emb = bundle.open_model(which="embedding")
    assert emb.input_dtype == np.int8 and emb.output_dtype == np.int8
    e = bundle.metrics["embedding"]
    assert emb.output_shape == (1, e["float_vs_int8"]["dim"]) and e["float_vs_int8"]["dim"] >= 32
    assert e["layer"] == "gap"
    assert e["edgetpu"]["all_mappable"], e["edgetpu"]["summary"]
    assert e["float_vs_int8"]["cosine_mean"] > 0.99
    assert "embedding model" in (synthetic_bundle / "edgetpu_report.txt").read_text()


# -- index and similar -----------------------------------------------------------------------
def test_index_and_similar(sim_bundles: tuple[Path, Path], library: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    bundle = sim_bundles[0]
    out = tmp_path / "music.npz"
    assert index_cli(library, out, bundle) == 0
    captured = capsys.readouterr()
    assert "6 tracks (6 added, 0 updated, 0 unchanged, 0 removed)" in captured.out
    assert "[1/6] adding" in captured.err and "[6/6]" in captured.err  # progress on stderr

    idx = Index.load(out)
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert idx.model_sha256 == manifest["files"]["embedding"]["sha256"]
    assert idx.root == library.resolve() and len(idx) == 6
    np.testing.assert_allclose(np.linalg.norm(idx.embeddings, axis=1), 1.0, atol=1e-5)
    assert {t["path"].split("/")[0] for t in idx.tracks} == set(GENRES)

    # A copy outside the library: embedded afresh; its nearest track is its original.
    original = sorted((library / "rock").iterdir())[0]
    query = tmp_path / "query.opus"
    shutil.copyfile(original, query)
    assert main(["similar", str(query), "--index", str(out), "--bundle", str(bundle),
                 "--json", "--top", "4"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"file", "index", "tracks", "model", "neighbours"}
    assert record["file"] == str(query) and record["tracks"] == 6
    assert record["model"] == idx.model_sha256[:12]
    hits = record["neighbours"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(set(h) == {"rank", "path", "similarity"} for h in hits)
    assert hits[0]["path"] == str(original.resolve()) and hits[0]["similarity"] >= 0.999
    sims = [h["similarity"] for h in hits]
    assert sims == sorted(sims, reverse=True)
    exact = idx.query(sim.embed_file(query, load_bundle(bundle),
                                     load_bundle(bundle).open_model(which="embedding"))[0], top=2)
    assert exact[0].path == str(original.resolve()) and exact[0].similarity > exact[1].similarity

    # Every indexed track's nearest neighbour is itself (similarity 1).
    for i, path in enumerate(idx.path_of(j) for j in range(len(idx))):
        best = idx.query(idx.embeddings[i], top=1)[0]
        assert best.path == str(path) and best.similarity == pytest.approx(1.0, abs=1e-5)

    # Text output; --exclude-self leaves an indexed file itself out.
    assert main(["similar", str(original), "--index", str(out), "--bundle", str(bundle),
                 "--top", "2", "--exclude-self"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == f"{original}: 2 nearest of 6 indexed tracks"
    assert len(text) == 3 and str(original) not in "".join(text[1:])
    assert text[1].strip().startswith("1. ")


def test_similar_does_not_import_tensorflow(sim_bundles: tuple[Path, Path], library: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "i.npz"
    build_index(library, out, load_bundle(sim_bundles[0]),
                load_bundle(sim_bundles[0]).open_model(which="embedding"))
    code = (
        "import sys; from firmware_py.cli import main; "
        f"rc = main(['similar', {str(sorted(library.rglob('*.opus'))[0])!r}, '--index', "
        f"{str(out)!r}, '--bundle', {str(sim_bundles[0])!r}, '--json']); "
        "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "0 False False", res.stderr[-2000:]


def test_incremental_reindex(sim_bundles: tuple[Path, Path], library: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = load_bundle(sim_bundles[0])
    model = bundle.open_model(which="embedding")
    out = tmp_path / "index.npz"
    first, stats = build_index(library, out, bundle, model)
    assert (stats.added, stats.tracks) == (6, 6)
    before = {t["path"]: first.embeddings[i] for i, t in enumerate(first.tracks)}

    touched = sorted((library / "classical").iterdir())[0]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    modified = sorted((library / "rock").iterdir())[1]
    shutil.copyfile(clip("pop", 0, "test"), modified)  # other music, same name
    deleted = sorted((library / "electronic").iterdir())[0]
    deleted.unlink()
    added = library / "pop" / "new.opus"
    added.parent.mkdir()
    shutil.copyfile(clip("pop", 1, "test"), added)

    decoded: list[str] = []
    real_embed = sim.embed_file
    monkeypatch.setattr(sim, "embed_file", lambda p, *a: decoded.append(Path(p).name)
                        or real_embed(p, *a))
    actions: dict[str, str] = {}
    second, stats = build_index(library, out, bundle, model,
                                progress=lambda n, total, rel, action: actions.update({rel: action}))
    rel = lambda p: p.relative_to(library).as_posix()  # noqa: E731
    assert (stats.tracks, stats.added, stats.updated, stats.unchanged, stats.removed) == \
        (6, 1, 2, 3, 1)
    assert sorted(decoded) == sorted([touched.name, modified.name, added.name])
    assert actions[rel(touched)] == "updating" and actions[rel(modified)] == "updating"
    assert actions[rel(added)] == "adding"
    assert sum(a == "unchanged" for a in actions.values()) == 3

    after = {t["path"]: second.embeddings[i] for i, t in enumerate(second.tracks)}
    assert rel(deleted) not in after and rel(added) in after
    np.testing.assert_allclose(after[rel(touched)], before[rel(touched)], atol=1e-6)  # same audio
    assert float(after[rel(modified)] @ before[rel(modified)]) < 0.9999  # new audio
    for path in set(before) - {rel(touched), rel(modified), rel(deleted)}:
        assert np.array_equal(after[path], before[path])  # reused, not recomputed

    # The reloaded file holds the same thing; a third run changes nothing.
    assert Index.load(out).tracks == second.tracks
    _, stats = build_index(library, out, bundle, model)
    assert (stats.unchanged, stats.added, stats.updated, stats.removed) == (6, 0, 0, 0)


def test_one_line_errors(sim_bundles: tuple[Path, Path], library: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    bundle, old_bundle = sim_bundles
    out = tmp_path / "index.npz"
    some = sorted(library.rglob("*.opus"))[0]

    def similar(*argv: str) -> tuple[int, list[str]]:
        code = main(["similar", str(some), "--index", str(out), "--bundle", str(bundle), *argv])
        return code, one_line_errors(capsys.readouterr().err)

    code, err = similar()  # no index yet
    assert code == 2 and "similarity index not found" in err[0] and "genre-edge index" in err[0]

    out.write_text("not an index")
    code, err = similar()
    assert code == 2 and "is not a genre-edge similarity index" in err[0]
    out.unlink()

    # A bundle without an embedding model (converted before this feature).
    assert index_cli(library, out, old_bundle) == 2
    err = one_line_errors(capsys.readouterr().err)
    assert "has no embedding model" in err[0]
    assert "re-convert the bundle with genre-edge convert" in err[0]

    # An unreadable file in the folder is skipped with a warning; the rest is indexed.
    (library / "broken.mp3").write_bytes(b"\x00garbage" * 100)
    assert index_cli(library, out, bundle, "-q") == 1
    captured = capsys.readouterr()
    assert "6 tracks (6 added" in captured.out and "1 unreadable" in captured.out
    assert "skipped broken.mp3" in one_line_errors(captured.err)[0]

    code = main(["similar", str(some), "--index", str(out), "--bundle", str(old_bundle)])
    err = one_line_errors(capsys.readouterr().err)
    assert code == 2 and "re-convert the bundle with genre-edge convert" in err[0]

    # An index built with another model is refused, by `similar` and by re-indexing.
    idx = Index.load(out)
    idx.model_sha256 = "0" * 64
    idx.save(out)
    code, err = similar()
    assert code == 2 and "was built with another model" in err[0] and "--rebuild" in err[0]
    assert index_cli(library, out, bundle) == 2
    assert "was built with another model" in one_line_errors(capsys.readouterr().err)[0]
    assert index_cli(library, out, bundle, "--rebuild", "-q") == 1  # broken.mp3 still there
    capsys.readouterr()

    # Unreadable or missing query files.
    code = main(["similar", str(library / "broken.mp3"), "--index", str(out), "--bundle",
                 str(bundle)])
    err = one_line_errors(capsys.readouterr().err)
    assert code == 2 and "cannot decode audio file" in err[0]
    code, err = similar("--top", "0")
    assert code == 2 and "--top" in err[0]
    code = main(["similar", str(tmp_path / "nope.wav"), "--index", str(out), "--bundle",
                 str(bundle)])
    assert code == 2 and "audio file not found" in one_line_errors(capsys.readouterr().err)[0]
    assert index_cli(tmp_path / "no-such-folder", out, bundle) == 2
    assert "folder not found" in one_line_errors(capsys.readouterr().err)[0]
    assert index_cli(library, tmp_path / "other.npz", bundle, "-q") == 1
    capsys.readouterr()
    assert index_cli(library / "rock", tmp_path / "other.npz", bundle) == 2
    assert "was built from" in one_line_errors(capsys.readouterr().err)[0]
