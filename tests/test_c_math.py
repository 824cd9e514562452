"""edgec's own float math for kernels (edgec/backend/c_math.py): accuracy and use."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import edgec
from edgec.backend import c_math
from edgec.mcu.project import build_firmware
from edgec.mcu.qemu import run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from tests.helpers import check_model, make_model

_SWEEP = r"""
int main(void) {
    double worst = 0.0, worst_s = 0.0, worst_sum = 0.0;
    uint32_t b;
    int i, k;
    for (b = 0u; b < 0x42100000u; b += STEP) {
        for (k = 0; k < 3; ++k) {
            /* the sweep, and the first float of each interval of both tables +-2 */
            uint32_t v = k == 0 ? b : (k == 1 ? 0x3d800000u : 0x3e000000u)
                                      + (b % 64u) * 0x100000u + (b % 5u) - 2u;
            float x, y, yn, s, sn, tf; double t, ulp;
            memcpy(&x, &v, 4);
            y = edgec_tanhf(x); t = tanh((double)x); tf = (float)t;
            ulp = (double)nextafterf(fabsf(tf), INFINITY) - fabsf(tf);
            if (fabs(y - t) / ulp > worst) worst = fabs(y - t) / ulp;
            yn = -y;
            if (memcmp(&(float){edgec_tanhf(-x)}, &yn, 4) != 0) {
                printf("not odd at %g\n", x); return 1;
            }
            s = edgec_sigmoidf(x); t = 1.0 / (1.0 + exp(-(double)x));
            if (fabs(s - t) > worst_s) worst_s = fabs(s - t);
            sn = edgec_sigmoidf(-x); t = 1.0 / (1.0 + exp((double)x));
            if (fabs(sn - t) > worst_s) worst_s = fabs(sn - t);
            if (!(sn >= 0.0f)) { printf("sigmoid < 0 at %g\n", -x); return 4; }
            if (fabs((double)s + (double)sn - 1.0) > worst_sum) {
                worst_sum = fabs((double)s + (double)sn - 1.0);
            }
        }
    }
    {
        const float big[] = {16.0f, 15.999999f, 32.0f, 1e30f, 3.4028235e38f, INFINITY};
        for (i = 0; i < 6; ++i) {
            if (edgec_tanhf(big[i]) != 1.0f || edgec_tanhf(-big[i]) != -1.0f) return 2;
        }
        for (i = 2; i < 6; ++i) {
            if (edgec_sigmoidf(big[i]) != 1.0f || edgec_sigmoidf(-big[i]) != 0.0f) return 3;
        }
    }
    printf("%.6f %.4g %.4g %d %d %d %.9g\n", worst, worst_s, worst_sum,
           isnan(edgec_tanhf(NAN)) && isnan(edgec_sigmoidf(NAN)) ? 1 : 0,
           signbit(edgec_tanhf(-0.0f)) ? 1 : 0, edgec_sigmoidf(0.0f) == 0.5f ? 1 : 0,
           (double)edgec_tanhf(1e-30f));
    return 0;
}
"""


def _run_with_functions(tmp_path: Path, contract: str, driver: str, step: int) -> list[str]:
    """``driver`` after c_math's tanh and sigmoid, built by the host gcc (strict C99, -DSTEP),
    without fused multiply-adds (``contract`` "off") or with them ("fma"); its stdout's words."""
    flags = ["-ffp-contract=off"]
    if contract == "fma":
        flags = ["-ffp-contract=fast"]
        if platform.machine() in ("x86_64", "AMD64"):
            if "fma" not in Path("/proc/cpuinfo").read_text():
                pytest.skip("the host CPU has no FMA")
            flags.append("-mfma")
    src = tmp_path / "t.c"
    src.write_text("#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n"
                   "#include <string.h>\n" + c_math.F32_BITS + "\n" + c_math.TANHF + "\n"
                   + c_math.SIGMOIDF + driver)
    exe = tmp_path / "t"
    proc = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                           f"-DSTEP={step}u", *flags, str(src), "-lm", "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout
    return run.stdout.split()


