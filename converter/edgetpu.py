"""Coral Edge TPU compatibility check of a TFLite graph, without the compiler.

The Edge TPU compiler maps ops in graph order and stops at the first op it cannot map:
everything after it runs on the CPU. So the first unmappable op decides the speed, and
that is what this check reports, with why. Rules follow Coral's "supported operations"
table (int8/uint8 tensors only, static shapes, at most 3 non-unit dimensions, the op list
and its per-op restrictions).

Only the TFLite interpreter is needed (the device's runtime), not TensorFlow.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.errors import GenreEdgeError

#: Ops the Edge TPU maps (TFLite builtin names), from Coral's supported-operations table.
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})

#: Inputs that are integer parameters rather than activations (bias, shape, axis, ...).
PARAMETER_INPUTS: dict[str, set[int]] = {
    "CONV_2D": {2}, "DEPTHWISE_CONV_2D": {2}, "FULLY_CONNECTED": {2}, "TRANSPOSE_CONV": {0, 3},
    "RESHAPE": {1}, "MEAN": {1}, "SUM": {1}, "REDUCE_MAX": {1}, "REDUCE_MIN": {1},
    "PAD": {1}, "EXPAND_DIMS": {1}, "SLICE": {1, 2}, "STRIDED_SLICE": {1, 2, 3},
    "TRANSPOSE": {1}, "SPLIT": {0}, "RESIZE_BILINEAR": {1}, "RESIZE_NEAREST_NEIGHBOR": {1},
    "UNIDIRECTIONAL_SEQUENCE_LSTM": set(range(12, 16)),
}

#: Constant weight inputs: quantised like activations, but 4-D by nature (filters).
WEIGHT_INPUTS: dict[str, set[int]] = {
    "CONV_2D": {1}, "DEPTHWISE_CONV_2D": {1}, "FULLY_CONNECTED": {1}, "TRANSPOSE_CONV": {1},
}

QUANTIZED = (np.int8, np.uint8)
SOFTMAX_MAX_ELEMENTS = 16000
COMPILE_HINT = (
    "compile it on an x86-64 Debian/Ubuntu machine with Coral's edgetpu-compiler package: "
    "edgetpu_compiler -s -o OUTDIR MODEL.tflite"
)


@dataclass
class OpReport:
    index: int
    op: str
    inputs: list[str]
    outputs: list[str]
    mappable: bool
    reason: str = ""


@dataclass
class EdgeTpuReport:
    model: str
    ops: list[OpReport] = field(default_factory=list)

    @property
    def n_ops(self) -> int:
        return len(self.ops)

    @property
    def n_mappable(self) -> int:
        return sum(op.mappable for op in self.ops)

    @property
    def first_unmappable(self) -> OpReport | None:
        return next((op for op in self.ops if not op.mappable), None)

    @property
    def all_mappable(self) -> bool:
        return self.first_unmappable is None

    def summary(self) -> str:
        first = self.first_unmappable
        if first is None:
            return f"{self.n_mappable} of {self.n_ops} ops mappable to the Edge TPU"
        after = self.n_ops - first.index
        return (
            f"{self.n_mappable} of {self.n_ops} ops mappable; first unmappable op #{first.index} "
            f"{first.op}: {first.reason} (it and the {after - 1} op(s) after it would run on the CPU)"
        )

    def to_dict(self) -> dict[str, Any]:
        first = self.first_unmappable
        return {
            "model": self.model,
            "ops_total": self.n_ops,
            "ops_mappable": self.n_mappable,
            "all_mappable": self.all_mappable,
            "first_unmappable": asdict(first) if first else None,
            "summary": self.summary(),
            "ops": [asdict(op) for op in self.ops],
        }

    def table(self) -> str:
        lines = [f"{'#':>3}  {'op':<28} {'ok':<3} inputs -> outputs"]
        for op in self.ops:
            mark = "yes" if op.mappable else "NO"
            lines.append(
                f"{op.index:>3}  {op.op:<28} {mark:<3} {', '.join(op.inputs)} -> "
                f"{', '.join(op.outputs)}" + (f"   [{op.reason}]" if op.reason else "")
            )
        return "\n".join(lines)


def _describe(t: dict[str, Any]) -> str:
    shape = "x".join(str(int(d)) for d in t["shape_signature"]) or "scalar"
    return f"{np.dtype(t['dtype']).name}[{shape}]"


def _check_op(name: str, ins: list[dict[str, Any]], outs: list[dict[str, Any]],
              interpreter: Any) -> str:
    """Why this op cannot be mapped, or '' when it can."""
    if name not in SUPPORTED_OPS:
        return f"{name} is not in the Edge TPU's supported operations"
    params = PARAMETER_INPUTS.get(name, set())
    for pos, t in enumerate(ins):
        dims = [int(d) for d in t["shape_signature"]]
        if any(d < 0 for d in dims):
            return f"input {pos} has a dynamic shape {dims}: the Edge TPU needs static shapes"
        if pos in params:
            continue
        if np.dtype(t["dtype"]) not in [np.dtype(q) for q in QUANTIZED]:
            return f"input {pos} is {np.dtype(t['dtype']).name}: the Edge TPU needs int8/uint8"
    for pos, t in enumerate(outs):
        dims = [int(d) for d in t["shape_signature"]]
        if any(d < 0 for d in dims):
            return f"output {pos} has a dynamic shape {dims}: the Edge TPU needs static shapes"
        if np.dtype(t["dtype"]) not in [np.dtype(q) for q in QUANTIZED]:
            return f"output {pos} is {np.dtype(t['dtype']).name}: the Edge TPU needs int8/uint8"
    weights = WEIGHT_INPUTS.get(name, set())
    activations = [t for pos, t in enumerate(ins) if pos not in params | weights] + outs
    for t in activations:
        dims = [int(d) for d in t["shape_signature"]]
        if len(dims) > 3 and any(d > 1 for d in dims[:-3]):
            return f"tensor {dims} has more than 3 non-unit dimensions"
    if name == "SOFTMAX" and ins:
        size = int(np.prod(ins[0]["shape_signature"]))
        non_unit = [d for d in ins[0]["shape_signature"] if d > 1]
        if len(non_unit) > 1 or size > SOFTMAX_MAX_ELEMENTS:
            return f"softmax input must be 1-D with <= {SOFTMAX_MAX_ELEMENTS} elements"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and len(ins) > 1:
        try:
            axes = np.atleast_1d(interpreter.get_tensor(ins[1]["index"])).astype(int).tolist()
        except ValueError:
            return "reduction axes are not constant"
        rank = len(ins[0]["shape_signature"])
        axes = [a % rank for a in axes]
        if 0 in axes:
            return "reduction over the batch dimension"
        depth = int(ins[0]["shape_signature"][-1])
        if name == "MEAN" and rank - 1 in axes and depth % 4:
            return f"mean over the channel axis needs a multiple of 4 channels, has {depth}"
    return ""


def check_model(path: str | Path) -> EdgeTpuReport:
    """Walk the graph of a ``.tflite`` file and judge every op against the Edge TPU rules."""
    from firmware_py.inference import get_backend

    path = Path(path)
    if not path.is_file():
        raise GenreEdgeError(f"model not found: {path}: give a .tflite file")
    backend = get_backend()
    kwargs: dict[str, Any] = {"model_path": str(path)}
    try:  # without the XNNPACK delegate, so the graph is reported as stored
        if backend.name == "ai_edge_litert":
            from ai_edge_litert.interpreter import OpResolverType
        elif backend.name == "tflite_runtime":
            from tflite_runtime.interpreter import OpResolverType
        else:
            import tensorflow as tf

            OpResolverType = tf.lite.experimental.OpResolverType
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    except (ImportError, AttributeError):
        pass
    try:
        interpreter = backend.interpreter_cls(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise GenreEdgeError(
            f"cannot load {path} ({' '.join(str(exc).split())[:160]}): not a valid TFLite model"
        ) from None
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    report = EdgeTpuReport(model=str(path))
    for op in interpreter._get_ops_details():
        name = str(op["op_name"])
        if name == "DELEGATE":
            continue
        ins = [tensors[i] for i in op["inputs"] if i >= 0]
        outs = [tensors[i] for i in op["outputs"] if i >= 0]
        reason = _check_op(name, ins, outs, interpreter)
        report.ops.append(OpReport(
            index=len(report.ops), op=name, inputs=[_describe(t) for t in ins],
            outputs=[_describe(t) for t in outs], mappable=not reason, reason=reason,
        ))
    if not report.ops:
        raise GenreEdgeError(f"{path} has no operators: not a usable model")
    return report


def compile_for_edgetpu(path: str | Path, out_dir: str | Path) -> tuple[Path | None, str]:
    """Run ``edgetpu_compiler`` when it is on PATH: (compiled model or None, log or hint)."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        return None, f"edgetpu_compiler not found on PATH; to run on a Coral, {COMPILE_HINT}"
    path, out_dir = Path(path), Path(out_dir)
    res = subprocess.run(
        [compiler, "-s", "-o", str(out_dir), str(path)], capture_output=True, text=True,
        timeout=300,
    )
    compiled = out_dir / f"{path.stem}_edgetpu.tflite"
    if res.returncode != 0 or not compiled.is_file():
        return None, f"edgetpu_compiler failed (exit {res.returncode}): {res.stderr.strip()[-500:]}"
    return compiled, res.stdout
