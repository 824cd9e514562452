"""The table tanh and sigmoid (:mod:`edgec.backend.c_math`) as inline assembly that kernels
place in their own loops on FPU Cortex-M cores: the recurrent cells
(:mod:`edgec.ops.rnn_cell_asm`) and a tanh over an array (:func:`tanh_array_asm`, the dense
layers' fused activation). Each function is the C one's sequence operation for operation: the
interval k of |x|, the sign-split row 2k + (x < 0) of 24 bytes, t = x - c, four VFMAs; |x| at or
past the table's end (and NaN) branches out of line (``.subsection 1``) to the C's constants
(+-1 for tanh, 1 or 0 for the sigmoid, NaN kept). A kernel puts successive functions in
different register windows, so no result is copied."""

from __future__ import annotations

from edgec.ops.table_math import TABLE_BITS

#: the FPU Cortex-M cores where the cell runs as assembly (the table functions' condition)
CELL_ASM_DEFINE = """#if defined(__ARM_ARCH_PROFILE) && (__ARM_ARCH_PROFILE == 'M') && \\
    defined(__ARM_FP) && ((__ARM_FP) & 4) && defined(__ARM_FEATURE_FMA) && defined(__GNUC__) && \\
    !defined(EDGEC_NO_ASM)
#define EDGEC_CELL_ASM 1
#endif"""


def asm_line(line: str) -> str:
    return f'            "{line}\\n\\t"'


def table_function(kind: str, x: str, bits: str, w: int,
                   site: int) -> tuple[list[str], list[str]]:
    """(common path, out-of-line path) of ``kind`` at ``x`` (an s register) with its bits in
    ``%[bits]``: the row in s``w``..s``w + 5``, t in s``w + 6``, the result in s``w + 5``."""
    lo, hi = TABLE_BITS[kind]
    tab = "tt" if kind == "tanh" else "st"
    r, t = f"s{w + 5}", f"s{w + 6}"
    main = [
        f"bic %[a], %[{bits}], #0x80000000",
        f"cmp %[a], #0x{hi:08x}",
        f"bhs.w {10 + site}f",
        f"sub %[a], %[a], #0x{lo:08x}",
        "usat %[a], #6, %[a], asr #20",
        "lsl %[a], %[a], #1",
        f"add %[a], %[a], %[{bits}], lsr #31",
        "add %[a], %[a], %[a], lsl #1",
        f"add %[a], %[{tab}], %[a], lsl #3",
        f"vldmia %[a], {{s{w}-s{w + 5}}}",
        f"vsub.f32 {t}, {x}, s{w}",
        *(f"vfma.f32 s{w + 2 + i}, {t}, s{w + 1 + i}" for i in range(4)),
        f"{20 + site}:",
    ]
    neg = f"vnegne.f32 {r}, {r}" if kind == "tanh" else f"vsubne.f32 {r}, {r}, {r}"
    cold = [
        f"{10 + site}:",
        f"vmov.f32 {r}, #1.0",
        f"tst %[{bits}], #0x80000000",
        "it ne",
        neg,
        "cmp %[a], #0x7f800000",
        "it hi",
        f"vaddhi.f32 {r}, {x}, {x}",
        f"b.w {20 + site}b",
    ]
    return main, cold


def asm_block(main: list[str], cold: list[str], decls: list[str], outs: list[str],
               ins: list[str], fregs: list[int]) -> str:
    """One ``{ declarations; asm volatile(...) }`` block: ``main`` the loop, ``cold`` the
    out-of-line paths, ``fregs`` the s registers it writes."""
    lines = [*main, ".subsection 1", *cold, ".subsection 0"]
    asm = "\n".join(asm_line(ln) for ln in lines)
    clob = ", ".join(f'"s{i}"' for i in fregs)
    return ("{\n" + "".join(f"    {d}\n" for d in decls) + "    __asm__ volatile(\n"
            f"{asm}\n        : {', '.join(outs)}\n        : {', '.join(ins)}\n"
            f'        : {clob}, "memory", "cc");\n}}\n')




def tanh_array_asm(y: str, n: int) -> str:
    """C of y[i] = tanh(y[i]) for i < ``n`` (even: a dense layer's row blocks) in place, two
    elements a turn: one VLDM of their values, one LDRD of their bits, the two functions in two
    windows; about 17.5 instructions an element where the C loop takes about 19.6."""
    if n < 2 or n % 2:
        raise ValueError(f"tanh_array_asm takes an even count, got {n}")
    m0, k0 = table_function("tanh", "s16", "b0", 8, 0)
    m1, k1 = table_function("tanh", "s17", "b1", 18, 1)
    main = ["1:", "vldmia %[p], {s16-s17}", "ldrd %[b0], %[b1], [%[p]]", *m0, *m1,
            "vstr s13, [%[p]]", "vstr s23, [%[p], #4]", "add %[p], %[p], #8",
            "subs %[c], %[c], #1", "bne.w 1b"]
    outs = ['[p] "+&r"(p)', '[c] "+&r"(c)', '[b0] "=&r"(b0)', '[b1] "=&r"(b1)', '[a] "=&r"(a)']
    decls = [f"float *p = {y};", f"int c = {n // 2};", "uint32_t b0;", "uint32_t b1;",
             "uint32_t a;"]
    return asm_block(main, k0 + k1, decls, outs, ['[tt] "r"(&edgec_tanh_tab[0][0])'],
                     list(range(8, 25)))
