"""The quad loop of QConv2D's DSP path as one naked assembly function, ``edgec_convq``
(``edgec_convq_clamp`` with an activation clamp): every quad (four output channels) of one
group against the two interleaved int16 columns of a pixel pair, walk, requantization, pack
and store, without the C around it (which spilled around the walk's fourteen registers: the
function as C cost about 200 instructions per quad outside the walk).

Taken where the layer's requantization has the SMMLAR form for every channel
(``conv._smmlar_requant``) and the group's output count is a multiple of 4. The kernel reads
one compile-time table (:func:`quad_stream`, in DSP builds instead of the pair table, biases
and multipliers, which the generic C keeps reading), one pointer through it: per quad the
accumulators' start values ``b0 + 256 b1, b1, b2 + 256 b3, b3`` (the biases with the input
zero point folded in; row r of the pair table is recovered as ``a - 256 d``, see
:mod:`edgec.ops.int8.gemm_s8`), the quad's weights (pair table), then per channel
``M, r = 2^(e-1) + zp_y 2^e, e`` (:func:`quad_params`); one LDM each. Per output: LSL, SMMLAR,
SUB of the sign bit, ASR, SSAT (TFLite's double rounding with the zero point folded in, as
``edgec_rq_smmlar``); BFI packs a pixel's four codes, SSUB8 + SEL clamp them (only where the
bounds are not those of int8), one word store per pixel.

The walk: per k pair one LDRD of both columns' int16 pair, one LDRD of the quad's two weight
words, eight SMLAD, two SXTB16 (24 instructions per 32 MACs; ``edgec_quad2_s8``, the C path's,
loads each weight word alone: 26). Every register is in use (eight accumulators, the two input
pairs, the two weight words, the two pointers), so the control block lives on the stack: its
address is pushed with the saved registers and read back at ``[sp]``. Where kp <= 2
``FLAT_KPAIRS`` (K <= 64: every layer of the DS-CNN) the walk has no loop (``edgec_convqf``,
``edgec_convqf_clamp``): ``FLAT_KPAIRS`` k pairs in a row, entered at k pair ``FLAT_KPAIRS -
kp / 2`` (1.5 KB of code). Otherwise it is a loop unrolled ``UNROLL`` times (two k pairs a
block) entered Duff-style at block ``(UNROLL - n % UNROLL) % UNROLL`` for n blocks (every
access post-increments, so any entry works), its bound pushed on the stack and compared
through r0, free between k pairs (3 instructions per UNROLL blocks: 24.75 per 32 MACs). The
entry is an ``LDR pc`` of an address computed once per call. Control
block words (byte offsets): 0 the patch, 4 the table, 8 the patch's end, 12 pixel 0's output
(advanced), 16 pixel 1's output less pixel 0's, 20 the end of pixel 0's outputs, 24 and 28
``128 * sum`` of each column, 32 and 36 the clamp bounds in every byte, 40 the entry block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.ops.base import EmitContext
from edgec.ops.int8.fixedpoint import smmlar_form

#: words of the control block
CTL_WORDS = 11
#: blocks (two k pairs each) of the walk's unrolled loop
UNROLL = 4
#: k pairs of the loop-free walk: kernels with kp <= 2 FLAT_KPAIRS take it (K <= 64: the
#: DS-CNN's layers), 48 bytes of code per k pair
FLAT_KPAIRS = 32


def quad_params(folded: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp_y: int,
                bound: np.ndarray) -> np.ndarray:
    """The parameter table of ``edgec_convq`` (int32, 16 words per quad of channels):
    ``folded`` [O] the biases with the input zero point folded in (O a multiple of 4, a group's
    quads one after the other), ``mult``/``shift`` per channel or one, ``bound`` [O] the
    accumulators' bounds (every channel must have the SMMLAR form)."""
    o = int(np.asarray(folded).size)
    assert o % 4 == 0
    mult = np.broadcast_to(np.asarray(mult).reshape(-1), (o,))
    shift = np.broadcast_to(np.asarray(shift).reshape(-1), (o,))
    words: list[int] = []
    for q in range(0, o, 4):
        b = [int(v) for v in folded[q:q + 4]]
        words += [b[0] + 256 * b[1], b[1], b[2] + 256 * b[3], b[3]]
        for c in range(q, q + 4):
            form = smmlar_form(int(mult[c]), int(shift[c]), zp_y, int(bound[c]))
            assert form is not None and form[0] >= 1
            e, r = form
            words += [int(mult[c]), r, e]
    arr = np.array(words, np.int64) & 0xFFFFFFFF  # b0 + 256 b1 taken modulo 2^32
    return arr.astype(np.uint32).view(np.int32)


