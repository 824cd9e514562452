"""Fit the tables of edgec's float tanh and sigmoid (edgec/backend/c_math.py) and check them.

``python -m bench.tanh_table [--print] [--exhaustive]``

Each table splits |x| into 64 intervals: [0, 9/8 * lo) and then eight per binade from lo to
256 * lo (lo = 1/16 for tanh, 1/8 for the sigmoid, whose intervals are twice tanh's as
sigmoid(x) = (1 + tanh(x / 2)) / 2), so the index is the float's exponent and top three mantissa
bits. Per interval: its start c and a degree-4 polynomial c4..c0 in t = |x| - c (t is exact),
minimax in units of the result's ulp (Lawson's iteratively reweighted least squares on 6,000
points), its coefficients rounded to float one at a time from the highest, the lower ones refitted
after each rounding. tanh's first interval keeps c0 = 0 and c1 = 1 (relative accuracy near 0);
intervals where the function rounds to 1 are the constant 1.

The tables the C indexes are sign-split: row 2k is interval k's fitted row, row 2k + 1 the same
interval for x < 0, derived from it exactly (not refitted), a polynomial in u = x + c = -t so that
the C evaluates at x - row[0] with x itself: tanh's {-c, -c4, c3, -c2, c1, -c0} gives -p(t) bit
for bit (Horner's every step is the negation of the positive row's, and rounding to nearest is
symmetric), sigmoid's {-c, -c4, c3, -c2, c1, 1 - c0} is 1 - P (1 - c0 exact as c0 is in
[1/2, 1]), its result one rounding of 1 - c0 - P's tail instead of 1 - fl(P). The first row's
start stays +0 (x = -0 then gives t = -0 and tanh(-0) = -0).

``--print`` writes the 128 rows of each table as c_math.py holds them; ``--exhaustive`` compiles
the C path of c_math's functions with and without fused multiply-adds and compares every float
of |x| < 2^8, both signs, with double precision (tanh: in ulp, and odd bit for bit; sigmoid:
absolute error, the relative error for x < 0, and how far sigmoid(x) + sigmoid(-x) is from 1).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEGREE = 4
PER_BINADE = 8
BINADES = 8


def _ulp32(v: np.ndarray) -> np.ndarray:
    a = np.abs(v).astype(np.float32)
    return (np.nextafter(a, np.float32(np.inf)) - a).astype(np.float64)


def _minimax(t: np.ndarray, f: np.ndarray, w: np.ndarray, fixed: dict[int, float]) -> list[float]:
    free = [k for k in range(DEGREE + 1) if k not in fixed]
    rest = f - sum(v * t**k for k, v in fixed.items())
    a = np.stack([t**k for k in free], 1)
    u = np.full(t.size, 1.0 / t.size)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(60):
        sw = np.sqrt(u) * w
        sol = np.linalg.lstsq(a * sw[:, None], rest * sw, rcond=None)[0]
        err = np.abs(a @ sol - rest) * w
        if best is None or err.max() < best[0]:
            best = (float(err.max()), sol)
        u = u * err + 1e-300
        if not np.isfinite(u.sum()) or u.sum() == 0:
            break
        u /= u.sum()
    assert best is not None
    coef = dict(fixed)
    coef.update(zip(free, (float(v) for v in best[1]), strict=True))
    return [coef[k] for k in range(DEGREE + 1)]


def fit(kind: str) -> list[list[float]]:
    """Rows (c, c4, c3, c2, c1, c0), float32 values, for ``kind`` 'tanh' or 'sigmoid'."""
    lo = 1 / 16 if kind == "tanh" else 1 / 8

    def func(x: np.ndarray) -> np.ndarray:
        return np.tanh(x) if kind == "tanh" else 0.5 + 0.5 * np.tanh(0.5 * x)

    bounds = [(lo * 2.0**e * (1 + j / PER_BINADE), lo * 2.0**e * (1 + (j + 1) / PER_BINADE))
              for e in range(BINADES) for j in range(PER_BINADE)]
    bounds[0] = (0.0, bounds[0][1])
    rows = []
    for i, (a, b) in enumerate(bounds):
        if np.float32(func(np.float64(a))) == 1.0:
            rows.append([a, 0.0, 0.0, 0.0, 0.0, 1.0])
            continue
        n = 3000
        x = np.concatenate([(a + b) / 2 + (b - a) / 2 * np.cos(np.linspace(np.pi, 0, n)),
                            np.linspace(a, b, n)])
        first = i == 0 and kind == "tanh"
        if first:
            x = x[x > 0]
        t, f = x - a, func(x)
        fixed = {0: 0.0, 1: 1.0} if first else {}
        for k in range(DEGREE, -1, -1):
            if k not in fixed:
                fixed[k] = float(np.float32(_minimax(t, f, 1.0 / _ulp32(f), fixed)[k]))
        rows.append([a] + [fixed[k] for k in range(DEGREE, -1, -1)])
    return rows


def signed_rows(kind: str, rows: list[list[float]]) -> list[list[float]]:
    """The 128 rows the C indexes from the 64 fitted ``rows`` (c, c4, c3, c2, c1, c0) of ``kind``:
    row 2k is ``rows[k]``, row 2k + 1 its polynomial for x < 0 in u = x + c (exact float
    operations only: negations and, for the sigmoid, 1 - c0 with c0 in [1/2, 1])."""
    out = []
    for c, c4, c3, c2, c1, c0 in rows:
        if kind == "tanh":
            d0 = -c0
        else:
            assert 0.5 <= c0 <= 1.0
            d0 = float(np.float32(1.0) - np.float32(c0))
            assert d0 == 1.0 - c0  # exact (Sterbenz)
        out += [[c, c4, c3, c2, c1, c0], [-c if c != 0 else 0.0, -c4, c3, -c2, c1, d0]]
    return out


def _c_number(v: float) -> str:
    x = np.float32(v)
    if x == 0:
        return "-0.0" if np.signbit(x) else "0.0"
    if abs(x) >= 1e-4:
        s = np.format_float_positional(x, unique=True, trim="0")
    else:
        s = np.format_float_scientific(x, unique=True, trim="0", exp_digits=1)
    assert np.float32(float(s)) == x
    return s


def table_lines(rows: list[list[float]]) -> list[str]:
    return ['    "' + ", ".join(_c_number(v) for v in r) + '",' for r in rows]


_CHECK = r"""
/* the relative error of sigmoid(x) for x < 0 is reported per range of -x: [0, 1), [1, 4),
   [4, 8), [8, 16), [16, 32) (where the result is not 0; it is 0 from -18 down) */