@pytest.mark.parametrize("contract", ["off", "fma"])
def test_tanhf_sigmoidf_accuracy(tmp_path: Path, contract: str) -> None:
    """edgec_tanhf and edgec_sigmoidf (the C paths) against double precision on a sweep of floats
    and around every table interval's start, both signs: tanh <= 1.5 ulp and odd bit for bit,
    +-1 from 16 up and at +-inf, NaN, -0, tiny x -> x; sigmoid within 7e-8 absolute,
    sigmoid(x) + sigmoid(-x) within 5e-8 of 1 (the rows for x < 0 round 1 - P once, not P),
    1 and 0 from 32 up, NaN; without fused multiply-adds (strict C99) and with them (as the
    firmware computes)."""
    worst, worst_s, worst_sum, isnan, neg_zero, half, tiny = _run_with_functions(
        tmp_path, contract, _SWEEP, 4099)
    assert float(worst) <= 1.5
    assert float(worst_s) <= 7e-8
    assert float(worst_sum) <= 5e-8
    assert (isnan, neg_zero, half, np.float32(tiny)) == ("1", "1", "1", np.float32(1e-30))


@pytest.mark.parametrize(("table", "lo", "func"), [
    ("TANH_TABLE", 1 / 16, np.tanh),
    ("SIGMOID_TABLE", 1 / 8, lambda x: 0.5 + 0.5 * np.tanh(0.5 * x)),
])
def test_table_layout(table: str, lo: float, func: Callable[[np.ndarray], np.ndarray]) -> None:
    """The tables the C indexes: 128 rows of 6 floats, row 2k interval k's fitted row (starts
    [0, 9/8 lo, ...) eight per binade up to 240 lo), row 2k + 1 derived from it exactly for
    x < 0 (start -c, +0 for the first; -c4, c3, -c2, c1 and tanh's -c0 or the sigmoid's 1 - c0,
    exact as c0 is in [1/2, 1]); each row's polynomial close to the function on its interval
    (relative, and the sigmoid for x < 0 within 1.2e-7 absolute); tanh's first interval
    tanh(t) = t + O(t^2), its x < 0 row ending in -0 (tanh(-0) = -0)."""
    rows = [[np.float32(v) for v in r.split(", ")] for r in getattr(c_math, table)]
    assert len(rows) == 128 and all(len(r) == 6 for r in rows)
    pos, neg = rows[0::2], rows[1::2]
    starts = [0.0] + [lo * 2.0 ** (i // 8) * (1 + (i % 8) / 8) for i in range(1, 64)]
    assert [float(r[0]) for r in pos] == starts
    one = np.float32(1.0)
    for (c, c4, c3, c2, c1, c0), n in zip(pos, neg, strict=True):
        d0 = -c0 if table == "TANH_TABLE" else one - c0
        assert table == "TANH_TABLE" or (0.5 <= c0 <= 1.0 and float(d0) == 1.0 - float(c0))
        want = [-c if c != 0 else np.float32(0.0), -c4, c3, -c2, c1, d0]
        assert [v.tobytes() for v in n] == [v.tobytes() for v in want]
    if table == "TANH_TABLE":
        assert [float(v) for v in pos[0][4:]] == [1.0, 0.0]
        assert np.signbit(neg[0][5]) and not np.signbit(neg[0][0])
    assert c_math.TABLE_BYTES == 3072
    t = np.linspace(0, 1, 9)[:-1]
    for (c, *coef), (nc, *ncoef), nxt in zip(pos, neg, [*starts[1:], 256 * lo], strict=True):
        x = float(c) + t * (nxt - float(c))
        np.testing.assert_allclose(np.polyval(coef, x - c), func(x), rtol=3e-7, atol=0)
        y, want = np.polyval(ncoef, -x - nc), func(-x)
        if table == "TANH_TABLE":
            np.testing.assert_allclose(y, want, rtol=3e-7, atol=0)
        else:
            np.testing.assert_allclose(y, want, rtol=0, atol=1.2e-7)


#: the functions as they were before the sign-split tables: interval k's row (the table's row
#: 2k), t = |x| - c, then tanh's sign by negation and the sigmoid's by 1 - P
_OLD = r"""
static float old_eval(const float (*tab)[6], uint32_t lo, int sig, float x)
{
    const uint32_t b = edgec_f32_bits(x), a = b & 0x7fffffffu;
    const float *c = tab[2u * ((a > lo) ? ((a - lo) >> 20) : 0u)];
    float t, p;
    t = fabsf(x) - c[0];
    p = (c[1] * t) + c[2];
    p = (p * t) + c[3];
    p = (p * t) + c[4];
    p = (p * t) + c[5];
    return (b >> 31) == 0u ? p : (sig ? 1.0f - p : -p);
}

int main(void) {
    uint32_t b;
    long diff_t = 0, diff_s_pos = 0, diff_s_neg = 0;
    double worst = 0.0;
    for (b = 0u; b < 0x42000000u; b += STEP) { /* |x| < 32 */
        int sign;
        for (sign = 0; sign < 2; ++sign) {
            uint32_t v = b | (sign ? 0x80000000u : 0u);
            float x, y, z;
            memcpy(&x, &v, 4);
            if (b < 0x41800000u) { /* |x| < 16 */
                y = edgec_tanhf(x);
                z = old_eval(edgec_tanh_tab, 0x3d800000u, 0, x);
                if (memcmp(&y, &z, 4) != 0) ++diff_t;
            }
            y = edgec_sigmoidf(x);
            z = old_eval(edgec_sigmoid_tab, 0x3e000000u, 1, x);
            if (memcmp(&y, &z, 4) != 0) {
                if (sign) ++diff_s_neg; else ++diff_s_pos;
                if (fabs((double)y - (double)z) > worst) worst = fabs((double)y - (double)z);
            }
        }
    }
    printf("%ld %ld %ld %.9g\n", diff_t, diff_s_pos, diff_s_neg, worst);
    return 0;
}
"""


@pytest.mark.parametrize("contract", ["off", "fma"])
def test_sign_split_rows_match_the_old_formula(tmp_path: Path, contract: str) -> None:
    """The rows for x < 0 against the functions as they were (interval k's row at t = |x| - c,
    then -p or 1 - p) on every 997th float of |x| < 32, both signs, without and with fused
    multiply-adds: tanh the same bits everywhere (-0 included), the sigmoid the same bits for
    x >= 0 and, for x < 0, within the two roundings it moves (P's, at most 2^-25, and the
    result's, at most 2^-26), and different somewhere (one rounding fewer)."""
    diff_t, diff_s_pos, diff_s_neg, worst = _run_with_functions(tmp_path, contract, _OLD, 997)
    assert (diff_t, diff_s_pos) == ("0", "0")
    assert int(diff_s_neg) > 0
    assert float(worst) <= 2.0**-25 + 2.0**-26


def test_kernels_call_edgec_tanhf_not_libm() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 7)}, ["y"],
                               {"w": rng.standard_normal((5, 7)).astype(np.float32)}))
    src = m.c_source
    assert "edgec_tanhf(" in src and " tanhf(" not in src and "(tanhf(" not in src
    assert src.count("static inline float edgec_tanhf(float x)") == 1
    assert src.count("static const float edgec_tanh_tab[128][6]") == 1


