"""The DSP-extension paths of QDepthwiseConv2D (depth multiplier 1): four channels per 32-bit
input load, two taps per SMLAD.

Pre-laid kernel (``fast_tables``, ``fast_stream``, ``fast_channels``, ``fast_border_taps``),
taken where every requantization shift is a right shift and no doubled accumulator or rounding
sum can leave int32: the weights are stored at compile time as doubled int16 halfword pairs
ready for SMLAD, each quad's parameters next to them in one table; a tap pair is one assembly
block (14 instructions per 8 MACs), the requantization (SMMLAR with the rounding term and zero
point folded in, sign bit, ASR, SSAT) and the pack of four outputs another (``edgec_dw_rq4``).
Border pixels copy their window with the input zero point outside the input.

Previous kernel (``interior_channels``, ``border_channels``), otherwise: the int8 ``[KH, KW, C]``
table read four channels at a time, PKHBT/PKHTB + SXTB16 unpacking weights and inputs alike
(20 instructions per 8 MACs), an odd last tap through SMLABB/SMLATT, the generic requantize
+ clamp. Channels past the last multiple of 4 take the scalar code in both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HELPERS_C = r"""#ifdef EDGEC_S8_DSP
/* PKHBT: low halfword of a, low halfword of b on top; PKHTB: high halfword of a, high
 * halfword of b below. */
