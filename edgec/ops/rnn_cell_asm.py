"""The LSTM and GRU cell updates of one time step as assembly loops on FPU Cortex-M cores (the
GRU: :func:`gru_cell_asm`, :func:`gru_gates_asm`, :func:`gru_update_asm`; below, the LSTM).

After the gate walk (:func:`edgec.ops.rnn.matvec`) the step applies three sigmoids and two tanh
per hidden unit and updates c and h. In C each table function
(:mod:`edgec.backend.c_math`) returns its result in one fixed register, so the compiler copies
results that stay live and loads each gate twice (its bits for the interval, its value for the
polynomial). Here the gates are laid out unit by unit ([i, o, f, c] of unit j at 4j: the walk's
rows are permuted at compile time), one VLDM takes a unit's four values and two LDRDs their bits,
and the five functions alternate between two register windows, so no result is copied. Each
function is the C one's sequence on FPU cores, operation for operation: the interval k of |x|,
the sign-split row 2k + (x < 0) of 24 bytes, t = x - c, four VFMAs; |x| at or past the table's
end (and NaN) branches out of line (``.subsection 1``) to the C's constants (+-1 for tanh, 1 or 0
for the sigmoid, NaN kept). The cell: cn = f c + (i g) as one VFMA after one VMUL,
h = o tanh(cn); c (at a fixed offset after h), h and the output row y (if any) stored.
"""

from __future__ import annotations

from edgec.ops.table_asm import CELL_ASM_DEFINE, asm_block, table_function

__all__ = ["CELL_ASM_DEFINE", "gru_cell_asm", "gru_gates_asm", "gru_update_asm", "lstm_cell_asm"]

_TABS = '[tt] "r"(&edgec_tanh_tab[0][0]), [st] "r"(&edgec_sigmoid_tab[0][0])'


def lstm_cell_asm(hidden: int, gates: str, h: str, y: str | None) -> str:
    """C (one asm statement) of the cell update for ``hidden`` units: ``gates`` unit-major
    [i, o, f, c] pre-activations, ``h`` the state h followed by c (``hidden`` floats after it;
    both updated in place), ``y`` the output row (or None)."""
    # gate values s16-s19 (i, o, f, c), windows A s8-s14 and B s20-s26, i*g then cn in s15,
    # c[j] in s27
    # (two LDRDs: an LDM would fill the four by register number, and pinning them to four
    # ascending registers leaves GCC no allocation in some kernels)
    main = ["1:", "vldmia %[gp], {s16-s19}", "ldrd %[bi], %[bo], [%[gp]], #8",
            "ldrd %[bf], %[bc], [%[gp]], #8"]
    cold: list[str] = []
    first = (("tanh", "s19", "bc", 8), ("sigmoid", "s16", "bi", 20))
    for site, (kind, x, bits, w) in enumerate(first):
        m, k = table_function(kind, x, bits, w, site)
        main += m
        cold += k
    main += ["vmul.f32 s15, s25, s13", f"vldr s27, [%[hp], #{4 * hidden}]"]
    m, k = table_function("sigmoid", "s18", "bf", 8, 2)
    main += m + ["vfma.f32 s15, s13, s27"]
    cold += k
    m, k = table_function("sigmoid", "s17", "bo", 20, 3)
    main += m + ["vmov %[bc], s15"]
    cold += k
    m, k = table_function("tanh", "s15", "bc", 8, 4)
    main += m + ["vmul.f32 s14, s25, s13", f"vstr s15, [%[hp], #{4 * hidden}]",
                  "vstmia %[hp]!, {s14}"]
    cold += k
    if y is not None:
        main.append("vstmia %[yp]!, {s14}")
    main += ["subs %[n], %[n], #1", "bne.w 1b"]
    outs = ['[gp] "+&r"(gp)', '[hp] "+&r"(hp)', '[n] "+&r"(n)']
    outs += ['[yp] "+&r"(yp)'] if y is not None else []
    outs += [f'[{b}] "=&r"({b})' for b in ("bi", "bo", "bf", "bc", "a")]
    decls = [f"const float *gp = {gates};", f"float *hp = {h};"]
    decls += [f"float *yp = {y};"] if y is not None else []
    decls += [f"int n = {hidden};", *(f"uint32_t {v};" for v in ("bi", "bo", "bf", "bc", "a"))]
    return asm_block(main, cold, decls, outs, [_TABS], list(range(8, 28)))


def _update(y: bool, z: str, c: str = "s13") -> list[str]:
    """h = (1 - z) c + z h at hp (1.0 in s7), stored to h (post-increment) and y."""
    out = ["vldr s27, [%[hp]]", f"vsub.f32 s14, s7, {z}", f"vmul.f32 s14, s14, {c}",
           f"vfma.f32 s14, {z}, s27", "vstmia %[hp]!, {s14}"]
    return out + (["vstmia %[yp]!, {s14}"] if y else [])


_GRU_FREGS = [7, *range(8, 28)]


