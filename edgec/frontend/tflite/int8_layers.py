"""int8 builtins that common Keras layers convert to, beyond the core kernels of
:mod:`edgec.frontend.tflite.int8_ops`: Conv2DTranspose (TRANSPOSE_CONV), UpSampling2D and
Resizing (TILE, RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR), GlobalMaxPooling (REDUCE_MAX), PReLU
(PRELU), Maximum / Minimum (MAXIMUM / MINIMUM), GELU, EXP and LOG activations (tables),
LayerNormalization (SQUARED_DIFFERENCE, RSQRT between MEANs, ADD, MUL and SUB).

Each is rewritten onto existing int8 ops with the same integer arithmetic as TFLite's reference
kernel, so the results stay bit-exact:

- TRANSPOSE_CONV accumulates ``(x - zp_in) * w`` in int32 over the taps that reach each output,
  adds the bias and requantizes per output channel like CONV_2D. The same sum is a stride-1
  QConv2D over the input with ``stride - 1`` zero-point codes stuffed between pixels (they add
  ``0 * w``), padded by ``k - 1 - pad_before``, with the filter flipped in both spatial axes.
- TILE only moves codes (Reshape → Expand → Reshape), and RESIZE_NEAREST_NEIGHBOR too (two
  Gathers, the float translation).
- REDUCE_MAX over the spatial axes of an NHWC (or NWC) tensor is a max pool with the whole
  extent as its window; TFLite compares the codes and needs the input's quantization on the
  output.
- PRELU, MAXIMUM and MINIMUM are the int8 ops of :mod:`edgec.ops.int8.prelu`.
- SQUARED_DIFFERENCE and RSQRT are the int8 ops of :mod:`edgec.ops.int8.squared_difference` and
  :mod:`edgec.ops.int8.rsqrt`.
- GELU, EXP and LOG are 256-entry tables (TFLite ``LUTPopulate``: dequantize, the float function,
  round half away from zero, add the output zero point, clamp).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgec.frontend.tflite import float_ops as f
from edgec.frontend.tflite.context import Ctx, Translator
from edgec.frontend.tflite.int8_ops import (
    _check_activations,
    _lut,
    _need_int8_weights,
    _quant,
    act_attrs,
)
from edgec.frontend.tflite.reader import TflOperator
from edgec.ops.int8 import lut


def transpose_conv(cx: Ctx, op: TflOperator) -> None:
    _check_activations(cx)
    x = cx.x(2)
    xs = cx.shape(x)
    if len(xs) != 4:
        raise cx.fail(f"TRANSPOSE_CONV needs a 4-D NHWC input, got shape {list(xs)}")
    n, h, w_, c = xs
    wt = _need_int8_weights(cx, 1, "the filter")
    o, kh, kw, ci = cx.shape_n(wt, 4, "the filter")
    if ci != c:
        raise cx.fail(f"input channels {c} differ from the filter's {ci}")
    out_shape = [int(v) for v in np.asarray(cx.need_const(0, "output_shape")).reshape(-1)]
    geo = f.transpose_conv_geometry(cx, xs, out_shape, kh, kw)
    sh, sw = geo["strides"]
    y = x
    if sh > 1 or sw > 1:  # stride - 1 zero-point codes after every pixel
        y = f.reshape(cx, y, (n, h, 1, w_, 1, c))
        y = cx.add("Pad", [y, f.int64(cx, "pads", [0] * 6 + [0, 0, sh - 1, 0, sw - 1, 0])],
                   mode="constant")
        y = f.reshape(cx, y, (n, h * sh, w_ * sw, c))
    # full correlation: k - 1 codes before the first pixel, then TFLite's crop; after the
    # stuffed tensor (length size * stride) as many as give the requested output length
    begin = [k - 1 - b for k, b in zip((kh, kw), geo["begin"], strict=True)]
    end = [out + b - size * s for out, b, size, s in
           zip(out_shape[1:3], geo["begin"], (h, w_), (sh, sw), strict=True)]
    if any(begin) or any(end):
        y = cx.add("Pad", [y, f.int64(cx, "pads", [0, *begin, 0, 0, *end, 0])],
                   mode="constant")
    flipped = cx.add_const("filter", np.ascontiguousarray(cx.const(wt)[:, ::-1, ::-1, :]))
    cx.g.tensors[flipped].quant = cx.g.quant(wt)
    bias = cx.x(3) if cx.n_in > 3 else ""
    cx.add("QConv2D", [y, flipped, bias], out=cx.y(0), strides=[1, 1], dilations=[1, 1],
           pads=[0, 0, 0, 0], **act_attrs(cx))


def reduce_max(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    xs = cx.shape(x)
    rank = len(xs)
    axes = sorted({cx.axis(a, rank) for a in np.asarray(cx.need_const(1, "axes")).reshape(-1)})
    q_in, q_out = _quant(cx, x, "input"), _quant(cx, cx.y(0), "output")
    if q_in.scalar() != q_out.scalar():
        raise cx.fail("int8 REDUCE_MAX needs the same quantization on input and output")
    if rank == 4 and axes == [1, 2]:
        n, h, w_, c = xs
        pooled = x
    elif rank == 3 and axes == [1]:
        n, h, c = xs
        w_ = 1
        pooled = f.reshape(cx, x, (n, h, 1, c))
    else:
        raise cx.fail(f"int8 REDUCE_MAX over axes {axes} of a rank-{rank} tensor is not "
                      f"supported (the spatial axes of NHWC or NWC: global max pooling)")
    y = cx.add("QMaxPool2D", [pooled], kernel=[h, w_], strides=[1, 1], pads=[0, 0, 0, 0],
               act_min=-128, act_max=127)
    f.reshape(cx, y, cx.tfl_out(0).shape, out=cx.y(0))


def _gelu(approximate: bool) -> Callable[[np.ndarray], np.ndarray]:
    def fn(x: np.ndarray) -> np.ndarray:
        if approximate:
            inner = np.float32(0.7978845608) * (x + np.float32(0.044715) * x * x * x)
            return np.float32(0.5) * x * (np.float32(1) + np.tanh(inner))
        erf = np.vectorize(math.erf)(x.astype(np.float64) * math.sqrt(0.5)).astype(np.float32)
        return np.float32(0.5) * x * (np.float32(1) + erf)

    return fn


def resize_bilinear(cx: Ctx, op: TflOperator) -> None:
    if len(cx.shape(cx.x(0))) != 4:
        raise cx.fail(f"RESIZE_BILINEAR needs a 4-D NHWC input, got {list(cx.shape(cx.x(0)))}")
    size = [int(v) for v in np.asarray(cx.need_const(1, "size")).reshape(-1)]
    cx.add("QResizeBilinear", [cx.x(0)], out=cx.y(0), size=size,
           align_corners=int(bool(cx.opts.get("alignCorners"))),
           half_pixel_centers=int(bool(cx.opts.get("halfPixelCenters"))))


def _plain(kind: str) -> Translator:
    def plain(cx: Ctx, op: TflOperator) -> None:
        cx.add(kind, [cx.x(0), cx.x(1)], out=cx.y(0))

    return plain


def rsqrt(cx: Ctx, op: TflOperator) -> None:
    _quant(cx, cx.x(0), "input")
    cx.add("QRsqrt", [cx.x(0)], out=cx.y(0))


def prelu(cx: Ctx, op: TflOperator) -> None:
    _quant(cx, cx.x(1), "the slope")
    cx.add("QPRelu", [cx.x(0), cx.x(1)], out=cx.y(0))


#: int8 builtins of common Keras layers (merged into the int8 table by ``tables``)
INT8_LAYER_OPS: dict[str, Translator] = {
    "EXP": _lut(lambda qi, qo, o: lut.float_lut(qi, qo, np.exp)),
    "GELU": _lut(lambda qi, qo, o: lut.float_lut(qi, qo, _gelu(bool(o.get("approximate"))))),
    "LOG": _lut(lambda qi, qo, o: lut.float_lut(qi, qo, np.log)),
    "MAXIMUM": _plain("QMaximum"),
    "MINIMUM": _plain("QMinimum"),
    "PRELU": prelu,
    "REDUCE_MAX": reduce_max,
    "RESIZE_BILINEAR": resize_bilinear,
    "RESIZE_NEAREST_NEIGHBOR": f.resize_nearest_neighbor,
    "RSQRT": rsqrt,
    "SQUARED_DIFFERENCE": _plain("QSquaredDifference"),
    "TILE": f.tile,
    "TRANSPOSE_CONV": transpose_conv,
}
