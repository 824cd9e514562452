"""QMean: TFLite's int8 MEAN (reference_ops::QuantizedMeanOrSum / reference_integer_ops::Mean).

Attributes ``axes`` (list of ints) and ``keepdims`` (0/1). For each output:
``acc = sum(q - zp_in)`` over the reduced axes (int32), then
``clamp(MBQM(acc, M', S') + zp_out)`` where (M, S) = QuantizeMultiplier(s_in / s_out) and the
division by the element count n is folded into the multiplier as TFLite does:
``shift = min(floor(log2 n), 32, 31 + S)``, ``M' = (M << shift) / n`` (integer division),
``S' = S - shift``.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, norm_axis, prod, register, strides, unsupported
from edgec.ops.int8.common import (
    QOp,
    indent,
    per_tensor,
    requantize_ref,
    require_dtype,
    use_requant,
)
from edgec.ops.int8.fixedpoint import quantize_multiplier, rounding_of

Outs = list[tuple[Shape, str]]


def _axes(node: Node, rank: int) -> list[int]:
    axes = node.attr("axes")
    if axes is None:
        return list(range(rank))
    out = sorted({norm_axis(int(a), rank) for a in np.asarray(axes).reshape(-1)})
    if any(not 0 <= a < rank for a in out):
        raise unsupported(node, f"axes {list(axes)} out of range for rank {rank}")
    return out


def _out_shape(node: Node, shape: Shape) -> Shape:
    axes = _axes(node, len(shape))
    if int(node.attr("keepdims", 1)):
        return tuple(1 if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


def mean_multiplier(node: Node, g: Graph, count: int) -> tuple[int, int]:
    s_in, _ = per_tensor(node, g, node.inputs[0], "input")
    s_out, _ = per_tensor(node, g, node.outputs[0], "output")
    mult, shift = quantize_multiplier(float(s_in) / float(s_out), rounding_of(g))
    if count <= 0:
        return mult, shift
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    return int((mult << extra) // count), shift - extra


@register
class QMean(QOp):
    types = ("QMean",)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        shape = g.shape(node.inputs[0])
        self._count(node, shape)
        mean_multiplier(node, g, self._count(node, shape))
        return [(_out_shape(node, shape), "int8")]

    def _count(self, node: Node, shape: Shape) -> int:
        return prod([shape[a] for a in _axes(node, len(shape))])

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axes = tuple(_axes(node, x.ndim))
        _, zp_in = per_tensor(node, g, node.inputs[0], "input")
        _, zp_out = per_tensor(node, g, node.outputs[0], "output")
        m, h = mean_multiplier(node, g, self._count(node, x.shape))
        acc = (x.astype(np.int64) - zp_in).sum(axis=axes)
        y = requantize_ref(acc, m, h, zp_out, -128, 127, rounding_of(g))
        return [y.reshape(g.shape(node.outputs[0]))]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        shape = g.shape(node.inputs[0])
        axes = _axes(node, len(shape))
        keep = [k for k in range(len(shape)) if k not in axes]
        _, zp_in = per_tensor(node, g, node.inputs[0], "input")
        _, zp_out = per_tensor(node, g, node.outputs[0], "output")
        count = self._count(node, shape)
        m, h = mean_multiplier(node, g, count)
        requant = use_requant(ctx, rounding_of(ctx.g))
        st = strides(shape)
        x, y = ctx.inp(0), ctx.out(0)
        # outer loops over kept axes (output order), inner loops over reduced axes
        lines, depth = [], 0
        for k in keep:
            lines.append("    " * depth + f"for (int o{k} = 0; o{k} < {shape[k]}; ++o{k}) {{")
            depth += 1
        base = " + ".join(f"o{k} * {st[k]}" for k in keep) or "0"
        body = f"const int8_t *xb = {x} + {base};\nint32_t acc = 0;\n"
        inner, d2 = [], 0
        for a in axes:
            inner.append("    " * d2 + f"for (int r{a} = 0; r{a} < {shape[a]}; ++r{a}) {{")
            d2 += 1
        idx = " + ".join(f"r{a} * {st[a]}" for a in axes) or "0"
        inner.append("    " * d2 + f"acc += (int32_t)xb[{idx}] - ({zp_in});")
        inner += ["    " * k + "}" for k in range(d2 - 1, -1, -1)]
        body += "\n".join(inner) + "\n"
        out_idx = " + ".join(f"o{k} * {s}" for k, s in zip(keep, strides([shape[k] for k in keep]),
                                                           strict=True)) or "0"
        body += f"{y}[{out_idx}] = {requant}(acc, {m}, {h}, {zp_out}, -128, 127);\n"
        code = "\n".join(lines) + ("\n" if lines else "") + indent(body, depth)
        code += "".join("    " * k + "}\n" for k in range(depth - 1, -1, -1))
        return code
