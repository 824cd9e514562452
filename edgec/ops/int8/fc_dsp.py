"""The DSP-extension kernel of QFullyConnected: one C function per rounding form, shared by every
fully connected layer of a model (called with the layer's tables, so a model with ten dense
layers carries one copy of the loop).

The input row (K int8 codes) is first widened to int16 into the node's scratch buffer (2 * kp
bytes, kp = K rounded up to a multiple of 4, zero padded), with its sum for the pair table's
correction (see :mod:`edgec.ops.int8.gemm_s8`). Then for each quad of the pair table (four
output rows) an assembly loop takes 16 k per iteration, four steps of

    LDRD  xa, xb      <- x[k .. k + 3] as two int16 pairs
    LDM   w0-w3       <- the quad's four words of k pairs (k, k + 1) and (k + 2, k + 3)
    4 x (SMLAD a, w, x ; SXTB16 w, w, ROR #8 ; SMLAD d, w, x)

that is 14 instructions per 16 MACs; the k % 16 rest in C with the same arithmetic, the lone
pair (M % 4 in {1, 2}) in C. Requantization and the clamp are fused per output; with the
single rounding (TFLite's FULLY_CONNECTED) and a shift in [-31, -2] (every multiplier below
1/4, the usual case) the 64-bit rounding shift is a high-word multiply, an add and a shift:
``(x * M + 2^(30 - s)) >> (31 - s) == ((x * M >> 32) + 2^(-2 - s)) >> (-1 - s)`` exactly,
because 2^(30 - s) is then a multiple of 2^32.

Instruction floor (batch 1, int8 weights stored once in flash): every weight word (four int8
weights, two rows x two k) needs at least one SMLAD per two MACs, and the pair table's second
row needs its bytes sign-extended (one SXTB16 per word) before its SMLAD: 3 ALU instructions
per 4 MACs, 0.75 per MAC, before any load. With loads (LDM: one instruction per four words,
LDRD of the int16 input shared by the four rows) the loop is 14 / 16 = 0.875 per MAC.
"""

from __future__ import annotations

from edgec.ir import Graph
from edgec.ops.base import EmitContext
from edgec.ops.int8.fixedpoint import right_shifts_only, use_helpers, use_mbqm
from edgec.ops.int8.gemm_s8 import use_kernels


def fast_single(shifts: object) -> bool:
    """Whether every shift allows ``edgec_mbqm_single_hi`` (the kernel form "single_hi")."""
    return right_shifts_only(shifts, -31, -2)