def quad_stream(params: np.ndarray, tables: list[np.ndarray], kp: int) -> np.ndarray:
    """The one table ``edgec_convq`` reads (int32): per quad its four start values
    (:func:`quad_params` words 0-3), its 4 kp weight bytes of the pair table (as little-endian
    words), its twelve requantization words; the groups' quads one after the other
    (``tables``: each group's pair table of whole quads, 4 kp bytes each)."""
    par = np.asarray(params, np.int32).reshape(-1, 16)
    out: list[np.ndarray] = []
    for t in tables:
        words = np.ascontiguousarray(t, np.int8).view("<i4").reshape(-1, kp)
        for wq in words:
            i = len(out) // 3
            out += [par[i, :4], wq.astype(np.int32), par[i, 4:]]
    assert len(out) == 3 * par.shape[0]
    return np.concatenate(out).astype(np.int32)


def _flat_step() -> list[str]:
    """One k pair of the walk: r0/r1 both columns' int16 pair (LDRD), r2/lr the quad's two
    weight words (LDRD), r3 the patch, r12 the table; rows 0-3 of column 0 in r4-r7, of column 1
    in r8-r11 (even rows: the pair table's raw SMLAD, odd rows: after SXTB16 ROR #8)."""
    lines = ["ldrd r0, r1, [r3], #8", "ldrd r2, lr, [r12], #8"]
    for w, (a0, d0, a1, d1) in (("r2", ("r4", "r5", "r8", "r9")),
                                ("lr", ("r6", "r7", "r10", "r11"))):
        lines += [f"smlad {a0}, {w}, r0, {a0}", f"smlad {a1}, {w}, r1, {a1}",
                  f"sxtb16 {w}, {w}, ror #8",
                  f"smlad {d0}, {w}, r0, {d0}", f"smlad {d1}, {w}, r1, {d1}"]
    return lines


def _requant(acc: str) -> list[str]:
    """One output: acc (kept for its sign) requantized into r3, saturated back into acc;
    r0, r1, r2: the channel's M, r, e."""
    return ["lsl r3, " + acc + ", #1", "smmlar r3, r3, r0, r1",
            f"sub r3, r3, {acc}, lsr #31", "asr r3, r3, r2", f"ssat {acc}, #8, r3"]


