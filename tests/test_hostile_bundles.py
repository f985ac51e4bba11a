"""Issue 16, item 6 and class "output integrity": hostile bundle manifests and models are
one-line errors; --json output is valid JSON whatever the model emits; one state is one
console line whatever a label holds. Real bundles, real TFLite models, the real CLI."""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

import pytest

from firmware_py.bundle import default_bundle_path, load_bundle, write_bundle
from firmware_py.commands import DEMO_CLIP
from firmware_py.features import DEFAULT_PARAMS
from tests.hostile_helpers import assert_one_line_error, cli, strict_json_lines

#: Address-space cap of the children: a manifest asking for terabytes must meet a
#: MemoryError (a traceback, so a failed test), never this machine's other jobs.
CHILD_MEMORY = 8 << 30


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def _edited_bundle(tmp: Path, name: str, edit) -> Path:
    bundle = tmp / name
    shutil.copytree(default_bundle_path(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _set(path: str, value: Any):
    def edit(manifest: dict) -> None:
        *parents, key = path.split(".")
        node = manifest
        for p in parents:
            node = node[p]
        node[key] = value
    return edit


MANIFEST_CASES = [  # (case, edit, a word the error names)
    ("smoothing a string", _set("smoothing", "abc"), "smoothing"),
    ("provenance a number", _set("provenance", 5), "provenance"),
    ("metrics a list", _set("metrics", [1, 2]), "metrics"),
    ("name a number", _set("name", 7), "name"),
    ("name with a newline", _set("name", "default\nrock"), "name"),
    ("label with a newline", _set("labels", ["classical", "electronic", "pop", "ro\nck"]), "label"),
    ("label with an ANSI escape", _set("labels", ["classical", "electronic", "\x1b[2Jpop", "rock"]),
     "label"),
    ("label with a carriage return", _set("labels", ["classical", "elec\rtronic", "pop", "rock"]),
     "label"),
    ("sample_rate 1e12 (int)", _set("frontend.sample_rate", 10**12), "sample_rate"),
    ("sample_rate 1e12 (float)", _set("frontend.sample_rate", 1e12), "sample_rate"),
    ("n_mels 1e12", _set("frontend.n_mels", 10**12), "n_mels"),
    ("n_fft 2**40", _set("frontend.n_fft", 2**40), "n_fft"),
    ("hop longer than the FFT", _set("frontend.hop_length", 4096), "hop_length"),
    ("window_frames 1e9", _set("frontend.window_frames", 10**9), "window_frames"),
    ("a 10-minute window", _set("frontend.window_frames", 60000), "window_frames"),
    ("frontend a string", _set("frontend", "abc"), "frontend"),
    ("inference a list", _set("inference", []), "inference"),
    ("files.model a number", _set("files.model", 5), "files.model"),
]


@pytest.mark.parametrize("case, edit, word", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_hostile_manifest_is_one_line_and_writes_nothing(tmp_path, case, edit, word) -> None:
    bundle = _edited_bundle(tmp_path, "bundle", edit)
    out = cli(["classify", str(DEMO_CLIP), "--bundle", str(bundle)], preexec_fn=_capped)
    assert_one_line_error(out.returncode, out.stderr, word)
    feats = tmp_path / "f.npy"  # features loads the manifest without the model
    out = cli(["features", str(DEMO_CLIP), "--out", str(feats), "--bundle", str(bundle)],
              preexec_fn=_capped)
    assert_one_line_error(out.returncode, out.stderr, word)
    assert not feats.exists()


# -- hostile models -------------------------------------------------------------------------
@functools.cache
def _tflite(kind: str) -> bytes:
    """A float TFLite model on the default front-end's input: ``(1, 2, 2)`` scores, or
    NaN and +Inf for every window."""
    import tensorflow as tf

    fe = DEFAULT_PARAMS

    @tf.function(input_signature=[tf.TensorSpec([1, fe.window_frames, fe.n_mels, 1], tf.float32)])
    def model(x):
        m = tf.reduce_mean(x, axis=[1, 2, 3])  # one number per window, input-dependent
        if kind == "1x2x2":
            return tf.reshape(tf.tile(tf.sigmoid(m)[:, None], [1, 4]), [1, 2, 2])
        nan = tf.sqrt(-1.0 - tf.nn.relu(m))  # sqrt of a negative number
        inf = tf.exp(1000.0 + tf.nn.relu(m))  # overflows float32
        return tf.stack([nan, inf], axis=-1)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    return conv.convert()


def _model_bundle(tmp: Path, kind: str, labels: list[str]) -> Path:
    (tmp / f"{kind}.tflite").write_bytes(_tflite(kind))
    return write_bundle(tmp / f"bundle-{kind}", model=tmp / f"{kind}.tflite", labels=labels,
                        frontend=DEFAULT_PARAMS, inference_hop_s=1.0)


def test_a_model_with_2x2_outputs_for_2_labels_is_refused_by_classify_and_listen(tmp_path) -> None:
    bundle = _model_bundle(tmp_path, "1x2x2", ["a", "b"])
    for args in (["classify", str(DEMO_CLIP)], ["listen", "--input", str(DEMO_CLIP), "--fast"]):
        out = cli([*args, "--bundle", str(bundle)])
        # one check for both: at load, before any audio
        assert_one_line_error(out.returncode, out.stderr, "output shape [1, 2, 2]")


def test_nan_and_inf_from_the_model_never_make_invalid_json(tmp_path) -> None:
    bundle = _model_bundle(tmp_path, "nan", ["rock", "pop"])
    out = cli(["classify", "--json", str(DEMO_CLIP), "--bundle", str(bundle)])
    assert_one_line_error(out.returncode, out.stderr, "NaN/Inf", "demo-rock.opus")
    assert out.stdout == ""
    out = cli(["listen", "--input", str(DEMO_CLIP), "--fast", "--json", "--bundle", str(bundle)])
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    states = strict_json_lines(out.stdout)
    assert len(states) >= 10
    for state in states:
        assert state["raw"] == {"rock": None, "pop": None}  # the model's own output: null
        assert state["genre"] in ("unknown", "silence")  # the smoother ignored the vectors
    out = cli(["listen", "--input", str(DEMO_CLIP), "--fast", "--bundle", str(bundle)])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == len(states), out.stderr


def test_one_state_is_one_console_line_whatever_printable_labels_hold(tmp_path) -> None:
    odd = ["classique ♫", "drum & bass", "pop \"quoted\"", "rock'n'roll </script>"]
    n = len(load_bundle(default_bundle_path(), check_model=False).labels)  # one per output
    labels = odd + [f"genre n°{i} «{i}»" for i in range(len(odd), n)]
    bundle = _edited_bundle(tmp_path, "bundle", _set("labels", labels))
    args = ["listen", "--input", str(DEMO_CLIP), "--fast", "--bundle", str(bundle)]
    states = strict_json_lines(cli([*args, "--json"]).stdout)
    assert len(states) >= 10 and set(states[-1]["raw"]) == set(labels)
    out = cli(args, env={"PYTHONIOENCODING": "utf-8:strict"})
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(states)
    out = cli(["classify", str(DEMO_CLIP), "--bundle", str(bundle)])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1
    assert os.fsencode(out.stdout)  # printable text
