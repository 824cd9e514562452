"""edgec's own single-precision math functions for generated kernels.

Where a C library's function is slow on a microcontroller (newlib's tanhf goes through expm1f and
a division and costs ~100 instructions on a Cortex-M4F), kernels call edgec's version instead,
so the host and every target evaluate the same function. ``apply`` renames the calls in a
kernel's code and returns the definitions it needs.
"""

from __future__ import annotations

import re

#: tanh's table: |x| < 16 in 64 intervals, [0, 0.0703125) and then eight per binade from 1/16 to
#: 16 (the interval is the float's exponent and top three mantissa bits); per interval its start c
#: and a degree-4 polynomial c4..c0 in t = |x| - c (t exact), fitted minimax in ulp, coefficients
#: rounded to float one by one from the highest (bench/tanh_table.py fits them and checks every
#: float). The first interval's polynomial has c0 = 0 and c1 = 1: relative accuracy near 0.
TANH_TABLE: tuple[str, ...] = (
    "0.0, 0.01752128, -0.33402815, 7.820989e-6, 1.0, 0.0",
    "0.0703125, 0.04871236, -0.3268045, -0.06985091, 0.9950724, 0.07019686",
    "0.078125, 0.053654112, -0.3252821, -0.07749245, 0.9939212, 0.077966444",
    "0.0859375, 0.058541093, -0.32360524, -0.08509651, 0.9926509, 0.08572657",
    "0.09375, 0.06336812, -0.32177567, -0.09265948, 0.9912622, 0.0934763",
    "0.1015625, 0.068131015, -0.31979525, -0.1001778, 0.9897556, 0.10121473",
    "0.109375, 0.0728246, -0.31766596, -0.10764796, 0.9881319, 0.10894093",
    "0.1171875, 0.07744462, -0.31539, -0.1150665, 0.98639184, 0.11665399",
    "0.125, 0.08412865, -0.31301227, -0.12242974, 0.98453635, 0.124353",
    "0.140625, 0.09296913, -0.30774972, -0.13697827, 0.9804824, 0.1397053",
    "0.15625, 0.10134625, -0.30193716, -0.15126722, 0.9759779, 0.15499073",
    "0.171875, 0.10932572, -0.29560092, -0.16527145, 0.9710312, 0.17020231",
    "0.1875, 0.11688096, -0.28876582, -0.17896701, 0.96565163, 0.18533319",
    "0.203125, 0.12398828, -0.28145838, -0.19233117, 0.9598492, 0.20037672",
    "0.21875, 0.13062678, -0.27370664, -0.2053424, 0.95363456, 0.21532634",
    "0.234375, 0.13677856, -0.26553994, -0.21798058, 0.94701916, 0.2301757",
    "0.25, 0.14486766, -0.25708386, -0.23022583, 0.94001484, 0.24491866",
    "0.28125, 0.15426598, -0.23894379, -0.2534756, 0.9248902, 0.2740616",
    "0.3125, 0.16137634, -0.21963869, -0.27497053, 0.9083668, 0.30270973",
    "0.34375, 0.16636986, -0.19944501, -0.29461455, 0.8905574, 0.33082113",
    "0.375, 0.16928954, -0.1786278, -0.31233683, 0.87157995, 0.3583574",
    "0.40625, 0.1702201, -0.1574468, -0.32809097, 0.85155624, 0.38528398",
    "0.4375, 0.16927004, -0.13615087, -0.3418545, 0.8306101, 0.41157004",
    "0.46875, 0.16659142, -0.114975125, -0.35362765, 0.80886596, 0.43718877",
    "0.5, 0.15986049, -0.09393686, -0.36343676, 0.78644776, 0.46211717",
    "0.5625, 0.14607638, -0.05391185, -0.37732098, 0.74007344, 0.50983",
    "0.625, 0.1289292, -0.017335003, -0.38402662, 0.69241923, 0.5545997",
    "0.6875, 0.109708786, 0.014925317, -0.38427854, 0.64433867, 0.59637356",
    "0.75, 0.08975985, 0.042355135, -0.378933, 0.5965859, 0.63514894",
    "0.8125, 0.07018808, 0.06477771, -0.36891153, 0.54980326, 0.6709671",
    "0.875, 0.05182929, 0.082292944, -0.35514307, 0.50451696, 0.7039056",
    "0.9375, 0.035252843, 0.095209375, -0.3385186, 0.46113908, 0.7340715",
    "1.0, 0.01449544, 0.105002165, -0.31991124, 0.41997528, 0.7615942",
    "1.125, -0.0055438215, 0.11189385, -0.27927458, 0.3450324, 0.8093011",
    "1.25, -0.017647067, 0.10882953, -0.23789369, 0.2804152, 0.84828365",
    "1.375, -0.02362171, 0.09979436, -0.19876666, 0.22590512, 0.8798267",
    "1.5, -0.025376275, 0.08784628, -0.1635673, 0.18070665, 0.90514827",
    "1.625, -0.024520947, 0.0750788, -0.13300008, 0.14373429, 0.92534626",
    "1.75, -0.022255776, 0.062779576, -0.1071335, 0.11381199, 0.94137555",
    "1.875, -0.019387284, 0.05163911, -0.08566375, 0.08979753, 0.95404524",
    "2.0, -0.014993508, 0.041483726, -0.068053976, 0.0706491, 0.9640276",
    "2.25, -0.01002773, 0.026600655, -0.042467106, 0.0434636, 0.9780261",
    "2.5, -0.0064420286, 0.0166831, -0.02620674, 0.026591318, 0.9866143",
    "2.75, -0.0040434836, 0.010325241, -0.016062994, 0.016213693, 0.99185973",
    "3.0, -0.0025034659, 0.0063395323, -0.009805013, 0.009865662, 0.9950548",
    "3.25, -0.0015373748, 0.003873661, -0.0059700967, 0.0059954813, 0.99699765",
    "3.5, -0.00093947886, 0.002360045, -0.0036295576, 0.0036407406, 0.9981779",
    "3.75, -0.00057241286, 0.0014353326, -0.0022045756, 0.0022098043, 0.99889445",
    "4.0, -0.00027433573, 0.0008245094, -0.0013286034, 0.0013402619, 0.9993293",
    "4.5, -0.00010113979, 0.0003037557, -0.00048916467, 0.0004932629, 0.99975324",
    "5.0, -3.723669e-5, 0.00011180448, -0.00018000764, 0.00018148945, 0.9999092",
    "5.5, -1.3702596e-5, 4.1138555e-5, -6.622842e-5, 6.677005e-5, 0.9999666",
    "6.0, -5.0414433e-6, 1.51351105e-5, -2.4365063e-5, 2.4563844e-5, 0.9999877",
    "6.5, -1.8547165e-6, 5.5680425e-6, -8.96354e-6, 9.036603e-6, 0.99999547",
    "7.0, -6.8232214e-7, 2.0483883e-6, -3.2975202e-6, 3.32439e-6, 0.99999833",
    "7.5, -2.510135e-7, 7.5356246e-7, -1.2130923e-6, 1.222976e-6, 0.9999994",
    "8.0, -5.8496013e-8, 2.3446361e-7, -4.2916315e-7, 4.477154e-7, 0.99999976",
    "9.0, -8.0081515e-9, 3.193453e-8, -5.8230576e-8, 6.063207e-8, 0.99999994",
    "10.0, 0.0, 0.0, 0.0, 0.0, 1.0",
    "11.0, 0.0, 0.0, 0.0, 0.0, 1.0",
    "12.0, 0.0, 0.0, 0.0, 0.0, 1.0",
    "13.0, 0.0, 0.0, 0.0, 0.0, 1.0",
    "14.0, 0.0, 0.0, 0.0, 0.0, 1.0",
    "15.0, 0.0, 0.0, 0.0, 0.0, 1.0",
)
#: the table's bytes in flash (64 intervals x 6 floats)
TANH_TABLE_BYTES = 4 * 6 * len(TANH_TABLE)