FC_C = r"""#ifdef EDGEC_S8_DSP
/* Requantized accumulator plus the output zero point (edgec_fc_s8_{form}). */
static inline int32_t edgec_fc_rq_{form}(int32_t acc, int32_t mult, int32_t shift, int32_t zp_y)
{{
    {rq_body}
}}

/* One output of edgec_fc_s8_{form}: requantize, add the zero point, clamp, store. */
static inline void edgec_fc_out_{form}(int8_t *y, int32_t acc, int32_t mult, int32_t shift,
                                      int32_t zp_y, int32_t lo, int32_t hi)
{{
    int32_t v = {mbqm}(acc, mult, shift) + zp_y;
    v = v < lo ? lo : v;
    *y = (int8_t)(v > hi ? hi : v);
}}

/* QFullyConnected on the DSP extension, {form} rounding: y[r] = requant(bias[r] + w[r] . x)
 * for r < m, the weights a pair table of kp (a multiple of 4) codes per row, x the k int8
 * codes of one input row; scratch: 2 * kp bytes (the row widened to int16). mult and shift
 * are indexed by row (cmask -1) or always 0 (cmask 0: one multiplier). Never inlined: its
 * walk holds thirteen registers, which a caller's loop (a batch of rows) around an inlined copy
 * leaves gcc unable to find ("impossible constraints"). */
__attribute__((noinline)) static void edgec_fc_s8_{form}(
    const int8_t *x, int k, const int8_t *w, int m, int kp, const int32_t *bias,
    const int32_t *mult, const {stype} *shift, int cmask, int32_t zp_y, int32_t lo, int32_t hi,
    int8_t *y, void *scratch)
{{
    edgec_u32a *xw = (edgec_u32a *)scratch;
    edgec_q15a *xh = (edgec_q15a *)scratch;
    const int mp = m + (m & 1), kpl = kp & ~31, k4 = k & ~3;
    const int8_t *wp = w;
    int32_t sx = 0, corr;
    uint32_t lo4, hi4;
    int i, q;{hi_locals}
    if (k4 > 0) {{  /* four codes a step: (x0, x1), (x2, x3) as int16 pairs, and their sum */
        const int8_t *xs = x;
        edgec_u32a *xd = xw;
        int32_t e, o, t;
        __asm__ volatile(
            "1:\n\t"
            "ldr %[e], [%[xs]], #4\n\t"
            "sxtb16 %[o], %[e], ror #8\n\t"
            "sxtb16 %[e], %[e]\n\t"
            "smlad %[sx], %[e], %[one], %[sx]\n\t"
            "smlad %[sx], %[o], %[one], %[sx]\n\t"
            "pkhbt %[t], %[e], %[o], lsl #16\n\t"
            "pkhtb %[o], %[o], %[e], asr #16\n\t"
            "strd %[t], %[o], [%[xd]], #8\n\t"
            "cmp %[xs], %[xe]\n\t"
            "bne 1b\n\t"
            : [e] "=&r"(e), [o] "=&r"(o), [t] "=&r"(t), [xs] "+&r"(xs), [xd] "+&r"(xd),
              [sx] "+&r"(sx)
            : [xe] "r"(x + k4), [one] "r"(0x00010001)
            : "cc", "memory");
    }}
    for (i = k4; i < k; ++i) {{
        xh[i] = x[i];
        sx += x[i];
    }}
    for (i = k; i < kp; ++i) xh[i] = 0;
    corr = (int32_t)((uint32_t)sx << 7);
    lo4 = ((uint32_t)lo & 0xFFu) * 0x01010101u;
    hi4 = ((uint32_t)hi & 0xFFu) * 0x01010101u;
    q = 0;
{pre_quads}{quads}    if ((mp >> 1) & 1) {{  /* the lone pair: rows mp - 2 and (if < m) mp - 1 */
        const edgec_u32a *ww = (const edgec_u32a *)(const void *)wp;
        int32_t a = 0, d = 0;
        int j;
        for (j = 0; j < (kp >> 1); ++j) {{
            const int32_t v = (int32_t)ww[j], xv = (int32_t)xw[j];
            a = __smlad(v, xv, a);
            d = __smlad(edgec_sxtb16_hi(v), xv, d);
        }}
        edgec_fc_out_{form}(y + mp - 2, (int32_t)((uint32_t)bias[mp - 2] + (uint32_t)a -
                           ((uint32_t)d << 8) - (uint32_t)corr), mult[(mp - 2) & cmask],
                           shift[(mp - 2) & cmask], zp_y, lo, hi);
        if (mp - 1 < m) {{
            edgec_fc_out_{form}(y + mp - 1, bias[mp - 1] + d, mult[(mp - 1) & cmask],
                               shift[(mp - 1) & cmask], zp_y, lo, hi);
        }}
    }}
}}
#endif"""

