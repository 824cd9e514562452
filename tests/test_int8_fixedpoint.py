"""The shared fixed-point arithmetic: QuantizeMultiplier and MultiplyByQuantizedMultiplier
against independent exact-rational formulations, gemmlowp's edge cases, and the C helpers equal
to the numpy ones on random and extreme int32 values."""

from __future__ import annotations

import ctypes
from fractions import Fraction

import numpy as np
import pytest

from edgec.backend.host import build_cached_library
from edgec.ops.int8 import fixedpoint as fp

INT32 = np.iinfo(np.int32)


def _round_half_away(q: Fraction) -> int:
    n = abs(q.numerator) * 2 + q.denominator
    v = n // (2 * q.denominator)
    return v if q >= 0 else -v


def _double_rounding(x: int, m: int, shift: int) -> int:
    """MBQM as exact rationals: x·2^left·m / 2^31 rounded half away (SRDHM), then / 2^right
    rounded half away (RoundingDivideByPOT)."""
    left, right = max(shift, 0), max(-shift, 0)
    high = _round_half_away(Fraction(x * (1 << left) * m, 1 << 31))
    return _round_half_away(Fraction(high, 1 << right))


def _single_rounding(x: int, m: int, shift: int) -> int:
    """x·m / 2^(31 - shift) rounded half up (toward +inf)."""
    q = Fraction(x * m, 1 << (31 - shift))
    return int((q + Fraction(1, 2)).__floor__())


def test_quantize_multiplier_cases() -> None:
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fp.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.75) == (3 << 29, 0)
    assert fp.quantize_multiplier(1e-12) == (0, 0)  # shift below -31 flushes to zero
    assert fp.quantize_multiplier(1 - 2.0**-40) == (1 << 30, 1)  # rounds up to 2^31
    assert fp.quantize_multiplier(2.0**33, "double") == (1 << 30, 34)
    assert fp.quantize_multiplier(2.0**33, "single") == (2**31 - 1, 30)
    rng = np.random.default_rng(0)
    for m in rng.uniform(1e-6, 50, 200):
        q, s = fp.quantize_multiplier(float(m))
        assert 1 << 30 <= q < 1 << 31
        assert abs(q * 2.0 ** (s - 31) - m) <= 2.0 ** (s - 32)


def test_mbqm_matches_exact_rationals() -> None:
    rng = np.random.default_rng(1)
    xs = np.concatenate([rng.integers(-(2**24), 2**24, 400), [0, 1, -1, 2**20, -(2**20)]])
    for x in xs:
        m = int(rng.integers(1 << 30, 1 << 31))
        s = int(rng.integers(-20, 4))
        assert int(fp.mbqm(x, m, s, "double")) == _double_rounding(int(x), m, s)
        assert int(fp.mbqm(x, m, s, "single")) == _single_rounding(int(x), m, s)


def test_gemmlowp_edge_cases() -> None:
    assert int(fp.srdhm(INT32.min, INT32.min)) == INT32.max  # the one saturating product
    assert int(fp.srdhm(INT32.min, INT32.max)) == -INT32.max
    assert [int(v) for v in fp.rdbp([3, -3, 5, -5, 6, -6], 1)] == [2, -2, 3, -3, 3, -3]
    assert [int(v) for v in fp.rdbp([-5, -6, 5, 6, -7], 2)] == [-1, -2, 1, 2, -2]
    assert int(fp.exp_on_negative_values(0, 5)) == INT32.max
    xs = -np.arange(0, 32 << 26, 1 << 22, dtype=np.int64)
    e = fp.exp_on_negative_values(xs, 5) / 2.0**31
    assert np.allclose(e, np.exp(xs / 2.0**26), atol=2e-8)
    r = fp.one_over_one_plus_x_for_x_in_0_1(np.arange(0, 2**31 - 1, 2**24)) / 2.0**31
    assert np.allclose(r, 1 / (1 + np.arange(0, 2**31 - 1, 2**24) / 2.0**31), atol=3e-9)
    assert [int(v) for v in fp.count_leading_zeros32([0, 1, 2**31 - 1, -1, 2**30])] == [
        32, 31, 1, 0, 1]


