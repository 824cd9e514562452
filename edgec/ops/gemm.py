"""Gemm and MatMul.

With a constant right-hand side the kernel is a dense layer (:func:`dense_layer`): the weights are
re-laid out at compile time (alpha folded in, four rows interleaved) so the inner loop walks one
contiguous table, four output rows share each input load, and bias and activation are fused.
A run-time right-hand side gets a batched (broadcasting) matrix product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import (
    EmitContext,
    Op,
    broadcast_shape,
    c_float,
    prod,
    register,
    require_finite,
    unsupported,
)
from edgec.ops.loops import broadcast_loop
from edgec.ops.table_asm import CELL_ASM_DEFINE, tanh_array_asm

_DOT4_FMAS = "\n".join(
    f'            "vfma.f32 s{24 + r}, s{8 + 4 * i + r}, s{i}\\n\\t"'
    for i in range(4)
    for r in range(4)
)

#: the condition of the Cortex-M assembly walks (one FPU with FMA; not with -DEDGEC_NO_ASM)
DOT4_ASM_DEFINE = (
    "#if defined(__ARM_ARCH_PROFILE) && (__ARM_ARCH_PROFILE == 'M') && defined(__ARM_FP) && \\\n"
    "    ((__ARM_FP) & 4) && defined(__ARM_FEATURE_FMA) && !defined(EDGEC_NO_ASM)\n"
    "#define EDGEC_DOT4_ASM 1\n"
    "#endif"
)

#: x86-64 hosts with AVX2 and FMA (the host library is built with -mavx2 -mfma where the CPU has
#: them, edgec/backend/host.py; the generated file then defines ``EDGEC_AVX2`` and includes
#: immintrin.h at its top, edgec/templates/model.c.j2; -DEDGEC_NO_AVX2 keeps the plain C): the
#: interleaved dense walk as 8-wide FMAs, four blocks of four rows at a time. Lanes 0-3 take the
#: even k and lanes 4-7 the odd k of a block, in two chains each, added once per block at the
#: end: the sums are reassociated and fused (within the float tolerances, not bit-equal to the
#: plain C). Compiled out everywhere else (Cortex-M builds included).
AVX2_MV4_HELPER = """#ifdef EDGEC_AVX2
/* out[4 * b + r] = init[4 * b + r] (0 with init NULL) + sum_i w[(b * k + i) * 4 + r] * x[i],
 * b < blocks (AVX2+FMA; init and out may be the same array). */
static void edgec_avx2_mv4(const float *x, const float *w, int k, const float *init,
                           float *out, int blocks)
{
    const __m256i lo2 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m256i hi2 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    const int k4 = k & ~3;
    int b = 0;
    for (; b + 4 <= blocks; b += 4) {
        const float *w0 = &w[(size_t)b * (size_t)k * 4u];
        const float *w1 = &w0[(size_t)k * 4u];
        const float *w2 = &w1[(size_t)k * 4u];
        const float *w3 = &w2[(size_t)k * 4u];
        __m256 a0 = _mm256_setzero_ps();
        __m256 a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps();
        __m256 a3 = _mm256_setzero_ps();
        __m256 c0 = _mm256_setzero_ps();
        __m256 c1 = _mm256_setzero_ps();
        __m256 c2 = _mm256_setzero_ps();
        __m256 c3 = _mm256_setzero_ps();
        __m128 s[4];
        int i;
        for (i = 0; i < k4; i += 4) {
            const __m128 q = _mm_loadu_ps(&x[i]);
            const __m256 xq = _mm256_insertf128_ps(_mm256_castps128_ps256(q), q, 1);
            const __m256 x01 = _mm256_permutevar_ps(xq, lo2);
            const __m256 x23 = _mm256_permutevar_ps(xq, hi2);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(&w0[4 * i]), x01, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(&w1[4 * i]), x01, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(&w2[4 * i]), x01, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(&w3[4 * i]), x01, a3);
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(&w0[(4 * i) + 8]), x23, c0);
            c1 = _mm256_fmadd_ps(_mm256_loadu_ps(&w1[(4 * i) + 8]), x23, c1);
            c2 = _mm256_fmadd_ps(_mm256_loadu_ps(&w2[(4 * i) + 8]), x23, c2);
            c3 = _mm256_fmadd_ps(_mm256_loadu_ps(&w3[(4 * i) + 8]), x23, c3);
        }
        a0 = _mm256_add_ps(a0, c0);
        a1 = _mm256_add_ps(a1, c1);
        a2 = _mm256_add_ps(a2, c2);
        a3 = _mm256_add_ps(a3, c3);
        s[0] = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
        s[1] = _mm_add_ps(_mm256_castps256_ps128(a1), _mm256_extractf128_ps(a1, 1));
        s[2] = _mm_add_ps(_mm256_castps256_ps128(a2), _mm256_extractf128_ps(a2, 1));
        s[3] = _mm_add_ps(_mm256_castps256_ps128(a3), _mm256_extractf128_ps(a3, 1));
        for (; i < k; ++i) {
            const __m128 xv = _mm_set1_ps(x[i]);
            s[0] = _mm_fmadd_ps(_mm_loadu_ps(&w0[4 * i]), xv, s[0]);
            s[1] = _mm_fmadd_ps(_mm_loadu_ps(&w1[4 * i]), xv, s[1]);
            s[2] = _mm_fmadd_ps(_mm_loadu_ps(&w2[4 * i]), xv, s[2]);
            s[3] = _mm_fmadd_ps(_mm_loadu_ps(&w3[4 * i]), xv, s[3]);
        }
        for (int j = 0; j < 4; ++j) {
            if (init != NULL) {
                s[j] = _mm_add_ps(s[j], _mm_loadu_ps(&init[4 * (b + j)]));
            }
            _mm_storeu_ps(&out[4 * (b + j)], s[j]);
        }
    }
    for (; b < blocks; ++b) {
        const float *w0 = &w[(size_t)b * (size_t)k * 4u];
        __m256 a0 = _mm256_setzero_ps();
        __m256 c0 = _mm256_setzero_ps();
        __m128 s0;
        int i;
        for (i = 0; i < k4; i += 4) {
            const __m128 q = _mm_loadu_ps(&x[i]);
            const __m256 xq = _mm256_insertf128_ps(_mm256_castps128_ps256(q), q, 1);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(&w0[4 * i]), _mm256_permutevar_ps(xq, lo2), a0);
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(&w0[(4 * i) + 8]), _mm256_permutevar_ps(xq, hi2),
                                 c0);
        }
        a0 = _mm256_add_ps(a0, c0);
        s0 = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
        for (; i < k; ++i) {
            s0 = _mm_fmadd_ps(_mm_loadu_ps(&w0[4 * i]), _mm_set1_ps(x[i]), s0);
        }
        /* size_t: gcc's loop analysis otherwise warns that 4 * b could overflow */
        const size_t o = (size_t)b * 4u;
        if (init != NULL) {
            s0 = _mm_add_ps(s0, _mm_loadu_ps(&init[o]));
        }
        _mm_storeu_ps(&out[o], s0);
    }
}
#endif"""