def _walk_step(xp: str, wp: str, x: tuple[str, str], w: tuple[str, ...],
               acc: tuple[str, str, str, str]) -> str:
    """One 4-k step of a quad's walk as C string lines of assembly: x[k .. k + 3] as two int16
    pairs (LDRD), the quad's four weight words (LDM), 4 x (SMLAD, SXTB16 ROR #8, SMLAD)."""
    a0, d0, a1, d1 = acc
    lines = [f"ldrd {x[0]}, {x[1]}, [{xp}], #8", f"ldm {wp}!, {{{{{', '.join(w)}}}}}"]
    for wr, xr, a, d in ((w[0], x[0], a0, d0), (w[1], x[0], a1, d1), (w[2], x[1], a0, d0),
                         (w[3], x[1], a1, d1)):
        lines += [f"smlad {a}, {wr}, {xr}, {a}", f"sxtb16 {wr}, {wr}, ror #8",
                  f"smlad {d}, {wr}, {xr}, {d}"]
    return "".join(f'"{ln}\\n\\t"\n' for ln in lines)


_STEP = _walk_step("%[xp]", "%[wp]", ("%[xa]", "%[xb]"), ("%[w0]", "%[w1]", "%[w2]", "%[w3]"),
                   ("%[a0]", "%[d0]", "%[a1]", "%[d1]"))
#: k steps of 4 per assembly iteration
STEPS = 8

#: "single_hi", the quads whose four rows are all real: the whole loop over them in one
#: assembly function (naked: its own thirteen registers plus the control block in lr), so no
#: C code spills around the walk; requantization (SMMUL high word, the four shifts one int8
#: word, SSAT's ASR #1 the last rounding step), clamp (SSUB8/SEL) and the 4-byte store per
#: quad. Control block words: 0 xw, 2 bias, 3 mult, 4 shift, 5 mult step, 6 shift step, 7 y,
#: 8 quads, 10 end of the 32-k walk, 11 end of the rest, 12 corr, 13 1 + 2 zp, 14 lo4, 15 hi4
#: (r0 on entry; the weights pointer in r1).
FCQ_HI = r"""#ifdef EDGEC_S8_DSP
__attribute__((naked, noinline)) static void edgec_fcq_hi(uint32_t *ctl __attribute__((unused)),
                                                          const int8_t *w __attribute__((unused)))
{{
    __asm__(
        "push {{r4-r11, lr}}\n\t"
        "mov lr, r0\n\t"
        "mov r9, r1\n\t"
        "5:\n\t"
        "ldr r11, [lr, #8]\n\t"
        "ldr r12, [lr, #48]\n\t"
        "ldrd r4, r5, [r11]\n\t"
        "ldrd r6, r7, [r11, #8]\n\t"
        "add r11, r11, #16\n\t"
        "str r11, [lr, #8]\n\t"
        "sub r4, r4, r12\n\t"
        "add r4, r4, r5, lsl #8\n\t"
        "sub r6, r6, r12\n\t"
        "add r6, r6, r7, lsl #8\n\t"
        "ldr r8, [lr]\n\t"
        "ldr r10, [lr, #40]\n\t"
        "cmp r8, r10\n\t"
        "beq 2f\n\t"
        "1:\n\t"
{steps}        "cmp r8, r10\n\t"
        "bne 1b\n\t"
        "2:\n\t"
        "ldr r10, [lr, #44]\n\t"
        "cmp r8, r10\n\t"
        "beq 4f\n\t"
        "3:\n\t"
{step}        "cmp r8, r10\n\t"
        "bne 3b\n\t"
        "4:\n\t"
        "sub r4, r4, r5, lsl #8\n\t"
        "sub r6, r6, r7, lsl #8\n\t"
        "ldrd r8, r10, [lr, #12]\n\t"
        "ldm r8, {{r0-r3}}\n\t"
        "ldr r12, [r10]\n\t"
        "smmul r4, r4, r0\n\t"
        "smmul r5, r5, r1\n\t"
        "smmul r6, r6, r2\n\t"
        "smmul r7, r7, r3\n\t"
        "ldrd r0, r1, [lr, #20]\n\t"
        "add r8, r8, r0\n\t"
        "add r10, r10, r1\n\t"
        "strd r8, r10, [lr, #12]\n\t"
        "sxtb r0, r12\n\t"
        "sxtb r1, r12, ror #8\n\t"
        "sxtb r2, r12, ror #16\n\t"
        "asr r3, r12, #24\n\t"
        "asr r4, r4, r0\n\t"
        "asr r5, r5, r1\n\t"
        "asr r6, r6, r2\n\t"
        "asr r7, r7, r3\n\t"
        "ldr r12, [lr, #52]\n\t"
        "add r4, r4, r12\n\t"
        "add r5, r5, r12\n\t"
        "add r6, r6, r12\n\t"
        "add r7, r7, r12\n\t"
        "ssat r4, #8, r4, asr #1\n\t"
        "ssat r5, #8, r5, asr #1\n\t"
        "ssat r6, #8, r6, asr #1\n\t"
        "ssat r7, #8, r7, asr #1\n\t"
        "bfi r4, r5, #8, #8\n\t"
        "bfi r4, r6, #16, #8\n\t"
        "bfi r4, r7, #24, #8\n\t"
        "ldrd r11, r12, [lr, #56]\n\t"
        "ssub8 r0, r4, r11\n\t"
        "sel r4, r4, r11\n\t"
        "ssub8 r0, r12, r4\n\t"
        "sel r4, r4, r12\n\t"
        "ldrd r8, r10, [lr, #28]\n\t"
        "str r4, [r8], #4\n\t"
        "subs r10, r10, #1\n\t"
        "strd r8, r10, [lr, #28]\n\t"
        "bne 5b\n\t"
        "pop {{r4-r11, pc}}\n\t");
}}
#endif"""

