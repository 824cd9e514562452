"""Softmax and LogSoftmax, numerically stable (the row maximum is subtracted before ``expf``).

Before opset 13 the input is coerced to 2-D at ``axis`` (default 1) and each row of
``prod(shape[axis:])`` elements is normalised; from opset 13 the op normalises along the single
axis ``axis`` (default -1), which may be strided.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, prod, register
from edgec.ops.shape_ops import norm_axes, shape_error


def softmax_layout(node: Node, g: Graph, shape: Shape) -> tuple[int, int, int]:
    """(outer, n, inner): ``outer`` groups of ``n`` elements ``inner`` apart, normalised."""
    rank = len(shape)
    if g.opset < 13:
        axis = int(node.attr("axis", 1))
        if not -rank <= axis <= rank:
            raise shape_error(node, f"axis {axis} is out of range for rank {rank}")
        axis = axis + rank if axis < 0 else axis
        return prod(shape[:axis]), prod(shape[axis:]), 1
    if rank == 0:
        return 1, 1, 1
    axis = norm_axes(node, [int(node.attr("axis", -1))], rank)[0]
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1 :])


@register
class Softmax(Op):
    types = ("Softmax", "LogSoftmax")

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = g.shape(node.inputs[0])
        softmax_layout(node, g, shape)
        return [(shape, g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        outer, n, inner = softmax_layout(node, g, x.shape)
        v = x.astype(np.float64).reshape(outer, n, inner)
        z = v - np.max(v, axis=1, keepdims=True) if n else v
        lse = np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        y = z - lse if node.op == "LogSoftmax" else np.exp(z - lse)
        return [y.reshape(x.shape).astype(x.dtype)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True  # every element is read before its own position is written

    def macs(self, node: Node, g: Graph) -> int:
        return prod(g.shape(node.inputs[0]))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        outer, n, inner = softmax_layout(node, ctx.g, ctx.g.shape(node.inputs[0]))
        if outer * n * inner == 0:
            return ""
        x, y = ctx.inp(0), ctx.out(0)
        at = "k" if inner == 1 else f"k * {inner}"
        lines = [f"for (int o = 0; o < {outer}; ++o) {{"]
        row = f"o * {n * inner}"
        if inner > 1:
            lines.append(f"    for (int j = 0; j < {inner}; ++j) {{")
            row += " + j"
        pad = "    " * (2 if inner > 1 else 1)
        body = [
            f"const float *xr = {x} + {row};",
            f"float *yr = {y} + {row};",
            "float m = xr[0];",
            f"for (int k = 1; k < {n}; ++k) {{",
            f"    const float v = xr[{at}];",
            "    m = v > m ? v : m;",
            "}",
            "float s = 0.0f;",
        ]
        if node.op == "Softmax":
            body += [
                f"for (int k = 0; k < {n}; ++k) {{",
                f"    const float e = expf(xr[{at}] - m);",
                f"    yr[{at}] = e;",
                "    s += e;",
                "}",
                "const float inv = 1.0f / s;",
                f"for (int k = 0; k < {n}; ++k) yr[{at}] *= inv;",
            ]
        else:
            body += [
                f"for (int k = 0; k < {n}; ++k) s += expf(xr[{at}] - m);",
                "const float shift = m + logf(s);",
                f"for (int k = 0; k < {n}; ++k) yr[{at}] = xr[{at}] - shift;",
            ]
        lines += [pad + b for b in body]
        if inner > 1:
            lines.append("    }")
        lines.append("}")
        return "\n".join(lines) + "\n"