#: acc[r] += sum_i w[4 i + r] * x[i], r = 0..3: four output rows share every input load. On
#: Cortex-M cores with a single-precision FMA unit (M4F, M7, M33) the main loop is a short
#: assembly block (VLDM 4 inputs + 16 weights, 16 VFMA: 1.25 instructions per MAC); elsewhere,
#: and with -DEDGEC_NO_ASM, the same loop in C.
DOT4_HELPER = (
    DOT4_ASM_DEFINE
    + """

/* acc[r] += sum_i w[4 * i + r] * x[i] for r = 0..3 (weights of four rows interleaved). */
static void edgec_dot4(const float *restrict x, const float *restrict w, int k,
                       float *restrict acc)
{
    const float *xp = x;
    const float *wp = w;
    int rest = k;
#ifdef EDGEC_DOT4_ASM
    int blocks = k / 4;
    if (blocks > 0) {
        __asm__ volatile(
            "vldmia %[acc], {s24-s27}\\n\\t"
            "1:\\n\\t"
            "vldmia %[x]!, {s0-s3}\\n\\t"
            "vldmia %[w]!, {s8-s23}\\n\\t"
"""
    + _DOT4_FMAS
    + """
            "subs %[b], %[b], #1\\n\\t"
            "bne 1b\\n\\t"
            "vstmia %[acc], {s24-s27}\\n\\t"
            : [x] "+&r"(xp), [w] "+&r"(wp), [b] "+&r"(blocks)
            : [acc] "r"(acc)
            : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15",
              "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26",
              "s27", "memory", "cc");
    }
    rest = k % 4;
#endif
    if (rest > 0) {
        float a0 = acc[0];
        float a1 = acc[1];
        float a2 = acc[2];
        float a3 = acc[3];
        for (int i = 0; i < rest; ++i) {
            const float xv = xp[i];
            a0 += wp[0] * xv;
            a1 += wp[1] * xv;
            a2 += wp[2] * xv;
            a3 += wp[3] * xv;
            wp = &wp[4];
        }
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = a2;
        acc[3] = a3;
    }
}"""
)