def gru_cell_asm(hidden: int, gates: str, h: str, y: str | None, gh_off: int,
                 gx_off: int) -> str:
    """The GRU update (linear_before_reset = 1) for ``hidden`` units: ``gates`` the z and r
    pre-activations unit-major ([z, r] of unit j at 2 j), gh = R_h h + Rb_h and gx = W_h x + Wb_h
    at ``gh_off`` and ``gx_off`` bytes after each unit's h; z = sigmoid, r = sigmoid,
    c = tanh(gx + r gh) (one VFMA), h = (1 - z) c + z h stored to h and y."""
    main = ["vmov.f32 s7, #1.0", "1:", "vldmia %[gp], {s16-s17}",
            "ldrd %[bz], %[br], [%[gp]], #8"]
    cold: list[str] = []
    for site, (kind, x, bits, w) in enumerate((("sigmoid", "s16", "bz", 20),
                                               ("sigmoid", "s17", "br", 8))):
        m, k = table_function(kind, x, bits, w, site)
        main += m
        cold += k
    main += [f"vldr s18, [%[hp], #{gh_off}]", f"vldr s19, [%[hp], #{gx_off}]",
             "vfma.f32 s19, s13, s18", "vmov %[bz], s19"]
    m, k = table_function("tanh", "s19", "bz", 8, 2)
    main += m + _update(y is not None, "s25") + ["subs %[n], %[n], #1", "bne.w 1b"]
    cold += k
    outs = ['[gp] "+&r"(gp)', '[hp] "+&r"(hp)', '[n] "+&r"(n)']
    outs += ['[yp] "+&r"(yp)'] if y is not None else []
    outs += [f'[{b}] "=&r"({b})' for b in ("bz", "br", "a")]
    decls = [f"const float *gp = {gates};", f"float *hp = {h};"]
    decls += [f"float *yp = {y};"] if y is not None else []
    decls += [f"int n = {hidden};", "uint32_t bz;", "uint32_t br;", "uint32_t a;"]
    return asm_block(main, cold, decls, outs, [_TABS], _GRU_FREGS)


def gru_gates_asm(hidden: int, gates: str, h: str, rh_off: int) -> str:
    """The GRU's first loop (linear_before_reset = 0): z = sigmoid in place of its
    pre-activation (``gates`` unit-major [z, r]), r h stored ``rh_off`` bytes after h."""
    main = ["1:", "vldmia %[gp], {s16-s17}", "ldrd %[bz], %[br], [%[gp]], #8"]
    m0, k0 = table_function("sigmoid", "s16", "bz", 8, 0)
    m1, k1 = table_function("sigmoid", "s17", "br", 20, 1)
    main += m0 + ["vstr s13, [%[gp], #-8]"] + m1
    main += ["vldmia %[hp]!, {s27}", "vmul.f32 s15, s25, s27", f"vstr s15, [%[hp], #{rh_off - 4}]",
             "subs %[n], %[n], #1", "bne.w 1b"]
    outs = ['[gp] "+&r"(gp)', '[hp] "+&r"(hp)', '[n] "+&r"(n)']
    outs += [f'[{b}] "=&r"({b})' for b in ("bz", "br", "a")]
    decls = [f"float *gp = {gates};", f"float *hp = {h};", f"int n = {hidden};",
             "uint32_t bz;", "uint32_t br;", "uint32_t a;"]
    return asm_block(main, k0 + k1, decls, outs, [_TABS], _GRU_FREGS)


def gru_update_asm(hidden: int, gates: str, h: str, y: str | None, gh_off: int) -> str:
    """The GRU's second loop (linear_before_reset = 0): c = tanh(gh), gh ``gh_off`` bytes after
    each unit's h, z from ``gates`` (unit-major, written by :func:`gru_gates_asm`),
    h = (1 - z) c + z h stored to h and y."""
    main = ["vmov.f32 s7, #1.0", "1:", f"ldr %[bz], [%[hp], #{gh_off}]",
            f"vldr s19, [%[hp], #{gh_off}]"]
    m, k = table_function("tanh", "s19", "bz", 8, 0)
    main += m + ["vldmia %[gp]!, {s16-s17}"] + _update(y is not None, "s16")
    main += ["subs %[n], %[n], #1", "bne.w 1b"]
    outs = ['[gp] "+&r"(gp)', '[hp] "+&r"(hp)', '[n] "+&r"(n)']
    outs += ['[yp] "+&r"(yp)'] if y is not None else []
    outs += [f'[{b}] "=&r"({b})' for b in ("bz", "a")]
    decls = [f"const float *gp = {gates};", f"float *hp = {h};"]
    decls += [f"float *yp = {y};"] if y is not None else []
    decls += [f"int n = {hidden};", "uint32_t bz;", "uint32_t a;"]
    return asm_block(main, k, decls, outs, ['[tt] "r"(&edgec_tanh_tab[0][0])'], _GRU_FREGS)
