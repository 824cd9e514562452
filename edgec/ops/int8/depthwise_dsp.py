"""The DSP-extension path of QDepthwiseConv2D (depth multiplier 1): output pixels whose window
lies inside the input, four channels at a time.

Channels are innermost (NHWC), so one 32-bit load reads four channels of a tap, from the input
and from the weights ([KH, KW, C], the generic kernel's table: no second copy in flash). Two taps
t, u are paired per SMLAD: PKHBT/PKHTB pack ``[x_t c0, x_t c1, x_u c0, x_u c1]`` and the same
for c2, c3 (inputs and weights alike), SXTB16 and SXTB16 ROR #8 split them into (tap t, tap u)
halfword pairs of one channel, and one SMLAD per channel adds both taps' products: 20
instructions per 8 MACs. An odd last tap goes through SMLABB/SMLATT. The accumulators start at
the bias with the input zero point folded in (the generic interior path's), and leave through
the same requantize + clamp. Channels past the last multiple of 4 take the scalar code.
"""

from __future__ import annotations

from typing import Any

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
