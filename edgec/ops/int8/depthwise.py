"""QDepthwiseConv2D: TFLite's int8 DEPTHWISE_CONV_2D (reference_integer_ops/depthwise_conv.h
``DepthwiseConvPerChannel``), NHWC.

``x [N, H, W, C]``, ``w [1, KH, KW, C * m]`` (int8, symmetric; per-channel scales on axis 3),
``b [C * m]`` int32 → ``y [N, OH, OW, C * m]``; output channel ``oc`` reads input channel
``oc // m`` (attribute ``depth_multiplier`` m); ``strides``, ``dilations``, ``pads``,
``act_min``/``act_max`` as QConv2D. Taps in the padding are skipped.

C: per output pixel the in-input tap range is computed once; pixels whose window lies wholly
inside the input use the bias with the zero point folded in (``b - zp_x * sum(w)``) and the raw
codes, with the taps unrolled at constant offsets (windows up to 5x5); border pixels sum
``w * (x - zp_x)`` over their valid taps; requantize + clamp fused.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, register, unsupported
from edgec.ops.int8.common import (
    QOp,
    Requant,
    Window,
    act_range,
    fits_int32,
    indent,
    per_tensor,
    requantize_ref,
    require_dtype,
    use_requant,
)
from edgec.ops.int8.depthwise_dsp import (
    HELPERS_C,
    RQ_C,
    border_channels,
    fast_border_taps,
    fast_channels,
    fast_stream,
    fast_tables,
    interior_channels,
    window_copy,
    zero_row,
)
from edgec.ops.int8.fixedpoint import rounding_of, use_mbqm
from edgec.ops.int8.fully_connected import bias_values, const_int8, output_multipliers
from edgec.ops.int8.gemm_s8 import use_kernels
from edgec.ops.int8.shared import SharedKernel

Outs = list[tuple[Shape, str]]
#: windows of at most this many taps are unrolled (constant offsets) where wholly inside
UNROLL_TAPS = 25


def _geometry(node: Node, g: Graph) -> tuple[Window, int, int]:
    """(window, depth multiplier, output channels)."""
    w_shape = g.shape(node.inputs[1])
    if len(w_shape) != 4 or w_shape[0] != 1:
        raise unsupported(node, f"weights {list(w_shape)}: expected [1, KH, KW, C * m]")
    _, kh, kw, oc = w_shape
    win = Window(node, g.shape(node.inputs[0]), kh, kw)
    mult = int(node.attr("depth_multiplier", oc // max(win.c, 1)))
    if mult < 1 or oc != win.c * mult:
        raise unsupported(node, f"weights {list(w_shape)} do not match {win.c} input channels "
                                f"times depth_multiplier {mult}")
    return win, mult, oc


@register
class QDepthwiseConv2D(QOp):
    types = ("QDepthwiseConv2D",)

    def _params(self, node: Node, g: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, _, oc = _geometry(node, g)
        mult, shift = output_multipliers(node, g, node.inputs[0], node.inputs[1],
                                         node.outputs[0], oc, 3, float_product_per_tensor=False,
                                         rounding=rounding_of(g))
        return mult, shift, bias_values(node, g, 2, oc)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        const_int8(node, g, 1, "weights")
        win, _, oc = _geometry(node, g)
        self._params(node, g)
        act_range(node)
        return [((win.n, win.oh, win.ow, oc), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, w = inputs[0], inputs[1]
        assert x is not None and w is not None
        win, m, oc = _geometry(node, g)
        mult, shift, bias = self._params(node, g)
        _, zp_x = per_tensor(node, g, node.inputs[0], "input")
        _, zp_y = per_tensor(node, g, node.outputs[0], "output")
        lo, hi = act_range(node)
        xp = np.repeat(win.padded(x, zp_x) - zp_x, m, axis=3)  # channel oc reads oc // m
        acc = np.zeros((win.n, win.oh, win.ow, oc), np.int64)
        for kh in range(win.kh):
            for kw in range(win.kw):
                acc += win.taps(xp, kh, kw) * w[0, kh, kw].astype(np.int64)
        acc += bias
        return [requantize_ref(acc, mult, shift, zp_y, lo, hi, rounding_of(g))]

    def macs(self, node: Node, g: Graph) -> int:
        win, _, oc = _geometry(node, g)
        return win.n * win.oh * win.ow * oc * win.kh * win.kw

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        win, m, oc = _geometry(node, g)
        mult, shift, bias = self._params(node, g)
        _, zp_x = per_tensor(node, g, node.inputs[0], "input")
        _, zp_y = per_tensor(node, g, node.outputs[0], "output")
        lo, hi = act_range(node)
        w = const_int8(node, g, 1, "weights")  # [1, KH, KW, OC]: tap-major, channel inner
        folded = fits_int32(node, "the bias with the input zero point folded in",
                            bias - zp_x * w.astype(np.int64).reshape(-1, oc).sum(axis=0))
        dsp_ok = m == 1 and oc >= 4 and win.kh * win.kw <= UNROLL_TAPS  # interior pixels
        lay = (fast_tables(w.reshape(-1, oc), folded, mult, shift, zp_y)
               if dsp_ok and rounding_of(g) == "double" else None)
        # what the DSP path reads without a scalar channel tail: the pre-laid stream (lay),
        # else the plain tables but the bias without the zero point folded in
        only = "generic" if dsp_ok and oc % 4 == 0 else None
        sk = SharedKernel(ctx, "edgec_dw_s8")
        xin = sk.ptr("const int8_t *restrict", "x0", ctx.inp(0))
        yout = sk.ptr("int8_t *restrict", "y0", ctx.out(0))
        plain = only if lay is not None else None
        wsym = sk.table(ctx.const_array(f"{node.name}_w", w.reshape(-1), "int8_t", param=True,
                                        path=plain), "int8_t")
        fsym = sk.table(ctx.const_array(f"{node.name}_bias_folded", folded, "int32_t",
                                        param=True, path=plain), "int32_t")
        rq = Requant(ctx, node.name, mult, shift, path=plain)
        if rq.per_channel:
            sk.table(rq.mult_sym, "int32_t")
            sk.table(rq.shift_sym, "int32_t")
        lo_int, hi_int = lo, hi
        zp_x_c, zp_y, lo, hi = (sk.scalar("zp_x", zp_x), sk.scalar("zp_y", zp_y),
                                sk.scalar("act_lo", lo), sk.scalar("act_hi", hi))
        requant = use_requant(ctx, rounding_of(ctx.g), shift)
        ic = "oc" if m == 1 else f"oc / {m}"

        def tap_loop(acc_line: str) -> str:
            return (
                f"for (int kh = kh0; kh < kh1; ++kh) {{\n"
                f"    const int8_t *xr = xn + (ih + kh * {win.dh}) * {win.w * win.c} + {ic};\n"
                f"    const int8_t *wr = {wsym} + kh * {win.kw * oc} + oc;\n"
                f"    for (int kw = kw0; kw < kw1; ++kw) {acc_line}\n"
                f"}}\n"
            )

        xv = f"xr[(iw + kw * {win.dw}) * {win.c}]" if win.dw > 1 else f"xr[(iw + kw) * {win.c}]"
        if win.kh * win.kw <= UNROLL_TAPS:  # whole window inside: every tap at a fixed offset
            taps = [((kh * win.dh * win.w + kw * win.dw) * win.c, (kh * win.kw + kw) * oc)
                    for kh in range(win.kh) for kw in range(win.kw)]
            full = (f"const int8_t *xp = xn + (ih * {win.w} + iw) * {win.c} + {ic};\n"
                    f"const int8_t *wp = {wsym} + oc;\n"
                    + "".join(f"acc += (int32_t)wp[{wo}] * xp[{xo}];\n" for xo, wo in taps))
        else:
            full = tap_loop(f"acc += (int32_t)wr[kw * {oc}] * {xv};")
        tap_range = win.c_tap_range
        if not win.any_padding and win.kh * win.kw <= UNROLL_TAPS:  # only ih / iw are read
            def tap_range(o: str, axis: str) -> str:
                return win.c_tap_range(o, axis).split("\n")[0] + "\n"
        if win.any_padding:
            bsym = sk.table(ctx.const_array(f"{node.name}_bias", bias, "int32_t", param=True,
                                            path=only), "int32_t")
            border = tap_loop(f"acc += (int32_t)wr[kw * {oc}] * ({xv} - {zp_x_c});")
            per_channel = (
                f"int32_t acc;\n"
                f"if (inside) {{\n    acc = {fsym}[oc];\n" + indent(full) + "} else {\n"
                f"    acc = {bsym}[oc];\n" + indent(border) + "}\n"
            )
            inside = (f"const int inside = kh0 == 0 && kh1 == {win.kh} && kw0 == 0 && "
                      f"kw1 == {win.kw};\n")
        else:
            per_channel = f"int32_t acc = {fsym}[oc];\n" + full
            inside = ""
        def channels(start: int) -> str:
            return (f"for (int oc = {start}; oc < {oc}; ++oc) {{\n" + indent(per_channel)
                    + f"    yp[oc] = {requant}(acc, {rq.mult('oc')}, {rq.shift('oc')}, {zp_y}, "
                    f"{lo}, {hi});\n}}\n")

        generic = channels(0)
        prologue = ""
        if dsp_ok:
            use_kernels(ctx)  # EDGEC_S8_DSP, <arm_acle.h>, SXTB16 ROR #8
            ctx.helper("edgec_depthwise_dsp", HELPERS_C)

            def store(ch: str, acc: str) -> str:
                return (f"yp[{ch}] = {requant}({acc}, {rq.mult(ch)}, {rq.shift(ch)}, {zp_y}, "
                        f"{lo}, {hi});")

            mbqm = use_mbqm(ctx, rounding_of(ctx.g), shift)
            bounds = ", ".join(f"(((uint32_t){b} & 0xFFu) * 0x01010101u)" for b in (lo, hi))

            def store4(ch: str, accs: list[str]) -> str:
                """Four channels' outputs requantized, packed and clamped at once."""
                vals = ",\n    ".join(
                    f"{mbqm}({a}, {rq.mult(f'{ch} + {j}')}, {rq.shift(f'{ch} + {j}')}) + {zp_y}"
                    for j, a in enumerate(accs))
                return (f"{{\n    const uint32_t codes = edgec_pack4_s8(\n    {vals},\n    "
                        f"{bounds});\n    memcpy(yp + {ch}, &codes, 4);\n}}")

            tail = channels(oc - oc % 4) if oc % 4 else ""
            if lay is not None:  # int16 weights pre-laid for SMLAD, requantization fused
                ctx.helper("edgec_dw_rq4", RQ_C)
                stab = sk.table(ctx.const_array(f"{node.name}_dsp", fast_stream(*lay),
                                                "int32_t", param=False, path="dsp"), "int32_t")
                lo4, hi4 = (None if v == edge_v else f"(((uint32_t){c} & 0xFFu) * 0x01010101u)"
                            for v, edge_v, c in ((lo_int, -128, lo), (hi_int, 127, hi)))
                dsp = (f"const int8_t *xp = xn + (ih * {win.w} + iw) * {win.c};\n"
                       + fast_channels([("xc", xo) for xo, _ in taps], oc, stab,
                                       "const int8_t *xc = xp;", lo4, hi4) + tail)
                decls, tps = fast_border_taps(win, oc, zp_x_c)
                edge = fast_channels(tps, oc, stab, decls, lo4, hi4)
                if win.any_padding and window_copy(win, oc):
                    prologue = "#ifdef EDGEC_S8_DSP\n" + zero_row(oc, zp_x_c) + "#endif\n"
                # each build reads one path's tables: the others count as used (static
                # const tables of the specialized kernels)
                keep = [wsym, fsym, *([rq.mult_sym, rq.shift_sym] if rq.per_channel else [])]
                dsp = "".join(f"(void){t};\n" for t in keep) + dsp
                generic = f"(void){stab};\n" + generic
            else:
                dsp = (f"const int8_t *xp = xn + (ih * {win.w} + iw) * {win.c};\n"
                       + interior_channels(taps, oc, wsym, fsym, store, store4) + tail)
                edge = border_channels(win, oc, wsym, fsym, zp_x_c, store, store4)
            if win.any_padding:
                edge += tail or f"(void){bsym};\n"
                generic = ("#ifdef EDGEC_S8_DSP\nif (inside) {\n" + indent(dsp) + "} else {\n"
                           + indent(edge) + "}\n#else\n" + generic + "#endif\n")
            else:
                generic = ("#ifdef EDGEC_S8_DSP\n{\n" + indent(dsp) + "}\n#else\n"
                           + generic + "#endif\n")
        pixel = (
            tap_range("ow", "w") + inside
            + f"int8_t *yp = yn + (oh * {win.ow} + ow) * {oc};\n" + generic
        )
        loops = (
            f"for (int oh = 0; oh < {win.oh}; ++oh) {{\n" + indent(tap_range("oh", "h"))
            + f"    for (int ow = 0; ow < {win.ow}; ++ow) {{\n" + indent(pixel, 2) + "    }\n}\n"
        )
        hw_c = win.h * win.w * win.c
        loops = prologue + loops
        if win.n == 1:
            body = f"const int8_t *xn = {xin};\nint8_t *yn = {yout};\n" + loops
        else:
            head = (f"const int8_t *xn = {xin} + n * {hw_c};\n"
                    f"int8_t *yn = {yout} + n * {win.oh * win.ow * oc};\n")
            body = f"for (int n = 0; n < {win.n}; ++n) {{\n" + indent(head + loops) + "}\n"
        return sk.wrap(body)
