"""int8 TFLite builtins → edgec's int8 ops (docs/int8.md): one function per builtin, one table.

The int8 ops are NHWC like TFLite, so nothing is transposed. Every tensor keeps its TFLite
quantization (``Tensor.quant``): the ops read their multipliers from it. Fused activations
become the ``act_min``/``act_max`` clamp of the output (TFLite's
``CalculateActivationRangeQuantized``); elementwise activations become 256-entry tables
(``QLut``) computed at compile time from numpy models of TFLite's integer kernels. Data movement
(RESHAPE, TRANSPOSE, slices, PAD with the zero point...) reuses the float translations, whose ops
carry int8 codes and their quantization unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgec.frontend.tflite import float_ops as f
from edgec.frontend.tflite.context import Ctx, Translator
from edgec.frontend.tflite.reader import TflOperator
from edgec.ir import Quant
from edgec.ops.int8 import lut
from edgec.ops.int8.arith import add_rescales
from edgec.ops.int8.fixedpoint import activation_range, quantize_multiplier

_ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


def _quant(cx: Ctx, name: str, what: str) -> Quant:
    q = cx.g.quant(name) if name in cx.g.tensors else None
    q = q if q is not None else cx.quants.get(name)
    if q is None:
        raise cx.fail(f"{what} '{name}' is int8 without quantization parameters")
    return q


def act_attrs(cx: Ctx) -> dict[str, int]:
    """The fused activation as the output's clamp range."""
    code = f.fused_code(cx)
    if code not in _ACT_NAMES:
        raise cx.fail(f"fused activation {code} is not supported on int8 (NONE, RELU, "
                      f"RELU_N1_TO_1, RELU6)")
    scale, zp = _quant(cx, cx.y(0), "output").scalar()
    lo, hi = activation_range(_ACT_NAMES[code], scale, zp)
    return {"act_min": lo, "act_max": hi}


def _need_int8_weights(cx: Ctx, i: int, what: str) -> str:
    name = cx.x(i)
    if cx.const(name) is None or cx.dtype(name) != "int8":
        t = cx.tfl_in(i)
        raise cx.fail(f"{what} must be constant int8 weights, got {t.type if t else 'none'}"
                      f"{' at run time' if cx.const(name) is None else ''}")
    return name


def _check_activations(cx: Ctx) -> None:
    """Hybrid (dynamic-range) models: int8 weights with float activations."""
    for i in range(cx.n_in):
        t = cx.tfl_in(i)
        if t is not None and t.data is None and t.type == "FLOAT32":
            raise cx.fail("float activations with int8 weights (dynamic-range quantization) "
                          "are not supported; convert with full-integer quantization")


# -- quantization at the edges -----------------------------------------------------------------

def quantize(cx: Ctx, op: TflOperator) -> None:
    src = cx.dtype(cx.x(0))
    if src == "float32":
        cx.add("Quantize", [cx.x(0)], out=cx.y(0))
    elif src == "int8":
        cx.add("Requantize", [cx.x(0)], out=cx.y(0))
    else:
        raise cx.fail(f"QUANTIZE from {src} is not supported (float32 or int8 → int8)")


def dequantize(cx: Ctx, op: TflOperator) -> None:
    t = cx.tfl_in(0)
    if cx.const(cx.x(0)) is not None:
        raise cx.fail(f"DEQUANTIZE of constant {t.type if t else ''} weights (a weight-only "
                      f"quantized model) is not supported; convert with full-integer int8 "
                      f"quantization or without quantization")
    if cx.dtype(cx.x(0)) != "int8":
        raise cx.fail(f"DEQUANTIZE from {cx.dtype(cx.x(0))} is not supported (int8 → float32)")
    cx.add("Dequantize", [cx.x(0)], out=cx.y(0))


# -- kernels -----------------------------------------------------------------------------------

