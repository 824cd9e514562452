"""QConv2D: TFLite's int8 CONV_2D (reference_integer_ops/conv.h ``ConvPerChannel``), NHWC.

``x [N, H, W, C]``, ``w [O, KH, KW, C / groups]`` (int8, symmetric, per-channel or per-tensor
scales), ``b [O]`` int32 → ``y [N, OH, OW, O]``; attributes ``strides`` [sh, sw], ``dilations``
[dh, dw], ``pads`` [top, left, bottom, right], ``act_min``/``act_max``. Taps in the padding
contribute nothing (TFLite skips them, which equals reading the input zero point).

The C kernel is im2col + int8 GEMM: per output pixel and group the receptive field
``[KH][KW][C/groups]`` is gathered into a scratch patch planned in the arena (padding filled with
the input zero point), then the output channels are dot products against the pair table
(:mod:`edgec.ops.int8.gemm_s8`), four at a time, each starting from a bias with the zero point
folded in at compile time (``b[o] - zp_x * sum(w[o])``), then the fused requantize + clamp. A
1x1 convolution without padding reads the input pixel in place (no patch). On cores with the
DSP extension two output pixels go at a time: both receptive fields widened to int16 into the
scratch, interleaved by k pair, then SMLAD/SXTB16 (four channels x two pixels per loop); where
the requantization has the SMMLAR form and quads are whole, every quad of a pixel pair runs in
one assembly function (:mod:`edgec.ops.int8.conv_dsp`).
Multipliers: double products (TFLite ``PopulateConvolutionQuantizationParams``).
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
from edgec.ops.int8.conv_dsp import (
    CTL_WORDS,
    entry,
    im2col,
    quad_params,
    quad_stream,
    use_convq,
)
from edgec.ops.int8.fixedpoint import rounding_of, smmlar_form, use_helpers, use_mbqm
from edgec.ops.int8.fully_connected import (
    bias_values,
    const_int8,
    output_multipliers,
    weight_layout,
)
from edgec.ops.int8.gemm_s8 import Rows, padded_dims, use_kernels
from edgec.ops.int8.shared import SharedKernel

Outs = list[tuple[Shape, str]]


def _geometry(node: Node, g: Graph) -> tuple[Window, int, int]:
    """(window, groups, output channels)."""
    w_shape = g.shape(node.inputs[1])
    if len(w_shape) != 4:
        raise unsupported(node, f"weights {list(w_shape)}: expected [O, KH, KW, C/groups]")
    o, kh, kw, cg = w_shape
    win = Window(node, g.shape(node.inputs[0]), kh, kw)
    if cg < 1 or win.c % cg or o % (win.c // cg):
        raise unsupported(node, f"input channels {win.c} and weights {list(w_shape)} do not "
                                "form whole groups")
    return win, win.c // cg, o


@register
class QConv2D(QOp):
    types = ("QConv2D",)

    def _params(self, node: Node, g: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, _, o = _geometry(node, g)
        mult, shift = output_multipliers(node, g, node.inputs[0], node.inputs[1],
                                         node.outputs[0], o, 0, float_product_per_tensor=False,
                                         rounding=rounding_of(g))
        return mult, shift, bias_values(node, g, 2, o)

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        const_int8(node, g, 1, "weights")
        win, _, o = _geometry(node, g)
        self._params(node, g)
        act_range(node)
        return [((win.n, win.oh, win.ow, o), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, w = inputs[0], inputs[1]
        assert x is not None and w is not None
        win, groups, o = _geometry(node, g)
        mult, shift, bias = self._params(node, g)
        _, zp_x = per_tensor(node, g, node.inputs[0], "input")
        _, zp_y = per_tensor(node, g, node.outputs[0], "output")
        lo, hi = act_range(node)
        xp = win.padded(x, zp_x) - zp_x  # padding reads 0 after the offset
        cg, og = win.c // groups, o // groups
        acc = np.zeros((win.n, win.oh, win.ow, o), np.int64)
        w64 = w.astype(np.int64)
        for kh in range(win.kh):
            for kw in range(win.kw):
                tap = win.taps(xp, kh, kw)
                for gr in range(groups):
                    acc[..., gr * og : (gr + 1) * og] += (
                        tap[..., gr * cg : (gr + 1) * cg] @ w64[gr * og : (gr + 1) * og, kh, kw].T
                    )
        acc += bias
        return [requantize_ref(acc, mult, shift, zp_y, lo, hi, rounding_of(g))]

    def macs(self, node: Node, g: Graph) -> int:
        win, groups, o = _geometry(node, g)
        return win.n * win.oh * win.ow * o * win.kh * win.kw * (win.c // groups)

    def _direct(self, win: Window, groups: int) -> bool:
        """1x1, unpadded, one group: the patch is the input pixel itself."""
        return (win.kh == win.kw == 1 and groups == 1
                and not (win.pt or win.pl or win.pb or win.pr))

    def scratch(self, node: Node, g: Graph) -> int:
        """Bytes: the generic kernel's int8 patch, or the DSP kernel's two int16 patches (the
        larger; the same C serves both)."""
        win, groups, o = _geometry(node, g)
        k = win.kh * win.kw * (win.c // groups)
        generic = 0 if self._direct(win, groups) else k
        return max(generic, 4 * padded_dims(o // groups, k)[1])

    def scratch_ctype(self, node: Node, g: Graph) -> str:
        return "int8_t"

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        win, groups, o = _geometry(node, g)
        mult, shift, bias = self._params(node, g)
        _, zp_x = per_tensor(node, g, node.inputs[0], "input")
        _, zp_y = per_tensor(node, g, node.outputs[0], "output")
        lo, hi = act_range(node)
        lo_i, hi_i = lo, hi
        w = const_int8(node, g, 1, "weights")
        cg, og = win.c // groups, o // groups
        k = win.kh * win.kw * cg
        folded = fits_int32(node, "the bias with the input zero point folded in",
                            bias - zp_x * w.astype(np.int64).reshape(o, -1).sum(axis=1))
        zp_y_i = per_tensor(node, g, node.outputs[0], "output")[1]
        bound = _acc_bound(folded, w.reshape(o, -1))
        fast_rq = rounding_of(g) == "double" and _smmlar_requant(mult, shift, zp_y_i, bound)
        only = "generic" if fast_rq and og % 4 == 0 else None  # DSP: the quad stream instead
        tables = [weight_layout(w.reshape(o, k)[gr * og : (gr + 1) * og], 4)
                  for gr in range(groups)]
        sk = SharedKernel(ctx, "edgec_conv_s8")
        wsym = ctx.const_array(f"{node.name}_w", np.concatenate(tables), "int8_t", param=True,
                               padding=sum(t.size for t in tables) - w.size, path=only)
        # one zero past the end for an odd group size: the DSP quad kernel reads four biases per
        # quad, and a padded row's (the next group's first, or this zero) cancels out
        bsym = ctx.const_array(f"{node.name}_bias", np.pad(folded, (0, og & 1)), "int32_t",
                               param=True, padding=og & 1, path=only)
        sk.table(wsym, "int8_t")
        sk.table(bsym, "int32_t")
        rq = Requant(ctx, node.name, mult, shift, path=only)
        if rq.per_channel:
            sk.table(rq.mult_sym, "int32_t")
            sk.table(rq.shift_sym, "int32_t")
        zp_x_c, zp_y, lo, hi = (sk.scalar("zp_x", zp_x), sk.scalar("zp_y", zp_y),
                                sk.scalar("act_lo", lo), sk.scalar("act_hi", hi))
        requant = use_requant(ctx, rounding_of(ctx.g), shift)
        use_kernels(ctx)
        if groups > 1:
            gemm = Rows(og, k, f"({wsym} + gr * {tables[0].size})", f"({bsym} + gr * {og})")
        else:
            gemm = Rows(og, k, wsym, bsym)
        ch = f"gr * {og} + " if groups > 1 else ""
        x = sk.ptr("const int8_t *restrict", "x0", ctx.inp(0))
        y = sk.ptr("int8_t *restrict", "y0", ctx.out(0))
        sk.ptr("int8_t *restrict", "scratch", ctx.scratch())
        hw_c = win.h * win.w * win.c
        npix = win.oh * win.ow

        def store_generic(mi: str, col: int, acc: str) -> str:
            rm = f"{ch}{mi}"
            return (f"yp[{rm}] = {requant}({acc}, {rq.mult(rm)}, {rq.shift(rm)}, {zp_y}, {lo}, "
                    f"{hi});")

        def store_dsp(mi: str, col: int, acc: str) -> str:
            rm = f"{ch}{mi}"
            put = (f"yn[{'p' if col == 0 else 'p1'} * {o} + {rm}] = {requant}({acc}, "
                   f"{rq.mult(rm)}, {rq.shift(rm)}, {zp_y}, {lo}, {hi});")
            return put if col == 0 else f"if (p1 != p) {put}"

        mbqm = use_mbqm(ctx, rounding_of(ctx.g), shift)
        bounds = ", ".join(f"(((uint32_t){b} & 0xFFu) * 0x01010101u)" for b in (lo, hi))

        convq = None
        if fast_rq and og % 4 == 0:  # every quad whole: the quad loop in assembly
            stream = quad_stream(quad_params(folded, mult, shift, zp_y_i, bound), tables,
                                 gemm.kp)
            ssym = sk.table(ctx.const_array(f"{node.name}_convq", stream, "int32_t",
                                            param=False, path="dsp"), "int32_t")
            convq = (use_convq(ctx, (lo_i, hi_i) != (-128, 127), gemm.kp), ssym,
                     stream.size // groups)
        elif fast_rq:
            use_helpers(ctx, "edgec_rq_smmlar")

        def store4_dsp(base: str, col: int, accs: list[str]) -> str:
            """A quad's four outputs of one pixel: requantized, packed and clamped at once.
            In the SMMLAR form the quad's multipliers, shifts and rounding terms are read once,
            before the first pixel's store, and serve both pixels."""
            c0 = f"{ch}{base}"
            head = ""
            if fast_rq:
                if col == 0:
                    head = "".join(
                        f"const int32_t rqm{r} = {rq.mult(f'{c0} + {r}')}, "
                        f"rqe{r} = -({rq.shift(f'{c0} + {r}')});\n"
                        f"const int32_t rqr{r} = (int32_t)((1u << (rqe{r} - 1)) + "
                        f"((uint32_t){zp_y} << rqe{r}));\n" for r in range(4))
                vals = ",\n    ".join(f"edgec_rq_smmlar({a}, rqm{r}, rqr{r}, rqe{r})"
                                       for r, a in enumerate(accs))
            else:
                vals = ",\n    ".join(
                    f"{mbqm}({a}, {rq.mult(f'{c0} + {r}')}, {rq.shift(f'{c0} + {r}')}) + {zp_y}"
                    for r, a in enumerate(accs))
            put = (f"{{\n    const uint32_t codes = edgec_pack4_s8(\n    {vals},\n    "
                   f"{bounds});\n    memcpy(yn + {'p' if col == 0 else 'p1'} * {o} + {c0}, "
                   f"&codes, 4);\n}}\n")
            return head + (put if col == 0 else f"if (p1 != p) {put}")

        channels = gemm.generic("patch", store_generic)
        if self._direct(win, groups):
            pixel = (f"const int8_t *patch = xn + ((oh * {win.sh}) * {win.w} + ow * {win.sw})"
                     f" * {win.c};\n" + channels)
        else:
            gather = (
                f"int8_t *pp = scratch;\n"
                f"for (int kh = 0; kh < {win.kh}; ++kh) {{\n"
                f"    const int ih = oh * {win.sh} - {win.pt} + kh * {win.dh};\n"
                f"    for (int kw = 0; kw < {win.kw}; ++kw) {{\n"
                f"        const int iw = ow * {win.sw} - {win.pl} + kw * {win.dw};\n"
                f"        if (ih >= 0 && ih < {win.h} && iw >= 0 && iw < {win.w}) {{\n"
                f"            memcpy(pp, xn + (ih * {win.w} + iw) * {win.c}"
                f"{' + gr * ' + str(cg) if groups > 1 else ''}, {cg});\n"
                f"        }} else {{\n"
                f"            memset(pp, {zp_x_c}, {cg});\n"
                f"        }}\n"
                f"        pp += {cg};\n"
                f"    }}\n"
                f"}}\n"
            )
            body = gather + "const int8_t *patch = scratch;\n" + channels
            pixel = (f"for (int gr = 0; gr < {groups}; ++gr) {{\n" + indent(body) + "}\n"
                     if groups > 1 else body)
        generic = (
            f"for (int oh = 0; oh < {win.oh}; ++oh) {{\n"
            f"    for (int ow = 0; ow < {win.ow}; ++ow) {{\n"
            f"        int8_t *yp = yn + (oh * {win.ow} + ow) * {o};\n"
            + indent(pixel, 2) + "    }\n}\n"
        )
        dsp = self._dsp(ctx, win, groups, gemm, zp_x_c, npix, store_dsp, store4_dsp,
                        convq and _convq_call(convq, groups, o, gemm.kp, bounds))
        unused = "(void)scratch;\n" if self._direct(win, groups) else ""
        loops = "#ifdef EDGEC_S8_DSP\n" + dsp + "#else\n" + unused + generic + "#endif\n"
        if win.n == 1:
            return sk.wrap(f"const int8_t *xn = {x};\nint8_t *yn = {y};\n" + loops)
        head = (f"const int8_t *xn = {x} + n * {hw_c};\n"
                f"int8_t *yn = {y} + n * {win.oh * win.ow * o};\n")
        return sk.wrap(f"for (int n = 0; n < {win.n}; ++n) {{\n" + indent(head + loops)
                       + "}\n")

    def _dsp(self, ctx: EmitContext, win: Window, groups: int, gemm: Rows, zp_x: str,
             npix: int, store: object, store4: object,
             convq: tuple[str, str] | None) -> str:
        """The DSP path: output pixels two at a time, their receptive fields widened to int16
        into the interleaved patch (:func:`edgec.ops.int8.conv_dsp.im2col`), then the
        pair-table GEMM (C, or ``convq``: (set-up before the pixel loop, the call per pixel
        pair and group) of :func:`_convq_call`)."""
        direct = self._direct(win, groups) and win.c % 4 == 0
        cols = im2col(ctx, win, groups, gemm.kp, direct)
        if convq:
            body = cols + "ctl[6] = (uint32_t)sums[0] << 7;\nctl[7] = (uint32_t)sums[1] << 7;\n"
            body += convq[1]
        else:
            body = cols + gemm.dsp("xq", ["sums[0]", "sums[1]"], store, store4)
        if groups > 1:
            body = f"for (int gr = 0; gr < {groups}; ++gr) {{\n" + indent(body) + "}\n"
        zp4 = "" if direct else f"const uint32_t zp4 = ((uint32_t){zp_x} & 0xFFu) * 0x01010101u;\n"
        return ("edgec_q15a *xq = (edgec_q15a *)(void *)scratch;\n" + zp4
                + (convq[0] if convq else "")
                + f"for (int p = 0; p < {npix}; p += 2) {{\n"
                f"    const int p1 = p + 1 < {npix} ? p + 1 : p;\n" + indent(body) + "}\n")


