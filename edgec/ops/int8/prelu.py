"""QPRelu, QMaximum, QMinimum: TFLite's int8 PRELU and MAXIMUM / MINIMUM, with numpy
broadcasting (the slope usually broadcasts over the leading axes: Keras ``PReLU``).

PRELU (reference_ops ``BroadcastPrelu4DSlow``, int8): with ``v = q - zp_in``, a non-negative
``v`` gives ``MBQM(v, QM(s_in / s_out))``, a negative one ``MBQM(v * (a - zp_a),
QM(s_in * s_alpha / s_out))``, then ``+ zp_out`` and the int8 clamp; the multipliers come from
float32 scales divided in double precision, as TFLite's Prepare computes them. MAXIMUM /
MINIMUM compare the int8 codes as they are (TFLite requantizes nothing: the converter gives the
inputs and the output one quantization).
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, broadcast_shape, register
from edgec.ops.int8.common import QOp, per_tensor, require_dtype, use_requant
from edgec.ops.int8.fixedpoint import clamp_int8, mbqm, quantize_multiplier, rounding_of
from edgec.ops.loops import broadcast_loop

Outs = list[tuple[Shape, str]]


class _QBroadcast(QOp):
    def infer(self, node: Node, g: Graph) -> Outs:
        for k in (0, 1):
            require_dtype(node, g, node.inputs[k], "int8", f"input {k}")
        self.check(node, g)
        return [(broadcast_shape(g.shape(node.inputs[0]), g.shape(node.inputs[1])), "int8")]

    def check(self, node: Node, g: Graph) -> None:
        pass

    def inplace(self, node: Node, g: Graph) -> bool:
        return g.shape(node.inputs[0]) == g.shape(node.outputs[0])

    def inplace_inputs(self, node: Node, g: Graph) -> tuple[int, ...]:
        return tuple(k for k in (0, 1) if g.shape(node.inputs[k]) == g.shape(node.outputs[0]))


@register
class QPRelu(_QBroadcast):
    types = ("QPRelu",)

    def params(self, node: Node, g: Graph) -> dict[str, int]:
        (si, zi), (sa, za), (so, zo) = (per_tensor(node, g, node.inputs[0], "input"),
                                        per_tensor(node, g, node.inputs[1], "slope"),
                                        per_tensor(node, g, node.outputs[0], "output"))
        rounding = rounding_of(g)
        m1, h1 = quantize_multiplier(float(np.float32(si)) / float(np.float32(so)), rounding)
        m2, h2 = quantize_multiplier(float(np.float32(si)) * float(np.float32(sa))
                                     / float(np.float32(so)), rounding)
        return {"zi": zi, "za": za, "zo": zo, "m1": m1, "h1": h1, "m2": m2, "h2": h2}

    def check(self, node: Node, g: Graph) -> None:
        self.params(node, g)

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, a = inputs[0], inputs[1]
        assert x is not None and a is not None
        p = self.params(node, g)
        r = rounding_of(g)
        v = x.astype(np.int64) - p["zi"]
        neg = mbqm(v * (a.astype(np.int64) - p["za"]), p["m2"], p["h2"], r)
        y = np.where(v >= 0, mbqm(v, p["m1"], p["h1"], r), neg)
        return [clamp_int8(y + p["zo"])]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        p = self.params(node, g)
        requant = use_requant(ctx, rounding_of(g), [p["h1"], p["h2"]])
        x, a, y = ctx.inp(0), ctx.inp(1), ctx.out(0)

        def body(ix: list[str], iy: str) -> str:
            return (
                f"const int32_t v = (int32_t){x}[{ix[0]}] - ({p['zi']});\n"
                f"{y}[{iy}] = v >= 0 ? {requant}(v, {p['m1']}, {p['h1']}, {p['zo']}, -128, 127)"
                f"\n    : {requant}(v * ((int32_t){a}[{ix[1]}] - ({p['za']})), {p['m2']}, "
                f"{p['h2']}, {p['zo']}, -128, 127);\n"
            )

        return broadcast_loop(g.shape(node.outputs[0]),
                              [g.shape(node.inputs[0]), g.shape(node.inputs[1])], body)


class _QExtreme(_QBroadcast):
    pick = ">"

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        fn = np.maximum if self.pick == ">" else np.minimum
        return [fn(a, b).astype(np.int8)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)

        def body(ix: list[str], iy: str) -> str:
            return (f"{y}[{iy}] = {a}[{ix[0]}] {self.pick} {b}[{ix[1]}] ? {a}[{ix[0]}] : "
                    f"{b}[{ix[1]}];\n")

        return broadcast_loop(g.shape(node.outputs[0]),
                              [g.shape(node.inputs[0]), g.shape(node.inputs[1])], body)


@register
class QMaximum(_QExtreme):
    types = ("QMaximum",)
    pick = ">"


@register
class QMinimum(_QExtreme):
    types = ("QMinimum",)
    pick = "<"
