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
    double worst = 0.0, worst_s = 0.0;
    uint32_t b;
    int i, k;
    for (b = 0u; b < 0x42100000u; b += STEP) {
        for (k = 0; k < 3; ++k) {
            /* the sweep, and the first float of each interval of both tables +-2 */
            uint32_t v = k == 0 ? b : (k == 1 ? 0x3d800000u : 0x3e000000u)
                                      + (b % 64u) * 0x100000u + (b % 5u) - 2u;
            float x, y, s, tf; double t, ulp;
            memcpy(&x, &v, 4);
            y = edgec_tanhf(x); t = tanh((double)x); tf = (float)t;
            ulp = (double)nextafterf(fabsf(tf), INFINITY) - fabsf(tf);
            if (fabs(y - t) / ulp > worst) worst = fabs(y - t) / ulp;
            if (edgec_tanhf(-x) != -y) { printf("not odd at %g\n", x); return 1; }
            s = edgec_sigmoidf(x); t = 1.0 / (1.0 + exp(-(double)x));
            if (fabs(s - t) > worst_s) worst_s = fabs(s - t);
            if (edgec_sigmoidf(-x) != 1.0f - s) { printf("sigmoid(-x) at %g\n", x); return 1; }
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
    printf("%.6f %.4g %d %d %d %.9g\n", worst, worst_s,
           isnan(edgec_tanhf(NAN)) && isnan(edgec_sigmoidf(NAN)) ? 1 : 0,
           signbit(edgec_tanhf(-0.0f)) ? 1 : 0, edgec_sigmoidf(0.0f) == 0.5f ? 1 : 0,
           (double)edgec_tanhf(1e-30f));
    return 0;
}
"""


@pytest.mark.parametrize("contract", ["off", "fma"])
def test_tanhf_sigmoidf_accuracy(tmp_path: Path, contract: str) -> None:
    """edgec_tanhf and edgec_sigmoidf (the C paths) against double precision on a sweep of floats
    and around every table interval's start: tanh <= 1.5 ulp and odd, +-1 from 16 up and at
    +-inf, NaN, -0, tiny x -> x; sigmoid within 7e-8 absolute, sigmoid(-x) = 1 - sigmoid(x),
    1 and 0 from 32 up, NaN; without fused multiply-adds (strict C99) and with them (as the
    firmware computes)."""
    flags = ["-ffp-contract=off"]
    if contract == "fma":
        if platform.machine() not in ("x86_64", "AMD64"):
            flags = ["-ffp-contract=fast"]
        else:
            flags = ["-mfma", "-ffp-contract=fast"]
            if "fma" not in Path("/proc/cpuinfo").read_text():
                pytest.skip("the host CPU has no FMA")
    src = tmp_path / "t.c"
    src.write_text("#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n"
                   "#include <string.h>\n" + c_math.F32_BITS + "\n" + c_math.TANHF + "\n"
                   + c_math.SIGMOIDF + _SWEEP)
    exe = tmp_path / "t"
    proc = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                           "-DSTEP=4099u", *flags, str(src), "-lm", "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout
    worst, worst_s, isnan, neg_zero, half, tiny = run.stdout.split()
    assert float(worst) <= 1.5
    assert float(worst_s) <= 7e-8
    assert (isnan, neg_zero, half, np.float32(tiny)) == ("1", "1", "1", np.float32(1e-30))


@pytest.mark.parametrize(("table", "lo", "func"), [
    ("TANH_TABLE", 1 / 16, np.tanh),
    ("SIGMOID_TABLE", 1 / 8, lambda x: 0.5 + 0.5 * np.tanh(0.5 * x)),
])
def test_table_layout(table: str, lo: float, func: Callable[[np.ndarray], np.ndarray]) -> None:
    """The tables the C indexes: 64 rows of 6 floats, interval starts [0, 9/8 lo, ...) eight per
    binade up to 240 lo, each row's polynomial close to the function on its interval; tanh's
    first interval tanh(t) = t + O(t^2)."""
    rows = [[float(v) for v in r.split(", ")] for r in getattr(c_math, table)]
    assert len(rows) == 64 and all(len(r) == 6 for r in rows)
    starts = [0.0] + [lo * 2.0 ** (i // 8) * (1 + (i % 8) / 8) for i in range(1, 64)]
    assert [r[0] for r in rows] == starts
    if table == "TANH_TABLE":
        assert rows[0][4:] == [1.0, 0.0]
    assert c_math.TABLE_BYTES == 1536
    t = np.linspace(0, 1, 9)[:-1]
    for (c, *coef), nxt in zip(rows, [*starts[1:], 256 * lo], strict=True):
        x = c + t * (nxt - c)
        np.testing.assert_allclose(np.polyval(coef, x - c), func(x), rtol=3e-7, atol=0)


def test_kernels_call_edgec_tanhf_not_libm() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 7)}, ["y"],
                               {"w": rng.standard_normal((5, 7)).astype(np.float32)}))
    src = m.c_source
    assert "edgec_tanhf(" in src and " tanhf(" not in src and "(tanhf(" not in src
    assert src.count("static inline float edgec_tanhf(float x)") == 1
    assert src.count("static const float edgec_tanh_tab[64][6]") == 1


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
    """On the Cortex-M4F the inline assembly (one VLDM, four VFMAs) gives the bits of the C path
    (-DEDGEC_NO_ASM, built with fused multiply-adds as the firmware is) over each interval's
    start and end, signs, zeros, tiny and huge values, inf and NaN: tanh (a Tanh node) within
    1.5 ulp of tanh, the sigmoid (an RNN cell of one unit, W = 1, R = 0: h_t = sigmoid(x_t))
    within 7e-8 of the logistic function."""
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
