"""QSquaredDifference: TFLite's int8 SQUARED_DIFFERENCE (kernels/squared_difference.cc), with
numpy broadcasting. The Keras LayerNormalization variance is its MEAN.

Prepare (left_shift = 7, every ratio in double precision from the float32 scales):
``twice_max = 2 * max(s1, s2)``; input k's multiplier is ``QM(s_k / twice_max)``, the output's
``QM(twice_max^2 / (2^14 * s_out))``, each through ``QuantizeMultiplierSmallerThanOneExp``
(TFLite stops on a ratio of 1 or more, edgec refuses it at compile time). Eval per element:
``d = MBQM((q1 - zp1) << 7, m1) - MBQM((q2 - zp2) << 7, m2)``, then
``MBQM(d * d, m_out) + zp_out`` clamped to int8 (``|d| < 2^15``, so ``d * d`` fits int32).
No fused activation.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, broadcast_shape, register, unsupported
from edgec.ops.int8.common import QOp, per_tensor, require_dtype, use_requant
from edgec.ops.int8.fixedpoint import (
    clamp_int8,
    mbqm,
    quantize_multiplier,
    rounding_of,
    use_mbqm,
)
from edgec.ops.loops import broadcast_loop

Outs = list[tuple[Shape, str]]
LEFT_SHIFT = 7


def _smaller_than_one(node: Node, what: str, real: float, rounding: str) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplierSmallerThanOneExp``: a ratio in (0, 1), shift <= 0."""
    if not 0.0 < real < 1.0:
        raise unsupported(node, f"the {what} scale ratio {real!r} is not in (0, 1) (TFLite's "
                                f"SQUARED_DIFFERENCE requires it; the output scale is too small)")
    m, shift = quantize_multiplier(real, rounding)
    if shift > 0:
        raise unsupported(node, f"the {what} scale ratio {real!r} rounds to 1")
    return m, shift


@register
class QSquaredDifference(QOp):
    types = ("QSquaredDifference",)

    def params(self, node: Node, g: Graph) -> dict[str, int]:
        (s1, z1), (s2, z2), (so, zo) = (per_tensor(node, g, node.inputs[0], "input 0"),
                                        per_tensor(node, g, node.inputs[1], "input 1"),
                                        per_tensor(node, g, node.outputs[0], "output"))
        s1, s2, so = (float(np.float32(s)) for s in (s1, s2, so))
        r = rounding_of(g)
        twice_max = 2.0 * max(s1, s2)
        m1, h1 = _smaller_than_one(node, "input 0", s1 / twice_max, r)
        m2, h2 = _smaller_than_one(node, "input 1", s2 / twice_max, r)
        real_out = twice_max * twice_max / float(np.float32((1 << 2 * LEFT_SHIFT) * so))
        mo, ho = _smaller_than_one(node, "output", real_out, r)
        return {"z1": z1, "z2": z2, "zo": zo, "m1": m1, "h1": h1, "m2": m2, "h2": h2,
                "mo": mo, "ho": ho}

    def infer(self, node: Node, g: Graph) -> Outs:
        for k in (0, 1):
            require_dtype(node, g, node.inputs[k], "int8", f"input {k}")
        self.params(node, g)
        return [(broadcast_shape(g.shape(node.inputs[0]), g.shape(node.inputs[1])), "int8")]

    def inplace(self, node: Node, g: Graph) -> bool:
        return g.shape(node.inputs[0]) == g.shape(node.outputs[0])

    def inplace_inputs(self, node: Node, g: Graph) -> tuple[int, ...]:
        """Either operand of the output's shape (each element reads its own position first)."""
        return tuple(k for k in (0, 1) if g.shape(node.inputs[k]) == g.shape(node.outputs[0]))

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        p, r = self.params(node, g), rounding_of(g)
        sa = mbqm((a.astype(np.int64) - p["z1"]) << LEFT_SHIFT, p["m1"], p["h1"], r)
        sb = mbqm((b.astype(np.int64) - p["z2"]) << LEFT_SHIFT, p["m2"], p["h2"], r)
        d = sa - sb
        return [clamp_int8(mbqm(d * d, p["mo"], p["ho"], r) + p["zo"])]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        p = self.params(node, g)
        r = rounding_of(g)
        mbqm_c = use_mbqm(ctx, r, [p["h1"], p["h2"]])
        requant = use_requant(ctx, r, [p["ho"]])
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)

        def body(ix: list[str], iy: str) -> str:
            return (
                f"const int32_t d = {mbqm_c}(((int32_t){a}[{ix[0]}] - ({p['z1']})) * "
                f"{1 << LEFT_SHIFT}, {p['m1']}, {p['h1']})\n"
                f"    - {mbqm_c}(((int32_t){b}[{ix[1]}] - ({p['z2']})) * {1 << LEFT_SHIFT}, "
                f"{p['m2']}, {p['h2']});\n"
                f"{y}[{iy}] = {requant}(d * d, {p['mo']}, {p['ho']}, {p['zo']}, -128, 127);\n"
            )

        return broadcast_loop(g.shape(node.outputs[0]),
                              [g.shape(node.inputs[0]), g.shape(node.inputs[1])], body)
