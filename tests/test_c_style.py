"""edgec/backend/c_style.py: the shared clean-up of generated C keeps its meaning (random
integer expressions compiled before and after agree) and does what it says."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from edgec.backend.c_style import normalize

OPS = ["+", "-", "*", "/", "%", "<<", ">>", "<", ">", "<=", "==", "!=", "&", "^", "|", "&&",
       "||"]


def _expr(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["a", "b", "c", "0", "1", "3", "(a - b)", "x[b]"])
    if rng.random() < 0.15:
        return f"{_expr(rng, depth - 1)} ? {_expr(rng, depth - 1)} : {_expr(rng, depth - 1)}"
    if rng.random() < 0.1:
        return f"-{_expr(rng, 0)}"
    op = rng.choice(OPS)
    right = _expr(rng, depth - 1)
    if op in ("/", "%"):
        right = "7"
    if op in ("<<", ">>"):
        right = "2"
    return f"{_expr(rng, depth - 1)} {op} {right}"


def test_rewrites() -> None:
    src = """    for (int m = 0; m < 1; ++m) {
        const float *xr = x0 + m * 8;
        for (int n = 0; n < 2; ++n) {
            float acc = w[(n - 0) * 8 + 0] * 1;
            for (int k = 0; k < 8; ++k) acc += w[k] * xr[k];
            y[n] = acc < 0.0f ? -acc : acc * 2.0f + 1.0f;
            memcpy(&s, &b, sizeof(b));
        }
    }
"""
    out = normalize(src)
    assert "for (int m" not in out and "const float *xr = x0;" in out
    assert "float acc = w[n * 8];" in out
    assert "for (int k = 0; k < 8; ++k) { acc += w[k] * xr[k]; }" in out
    assert "y[n] = (acc < 0.0f) ? -acc : ((acc * 2.0f) + 1.0f);" in out
    assert "(void)memcpy(&s, &b, sizeof(b));" in out
    assert normalize(out) == out  # settled
    # preprocessor lines, strings and inline assembly are left alone
    asm = '#if X\n    __asm__ volatile("add %0, %1" : "=r"(a) : "r"(b + c * 2));\n#endif\n'
    assert normalize(asm) == asm
    # an indented preprocessor line after code (the DSP kernels' #ifdef inside a loop body)
    dsp = "    {\n        a = b + 0;\n        #ifdef EDGEC_S8_DSP\n        a = c;\n        #endif\n    }\n"
    out = normalize(dsp)
    assert "#ifdef EDGEC_S8_DSP\n" in out and "a = b;" in out and "a = c;" in out


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_random_expressions_keep_their_value(tmp_path: Path) -> None:
    rng = random.Random(14)
    exprs = [_expr(rng, 4) for _ in range(120)]
    lines = ["#include <stdio.h>", "static const int x[16] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5,"
             " 8, 9, 7, 9, 3};"]
    for i, e in enumerate(exprs):
        body = f"    return {e};\n"
        new = normalize(body)
        lines.append(f"static int f{i}(int a, int b, int c)\n{{\n{body}}}")
        lines.append(f"static int g{i}(int a, int b, int c)\n{{\n{new}}}")
    lines.append("int main(void)\n{\n    int a, b, c, bad = 0;")
    lines.append("    for (a = -3; a <= 3; ++a) for (b = 0; b < 16; ++b)")
    lines.append("    for (c = -2; c <= 2; ++c) {")
    for i in range(len(exprs)):
        lines.append(f"        if (f{i}(a, b, c) != g{i}(a, b, c)) {{ printf(\"%d\\n\", {i}); "
                     "bad = 1; }")
    lines += ["    }", "    return bad;", "}", ""]
    (tmp_path / "e.c").write_text("\n".join(lines))
    cc = subprocess.run(["gcc", "-O0", "-w", "-fwrapv", "e.c", "-o", "e"], cwd=tmp_path,
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr[-2000:]
    run = subprocess.run(["./e"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    bad = [exprs[int(i)] for i in run.stdout.split()]
    assert run.returncode == 0 and not bad, bad[:5]
    assert sum("(" in normalize(f"    return {e};\n") for e in exprs) > 60  # it did rewrite