#: one step of FCQ_HI's walk (registers: x r11/r12, weights r0-r3, accumulators r4-r7)
_STEP_HI = _walk_step("r8", "r9", ("r11", "r12"), ("r0", "r1", "r2", "r3"),
                      ("r4", "r5", "r6", "r7"))

#: the kernel's call of FCQ_HI for its whole quads (the C loops then run from quad q)
PRE_QUADS_HI = """    if ((m >> 2) > 0) {{  /* the quads of four real rows: one assembly loop */
        uint32_t ctl[16];
        int n;
        ctl[0] = (uint32_t)(uintptr_t)xw;
        ctl[2] = (uint32_t)(uintptr_t)bias;
        if (cmask) {{
            ctl[3] = (uint32_t)(uintptr_t)mult;
            ctl[4] = (uint32_t)(uintptr_t)shift;
            ctl[5] = 16u;
            ctl[6] = 4u;
        }} else {{  /* one multiplier: four copies, read in place every quad */
            for (n = 0; n < 4; ++n) {{
                m4[n] = mult[0];
                s4[n] = shift[0];
            }}
            ctl[3] = (uint32_t)(uintptr_t)m4;
            ctl[4] = (uint32_t)(uintptr_t)s4;
            ctl[5] = 0u;
            ctl[6] = 0u;
        }}
        ctl[7] = (uint32_t)(uintptr_t)y;
        ctl[8] = (uint32_t)(m >> 2);
        ctl[10] = (uint32_t)(uintptr_t)(xw + (kpl >> 1));
        ctl[11] = (uint32_t)(uintptr_t)(xw + (kp >> 1));
        ctl[12] = (uint32_t)corr;
        ctl[13] = (uint32_t)(1 + 2 * zp_y);
        ctl[14] = lo4;
        ctl[15] = hi4;
        {fcq}(ctl, wp);
        q = m >> 2;
        wp += q * 4 * kp;
    }}
"""

