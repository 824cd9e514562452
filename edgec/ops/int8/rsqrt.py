"""QRsqrt: TFLite's int8 RSQRT (kernels/elementwise.cc, ``RsqrtEvalQuantizedInt8``), the
``1 / sqrt(variance + eps)`` of a Keras LayerNormalization.

Prepare: ``M, shift = QuantizeMultiplier(1 / (sqrtf(s_in) * s_out))`` (the square root and the
product in float32, the reciprocal in double). Eval per code, ``v = q - zp_in``:

* ``v == 0``: 127 (TFLite: "any value close to 0 represents the max output value");
* ``v > 0``: ``GetInvSqrtQuantizedMultiplierExp(v)`` (gemmlowp fixed point: ``v`` normalised
  into [2^27, 2^29) by pairs of bits, five Newton-Raphson steps of ``x = 1.5 x - v/2 x^3`` in
  Q3.28 from ``x = 1``, times sqrt(2)/2) gives ``(m_v, e_v)``; then
  ``data = MBQM(1, m_v, e_v + 20)`` and ``MBQM(data, M, shift - 20) + zp_out``, clamped;
* ``v < 0`` (a negative real input): TFLite's kernel stops with "Rsqrt is only defined for
  positive values"; edgec gives 127, as for 0 (documented in docs/int8.md).

The output of an int8 code depends on that code only, so the C is a 256-entry table computed at
compile time from this numpy model of the integer kernel (:func:`rsqrt_table`) and a lookup per
element, as for the activation tables.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, prod, register
from edgec.ops.int8.common import QOp, per_tensor, require_dtype
from edgec.ops.int8.fixedpoint import (
    INT32_MAX,
    count_leading_zeros32,
    mbqm,
    quantize_multiplier,
    rdbp,
    rounding_of,
    saturating_shift_left,
    srdhm,
    wrap32,
)

Outs = list[tuple[Shape, str]]
K_SHIFT = 20  # RsqrtEvalQuantizedInt8's shift that keeps the intermediate an integer
HALF_THREE_Q3 = (1 << 28) + (1 << 27)  # 1.5 in Q3.28
ONE_Q3 = 1 << 28
HALF_SQRT2_Q0 = 1518500250  # sqrt(2)/2 in Q0.31


def inv_sqrt_multiplier_exp(value: int, reverse_shift: int = -1) -> tuple[int, int]:
    """TFLite ``GetInvSqrtQuantizedMultiplierExp(value, reverse_shift)`` → (multiplier, shift)
    with 1/sqrt(value) = multiplier * 2^(shift - 31) (for ``reverse_shift`` = -1)."""
    if value <= 1:
        return INT32_MAX, 0
    shift = 11
    while value >= 1 << 29:
        value //= 4
        shift += 1
    max_left_shift_bits = int(count_leading_zeros32(value)) - 1
    pairs = max_left_shift_bits // 2 - 1
    shift -= pairs
    value <<= 2 * pairs
    half_input = int(rdbp(value >> 1, 1))  # Q3.28, SaturatingRoundingMultiplyByPOT<-1>
    x = ONE_Q3
    for _ in range(5):
        x3 = int(saturating_shift_left(srdhm(srdhm(x, x), x), 6))  # Q9 → Q3
        diff = wrap32(srdhm(HALF_THREE_Q3, x) - srdhm(half_input, x3))  # Q6
        x = int(saturating_shift_left(diff, 3))  # Q6 → Q3
    inv = int(srdhm(x, HALF_SQRT2_Q0))
    if shift < 0:
        inv = int(wrap32(inv << -shift))
        shift = 0
    return inv, shift * reverse_shift


def rsqrt_params(s_in: float, s_out: float, rounding: str) -> tuple[int, int]:
    """``SetRsqrtOutputMultiplier``: QM(1 / (sqrtf(s_in) * s_out))."""
    root = np.sqrt(np.float32(s_in))  # std::sqrt of a float is float32
    real = 1.0 / float(np.float32(root * np.float32(s_out)))
    return quantize_multiplier(real, rounding)


def rsqrt_table(s_in: float, zp_in: int, s_out: float, zp_out: int,
                rounding: str) -> np.ndarray:
    """The output code of each input code -128..127 (256 int8)."""
    m, shift = rsqrt_params(s_in, s_out, rounding)
    out = np.empty(256, np.int8)
    for k, q in enumerate(range(-128, 128)):
        v = q - zp_in
        if v <= 0:  # 0: TFLite's max output; negative: TFLite's error (edgec: the same 127)
            out[k] = 127
            continue
        inv, inv_shift = inv_sqrt_multiplier_exp(v)
        data = mbqm(1, inv, inv_shift + K_SHIFT, rounding)
        y = int(mbqm(data, m, shift - K_SHIFT, rounding)) + zp_out
        out[k] = min(max(y, -128), 127)
    return out


@register
class QRsqrt(QOp):
    types = ("QRsqrt",)

    def table(self, node: Node, g: Graph) -> np.ndarray:
        s_in, z_in = per_tensor(node, g, node.inputs[0], "input")
        s_out, z_out = per_tensor(node, g, node.outputs[0], "output")
        return rsqrt_table(s_in, z_in, s_out, z_out, rounding_of(g))

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        self.table(node, g)
        return [(g.shape(node.inputs[0]), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        return [self.table(node, g)[x.astype(np.int64) + 128]]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        sym = ctx.const_array(f"{node.name}_rsqrt", self.table(node, ctx.g), "int8_t",
                              param=False)
        n = prod(ctx.g.shape(node.outputs[0]))
        return f"for (int i = 0; i < {n}; ++i) {ctx.out(0)}[i] = {sym}[{ctx.inp(0)}[i] + 128];\n"
