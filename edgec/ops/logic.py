"""Comparisons, logic, Where and CastLike on run-time data.

Booleans computed at run time live in float buffers as 0.0f / 1.0f (the arena is planned in
floats); the IR marks them with dtype ``bool``. Exporters emit these for piecewise functions
(torch's softplus threshold: Greater + Where) and masks.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, broadcast_shape, register
from edgec.ops.loops import broadcast_loop

_CMP_C = {
    "Equal": "==",
    "Greater": ">",
    "Less": "<",
    "GreaterOrEqual": ">=",
    "LessOrEqual": "<=",
}
_LOGIC_C = {"And": "&&", "Or": "||", "Xor": "!="}
_REF = {
    "Equal": np.equal,
    "Greater": np.greater,
    "Less": np.less,
    "GreaterOrEqual": np.greater_equal,
    "LessOrEqual": np.less_equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
}


def _binary_c(node: Node, ctx: EmitContext, expr: str) -> str:
    a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
    g = ctx.g
    return broadcast_loop(
        g.shape(node.outputs[0]),
        [g.shape(node.inputs[0]), g.shape(node.inputs[1])],
        lambda ix, iy: (
            f"{y}[{iy}] = ({expr.format(a=f'{a}[{ix[0]}]', b=f'{b}[{ix[1]}]')}) ? 1.0f : 0.0f;\n"
        ),
    )


@register
class CompareOp(Op):
    """Comparisons and logic ops; run-time results are 0/1 floats."""

    types = (*_CMP_C, *_LOGIC_C, "Not")

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = broadcast_shape(*(g.shape(i) for i in node.inputs if i))
        return [(shape, "bool")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a = inputs[0]
        assert a is not None
        if node.op == "Not":
            return [np.logical_not(a)]
        b = inputs[1]
        assert b is not None
        if node.op in _LOGIC_C:
            return [np.asarray(_REF[node.op](a.astype(bool), b.astype(bool)))]
        return [np.asarray(_REF[node.op](a, b))]

    def inplace(self, node: Node, g: Graph) -> bool:
        return node.op == "Not" or g.shape(node.inputs[0]) == g.shape(node.outputs[0])

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if node.op == "Not":
            x, y = ctx.inp(0), ctx.out(0)
            n = int(np.prod(ctx.g.shape(node.outputs[0]), dtype=np.int64))
            return f"for (int i = 0; i < {n}; ++i) {y}[i] = ({x}[i] != 0.0f) ? 0.0f : 1.0f;\n"
        if node.op in _LOGIC_C:
            return _binary_c(node, ctx, f"({{a}} != 0.0f) {_LOGIC_C[node.op]} ({{b}} != 0.0f)")
        return _binary_c(node, ctx, f"{{a}} {_CMP_C[node.op]} {{b}}")


@register
class WhereOp(Op):
    """Where(cond, x, y) with numpy broadcasting; cond may be computed at run time."""

    types = ("Where",)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = broadcast_shape(*(g.shape(i) for i in node.inputs))
        return [(shape, g.tensor(node.inputs[1]).dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        c, a, b = inputs
        assert c is not None and a is not None and b is not None
        return [np.where(c.astype(bool), a, b).astype(a.dtype)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        c, a, b, y = ctx.inp(0), ctx.inp(1), ctx.inp(2), ctx.out(0)
        cond_is_float = (
            g.tensor(node.inputs[0]).dtype in ("bool", "float32")
            and g.const(node.inputs[0]) is None
        )
        test = "{c} != 0.0f" if cond_is_float else "{c}"
        return broadcast_loop(
            g.shape(node.outputs[0]),
            [g.shape(i) for i in node.inputs],
            lambda ix, iy: (
                f"{y}[{iy}] = ({test.format(c=f'{c}[{ix[0]}]')}) ? {a}[{ix[1]}] : {b}[{ix[2]}];\n"
            ),
        )


@register
class CastLike(Op):
    """CastLike(x, like): x converted to like's dtype; only like's dtype matters."""

    types = ("CastLike",)
    view = True

    def value_inputs(self, node: Node) -> tuple[int, ...]:
        return (0,)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        like = g.tensor(node.inputs[1]).dtype
        if like not in ("float32", "float64", "float16") or g.tensor(node.inputs[0]).dtype not in (
            "float32",
            "bool",
        ):
            from edgec.ops.base import unsupported

            raise unsupported(node, f"CastLike to {like} at run time (float types only)")
        return [(g.shape(node.inputs[0]), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        like = inputs[1]
        dtype = like.dtype if like is not None else np.float32
        return [np.asarray(x).astype(dtype)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        n = int(np.prod(ctx.g.shape(node.outputs[0]), dtype=np.int64))
        return f"memcpy({ctx.out(0)}, {ctx.inp(0)}, sizeof(float) * {n});\n"