def convq_asm(clamp: bool, flat: bool) -> list[str]:
    """The function body's instructions; ``flat``: the loop-free walk (:data:`FLAT_KPAIRS`)."""
    if flat:
        walk = ["ldr r3, [lr]", "ldr pc, [sp, #4]", "2:", *_flat_step(), "3:",
                *(_flat_step() * (FLAT_KPAIRS - 1))]
    else:  # the loop bound on the stack, compared through r0 (free between k pairs)
        walk = ["ldr r3, [lr]", "ldr pc, [sp, #4]",
                "2:", *_flat_step(), *_flat_step(), "3:", *(_flat_step() * (2 * UNROLL - 2)),
                "ldr r0, [sp, #8]", "cmp r3, r0", "bne 2b"]
    lines = [
        # the walk's entry: block ctl[10] (looped: (UNROLL - n % UNROLL) % UNROLL of the
        # unrolled loop for n blocks of two k pairs; flat: FLAT_KPAIRS - kp / 2)
        "ldr r2, [r0, #40]",
        "adr r1, 2f",
        "adr r3, 3f",
        "sub r3, r3, r1",
        "mla r1, r2, r3, r1",
        "orr r1, r1, #1",
        "ldr r2, [r0, #8]",
        "push {r0, r1, r2, r4-r11, lr}",
        "mov lr, r0",
        "ldr r12, [lr, #4]",
        "1:",
        "ldm r12!, {r4-r7}",
        "ldrd r0, r1, [lr, #24]",
        "sub r8, r4, r1",
        "sub r10, r6, r1",
        "sub r4, r4, r0",
        "sub r6, r6, r0",
        "mov r9, r5",
        "mov r11, r7",
        *walk,
        "ldr lr, [sp]",
        "sub r4, r4, r5, lsl #8",
        "sub r6, r6, r7, lsl #8",
        "sub r8, r8, r9, lsl #8",
        "sub r10, r10, r11, lsl #8",
    ]
    for c0, c1 in (("r4", "r8"), ("r5", "r9"), ("r6", "r10"), ("r7", "r11")):
        lines += ["ldm r12!, {r0-r2}", *_requant(c0), *_requant(c1)]
    lines += ["bfi r4, r5, #8, #8", "bfi r4, r6, #16, #8", "bfi r4, r7, #24, #8",
              "bfi r8, r9, #8, #8", "bfi r8, r10, #16, #8", "bfi r8, r11, #24, #8"]
    if clamp:
        lines += ["ldrd r0, r1, [lr, #32]"]
        for v in ("r4", "r8"):
            lines += [f"ssub8 r2, {v}, r0", f"sel {v}, {v}, r0",
                      f"ssub8 r2, r1, {v}", f"sel {v}, {v}, r1"]
    lines += ["ldrd r0, r1, [lr, #12]",
              "ldr r2, [lr, #20]",
              "str r8, [r0, r1]",
              "str r4, [r0], #4",
              "str r0, [lr, #12]",
              "cmp r0, r2",
              "bne 1b",
              "pop {r0, r1, r2, r4-r11, pc}"]
    return lines


def flat_walk(kp: int) -> bool:
    """Whether a walk of kp codes takes the loop-free form."""
    return kp // 2 <= FLAT_KPAIRS