def test_apply_renames_only_whole_calls() -> None:
    code, needed = c_math.apply("y = tanhf(a) + my_tanhf(b) + tanhf (c);")
    assert code == "y = edgec_tanhf(a) + my_tanhf(b) + edgec_tanhf(c);"
    assert [n for n, _ in needed] == ["edgec_f32_bits", "edgec_tanhf"]
    assert c_math.apply("y = expf(a);") == ("y = expf(a);", [])


def _board_bits(m: object, x: np.ndarray, tmp: Path) -> list[np.ndarray]:
    """``m``'s output for ``x`` on the emulated M4F, with the assembly and with -DEDGEC_NO_ASM."""
    got = []
    for flags in ((), ("-DEDGEC_NO_ASM",)):
        build = build_firmware(m, load_target("cortex-m4f"), tmp / str(len(flags)), [[x]],
                               extra_cflags=flags)
        assert build.warnings == [], build.warnings
        res = run_qemu(build, timeout_s=60)
        assert res.returncode == 0 and "EDGEC-END ok" in res.stdout
        got.append(res.outputs[0][0].reshape(-1))
    return got


def _probe_inputs(lo_bits: int) -> np.ndarray:
    """Each interval's first float, the float before it, after it and halfway, both signs;
    random values; zeros, tiny and huge values (no inf or NaN)."""
    starts = np.array([lo_bits + i * 0x100000 for i in range(65)], np.int64)
    bits = np.concatenate([starts, starts - 1, starts + 1, starts + 0x7FFFF]).astype(np.uint32)
    x = bits.view(np.float32)
    rng = np.random.default_rng(0)
    return np.concatenate([x, -x, rng.standard_normal(200).astype(np.float32) * 8,
                           np.array([0.0, -0.0, 1e-30, -1e-40, 31.99, 32.0, 1e30, -3e38],
                                    np.float32)]).astype(np.float32)


