"""Elementwise binary ops with numpy broadcasting: Add, Sub, Mul, Div, PRelu."""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, broadcast_shape, register
from edgec.ops.loops import broadcast_loop

_C = {
    "Add": "a + b",
    "Sub": "a - b",
    "Mul": "a * b",
    "Div": "a / b",
    "PRelu": "(a < 0.0f ? b * a : a)",
}

_REF = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "PRelu": lambda a, b: np.where(a < 0, a * b, a),
}


@register
class BinaryOp(Op):
    types = tuple(_C)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        a, b = (g.tensor(n) for n in node.inputs[:2])
        return [(broadcast_shape(a.shape, b.shape), a.dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        with np.errstate(all="ignore"):
            if node.op == "Div" and np.issubdtype(a.dtype, np.integer):
                # ONNX integer division truncates toward zero (-7 / 2 = -3)
                q = np.abs(a) // np.abs(b)
                return [np.where((a < 0) ^ (b < 0), -q, q).astype(a.dtype)]
            return [np.asarray(_REF[node.op](a, b)).astype(a.dtype)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return g.shape(node.inputs[0]) == g.shape(node.outputs[0])

    def inplace_inputs(self, node: Node, g: Graph) -> tuple[int, ...]:
        """Either operand of the output's shape: each output element reads its own position of
        that operand before it is written (the other operand may broadcast)."""
        return tuple(k for k in (0, 1) if g.shape(node.inputs[k]) == g.shape(node.outputs[0]))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        if ctx.ctype(node.outputs[0]) == "int32_t":
            return self._emit_int32(node, ctx)
        op = _C[node.op]

        def body(ix: list[str], iy: str) -> str:
            return (
                f"const float a = {a}[{ix[0]}];\n"
                f"const float b = {b}[{ix[1]}];\n"
                f"const float r = {op};\n"
                f"{y}[{iy}] = {ctx.act('r')};\n"
            )

        return broadcast_loop(
            g.shape(node.outputs[0]), [g.shape(node.inputs[0]), g.shape(node.inputs[1])], body
        )

    def _emit_int32(self, node: Node, ctx: EmitContext) -> str:
        """int32 at run time (index arithmetic, e.g. TFLite's ``id < 0 ? id + n : id`` before
        an Embedding's GATHER): two's-complement wrap through uint32_t, as numpy's int32 (no
        signed overflow, no float round trip)."""
        g = ctx.g
        if node.op not in ("Add", "Sub", "Mul") or node.attrs.get("_act") is not None:
            from edgec.ops.base import unsupported

            raise unsupported(node, "int32 at run time: only Add, Sub and Mul without a fused "
                                    "activation")
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        sym = {"Add": "+", "Sub": "-", "Mul": "*"}[node.op]

        def body(ix: list[str], iy: str) -> str:
            return (f"{y}[{iy}] = (int32_t)((uint32_t){a}[{ix[0]}] {sym} "
                    f"(uint32_t){b}[{ix[1]}]);\n")

        return broadcast_loop(
            g.shape(node.outputs[0]), [g.shape(node.inputs[0]), g.shape(node.inputs[1])], body
        )
