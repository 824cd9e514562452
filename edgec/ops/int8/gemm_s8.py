"""The int8 GEMM of QFullyConnected and QConv2D: the compile-time weight layout ("pair table")
and its two C kernels, generic C and the DSP-extension kernel (SMLAD/SXTB16) that Cortex-M4,
M7 and M33 builds pick at compile time (``__ARM_FEATURE_DSP``; ``-DEDGEC_NO_DSP`` forces the
generic C, which the tests use to compare both on the same board).

Pair table: weight rows go in pairs (r, r + 1) and k in pairs (k, k + 1); each 32-bit word holds

    [ w[r][k] ^ 0x80, w[r + 1][k], w[r][k + 1] ^ 0x80, w[r + 1][k + 1] ]

Read as two signed halfwords, a word is ``256 * w[r + 1][k] + (w[r][k] + 128)`` and the same for
``k + 1``, so one SMLAD against an input pair ``(x[k], x[k + 1])`` (int16 halves) accumulates
``A += 256 * D1 + D0 + 128 * (x[k] + x[k + 1])`` where D0, D1 are the two rows' partial dot
products; one ``SXTB16 ..., ROR #8`` of the same word gives row r + 1's two weights and a second
SMLAD accumulates D1 alone. Row r is recovered as ``A - 256 * D1 - 128 * sum(x)`` in modulo-2^32
arithmetic, exact because the true int32 accumulator fits. That is one unpack per four weights
instead of two. Pairs are grouped by two (a "quad" of four rows, whose two words sit next to each
other for one LDRD); a lone last pair follows the quads; an odd row count gets a zero row and k
is padded to a multiple of 4 with zero weights. The generic C reads the same table.

The DSP kernels of QConv2D read their inputs as int16: each receptive field (two output pixels
at a time, interleaved by k pair so one LDRD loads both pixels' pair) is widened into the node's
scratch buffer in the planned arena, with its sum for the correction above
(:func:`edgec.ops.int8.conv_dsp.im2col`). QFullyConnected
widens its input row the same way, not interleaved (``fc_dsp.py``). The input zero point is
folded into the bias at compile time (the caller's ``b - zp_x * sum(w)``), so both kernels
multiply raw codes.
"""

from __future__ import annotations

import numpy as np

from edgec.ops.base import EmitContext


