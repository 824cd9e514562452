"""edgec's own single-precision math functions for generated kernels.

Where a C library's function is slow on a microcontroller (newlib's tanhf goes through expm1f and
a division and costs ~100 instructions on a Cortex-M4F), kernels call edgec's version instead,
so the host and every target evaluate the same function. ``apply`` renames the calls in a
kernel's code and returns the definitions it needs.
"""

from __future__ import annotations

import re

#: tanh in float only: an odd Taylor polynomial for |x| < 0.55, else 1 - 2 / (e^{2|x|} + 1)
#: with e^y from a range reduction (y = k ln2 + r) and a degree-8 polynomial; at most ~1.6 ulp
#: from the correctly rounded tanh over all floats; NaN → NaN, ±inf → ±1.
TANHF = """/* tanh(x) in float: max error about 1.6 ulp, no libm call (edgec/backend/c_math.py) */
static float edgec_tanhf(float x)
{
    const float ax = fabsf(x);
    float t;
    if (ax < 0.55f) {
        const float z = x * x;
        float p = 5.90027441e-04f;
        p = p * z - 1.45583439e-03f;
        p = p * z + 3.59212804e-03f;
        p = p * z - 8.86323553e-03f;
        p = p * z + 2.18694885e-02f;
        p = p * z - 5.39682540e-02f;
        p = p * z + 1.33333333e-01f;
        p = p * z - 3.33333333e-01f;
        t = x + x * (z * p); /* odd: the sign comes with x (= sign * (ax + ax * z * p)) */
    } else {
        if (ax < 9.1f) {
            const float y = 2.0f * ax;
            const float kf = y * 1.44269504f + 0.5f;
            const int k = (int)kf;
            const float r = (y - (float)k * 0.693145751953125f) - (float)k * 1.42860677e-06f;
            const uint32_t bits = ((uint32_t)k + 127u) << 23u;
            float e = 2.48015873e-05f;
            float scale;
            e = e * r + 1.98412698e-04f;
            e = e * r + 1.38888889e-03f;
            e = e * r + 8.33333333e-03f;
            e = e * r + 4.16666667e-02f;
            e = e * r + 1.66666667e-01f;
            e = e * r + 0.5f;
            e = e * r + 1.0f;
            e = e * r + 1.0f;
            (void)memcpy(&scale, &bits, sizeof scale);
            t = 1.0f - 2.0f / (e * scale + 1.0f);
        } else {
            t = ax == ax ? 1.0f : ax;
        }
        t = x < 0.0f ? -t : t;
    }
    return t;
}"""

#: libm name → (edgec name, definition)
OVERRIDES: dict[str, tuple[str, str]] = {"tanhf": ("edgec_tanhf", TANHF)}


def apply(code: str) -> tuple[str, list[tuple[str, str]]]:
    """``code`` with overridden calls renamed, and the (name, definition) pairs it now needs."""
    needed: list[tuple[str, str]] = []
    for libm, (ours, definition) in OVERRIDES.items():
        pattern = re.compile(rf"(?<![A-Za-z0-9_]){libm}\s*\(")
        if pattern.search(code):
            code = pattern.sub(f"{ours}(", code)
            needed.append((ours, definition))
    return code, needed
