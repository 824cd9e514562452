"""ONNX QuantizeLinear and DequantizeLinear: the QDQ form of quantized ONNX models.

They hold ONNX's semantics (scale and zero point as inputs, ``axis`` for per-axis parameters):
``QuantizeLinear: y = saturate(round_half_even(x / scale) + zero_point)`` (int8 or uint8, the
zero point's type; uint8 when it is absent), ``DequantizeLinear: y = (x - zero_point) * scale``
(int8, uint8 or int32 codes). The numpy references make a QDQ graph a simulated-quantization
float model, as onnxruntime defines it. They never reach C: ``passes.qdq.lower_qdq`` folds
``DequantizeLinear → op → QuantizeLinear`` patterns into the int8 ops of ``ops/int8`` and turns
the remaining ones into ``Quantize``/``Dequantize`` at the boundary of float ops (docs/int8.md).
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, register, unsupported

Outs = list[tuple[Shape, str]]

#: code types edgec lowers (uint8 codes become int8 ones with the zero point shifted by 128)
CODE_TYPES = ("int8", "uint8")
_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
#: QuantizeLinear's ``output_dtype`` (TensorProto codes; 0: absent → uint8)
_OUTPUT_DTYPES = {0: "uint8", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16"}


def _const(node: Node, g: Graph, idx: int, what: str) -> np.ndarray | None:
    name = node.inputs[idx] if len(node.inputs) > idx else ""
    if not name:
        return None
    v = g.const(name)
    if v is None:
        raise unsupported(node, f"the {what} '{name}' must be a constant")
    return v


def qdq_params(node: Node, g: Graph, rank: int) -> tuple[np.ndarray, np.ndarray, str, int]:
    """(scale, zero point, code type, axis) of a QuantizeLinear/DequantizeLinear node; scale and
    zero point broadcast along ``axis`` (per tensor: length 1)."""
    if node.attr("block_size"):
        raise unsupported(node, "blocked quantization (block_size) is not supported")
    scale = _const(node, g, 1, "scale")
    assert scale is not None
    zp = _const(node, g, 2, "zero point")
    code = str(zp.dtype) if zp is not None else _OUTPUT_DTYPES.get(
        int(node.attr("output_dtype", 0) or 0), f"type {node.attr('output_dtype')}")
    if node.op == "DequantizeLinear":
        code = str(g.tensor(node.inputs[0]).dtype)
    if code not in (*CODE_TYPES, "int32"):
        raise unsupported(node, f"{code} quantization is not supported; edgec lowers int8 and "
                                f"uint8 QDQ (int32 for biases)")
    if code == "int32" and zp is not None and np.any(zp != 0):
        raise unsupported(node, "int32 codes with a non-zero zero point are not supported")
    axis = int(node.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    scale = np.asarray(scale, np.float32).reshape(-1)
    zpa = (np.zeros(scale.size, np.int64) if zp is None
           else np.asarray(zp, np.int64).reshape(-1))
    if scale.size != zpa.size:
        raise unsupported(node, f"{scale.size} scales but {zpa.size} zero points")
    if scale.size > 1 and not 0 <= axis < rank:
        raise unsupported(node, f"axis {axis} is outside a rank-{rank} tensor")
    return scale, zpa, code, axis


def _along(v: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A per-axis parameter shaped to broadcast along ``axis``."""
    if v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis] = v.size
    return v.reshape(shape)


@register
class QuantizeLinear(Op):
    types = ("QuantizeLinear",)
    int8 = True

    def infer(self, node: Node, g: Graph) -> Outs:
        x = g.tensor(node.inputs[0])
        if x.dtype != "float32":
            raise unsupported(node, f"input '{x.name}' is {x.dtype}; expected float32")
        _, _, code, _ = qdq_params(node, g, len(x.shape))
        if code not in CODE_TYPES:
            raise unsupported(node, f"quantization to {code} is not supported (int8, uint8)")
        return [(x.shape, code)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        rank = x.ndim
        scale, zp, code, axis = qdq_params(node, g, rank)
        lo, hi = _RANGES[code]
        with np.errstate(all="ignore"):
            r = np.rint(x.astype(np.float32) / _along(scale, axis, rank))  # half to even
        r = np.nan_to_num(r, nan=0.0, posinf=hi, neginf=lo)
        return [np.clip(r + _along(zp, axis, rank), lo, hi).astype(code)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise unsupported(node, "QuantizeLinear reaches C only through passes.qdq.lower_qdq")


@register
class DequantizeLinear(Op):
    types = ("DequantizeLinear",)
    int8 = True

    def infer(self, node: Node, g: Graph) -> Outs:
        x = g.tensor(node.inputs[0])
        qdq_params(node, g, len(x.shape))
        return [(x.shape, "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        rank = x.ndim
        scale, zp, _, axis = qdq_params(node, g, rank)
        d = (x.astype(np.int64) - _along(zp, axis, rank)).astype(np.float32)
        return [(d * _along(scale, axis, rank)).astype(np.float32)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise unsupported(node, "DequantizeLinear reaches C only through passes.qdq.lower_qdq")
