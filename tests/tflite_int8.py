"""Test helpers for int8: tiny Keras models converted to full-integer TFLite, run by the TFLite
interpreter (ai-edge-litert), and the equivalent edgec graph built by hand from the
interpreter's tensor details (weights, biases, scales, zero points) plus the attributes the test
knows from the Keras layers (strides, padding, fused activation).

Importing this module imports TensorFlow: test modules import it after
``pytest.importorskip("tensorflow")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.int8 import lut
from edgec.ops.int8.fixedpoint import activation_range
from edgec.ops.interpret import infer_shapes

REF = OpResolverType.BUILTIN_REF
DEFAULT = OpResolverType.AUTO


def convert_int8(model: tf.keras.Model, seed: int = 0, n: int = 64, spread: float = 2.0,
                 by_name: dict[str, tuple[int, ...]] | None = None,
                 float_io: bool = False) -> bytes:
    """Full-integer int8 conversion (int8 inputs and outputs, or float ones with ``float_io``)
    with a random representative set. ``by_name``: the samples as dicts of these input names
    and shapes (for models with several inputs, which TFLite may reorder), else lists in the
    model's input order."""
    from edgec.frontend.keras import _quiet

    rng = np.random.default_rng(seed)
    shapes = [tuple(int(d) for d in t.shape) for t in model.inputs]

    def rep():  # noqa: ANN202 - generator for the converter
        for _ in range(n):
            if by_name is not None:
                yield {k: (spread * rng.standard_normal(s)).astype(np.float32)
                       for k, s in by_name.items()}
            else:
                yield [(spread * rng.standard_normal(s)).astype(np.float32) for s in shapes]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with _quiet():
        return bytes(conv.convert())


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TFLite SAME padding (extra pixel at the end)."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def pads_2d(padding: str, hw: Sequence[int], k: Sequence[int], s: Sequence[int],
            d: Sequence[int] = (1, 1)) -> list[int]:
    """[top, left, bottom, right] for Keras 'same' / 'valid'."""
    if padding == "valid":
        return [0, 0, 0, 0]
    (t, b), (lft, r) = (same_pads(hw[0], k[0], s[0], d[0]), same_pads(hw[1], k[1], s[1], d[1]))
    return [t, lft, b, r]