def fully_connected(cx: Ctx, op: TflOperator) -> None:
    _check_activations(cx)
    if int(cx.opts.get("weightsFormat", 0) or 0) != 0:
        raise cx.fail("shuffled FULLY_CONNECTED weights are not supported")
    x, w = cx.x(0), _need_int8_weights(cx, 1, "the weights")
    m, k = cx.shape_n(w, 2, "the weights")
    xs = cx.shape(x)
    size = int(np.prod(xs, dtype=np.int64))
    if size % k:
        raise cx.fail(f"input shape {list(xs)} does not flatten to rows of {k}")
    if not cx.opts.get("keepNumDims"):
        x = f.reshape(cx, x, (size // k, k))
    cx.add("QFullyConnected", [x, w, cx.x(2)], out=cx.y(0), **act_attrs(cx))


def batch_matmul(cx: Ctx, op: TflOperator) -> None:
    _check_activations(cx)
    cx.add("QBatchMatMul", [cx.x(0), cx.x(1)], out=cx.y(0),
           adj_x=1 if cx.opts.get("adjX") else 0, adj_y=1 if cx.opts.get("adjY") else 0)


def _geometry(cx: Ctx, h: int, w: int, kh: int, kw: int, dilated: bool) -> dict[str, Any]:
    sh, sw = int(cx.opts.get("strideH", 1)), int(cx.opts.get("strideW", 1))
    dh = int(cx.opts.get("dilationHFactor", 1) or 1) if dilated else 1
    dw = int(cx.opts.get("dilationWFactor", 1) or 1) if dilated else 1
    pt, pb = f.padding(cx, h, kh, sh, dh)
    pl, pr = f.padding(cx, w, kw, sw, dw)
    out: dict[str, Any] = {"strides": [sh, sw], "pads": [pt, pl, pb, pr]}
    if dilated:
        out["dilations"] = [dh, dw]
    return out


def conv_2d(cx: Ctx, op: TflOperator) -> None:
    _check_activations(cx)
    x = cx.x(0)
    n, h, w_, c = cx.shape_n(x, 4, "the NHWC input")
    wt = _need_int8_weights(cx, 1, "the filter")
    o, kh, kw, ci = cx.shape_n(wt, 4, "the filter")
    if c % ci:
        raise cx.fail(f"input channels {c} are not a multiple of the filter's {ci}")
    cx.add("QConv2D", [x, wt, cx.x(2)], out=cx.y(0), **_geometry(cx, h, w_, kh, kw, True),
           **act_attrs(cx))


def depthwise_conv_2d(cx: Ctx, op: TflOperator) -> None:
    _check_activations(cx)
    x = cx.x(0)
    n, h, w_, c = cx.shape_n(x, 4, "the NHWC input")
    wt = _need_int8_weights(cx, 1, "the filter")
    one, kh, kw, cm = cx.shape_n(wt, 4, "the filter")
    if one != 1 or cm % c:
        raise cx.fail(f"depthwise filter shape {[one, kh, kw, cm]} does not fit {c} input "
                      f"channels")
    cx.add("QDepthwiseConv2D", [x, wt, cx.x(2)], out=cx.y(0),
           **_geometry(cx, h, w_, kh, kw, True), depth_multiplier=cm // c, **act_attrs(cx))


def _pool(kind: str) -> Translator:
    def pool(cx: Ctx, op: TflOperator) -> None:
        n, h, w_, c = cx.shape_n(cx.x(0), 4, "the NHWC input")
        kh, kw = int(cx.opts.get("filterHeight", 1)), int(cx.opts.get("filterWidth", 1))
        cx.add(kind, [cx.x(0)], out=cx.y(0), kernel=[kh, kw],
               **_geometry(cx, h, w_, kh, kw, False), **act_attrs(cx))

    return pool


def _binary(kind: str) -> Translator:
    def binary(cx: Ctx, op: TflOperator) -> None:
        cx.add(kind, [cx.x(0), cx.x(1)], out=cx.y(0), **act_attrs(cx))

    return binary


def _add_sub(kind: str) -> Translator:
    """ADD / SUB, refused where TFLite's output rescale ``2·max(s1, s2) / (2^20·s_out)`` is not
    below 1 (an output scale tiny next to the inputs', as the converter gives ``x - x``): TFLite's
    Prepare requires it (``QuantizeMultiplierSmallerThanOneExp``); the interpreter's ADD aborts
    the process on such a model and its SUB returns wrong codes, so no result exists to match."""
    binary = _binary(kind)

    def add_sub(cx: Ctx, op: TflOperator) -> None:
        (s1, _), (s2, _), (so, _) = (_quant(cx, cx.x(0), "input 0").scalar(),
                                     _quant(cx, cx.x(1), "input 1").scalar(),
                                     _quant(cx, cx.y(0), "output").scalar())
        ratio = add_rescales(s1, s2, so)[2]
        if ratio >= 1.0 or quantize_multiplier(ratio)[1] > 0:
            raise cx.fail(f"the output rescale 2*max(s1, s2) / (2^20*s_out) = {ratio:.6g} is not "
                          f"below 1 (input scales {s1:.6g}, {s2:.6g}, output scale {so:.6g}: "
                          f"the output scale is too small); int8 {op.op} is supported where it "
                          f"is below 1, as TFLite requires (its ADD aborts on such a model, its "
                          f"SUB gives wrong codes)")
        binary(cx, op)

    return add_sub


def concatenation(cx: Ctx, op: TflOperator) -> None:
    if f.fused_code(cx):
        raise cx.fail("a fused activation on int8 CONCATENATION is not supported")
    cx.add("QConcat", [cx.x(i) for i in range(cx.n_in)], out=cx.y(0),
           axis=int(cx.opts.get("axis", 0) or 0))


def mean(cx: Ctx, op: TflOperator) -> None:
    axes = [int(a) for a in np.asarray(cx.need_const(1, "axes")).reshape(-1)]
    cx.add("QMean", [cx.x(0)], out=cx.y(0), axes=axes,
           keepdims=1 if cx.opts.get("keepDims") else 0)


def softmax(cx: Ctx, op: TflOperator) -> None:
    cx.add("QSoftmax", [cx.x(0)], out=cx.y(0), beta=float(cx.opts.get("beta", 1.0)))


LutFn = Callable[[Quant, Quant, dict[str, Any]], np.ndarray]


def _lut(fn: LutFn) -> Translator:
    def table(cx: Ctx, op: TflOperator) -> None:
        q_in, q_out = _quant(cx, cx.x(0), "input"), _quant(cx, cx.y(0), "output")
        cx.add("QLut", [cx.x(0)], out=cx.y(0), table=fn(q_in, q_out, cx.opts))

    return table


#: every int8 builtin edgec translates
INT8_OPS: dict[str, Translator] = {
    "ADD": _add_sub("QAdd"),
    "AVERAGE_POOL_2D": _pool("QAveragePool2D"),
    "BATCH_MATMUL": batch_matmul,
    "CONCATENATION": concatenation,
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "DEQUANTIZE": dequantize,
    "EXPAND_DIMS": f.expand_dims,
    "FULLY_CONNECTED": fully_connected,
    "GATHER": f.gather,
    "HARD_SWISH": _lut(lambda qi, qo, o: lut.hard_swish_lut(qi, qo)),
    "LEAKY_RELU": _lut(lambda qi, qo, o: lut.leaky_relu_lut(qi, qo, float(o.get("alpha", 0.2)))),
    "LOGISTIC": _lut(lambda qi, qo, o: lut.logistic_lut(qi, qo)),
    "MAX_POOL_2D": _pool("QMaxPool2D"),
    "MEAN": mean,
    "MUL": _binary("QMul"),
    "PACK": f.pack,
    "PAD": f.pad,
    "PADV2": f.pad,
    "QUANTIZE": quantize,
    "RELU": _lut(lambda qi, qo, o: lut.relu_lut(qi, qo, 0.0, None)),
    "RELU6": _lut(lambda qi, qo, o: lut.relu_lut(qi, qo, 0.0, 6.0)),
    "RELU_0_TO_1": _lut(lambda qi, qo, o: lut.relu_lut(qi, qo, 0.0, 1.0)),
    "RELU_N1_TO_1": _lut(lambda qi, qo, o: lut.relu_lut(qi, qo, -1.0, 1.0)),
    "RESHAPE": f.reshape_op,
    "SHAPE": f.shape_op,
    "SLICE": f.slice_op,
    "SOFTMAX": softmax,
    "SPLIT": f.split,
    "SPLIT_V": f.split_v,
    "SQUEEZE": f.squeeze,
    "STRIDED_SLICE": f.strided_slice,
    "SUB": _add_sub("QSub"),
    "TANH": _lut(lambda qi, qo, o: lut.tanh_lut(qi, qo)),
    "TRANSPOSE": f.transpose_op,
    "UNPACK": f.unpack,
}
