"""TFLite's fixed-point arithmetic, in numpy (the references) and C (the kernels).

* :func:`quantize_multiplier` — TFLite's ``QuantizeMultiplier``: a real multiplier as a Q0.31
  significand and a power-of-two exponent (``frexp``, round half away from zero).
* :func:`mbqm` — ``MultiplyByQuantizedMultiplier`` in TFLite's two forms: ``"double"`` (a left
  shift, gemmlowp's saturating rounding doubling high multiply :func:`srdhm`, then a rounding
  right shift :func:`rdbp`) and ``"single"`` (``TFLITE_SINGLE_ROUNDING``: one 64-bit product,
  one rounding shift, ties toward +inf).

Which form a kernel uses is what makes int8 results bit-exact or not, and the references
disagree (measured with ai-edge-litert 2.3 and the tflite-micro wheel, see docs/int8.md): the
TFLite interpreter's reference kernels round FULLY_CONNECTED once and every other op twice;
TFLite Micro (and CMSIS-NN by default) round twice everywhere. The compile option
``int8_rounding`` picks the reference: ``"tflite"`` (default) or ``"double"``; ops ask
:func:`rounding_of` for their form.
* gemmlowp's fixed-point ``exp_on_negative_values`` and ``one_over_one_plus_x_for_x_in_0_1``
  (softmax) on raw int32 values.

The numpy functions take and return int64 arrays holding int32 values (no overflow inside);
the C helpers are static inline functions an op emits through ``ctx.helper`` (see
:func:`use_helpers`), written to be free of undefined behaviour: left shifts go through
``uint32_t`` and the rounding right shift relies on ``>>`` of a negative ``int32_t`` being
arithmetic (implementation-defined in C99; arithmetic on GCC, Clang and Arm's compilers, as
TFLite itself assumes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops.base import EmitContext

#: values of the compile option ``int8_rounding``: "tflite" = as the TFLite interpreter's
#: reference kernels (single rounding in FULLY_CONNECTED, double elsewhere), "double" = double
#: rounding everywhere (TFLite Micro, CMSIS-NN)
ROUNDING_MODES = ("tflite", "double")
DEFAULT_MODE = "tflite"
#: the form numpy helpers default to (TFLite's standard MultiplyByQuantizedMultiplier)
DEFAULT_ROUNDING = "double"

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

Ints = np.ndarray  # int64 arrays of int32 values


# -- compile time: multipliers ------------------------------------------------------------------

def tflite_round(x: float) -> int:
    """``std::round``: nearest integer, halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def round_half_away(a: np.ndarray) -> np.ndarray:
    """Elementwise ``std::round`` of float32 (or float64) values, as float64 integers."""
    d = np.asarray(a, np.float64)
    return np.copysign(np.floor(np.abs(d) + 0.5), d)


#: compile options this module reads (``edgec.api.known_options`` collects them)
OPTIONS = {
    "int8_rounding": "tflite | double: requantization rounding of int8 models (tflite: the "
    "TFLite interpreter's reference kernels, bit-exact; double: TFLite Micro and CMSIS-NN)",
}


def rounding_of(g: Graph, fully_connected: bool = False) -> str:
    """The MultiplyByQuantizedMultiplier form ("single" or "double") of an op in this model
    (compile option ``int8_rounding``); ``fully_connected``: the op is QFullyConnected."""
    mode = str(g.options.get("int8_rounding", DEFAULT_MODE))
    if mode not in ROUNDING_MODES:
        raise EdgecError(
            f"option int8_rounding={mode!r}: expected 'tflite' (the TFLite interpreter) or "
            "'double' (TFLite Micro, CMSIS-NN)"
        )
    return "single" if mode == "tflite" and fully_connected else "double"


def quantize_multiplier(m: float, rounding: str = DEFAULT_ROUNDING) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier(double)`` → (int32 significand in [2^30, 2^31), shift);
    single rounding saturates shifts above 30 as TFLite does."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = tflite_round(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if rounding == "single" and shift > 30:
        return 2**31 - 1, 30
    return int(q_fixed), int(shift)