#: the loop over the quads, emitted twice: for K % 32 == 0 as it is, otherwise with the rest
#: loop (4 k a step) in the same assembly block. The loops' bounds are read from the stack
#: into w0 (free between steps) for each compare: the block holds twelve registers besides
#: (four of them fixed, r0-r3, for the LDM), and with a thirteenth for a bound gcc could not
#: always allocate them ("asm operand has impossible constraints": a dense layer over a batch
#: of rows, or several dense layers whose calls gcc specialised to their constants)
_QUADS = r"""    for (; q < (mp >> 2); ++q) {{
        register int32_t w0 __asm__("r0");
        register int32_t w1 __asm__("r1");
        register int32_t w2 __asm__("r2");
        register int32_t w3 __asm__("r3");
        int32_t a0, d0, a1, d1;
        int32_t xa = (int32_t)(intptr_t)(bias + 4 * q), xb = corr;
        const edgec_u32a *xp = xw;
        {end_decl}
        /* d0, d1 start at rows 1 and 3's bias (the table is padded to even rows); a0, a1 at
         * rows 0 and 2's, less the pair table's 128 * sum(x), plus 256 * the odd row's, so
         * that row 0 = a0 - 256 * d0 after the loop */
        __asm__ volatile(
            "ldrd %[a0], %[d0], [%[xa]]\n\t"
            "ldrd %[a1], %[d1], [%[xa], #8]\n\t"
            "sub %[a0], %[a0], %[xb]\n\t"
            "add %[a0], %[a0], %[d0], lsl #8\n\t"
            "sub %[a1], %[a1], %[xb]\n\t"
            "add %[a1], %[a1], %[d1], lsl #8\n\t"
{entry}            "1:\n\t"
{steps}            "ldr %[w0], %[end]\n\t"
            "cmp %[xp], %[w0]\n\t"
            "bne 1b\n\t"
            "2:\n\t"
{tail}            : [a0] "=&r"(a0), [d0] "=&r"(d0), [a1] "=&r"(a1), [d1] "=&r"(d1),
              [xp] "+r"(xp), [wp] "+r"(wp), [xa] "+r"(xa), [xb] "+r"(xb),
              [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3)
            : {end_operand}
            : "cc", "memory");
        {{  /* requantize four rows; clamp the four codes at once (SSUB8 + SEL per bound) */
            const int r0 = 4 * q, c = r0 & cmask, st = cmask & 1;
            const int32_t *mq = mult + c;
            const {stype} *sq = shift + c;
            const int32_t v0 = edgec_fc_rq_{form}((int32_t)((uint32_t)a0 - ((uint32_t)d0 << 8)),
                                                 mq[0], sq[0], zp_y);
            const int32_t v1 = edgec_fc_rq_{form}(d0, mq[st], sq[st], zp_y);
            const int32_t v2 = edgec_fc_rq_{form}((int32_t)((uint32_t)a1 - ((uint32_t)d1 << 8)),
                                                 mq[2 * st], sq[2 * st], zp_y);
            const int32_t v3 = r0 + 3 < m ? edgec_fc_rq_{form}(d1, mq[3 * st], sq[3 * st], zp_y)
                                          : 0;
            const uint32_t codes = edgec_pack4_s8(v0, v1, v2, v3, lo4, hi4);
            if (r0 + 3 < m) {{
                memcpy(y + r0, &codes, 4);
            }} else {{
                y[r0] = (int8_t)(codes & 0xFFu);
                y[r0 + 1] = (int8_t)((codes >> 8) & 0xFFu);
                y[r0 + 2] = (int8_t)((codes >> 16) & 0xFFu);
            }}
        }}
    }}
"""

_TAIL = r"""            "ldr %[w0], %[tail_end]\n\t"
            "cmp %[xp], %[w0]\n\t"
            "beq 4f\n\t"
            "3:\n\t"
{step}            "ldr %[w0], %[tail_end]\n\t"
            "cmp %[xp], %[w0]\n\t"
            "bne 3b\n\t"
            "4:\n\t"
"""