def padded_dims(m: int, k: int, kmult: int = 4) -> tuple[int, int]:
    """(rows rounded up to even, k rounded up to a multiple of ``kmult``: 4 for the conv kernel,
    whose loop takes two k pairs at a time; 2 for the fully connected one)."""
    return m + (m & 1), -(-k // kmult) * kmult


def pair_table(w: np.ndarray, kmult: int = 4) -> np.ndarray:
    """The pair table (int8, flat) of weights ``w`` [M, K]: see the module docstring."""
    m, k = (int(d) for d in w.shape)
    mp, kp = padded_dims(m, k, kmult)
    full = np.zeros((mp, kp), np.int64)
    full[:m, :k] = w
    lo = ((full[0::2] + 128) & 0xFF)  # w + 128 as an unsigned byte
    lo = np.where(lo > 127, lo - 256, lo)  # stored as the int8 of the same bits
    hi = full[1::2]
    npairs = mp // 2
    # [pair][k pair][4 bytes]
    words = np.stack([lo[:, 0::2], hi[:, 0::2], lo[:, 1::2], hi[:, 1::2]], axis=-1)
    nquad = npairs // 2
    parts = []
    if nquad:
        q = words[: 2 * nquad].reshape(nquad, 2, kp // 2, 4).transpose(0, 2, 1, 3)
        parts.append(q.reshape(-1))
    if npairs % 2:
        parts.append(words[-1].reshape(-1))
    return np.concatenate(parts).astype(np.int8)


def decode_pair_table(table: np.ndarray, m: int, k: int, kmult: int = 4) -> np.ndarray:
    """The weights [M, K] a pair table holds (the layout's inverse, for tests)."""
    mp, kp = padded_dims(m, k, kmult)
    t = np.asarray(table, np.int64).reshape(-1)
    out = np.zeros((mp, kp), np.int64)
    npairs, nquad = mp // 2, mp // 4
    for p in range(npairs):
        if p < 2 * nquad:
            q, s = divmod(p, 2)
            blk = t[q * 4 * kp : (q + 1) * 4 * kp].reshape(kp // 2, 2, 4)[:, s]
        else:
            blk = t[nquad * 4 * kp :].reshape(kp // 2, 4)
        lo = (blk[:, [0, 2]] & 0xFF) - 128
        out[2 * p, 0::2], out[2 * p, 1::2] = lo[:, 0], lo[:, 1]
        out[2 * p + 1, 0::2], out[2 * p + 1, 1::2] = blk[:, 1], blk[:, 3]
    return out[:m, :k]


DSP_C = r"""/* The DSP kernels' assembly loops hold 13-14 registers, more than an unoptimized
 * build (-O0, frame pointer in r7) can give them: such builds take the generic C. */
#if defined(__GNUC__) && defined(__ARM_FEATURE_DSP) && (__ARM_FEATURE_DSP == 1) && \
    defined(__OPTIMIZE__) && !defined(EDGEC_NO_DSP)
#define EDGEC_S8_DSP 1
#include <arm_acle.h>
/* word and halfword views of int8 tables and of the arena (which is a float array) */
typedef uint32_t edgec_u32a __attribute__((may_alias));
typedef int16_t edgec_q15a __attribute__((may_alias));

/* SXTB16 rd, rm, ROR #8: bytes 1 and 3, sign-extended to two halfwords. */
static inline int32_t edgec_sxtb16_hi(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* Four rows (one quad of the pair table) against two interleaved int16 columns: acc[c * 4 + r]
 * = bias[r] + row r . column c; kp a multiple of 4 (> 0); sx0, sx1 the columns' sums; bias
 * holds four entries (a padded row's is 0). One assembly block (14 registers: eight
 * accumulators, both columns' k pair in one LDRD, one weight word at a time; two k pairs per
 * iteration, 26 instructions per 32 MACs) that first sets the accumulators: d at the odd rows'
 * bias, a at the even rows' bias less 128 * sum + 256 * the odd row's bias, so that the even
 * row is a - 256 * d after the loop. */
static inline void edgec_quad2_s8(const int8_t *w, const edgec_q15a *x, int kp, int32_t sx0,
                                  int32_t sx1, const int32_t *bias, int32_t *acc)
{
    const int8_t *wp = w;
    const edgec_q15a *xp = x;
    const edgec_q15a *const end = x + 2 * kp;
    int32_t a00, d00, a01, d01, a10, d10, a11, d11;
    int32_t x0 = (int32_t)((uint32_t)sx0 << 7), x1 = (int32_t)((uint32_t)sx1 << 7);
    int32_t wv = (int32_t)(intptr_t)bias;
    {
        __asm__ volatile(
        "ldrd %[a00], %[d00], [%[w]]\n\t"
        "ldrd %[a10], %[d10], [%[w], #8]\n\t"
        "add %[a00], %[a00], %[d00], lsl #8\n\t"
        "add %[a10], %[a10], %[d10], lsl #8\n\t"
        "sub %[a01], %[a00], %[x1]\n\t"
        "sub %[a11], %[a10], %[x1]\n\t"
        "sub %[a00], %[a00], %[x0]\n\t"
        "sub %[a10], %[a10], %[x0]\n\t"
        "mov %[d01], %[d00]\n\t"
        "mov %[d11], %[d10]\n\t"
        "1:\n\t"
        "ldrd %[x0], %[x1], [%[xp]], #8\n\t"
        "ldr %[w], [%[wp]], #4\n\t"
        "smlad %[a00], %[w], %[x0], %[a00]\n\t"
        "smlad %[a01], %[w], %[x1], %[a01]\n\t"
        "sxtb16 %[w], %[w], ror #8\n\t"
        "smlad %[d00], %[w], %[x0], %[d00]\n\t"
        "smlad %[d01], %[w], %[x1], %[d01]\n\t"
        "ldr %[w], [%[wp]], #4\n\t"
        "smlad %[a10], %[w], %[x0], %[a10]\n\t"
        "smlad %[a11], %[w], %[x1], %[a11]\n\t"
        "sxtb16 %[w], %[w], ror #8\n\t"
        "smlad %[d10], %[w], %[x0], %[d10]\n\t"
        "smlad %[d11], %[w], %[x1], %[d11]\n\t"
        "ldrd %[x0], %[x1], [%[xp]], #8\n\t"
        "ldr %[w], [%[wp]], #4\n\t"
        "smlad %[a00], %[w], %[x0], %[a00]\n\t"
        "smlad %[a01], %[w], %[x1], %[a01]\n\t"
        "sxtb16 %[w], %[w], ror #8\n\t"
        "smlad %[d00], %[w], %[x0], %[d00]\n\t"
        "smlad %[d01], %[w], %[x1], %[d01]\n\t"
        "ldr %[w], [%[wp]], #4\n\t"
        "smlad %[a10], %[w], %[x0], %[a10]\n\t"
        "smlad %[a11], %[w], %[x1], %[a11]\n\t"
        "sxtb16 %[w], %[w], ror #8\n\t"
        "smlad %[d10], %[w], %[x0], %[d10]\n\t"
        "smlad %[d11], %[w], %[x1], %[d11]\n\t"
        "cmp %[xp], %[end]\n\t"
        "bne 1b\n\t"
            : [a00] "=&r"(a00), [a01] "=&r"(a01), [d00] "=&r"(d00), [d01] "=&r"(d01),
              [a10] "=&r"(a10), [a11] "=&r"(a11), [d10] "=&r"(d10), [d11] "=&r"(d11),
              [xp] "+&r"(xp), [wp] "+&r"(wp), [x0] "+&r"(x0), [x1] "+&r"(x1), [w] "+&r"(wv)
            : [end] "r"(end)
            : "cc", "memory");
    }
    acc[0] = (int32_t)((uint32_t)a00 - ((uint32_t)d00 << 8));
    acc[1] = d00;
    acc[2] = (int32_t)((uint32_t)a10 - ((uint32_t)d10 << 8));
    acc[3] = d10;
    acc[4] = (int32_t)((uint32_t)a01 - ((uint32_t)d01 << 8));
    acc[5] = d01;
    acc[6] = (int32_t)((uint32_t)a11 - ((uint32_t)d11 << 8));
    acc[7] = d11;
}

/* Two rows (the lone pair of the pair table) against two interleaved int16 columns:
 * acc[c * 2 + r] += row r . column c. */
static inline void edgec_pair2_s8(const int8_t *w, const edgec_q15a *x, int kp, int32_t sx0,
                                  int32_t sx1, int32_t *acc)
{
    const edgec_u32a *wp = (const edgec_u32a *)(const void *)w;
    const edgec_u32a *xp = (const edgec_u32a *)(const void *)x;
    int32_t a0 = 0, d0 = 0, a1 = 0, d1 = 0;
    int j;
    for (j = 0; j < kp / 2; ++j) {
        const int32_t x0 = (int32_t)xp[0], x1 = (int32_t)xp[1];
        int32_t w0 = (int32_t)*wp++;
        xp += 2;
        a0 = __smlad(w0, x0, a0);
        a1 = __smlad(w0, x1, a1);
        w0 = edgec_sxtb16_hi(w0);
        d0 = __smlad(w0, x0, d0);
        d1 = __smlad(w0, x1, d1);
    }
    acc[0] += (int32_t)((uint32_t)a0 - ((uint32_t)d0 << 8) - ((uint32_t)sx0 << 7));
    acc[1] += d0;
    acc[2] += (int32_t)((uint32_t)a1 - ((uint32_t)d1 << 8) - ((uint32_t)sx1 << 7));
    acc[3] += d1;
}
/* Four int32 values (requantized, zero point added) to four int8 codes in one word, the
 * first at the lowest address: saturated (SSAT), packed (BFI), clamped to [lo, hi] byte-wise
 * (SSUB8 + SEL per bound); lo4, hi4: the bounds repeated in the four bytes. */
static inline uint32_t edgec_pack4_s8(int32_t v0, int32_t v1, int32_t v2, int32_t v3,
                                      uint32_t lo4, uint32_t hi4)
{
    uint32_t codes = (uint32_t)__ssat(v0, 8), t;
    __asm__("bfi %[v], %[c1], #8, #8\n\t"
            "bfi %[v], %[c2], #16, #8\n\t"
            "bfi %[v], %[c3], #24, #8\n\t"
            "ssub8 %[t], %[v], %[lo]\n\t"
            "sel %[v], %[v], %[lo]\n\t"
            "ssub8 %[t], %[hi], %[v]\n\t"
            "sel %[v], %[v], %[hi]"
            : [v] "+&r"(codes), [t] "=&r"(t)
            : [c1] "r"(__ssat(v1, 8)), [c2] "r"(__ssat(v2, 8)), [c3] "r"(__ssat(v3, 8)),
              [lo] "r"(lo4), [hi] "r"(hi4)
            : "cc");
    return codes;
}
#endif"""

GENERIC_C = r"""/* Generic C reading the pair table: acc[r] += row r . x over the first k codes, for
 * the rows (four for a quad, two for the lone pair) of block w. The even rows' bytes hold
 * w + 128 (read unsigned); their sums are corrected by 128 * sx, sx = sum(x) (edgec_sum_s8). */
static inline int32_t edgec_sum_s8(const int8_t *x, int n)
{
    int32_t s = 0;
    int i;
    for (i = 0; i < n; ++i) s += x[i];
    return s;
}

static inline void edgec_quad_s8(const int8_t *w, const int8_t *x, int k, int32_t sx,
                                 int32_t *acc)
{
    const uint8_t *u = (const uint8_t *)w;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int j;
    for (j = 0; j + 2 <= k; j += 2) {
        const int32_t x0 = x[j], x1 = x[j + 1];
        a0 += u[0] * x0;
        a1 += w[1] * x0;
        a2 += u[4] * x0;
        a3 += w[5] * x0;
        a0 += u[2] * x1;
        a1 += w[3] * x1;
        a2 += u[6] * x1;
        a3 += w[7] * x1;
        u += 8;
        w += 8;
    }
    if (j < k) {
        const int32_t x0 = x[j];
        a0 += u[0] * x0;
        a1 += w[1] * x0;
        a2 += u[4] * x0;
        a3 += w[5] * x0;
    }
    acc[0] += a0 - 128 * sx;
    acc[1] += a1;
    acc[2] += a2 - 128 * sx;
    acc[3] += a3;
}

static inline void edgec_pair_s8(const int8_t *w, const int8_t *x, int k, int32_t sx,
                                 int32_t *acc)
{
    const uint8_t *u = (const uint8_t *)w;
    int32_t a0 = 0, a1 = 0;
    int j;
    for (j = 0; j + 2 <= k; j += 2) {
        const int32_t x0 = x[j], x1 = x[j + 1];
        a0 += u[0] * x0;
        a1 += w[1] * x0;
        a0 += u[2] * x1;
        a1 += w[3] * x1;
        u += 4;
        w += 4;
    }
    if (j < k) {
        a0 += u[0] * x[j];
        a1 += w[1] * x[j];
    }
    acc[0] += a0 - 128 * sx;
    acc[1] += a1;
}"""


def use_kernels(ctx: EmitContext) -> None:
    """Emit the generic and the DSP kernels (once per file)."""
    ctx.helper("edgec_gemm_s8_generic", GENERIC_C)
    ctx.helper("edgec_gemm_s8_dsp", DSP_C)


class Rows:
    """The C that computes output rows (channels) ``0 <= m < M`` of one GEMM from a pair table,
    block by block, and requantizes each accumulator (``store(m_expr, col, acc_expr)`` gives
    the C statement writing one output)."""

    def __init__(self, m: int, k: int, wsym: str, bias: str, kmult: int = 4):
        self.m, self.k = m, k
        self.mp, self.kp = padded_dims(m, k, kmult)
        self.nquad, self.lone = self.mp // 4, (self.mp // 2) % 2
        self.wsym, self.bias = wsym, bias

    def _finish(self, rows: int, base: str, cols: int, store: object) -> str:
        """Requantize acc[c * rows + r] into output row base + r (rows past M skipped)."""
        assert callable(store)
        lines = [f"for (int r = 0; r < {rows}; ++r) {{",
                 f"    const int m = {base} + r;"]
        if self.mp != self.m:
            lines.append(f"    if (m >= {self.m}) break;")
        lines += [f"    {store('m', c, f'acc[{c * rows} + r]')}" for c in range(cols)]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _init(self, rows: int, base: str, cols: int) -> str:
        if self.mp != self.m:  # the padded row has no bias entry
            b = f"(m < {self.m} ? {self.bias}[m] : 0)"
        else:
            b = f"{self.bias}[m]"
        return (f"int32_t acc[{rows * cols}];\n"
                f"for (int r = 0; r < {rows}; ++r) {{\n"
                f"    const int m = {base} + r;\n"
                + "".join(f"    acc[{c * rows} + r] = {b};\n" for c in range(cols))
                + "}\n")

    def generic(self, x: str, store: object) -> str:
        """Generic C: rows against int8 vector ``x`` (k codes)."""
        code = f"const int32_t sx = edgec_sum_s8({x}, {self.k});\n"
        if self.nquad:
            code += (f"for (int q = 0; q < {self.nquad}; ++q) {{\n"
                     + _ind(self._init(4, "4 * q", 1)
                            + f"edgec_quad_s8({self.wsym} + q * {4 * self.kp}, {x}, {self.k}, "
                            f"sx, acc);\n" + self._finish(4, "4 * q", 1, store)) + "}\n")
        if self.lone:
            base = str(4 * self.nquad)
            code += ("{\n" + _ind(self._init(2, base, 1)
                                  + f"edgec_pair_s8({self.wsym} + {self.nquad * 4 * self.kp}, "
                                  f"{x}, {self.k}, sx, acc);\n"
                                  + self._finish(2, base, 1, store)) + "}\n")
        return code

    def dsp(self, xq: str, sums: list[str], store: object, store4: object = None) -> str:
        """DSP C: rows against two interleaved int16 columns ``xq`` (their sums ``sums``).
        ``store4(base_expr, col, [acc_expr] * 4)``: the C writing a quad's four outputs of
        one column at once (used when every quad is whole: M a multiple of 4)."""
        assert len(sums) == 2
        cols, n, s = 2, self.kp, ", ".join(sums)
        quad, pair = "edgec_quad2_s8", "edgec_pair2_s8"
        if callable(store4) and self.m % 4 == 0:
            finish = "".join(store4("4 * q", c, [f"acc[{c * 4 + r}]" for r in range(4)])
                             for c in range(cols))
        else:
            finish = self._finish(4, "4 * q", cols, store)
        code = ""
        if self.nquad:
            code += (f"for (int q = 0; q < {self.nquad}; ++q) {{\n"
                     + _ind(f"int32_t acc[{4 * cols}];\n"
                            + f"{quad}({self.wsym} + q * {4 * self.kp}, {xq}, {n}, {s}, "
                            f"{self.bias} + 4 * q, acc);\n" + finish) + "}\n")
        if self.lone:
            base = str(4 * self.nquad)
            code += ("{\n" + _ind(self._init(2, base, cols)
                                  + f"{pair}({self.wsym} + {self.nquad * 4 * self.kp}, {xq}, "
                                  f"{n}, {s}, acc);\n"
                                  + self._finish(2, base, cols, store)) + "}\n")
        return code


def _ind(code: str) -> str:
    return "".join(("    " + ln if ln else ln) + "\n" for ln in code.rstrip("\n").split("\n"))