def quantize_multipliers(ms: Sequence[float], rounding: str = DEFAULT_ROUNDING
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` of each value → (int32 significands, int32 shifts)."""
    pairs = [quantize_multiplier(float(m), rounding) for m in ms]
    return (np.asarray([p[0] for p in pairs], np.int32),
            np.asarray([p[1] for p in pairs], np.int32))


def f32(x: float) -> float:
    """``x`` rounded to float32 (TFLite computes some multipliers in float, not double)."""
    return float(np.float32(x))


def activation_range(act: str, scale: float, zero_point: int) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized`` for int8: a fused NONE / RELU / RELU6 /
    RELU_N1_TO_1 as the (act_min, act_max) codes of the output."""

    def q(v: float) -> int:
        return zero_point + tflite_round(f32(f32(v) / f32(scale)))

    if act in ("NONE", ""):
        return -128, 127
    if act == "RELU":
        return max(-128, q(0.0)), 127
    if act == "RELU6":
        return max(-128, q(0.0)), min(127, q(6.0))
    if act == "RELU_N1_TO_1":
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise ValueError(f"fused activation {act!r}; supported: NONE, RELU, RELU6, RELU_N1_TO_1")


# -- run time: numpy references -----------------------------------------------------------------

def i64(x: object) -> Ints:
    return np.asarray(x, np.int64)


def wrap32(x: Ints) -> Ints:
    """Two's-complement wrap to int32 (what ``(int32_t)(uint32_t)x`` does in C)."""
    return ((i64(x) + 2**31) & 0xFFFFFFFF) - 2**31


def srdhm(a: object, b: object) -> Ints:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` (ARM VQRDMULH) on int32 values."""
    a, b = i64(a), i64(b)
    ab = a * b
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward zero
    return np.where((a == b) & (a == INT32_MIN), INT32_MAX, q)


def rdbp(x: object, exponent: object) -> Ints:
    """gemmlowp ``RoundingDivideByPOT``: x / 2^exponent rounded to nearest, ties away from 0."""
    x, e = i64(x), i64(exponent)
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > threshold)


def mbqm(x: object, multiplier: object, shift: object, rounding: str = DEFAULT_ROUNDING) -> Ints:
    """TFLite ``MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift)``."""
    s = i64(shift)
    if rounding == "single":
        total = 31 - s
        return (i64(x) * i64(multiplier) + (np.int64(1) << (total - 1))) >> total
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    return rdbp(srdhm(wrap32(i64(x) << left), multiplier), right)


def smmlar_form(multiplier: int, shift: int, zero_point: int, bound: int) -> tuple[int, int] | None:
    """``MBQM(x, multiplier, shift) + zero_point`` (double rounding) as one SMMLAR, for every
    ``|x| <= bound``: returns ``(e, r)`` with ``e = -shift`` such that, with ``v =
    SMMLAR(2x, multiplier, r) = r + ((2x·multiplier + 2^31) >> 32)``, the result is
    ``(v - (x < 0)) >> e`` (``v`` itself when ``e = 0``); None where that form does not apply
    (a left shift, a zero multiplier, or a doubled operand or sum that could leave int32).

    Why: ``(2x·M + 2^31) >> 32`` is gemmlowp's SaturatingRoundingDoublingHighMul(x, M) (M is
    never INT32_MIN), and RoundingDivideByPOT(v, e) + zp = ``(v + 2^(e-1) - (v < 0) + zp·2^e)
    >> e``; ``v < 0`` may be read off ``x < 0`` (M > 0; where they differ v = 0 and both give
    zp). :func:`smmlar_rq` is this form in numpy (tests check it against :func:`mbqm`)."""
    e = -int(shift)
    if int(multiplier) <= 0 or e < 0 or e > 31:
        return None
    r = ((1 << (e - 1)) if e else 0) + int(zero_point) * (1 << e)
    amax = 2 * int(bound)
    vmax = ((amax * int(multiplier)) >> 32) + 1
    if amax >= 1 << 31 or abs(r) > 1 << 30 or abs(r) + vmax >= 1 << 31:
        return None
    return e, r


def smmlar_rq(x: object, multiplier: int, e: int, r: int) -> Ints:
    """The SMMLAR form of :func:`smmlar_form` in numpy: what the C computes."""
    x = i64(x)
    v = r + ((2 * x * int(multiplier) + (1 << 31)) >> 32)
    return (v - (x < 0)) >> e if e else v


def saturating_shift_left(x: object, exponent: int) -> Ints:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` for exponent >= 0."""
    x = i64(x)
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX,
                    np.where(x < -threshold, INT32_MIN, wrap32(x << exponent)))


def rescale(x: object, src_bits: int, dst_bits: int) -> Ints:
    """gemmlowp ``Rescale<dst_bits>`` of a value with ``src_bits`` integer bits."""
    e = src_bits - dst_bits
    return saturating_shift_left(x, e) if e >= 0 else rdbp(x, -e)


