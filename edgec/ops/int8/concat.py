"""QConcat: int8 concatenation along ``axis`` (TFLite CONCATENATION). Inputs quantized like the
output are copied as codes (the only case TFLite itself accepts); any other input is requantized
to the output's scale and zero point with Requantize's arithmetic
(``MBQM(q - zp_in, QM(s_in / s_out)) + zp_out``), which front-ends of sources that allow it
(ONNX QDQ) rely on.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, norm_axis, prod, register, unsupported
from edgec.ops.int8.common import QOp, per_tensor, requantize_ref, require_dtype, use_requant
from edgec.ops.int8.fixedpoint import quantize_multiplier, rounding_of
from edgec.ops.shape_ops import copy_nest

Outs = list[tuple[Shape, str]]


def _axis(node: Node, rank: int) -> int:
    if "axis" not in node.attrs:
        raise unsupported(node, "QConcat needs the axis attribute")
    axis = int(node.attrs["axis"])
    if not -rank <= axis < rank:
        raise unsupported(node, f"axis {axis} is out of range for rank {rank}")
    return norm_axis(axis, rank)


def _rescale(node: Node, g: Graph, name: str) -> tuple[int, int, int, int] | None:
    """(multiplier, shift, zp_in, zp_out) when input ``name`` needs requantizing, else None."""
    s_in, zp_in = per_tensor(node, g, name, "input")
    s_out, zp_out = per_tensor(node, g, node.outputs[0], "output")
    q_in, q_out = g.quant(name), g.quant(node.outputs[0])
    assert q_in is not None and q_out is not None
    if q_in.same_as(q_out):
        return None
    m, h = quantize_multiplier(float(s_in) / float(s_out), rounding_of(g))
    return m, h, zp_in, zp_out


@register
class QConcat(QOp):
    types = ("QConcat",)

    def infer(self, node: Node, g: Graph) -> Outs:
        names = [i for i in node.inputs if i]
        if not names:
            raise unsupported(node, "QConcat needs at least one input")
        shapes = [g.shape(i) for i in names]
        axis = _axis(node, len(shapes[0]))
        for i in names:
            require_dtype(node, g, i, "int8", "input")
            _rescale(node, g, i)
        for s in shapes:
            if len(s) != len(shapes[0]) or any(
                a != b for k, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if k != axis
            ):
                raise unsupported(node, f"cannot concatenate shapes {shapes} on axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return [(tuple(out), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        parts = []
        names = [i for i in node.inputs if i]
        for name, x in zip(names, [v for v in inputs if v is not None], strict=True):
            rs = _rescale(node, g, name)
            if rs is None:
                parts.append(x)
            else:
                m, h, zi, zo = rs
                parts.append(requantize_ref(x.astype(np.int64) - zi, m, h, zo, -128, 127,
                                            rounding_of(g)))
        return [np.concatenate(parts, axis=_axis(node, parts[0].ndim)).astype(np.int8)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        out = g.shape(node.outputs[0])
        axis = _axis(node, len(out))
        rows, inner = prod(out[:axis]), prod(out[axis + 1 :])
        row_len = out[axis] * inner
        code, offset = "", 0
        y = ctx.out(0)
        for i, name in enumerate(node.inputs):
            if not name or g.tensor(name).size == 0:
                continue
            block = g.shape(name)[axis] * inner
            rs = _rescale(node, g, name)
            if rs is None:
                code += copy_nest((rows, block), y, offset, (row_len, 1), ctx.inp(i), 0,
                                  (block, 1), "int8_t")
            else:
                m, h, zi, zo = rs
                fn = use_requant(ctx, rounding_of(ctx.g))
                code += (
                    f"for (int r = 0; r < {rows}; ++r) {{\n"
                    f"    for (int j = 0; j < {block}; ++j) {{\n"
                    f"        {y}[r * {row_len} + {offset} + j] = {fn}("
                    f"(int32_t){ctx.inp(i)}[r * {block} + j] - ({zi}), {m}, {h}, {zo}, -128, "
                    f"127);\n"
                    f"    }}\n"
                    f"}}\n"
                )
            offset += block
        return code