static int band(float a)
{
    return a < 1.0f ? 0 : (a < 4.0f ? 1 : (a < 8.0f ? 2 : (a < 16.0f ? 3 : 4)));
}

int main(void) {
    double worst_t = 0.0, worst_s = 0.0, worst_sn = 0.0, worst_sum = 0.0, rel[5] = {0.0};
    uint32_t b;
    int i;
    for (b = 0u; b < 0x43800000u; ++b) {
        float x, y, s, sn, tf; double t, ulp, e;
        (void)memcpy(&x, &b, 4);
        y = edgec_tanhf(x); t = tanh((double)x); tf = (float)t;
        ulp = (double)nextafterf(fabsf(tf), INFINITY) - fabsf(tf);
        if (fabs(y - t) / ulp > worst_t) worst_t = fabs(y - t) / ulp;
        if (memcmp(&(float){edgec_tanhf(-x)}, &(float){-y}, 4) != 0) {
            printf("tanh not odd at %g\n", x); return 1;
        }
        s = edgec_sigmoidf(x); t = 1.0 / (1.0 + exp(-(double)x));
        if (fabs(s - t) > worst_s) worst_s = fabs(s - t);
        sn = edgec_sigmoidf(-x); t = 1.0 / (1.0 + exp((double)x));
        if (!(sn >= 0.0f)) { printf("sigmoid < 0 at %g\n", -x); return 1; }
        e = fabs(sn - t);
        if (e > worst_sn) worst_sn = e;
        if (sn != 0.0f && e / t > rel[band(x)]) rel[band(x)] = e / t;
        e = fabs((double)s + (double)sn - 1.0);
        if (e > worst_sum) worst_sum = e;
    }
    printf("tanh max %.4f ulp (odd bit for bit); sigmoid max %.3g absolute (x >= 0), %.3g (x < 0), "
           "|sigmoid(x) + sigmoid(-x) - 1| <= %.3g; relative for x < 0 by -x in [0,1) [1,4) [4,8) "
           "[8,16) [16,32):", worst_t, worst_s, worst_sn, worst_sum);
    for (i = 0; i < 5; ++i) printf(" %.3g", rel[i]);
    printf("\n");
    return 0;
}
"""


def exhaustive() -> list[str]:
    from edgec.backend import c_math

    out = []
    src = ("#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <string.h>\n"
           + c_math.F32_BITS + "\n" + c_math.TANHF + "\n" + c_math.SIGMOIDF + _CHECK)
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "check.c"
        c.write_text(src)
        for label, flags in (("no FMA", ["-ffp-contract=off"]),
                             ("FMA", ["-mfma", "-ffp-contract=fast"])):
            exe = Path(tmp) / "check"
            subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                            *flags, str(c), "-lm", "-o", str(exe)], check=True)
            res = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
            out.append(f"{label}: {res.stdout.strip()}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tanh_table", description=__doc__)
    ap.add_argument("--print", action="store_true",
                    help="print both tables (128 rows each) as c_math holds them")
    ap.add_argument("--exhaustive", action="store_true",
                    help="check c_math's C over every float with |x| < 256, both signs")
    ns = ap.parse_args(argv)
    if ns.print:
        for kind in ("tanh", "sigmoid"):
            print(f"# {kind}")
            print("\n".join(table_lines(signed_rows(kind, fit(kind)))))
    if ns.exhaustive:
        print("\n".join(exhaustive()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