def rounding_half_sum(a: object, b: object) -> Ints:
    s = i64(a) + i64(b)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: Ints) -> Ints:
    constant_term = 1895147668  # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbp(x4, 2)
    poly = rdbp(wrap32(srdhm(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: object, integer_bits: int) -> Ints:
    """gemmlowp ``exp_on_negative_values`` of a Q(integer_bits) value → Q0.31."""
    a = i64(a)
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    a_mod = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod, integer_bits, 0))
    remainder = wrap32(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac + exponent)
            result = np.where((remainder & bit) != 0, srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a: object) -> Ints:
    """gemmlowp ``one_over_one_plus_x_for_x_in_0_1`` (Q0.31 in and out; Newton-Raphson)."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))  # 48/17 - 32/17·d, Q2.29
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half_denominator, x))
        x = wrap32(x + saturating_shift_left(srdhm(x, one_minus), 2))
    return saturating_shift_left(x, 1)


def count_leading_zeros32(x: object) -> Ints:
    """Leading zero bits of uint32 values (32 for 0); frexp's exponent is the bit length."""
    u = (i64(x) & 0xFFFFFFFF).astype(np.float64)  # exact: integers below 2^53
    return 32 - np.frexp(u)[1].astype(np.int64)


def get_reciprocal(x: object, integer_digits: int) -> tuple[Ints, Ints]:
    """TFLite ``GetReciprocal`` → (Q0.31 reciprocal scale, num_bits_over_unit)."""
    x = i64(x)
    headroom_plus_one = count_leading_zeros32(x)
    bits_over_unit = integer_digits - headroom_plus_one
    shifted_minus_one = wrap32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), bits_over_unit


def clamp_int8(x: object, lo: int = -128, hi: int = 127) -> np.ndarray:
    return np.clip(i64(x), lo, hi).astype(np.int8)


# -- C ---------------------------------------------------------------------------------------

C_HELPERS: dict[str, str] = {
    "edgec_srdhm": """\
/* gemmlowp SaturatingRoundingDoublingHighMul: (a * b * 2 + 2^31) / 2^32, saturating.
 * gemmlowp's (ab + nudge) / 2^31 with its sign-dependent nudge (2^30 or 1 - 2^30) and a
 * division that truncates equals floor((ab + 2^30) / 2^31) for every ab: one add and an
 * arithmetic shift (no 64-bit division, no branch). */
static inline int32_t edgec_srdhm(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * (int64_t)b;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    return (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
}""",
    "edgec_rdbp": """\
/* gemmlowp RoundingDivideByPOT: x / 2^exponent, to nearest, ties away from zero. */
static inline int32_t edgec_rdbp(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + ((x & mask) > threshold ? 1 : 0);
}""",
    "edgec_mbqm": """\
/* TFLite MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), double rounding
 * (TFLite Micro, CMSIS-NN). The multiplier is a QuantizeMultiplier significand (0 or in
 * [2^30, 2^31)), never INT32_MIN, so SaturatingRoundingDoublingHighMul cannot saturate and is
 * (x * multiplier + 2^30) >> 31 (see edgec_srdhm). */
static inline int32_t edgec_mbqm(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    const int64_t ab = (int64_t)(int32_t)((uint32_t)x << left) * multiplier;
    return edgec_rdbp((int32_t)((ab + ((int64_t)1 << 30)) >> 31), right);
}""",
    "edgec_mbqm_single": """\
/* TFLite MultiplyByQuantizedMultiplier: x * multiplier * 2^(shift - 31), single rounding
 * (TFLITE_SINGLE_ROUNDING form): ties round toward +inf. */
static inline int32_t edgec_mbqm_single(int32_t x, int32_t multiplier, int shift)
{
    const int total = 31 - shift;
    return (int32_t)(((int64_t)x * multiplier + ((int64_t)1 << (total - 1))) >> total);
}""",
    "edgec_mbqm_right": """\
/* edgec_mbqm for a shift in [-31, -1] only (the caller checks at compile time): the doubling
 * high multiply as there, then RoundingDivideByPOT by e = -shift as floor((u + 2^(e-1)) / 2^e)
 * with u = v - (v < 0) (ties away from zero), computed as (w >> 1) + (w & 1) with
 * w = u >> (e - 1): no branch, no overflow (v > INT32_MIN). */
static inline int32_t edgec_mbqm_right(int32_t x, int32_t multiplier, int shift)
{
    const int64_t ab = (int64_t)x * multiplier;
    const int32_t v = (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
    const int32_t w = (int32_t)(v - (int32_t)((uint32_t)v >> 31)) >> (-shift - 1);
    return (w >> 1) + (w & 1);
}""",
    "edgec_mbqm_single_hi": """\
/* edgec_mbqm_single for a shift in [-31, -2] only (the caller checks at compile time): the
 * rounding constant 2^(30 - shift) is then a multiple of 2^32, so the 64-bit rounding shift is
 * the high word h of the product plus 2^(-2 - shift), shifted right by -1 - shift, which
 * equals ((h >> (-2 - shift)) + 1) >> 1 (exactly; no overflow since |h| < 2^30). Its last
 * argument is rshift = -2 - shift. */
static inline int32_t edgec_mbqm_single_hi(int32_t x, int32_t multiplier, int rshift)
{
    const int32_t h = (int32_t)(((int64_t)x * multiplier) >> 32);
    return ((h >> rshift) + 1) >> 1;
}""",
    "edgec_smmlar": """\
/* SMMLAR: r + ((a * m + 2^31) >> 32), the high word of a rounded 32x32 product plus r (one
 * instruction on cores with the DSP extension; callers keep |a| < 2^31 and |r| <= 2^30). */
static inline int32_t edgec_smmlar(int32_t a, int32_t m, int32_t r)
{
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && (__ARM_FEATURE_DSP == 1) && \\
    !defined(EDGEC_NO_DSP)
    int32_t v;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(v) : "r"(a), "r"(m), "r"(r));
    return v;
#else
    return (int32_t)(((int64_t)a * m + (int64_t)r * 4294967296LL + 2147483648LL) >> 32);
#endif
}""",
    "edgec_rq_smmlar": """\
/* MBQM(acc, m, -e) + zp (double rounding) as one SMMLAR, r = 2^(e-1) + zp * 2^e (see
 * smmlar_form; the caller checks at compile time that 2 acc and r + the product stay in
 * int32). */
static inline int32_t edgec_rq_smmlar(int32_t acc, int32_t m, int32_t r, int32_t e)
{
    return (edgec_smmlar(acc * 2, m, r) - (acc < 0)) >> e;
}""",
    "edgec_ssat8": """\
/* Saturate to [-128, 127] (SSAT on cores that have it). */
static inline int32_t edgec_ssat8(int32_t v)
{
#if defined(__GNUC__) && defined(__ARM_FEATURE_SAT) && (__ARM_FEATURE_SAT == 1)
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(v));
    return r;
#else
    return v < -128 ? -128 : (v > 127 ? 127 : v);
#endif
}""",
    "edgec_sat_shl": """\
/* gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent. */
static inline int32_t edgec_sat_shl(int32_t x, int exponent)
{
    const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << exponent);
}""",
    "edgec_one_over_one_plus_x": """\
/* gemmlowp one_over_one_plus_x_for_x_in_0_1 (Q0.31): Newton-Raphson division. */
static inline int32_t edgec_one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = (int32_t)((uint32_t)1515870810 + (uint32_t)edgec_srdhm(half_denominator,
                                                                       -1010580540));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus =
            (int32_t)((uint32_t)(1 << 29) - (uint32_t)edgec_srdhm(half_denominator, x));
        x = (int32_t)((uint32_t)x + (uint32_t)edgec_sat_shl(edgec_srdhm(x, one_minus), 2));
    }
    return edgec_sat_shl(x, 1);
}""",
    "edgec_clz32": """\
/* Leading zero bits of a 32-bit value (32 for 0). */
static inline int edgec_clz32(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return x ? __builtin_clz(x) : 32;
#else
    int n = 0;
    if (!x) return 32;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}""",
}

