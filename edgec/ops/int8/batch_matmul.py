"""QBatchMatMul: TFLite's int8 BATCH_MATMUL (reference_ops::BatchMatMul<int8_t, int32_t>), a
matrix product of two run-time int8 operands (attention scores Q·Kᵀ, scores·V, x·xᵀ).

``y[..., m, n] = clamp(MBQM(sum_k (a[..., m, k] - zp_a) * (b[..., k, n] - zp_b), M, S) + zp_y)``

* Shapes: ``a`` [..., M, K] (``adj_x``: [..., K, M]), ``b`` [..., K, N] (``adj_y``:
  [..., N, K]), both of rank >= 2; the batch dimensions broadcast as numpy (and TFLite's
  BATCH_MATMUL, ONNX MatMul) do: a missing or size-1 dimension repeats. Output
  [batch..., M, N].
* Both operands are activations: per-tensor scale and zero point each (any zero point; the
  accumulator is int32 as in TFLite, and a shape whose worst-case sum could overflow int32 is
  refused at compile time rather than wrapped).
* Multiplier as TFLite's Prepare (``GetQuantizedConvolutionMultipler``): the float32 product
  ``s_a * s_b`` widened to double, divided by ``s_y`` in double, ``QuantizeMultiplier``.
* MultiplyByQuantizedMultiplier is TFLite's standard (double rounding) form in both the
  interpreter's reference kernel and TFLite Micro, so ``int8_rounding`` does not change it.
* BATCH_MATMUL has no fused activation; ``act_min``/``act_max`` (default -128/127) carry the
  clamp of a Relu/Clip that followed an ONNX MatMul.

The C kernel walks the broadcast batch dimensions (coalesced, :func:`broadcast_loop`) and, per
matrix, computes ``sum (a - zp_a)(b - zp_b) = sum (a - zp_a) b - zp_b * sum (a - zp_a)``: the
row sum once per row, raw codes of b in the inner loop (every partial sum fits int32 when the
true one does: |b| <= 128 <= max|b - zp_b|), then one fused requantize + clamp per output.
On cores with the DSP extension (``EDGEC_S8_DSP``, as the other int8 kernels pick it) each row
of a is widened to int16 (zero point subtracted) into the scratch once, b's columns are read
four codes per word (transposed into the scratch once per matrix unless ``adj_y`` already
stores them contiguously) and two SMLAD take four MACs; ``adj_x`` (a's rows strided) takes the
generic C.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, broadcast_shape, prod, register, unsupported
from edgec.ops.int8.common import (
    QOp,
    act_range,
    indent,
    per_tensor,
    requantize_ref,
    require_dtype,
    use_requant,
)
from edgec.ops.int8.fixedpoint import f32, quantize_multiplier
from edgec.ops.int8.gemm_s8 import use_kernels
from edgec.ops.loops import broadcast_loop

Outs = list[tuple[Shape, str]]

#: the MultiplyByQuantizedMultiplier form of BATCH_MATMUL (every TFLite reference)
ROUNDING = "double"
INT32_MAX = 2**31 - 1


class Dims:
    """The geometry of one QBatchMatMul node: batch shapes and the matrix sizes."""

    def __init__(self, node: Node, g: Graph):
        a, b = g.shape(node.inputs[0]), g.shape(node.inputs[1])
        self.adj_x, self.adj_y = bool(node.attr("adj_x", 0)), bool(node.attr("adj_y", 0))
        if len(a) < 2 or len(b) < 2:
            raise unsupported(node, f"operands {list(a)} and {list(b)}: both need rank >= 2 "
                                    "([..., rows, columns])")
        self.m, ka = (a[-1], a[-2]) if self.adj_x else (a[-2], a[-1])
        kb, self.n = (b[-1], b[-2]) if self.adj_y else (b[-2], b[-1])
        if ka != kb:
            raise unsupported(node, f"operands {list(a)} (adj_x={int(self.adj_x)}) and "
                                    f"{list(b)} (adj_y={int(self.adj_y)}): inner dimensions "
                                    f"{ka} and {kb} differ")
        self.k = int(ka)
        self.batch_a, self.batch_b = tuple(a[:-2]), tuple(b[:-2])
        try:
            self.batch = broadcast_shape(self.batch_a, self.batch_b)
        except ValueError as e:
            raise unsupported(node, f"batch dimensions {list(self.batch_a)} and "
                                    f"{list(self.batch_b)} do not broadcast") from e
        self.m, self.n = int(self.m), int(self.n)

    @property
    def out_shape(self) -> Shape:
        return (*self.batch, self.m, self.n)


def _params(node: Node, g: Graph) -> tuple[int, int, int, int, int]:
    """(zp_a, zp_b, zp_y, multiplier, shift), with TFLite Prepare's checks."""
    s_a, zp_a = per_tensor(node, g, node.inputs[0], "input 0")
    s_b, zp_b = per_tensor(node, g, node.inputs[1], "input 1")
    s_y, zp_y = per_tensor(node, g, node.outputs[0], "output")
    real = float(f32(np.float32(s_a) * np.float32(s_b))) / float(s_y)
    if not real >= 0.0:
        raise unsupported(node, f"scales {s_a}, {s_b} -> {s_y} give the multiplier {real}; "
                                "expected a non-negative one")
    mult, shift = quantize_multiplier(real, ROUNDING)
    return zp_a, zp_b, zp_y, mult, shift


