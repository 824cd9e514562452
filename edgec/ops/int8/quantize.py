"""Quantize (float32 → int8), Dequantize (int8 → float32) and Requantize (int8 → int8): TFLite's
QUANTIZE and DEQUANTIZE.

* Quantize: ``q = clamp(round(x / scale) + zero_point)`` with the division in float32 and
  ``round`` halves away from zero (TFLite ``AffineQuantize``); NaN becomes -128.
* Dequantize: ``x = scale * (q - zero_point)`` in float32 (TFLite computes the product in double
  and rounds it once to float: the same value, since the exact product fits a double).
* Requantize: ``clamp(MBQM(q - zp_in, M, S) + zp_out)`` with (M, S) = QuantizeMultiplier of
  scale_in / scale_out in double (TFLite ``Requantize``).

All MultiplyByQuantizedMultiplier calls follow the model's ``int8_rounding`` (fixedpoint.py).
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, c_float, prod, register
from edgec.ops.int8.common import QOp, per_tensor, requantize_ref, require_dtype, use_requant
from edgec.ops.int8.fixedpoint import quantize_multiplier, round_half_away, rounding_of

Outs = list[tuple[Shape, str]]


@register
class Quantize(QOp):
    types = ("Quantize",)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "float32", "input")
        per_tensor(node, g, node.outputs[0], "output")
        return [(g.shape(node.inputs[0]), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        scale, zp = per_tensor(node, g, node.outputs[0], "output")
        with np.errstate(all="ignore"):
            r = round_half_away(np.asarray(x, np.float32) / np.float32(scale))
        r = np.where(np.isnan(r), -np.inf, r)
        return [np.clip(np.clip(r, -128 - zp, 127 - zp) + zp, -128, 127).astype(np.int8)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return False

    def emit(self, node: Node, ctx: EmitContext) -> str:
        scale, zp = per_tensor(node, ctx.g, node.outputs[0], "output")
        n = prod(ctx.g.shape(node.outputs[0]))
        lo, hi = c_float(-128 - zp), c_float(127 - zp)
        return (
            f"for (int i = 0; i < {n}; ++i) {{\n"
            f"    float r = roundf({ctx.inp(0)}[i] / {c_float(scale)});\n"
            f"    if (!(r >= {lo})) r = {lo}; /* also NaN */\n"
            f"    if (r > {hi}) r = {hi};\n"
            f"    {ctx.out(0)}[i] = (int8_t)((int32_t)r + {zp});\n"
            f"}}\n"
        )


@register
class Dequantize(QOp):
    types = ("Dequantize",)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        per_tensor(node, g, node.inputs[0], "input")
        return [(g.shape(node.inputs[0]), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        scale, zp = per_tensor(node, g, node.inputs[0], "input")
        return [(np.float32(scale) * (x.astype(np.int32) - zp).astype(np.float32))
                .astype(np.float32)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        scale, zp = per_tensor(node, ctx.g, node.inputs[0], "input")
        n = prod(ctx.g.shape(node.outputs[0]))
        return (
            f"for (int i = 0; i < {n}; ++i) "
            f"{ctx.out(0)}[i] = {c_float(scale)} * (float)((int32_t){ctx.inp(0)}[i] - {zp});\n"
        )


def requant_params(node: Node, g: Graph) -> tuple[int, int, int, int]:
    """(multiplier, shift, input zero point, output zero point) of an int8 → int8 rescale."""
    s_in, zp_in = per_tensor(node, g, node.inputs[0], "input")
    s_out, zp_out = per_tensor(node, g, node.outputs[0], "output")
    mult, shift = quantize_multiplier(float(np.float64(s_in) / np.float64(s_out)), rounding_of(g))
    return mult, shift, zp_in, zp_out


@register
class Requantize(QOp):
    types = ("Requantize",)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        requant_params(node, g)
        return [(g.shape(node.inputs[0]), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        mult, shift, zp_in, zp_out = requant_params(node, g)
        return [requantize_ref(x.astype(np.int64) - zp_in, mult, shift, zp_out, -128, 127,
                               rounding_of(g))]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        mult, shift, zp_in, zp_out = requant_params(node, ctx.g)
        fn = use_requant(ctx, rounding_of(ctx.g))
        n = prod(ctx.g.shape(node.outputs[0]))
        return (
            f"for (int i = 0; i < {n}; ++i) {ctx.out(0)}[i] = "
            f"{fn}((int32_t){ctx.inp(0)}[i] - {zp_in}, {mult}, {shift}, {zp_out}, -128, 127);\n"
        )
