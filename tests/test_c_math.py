"""edgec's own float math for kernels (edgec/backend/c_math.py): accuracy and use."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from onnx import helper

from edgec.backend import c_math
from tests.helpers import check_model, make_model


def test_tanhf_accuracy(tmp_path: Path) -> None:
    """edgec_tanhf against double tanh on a dense sweep of floats: <= 2 ulp, odd, +-1, NaN."""
    src = tmp_path / "t.c"
    src.write_text(
        "#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n"
        + c_math.TANHF
        + r"""
int main(void) {
    double worst = 0.0;
    uint32_t b;
    for (b = 0u; b < 0x41300000u; b += 997u) {
        float x, y, tf; double t, ulp;
        memcpy(&x, &b, 4);
        y = edgec_tanhf(x); t = tanh((double)x); tf = (float)t;
        ulp = (double)nextafterf(fabsf(tf), INFINITY) - fabsf(tf);
        if (fabs(y - t) / ulp > worst) worst = fabs(y - t) / ulp;
        if (edgec_tanhf(-x) != -y) { printf("not odd at %g\n", x); return 1; }
    }
    printf("%.6f %g %g %d\n", worst, edgec_tanhf(INFINITY), edgec_tanhf(-20.0f),
           isnan(edgec_tanhf(NAN)) ? 1 : 0);
    return 0;
}
"""
    )
    exe = tmp_path / "t"
    proc = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                           str(src), "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    worst, pinf, m20, isnan = subprocess.run([str(exe)], capture_output=True, text=True,
                                             timeout=60).stdout.split()
    assert float(worst) <= 2.0
    assert (float(pinf), float(m20), isnan) == (1.0, -1.0, "1")


def test_kernels_call_edgec_tanhf_not_libm() -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 7)}, ["y"],
                               {"w": rng.standard_normal((5, 7)).astype(np.float32)}))
    src = m.c_source
    assert "edgec_tanhf(" in src and " tanhf(" not in src and "(tanhf(" not in src
    assert src.count("static float edgec_tanhf(float x)") == 1


def test_apply_renames_only_whole_calls() -> None:
    code, needed = c_math.apply("y = tanhf(a) + my_tanhf(b) + tanhf (c);")
    assert code == "y = edgec_tanhf(a) + my_tanhf(b) + edgec_tanhf(c);"
    assert [n for n, _ in needed] == ["edgec_tanhf"]
    assert c_math.apply("y = expf(a);") == ("y = expf(a);", [])
