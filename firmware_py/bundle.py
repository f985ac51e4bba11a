"""The model bundle: one self-describing directory the device runs from.

Layout::

    BUNDLE/
      manifest.json          schema version, labels, front-end, inference, smoothing,
                             provenance, metrics, and a sha256 for every file below
      model.tflite           full-integer int8 model (always)
      model_edgetpu.tflite   Edge TPU-compiled model (when edgetpu_compiler was run)
      model_float.tflite     float32 model (optional, for comparisons)
      model_embedding.tflite int8 track-embedding model: input -> pooled layer before the
                             classifier (optional; ``genre-edge index`` / ``similar``)

The device takes every front-end and label setting from the manifest, so a
front-end mismatch between training and serving cannot happen; ``load_bundle``
verifies hashes and that the model's tensors agree with the manifest, and fails
with one line naming the problem otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError, GenreEdgeError
from .features import FrontendParams
from .files import open_regular, read_regular_bytes
from .inference_settings import MAX_HOP_S  # a longer hop is a typo, not a design
from .text import display

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_KEYS = ("model", "edgetpu_model", "float_model", "embedding")
DEFAULT_FILENAMES = {
    "model": "model.tflite",
    "edgetpu_model": "model_edgetpu.tflite",
    "float_model": "model_float.tflite",
    "embedding": "model_embedding.tflite",
}
REQUIRED_KEYS = ("schema_version", "labels", "frontend", "inference", "files")
#: Largest manifest read (the shipped one is 5 KB): a bigger one is not a manifest.
MAX_MANIFEST_BYTES = 8 << 20
#: Longest label or bundle name (both are shown on a 800x480 display and in topics' payloads).
MAX_NAME_CHARS = 64
FIX = "re-create it with 'genre-edge convert' or re-install genre-edge"


class HopGeometry:
    """The window and the inference hop in front-end frames, for anything with a
    ``frontend`` and an ``inference_hop_s`` (a bundle, a training run's record)."""

    frontend: FrontendParams
    inference_hop_s: float

    @property
    def window_frames(self) -> int:
        return self.frontend.window_frames

    @property
    def inference_hop_frames(self) -> int:
        return hop_frames_for(self.inference_hop_s, self.frontend)

    @property
    def framed_inference_hop_s(self) -> float:
        """The inference hop as ``listen`` runs it: whole front-end frames, in seconds."""
        return self.inference_hop_frames * self.frontend.frame_hop_s


@dataclass
class Bundle(HopGeometry):
    path: Path
    labels: list[str]
    frontend: FrontendParams
    inference_hop_s: float  # the manifest's inference.hop_s: seconds between inferences
    smoothing: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The interpreter load_bundle checked, with the open_model() arguments it was opened
    # with: the first matching open_model() takes it (no second copy in memory).
    checked_model: tuple[tuple[Any, ...], Any] | None = field(
        default=None, init=False, repr=False, compare=False)  # not copied by replace()

    def file(self, key: str = "model") -> Path | None:
        entry = self.files.get(key)
        return self.path / entry["path"] if entry else None

    @property
    def model_path(self) -> Path:
        path = self.file("model")
        assert path is not None  # validated on load
        return path

    def open_model(
        self, *, threads: int = 1, edgetpu: str | None = None, backend: str | None = None,
        xnnpack: bool = True, which: str = "model",
    ):
        """An interpreter for this bundle's model, checked against the manifest.

        With ``edgetpu`` set, the Edge TPU-compiled model is used when the bundle has
        one (the CPU model otherwise: it still runs, on the CPU, through the delegate).
        """
        from .inference import Model

        checked, self.checked_model = self.checked_model, None
        if checked is not None and checked[0] == (which, threads, edgetpu, backend, xnnpack):
            return checked[1]  # the interpreter load_bundle checked: no second copy in memory
        use_tpu_model = edgetpu and which == "model" and "edgetpu_model" in self.files
        key = "edgetpu_model" if use_tpu_model else which
        path = self.file(key)
        if path is None:
            raise BundleError(f"bundle {self.path} has no {key}: {FIX}")
        model = Model(path, threads=threads, edgetpu=edgetpu, backend=backend, xnnpack=xnnpack)
        if key == "embedding":
            check_embedding_shapes(self, model)
        else:
            check_model_shapes(self, model)
        return model


def name_ok(name: Any) -> bool:
    """A label or bundle name that prints as itself on one line: a string of printable
    characters (no newline, tab, escape or other control character), not too long."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name.isprintable()


def hop_s_ok(hop_s: Any) -> bool:
    """A usable inference hop: a finite number of seconds in (0, MAX_HOP_S]."""
    return (isinstance(hop_s, (int, float)) and not isinstance(hop_s, bool)
            and math.isfinite(hop_s) and 0 < hop_s <= MAX_HOP_S)


def hop_frames_for(inference_hop_s: float, frontend: FrontendParams) -> int:
    """An inference hop in seconds as a whole number of front-end frames (at least 1)."""
    return max(1, round(inference_hop_s / frontend.frame_hop_s))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path, BundleError, FIX), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_input_shape(bundle: Bundle, model: Any, what: str = "model") -> None:
    fe = bundle.frontend
    want_in = {(1, fe.window_frames, fe.n_mels, 1), (1, fe.window_frames, fe.n_mels)}
    if tuple(model.input_shape) not in want_in:
        raise BundleError(
            f"bundle {bundle.path}: {what} input shape {list(model.input_shape)} does not match "
            f"the front-end ({fe.window_frames} frames x {fe.n_mels} mels): model and manifest "
            f"were mixed up; {FIX}"
        )


def check_embedding_shapes(bundle: Bundle, model: Any) -> None:
    """The embedding model takes one front-end window and gives one vector ``(1, dim)``."""
    _check_input_shape(bundle, model, "embedding model")
    shape = tuple(model.output_shape)
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise BundleError(
            f"bundle {bundle.path}: embedding model output shape {list(shape)} is not one "
            f"vector (1, dim): {FIX}"
        )


def check_model_shapes(bundle: Bundle, model: Any) -> None:
    """The model's input must be one front-end window, its output one score per label:
    ``(1, labels)`` or ``(labels,)``. The one check of the model's output, for ``classify``
    and ``listen`` alike (a (1, 2, 2) output holds 4 scores, not 2)."""
    _check_input_shape(bundle, model)
    shape = tuple(model.output_shape)
    if len(shape) not in (1, 2) or math.prod(shape) != shape[-1]:
        raise BundleError(
            f"bundle {bundle.path}: model output shape {list(shape)} is not one score per "
            f"label (a vector [1, labels]): {FIX}"
        )
    if shape[-1] != len(bundle.labels):
        raise BundleError(
            f"bundle {bundle.path}: model has {shape[-1]} outputs but the manifest lists "
            f"{len(bundle.labels)} labels: {FIX}"
        )


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise BundleError(message)


def read_bundle_manifest(path: str | Path) -> tuple[Path, dict[str, Any]]:
    root = Path(path)
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    if not root.exists():
        raise BundleError(f"model bundle not found: {root}: check --bundle (a bundle is a directory)")
    if not root.is_dir():
        raise BundleError(
            f"{root} is a file, not a model bundle directory: pass the directory that holds "
            f"{MANIFEST}"
        )
    manifest_path = root / MANIFEST
    if not os.path.lexists(manifest_path):
        raise BundleError(f"bundle {root} has no {MANIFEST}: not a genre-edge bundle; {FIX}")
    raw = read_regular_bytes(manifest_path, BundleError, FIX, limit=MAX_MANIFEST_BYTES,
                             what="bundle manifest")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"bundle {root}: {MANIFEST} is not UTF-8 text (corrupt): {FIX}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"bundle {root}: {MANIFEST} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}): {FIX}"
        ) from None
    _require(isinstance(data, dict), f"bundle {root}: {MANIFEST} is not a JSON object: {FIX}")
    return root, data


def _smoothing_defaults(root: Path, values: Any) -> dict[str, Any]:
    """The manifest's smoothing defaults, checked per key against the same bounds as the
    config's [smoothing] (a bundle must not smuggle in 1e20 windows)."""
    from .smoothing import SmoothingParams

    problems = (SmoothingParams.field_problems(values) if isinstance(values, dict)
                else ["it is not an object"])
    _require(not problems, f"bundle {root}: bad smoothing defaults ({'; '.join(problems)}): {FIX}")
    return dict(values)


def load_bundle(path: str | Path, *, check_model: bool = True) -> Bundle:
    """Read and validate a bundle; with ``check_model`` also load the model to check shapes."""
    root, data = read_bundle_manifest(path)
    version = data.get("schema_version")
    _require(
        isinstance(version, int) and not isinstance(version, bool),  # true == 1 in Python
        f"bundle {root}: schema_version is missing or not an integer: {FIX}",
    )
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle {root} uses manifest schema {version}, newer than this genre-edge "
            f"understands ({SCHEMA_VERSION}): upgrade genre-edge"
        )
    _require(
        version == SCHEMA_VERSION,
        f"bundle {root} uses manifest schema {version}, expected {SCHEMA_VERSION}: {FIX}",
    )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    _require(not missing, f"bundle {root}: manifest lacks {', '.join(missing)}: {FIX}")

    labels = data["labels"]
    _require(
        isinstance(labels, list) and labels and all(isinstance(x, str) and x for x in labels),
        f"bundle {root}: labels must be a non-empty list of names: {FIX}",
    )
    _require(len(set(labels)) == len(labels), f"bundle {root}: labels repeat: {FIX}")
    # A label is printed in every console line and published in every state: one with a
    # newline or an escape sequence would split a state over two lines or drive the terminal.
    bad = next((x for x in labels if not name_ok(x)), None)
    _require(bad is None, f"bundle {root}: label {repr(bad)[:80]} is not a plain name "
                          f"(control characters or over {MAX_NAME_CHARS} characters): {FIX}")
    for key in ("smoothing", "provenance", "metrics"):
        _require(data.get(key) is None or isinstance(data[key], dict),
                 f"bundle {root}: {key} must be an object, got {type(data[key]).__name__}: {FIX}")
    name = data.get("name")
    _require(name in (None, "") or name_ok(name),
             f"bundle {root}: name {repr(name)[:80]} is not a plain name (control characters "
             f"or over {MAX_NAME_CHARS} characters): {FIX}")

    _require(isinstance(data["frontend"], dict), f"bundle {root}: frontend is not an object: {FIX}")
    try:
        frontend = FrontendParams.from_dict(data["frontend"])
    except TypeError as exc:
        raise BundleError(f"bundle {root}: bad front-end parameters ({exc}): {FIX}") from None
    except GenreEdgeError as exc:
        raise BundleError(f"bundle {root}: {exc}") from None

    inference = data["inference"]
    _require(isinstance(inference, dict), f"bundle {root}: inference is not an object: {FIX}")
    hop_s = inference.get("hop_s")
    _require(
        hop_s_ok(hop_s),
        f"bundle {root}: inference.hop_s must be a number of seconds in (0, {MAX_HOP_S:g}], "
        f"got {hop_s!r}: {FIX}",
    )
    window_frames = inference.get("window_frames", frontend.window_frames)
    _require(
        window_frames == frontend.window_frames,
        f"bundle {root}: inference.window_frames ({window_frames}) differs from the front-end's "
        f"({frontend.window_frames}): {FIX}",
    )

    files = data["files"]
    _require(
        isinstance(files, dict) and "model" in files,
        f"bundle {root}: files must name at least the int8 'model': {FIX}",
    )
    for key, entry in files.items():
        _require(
            isinstance(entry, dict) and isinstance(entry.get("path"), str)
            and isinstance(entry.get("sha256"), str),
            f"bundle {root}: files.{key} needs 'path' and 'sha256': {FIX}",
        )
        file_path = root / entry["path"]
        _require(
            Path(entry["path"]).name == entry["path"],
            f"bundle {root}: files.{key} must be a plain file name inside the bundle: {FIX}",
        )
        _require(file_path.is_file(), f"bundle {root}: {entry['path']} is missing: {FIX}")
        digest = sha256_file(file_path)
        _require(
            digest == entry["sha256"],
            f"bundle {root}: {entry['path']} does not match its sha256 in {MANIFEST} (corrupt or "
            f"modified): {FIX}",
        )

    bundle = Bundle(
        path=root,
        labels=list(labels),
        frontend=frontend,
        inference_hop_s=float(hop_s),
        smoothing=_smoothing_defaults(root, data.get("smoothing") or {}),
        provenance=dict(data.get("provenance") or {}),
        metrics=dict(data.get("metrics") or {}),
        name=name or display(root.name),
        files=dict(files),
    )
    if check_model:
        if "embedding" in bundle.files:
            bundle.open_model(which="embedding")  # checked, then freed
        # Loads the interpreter and checks shapes (raises on a mismatch); the first
        # open_model() with default arguments gets this very interpreter.
        bundle.checked_model = (("model", 1, None, None, True), bundle.open_model())
    return bundle


