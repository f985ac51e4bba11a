"""TFLite interpreter backends and a small model wrapper (float features in, probabilities out).

Backends, in order: ``ai_edge_litert`` (the maintained LiteRT wheel, aarch64 included),
``tflite_runtime`` (older Pis / Pythons), ``tensorflow.lite`` (workstations). TensorFlow
is only tried last and only if nothing lighter is installed, so the device never
imports it.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DeviceError, GenreEdgeError
from .native import native_stderr_to_log

log = logging.getLogger(__name__)

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclass
class Backend:
    name: str
    version: str
    interpreter_cls: Any
    load_delegate: Any


def _import_backend(name: str) -> Backend:
    if name == "ai_edge_litert":
        mod = importlib.import_module("ai_edge_litert.interpreter")
        top = importlib.import_module("ai_edge_litert")
        version = getattr(top, "__version__", "")
        if not version:
            from importlib.metadata import version as dist_version

            version = dist_version("ai-edge-litert")
        return Backend(name, version, mod.Interpreter, mod.load_delegate)
    if name == "tflite_runtime":
        mod = importlib.import_module("tflite_runtime.interpreter")
        top = importlib.import_module("tflite_runtime")
        return Backend(name, getattr(top, "__version__", ""), mod.Interpreter, mod.load_delegate)
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return Backend(
            name, tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate
        )
    raise GenreEdgeError(f"unknown interpreter backend {name!r}: use one of {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    """Backends that import here (TensorFlow is only probed, never imported, if absent)."""
    found = []
    for name in BACKENDS:
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    return found


def get_backend(preferred: str | None = None) -> Backend:
    """The named backend, or the first that imports."""
    if preferred:
        try:
            return _import_backend(preferred)
        except ImportError:
            raise DeviceError(
                f"interpreter backend {preferred!r} is not installed: pip install "
                f"{'ai-edge-litert' if preferred == 'ai_edge_litert' else preferred.replace('_', '-')}"
            ) from None
    for name in BACKENDS:
        try:
            return _import_backend(name)
        except ImportError:
            continue
    raise DeviceError(
        "no TFLite interpreter installed: pip install ai-edge-litert "
        "(or tflite-runtime on older systems)"
    )


class Model:
    """One TFLite model: quantises float log-mel windows, invokes, returns probabilities.

    Parameters
    ----------
    path : Path
        ``.tflite`` file (int8 or float32 input/output).
    threads : int
        CPU threads for the interpreter.
    backend : str, optional
        Force a backend (see ``BACKENDS``).
    edgetpu : str, optional
        ``"usb"`` or ``"pci"`` to run an Edge TPU-compiled model through
        ``libedgetpu``; when the TPU or library is missing this raises
        :class:`DeviceError` so the caller can fall back to the CPU model.
    xnnpack : bool
        Use the XNNPACK delegate (default on); off is for benchmarks.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 1,
        backend: str | None = None,
        edgetpu: str | None = None,
        xnnpack: bool = True,
    ) -> None:
        self.path = Path(path)
        self.backend = get_backend(backend)
        kwargs: dict[str, Any] = {"model_path": str(self.path), "num_threads": max(1, threads)}
        if edgetpu:
            kwargs["experimental_delegates"] = [self._edgetpu_delegate(edgetpu)]
        if not xnnpack:
            resolver = _no_xnnpack_resolver(self.backend)
            if resolver is not None:
                kwargs["experimental_op_resolver_type"] = resolver
        try:
            with native_stderr_to_log():
                self.interpreter = self.backend.interpreter_cls(**kwargs)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise GenreEdgeError(
                f"cannot load model {self.path} ({' '.join(str(exc).split())[:200]}): the file "
                "is not a valid TFLite model; re-create the bundle"
            ) from None
        self.threads = threads
        self.edgetpu = edgetpu
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self.input_index = inp["index"]
        self.output_index = out["index"]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.output_shape = tuple(int(d) for d in out["shape"])
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self.input_scale, self.input_zero_point = inp["quantization"]
        self.output_scale, self.output_zero_point = out["quantization"]

    @property
    def quantized(self) -> bool:
        return self.input_dtype in (np.dtype(np.int8), np.dtype(np.uint8))

    def quantize_input(self, window: np.ndarray) -> np.ndarray:
        """Float log-mel ``(frames, mels)`` -> the model's input tensor (batch 1)."""
        x = np.asarray(window, dtype=np.float32).reshape(self.input_shape)
        if not self.quantized:
            return x
        info = np.iinfo(self.input_dtype)
        q = np.round(x / self.input_scale) + self.input_zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw).reshape(-1)
        if self.output_dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            return ((raw.astype(np.float32) - self.output_zero_point) * self.output_scale).astype(
                np.float32
            )
        return raw.astype(np.float32)

    def invoke_raw(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Probabilities for one ``(frames, mels)`` float window."""
        return self.dequantize_output(self.invoke_raw(self.quantize_input(window)))

    def _edgetpu_delegate(self, device: str) -> Any:
        """The Edge TPU delegate, or a one-line DeviceError when no TPU answers.

        A failed ``load_delegate`` leaves a half-built ``Delegate`` whose ``__del__``
        raises (no ``_library``): Python would print that as an "Exception ignored"
        traceback after our one-line message. It is collected here, with that one
        exception kept quiet.
        """
        problem = None
        previous = sys.unraisablehook

        def quiet(unraisable: Any) -> None:
            if not (isinstance(unraisable.exc_value, AttributeError)
                    and "Delegate" in repr(unraisable.object)):
                previous(unraisable)

        sys.unraisablehook = quiet
        try:
            try:
                return self.backend.load_delegate(EDGETPU_LIBRARY, {"device": device})
            except (ValueError, OSError, RuntimeError) as exc:
                problem = " ".join(str(exc).split())
            gc.collect()  # the half-built delegate, freed while the hook is quiet
        finally:
            sys.unraisablehook = previous
        raise DeviceError(
            f"no Coral Edge TPU found on {device} ({problem}): plug it in and install "
            "libedgetpu1-std, or run without --edgetpu"
        )

    def predict_many(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities for ``(n, frames, mels)`` windows, one invoke each (batch 1 model)."""
        n_out = int(np.prod(self.output_shape))
        out = np.empty((len(windows), n_out), dtype=np.float32)
        for i, w in enumerate(windows):
            out[i] = self.predict(w)
        return out


def _no_xnnpack_resolver(backend: Backend) -> Any:
    """The op resolver that leaves XNNPACK out, where the backend exposes one."""
    try:
        if backend.name == "ai_edge_litert":
            from ai_edge_litert.interpreter import OpResolverType
        elif backend.name == "tflite_runtime":
            from tflite_runtime.interpreter import OpResolverType
        else:
            import tensorflow as tf

            OpResolverType = tf.lite.experimental.OpResolverType
    except (ImportError, AttributeError):
        log.warning("backend %s cannot turn XNNPACK off; running with defaults", backend.name)
        return None
    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
