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
matrix, each output row: the zero points are subtracted as the codes are read (run-time
operands: nothing can be folded at compile time), products summed in int32, then one fused
requantize + clamp per output.
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

        def idx(var: str, stride: int) -> str:
            return var if stride == 1 else f"{var} * {stride}"

        def matrix(ia: str, ib: str, iy: str) -> str:
            sa, sb, sy = (f" + ({e}) * {size}" if e != "0" else ""
                          for e, size in ((ia, m * k), (ib, k * n), (iy, m * n)))
            return (
                f"const int8_t *am = {a}{sa};\n"
                f"const int8_t *bm = {b}{sb};\n"
                f"int8_t *ym = {y}{sy};\n"
                f"for (int r = 0; r < {m}; ++r) {{\n"
                f"    const int8_t *ar = am + {idx('r', a_m)};\n"
                f"    for (int c = 0; c < {n}; ++c) {{\n"
                f"        const int8_t *bc = bm + {idx('c', b_n)};\n"
                f"        int32_t acc = 0;\n"
                f"        for (int t = 0; t < {k}; ++t) {{\n"
                f"            acc += ((int32_t)ar[{idx('t', a_k)}] - ({zp_a})) * "
                f"((int32_t)bc[{idx('t', b_k)}] - ({zp_b}));\n"
                f"        }}\n"
                f"        ym[r * {n} + c] = {requant}(acc, {mult}, {shift}, {zp_y}, {lo}, "
                f"{hi});\n"
                f"    }}\n"
                f"}}\n"
            )

        if not d.batch:
            return matrix("0", "0", "0")
        return broadcast_loop(d.batch, [d.batch_a, d.batch_b],
                              lambda ix, iy: "{\n" + indent(matrix(ix[0], ix[1], iy)) + "}\n")
