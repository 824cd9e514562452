"""QResizeBilinear: TFLite's int8 RESIZE_BILINEAR (reference_ops ``ResizeBilinearInteger``),
NHWC, on the codes (input and output share one quantization; nothing is requantized).

Per axis the source position is a Q10 fixed-point value: ``scale = round(2^10 * in / out)``
(``(in - 1) / (out - 1)`` with ``align_corners``), ``pos = o * scale`` (``+ scale / 2 - 2^9``
with ``half_pixel_centers``), lower index ``max(pos / 2^10, 0)``, upper ``min(ceil, in - 1)``,
fraction ``d = pos - 2^10 * lower`` (in [-2^9, 2^10)). The four taps' weights
``(2^10 - dy)(2^10 - dx)``, ``dy (2^10 - dx)``... sum to 2^20; the weighted sum is divided by 2^20
with rounding: ``(v ± 2^19) / 2^20`` truncated (double rounding, the interpreter's reference
kernel) or ``(v + 2^19) >> 20`` (single). The sum fits int32: ``|weight| <= 1536^2`` per tap.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, int_list, register, unsupported
from edgec.ops.int8.common import QOp, require_dtype
from edgec.ops.int8.fixedpoint import rounding_of

Outs = list[tuple[Shape, str]]
ONE = 1 << 10


def axis_taps(size_in: int, size_out: int, align_corners: bool, half_pixel: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, Q10 fraction) of every output position along one axis."""
    scale = (ONE * size_in + size_out // 2) // size_out
    if align_corners and size_out > 1:
        scale = (ONE * (size_in - 1) + (size_out - 1) // 2) // (size_out - 1)
    o = np.arange(size_out, dtype=np.int64)
    pos = o * scale + (scale // 2 - (1 << 9) if half_pixel else 0)
    trunc = np.trunc(pos / ONE).astype(np.int64)  # C division: toward zero
    lo = np.maximum(trunc, 0)
    hi = np.minimum(np.trunc((pos + ONE - 1) / ONE).astype(np.int64), size_in - 1)
    return lo, hi, pos - ONE * lo


@register
class QResizeBilinear(QOp):
    types = ("QResizeBilinear",)

    def _geometry(self, node: Node, g: Graph) -> tuple[int, int]:
        size = int_list(node.attr("size", []))
        xs = g.shape(node.inputs[0])
        if len(xs) != 4 or len(size) != 2 or min(size) < 1:
            raise unsupported(node, f"needs a 4-D NHWC input and size [h, w]; got {list(xs)}, "
                              f"{size}")
        if node.attr("align_corners", 0) and node.attr("half_pixel_centers", 0):
            raise unsupported(node, "align_corners and half_pixel_centers exclude each other")
        return size[0], size[1]

    def infer(self, node: Node, g: Graph) -> Outs:
        require_dtype(node, g, node.inputs[0], "int8", "input")
        h2, w2 = self._geometry(node, g)
        n, _, _, c = g.shape(node.inputs[0])
        return [((n, h2, w2, c), "int8")]

    def _taps(self, node: Node, g: Graph) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        h2, w2 = self._geometry(node, g)
        _, h, w, _ = g.shape(node.inputs[0])
        ac, hp = bool(node.attr("align_corners", 0)), bool(node.attr("half_pixel_centers", 0))
        return axis_taps(h, h2, ac, hp), axis_taps(w, w2, ac, hp)

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        (y0, y1, dy), (x0, x1, dx) = self._taps(node, g)
        v = x.astype(np.int64)
        wy0, wy1 = (ONE - dy)[:, None, None], dy[:, None, None]
        wx0, wx1 = (ONE - dx)[None, :, None], dx[None, :, None]
        acc = (v[:, y0][:, :, x0] * wy0 * wx0 + v[:, y1][:, :, x0] * wy1 * wx0
               + v[:, y0][:, :, x1] * wy0 * wx1 + v[:, y1][:, :, x1] * wy1 * wx1)
        if rounding_of(g) == "single":
            out = (acc + (1 << 19)) >> 20
        else:
            out = np.sign(acc) * ((np.abs(acc) + (1 << 19)) >> 20)
        return [np.clip(out, -128, 127).astype(np.int8)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        (y0, y1, dy), (x0, x1, dx) = self._taps(node, g)
        n, h, w, c = g.shape(node.inputs[0])
        _, h2, w2, _ = g.shape(node.outputs[0])
        tab = {k: ctx.const_array(f"rsz_{k}", np.asarray(v, np.int32), "int32_t", param=False)
               for k, v in (("y0", y0 * w * c), ("y1", y1 * w * c), ("dy", dy),
                            ("x0", x0 * c), ("x1", x1 * c), ("dx", dx))}
        x, y = ctx.inp(0), ctx.out(0)
        if rounding_of(g) == "single":
            div = "(int8_t)((acc + (1 << 19)) >> 20)"
        else:
            div = "(int8_t)((acc + (acc > 0 ? (1 << 19) : -(1 << 19))) / (1 << 20))"
        return f"""\
for (int b = 0; b < {n}; ++b) {{
    const int8_t *xb = {x} + b * {h * w * c};
    int8_t *yb = {y} + b * {h2 * w2 * c};
    for (int oy = 0; oy < {h2}; ++oy) {{
        const int32_t wy1 = {tab['dy']}[oy], wy0 = {ONE} - wy1;
        for (int ox = 0; ox < {w2}; ++ox) {{
            const int32_t wx1 = {tab['dx']}[ox], wx0 = {ONE} - wx1;
            const int8_t *p00 = xb + {tab['y0']}[oy] + {tab['x0']}[ox];
            const int8_t *p01 = xb + {tab['y0']}[oy] + {tab['x1']}[ox];
            const int8_t *p10 = xb + {tab['y1']}[oy] + {tab['x0']}[ox];
            const int8_t *p11 = xb + {tab['y1']}[oy] + {tab['x1']}[ox];
            int8_t *q = yb + (oy * {w2} + ox) * {c};
            for (int ch = 0; ch < {c}; ++ch) {{
                const int32_t acc = p00[ch] * wy0 * wx0 + p10[ch] * wy1 * wx0
                                    + p01[ch] * wy0 * wx1 + p11[ch] * wy1 * wx1;
                q[ch] = {div};
            }}
        }}
    }}
}}
"""