def dense_layer(
    ctx: EmitContext,
    x: str,
    w_nk: np.ndarray,
    bias: str | None,
    y: str,
    m: int,
    x_row_stride: int = -1,
    base: str = "w",
) -> str:
    """C for y[m][n] = act(bias[n] + sum_k x[m][k] * W[n][k]) with constant W ([N, K]).

    Rows come in blocks of four whose weights are interleaved at compile time (W[n..n+3][k]
    adjacent) so the inner loop walks one contiguous table and loads each input once per four
    outputs; the last N % 4 rows use a plain row-major table. Bias and activation are fused.
    """
    n, k = (int(d) for d in w_nk.shape)
    xs = k if x_row_stride < 0 else x_row_stride
    w32 = np.asarray(w_nk, np.float32)
    nb = n - n % 4
    lines = [
        f"for (int m = 0; m < {m}; ++m) {{",
        f"    const float *xr = {x} + m * {xs};",
        f"    float *yr = {y} + m * {n};",
    ]
    act_loop = f"    for (int n = 0; n < {nb}; ++n) yr[n] = {ctx.act('yr[n]')};"
    if nb:  # every block in one call (AVX2: edgec_avx2_mv4, else mv4_helper), then the activation
        blocks = w32[:nb].reshape(nb // 4, 4, k).transpose(0, 2, 1)  # [block][k][row]
        wsym = ctx.const_array(f"{ctx.node.name}_{base}4", np.ascontiguousarray(blocks))
        avx2 = ctx.helper("edgec_avx2_mv4", AVX2_MV4_HELPER)
        ctx.helper("EDGEC_DOT4_ASM", DOT4_ASM_DEFINE)
        mv4 = ctx.helper(*mv4_helper(k))
        b = bias or ctx.const_array(f"{ctx.node.name}_{base}_zero", np.zeros(nb, np.float32),
                                    param=False)
        unused = f" (void){b};" if not bias else ""
        lines += ["#ifdef EDGEC_AVX2", f"    (void){mv4};{unused} /* the plain path's */",
                  f"    {avx2}(xr, {wsym}, {k}, {bias or 'NULL'}, yr, {nb // 4});", "#else",
                  f"    {mv4}(xr, {wsym}, {k}, {b}, yr, {nb // 4});", "#endif"]
        if ctx.act("v") == "tanhf(v)":  # FPU Cortex-M: the table tanh over the row in assembly
            ctx.helper("EDGEC_CELL_ASM", CELL_ASM_DEFINE)
            lines += ["#ifdef EDGEC_CELL_ASM", tanh_array_asm("yr", nb).rstrip("\n"),
                      "#else", act_loop, "#endif"]
        elif ctx.act("v") != "v":
            lines.append(act_loop)
    if n % 4:  # the last rows interleaved by their count, one walk (_dot_multi_helper)
        tail = n % 4
        tsym = ctx.const_array(f"{ctx.node.name}_{base}{tail}",
                               np.ascontiguousarray(w32[nb:].T))
        ctx.helper("EDGEC_DOT4_ASM", DOT4_ASM_DEFINE)
        fn = ctx.helper(*_dot_multi_helper(tail, 1))
        start = f"{bias} + {nb}" if bias else ctx.const_array(
            f"{ctx.node.name}_zero{tail}", np.zeros(tail, np.float32), param=False)
        lines += [
            "    {",
            f"        float acc[{tail}];",
            f"        {fn}(xr, {tsym}, {k}, {start}, acc);",
        ]
        lines += [f"        yr[{nb + j}] = {ctx.act(f'acc[{j}]')};" for j in range(tail)]
        lines += ["    }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _gemm_parts(node: Node, g: Graph) -> tuple[int, int, int, bool, bool]:
    a_shape, b_shape = g.shape(node.inputs[0]), g.shape(node.inputs[1])
    ta, tb = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    require_finite(node, g, (1, 2))
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise unsupported(node, f"Gemm needs 2-D inputs, got {a_shape} and {b_shape}")
    m, k = (a_shape[1], a_shape[0]) if ta else a_shape
    n = b_shape[0] if tb else b_shape[1]
    k_b = b_shape[1] if tb else b_shape[0]
    if k != k_b:
        raise unsupported(
            node, f"Gemm inner dimensions differ: A {a_shape} (transA={int(ta)}) and B {b_shape} "
            f"(transB={int(tb)})"
        )
    if len(node.inputs) > 2 and node.inputs[2]:
        c_shape = g.shape(node.inputs[2])
        c = (1,) * (2 - len(c_shape)) + tuple(c_shape)
        if len(c_shape) > 2 or c[0] not in (1, m) or c[1] not in (1, n):
            raise unsupported(
                node, f"bias C of shape {c_shape} does not broadcast to the output ({m}, {n})"
            )
    return int(m), int(k), int(n), ta, tb


@register
class Gemm(Op):
    types = ("Gemm",)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        m, _, n, _, _ = _gemm_parts(node, g)
        return [((m, n), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        if node.attr("transA", 0):
            a = a.T
        if node.attr("transB", 0):
            b = b.T
        y = np.float32(node.attr("alpha", 1.0)) * (a.astype(np.float32) @ b.astype(np.float32))
        c = inputs[2] if len(inputs) > 2 else None
        if c is not None:
            y = y + np.float32(node.attr("beta", 1.0)) * c
        return [y.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        m, k, n, _, _ = _gemm_parts(node, g)
        return m * k * n

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        m, k, n, ta, tb = _gemm_parts(node, g)
        alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
        b_const = g.const(node.inputs[1])
        c_name = node.inputs[2] if len(node.inputs) > 2 else ""
        c_const = g.const(c_name)
        bias_vec: np.ndarray | None = None  # beta * C as a per-column vector, when it is one
        if c_name and c_const is not None:
            c_shape = g.shape(c_name)
            if prod(c_shape) == n and (len(c_shape) < 2 or c_shape[0] == 1):
                bias_vec = np.float32(beta) * c_const.reshape(-1)
            elif prod(c_shape) == 1:
                bias_vec = np.full(n, np.float32(beta) * c_const.reshape(-1)[0], np.float32)
        if b_const is not None and not ta and (not c_name or bias_vec is not None):
            w = b_const if tb else b_const.T
            w = (np.float32(alpha) * w.astype(np.float32)).astype(np.float32)
            bias = None
            if bias_vec is not None:  # emitted only on this (dense) path
                bias = ctx.const_array(f"{node.name}_bias", bias_vec.astype(np.float32))
            return dense_layer(ctx, ctx.inp(0), w, bias, ctx.out(0), m)
        # general path: run-time B, transA, or a full C matrix
        a_idx = f"kk * {m} + i" if ta else f"i * {k} + kk"
        b_idx = f"j * {k} + kk" if tb else f"kk * {n} + j"
        lines = [
            f"for (int i = 0; i < {m}; ++i) {{",
            f"    for (int j = 0; j < {n}; ++j) {{",
            "        float acc = 0.0f;",
            f"        for (int kk = 0; kk < {k}; ++kk) "
            f"acc += {ctx.inp(0)}[{a_idx}] * {ctx.inp(1)}[{b_idx}];",
        ]
        expr = "acc" if alpha == 1.0 else f"{c_float(alpha)} * acc"
        if c_name:
            cy = broadcast_cidx(g.shape(c_name), (m, n))
            expr = (
                f"{expr} + {c_float(beta)} * {ctx.inp(2)}[{cy}]"
                if beta != 1.0
                else (f"{expr} + {ctx.inp(2)}[{cy}]")
            )
        lines += [
            f"        const float r = {expr};",
            f"        {ctx.out(0)}[i * {n} + j] = {ctx.act('r')};",
            "    }",
            "}",
        ]
        return "\n".join(lines) + "\n"


def broadcast_cidx(c_shape: Shape, out: tuple[int, int]) -> str:
    c = (1,) * (2 - len(c_shape)) + tuple(c_shape)
    parts = []
    if c[0] != 1:
        parts.append(f"i * {c[1]}")
    if c[1] != 1:
        parts.append("j")
    return " + ".join(parts) if parts else "0"


def _matmul_shapes(a: Shape, b: Shape) -> tuple[Shape, Shape, Shape, int, int, int]:
    """(batch_a, batch_b, out_shape, M, K, N) for numpy matmul semantics."""
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    m, k = a2[-2], a2[-1]
    n = b2[-1]
    batch = broadcast_shape(a2[:-2], b2[:-2])
    out = batch + ((m,) if len(a) > 1 else ()) + ((n,) if len(b) > 1 else ())
    return a2[:-2], b2[:-2], out, int(m), int(k), int(n)


@register
class MatMul(Op):
    types = ("MatMul",)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        a, b = g.shape(node.inputs[0]), g.shape(node.inputs[1])
        require_finite(node, g, (1,))
        if a[-1] != (b[0] if len(b) == 1 else b[-2]):
            raise unsupported(node, f"MatMul shapes {a} and {b} do not match")
        return [(_matmul_shapes(a, b)[2], "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        return [np.matmul(a, b).astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        ba, bb, out, m, k, n = _matmul_shapes(g.shape(node.inputs[0]), g.shape(node.inputs[1]))
        return prod(broadcast_shape(ba, bb)) * m * k * n

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        a_shape, b_shape = g.shape(node.inputs[0]), g.shape(node.inputs[1])
        ba, bb, _, m, k, n = _matmul_shapes(a_shape, b_shape)
        b_const = g.const(node.inputs[1])
        if b_const is not None and len(b_shape) <= 2:
            w = b_const.reshape(k, n).T.astype(np.float32)
            rows = prod(a_shape[:-1]) if len(a_shape) > 1 else 1
            return dense_layer(ctx, ctx.inp(0), w, None, ctx.out(0), rows)
        batch = broadcast_shape(ba, bb)
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)

        def body(ix: list[str], iy: str) -> str:
            return (
                f"const float *ap = {a} + ({ix[0]}) * {m * k};\n"
                f"const float *bp = {b} + ({ix[1]}) * {k * n};\n"
                f"float *yp = {y} + ({iy}) * {m * n};\n"
                f"for (int i = 0; i < {m}; ++i) {{\n"
                f"    for (int j = 0; j < {n}; ++j) {{\n"
                f"        float acc = 0.0f;\n"
                f"        for (int kk = 0; kk < {k}; ++kk)\n"
                f"            acc += ap[i * {k} + kk] * bp[kk * {n} + j];\n"
                f"        yp[i * {n} + j] = {ctx.act('acc')};\n"
                f"    }}\n"
                f"}}\n"
            )

        return broadcast_loop(batch, [ba, bb], body)


# -- forward-mode tangents of a dense layer in the same weight walk ---------------------------
def _dot_multi_helper(rows: int, v: int) -> tuple[str, str]:
    """(name, C) of ``edgec_dot<rows>x<v>``: acc[rows j + r] = init_j[r] + sum_i w[rows i + r]
    x_j[i] for v input vectors x_0..x_{v-1} (v <= 3) and ``rows`` (<= 4) interleaved weight rows
    (init_0 = ``init``, the others 0; ``acc`` is written only), each weight load shared by the
    v vectors. Every accumulator adds its products in the order of
    k, as edgec_dot4 does, so a vector's result is the one a separate dense kernel gives. On
    FPU Cortex-M cores (as edgec_dot4) the main loop is assembly: per four k, VLDM 4 rows
    weights, per vector VLDM 4 inputs and 4 rows VFMA (1.125 instructions per MAC for four rows
    and three vectors)."""
    name = f"edgec_dot{rows}x{v}"
    nacc = rows * v

    def regs(a: int, b: int) -> str:
        return f"s{a}" if a == b else f"s{a}-s{b}"

    xs = ", ".join(f"const float *restrict x{j}" for j in range(v))
    fmas = []
    for j in range(v):
        fmas.append(f'            "vldmia %[x{j}]!, {{s0-s3}}\\n\\t"')
        fmas += [f'            "vfma.f32 s{4 + rows * j + r}, s{16 + rows * i + r}, s{i}\\n\\t"'
                 for i in range(4) for r in range(rows)]
    outs = ", ".join(f'[x{j}] "+&r"(xp{j})' for j in range(v))
    clob = ", ".join(f'"s{i}"' for i in [*range(4 + nacc), *range(16, 16 + 4 * rows)])
    accs = [f"a{j}{r}" for j in range(v) for r in range(rows)]
    start = [f"        float a0{r} = (started != 0) ? acc[{r}] : init[{r}];" for r in range(rows)]
    start += [f"        float a{j}{r} = (started != 0) ? acc[{rows * j + r}] : 0.0f;"
              for j in range(1, v) for r in range(rows)]
    tail = [f"            const float xv{j} = xp{j}[i];" for j in range(v)]
    tail += [f"            a{j}{r} += wp[{r}] * xv{j};" for j in range(v) for r in range(rows)]
    zero_load = (f'            "vldmia %[z], {{{regs(4 + rows, 3 + nacc)}}}\\n\\t"\n'
                 if v > 1 else "")
    zeros = ("    static const float zeros[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};\n"
             if v > 1 else "")
    code = (
        f"/* acc[{rows} * j + r] = init_j[r] + sum_i w[{rows} * i + r] * x_j[i], j < {v},\n"
        f" * r < {rows} (init_0 = init, the others 0): the input vectors share each weight load\n"
        f" * (a layer and its tangents in one walk). */\n"
        f"static void {name}({xs}, const float *restrict w, int k,\n"
        f"                        const float *restrict init, float *restrict acc)\n{{\n"
        + "".join(f"    const float *xp{j} = x{j};\n" for j in range(v))
        + "    const float *wp = w;\n    int rest = k;\n    int started = 0;\n"
        "#ifdef EDGEC_DOT4_ASM\n"
        + zeros
        + "    int blocks = k / 4;\n"
        "    if (blocks > 0) {\n"
        "        __asm__ volatile(\n"
        f'            "vldmia %[i0], {{{regs(4, 3 + rows)}}}\\n\\t"\n'
        + zero_load
        + '            "1:\\n\\t"\n'
        f'            "vldmia %[w]!, {{s16-s{15 + 4 * rows}}}\\n\\t"\n'
        + "\n".join(fmas) + "\n"
        '            "subs %[b], %[b], #1\\n\\t"\n'
        '            "bne 1b\\n\\t"\n'
        f'            "vstmia %[acc], {{{regs(4, 3 + nacc)}}}\\n\\t"\n'
        f'            : {outs}, [w] "+&r"(wp), [b] "+&r"(blocks)\n'
        '            : [acc] "r"(acc), [i0] "r"(init)'
        + (', [z] "r"(zeros)' if v > 1 else "") + "\n"
        f'            : {clob}, "memory", "cc");\n'
        "        started = 1;\n"
        "    }\n"
        "    rest = k % 4;\n"
        "#endif\n"
        "    if ((rest > 0) || (started == 0)) {\n"
        + "\n".join(start) + "\n"
        + "        for (int i = 0; i < rest; ++i) {\n"
        + "\n".join(tail) + "\n"
        f"            wp = &wp[{rows}];\n"
        "        }\n"
        + "".join(f"        acc[{n}] = {a};\n" for n, a in enumerate(accs))
        + "    }\n}"
    )
    return name, code


def jvp_dense_layer(
    ctx: EmitContext,
    x: str,
    dx: str,
    p: int,
    w_nk: np.ndarray,
    bias: str | None,
    y: str,
    dy: str,
    deriv: Callable[[str], str] | None,
    pre: str | None = None,
) -> str:
    """C for one row y = act(bias + W x) and its p tangents dy[j] = act'(y) * (W dx[j]) with
    constant W ([N, K]), the layer and its tangents from one walk over the weights: vectors
    [x, dx[0], ...] in groups of up to three per walk (:func:`_dot_multi_helper`). Rows in
    blocks of four (weights interleaved as in :func:`dense_layer`), the last N % 4 rows as one
    block of their own (interleaved by N % 4). ``deriv``: C of act' for a C expression of y
    (None: no activation, dy = W dx). ``pre``: a constant table [p, N] of the tangents before
    the activation (W dx for a constant dx, folded at compile time): then only x is walked."""
    n, k = (int(d) for d in w_nk.shape)
    full, tail = n - n % 4, n % 4
    w32 = np.asarray(w_nk, np.float32)
    parts = [w32[:full].reshape(full // 4, 4, k).transpose(0, 2, 1).reshape(-1)]  # [blk][k][r]
    parts.append(w32[full:].T.reshape(-1))  # the tail rows: [k][row]
    wsym = ctx.const_array(f"{ctx.node.name}_w4", np.ascontiguousarray(np.concatenate(parts)))
    ctx.helper("EDGEC_DOT4_ASM", DOT4_ASM_DEFINE)
    vecs = [x] + ([] if pre is not None else [f"{dx} + {j * k}" for j in range(p)])
    nv = len(vecs)

    def block(rows: int) -> list[str]:
        calls = []
        zero = None
        for s0 in range(0, nv, 3):
            group = vecs[s0 : s0 + 3]
            fn, code = _dot_multi_helper(rows, len(group))
            ctx.helper(fn, code)
            if s0 == 0 and bias:
                start = f"{bias} + n"
            else:
                zero = zero or ctx.const_array(f"{ctx.node.name}_zero", np.zeros(4, np.float32),
                                               param=False)
                start = zero
            calls.append(f"{fn}({', '.join(group)}, {wsym} + n * {k}, {k}, {start}, "
                         f"&acc[{rows * s0}]);")
        out = [f"float acc[{rows * nv}];", *calls]
        for r in range(rows):
            out.append(f"const float h{r} = {ctx.act(f'acc[{r}]')};")
            out.append(f"{y}[n + {r}] = h{r};")
            if deriv is not None:
                out.append(f"const float g{r} = {deriv(f'h{r}')};")
            for j in range(p):
                at = f"{j * n} + n + {r}" if j else f"n + {r}"
                s = f"{pre}[{at}]" if pre is not None else f"acc[{rows * (j + 1) + r}]"
                out.append(f"{dy}[{at}] = " + (f"{s} * g{r};" if deriv is not None else f"{s};"))
        return out

    lines = ["{"]
    if full:
        lines.append(f"    for (int n = 0; n < {full}; n += 4) {{")
        lines += [f"        {ln}" for ln in block(4)]
        lines.append("    }")
    if tail:
        lines.append("    {")
        lines.append(f"        const int n = {full};")
        lines += [f"        {ln}" for ln in block(tail)]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


@register
class GemmJvp(Op):
    """A dense layer and its forward-mode tangents in one kernel (made by
    ``passes.jacobian.fuse_tangent_gemms``): inputs ``x`` [1, K], ``B``, ``C`` (or ""), ``dx``
    [p, K] as a Gemm's (attrs transB, alpha, beta; optional fused ``_act``); outputs
    ``y = act(alpha x B' + beta C)`` [1, N] and ``dy = act'(y) * (alpha dx B')`` [p, N]
    (``act'`` from the output, ``DERIV_FROM_OUTPUT``). With ``_pre_tangent`` = 1 input 3 is
    instead the constant ``alpha dx B'`` [p, N] itself (a first layer, whose dx is the seed).
    Not an ONNX op."""

    types = ("GemmJvp",)
    fusable = True

    @staticmethod
    def _parts(node: Node, g: Graph) -> tuple[int, int, int]:
        k = g.shape(node.inputs[0])[1]
        b_shape = g.shape(node.inputs[1])
        n = b_shape[0] if node.attr("transB", 0) else b_shape[1]
        return int(g.shape(node.inputs[3])[0]), int(k), int(n)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        p, _, n = self._parts(node, g)
        return [((1, n), "float32"), ((p, n), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        from edgec.ops.unary import DERIV_FROM_OUTPUT, act_ref

        x, b, c, dx = inputs
        assert x is not None and b is not None and dx is not None
        w = (b.T if node.attr("transB", 0) else b).astype(np.float32)
        alpha = np.float32(node.attr("alpha", 1.0))
        pre = alpha * (x.astype(np.float32) @ w)
        if c is not None:
            pre = pre + np.float32(node.attr("beta", 1.0)) * c
        if node.attrs.get("_pre_tangent"):
            s = dx.astype(np.float32)
        else:
            s = (alpha * (dx.astype(np.float32) @ w)).astype(np.float32)
        act = node.attrs.get("_act")
        if act is not None:  # the interpreter applies _act to output 0 (pre) itself
            yv = act_ref(act[0], act[1], pre.astype(np.float32))
            s = (DERIV_FROM_OUTPUT[act[0]].ref(yv, dict(act[1])) * s).astype(np.float32)
        return [pre.astype(np.float32), s]

    def macs(self, node: Node, g: Graph) -> int:
        p, k, n = self._parts(node, g)
        return (1 if node.attrs.get("_pre_tangent") else 1 + p) * k * n

    def emit(self, node: Node, ctx: EmitContext) -> str:
        from edgec.ops.unary import DERIV_FROM_OUTPUT

        g = ctx.g
        p, _, n = self._parts(node, g)
        b = g.const(node.inputs[1])
        assert b is not None
        w = b if node.attr("transB", 0) else b.T
        w = (np.float32(node.attr("alpha", 1.0)) * w.astype(np.float32)).astype(np.float32)
        bias = None
        c = g.const(node.inputs[2]) if node.inputs[2] else None
        if c is not None:
            vec = np.broadcast_to(np.float32(node.attr("beta", 1.0)) * c.reshape(-1), (n,))
            bias = ctx.const_array(f"{node.name}_bias", np.ascontiguousarray(vec, np.float32))
        act = node.attrs.get("_act")
        deriv: Callable[[str], str] | None = None
        if act is not None:
            spec, params = DERIV_FROM_OUTPUT[act[0]], dict(act[1])

            def act_grad(v: str) -> str:
                return spec.c(v, params)

            deriv = act_grad

        pre = ctx.inp(3) if node.attrs.get("_pre_tangent") else None
        return jvp_dense_layer(ctx, ctx.inp(0), ctx.inp(3), p, w, bias, ctx.out(0),
                               ctx.out(1), deriv, pre)


def _fmas(acc0: int, r: int) -> list[str]:
    """VFMAs of one four-row block over ``r`` k: weights s8.., inputs s0.., accumulators from
    s``acc0`` (k ascending per row, as the C loop adds)."""
    return [f'            "vfma.f32 s{acc0 + j}, s{8 + 4 * i + j}, s{i}\\n\\t"'
            for i in range(r) for j in range(4)]


def _walk(r: int, ptrs: tuple[str, ...]) -> list[str]:
    """``r`` k (1..4) of one or two four-row blocks: inputs, then per block its weights and
    VFMAs (block 0's accumulators s24-s27, block 1's s28-s31)."""
    xs = f"s0-s{r - 1}" if r > 1 else "s0"
    lines = [f'            "vldmia %[xp]!, {{{xs}}}\\n\\t"']
    for b, p in enumerate(ptrs):
        lines.append(f'            "vldmia %[{p}]!, {{s8-s{8 + 4 * r - 1}}}\\n\\t"')
        lines += _fmas(24 + 4 * b, r)
    return lines


#: the largest k whose walk is unrolled whole (a helper per k: no loop counters; about 35
#: instructions of code per four k)
MV4_UNROLL_K = 32


def mv4_helper(k: int) -> tuple[str, str]:
    """(name, C) of the float matrix-vector walk for ``k`` inputs: ``edgec_mv4_k<k>`` for
    k <= :data:`MV4_UNROLL_K` (the walk unrolled whole), else ``edgec_mv4`` (k % 4 == 0) or
    ``edgec_mv4_t<k % 4>`` (a loop over eight k a turn).

    out[4 b + r] = bias[4 b + r] + sum_i w[b][i][r] * x[i] for ``blocks`` blocks of four rows
    (weights interleaved per block, blocks contiguous: the layout of edgec_dot4 and the AVX2
    kernel): a whole matrix-vector product in one call. On FPU Cortex-M cores the walk is
    assembly and takes two blocks (eight rows) a pass: per four k one VLDM of the inputs, per
    block one VLDM of its 16 weights and 16 VFMAs (35 instructions per 32 MACs), the loop
    unrolled to eight k a turn, the ``tail`` last k in the same pass (no zero columns); an odd
    last block walks alone. Each row adds its products in the order of k, as the C loop does,
    so the two give the same bits where the C is compiled with fused multiply-adds.
    """
    tail = k % 4
    whole = k <= MV4_UNROLL_K
    name = (f"edgec_mv4_k{k}" if whole else "edgec_mv4" if tail == 0
            else f"edgec_mv4_t{tail}")

    def body(ptrs: tuple[str, ...]) -> list[str]:
        quad = _walk(4, ptrs)
        if whole:
            lines = [ln for _ in range(k // 4) for ln in quad]
            return lines + (_walk(tail, ptrs) if tail else [])
        lines = ['            "movs %[c], %[k8]\\n\\t"', '            "beq 3f\\n\\t"',
                 '            "2:\\n\\t"', *quad, *quad,
                 '            "subs %[c], %[c], #1\\n\\t"', '            "bne 2b\\n\\t"',
                 '            "3:\\n\\t"',
                 '            "lsls %[c], %[k4], #31\\n\\t"',  # N: an odd four-k step left
                 '            "bpl 4f\\n\\t"', *quad, '            "4:\\n\\t"']
        if tail:
            lines += _walk(tail, ptrs)
        return lines

    accs8 = ", ".join(f'"s{i}"' for i in range(24, 32))
    clob = ", ".join(f'"s{i}"' for i in [*range(4), *range(8, 24)])
    pair = "\n".join([
        '            "1:\\n\\t"',
        '            "vldmia %[bp]!, {s24-s31}\\n\\t"',
        '            "mov %[xp], %[x]\\n\\t"',
        '            "add %[wb], %[wa], %[kb]\\n\\t"' if not whole
        else f'            "add %[wb], %[wa], #{16 * k}\\n\\t"',
        *body(("wa", "wb")),
        '            "vstmia %[op]!, {s24-s31}\\n\\t"',
        '            "mov %[wa], %[wb]\\n\\t"',
        '            "subs %[n], %[n], #1\\n\\t"',
        '            "bne 1b\\n\\t"',
    ])
    single = "\n".join([
        '            "vldmia %[bp]!, {s24-s27}\\n\\t"',
        '            "mov %[xp], %[x]\\n\\t"',
        *body(("wa",)),
        '            "vstmia %[op]!, {s24-s27}\\n\\t"',
    ])
    counts = ('\n                : [x] "r"(x)' if whole else ', [c] "=&r"(c)\n'
              '                : [x] "r"(x), [k8] "r"(k / 8), [k4] "r"(k / 4)')
    counts_pair = counts + ("" if whole else ', [kb] "r"(k * 16)')
    c_decl = "" if whole else "\n        int c;"
    cond = f"k == {k}" if whole else f"((k % 4) == {tail}) && (k > {MV4_UNROLL_K})"
    code = f"""/* out[4 * b + r] = bias[4 * b + r] + sum_i w[(b * k + i) * 4 + r] * x[i], b < blocks
 * (edgec/ops/gemm.py, mv4_helper: the assembly walk takes {cond}). */
static void {name}(const float *restrict x, const float *restrict w, int k,
                      const float *restrict bias, float *restrict out, int blocks)
{{
    int done = 0;
#ifdef EDGEC_DOT4_ASM
    if (({cond}) && (blocks > 0)) {{
        const float *wa = w;
        const float *wb;
        const float *bp = bias;
        float *op = out;
        const float *xp;
        int n = blocks / 2;{c_decl}
        if (n > 0) {{
            __asm__ volatile(
{pair}
                /* early clobber: x and the counts are read on every pass, after others move */
                : [wa] "+&r"(wa), [wb] "=&r"(wb), [bp] "+&r"(bp), [op] "+&r"(op),
                  [n] "+&r"(n), [xp] "=&r"(xp){counts_pair}
                : {clob},
                  {accs8}, "memory", "cc");
        }}
        if ((blocks % 2) != 0) {{
            __asm__ volatile(
{single}
                : [wa] "+&r"(wa), [bp] "+&r"(bp), [op] "+&r"(op), [xp] "=&r"(xp){counts}
                : {clob},
                  "s24", "s25", "s26", "s27", "memory", "cc");
        }}
        done = 1;
    }}
#endif
    /* size_t offsets: with k a constant gcc's loop analysis otherwise warns that b * k * 4
       could overflow */
    for (int b = 0; (b < blocks) && (done == 0); ++b) {{
        const size_t o = (size_t)b * 4u;
        const float *wp = &w[o * (size_t)k];
        float a0 = bias[o];
        float a1 = bias[o + 1u];
        float a2 = bias[o + 2u];
        float a3 = bias[o + 3u];
        for (int i = 0; i < k; ++i) {{
            const float xv = x[i];
            a0 += wp[0] * xv;
            a1 += wp[1] * xv;
            a2 += wp[2] * xv;
            a3 += wp[3] * xv;
            wp = &wp[4];
        }}
        out[o] = a0;
        out[o + 1u] = a1;
        out[o + 2u] = a2;
        out[o + 3u] = a3;
    }}
}}"""
    return name, code