static inline int32_t edgec_pkhbt(uint32_t a, uint32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t edgec_pkhtb(uint32_t a, uint32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline uint32_t edgec_ld32(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
#endif"""

#: the requantization of the pre-laid kernel (``fast_channels``)
RQ_C = r"""#ifdef EDGEC_S8_DSP
/* Four channels' double-rounding requantize + zero point + clamp, accumulators held doubled
 * (a = 2 acc, no overflow: checked at compile time); *pp + skip: the quad's
 * (M, 2^(e-1) + zp << e, e) x4, each channel's three words one LDM into r10-r12 (fixed
 * registers: LDM's list ascends; clobbered), the pointer written back: *pp is left at the
 * next quad (the words follow the weights, see fast_stream). SMMLAR adds the rounding term r to
 * v = (2 acc M + 2^31) >> 32 = SRDHM(acc, M); less the sign bit of acc (that of v, except for
 * v = 0 < -acc, where (r - 1) >> e is zp either way) and shifted right by e this rounds half
 * away from zero (RoundingDivideByPOT) and adds the zero point; SSAT, BFI pack the four
 * codes. */
static inline uint32_t edgec_dw_rq4(int32_t a0, int32_t a1, int32_t a2, int32_t a3,
                                    const int32_t **pp, int skip)
{
    *pp += skip;
#define EDGEC_DW_RQ1(A)                                                                 \
    "ldmia %[q]!, {r10, r11, r12}\n\t"                                                    \
    "smmlar r11, %[" A "], r10, r11\n\t"                                                  \
    "sub r11, r11, %[" A "], lsr #31\n\t"                                                 \
    "asr r11, r11, r12\n\t"                                                               \
    "ssat %[" A "], #8, r11\n\t"
    __asm__(EDGEC_DW_RQ1("a0") EDGEC_DW_RQ1("a1") EDGEC_DW_RQ1("a2") EDGEC_DW_RQ1("a3")
            "bfi %[a0], %[a1], #8, #8\n\t"
            "bfi %[a0], %[a2], #16, #8\n\t"
            "bfi %[a0], %[a3], #24, #8"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [q] "+r"(*pp)
            :
            : "r10", "r11", "r12", "memory");
#undef EDGEC_DW_RQ1
    return (uint32_t)a0;
}

/* Bytewise max(codes, lo4) and min(codes, hi4) of four int8 codes (SSUB8 sets GE, SEL). */
static inline uint32_t edgec_max4_s8(uint32_t codes, uint32_t lo4)
{
    uint32_t t;
    __asm__("ssub8 %[t], %[v], %[b]\n\tsel %[v], %[v], %[b]"
            : [v] "+r"(codes), [t] "=&r"(t) : [b] "r"(lo4) : "cc");
    return codes;
}

static inline uint32_t edgec_min4_s8(uint32_t codes, uint32_t hi4)
{
    uint32_t t;
    __asm__("ssub8 %[t], %[b], %[v]\n\tsel %[v], %[v], %[b]"
            : [v] "+r"(codes), [t] "=&r"(t) : [b] "r"(hi4) : "cc");
    return codes;
}
#endif"""

INT32_MAX = 2**31 - 1


def fast_tables(w: np.ndarray, folded: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                zp_y: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The compile-time layout of the pre-laid kernel, or None where it does not apply
    (a left shift or e = 0, or an accumulator or rounding sum that could leave int32).

    ``w`` [taps, C] int8, ``folded`` [C] the bias with the input zero point folded in,
    ``mult``/``shift`` [C] (or one), ``zp_y``. Returns (words, params): per quad of channels
    ``(taps // 2) * 4 + (taps % 2) * 2`` int32 words of int16 halfword pairs, doubled weights:
    per tap pair (t, u) ``[2 w_t c | 2 w_u c << 16]`` for c = 0..3, for an odd last tap
    ``[c0 | c2 << 16], [c1 | c3 << 16]``; and per quad 16 words: the four channels'
    ``2 folded``, then per channel ``(M, 2^(e-1) + zp_y << e, e)`` (one LDM each). Weights stored as
    int16 take twice the int8 table's flash."""
    taps, c = w.shape
    c4 = c - c % 4
    mult = np.broadcast_to(np.asarray(mult).reshape(-1), (c,))
    shift = np.broadcast_to(np.asarray(shift).reshape(-1), (c,))
    params = []
    for ch in range(c4):
        e, m = -int(shift[ch]), int(mult[ch])
        if not 1 <= e <= 31 or m <= 0:
            return None
        acc = abs(int(folded[ch])) + 128 * int(np.abs(w[:, ch].astype(np.int64)).sum())
        rnd = (1 << (e - 1)) + (zp_y << e)
        v = (acc * m >> 31) + 1
        if 2 * acc > INT32_MAX or v + abs(rnd) + 1 > INT32_MAX:
            return None
        params.append((2 * int(folded[ch]), m, rnd, e))

    def pair(lo: int, hi: int) -> int:
        return ((2 * lo) & 0xFFFF) | (((2 * hi) & 0xFFFF) << 16)

    words: list[int] = []
    for q in range(0, c4, 4):
        wq = w[:, q:q + 4].astype(np.int64)
        for t in range(0, taps - 1, 2):
            words += [pair(int(wq[t, j]), int(wq[t + 1, j])) for j in range(4)]
        if taps % 2:
            last = wq[-1]
            words += [pair(int(last[0]), int(last[2])), pair(int(last[1]), int(last[3]))]
    quads = [[*(p[0] for p in qp), *(v for p in qp for v in p[1:])]
             for qp in (params[q:q + 4] for q in range(0, c4, 4))]
    return (np.array(words, np.uint32).view(np.int32),
            np.array(quads, np.int64).reshape(-1).astype(np.int32))


def fast_stream(words: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The one table ``fast_channels`` reads: per quad its four biases, its weight words, then
    its twelve requantization words (the two parts of :func:`fast_tables` interleaved), so
    ``edgec_dw_rq4``'s last LDM leaves its pointer at the next quad."""
    n = params.size // 16
    par = params.reshape(n, 16)
    return np.concatenate([par[:, :4], words.reshape(n, -1), par[:, 4:]], axis=1).reshape(-1)


def fast_channels(taps: list[tuple[str, int]], c: int, stab: str, head: str,
                  lo4: str | None, hi4: str | None) -> str:
    """Channels in fours with the pre-laid table ``stab`` (:func:`fast_stream`): ``taps``: (C
    pointer, byte offset) of each tap's four input channels; one assembly block per tap pair
    (2 LDR, PKHBT/PKHTB, 2 LDRD of pre-laid weights, 4 SXTB16, 4 SMLAD: 14 instructions per
    8 MACs) and for an odd last tap (8 per 4 MACs); ``head``: C before the loop (it declares
    ``xc`` where taps use it: it steps by four channels); the four outputs requantized by
    ``edgec_dw_rq4`` and packed, then clamped bytewise to ``lo4`` and ``hi4`` (C words of
    the bound in every byte; None: the bound is that of int8, SSAT's, no clamp)."""
    c4 = c - c % 4
    if c4 == 0:
        return ""
    nw = (len(taps) // 2) * 4 + (len(taps) % 2) * 2
    lines = [f"const int32_t *pq = {stab};",
             *([head.rstrip("\n")] if head else []),
             f"for (int ch = 0; ch < {c4}; ch += 4"
             + (", xc += 4) {" if any(p == "xc" for p, _ in taps) else ") {"),
             "    int32_t a0 = pq[0], a1 = pq[1], a2 = pq[2], a3 = pq[3];"]
    def at(tap: tuple[str, int]) -> tuple[str, int]:
        ptr, off = tap  # LDR's immediate offset reaches 4095
        return (ptr, off) if off <= 4092 else (f"{ptr} + {off}", 0)

    acc = '[a0] "+&r"(a0), [a1] "+&r"(a1), [a2] "+&r"(a2), [a3] "+&r"(a3)'
    tmp = '[xt] "=&r"(xt), [xu] "=&r"(xu), [xa] "=&r"(xa), [w0] "=&r"(w0), [w1] "=&r"(w1)'
    lines.append("    uint32_t xt, xu, xa, w0, w1;")
    for i in range(0, len(taps) - 1, 2):
        (pt, ot), (pu, ou) = at(taps[i]), at(taps[i + 1])
        lines += [
            '    __asm__("ldr %[xt], [%[pt], %[ot]]\\n\\t"',
            '            "ldr %[xu], [%[pu], %[ou]]\\n\\t"',
            '            "pkhbt %[xa], %[xt], %[xu], lsl #16\\n\\t"',
            '            "pkhtb %[xu], %[xu], %[xt], asr #16\\n\\t"',
            '            "ldrd %[w0], %[w1], [%[wq], %[k0]]\\n\\t"',
            '            "sxtb16 %[xt], %[xa]\\n\\t"',
            '            "smlad %[a0], %[w0], %[xt], %[a0]\\n\\t"',
            '            "sxtb16 %[xt], %[xa], ror #8\\n\\t"',
            '            "smlad %[a1], %[w1], %[xt], %[a1]\\n\\t"',
            '            "ldrd %[w0], %[w1], [%[wq], %[k1]]\\n\\t"',
            '            "sxtb16 %[xt], %[xu]\\n\\t"',
            '            "smlad %[a2], %[w0], %[xt], %[a2]\\n\\t"',
            '            "sxtb16 %[xt], %[xu], ror #8\\n\\t"',
            '            "smlad %[a3], %[w1], %[xt], %[a3]"',
            f"            : {acc}, {tmp}",
            f'            : [pt] "r"({pt}), [ot] "i"({ot}), [pu] "r"({pu}), [ou] "i"({ou}), '
            f'[wq] "r"(pq), [k0] "i"({16 + 8 * i}), [k1] "i"({24 + 8 * i})',
            '            : "memory");',
        ]
    if len(taps) % 2:
        pt, ot = at(taps[-1])
        lines += [
            '    __asm__("ldr %[xt], [%[pt], %[ot]]\\n\\t"',
            '            "ldrd %[w0], %[w1], [%[wq], %[k0]]\\n\\t"',
            '            "sxtb16 %[xa], %[xt]\\n\\t"',
            '            "sxtb16 %[xt], %[xt], ror #8\\n\\t"',
            '            "smlabb %[a0], %[w0], %[xa], %[a0]\\n\\t"',
            '            "smlabb %[a1], %[w1], %[xt], %[a1]\\n\\t"',
            '            "smlatt %[a2], %[w0], %[xa], %[a2]\\n\\t"',
            '            "smlatt %[a3], %[w1], %[xt], %[a3]"',
            f"            : {acc}, {tmp}",
            f'            : [pt] "r"({pt}), [ot] "i"({ot}), [wq] "r"(pq), '
            f'[k0] "i"({16 + 4 * (nw - 2)})',
            '            : "memory");',
            "    (void)xu;",
        ]
    lines += ["    {",
              f"        uint32_t codes = edgec_dw_rq4(a0, a1, a2, a3, &pq, {4 + nw});",
              *([f"        codes = edgec_max4_s8(codes, {lo4});"] if lo4 else []),
              *([f"        codes = edgec_min4_s8(codes, {hi4});"] if hi4 else []),
              "        memcpy(yp + ch, &codes, 4);",
              "    }", "}"]
    return "\n".join(lines) + "\n"


#: a border pixel's window copy (taps x channels bytes) on the stack at most this large
WINDOW_BYTES = 2048


def window_copy(win: Any, c: int) -> bool:
    """Whether border pixels copy their window (``fast_border_taps``); then the kernel starts
    with ``zero_row``."""
    return win.kh * win.kw * (c - c % 4) <= WINDOW_BYTES


def zero_row(c: int, zp_x: int | str) -> str:
    """C filling ``zrow4``, the first ``c - c % 4`` channels of a pixel of the input zero
    point, once per call (the window copy's source for taps outside the input)."""
    zp = zp_x & 0xFF if isinstance(zp_x, int) else zp_x
    n = (c - c % 4) // 4
    return (f"uint32_t zrow4[{n}];\n"
            f"for (int i = 0; i < {n}; ++i) zrow4[i] = ((uint32_t){zp} & 0xFFu) * 0x01010101u;\n")


def fast_border_taps(win: Any, c: int,
                     zp_x: int | str) -> tuple[str, list[tuple[str, int]]]:
    """C declaring a border pixel's taps for ``fast_channels`` and the (pointer, offset) of
    each: below ``WINDOW_BYTES`` the first ``c - c % 4`` channels of every tap are copied into
    a window on the stack (from ``zrow4``, the input zero point, for taps outside the input:
    they add nothing, the folded bias already subtracted zp_x * w), so the taps sit at
    constant offsets as in the interior; else a pointer per tap, to the input or to a row of
    the zero point."""
    taps = [(kh, kw) for kh in range(win.kh) for kw in range(win.kw)]
    c4 = c - c % 4
    zp = zp_x & 0xFF if isinstance(zp_x, int) else zp_x

    def inside(kh: int, kw: int) -> tuple[str, str]:
        r, q = f"ih + {kh * win.dh}", f"iw + {kw * win.dw}"
        return (f"{r} >= 0 && {r} < {win.h} && {q} >= 0 && {q} < {win.w}",
                f"xn + (({r}) * {win.w} + {q}) * {c}")

    if window_copy(win, c):
        lines = [f"uint32_t wwin[{len(taps) * c4 // 4}];", "int8_t *wb = (int8_t *)wwin;"]
        for t, (kh, kw) in enumerate(taps):
            cond, src = inside(kh, kw)
            lines.append(f"memcpy(wb + {t * c4}, ({cond}) ? {src} : (const int8_t *)zrow4, "
                         f"{c4});")
        lines.append("const int8_t *xc = wb;")
        return "\n".join(lines) + "\n", [("xc", t * c4) for t in range(len(taps))]
    lines = [f"int8_t zrow[{c}];", f"const int8_t *tp[{len(taps)}];",
             f"memset(zrow, {zp}, {c});"]
    for t, (kh, kw) in enumerate(taps):
        cond, src = inside(kh, kw)
        lines.append(f"tp[{t}] = ({cond}) ? {src} : zrow;")
    return "\n".join(lines) + "\n", [(f"tp[{t}] + ch", 0) for t in range(len(taps))]


def interior_channels(taps: list[tuple[int, int]], c: int, wsym: str, bias: str,
                      store: object, store4: object = None) -> str:
    """C for one interior output pixel: channels ``0 <= ch < c - c % 4`` in fours.
    ``taps``: (input offset, weight offset) of every tap relative to ``xp + ch`` and
    ``wsym + ch``; ``store(ch_expr, acc_expr)`` gives the statement writing one output."""
    return _channels([(f"xc + {xo}", wo) for xo, wo in taps], c, wsym, bias, store,
                     "    const int8_t *xc = xp + ch;", store4)


def border_channels(win: Any, c: int, wsym: str, bias: str, zp_x: int | str,
                    store: object, store4: object = None) -> str:
    """C for one output pixel whose window reaches into the padding: each tap reads the input
    or, outside it, a row of the input zero point (which adds nothing: the folded bias already
    subtracted zp_x * w for every tap). Declares the row and the tap pointers first."""
    taps = [(kh, kw) for kh in range(win.kh) for kw in range(win.kw)]
    lines = [f"int8_t zrow[{c}];",
             f"const int8_t *tp[{len(taps)}];",
             f"memset(zrow, {zp_x & 0xFF if isinstance(zp_x, int) else zp_x}, {c});"]
    for t, (kh, kw) in enumerate(taps):
        r, q = f"ih + {kh * win.dh}", f"iw + {kw * win.dw}"
        lines.append(f"tp[{t}] = ({r} >= 0 && {r} < {win.h} && {q} >= 0 && {q} < {win.w}) ? "
                     f"xn + (({r}) * {win.w} + {q}) * {c} : zrow;")
    body = _channels([(f"tp[{t}] + ch", t * c) for t in range(len(taps))], c, wsym, bias,
                     store, "", store4)
    return "\n".join(lines) + "\n" + body


def _channels(taps: list[tuple[str, int]], c: int, wsym: str, bias: str, store: object,
              head: str, store4: object = None) -> str:
    """Channels in fours; ``taps``: (C pointer to the tap's four input channels, weight
    offset from ``wsym + ch``); ``store4(ch_expr, [acc_expr] * 4)``, when given, writes the
    four outputs at once (else ``store`` one by one)."""
    assert callable(store)
    c4 = c - c % 4
    if c4 == 0:
        return ""
    lines = [f"for (int ch = 0; ch < {c4}; ch += 4) {{", *([head] if head else []),
             f"    const int8_t *wc = {wsym} + ch;",
             f"    int32_t a0 = {bias}[ch], a1 = {bias}[ch + 1], a2 = {bias}[ch + 2], "
             f"a3 = {bias}[ch + 3];"]
    for i in range(0, len(taps) - 1, 2):
        (xt, wt), (xu, wu) = taps[i], taps[i + 1]
        lines += [
            "    {",
            f"        const uint32_t xt = edgec_ld32({xt}), xu = edgec_ld32({xu});",
            f"        const uint32_t wt = edgec_ld32(wc + {wt}), wu = edgec_ld32(wc + {wu});",
            "        const int32_t xa = edgec_pkhbt(xt, xu), xb = edgec_pkhtb(xu, xt);",
            "        const int32_t wa = edgec_pkhbt(wt, wu), wb = edgec_pkhtb(wu, wt);",
            "        a0 = __smlad(__sxtb16(wa), __sxtb16(xa), a0);",
            "        a1 = __smlad(edgec_sxtb16_hi(wa), edgec_sxtb16_hi(xa), a1);",
            "        a2 = __smlad(__sxtb16(wb), __sxtb16(xb), a2);",
            "        a3 = __smlad(edgec_sxtb16_hi(wb), edgec_sxtb16_hi(xb), a3);",
            "    }",
        ]
    if len(taps) % 2:
        xt, wt = taps[-1]
        lines += [
            "    {",
            f"        const int32_t xv = (int32_t)edgec_ld32({xt});",
            f"        const int32_t wv = (int32_t)edgec_ld32(wc + {wt});",
            "        const int32_t xe = __sxtb16(xv), xo = edgec_sxtb16_hi(xv);",
            "        const int32_t we = __sxtb16(wv), wo = edgec_sxtb16_hi(wv);",
            "        a0 = __smlabb(we, xe, a0);",
            "        a1 = __smlabb(wo, xo, a1);",
            "        a2 = __smlatt(we, xe, a2);",
            "        a3 = __smlatt(wo, xo, a3);",
            "    }",
        ]
    if callable(store4):
        lines += ["    " + ln for ln in store4("ch", [f"a{j}" for j in range(4)]).splitlines()]
    else:
        lines += [f"    {store(f'ch + {j}', f'a{j}')}" for j in range(4)]
    lines.append("}")
    return "\n".join(lines) + "\n"
