"""QLut: any elementwise int8 → int8 function as a 256-entry table (attribute ``table``: the
output code for every input code -128..127, in that order), and the tables of TFLite's int8
activation kernels, computed at compile time from numpy models of those kernels:

* :func:`float_lut` — TFLite's ``PopulateLookupTable`` (LOGISTIC and TANH in the TFLite
  interpreter): dequantize in float32, apply the function, ``round(y / s_out) + zp_out``.
* :func:`relu_lut` — ``QuantizedReluX`` (RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1): rescale with
  MBQM, clamp to the activation range.
* :func:`leaky_relu_lut` — ``QuantizeLeakyRelu``.
* :func:`hard_swish_lut` — ``reference_ops::HardSwish`` (int16 fixed point).
* :func:`logistic_lut` / :func:`tanh_lut` — the float tables above; the int8 fixed-point
  kernels (reference_integer_ops::Logistic/Tanh) are available with ``fixed_point=True``.

Bit-exactness of a table is proven by feeding all 256 codes through the TFLite interpreter
(tests/test_int8_tflite.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.ir import Graph, Node, Quant, Shape
from edgec.ops.base import EmitContext, prod, register, unsupported
from edgec.ops.int8.common import QOp, require_dtype
from edgec.ops.int8.fixedpoint import (
    DEFAULT_ROUNDING,
    f32,
    mbqm,
    quantize_multiplier,
    rdbp,
    round_half_away,
    tflite_round,
)

Outs = list[tuple[Shape, str]]
CODES = np.arange(-128, 128, dtype=np.int64)


def table_of(node: Node) -> np.ndarray:
    t = np.asarray(node.attr("table", []))
    if t.size != 256 or t.min() < -128 or t.max() > 127:
        raise unsupported(node, "attribute table must hold 256 int8 values (outputs of the "
                                "input codes -128..127)")
    return t.reshape(256).astype(np.int8)


@register
class QLut(QOp):
    types = ("QLut",)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        table_of(node)
        return [(g.shape(node.inputs[0]), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        return [table_of(node)[x.astype(np.int64) + 128]]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        sym = ctx.const_array(f"{node.name}_lut", table_of(node), "int8_t", param=False)
        n = prod(ctx.g.shape(node.outputs[0]))
        return f"for (int i = 0; i < {n}; ++i) {ctx.out(0)}[i] = {sym}[{ctx.inp(0)}[i] + 128];\n"


# -- tables ---------------------------------------------------------------------------------

def _scalar(q: Quant) -> tuple[float, int]:
    if q.size != 1:
        raise ValueError("activation tables need per-tensor quantization")
    return q.scalar()


def float_lut(q_in: Quant, q_out: Quant, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """TFLite ``PopulateLookupTable``: ``fn`` gets float32 inputs and returns float32."""
    s_in, z_in = _scalar(q_in)
    s_out, z_out = _scalar(q_out)
    x = (np.float32(s_in) * (CODES - z_in).astype(np.float32)).astype(np.float32)
    with np.errstate(all="ignore"):
        y = np.asarray(fn(x), np.float32)
        inv = np.float32(1.0) / np.float32(s_out)
        r = round_half_away((y * inv).astype(np.float32))
    q = np.trunc((r + z_out).astype(np.float32).astype(np.float64))
    return np.clip(q, -128, 127).astype(np.int8)


def logistic_lut(q_in: Quant, q_out: Quant, fixed_point: bool = False,
                 rounding: str = DEFAULT_ROUNDING) -> np.ndarray:
    if fixed_point:
        return _fixed_point_lut(q_in, "logistic", rounding)
    return float_lut(q_in, q_out, lambda v: np.float32(1) / (np.float32(1) + np.exp(-v)))


def tanh_lut(q_in: Quant, q_out: Quant, fixed_point: bool = False,
             rounding: str = DEFAULT_ROUNDING) -> np.ndarray:
    if fixed_point:
        return _fixed_point_lut(q_in, "tanh", rounding)
    return float_lut(q_in, q_out, np.tanh)


def relu_lut(q_in: Quant, q_out: Quant, lo: float | None = 0.0, hi: float | None = None,
             rounding: str = DEFAULT_ROUNDING) -> np.ndarray:
    """``QuantizedReluX(lo, hi)``; ``lo``/``hi`` None: unbounded on that side."""
    s_in, z_in = _scalar(q_in)
    s_out, z_out = _scalar(q_out)
    m, h = quantize_multiplier(f32(np.float32(s_in) / np.float32(s_out)), rounding)
    qmin = -128 if lo is None else max(-128, z_out + tflite_round(f32(np.float32(lo)
                                                                      / np.float32(s_out))))
    qmax = 127 if hi is None else min(127, z_out + tflite_round(f32(np.float32(hi)
                                                                    / np.float32(s_out))))
    y = z_out + mbqm(CODES - z_in, m, h, rounding)
    return np.clip(y, qmin, qmax).astype(np.int8)


def leaky_relu_lut(q_in: Quant, q_out: Quant, alpha: float,
                   rounding: str = DEFAULT_ROUNDING) -> np.ndarray:
    s_in, z_in = _scalar(q_in)
    s_out, z_out = _scalar(q_out)
    ma, ha = quantize_multiplier(
        f32(np.float32(f32(np.float32(s_in) * np.float32(alpha))) / np.float32(s_out)), rounding)
    mi, hi = quantize_multiplier(f32(np.float32(s_in) / np.float32(s_out)), rounding)
    v = CODES - z_in
    y = z_out + np.where(v >= 0, mbqm(v, mi, hi, rounding), mbqm(v, ma, ha, rounding))
    return np.clip(y, -128, 127).astype(np.int8)


def _srdhm16(a: np.ndarray, b: int) -> np.ndarray:
    a = np.asarray(a, np.int64)
    ab = a * b
    v = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    q = np.where(v >= 0, v >> 15, -((-v) >> 15))
    return np.where((a == b) & (a == -32768), 32767, q)


def _sat16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -32768, 32767)


def _downscale16(m32: int) -> int:
    if m32 >= 2**31 - 1 - (1 << 15):
        return 32767
    return (m32 + (1 << 15)) >> 16


def hard_swish_lut(q_in: Quant, q_out: Quant, rounding: str = DEFAULT_ROUNDING) -> np.ndarray:
    """TFLite's int8 HARD_SWISH (reference_ops::HardSwish with HardSwishPrepare's params)."""
    s_in, z_in = _scalar(q_in)
    s_out, z_out = _scalar(q_out)
    hires = f32(np.float32(1.0 / 128.0) * np.float32(s_in))
    out_m32, out_exp = quantize_multiplier(f32(np.float32(hires) / np.float32(s_out)), rounding)
    relu_m32, relu_exp = quantize_multiplier(
        f32(np.float32(hires) / np.float32(3.0 / 32768.0)), rounding)
    if out_exp > 0:
        raise ValueError("hard swish: output multiplier exponent must be <= 0")
    out_m, relu_m = _downscale16(out_m32), _downscale16(relu_m32)
    v = (CODES - z_in) * 128  # input on the hi-res input scale (fits int16)
    pre_out = _srdhm16(v, out_m)
    r = v
    if relu_exp > 0:
        r = _sat16(r * (1 << (relu_exp - 1)))
    r = _srdhm16(r, relu_m)
    if relu_exp > 0:
        r = _sat16(r * 2)
    if relu_exp < 0:
        r = rdbp(r, -relu_exp)
    r = (r + (1 << 15)) >> 1
    prod16 = r * pre_out
    pre = np.where(prod16 >= 0, prod16 >> 15, -((-prod16) >> 15))  # toward zero
    pre = np.where((r == pre_out) & (r == -32768), 32767, pre)
    out = rdbp(pre, -out_exp) + z_out
    return np.clip(out, -128, 127).astype(np.int8)


def _fixed_point_lut(q_in: Quant, kind: str, rounding: str) -> np.ndarray:
    """reference_integer_ops::Logistic / Tanh (int8, fixed point; output scale 1/256 with zero
    point -128 for logistic, 1/128 with zero point 0 for tanh)."""
    from edgec.ops.int8.fixedpoint import exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1
    from edgec.ops.int8.fixedpoint import srdhm as _srdhm

    s_in, z_in = _scalar(q_in)
    in_bits = 4
    real = float(s_in) * float(1 << (31 - in_bits))
    mult, shift = quantize_multiplier(real, rounding)
    radius = int(np.floor(((1 << in_bits) - 1) * float(1 << (31 - in_bits))
                          / float(1 << shift))) if shift >= 0 else 2**31 - 1
    x = CODES - z_in
    xq = mbqm(x, mult, shift, rounding)
    if kind == "logistic":
        a = np.abs(xq)
        pos = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-a, in_bits))
        res = np.where(xq > 0, pos, np.where(xq == 0, 1 << 30, 2**31 - 1 - pos))
        out = rdbp(res, 23) - 128
        out = np.where(x <= -radius, -128, np.where(x >= radius, 127, out))
    else:
        n = np.where(xq < 0, xq, -xq)
        e = exp_on_negative_values(n, in_bits + 1)  # ExactMulByPot<1>: same raw, Q5.26
        # (1 - e) / (1 + e) = 2 / (1 + e) - 1
        t = _tanh_from_exp(e, _srdhm, one_over_one_plus_x_for_x_in_0_1)
        res = np.where(xq == 0, 0, np.where(xq < 0, -t, t))
        out = rdbp(res, 24)
        out = np.where(x <= -radius, -128, np.where(x >= radius, 127, out))
    return np.clip(out, -128, 127).astype(np.int8)


def _tanh_from_exp(e: np.ndarray, srdhm: Callable, recip: Callable) -> np.ndarray:
    """gemmlowp one_minus_x_over_one_plus_x_for_x_in_0_1 (Q0.31)."""
    from edgec.ops.int8.fixedpoint import rounding_half_sum, saturating_shift_left, wrap32

    half_den = rounding_half_sum(e, 2**31 - 1)
    x = wrap32(1515870810 + srdhm(half_den, -1010580540))
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half_den, x))
        x = wrap32(x + saturating_shift_left(srdhm(x, one_minus), 2))
    return saturating_shift_left(wrap32(x - (1 << 29)), 2)
