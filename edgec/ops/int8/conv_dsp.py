"""The quad loop of QConv2D's DSP path as one naked assembly function, ``edgec_convq``
(``edgec_convq_clamp`` with an activation clamp): every quad (four output channels) of one
group against the two interleaved int16 columns of a pixel pair, walk, requantization, pack
and store, without the C around it (which spilled around the walk's fourteen registers: the
function as C cost about 200 instructions per quad outside the walk).

Taken where the layer's requantization has the SMMLAR form for every channel
(``conv._smmlar_requant``) and the group's output count is a multiple of 4. Per quad the kernel
reads 16 words of a compile-time table (:func:`quad_params`): the accumulators' start values
``b0 + 256 b1, b1, b2 + 256 b3, b3`` (the biases with the input zero point folded in; row r of
the pair table is recovered as ``a - 256 d``, see :mod:`edgec.ops.int8.gemm_s8`), then per
channel ``M, r = 2^(e-1) + zp_y 2^e, e``; one LDM each. Per output: LSL, SMMLAR, SUB of the sign
bit, ASR, SSAT (TFLite's double rounding with the zero point folded in, as
``edgec_rq_smmlar``); BFI packs a pixel's four codes, SSUB8 + SEL clamp them (only where the
bounds are not those of int8), one word store per pixel.

The walk is ``edgec_quad2_s8``'s (two k pairs per iteration, 26 instructions per 32 MACs) with
every register in use (eight accumulators, the LDRD of both columns' k pair, the weight word,
the three pointers), so the control block lives on the stack: its address is pushed with the
saved registers and read back at ``[sp]``. Control block words (byte offsets): 0 the patch,
4 the weights (advanced quad by quad), 8 the patch's end, 12 the parameters (advanced),
16 pixel 0's output (advanced), 20 pixel 1's output less pixel 0's, 24 the end of pixel 0's
outputs, 28 and 32 ``128 * sum`` of each column, 36 and 40 the clamp bounds in every byte.
"""

from __future__ import annotations

import numpy as np

from edgec.ops.base import EmitContext
from edgec.ops.int8.fixedpoint import smmlar_form

#: words of the control block
CTL_WORDS = 11


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


def _walk_step() -> list[str]:
    """One k pair of the walk: r0/r1 both columns' int16 pair, r2 a weight word, r3 the patch,
    r12 the weights; rows 0-3 of column 0 in r4-r7, of column 1 in r8-r11 (even rows: the
    pair table's raw SMLAD, odd rows: after SXTB16 ROR #8)."""
    lines = ["ldrd r0, r1, [r3], #8"]
    for a0, d0, a1, d1 in (("r4", "r5", "r8", "r9"), ("r6", "r7", "r10", "r11")):
        lines += ["ldr r2, [r12], #4",
                  f"smlad {a0}, r2, r0, {a0}", f"smlad {a1}, r2, r1, {a1}",
                  "sxtb16 r2, r2, ror #8",
                  f"smlad {d0}, r2, r0, {d0}", f"smlad {d1}, r2, r1, {d1}"]
    return lines


def _requant(acc: str) -> list[str]:
    """One output: acc (kept for its sign) requantized into r3, saturated back into acc;
    r0, r1, r2: the channel's M, r, e."""
    return ["lsl r3, " + acc + ", #1", "smmlar r3, r3, r0, r1",
            f"sub r3, r3, {acc}, lsr #31", "asr r3, r3, r2", f"ssat {acc}, #8, r3"]


def convq_asm(clamp: bool) -> list[str]:
    """The function body's instructions."""
    lines = [
        "push {r0, r4-r11, lr}",
        "mov lr, r0",
        "1:",
        "ldr r2, [lr, #12]",
        "ldm r2!, {r4-r7}",
        "str r2, [lr, #12]",
        "ldrd r0, r1, [lr, #28]",
        "sub r8, r4, r1",
        "sub r10, r6, r1",
        "sub r4, r4, r0",
        "sub r6, r6, r0",
        "mov r9, r5",
        "mov r11, r7",
        "ldrd r3, r12, [lr]",
        "ldr lr, [lr, #8]",
        "2:",
        *_walk_step(), *_walk_step(),
        "cmp r3, lr",
        "bne 2b",
        "ldr lr, [sp]",
        "str r12, [lr, #4]",
        "ldr r12, [lr, #12]",
        "sub r4, r4, r5, lsl #8",
        "sub r6, r6, r7, lsl #8",
        "sub r8, r8, r9, lsl #8",
        "sub r10, r10, r11, lsl #8",
    ]
    for c0, c1 in (("r4", "r8"), ("r5", "r9"), ("r6", "r10"), ("r7", "r11")):
        lines += ["ldm r12!, {r0-r2}", *_requant(c0), *_requant(c1)]
    lines += ["str r12, [lr, #12]",
              "bfi r4, r5, #8, #8", "bfi r4, r6, #16, #8", "bfi r4, r7, #24, #8",
              "bfi r8, r9, #8, #8", "bfi r8, r10, #16, #8", "bfi r8, r11, #24, #8"]
    if clamp:
        lines += ["ldrd r0, r1, [lr, #36]"]
        for v in ("r4", "r8"):
            lines += [f"ssub8 r2, {v}, r0", f"sel {v}, {v}, r0",
                      f"ssub8 r2, r1, {v}", f"sel {v}, {v}, r1"]
    lines += ["ldrd r0, r1, [lr, #16]",
              "ldr r2, [lr, #24]",
              "str r8, [r0, r1]",
              "str r4, [r0], #4",
              "str r0, [lr, #16]",
              "cmp r0, r2",
              "bne 1b",
              "pop {r0, r4-r11, pc}"]
    return lines


def use_convq(ctx: EmitContext, clamp: bool) -> str:
    """Emit ``edgec_convq`` (or ``edgec_convq_clamp``) once; its name."""
    name = "edgec_convq_clamp" if clamp else "edgec_convq"
    body = "".join(f'        "{ln}\\n\\t"\n' for ln in convq_asm(clamp))
    return ctx.helper(name, (
        "#ifdef EDGEC_S8_DSP\n"
        f"/* QConv2D's quads of one pixel pair (edgec/ops/int8/conv_dsp.py): control block ctl\n"
        f" * ({CTL_WORDS} words), {'with' if clamp else 'without'} the activation clamp. */\n"
        f"__attribute__((naked, noinline)) static void {name}(uint32_t *ctl "
        "__attribute__((unused)))\n"
        "{\n    __asm__(\n" + body + "    );\n}\n#endif"))
