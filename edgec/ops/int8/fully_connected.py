"""QFullyConnected: TFLite's int8 FULLY_CONNECTED (reference_integer_ops/fully_connected.h).

``y[..., m] = clamp(MBQM(sum_k (w[m, k] - zp_w) * (x[..., k] - zp_x) + b[m], M[m], S[m]) + zp_y)``

Multipliers as TFLite's Prepare derives them: per-tensor weights use the float32 product of the
input and weight scales (``GetQuantizedConvolutionMultipler``), per-channel weights the double
product (``PopulateConvolutionQuantizationParams``), both divided by the output scale in double.
The TFLite interpreter rounds this op's MultiplyByQuantizedMultiplier once (option
``int8_rounding="tflite"``), TFLite Micro twice (``"double"``): see fixedpoint.py.

The C kernel folds the input zero point into the bias at compile time
(``b'[m] = b[m] - zp_x * sum_k w[m, k]``), so its kernels multiply raw codes: four rows at a
time over the pair table (:func:`weight_layout`, :mod:`edgec.ops.int8.gemm_s8`), generic C or,
on cores with the DSP extension, the shared SMLAD/SXTB16 kernel function of
:mod:`edgec.ops.int8.fc_dsp` (the input row widened to int16 in a 2·K-byte scratch buffer);
requantization and the activation clamp are one fused step per output.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, prod, register, unsupported
from edgec.ops.int8.common import (
    QOp,
    Requant,
    act_range,
    fits_int32,
    per_tensor,
    quant_of,
    requantize_ref,
    require_dtype,
    use_requant,
)
from edgec.ops.int8.fc_dsp import fast_single, use_fc_kernel
from edgec.ops.int8.fixedpoint import f32, quantize_multipliers, rounding_of
from edgec.ops.int8.gemm_s8 import Rows, padded_dims, pair_table, use_kernels

Outs = list[tuple[Shape, str]]


def weight_scales(node: Node, g: Graph, w_name: str, channels: int, axis: int) -> np.ndarray:
    """The weight scales, one per output channel (a per-tensor scale repeated)."""
    q = quant_of(node, g, w_name, "weights")
    if np.any(q.zero_point != 0):
        raise unsupported(node, f"weights '{w_name}' have non-zero zero points; int8 weights "
                                "must be symmetric (zero point 0)")
    if q.size == 1:
        return np.repeat(q.scale, channels)
    if q.axis != axis or q.size != channels:
        raise unsupported(node, f"weights '{w_name}': per-channel quantization must have one "
                                f"scale per output channel on axis {axis} ({channels}), got "
                                f"{q.size} on axis {q.axis}")
    return q.scale.copy()


def output_multipliers(node: Node, g: Graph, x_name: str, w_name: str, y_name: str,
                       channels: int, axis: int, float_product_per_tensor: bool,
                       rounding: str) -> tuple[np.ndarray, np.ndarray]:
    s_x, _ = per_tensor(node, g, x_name, "input")
    s_y, _ = per_tensor(node, g, y_name, "output")
    q_w = quant_of(node, g, w_name, "weights")
    s_w = weight_scales(node, g, w_name, channels, axis)
    if q_w.size == 1 and float_product_per_tensor:
        reals = [f32(np.float32(s_x) * np.float32(s_w[0])) / float(s_y)] * channels
    else:
        reals = [float(s_x) * float(s) / float(s_y) for s in s_w]
    return quantize_multipliers(reals, rounding)


def bias_values(node: Node, g: Graph, idx: int, channels: int) -> np.ndarray:
    """The int32 bias (zeros when absent)."""
    name = node.inputs[idx] if len(node.inputs) > idx else ""
    if not name:
        return np.zeros(channels, np.int64)
    b = g.const(name)
    if b is None:
        raise unsupported(node, f"bias '{name}' must be a constant")
    if b.dtype != np.int32 or b.size != channels:
        raise unsupported(node, f"bias '{name}' must be int32 with {channels} values, got "
                                f"{b.dtype} {list(b.shape)}")
    return b.reshape(-1).astype(np.int64)


def const_int8(node: Node, g: Graph, idx: int, what: str) -> np.ndarray:
    w = g.const(node.inputs[idx])
    if w is None:
        raise unsupported(node, f"{what} '{node.inputs[idx]}' must be a constant")
    if w.dtype != np.int8:
        raise unsupported(node, f"{what} '{node.inputs[idx]}' is {w.dtype}; expected int8")
    return w


#: k padding of the fully connected pair table (the DSP kernel takes k four at a time)
FC_KMULT = 4


def weight_layout(w: np.ndarray, kmult: int = FC_KMULT) -> np.ndarray:
    """The weight table the kernels read, re-laid out at compile time: the pair table of
    :mod:`edgec.ops.int8.gemm_s8` (rows [M, K] in, flat int8 out)."""
    return pair_table(w, kmult)


@register
class QFullyConnected(QOp):
    types = ("QFullyConnected",)

    def _dims(self, node: Node, g: Graph) -> tuple[int, int, int]:
        x = g.shape(node.inputs[0])
        w = g.shape(node.inputs[1])
        if len(w) != 2 or not x or x[-1] != w[1]:
            raise unsupported(node, f"input {list(x)} and weights {list(w)}: expected "
                                    "[..., K] and [M, K]")
        return prod(x[:-1]), w[1], w[0]

    def _params(self, node: Node, g: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(per-channel multipliers, shifts, bias) with the checks TFLite's Prepare makes."""
        _, _, m = self._dims(node, g)
        mult, shift = output_multipliers(node, g, node.inputs[0], node.inputs[1],
                                         node.outputs[0], m, 0, float_product_per_tensor=True,
                                         rounding=rounding_of(g, fully_connected=True))
        return mult, shift, bias_values(node, g, 2, m)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        const_int8(node, g, 1, "weights")
        self._params(node, g)
        act_range(node)
        x = g.shape(node.inputs[0])
        return [(x[:-1] + (g.shape(node.inputs[1])[0],), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, w = inputs[0], inputs[1]
        assert x is not None and w is not None
        rows, k, m = self._dims(node, g)
        mult, shift, bias = self._params(node, g)
        _, zp_x = per_tensor(node, g, node.inputs[0], "input")
        _, zp_y = per_tensor(node, g, node.outputs[0], "output")
        lo, hi = act_range(node)
        acc = (x.reshape(rows, k).astype(np.int64) - zp_x) @ w.astype(np.int64).T + bias
        y = requantize_ref(acc, mult[None, :], shift[None, :], zp_y, lo, hi,
                           rounding_of(g, fully_connected=True))
        return [y.reshape(g.shape(node.outputs[0]))]

    def macs(self, node: Node, g: Graph) -> int:
        rows, k, m = self._dims(node, g)
        return rows * k * m

    def scratch(self, node: Node, g: Graph) -> int:
        """Bytes: the DSP kernel's int16 copy of one input row (k padded to a multiple of 4);
        the generic C reads the row in place."""
        _, k, m = self._dims(node, g)
        return 2 * padded_dims(m, k, FC_KMULT)[1]

    def scratch_ctype(self, node: Node, g: Graph) -> str:
        return "int8_t"

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        rows, k, m = self._dims(node, g)
        mult, shift, bias = self._params(node, g)
        _, zp_x = per_tensor(node, g, node.inputs[0], "input")
        _, zp_y = per_tensor(node, g, node.outputs[0], "output")
        lo, hi = act_range(node)
        w = const_int8(node, g, 1, "weights")
        folded = fits_int32(node, "the bias with the input zero point folded in",
                            bias - zp_x * w.astype(np.int64).sum(axis=1))
        table = weight_layout(w)
        wsym = ctx.const_array(f"{node.name}_w", table, "int8_t", param=True,
                               padding=table.size - w.size)
        # padded to an even row count: the DSP kernel reads a padded row's bias (zero)
        mp = m + (m & 1)
        bsym = ctx.const_array(f"{node.name}_bias", np.pad(folded, (0, mp - m)), "int32_t",
                               param=True, padding=mp - m)
        rounding = rounding_of(g, fully_connected=True)
        form = "single_hi" if rounding == "single" and fast_single(shift) else rounding
        if form == "single_hi":  # one int8 table of -2 - shift for both kernels
            shift = -2 - np.asarray(shift)
        rq = Requant(ctx, node.name, mult, shift,
                     shift_ctype="int8_t" if form == "single_hi" else "int32_t")
        requant = use_requant(ctx, rounding)
        use_kernels(ctx)
        gemm = Rows(m, k, wsym, bsym, FC_KMULT)

        def store(mi: str, col: int, acc: str) -> str:
            sh = f"-2 - {rq.shift(mi)}" if form == "single_hi" else rq.shift(mi)
            return f"yr[{mi}] = {requant}({acc}, {rq.mult(mi)}, {sh}, {zp_y}, {lo}, {hi});"

        # the DSP kernel takes tables: one entry each when the multiplier is per tensor
        unused = "(void)scratch;\n"
        if rq.per_channel:
            msym, ssym, cmask = rq.mult_sym, rq.shift_sym, -1
        else:
            msym = ctx.const_array(f"{node.name}_mult", np.array([rq.m0]), "int32_t",
                                   param=False, path="dsp")
            ssym = ctx.const_array(f"{node.name}_shift", np.array([rq.s0]), rq.shift_ctype,
                                   param=False, path="dsp")
            cmask = 0
            unused += f"(void){msym};\n(void){ssym};\n"
        fc = use_fc_kernel(ctx, form)
        dsp = (f"{fc}(xr, {k}, {wsym}, {m}, {gemm.kp}, {bsym}, {msym}, {ssym}, {cmask}, "
               f"{zp_y}, {lo}, {hi}, yr, scratch);\n")
        row = ("#ifdef EDGEC_S8_DSP\n" + dsp + "#else\n" + unused + gemm.generic("xr", store)
               + "#endif\n")
        x, y = ctx.inp(0), ctx.out(0)
        if rows == 1:
            return f"const int8_t *xr = {x};\nint8_t *yr = {y};\n" + row
        inner = "".join("    " + ln + "\n" if ln and not ln.startswith("#") else ln + "\n"
                        for ln in row.rstrip("\n").split("\n"))
        return (
            f"for (int r = 0; r < {rows}; ++r) {{\n"
            f"    const int8_t *xr = {x} + r * {k};\n"
            f"    int8_t *yr = {y} + r * {m};\n" + inner + "}\n"
        )