def use_fc_kernel(ctx: EmitContext, form: str) -> str:
    """Emit the DSP fully connected kernel of requantization form ``form`` (once): "single",
    "double" (MultiplyByQuantizedMultiplier's two roundings) or "single_hi" (single rounding,
    every shift in [-31, -2]: :func:`fast_single`; its shift table is int8 ``-2 - shift``);
    its name. "single_hi" in a model with several fully connected layers runs its whole quads
    in :data:`FCQ_HI` (see :func:`whole_quads_in_assembly`)."""
    use_kernels(ctx)
    if form == "single_hi":
        use_helpers(ctx, "edgec_mbqm_single_hi")
        mbqm = "edgec_mbqm_single_hi"
    else:
        mbqm = use_mbqm(ctx, form)
    def asm(text: str, indent: int = 12) -> str:
        return "".join(" " * indent + ln + "\n" for ln in text.replace("{{", "{")
                       .replace("}}", "}").rstrip("\n").split("\n"))

    stype = "int8_t" if form == "single_hi" else "int32_t"

    def quads(tail: bool) -> str:
        text = _QUADS.format(
            form=form, stype=stype, steps=asm(_STEP * STEPS),
            tail=_TAIL.format(step=asm(_STEP)) if tail else "",
            # K % 32 == 0 (this loop's kpl = kp >= 32) runs at least once; with a rest kpl
            # may be 0
            entry=('            "ldr %[w0], %[end]\\n\\t"\n'
                   '            "cmp %[xp], %[w0]\\n\\t"\n'
                   '            "beq 2f\\n\\t"\n' if tail else ""),
            end_operand=('[end] "m"(end), [tail_end] "m"(tail_end)' if tail
                         else '[end] "m"(end)'),
            # volatile: on the stack (an "m" operand of a constant would be a literal whose
            # address needs a register)
            end_decl=("const edgec_u32a *volatile end = xw + (kpl >> 1);\n"
                      "        const edgec_u32a *volatile tail_end = xw + (kp >> 1);" if tail
                      else "const edgec_u32a *volatile end = xw + (kpl >> 1);"))
        return "".join("    " + ln + "\n" if ln else "\n" for ln in text.rstrip("\n").split("\n"))

    pre_quads = ""
    if form == "single_hi" and whole_quads_in_assembly(ctx.g):
        fcq = ctx.helper("edgec_fcq_hi", FCQ_HI.format(
            steps=asm(_STEP_HI * STEPS, 8), step=asm(_STEP_HI, 8)))
        pre_quads = PRE_QUADS_HI.format(fcq=fcq)
    quad_loops = ("    if (kpl == kp) {\n" + quads(False) + "    } else {  /* a k % 32 rest */\n"
                  + quads(True) + "    }\n")
    if form == "single_hi":  # the zero point joins the last rounding: ((h >> s) + 1 + 2 zp) >> 1
        rq_body = ("const int32_t h = (int32_t)(((int64_t)acc * mult) >> 32);\n"
                   "    return ((h >> shift) + 1 + 2 * zp_y) >> 1;")
    else:
        rq_body = f"return {mbqm}(acc, mult, shift) + zp_y;"
    return ctx.helper(f"edgec_fc_s8_{form}", FC_C.format(
        form=form, mbqm=mbqm, stype=stype, rq_body=rq_body, quads=quad_loops,
        pre_quads=pre_quads,
        hi_locals="\n    int32_t m4[4];\n    int8_t s4[4];" if pre_quads else ""))


def whole_quads_in_assembly(g: Graph) -> bool:
    """Whether the "single_hi" kernel runs its whole quads in :data:`FCQ_HI`: where two or
    more fully connected layers share the kernel. GCC then compiles one copy for all calls and
    the C quad loop spills around the walk's thirteen registers (the assembly loop: LSTM bench
    271,128 -> 247,642 instructions, MLP 37,124 -> 35,033); a model with one such layer gets
    the C loop specialised to that layer's constants, which is as short and reads memory less
    (dense 64x64 bench: 4,783 instructions and 6,704 estimated cycles vs 4,816 and 6,949)."""
    return sum(n.op == "QFullyConnected" for n in g.nodes) >= 2