@pytest.mark.qemu
@pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
)
def test_assembly_equals_c_on_the_m4f(tmp_path: Path) -> None:
    """On the Cortex-M4F the inline assembly (the row 2k + sign, one VLDM, four VFMAs at x - c)
    gives the bits of the C path (-DEDGEC_NO_ASM, built with fused multiply-adds as the firmware
    is) over each interval's start and end for both signs, zeros, tiny and huge values, inf and
    NaN: tanh (a Tanh node) within 1.5 ulp of tanh and odd bit for bit (-0 included), the sigmoid
    (an RNN cell of one unit, W = 1, R = 0: h_t = sigmoid(x_t)) within 7e-8 of the logistic
    function and sigmoid(x) + sigmoid(-x) within 5e-8 of 1."""
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    x = np.concatenate([_probe_inputs(0x3D800000), special])
    n = x.size
    m = check_model(make_model([helper.make_node("Tanh", ["x"], ["y"])], {"x": (1, n)}, ["y"]))
    got = _board_bits(m, x.reshape(1, n), tmp_path / "tanh")
    assert got[0].tobytes() == got[1].tobytes()
    want = np.tanh(x.astype(np.float64))
    finite = np.isfinite(x)
    ulp = np.spacing(np.abs(want[finite]).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[0][finite] - want[finite]) / ulp) <= 1.5
    np.testing.assert_array_equal(got[0][~finite], np.tanh(x[~finite]))
    half = 4 * 65  # _probe_inputs: the interval probes, then the same negated
    assert got[0][:half].tobytes() == (-got[0][half:2 * half]).tobytes()
    zeros = got[0][np.flatnonzero(x == 0)]
    assert np.signbit(zeros).tolist() == np.signbit(x[x == 0]).tolist()

    x = np.concatenate([_probe_inputs(0x3E000000), special])  # NaN last: it stays in h
    n = x.size
    one = np.ones((1, 1, 1), np.float32)
    rnn = helper.make_node("RNN", ["x", "w", "r"], ["y"], hidden_size=1,
                           activations=["Sigmoid"])
    m = edgec.compile(make_model([rnn], {"x": (n, 1, 1)}, ["y"], {"w": one, "r": 0 * one}))
    got = _board_bits(m, x.reshape(n, 1, 1), tmp_path / "sigmoid")
    assert got[0].tobytes() == got[1].tobytes()
    want = 0.5 + 0.5 * np.tanh(0.5 * x.astype(np.float64))
    assert np.max(np.abs(got[0][:-1] - want[:-1])) <= 7e-8
    assert np.isnan(got[0][-1])
    pair = got[0][:half].astype(np.float64) + got[0][half:2 * half]
    assert np.max(np.abs(pair - 1.0)) <= 5e-8