class Lite:
    """A TFLite model in the interpreter with one op resolver."""

    def __init__(self, blob: bytes, resolver: OpResolverType = REF):
        self.it = Interpreter(model_content=blob, experimental_op_resolver_type=resolver)
        self.it.allocate_tensors()
        self.details = {d["index"]: d for d in self.it.get_tensor_details()}
        self.ops = self.it._get_ops_details()
        self.inputs = [d["index"] for d in self.it.get_input_details()]
        self.outputs = [d["index"] for d in self.it.get_output_details()]

    def op_names(self) -> list[str]:
        return [o["op_name"] for o in self.ops]

    def quant(self, idx: int) -> Quant | None:
        qp = self.details[idx]["quantization_parameters"]
        if len(qp["scales"]) == 0:
            return None
        axis = int(qp["quantized_dimension"]) if len(qp["scales"]) > 1 else None
        return Quant(qp["scales"], qp["zero_points"], axis)

    def shape(self, idx: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.details[idx]["shape"])

    def const(self, idx: int) -> np.ndarray:
        return np.array(self.it.get_tensor(idx))

    def run(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        for idx, x in zip(self.inputs, xs, strict=True):
            self.it.set_tensor(idx, x)
        self.it.invoke()
        return [np.array(self.it.get_tensor(i)) for i in self.outputs]

    def random_inputs(self, rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.integers(-128, 128, self.shape(i)).astype(np.int8) for i in self.inputs]


def tname(idx: int) -> str:
    return f"t{idx}"


def build_graph(lite: Lite, attrs: Sequence[dict[str, Any]] | None = None,
                name: str = "q", options: dict[str, Any] | None = None) -> Graph:
    """The edgec graph of a TFLite model, op by op; ``attrs[k]`` holds what the interpreter does
    not expose for op k: ``act`` (fused activation name), ``strides``, ``dilations``, ``pads``,
    ``kernel``, ``depth_multiplier``, ``axis``, ``beta``, ``keepdims``, ``alpha``."""
    g = Graph(name)
    g.options = dict(options or {})
    attrs = list(attrs or [{} for _ in lite.ops])
    const_ids = set()
    for op in lite.ops:
        for i in op["inputs"]:
            if i >= 0 and i not in lite.inputs and not any(i in o["outputs"] for o in lite.ops):
                const_ids.add(int(i))
    for i in lite.inputs:
        d = lite.details[i]
        g.tensors[tname(i)] = Tensor(tname(i), lite.shape(i), np.dtype(d["dtype"]).name,
                                     quant=lite.quant(i))
        g.inputs.append(tname(i))
    for i in sorted(const_ids):
        g.tensors[tname(i)] = Tensor(tname(i), lite.shape(i), np.dtype(lite.details[i]["dtype"])
                                     .name, lite.const(i), lite.quant(i))
    for k, op in enumerate(lite.ops):
        a = attrs[k] if k < len(attrs) else {}
        ins = [tname(i) if i >= 0 else "" for i in op["inputs"]]
        out = int(op["outputs"][0])
        q_out = lite.quant(out)
        g.tensors[tname(out)] = Tensor(tname(out), (), np.dtype(lite.details[out]["dtype"]).name,
                                       quant=q_out)
        node_op, node_attrs, node_ins = _translate(g, lite, op, a, ins, q_out)
        g.nodes.append(Node(node_op, f"{op['op_name'].lower()}_{k}", node_ins, [tname(out)],
                            node_attrs))
    g.outputs = [tname(i) for i in lite.outputs]
    infer_shapes(g)
    return g


def _act(a: dict[str, Any], q: Quant | None) -> dict[str, int]:
    assert q is not None
    s, z = q.scalar()
    lo, hi = activation_range(a.get("act", "NONE"), s, z)
    return {"act_min": lo, "act_max": hi}


_LUTS: dict[str, Callable[[Quant, Quant, dict[str, Any]], np.ndarray]] = {
    "LOGISTIC": lambda qi, qo, a: lut.logistic_lut(qi, qo),
    "TANH": lambda qi, qo, a: lut.tanh_lut(qi, qo),
    "RELU": lambda qi, qo, a: lut.relu_lut(qi, qo, 0.0, None),
    "RELU6": lambda qi, qo, a: lut.relu_lut(qi, qo, 0.0, 6.0),
    "RELU_N1_TO_1": lambda qi, qo, a: lut.relu_lut(qi, qo, -1.0, 1.0),
    "LEAKY_RELU": lambda qi, qo, a: lut.leaky_relu_lut(qi, qo, a["alpha"]),
    "HARD_SWISH": lambda qi, qo, a: lut.hard_swish_lut(qi, qo),
}


def _translate(g: Graph, lite: Lite, op: dict[str, Any], a: dict[str, Any], ins: list[str],
               q_out: Quant | None) -> tuple[str, dict[str, Any], list[str]]:
    kind = op["op_name"]
    if kind == "FULLY_CONNECTED":
        return "QFullyConnected", _act(a, q_out), ins
    if kind == "CONV_2D":
        return "QConv2D", {**_act(a, q_out), "strides": a.get("strides", [1, 1]),
                           "dilations": a.get("dilations", [1, 1]),
                           "pads": a.get("pads", [0, 0, 0, 0])}, ins
    if kind == "DEPTHWISE_CONV_2D":
        return "QDepthwiseConv2D", {**_act(a, q_out), "strides": a.get("strides", [1, 1]),
                                    "dilations": a.get("dilations", [1, 1]),
                                    "pads": a.get("pads", [0, 0, 0, 0]),
                                    "depth_multiplier": a.get("depth_multiplier", 1)}, ins
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        op_type = "QMaxPool2D" if kind == "MAX_POOL_2D" else "QAveragePool2D"
        return op_type, {**_act(a, q_out), "kernel": a["kernel"],
                         "strides": a.get("strides", a["kernel"]),
                         "pads": a.get("pads", [0, 0, 0, 0])}, ins
    if kind in ("ADD", "SUB", "MUL"):
        return {"ADD": "QAdd", "SUB": "QSub", "MUL": "QMul"}[kind], _act(a, q_out), ins
    if kind == "CONCATENATION":
        return "QConcat", {"axis": a["axis"]}, ins
    if kind == "SOFTMAX":
        return "QSoftmax", {"beta": a.get("beta", 1.0)}, ins
    if kind == "MEAN":
        axes = [int(v) for v in lite.const(int(op["inputs"][1])).reshape(-1)]
        return "QMean", {"axes": axes, "keepdims": int(a.get("keepdims", 0))}, ins[:1]
    if kind == "RESHAPE":
        shape = np.asarray(lite.shape(int(op["outputs"][0])), np.int64)
        return "Reshape", {}, [ins[0], g.add_const("shape", shape)]
    if kind == "QUANTIZE":
        src = lite.details[int(op["inputs"][0])]["dtype"]
        return ("Quantize" if np.dtype(src) == np.float32 else "Requantize"), {}, ins
    if kind == "DEQUANTIZE":
        return "Dequantize", {}, ins
    if kind in _LUTS:
        q_in = lite.quant(int(op["inputs"][0]))
        assert q_in is not None and q_out is not None
        return "QLut", {"table": _LUTS[kind](q_in, q_out, a)}, ins
    raise NotImplementedError(f"test translator: TFLite op {kind}")