#: helpers each helper calls (emitted first)
_DEPENDS = {
    "edgec_mbqm": ("edgec_rdbp",),
    "edgec_rq_smmlar": ("edgec_smmlar",),
    "edgec_one_over_one_plus_x": ("edgec_srdhm", "edgec_sat_shl"),
}


def use_helpers(ctx: EmitContext, *names: str) -> None:
    """Emit the named C helpers (and those they call) into the model's source, once."""
    for name in names:
        for dep in _DEPENDS.get(name, ()):
            use_helpers(ctx, dep)
        ctx.helper(name, C_HELPERS[name])


def right_shifts_only(shifts: object, lo: int = -31, hi: int = -1) -> bool:
    """Whether every shift lies in [lo, hi] (the domain of the branch-free helpers
    ``edgec_mbqm_right``: [-31, -1], and ``edgec_mbqm_single_hi``: [-31, -2])."""
    s = np.asarray(shifts).reshape(-1)
    return bool(s.size) and bool(np.all((s >= lo) & (s <= hi)))


def use_mbqm(ctx: EmitContext, rounding: str, shifts: object = None) -> str:
    """The C MultiplyByQuantizedMultiplier of form ``rounding`` (emitted once); its name.
    With the ``shifts`` a kernel uses, double rounding takes the branch-free
    ``edgec_mbqm_right`` when every shift is in [-31, -1] (a multiplier below 1/2)."""
    if rounding == "single":
        name = "edgec_mbqm_single"
    elif shifts is not None and right_shifts_only(shifts):
        name = "edgec_mbqm_right"
    else:
        name = "edgec_mbqm"
    use_helpers(ctx, name)
    return name