def write_bundle(
    out_dir: str | Path,
    *,
    model: str | Path,
    labels: list[str],
    frontend: FrontendParams,
    inference_hop_s: float,
    smoothing: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    name: str = "",
    edgetpu_model: str | Path | None = None,
    float_model: str | Path | None = None,
    embedding_model: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Copy model files into ``out_dir`` and write a manifest with their hashes."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenreEdgeError(
            f"cannot create bundle directory {out} ({exc.strerror}): choose a writable --out"
        ) from None
    files: dict[str, dict[str, Any]] = {}
    sources = (("model", model), ("edgetpu_model", edgetpu_model), ("float_model", float_model),
               ("embedding", embedding_model))
    for key, src in sources:
        if src is None:
            continue
        src = Path(src)
        dst = out / DEFAULT_FILENAMES[key]
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        files[key] = {"path": dst.name, "sha256": sha256_file(dst), "bytes": dst.stat().st_size}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name or out.name,
        "labels": list(labels),
        "frontend": frontend.to_dict(),
        "frontend_digest": frontend.digest(),
        # the file format's name: "hop_s" inside "inference" is the inference hop
        "inference": {"window_frames": frontend.window_frames, "hop_s": float(inference_hop_s)},
        "smoothing": dict(smoothing or {}),
        "files": files,
        "provenance": dict(provenance or {}),
        "metrics": dict(metrics or {}),
    }
    if extra:
        manifest.update(extra)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return out


def default_bundle_path() -> Path:
    """The model shipped inside the package (``firmware_py/models/default``)."""
    return Path(__file__).resolve().parent / "models" / "default"