def _acc_bound(folded: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per channel, a bound of |accumulator| for any input: |bias with the input zero point
    folded in| + 128 · Σ|w| (w: [O, K] int8)."""
    return np.abs(np.asarray(folded, np.int64)) + 128 * np.abs(w.astype(np.int64)).sum(axis=1)


def _convq_call(convq: tuple[str, str, int], groups: int, o: int, kp: int,
                bounds: str) -> tuple[str, str]:
    """(C before the pixel loop, C per pixel pair and group) running the quads in
    ``edgec_convq`` (``convq``: its name, its table (:func:`quad_stream`), a group's words of
    it)."""
    fn, ssym, gsize = convq
    og = o // groups
    gs = f" + gr * {gsize}" if groups > 1 else ""
    gy = f" + gr * {og}" if groups > 1 else ""
    lo4, hi4 = bounds.split(", ")
    head = (f"uint32_t ctl[{CTL_WORDS}];\n"
            "ctl[0] = (uint32_t)(uintptr_t)xq;\n"
            f"ctl[2] = (uint32_t)(uintptr_t)(xq + {2 * kp});\n"
            f"ctl[8] = {lo4};\n"
            f"ctl[9] = {hi4};\n"
            f"ctl[10] = {entry(kp)}u;\n")
    call = (f"ctl[1] = (uint32_t)(uintptr_t)({ssym}{gs});\n"
            f"ctl[3] = (uint32_t)(uintptr_t)(yn + p * {o}{gy});\n"
            f"ctl[4] = (uint32_t)((p1 - p) * {o});\n"
            f"ctl[5] = ctl[3] + {og}u;\n"
            f"{fn}(ctl);\n")
    return head, call


def _smmlar_requant(mult: np.ndarray, shift: np.ndarray, zp_y: int, bound: np.ndarray) -> bool:
    """Whether every channel's requantization takes the SMMLAR form (``smmlar_form``) for any
    input whose accumulator is within ``bound`` [O] (:func:`_acc_bound`)."""
    o = bound.shape[0]
    mult = np.broadcast_to(np.asarray(mult).reshape(-1), (o,))
    shift = np.broadcast_to(np.asarray(shift).reshape(-1), (o,))
    return all(1 <= -int(shift[c]) <= 31
               and smmlar_form(int(mult[c]), int(shift[c]), zp_y, int(bound[c])) is not None
               for c in range(o))