_HARNESS = """\
#include <stdint.h>
{helpers}
void run_mbqm(const int32_t *x, const int32_t *m, const int32_t *s, int32_t *y, int n, int single)
{{
    for (int i = 0; i < n; ++i)
        y[i] = single ? edgec_mbqm_single(x[i], m[i], s[i]) : edgec_mbqm(x[i], m[i], s[i]);
}}
void run_mbqm_fast(const int32_t *x, const int32_t *m, const int32_t *s, int32_t *y, int n,
                   int single)
{{
    for (int i = 0; i < n; ++i)
        y[i] = single ? edgec_mbqm_single_hi(x[i], m[i], -2 - s[i])
                      : edgec_mbqm_right(x[i], m[i], s[i]);
}}
void run_srdhm(const int32_t *a, const int32_t *b, int32_t *y, int n)
{{
    for (int i = 0; i < n; ++i) y[i] = edgec_srdhm(a[i], b[i]);
}}
void run_rdbp(const int32_t *x, const int32_t *e, int32_t *y, int n)
{{
    for (int i = 0; i < n; ++i) y[i] = edgec_rdbp(x[i], e[i]);
}}
void run_recip(const int32_t *x, int32_t *y, int n)
{{
    for (int i = 0; i < n; ++i) y[i] = edgec_one_over_one_plus_x(x[i]);
}}
void run_clz(const uint32_t *x, int32_t *y, int n)
{{
    for (int i = 0; i < n; ++i) y[i] = edgec_clz32(x[i]);
}}
"""


@pytest.fixture(scope="module")
def clib() -> ctypes.CDLL:
    order = ["edgec_srdhm", "edgec_rdbp", "edgec_mbqm", "edgec_mbqm_single", "edgec_mbqm_right",
             "edgec_mbqm_single_hi", "edgec_sat_shl",
             "edgec_one_over_one_plus_x", "edgec_clz32"]
    src = _HARNESS.format(helpers="\n".join(fp.C_HELPERS[k] for k in order))
    path = build_cached_library(
        "fixedpoint", {"fp.c": src}, ["fp.c"],
        ("-O2", "-std=c99", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", "-pedantic"),
        "the fixed-point harness")
    return ctypes.CDLL(str(path))


def _p(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def _i32(a: object) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, np.int64).astype(np.int32))


def test_c_helpers_equal_numpy(clib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(2)
    n = 20000
    edge = np.array([INT32.min, INT32.max, 0, 1, -1, INT32.min + 1, 1 << 30, -(1 << 30)])
    a = _i32(np.concatenate([edge, rng.integers(INT32.min, INT32.max, n, endpoint=True)]))
    b = _i32(np.concatenate([edge[::-1], rng.integers(INT32.min, INT32.max, n, endpoint=True)]))
    y = np.zeros_like(a)
    clib.run_srdhm(_p(a), _p(b), _p(y), a.size)
    assert np.array_equal(y, fp.srdhm(a, b))

    e = _i32(rng.integers(0, 32, a.size))
    clib.run_rdbp(_p(a), _p(e), _p(y), a.size)
    assert np.array_equal(y, fp.rdbp(a, e))

    # MBQM in its valid domain: accumulators of int8 products, multipliers in [2^30, 2^31)
    x = _i32(rng.integers(-(2**26), 2**26, a.size))
    m = _i32(rng.integers(1 << 30, 1 << 31, a.size))
    s = _i32(rng.integers(-31, 5, a.size))
    for single, form in ((0, "double"), (1, "single")):
        clib.run_mbqm(_p(x), _p(m), _p(s), _p(y), a.size, single)
        assert np.array_equal(y, fp.mbqm(x, m, s, form)), form

    # the branch-free forms on their shift domains, over the whole int32 range of x
    xf = _i32(np.concatenate([edge, rng.integers(INT32.min, INT32.max, n, endpoint=True)]))
    mf = _i32(np.concatenate([np.full(edge.size, 2**31 - 1), m[edge.size:]]))
    for single, form, lo in ((0, "double", -31), (1, "single", -31)):
        sf = _i32(rng.integers(lo, -1 if single else 0, a.size))
        sf[: edge.size] = -1 - single
        clib.run_mbqm_fast(_p(xf), _p(mf), _p(sf), _p(y), a.size, single)
        assert np.array_equal(y, fp.mbqm(xf, mf, sf, form)), form

    r = _i32(rng.integers(0, INT32.max, a.size))
    clib.run_recip(_p(r), _p(y), a.size)
    assert np.array_equal(y, fp.one_over_one_plus_x_for_x_in_0_1(r))

    u = np.ascontiguousarray(rng.integers(0, 2**32, a.size, dtype=np.uint64).astype(np.uint32))
    u[:3] = [0, 1, 2**32 - 1]
    clib.run_clz(_p(u), _p(y), a.size)
    assert np.array_equal(y, fp.count_leading_zeros32(u))
