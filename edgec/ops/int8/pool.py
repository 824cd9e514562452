"""QMaxPool2D and QAveragePool2D: TFLite's int8 MAX_POOL_2D / AVERAGE_POOL_2D
(reference_integer_ops/pooling.h), NHWC, input and output quantized alike (TFLite requires it).

Attributes ``kernel`` [kh, kw], ``strides``, ``pads`` [top, left, bottom, right],
``act_min``/``act_max``. Only taps inside the input count: the max starts at -128, the average
divides the int32 sum by the number of valid taps rounding half away from zero
(``(acc ± n/2) / n``), then both clamp to the activation range.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, register, unsupported
from edgec.ops.int8.common import QOp, Window, act_range, indent, quant_of, require_dtype

Outs = list[tuple[Shape, str]]


def _window(node: Node, g: Graph) -> Window:
    k = [int(v) for v in node.attr("kernel", [])]
    if len(k) != 2:
        raise unsupported(node, f"kernel {k}: expected [height, width]")
    return Window(node, g.shape(node.inputs[0]), k[0], k[1], dilated=False)


class _QPool(QOp):
    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        q_in = quant_of(node, g, node.inputs[0], "input")
        q_out = g.quant(node.outputs[0])
        if q_out is not None and not q_out.same_as(q_in):
            raise unsupported(node, "input and output must share scale and zero point "
                                    f"({q_in.describe()} vs {q_out.describe()})")
        act_range(node)
        win = _window(node, g)
        return [((win.n, win.oh, win.ow, win.c), "int8")]

    def _pool(self, win: Window, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        lo, hi = act_range(node)
        return [np.clip(self._pool(_window(node, g), x), lo, hi).astype(np.int8)]

    def _combine(self, win: Window) -> tuple[str, str, str]:
        """C: accumulator initialisation, per-tap update and the final value of ``acc``."""
        raise NotImplementedError

    def emit(self, node: Node, ctx: EmitContext) -> str:
        win = _window(node, ctx.g)
        lo, hi = act_range(node)
        init, update, final = self._combine(win)
        pixel = (
            win.c_tap_range("ow", "w")
            + f"int8_t *yp = yn + (oh * {win.ow} + ow) * {win.c};\n"
            + f"for (int c = 0; c < {win.c}; ++c) {{\n"
            + indent(
                init
                + "for (int kh = kh0; kh < kh1; ++kh) {\n"
                + f"    const int8_t *xr = xn + (ih + kh) * {win.w * win.c} + c;\n"
                + "    for (int kw = kw0; kw < kw1; ++kw) {\n"
                + f"        const int32_t v = xr[(iw + kw) * {win.c}];\n"
                + indent(update, 2) + "    }\n}\n" + final
                + f"acc = acc < {lo} ? {lo} : acc;\n"
                + f"yp[c] = (int8_t)(acc > {hi} ? {hi} : acc);\n"
            )
            + "}\n"
        )
        loops = (
            f"for (int oh = 0; oh < {win.oh}; ++oh) {{\n" + indent(win.c_tap_range("oh", "h"))
            + f"    for (int ow = 0; ow < {win.ow}; ++ow) {{\n" + indent(pixel, 2) + "    }\n}\n"
        )
        x, y = ctx.inp(0), ctx.out(0)
        if win.n == 1:
            return f"const int8_t *xn = {x};\nint8_t *yn = {y};\n" + loops
        head = (f"const int8_t *xn = {x} + n * {win.h * win.w * win.c};\n"
                f"int8_t *yn = {y} + n * {win.oh * win.ow * win.c};\n")
        return f"for (int n = 0; n < {win.n}; ++n) {{\n" + indent(head + loops) + "}\n"


@register
class QMaxPool2D(_QPool):
    types = ("QMaxPool2D",)

    def _pool(self, win: Window, x: np.ndarray) -> np.ndarray:
        xp = win.padded(x, -129)  # below every code: padding never wins
        out = np.full((win.n, win.oh, win.ow, win.c), -128, np.int64)
        for kh in range(win.kh):
            for kw in range(win.kw):
                out = np.maximum(out, win.taps(xp, kh, kw))
        return out

    def _combine(self, win: Window) -> tuple[str, str, str]:
        return "int32_t acc = -128;\n", "if (v > acc) acc = v;\n", ""


@register
class QAveragePool2D(_QPool):
    types = ("QAveragePool2D",)

    def _pool(self, win: Window, x: np.ndarray) -> np.ndarray:
        xp = win.padded(x, 0)
        acc = np.zeros((win.n, win.oh, win.ow, win.c), np.int64)
        count = np.zeros((win.oh, win.ow), np.int64)
        for kh in range(win.kh):
            for kw in range(win.kw):
                acc += win.taps(xp, kh, kw)
                count += win.valid(kh, kw)
        n = np.maximum(count, 1)[None, :, :, None]
        half = n // 2
        # C division truncates toward zero
        pos = (acc + half) // n
        neg = -((-(acc - half)) // n)
        return np.where(acc > 0, pos, neg)

    def _combine(self, win: Window) -> tuple[str, str, str]:
        final = (
            "const int32_t cnt = (kh1 > kh0 ? kh1 - kh0 : 0) * (kw1 > kw0 ? kw1 - kw0 : 0);\n"
            "if (cnt > 0) acc = acc > 0 ? (acc + cnt / 2) / cnt : (acc - cnt / 2) / cnt;\n"
        )
        return "int32_t acc = 0;\n", "acc += v;\n", final