def _check_accumulator(node: Node, k: int, zp_a: int, zp_b: int) -> None:
    """Refuse shapes whose int32 accumulator could overflow (UB in C, wraps in TFLite)."""
    worst = k * max(127 - zp_a, zp_a + 128) * max(127 - zp_b, zp_b + 128)
    if worst > INT32_MAX:
        raise unsupported(node, f"inner dimension {k} with zero points {zp_a}, {zp_b} can "
                                "overflow the int32 accumulator")


@register
class QBatchMatMul(QOp):
    types = ("QBatchMatMul",)

    def infer(self, node: Node, g: Graph) -> Outs:
        for i in (0, 1):
            require_dtype(node, g, node.inputs[i], "int8", f"input {i}")
        d = Dims(node, g)
        zp_a, zp_b, _, _, _ = _params(node, g)
        _check_accumulator(node, d.k, zp_a, zp_b)
        act_range(node)
        return [(d.out_shape, "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        d = Dims(node, g)
        zp_a, zp_b, zp_y, mult, shift = _params(node, g)
        lo, hi = act_range(node)
        av = a.astype(np.int64) - zp_a
        bv = b.astype(np.int64) - zp_b
        if d.adj_x:
            av = np.swapaxes(av, -1, -2)
        if d.adj_y:
            bv = np.swapaxes(bv, -1, -2)
        acc = np.matmul(av, bv)
        return [requantize_ref(acc, mult, shift, zp_y, lo, hi, ROUNDING).reshape(d.out_shape)]

    def macs(self, node: Node, g: Graph) -> int:
        d = Dims(node, g)
        return prod(d.batch) * d.m * d.n * d.k

    def scratch(self, node: Node, g: Graph) -> int:
        """Bytes for the DSP path: the row of a widened to int16 (2·K, k paired as SMLAD reads
        them), then b transposed to columns (K·N) when its columns are not contiguous. The
        generic C needs none."""
        return sum(_scratch_parts(node, g))

    def scratch_ctype(self, node: Node, g: Graph) -> str:
        return "int8_t"

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        d = Dims(node, g)
        zp_a, zp_b, zp_y, mult, shift = _params(node, g)
        lo, hi = act_range(node)
        requant = use_requant(ctx, ROUNDING, [shift])
        m, n, k = d.m, d.n, d.k
        # element strides of row/column/depth in each matrix
        a_m, a_k = (1, m) if d.adj_x else (k, 1)
        b_k, b_n = (1, k) if d.adj_y else (n, 1)
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        row_bytes, col_bytes = _scratch_parts(node, g)
        sc = ctx.scratch() if row_bytes else ""
        if sc:
            use_kernels(ctx)
            ctx.helper("edgec_bmm_dot_s8", DOT_C)

        def idx(var: str, stride: int) -> str:
            return var if stride == 1 else f"{var} * {stride}"

        corr = f" - ({zp_b}) * sa" if zp_b else ""

        def store(c: str, acc: str) -> str:
            return (f"ym[r * {n} + {c}] = {requant}({acc}{corr}, {mult}, {shift}, {zp_y}, "
                    f"{lo}, {hi});\n")

        columns = (f"for (int c = 0; c < {n}; ++c) {{\n"
                   f"    const int8_t *bc = bm + {idx('c', b_n)};\n"
                   f"    int32_t dot = 0;\n"
                   f"    for (int t = 0; t < {k}; ++t) {{\n"
                   f"        dot += ((int32_t)ar[{idx('t', a_k)}] - ({zp_a})) * "
                   f"bc[{idx('t', b_k)}];\n"
                   f"    }}\n" + indent(store("c", "dot")) + "}\n")
        row_sum = ("int32_t sa = 0;\n"
                   f"for (int t = 0; t < {k}; ++t) {{\n"
                   f"    sa += (int32_t)ar[{idx('t', a_k)}] - ({zp_a});\n"
                   f"}}\n") if zp_b else ""  # no correction: the row's sum is not needed
        if sc:  # DSP: two columns per call (the widened row loaded once for both)
            col = "bt" if col_bytes else "bm"
            pairs = (f"for (int c = 0; c + 1 < {n}; c += 2) {{\n"
                     "    int32_t d0, d1;\n"
                     f"    edgec_bmm_dot2_s8(a16, ar, {col} + c * {k}, {col} + (c + 1) * {k}, "
                     f"{k}, {zp_a}, &d0, &d1);\n"
                     + indent(store("c", "d0") + store("c + 1", "d1")) + "}\n")
            if n % 2:
                pairs += ("{\n"
                          f"    const int32_t dot = edgec_bmm_dot_s8(a16, ar, {col} + "
                          f"{(n - 1) * k}, {k}, {zp_a});\n"
                          + indent(store(str(n - 1), "dot")) + "}\n")
            columns = "#ifdef EDGEC_S8_DSP\n" + pairs + "#else\n" + columns + "#endif\n"
            widen = f"edgec_bmm_widen_s8(ar, {k}, {zp_a}, a16);\n"
            row_sum = ("#ifdef EDGEC_S8_DSP\n"
                       + (f"const int32_t sa = {widen}" if zp_b else f"(void){widen}")
                       + ("#else\n" + row_sum if row_sum else "") + "#endif\n")

        def matrix(ia: str, ib: str, iy: str) -> str:
            sa, sb, sy = (f" + ({e}) * {size}" if e != "0" else ""
                          for e, size in ((ia, m * k), (ib, k * n), (iy, m * n)))
            code = (f"const int8_t *am = {a}{sa};\n"
                    f"const int8_t *bm = {b}{sb};\n"
                    f"int8_t *ym = {y}{sy};\n")
            if col_bytes:  # the DSP path reads b by columns
                code += ("#ifdef EDGEC_S8_DSP\n"
                         f"int8_t *bt = {sc} + {row_bytes};\n"
                         f"for (int c = 0; c < {n}; ++c) {{\n"
                         f"    for (int t = 0; t < {k}; ++t) bt[c * {k} + t] = "
                         f"bm[{idx('t', b_k)} + {idx('c', b_n)}];\n"
                         f"}}\n"
                         "#endif\n")
            code += (f"for (int r = 0; r < {m}; ++r) {{\n"
                     f"    const int8_t *ar = am + {idx('r', a_m)};\n" + indent(row_sum)
                     + indent(columns) + "}\n")
            return code

        head = ""
        if sc:
            head = ("#ifdef EDGEC_S8_DSP\n"
                    f"edgec_q15a *a16 = (edgec_q15a *)(void *){sc};\n"
                    "#else\n"
                    f"(void){sc};\n"
                    "#endif\n")
        if not d.batch:
            return head + matrix("0", "0", "0")
        return head + broadcast_loop(
            d.batch, [d.batch_a, d.batch_b],
            lambda ix, iy: "{\n" + indent(matrix(ix[0], ix[1], iy)) + "}\n")


def _scratch_parts(node: Node, g: Graph) -> tuple[int, int]:
    """Bytes of the DSP path's scratch: (a's row as int16, b's transposed copy); none when a's
    rows are not contiguous (adj_x: generic C only)."""
    d = Dims(node, g)
    if d.adj_x:
        return 0, 0
    return 2 * d.k, (0 if d.adj_y else d.k * d.n)


DOT_C = r"""#ifdef EDGEC_S8_DSP
/* QBatchMatMul, DSP path. Row a[0..k) of codes minus their zero point, widened to int16 into
 * a16 four at a time in SMLAD's pairing ((a0, a2), (a1, a3): the halves SXTB16 gives of four
 * codes of b and, rotated by 8, of the odd ones); returns the sum of the row. */
static inline int32_t edgec_bmm_widen_s8(const int8_t *a, int k, int32_t zp, edgec_q15a *a16)
{
    int32_t s = 0;
    int t;
    for (t = 0; t < k; ++t) s += (int32_t)a[t] - zp;
    for (t = 0; t + 4 <= k; t += 4) {
        a16[t] = (int16_t)(a[t] - zp);
        a16[t + 1] = (int16_t)(a[t + 2] - zp);
        a16[t + 2] = (int16_t)(a[t + 1] - zp);
        a16[t + 3] = (int16_t)(a[t + 3] - zp);
    }
    return s;
}

/* The sums of edgec_bmm_dot_s8 for two columns b0, b1 at once (the row's words loaded once). */
static inline void edgec_bmm_dot2_s8(const edgec_q15a *a16, const int8_t *a, const int8_t *b0,
                                     const int8_t *b1, int k, int32_t zp, int32_t *d0,
                                     int32_t *d1)
{
    int32_t acc0 = 0, acc1 = 0;
    int t;
    for (t = 0; t + 4 <= k; t += 4) {
        uint32_t w0, w1;
        int32_t we, wo;
        memcpy(&we, a16 + t, 4);
        memcpy(&wo, a16 + t + 2, 4);
        memcpy(&w0, b0 + t, 4);
        memcpy(&w1, b1 + t, 4);
        acc0 = __smlad(we, __sxtb16((int32_t)w0), acc0);
        acc1 = __smlad(we, __sxtb16((int32_t)w1), acc1);
        acc0 = __smlad(wo, edgec_sxtb16_hi((int32_t)w0), acc0);
        acc1 = __smlad(wo, edgec_sxtb16_hi((int32_t)w1), acc1);
    }
    for (; t < k; ++t) {
        acc0 += ((int32_t)a[t] - zp) * b0[t];
        acc1 += ((int32_t)a[t] - zp) * b1[t];
    }
    *d0 = acc0;
    *d1 = acc1;
}

/* Sum over t < k of (a[t] - zp) * b[t]: four per step from the widened row a16 (two words)
 * and one word of b (contiguous), two SMLAD; the k % 4 rest from the codes a. Exact: every
 * partial sum fits int32 (QBatchMatMul checks the shape at compile time). */
static inline int32_t edgec_bmm_dot_s8(const edgec_q15a *a16, const int8_t *a, const int8_t *b,
                                       int k, int32_t zp)
{
    int32_t acc = 0;
    int t;
    for (t = 0; t + 4 <= k; t += 4) {
        uint32_t wb;
        int32_t we, wo;
        memcpy(&wb, b + t, 4);
        memcpy(&we, a16 + t, 4);
        memcpy(&wo, a16 + t + 2, 4);
        acc = __smlad(we, __sxtb16((int32_t)wb), acc);
        acc = __smlad(wo, edgec_sxtb16_hi((int32_t)wb), acc);
    }
    for (; t < k; ++t) acc += ((int32_t)a[t] - zp) * b[t];
    return acc;
}
#endif"""
