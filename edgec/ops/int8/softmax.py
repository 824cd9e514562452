"""QSoftmax: TFLite's int8 SOFTMAX in its reference form (reference_ops::Softmax, gemmlowp
fixed point), over the last axis; output scale 1/256, zero point -128.

Per row: ``diff = q - max(row)``; entries with ``diff >= diff_min`` contribute
``e = exp_on_negative_values(MBQM(diff, M, S) as Q5.26)`` (Q0.31); the sum of ``e >> 12``
(rounding) is a Q12.19 value whose reciprocal comes from gemmlowp's Newton-Raphson
``one_over_one_plus_x``; each output is ``RDBP(e * recip, bits_over_unit + 23) - 128``.
(M, S) = QuantizeMultiplierGreaterThanOne(min(beta * s_in * 2^26, 2^31 - 1)) and
``diff_min = -floor((2^5 - 1) * 2^26 / 2^S)`` (TFLite's PreprocessSoftmaxScaling and
CalculateInputRadius; under single rounding the multiplier cap is 2^30 - 1).

C: ``diff`` takes at most 256 values, so ``e`` is a table computed at compile time (256 int32,
indexed by ``-diff``); the reciprocal and the final scaling run in C per row.
"""

from __future__ import annotations

import math

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, float_attr, prod, register, unsupported
from edgec.ops.int8.common import QOp, per_tensor, require_dtype
from edgec.ops.int8.fixedpoint import (
    exp_on_negative_values,
    get_reciprocal,
    mbqm,
    quantize_multiplier,
    rdbp,
    rounding_of,
    srdhm,
    use_helpers,
)

Outs = list[tuple[Shape, str]]
SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


def softmax_params(node: Node, g: Graph) -> tuple[int, int, int]:
    """(input multiplier, left shift, diff_min) as TFLite's SoftmaxPrepare (reference kernel)."""
    s_in, _ = per_tensor(node, g, node.inputs[0], "input")
    beta = float_attr(node, "beta", 1.0)
    r = rounding_of(g)
    cap = float((1 << 30) - 1) if r == "single" else float((1 << 31) - 1)
    real = min(beta * float(s_in) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), cap)
    if real <= 1.0:
        raise unsupported(node, f"beta * input scale = {beta * float(s_in):.3g} is too small "
                                "for TFLite's int8 softmax")
    mult, shift = quantize_multiplier(real, r)
    radius = math.floor(((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                        * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)) / float(1 << shift))
    return mult, shift, -radius


def exp_table(node: Node, g: Graph) -> np.ndarray:
    """exp_on_negative_values(rescaled diff) for diff = 0, -1, ..., -255 (0 below diff_min)."""
    mult, shift, diff_min = softmax_params(node, g)
    diffs = -np.arange(256, dtype=np.int64)
    scaled = mbqm(diffs, mult, shift, rounding_of(g))
    e = exp_on_negative_values(scaled, SCALED_DIFF_INTEGER_BITS)
    return np.where(diffs >= diff_min, e, 0).astype(np.int64)


@register
class QSoftmax(QOp):
    types = ("QSoftmax",)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        s_out, zp_out = per_tensor(node, g, node.outputs[0], "output")
        if float(np.float32(s_out)) != 1.0 / 256 or zp_out != -128:
            raise unsupported(node, f"output quantization must be scale 1/256, zero point -128 "
                                    f"(got {s_out:.9g}, {zp_out})")
        if int(node.attr("axis", -1)) not in (-1, len(g.shape(node.inputs[0])) - 1):
            raise unsupported(node, "int8 softmax runs over the last axis only")
        softmax_params(node, g)
        return [(g.shape(node.inputs[0]), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        table = exp_table(node, g)
        rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
        diff = rows - rows.max(axis=1, keepdims=True)
        e = table[-diff]
        total = rdbp(e, ACCUMULATION_INTEGER_BITS).sum(axis=1)
        recip, bits = get_reciprocal(total, ACCUMULATION_INTEGER_BITS)
        out = rdbp(srdhm(e, recip[:, None]), (bits + 31 - 8)[:, None]) - 128
        return [np.clip(out, -128, 127).astype(np.int8).reshape(x.shape)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        shape = ctx.g.shape(node.inputs[0])
        depth = shape[-1]
        rows = prod(shape[:-1])
        tsym = ctx.const_array(f"{node.name}_exp", exp_table(node, ctx.g), "int32_t",
                               param=False)
        use_helpers(ctx, "edgec_rdbp", "edgec_one_over_one_plus_x", "edgec_clz32")
        x, y = ctx.inp(0), ctx.out(0)
        return (
            f"for (int r = 0; r < {rows}; ++r) {{\n"
            f"    const int8_t *xr = {x} + r * {depth};\n"
            f"    int8_t *yr = {y} + r * {depth};\n"
            f"    int32_t mx = -128, sum = 0;\n"
            f"    for (int c = 0; c < {depth}; ++c) if (xr[c] > mx) mx = xr[c];\n"
            f"    for (int c = 0; c < {depth}; ++c) sum += edgec_rdbp({tsym}[mx - xr[c]], "
            f"{ACCUMULATION_INTEGER_BITS});\n"
            f"    {{\n"
            f"        const int headroom = edgec_clz32((uint32_t)sum);\n"
            f"        const int exponent = {ACCUMULATION_INTEGER_BITS} - headroom + 23;\n"
            f"        const int32_t recip = edgec_one_over_one_plus_x(\n"
            f"            (int32_t)(((uint32_t)sum << headroom) - 0x80000000u));\n"
            f"        for (int c = 0; c < {depth}; ++c) {{\n"
            f"            int32_t v = edgec_rdbp(edgec_srdhm({tsym}[mx - xr[c]], recip), "
            f"exponent) - 128;\n"
            f"            yr[c] = (int8_t)(v > 127 ? 127 : v);\n"
            f"        }}\n"
            f"    }}\n"
            f"}}\n"
        )