def entry(kp: int) -> int:
    """The walk's entry block (control block word 10) for kp codes."""
    if flat_walk(kp):
        return FLAT_KPAIRS - kp // 2
    return (UNROLL - (kp // 4) % UNROLL) % UNROLL


def use_convq(ctx: EmitContext, clamp: bool, kp: int) -> str:
    """Emit the kernel for clamp and kp (``edgec_convq``, ``_clamp``; ``edgec_convqf``,
    ``_clamp`` the loop-free walk) once; its name."""
    flat = flat_walk(kp)
    name = "edgec_convq" + ("f" if flat else "") + ("_clamp" if clamp else "")
    body = "".join(f'        "{ln}\\n\\t"\n' for ln in convq_asm(clamp, flat))
    return ctx.helper(name, (
        "#ifdef EDGEC_S8_DSP\n"
        f"/* QConv2D's quads of one pixel pair (edgec/ops/int8/conv_dsp.py): control block ctl\n"
        f" * ({CTL_WORDS} words), {'with' if clamp else 'without'} the activation clamp. */\n"
        f"__attribute__((naked, noinline)) static void {name}(uint32_t *ctl "
        "__attribute__((unused)))\n"
        "{\n    __asm__(\n" + body + "    );\n}\n#endif"))


# -- im2col ------------------------------------------------------------------------------------

#: the widening of a pixel pair's gathered codes (or of two input pixels in place) into the
#: interleaved int16 patch: eight codes per iteration, with both columns' sums
WIDEN2_C = r"""#ifdef EDGEC_S8_DSP
/* Widen two columns of int8 codes, four of each per step, into the interleaved int16 patch
 * dst (per four codes: column 0's (x0, x1), column 1's (x0, x1), column 0's (x2, x3), column
 * 1's (x2, x3)); n4 steps (> 0); sums[c] += column c's codes. Column 0's codes at s0, column
 * 1's at s1, both advanced by {step} bytes a step. */
static inline void edgec_widen2_{name}(const int8_t *s0, const int8_t *s1, uint32_t *dst,
                                       int n4, int32_t *sums)
{{
    uint32_t *const end = dst + 4 * n4;
    int32_t a = sums[0], b = sums[1];
    uint32_t v0, v1, e0, e1, t0, t1;{s1_void}
    __asm__ volatile(
        "1:\n\t"
{load}        "sxtb16 %[e0], %[v0]\n\t"
        "sxtb16 %[v0], %[v0], ror #8\n\t"
        "sxtb16 %[e1], %[v1]\n\t"
        "sxtb16 %[v1], %[v1], ror #8\n\t"
        "smlad %[a], %[e0], %[one], %[a]\n\t"
        "smlad %[a], %[v0], %[one], %[a]\n\t"
        "smlad %[b], %[e1], %[one], %[b]\n\t"
        "smlad %[b], %[v1], %[one], %[b]\n\t"
        "pkhbt %[t0], %[e0], %[v0], lsl #16\n\t"
        "pkhtb %[v0], %[v0], %[e0], asr #16\n\t"
        "pkhbt %[t1], %[e1], %[v1], lsl #16\n\t"
        "pkhtb %[v1], %[v1], %[e1], asr #16\n\t"
        "strd %[t0], %[t1], [%[dst]], #16\n\t"
        "strd %[v0], %[v1], [%[dst], #-8]\n\t"
        "cmp %[dst], %[end]\n\t"
        "bne 1b\n\t"
        : [v0] "=&r"(v0), [v1] "=&r"(v1), [e0] "=&r"(e0), [e1] "=&r"(e1), [t0] "=&r"(t0),
          [t1] "=&r"(t1), [a] "+&r"(a), [b] "+&r"(b), [s0] "+&r"(s0),{s1_op}
          [dst] "+&r"(dst)
        : [end] "r"(end), [one] "r"(0x00010001)
        : "cc", "memory");
    sums[0] = a;
    sums[1] = b;
}}
#endif"""

_LOADS = {
    # the gathered pair: column 0's four codes then column 1's, eight bytes a step (one LDRD;
    # s1 is s0 + 4, not read)
    "pair": ('        "ldrd %[v0], %[v1], [%[s0]], #8\\n\\t"\n', 8),
    # two input pixels in place
    "pix": ('        "ldr %[v0], [%[s0]], #4\\n\\t"\n        "ldr %[v1], [%[s1]], #4\\n\\t"\n', 4),
}


def widen2_c(name: str) -> str:
    """The C of ``edgec_widen2_<name>`` (``"pair"``: the gathered codes, ``"pix"``: two pixels
    of the input). Every operand the loop advances or accumulates is early-clobber (``+&r``):
    without it gcc may give an advancing pointer and the loop end one register when it can
    prove them equal at entry (the patch scratch ending where the input starts), and the loop
    then runs past its end."""
    load, step = _LOADS[name]
    pix = name == "pix"
    return WIDEN2_C.format(name=name, load=load, step=step,
                           s1_op=' [s1] "+&r"(s1),' if pix else "",
                           s1_void="" if pix else "\n    (void)s1;")


def use_widen2(ctx: EmitContext, name: str) -> str:
    """Emit ``edgec_widen2_<name>`` (see :func:`widen2_c`) once; its name."""
    return ctx.helper(f"edgec_widen2_{name}", widen2_c(name))


#: aligned gathers of at most this many words are unrolled
UNROLL_COPY = 16


def _copy(src: str, n: int, kk: str, aligned: bool) -> str:
    """C copying n codes from ``src`` to codes kk.. of the gathered column ``g8`` (code k at
    ``g8[(k >> 2) * 8 + (k & 3)]``); ``aligned``: n and kk multiples of 4 (word moves)."""
    if aligned and n // 4 <= UNROLL_COPY:  # unrolled: LDR, STR a word
        return ("{\n" + f"    int8_t *const d = g8 + ({kk}) * 2;\n"
                + "".join(f"    memcpy(d + {8 * i}, {src} + {4 * i}, 4);\n"
                          for i in range(n // 4)) + "}\n")
    if aligned:
        return (f"for (int i = 0; i < {n // 4}; ++i) {{\n"
                f"    uint32_t v;\n"
                f"    memcpy(&v, {src} + 4 * i, 4);\n"
                f"    memcpy(g8 + (({kk}) / 4 + i) * 8, &v, 4);\n"
                f"}}\n")
    return (f"for (int i = 0; i < {n}; ++i) {{\n"
            f"    const unsigned int k = (unsigned int)({kk}) + (unsigned int)i;\n"
            f"    g8[(k >> 2) * 8u + (k & 3u)] = {src}[i];\n"
            f"}}\n")


def _fill(n: int, kk: str, aligned: bool) -> str:
    """C filling n codes from kk of ``g8`` with the input zero point (``zp4``: in every
    byte)."""
    if aligned and n // 4 <= UNROLL_COPY:
        return ("{\n" + f"    int8_t *const d = g8 + ({kk}) * 2;\n"
                + "".join(f"    memcpy(d + {8 * i}, &zp4, 4);\n" for i in range(n // 4))
                + "}\n")
    if aligned:
        return (f"for (int i = 0; i < {n // 4}; ++i) memcpy(g8 + (({kk}) / 4 + i) * 8, &zp4, "
                f"4);\n")
    return (f"for (int i = 0; i < {n}; ++i) {{\n"
            f"    const unsigned int k = (unsigned int)({kk}) + (unsigned int)i;\n"
            f"    g8[(k >> 2) * 8u + (k & 3u)] = (int8_t)zp4;\n"
            f"}}\n")


def _ind(code: str, n: int = 1) -> str:
    pad = "    " * n
    return "".join((pad + ln if ln else ln) + "\n" for ln in code.rstrip("\n").split("\n"))


def im2col(ctx: EmitContext, win: object, groups: int, kp: int, direct: bool) -> str:
    """C widening the receptive fields of output pixels ``p`` and ``p1`` (group ``gr``) into
    the interleaved int16 patch ``xq`` (4 kp bytes at ``scratch``) and their sums into
    ``sums[2]``.

    ``direct`` (1x1, unpadded, one group, C a multiple of 4): both input pixels widened from
    the input; likewise, row of taps by row, a pair whose windows both lie inside the input
    (one group, not dilated across, rows of whole words). Otherwise each pixel's codes are
    first gathered, rows of taps at once where they lie inside the input, the input zero
    point (``zp4``) in the padding, into the upper half of the patch (column c's code k at
    byte ``2 kp + (k / 4) 8 + 4 c + k % 4``), then widened from there upwards: step g reads
    bytes 2 kp + 8 g .. + 8 and writes 16 g .. 16 g + 16 <= 2 kp + 8 (g + 1), so no step
    overwrites a code before it is read."""
    w: Any = win
    cg = w.c // groups
    k = w.kh * w.kw * cg
    if direct:
        fn = use_widen2(ctx, "pix")

        def at(pix: str) -> str:
            if w.sh == w.sw == 1:
                return f"xn + {pix} * {w.c}"
            return f"xn + (({pix}) / {w.ow} * {w.sh * w.w} + ({pix}) % {w.ow} * {w.sw}) * {w.c}"
        return ("int32_t sums[2] = {0, 0};\n"
                f"{fn}({at('p')}, {at('p1')}, (uint32_t *)(void *)xq, {kp // 4}, sums);\n")
    fn = use_widen2(ctx, "pair")
    goff = f" + gr * {cg}" if groups > 1 else ""
    row_n = w.kw * cg
    tap_al = cg % 4 == 0
    row_al = row_n % 4 == 0
    taps = (f"for (int kw = 0; kw < {w.kw}; ++kw) {{\n"
            f"    const int iw = iw0 + kw * {w.dw};\n"
            f"    if (iw >= 0 && iw < {w.w}) {{\n"
            + _ind(_copy(f"(xr + iw * {w.c})", cg, f"kk + kw * {cg}", tap_al), 2)
            + "    } else {\n"
            + _ind(_fill(cg, f"kk + kw * {cg}", tap_al), 2) + "    }\n}\n")
    if not tap_al and row_al:  # single codes: the row of the zero point, then the taps
        # inside the input (t0 .. t1, the same for every row of the pixel) without a test each
        taps = (_fill(row_n, "kk", True)
                + "for (int kw = t0; kw < t1; ++kw) {\n"
                + _ind(_copy(f"(xr + (iw0 + kw * {w.dw}) * {w.c})", cg, f"kk + kw * {cg}",
                             False)) + "}\n")
    if w.dw == 1 and groups == 1:  # the row's taps are contiguous in the input
        taps = (f"if (iw0 >= 0 && iw0 + {w.kw} <= {w.w}) {{\n"
                + _ind(_copy(f"(xr + iw0 * {w.c})", row_n, "kk", row_al))
                + "} else {\n" + _ind(taps) + "}\n")
    column = (
        f"int8_t *g8 = (int8_t *)scratch + {2 * kp} + 4 * c;\n"
        "const int pix = c ? p1 : p;\n"
        f"const int oh = pix / {w.ow}, ow = pix % {w.ow};\n"
        f"const int iw0 = ow * {w.sw} - {w.pl};\n"
        + (f"int t0 = 0, t1 = {w.kw};\n"
           f"while (t0 < t1 && iw0 + t0 * {w.dw} < 0) ++t0;\n"
           f"while (t1 > t0 && iw0 + (t1 - 1) * {w.dw} >= {w.w}) --t1;\n"
           if not tap_al and row_al else "")
        + f"for (int kh = 0; kh < {w.kh}; ++kh) {{\n"
        f"    const int ih = oh * {w.sh} - {w.pt} + kh * {w.dh};\n"
        f"    const int kk = kh * {row_n};\n"
        f"    if (ih < 0 || ih >= {w.h}) {{\n"
        + _ind(_fill(row_n, "kk", row_al), 2)
        + "    } else {\n"
        f"        const int8_t *xr = xn + ih * {w.w * w.c}{goff};\n"
        + _ind(taps, 2) + "    }\n}\n"
    )
    pad = "".join(f"((int8_t *)scratch)[{2 * kp + (i >> 2) * 8 + 4 * c + (i & 3)}] = 0;\n"
                  for i in range(k, kp) for c in range(2))
    gather = ("for (int c = 0; c < 2; ++c) {\n" + _ind(column) + "}\n" + pad
              + f"{fn}((const int8_t *)scratch + {2 * kp}, (const int8_t *)scratch + "
              f"{2 * kp + 4}, (uint32_t *)(void *)xq, {kp // 4}, sums);\n")
    if not (w.dw == 1 and groups == 1 and row_al):
        return "int32_t sums[2] = {0, 0};\n" + gather
    # both windows inside the input: each row of taps widened straight from the input
    pix = use_widen2(ctx, "pix")
    span = (w.kh - 1) * w.dh + 1
    at = "".join(f"const int ih{c} = ({q}) / {w.ow} * {w.sh} - {w.pt}, "
                 f"iw{c} = ({q}) % {w.ow} * {w.sw} - {w.pl};\n"
                 for c, q in ((0, "p"), (1, "p1")))
    inside = " && ".join(f"ih{c} >= 0 && ih{c} + {span} <= {w.h} && iw{c} >= 0 && "
                         f"iw{c} + {w.kw} <= {w.w}" for c in range(2))
    rows = (f"for (int kh = 0; kh < {w.kh}; ++kh) {{\n"
            f"    const int dy = kh * {w.dh * w.w * w.c};\n"
            f"    {pix}(xn + (ih0 * {w.w} + iw0) * {w.c} + dy, xn + (ih1 * {w.w} + iw1) * {w.c}"
            f" + dy, (uint32_t *)(void *)xq + kh * {row_n}, {row_n // 4}, sums);\n}}\n")
    return ("int32_t sums[2] = {0, 0};\n{\n" + _ind(at) + f"    if ({inside}) {{\n"
            + _ind(rows, 2) + "    } else {\n" + _ind(gather, 2) + "    }\n}\n")