def _tanh_table_c() -> str:
    rows = ",\n".join("    {" + ", ".join(f"{v}f" for v in row.split(", ")) + "}"
                       for row in TANH_TABLE)
    return f"static const float edgec_tanh_tab[{len(TANH_TABLE)}][6] = {{\n{rows}\n}};"


#: tanh in float: the interval's polynomial by Horner, the sign of x put back; at most 1.42 ulp
#: from the correctly rounded tanh over every float (with or without fused multiply-adds),
#: NaN -> NaN, |x| >= 16 and +-inf -> +-1. On FPU Cortex-M (FMA) the interval's six floats are
#: one VLDM and the polynomial four VFMAs in inline assembly: the same operations in the same
#: order as the C path compiled with fused multiply-adds (-ffp-contract=fast, as the firmware
#: is), so both give the same bits; -DEDGEC_NO_ASM keeps the C.
TANHF = (
    "/* tanh(x) in float: a table of 64 degree-4 polynomials (1,536 bytes), max error about\n"
    " * 1.4 ulp, no libm call (edgec/backend/c_math.py) */\n"
    + _tanh_table_c()
    + """
#if defined(__ARM_ARCH_PROFILE) && (__ARM_ARCH_PROFILE == 'M') && defined(__ARM_FP) && \\
    ((__ARM_FP) & 4) && defined(__ARM_FEATURE_FMA) && defined(__GNUC__) && !defined(EDGEC_NO_ASM)
#define EDGEC_TANH_ASM 1
#endif
static inline float edgec_tanhf(float x)
{
    uint32_t b;
    uint32_t a;
    (void)memcpy(&b, &x, sizeof b);
    a = b & 0x7fffffffu;
#ifdef EDGEC_TANH_ASM
    if (__builtin_expect(a < 0x41800000u, 1)) {
        /* t = |x| - c in s14, the entry {c, c4, c3, c2, c1, c0} in s8-s13, the result in s13 */
        register float r __asm__("s13");
        __asm__("vmov s14, %[a]\\n\\t"
                "sub %[a], %[a], #0x3d800000\\n\\t"
                "usat %[a], #6, %[a], asr #20\\n\\t"
                "add %[a], %[a], %[a], lsl #1\\n\\t"
                "add %[a], %[tab], %[a], lsl #3\\n\\t"
                "vldmia %[a], {s8-s13}\\n\\t"
                "vsub.f32 s14, s14, s8\\n\\t"
                "vfma.f32 s10, s14, s9\\n\\t"
                "vfma.f32 s11, s14, s10\\n\\t"
                "vfma.f32 s12, s14, s11\\n\\t"
                "vfma.f32 s13, s14, s12\\n\\t"
                "cmp %[b], #0\\n\\t"
                "it lt\\n\\t"
                "vneglt.f32 s13, s13"
                : "=t"(r), [a] "+&r"(a)
                : [b] "r"(b), [tab] "r"(&edgec_tanh_tab[0][0])
                : "s8", "s9", "s10", "s11", "s12", "s14", "cc");
        return r;
    }
#else
    if (a < 0x41800000u) { /* |x| < 16 */
        const float *const c = edgec_tanh_tab[(a > 0x3d800000u) ? ((a - 0x3d800000u) >> 20) : 0u];
        const float t = fabsf(x) - c[0];
        float p = (c[1] * t) + c[2];
        p = (p * t) + c[3];
        p = (p * t) + c[4];
        p = (p * t) + c[5];
        return ((b >> 31) != 0u) ? -p : p;
    }
#endif
    return (a > 0x7f800000u) ? (x + x) : (((b >> 31) != 0u) ? -1.0f : 1.0f);
}""")

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
