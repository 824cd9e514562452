"""Selection along an axis: ArgMax, ArgMin and TopK.

Their index outputs are int64 tensors in the IR (ONNX semantics; constant folding yields int64
arrays). At run time edgec's buffers and model ports are float32, so the C kernels store each
index as a float holding the integer exactly (tensors of up to 2^24 elements along the axis) —
as run-time booleans are 0.0f / 1.0f floats.

* ArgMax / ArgMin: ``axis`` (default 0), ``keepdims`` (default 1), ``select_last_index``
  (opset 12+): among equal values the first (or last) index. The kernel scans the axis keeping
  the best value so far, so NaN never wins a comparison, as in ONNX Runtime (a leading NaN
  stays; ``torch.argmax`` returns a NaN's index instead).
* TopK: ``k`` from the constant second input (opset 10+) or the ``k`` attribute (opset 1-9);
  ``axis`` (default -1), ``largest`` (default 1), ``sorted`` (default 1). Values come out in
  order (best first) and equal values in index order (ONNX: the lower index first); with
  ``sorted=0`` that order is one of the allowed ones. NaN ranks above every number, as in ONNX
  Runtime and ``torch.topk``. The kernel keeps the best ``k`` of each row in the outputs by
  insertion (k·n comparisons per row: meant for small k).
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, int_list, prod, register, unsupported
from edgec.ops.shape_ops import norm_axes, shape_error

#: the largest extent along the axis whose indices a float32 holds exactly
MAX_INDEX_EXTENT = 1 << 24

#: ops that may read run-time int64 indices (float buffers holding integers) and give what
#: integer arithmetic would: data movement, comparisons, exact small-integer arithmetic and
#: Cast. Others (Div, Mod, Pow, ...) would compute in float, so shape inference refuses them.
INDEX_CONSUMERS = frozenset({
    "Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
    "Slice", "Split", "Gather", "Expand", "Equal", "Greater", "Less", "GreaterOrEqual",
    "LessOrEqual", "Where", "Add", "Sub", "Mul", "Neg", "Abs", "Min", "Max",
})


def _split(shape: Shape, axis: int) -> tuple[int, int, int]:
    """(outer, extent, inner) element counts around ``axis``."""
    return prod(shape[:axis]), int(shape[axis]), prod(shape[axis + 1 :])


def _axis(node: Node, g: Graph, default: int) -> int:
    shape = g.shape(node.inputs[0])
    if not shape:
        raise unsupported(node, f"{node.op} of a scalar")
    axis = norm_axes(node, [int(node.attr("axis", default))], len(shape))[0]
    if shape[axis] > MAX_INDEX_EXTENT:
        raise unsupported(node, f"{node.op} over {shape[axis]} elements (at most 2^24)")
    return axis


@register
class ArgMaxMin(Op):
    types = ("ArgMax", "ArgMin")

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = g.shape(node.inputs[0])
        axis = _axis(node, g, 0)
        out = list(shape)
        if int(node.attr("keepdims", 1)):
            out[axis] = 1
        else:
            del out[axis]
        return [(tuple(out), "int64")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axis = _axis(node, g, 0)
        moved = np.moveaxis(x, axis, -1)
        best, idx = moved[..., 0].copy(), np.zeros(moved.shape[:-1], np.int64)
        last = int(node.attr("select_last_index", 0))
        with np.errstate(invalid="ignore"):
            for k in range(1, moved.shape[-1]):  # the C kernel's scan: NaN never compares true
                v = moved[..., k]
                if node.op == "ArgMax":
                    take = v >= best if last else v > best
                else:
                    take = v <= best if last else v < best
                best = np.where(take, v, best)
                idx = np.where(take, k, idx)
        if int(node.attr("keepdims", 1)):
            idx = np.expand_dims(idx, axis)
        return [np.asarray(idx, np.int64)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        outer, n, inner = _split(g.shape(node.inputs[0]), _axis(node, g, 0))
        cmp = ">" if node.op == "ArgMax" else "<"
        if int(node.attr("select_last_index", 0)):
            cmp += "="
        x, y = ctx.inp(0), ctx.out(0)
        return (
            f"for (int o = 0; o < {outer}; ++o) {{\n"
            f"    for (int i = 0; i < {inner}; ++i) {{\n"
            f"        const float *p = {x} + o * {n * inner} + i;\n"
            f"        float best = p[0];\n"
            f"        int at = 0;\n"
            f"        for (int k = 1; k < {n}; ++k) {{\n"
            f"            const float v = p[k * {inner}];\n"
            f"            if (v {cmp} best) {{\n"
            f"                best = v;\n"
            f"                at = k;\n"
            f"            }}\n"
            f"        }}\n"
            f"        {y}[o * {inner} + i] = (float)at;\n"
            f"    }}\n"
            f"}}\n"
        )


def _topk_k(node: Node, g: Graph) -> int:
    if len(node.inputs) > 1 and node.inputs[1]:
        k = g.const(node.inputs[1])
        if k is None:
            raise unsupported(node, "TopK needs a compile-time constant k")
        ks = int_list(k)
        if len(ks) != 1:
            raise shape_error(node, f"k must hold one value, got {len(ks)}")
        return ks[0]
    if "k" not in node.attrs:
        raise shape_error(node, "TopK needs k (input 1, or the k attribute before opset 10)")
    return int(node.attrs["k"])


def _topk_order(x: np.ndarray, largest: bool) -> np.ndarray:
    """Indices that sort ``x`` (last axis) best first: NaN above every number, ties by index."""
    nan = np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    clean = np.where(nan, 0, x)
    if largest:  # lexsort: the last key is the primary one; stable, so ties keep index order
        return np.lexsort((-clean, ~nan), axis=-1)
    return np.lexsort((clean, nan), axis=-1)


@register
class TopK(Op):
    types = ("TopK",)

    def value_inputs(self, node: Node) -> tuple[int, ...]:
        return (0,)

    def _parts(self, node: Node, g: Graph) -> tuple[int, int]:
        shape = g.shape(node.inputs[0])
        axis = _axis(node, g, -1)
        k = _topk_k(node, g)
        if not 0 < k <= shape[axis]:
            raise shape_error(
                node, f"k = {k} is out of range for axis {axis} of size {shape[axis]}"
            )
        return axis, k

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = list(g.shape(node.inputs[0]))
        axis, k = self._parts(node, g)
        shape[axis] = k
        return [(tuple(shape), g.tensor(node.inputs[0]).dtype), (tuple(shape), "int64")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axis, k = self._parts(node, g)
        moved = np.moveaxis(x, axis, -1)
        order = _topk_order(moved, bool(int(node.attr("largest", 1))))[..., :k]
        values = np.take_along_axis(moved, order, axis=-1)
        return [
            np.ascontiguousarray(np.moveaxis(values, -1, axis)),
            np.ascontiguousarray(np.moveaxis(order, -1, axis)).astype(np.int64),
        ]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        axis, k = self._parts(node, g)
        outer, n, inner = _split(g.shape(node.inputs[0]), axis)
        if int(node.attr("largest", 1)):
            better = "(a > b || (a != a && b == b))"
        else:
            better = "(a < b || (b != b && a == a))"
        x, vals, idx = ctx.inp(0), ctx.out(0), ctx.out(1)
        return (
            f"for (int o = 0; o < {outer}; ++o) {{\n"
            f"    for (int i = 0; i < {inner}; ++i) {{\n"
            f"        const float *p = {x} + o * {n * inner} + i;\n"
            f"        float *vs = {vals} + o * {k * inner} + i;\n"
            f"        float *is = {idx} + o * {k * inner} + i;\n"
            f"        int count = 0;\n"
            f"        for (int j = 0; j < {n}; ++j) {{\n"
            f"            const float a = p[j * {inner}];\n"
            f"            int pos = count < {k} ? count : {k - 1};\n"
            f"            if (count == {k}) {{\n"
            f"                const float b = vs[pos * {inner}];\n"
            f"                if (!{better}) continue;\n"
            f"            }} else {{\n"
            f"                ++count;\n"
            f"            }}\n"
            f"            while (pos > 0) {{\n"
            f"                const float b = vs[(pos - 1) * {inner}];\n"
            f"                if (!{better}) break;\n"
            f"                vs[pos * {inner}] = b;\n"
            f"                is[pos * {inner}] = is[(pos - 1) * {inner}];\n"
            f"                --pos;\n"
            f"            }}\n"
            f"            vs[pos * {inner}] = a;\n"
            f"            is[pos * {inner}] = (float)j;\n"
            f"        }}\n"
            f"    }}\n"
            f"}}\n"
        )
