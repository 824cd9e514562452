"""The float ops of a mixed-precision graph (its float islands) as float32 TFLite builtins.

``tflite_writer`` writes the int8 ops and calls :func:`write_float` for every other node; the
islands' boundaries are the graph's Dequantize/Quantize nodes (DEQUANTIZE/QUANTIZE). Only
builtins that edgec's own TFLite front-end reads back are emitted:

- unary: Abs, Neg, Exp, Log, Sqrt → ABS, NEG, EXP, LOG, SQRT; Relu, Sigmoid, Tanh, HardSwish,
  LeakyRelu, Gelu, Elu (alpha 1) → RELU, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, GELU, ELU;
  Clip → RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 or MAXIMUM + MINIMUM; Reciprocal → DIV(1, x);
  Pow by a constant 2, 3, 0.5, -1 → MUL, MUL + MUL, SQRT, DIV(1, x);
- binary: Add, Sub, Mul, Div (broadcasting) → ADD, SUB, MUL, DIV; Max, Min of two → MAXIMUM,
  MINIMUM; PRelu → PRELU;
- ReduceSum/Mean/Max/Min/Prod → SUM, MEAN, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD;
  GlobalAveragePool → MEAN over H, W;
- Softmax / LogSoftmax on the last axis → SOFTMAX / LOG_SOFTMAX;
- Gemm (alpha = beta = 1, no transA) and MatMul by a constant 2-D matrix → FULLY_CONNECTED;
  MatMul of two run-time tensors → BATCH_MATMUL;
- LayerNormalization → MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL (scale), ADD (bias);
- 2-D Conv (groups: plain or depthwise) and MaxPool/AveragePool (NCHW in edgec) → TRANSPOSE to
  NHWC, CONV_2D / DEPTHWISE_CONV_2D / MAX_POOL_2D / AVERAGE_POOL_2D (SAME or VALID, other
  padding as a PAD: zeros for Conv and a count_include_pad AveragePool, the lowest float for
  MaxPool), TRANSPOSE back;
- Concat → CONCATENATION; views and Transpose are written by the int8 writer (any dtype).

A fused activation (``_act``) becomes the builtin's fused RELU/RELU6/RELU_N1_TO_1 or the
activation's own builtin after it. Any other float op returns False (the caller's one-line
error names it and says to write ``.onnx``): GRU has no builtin; LSTM is not written as
UNIDIRECTIONAL_SEQUENCE_LSTM, whose state is variables carried between invocations while an
ONNX LSTM starts each run from its initial state; Erf, 1-D/3-D Conv and pools have none that
edgec's front-end reads.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.tflite.builder import TflBuilder
from edgec.ir import Graph, Node
from edgec.ops.conv import window_axes
from edgec.ops.reduce import reduce_axes
from edgec.ops.shape_ops import norm_axes
from edgec.ops.softmax import softmax_layout
from edgec.ops.unary import unary_params

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]

_UNARY = {"Abs": "ABS", "Neg": "NEG", "Exp": "EXP", "Log": "LOG", "Sqrt": "SQRT",
          "Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH"}
_BINARY = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV"}
_MINMAX = {"Max": "MAXIMUM", "Min": "MINIMUM"}
_REDUCE = {"ReduceSum": "SUM", "ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX",
           "ReduceMin": "REDUCE_MIN", "ReduceProd": "REDUCE_PROD"}
#: Clip bounds → TFLite activation builtin (the frontend's reverse)
_CLIPS = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, 1.0): "RELU_0_TO_1",
          (0.0, float("inf")): "RELU"}
#: activations TFLite kernels apply as a fused clamp
_FUSED_CODES = {"RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}


class Out(Protocol):
    """What the .tflite writer offers a float op."""

    g: Graph
    b: TflBuilder

    def t(self, name: str) -> int: ...

    def i32(self, base: str, values: Any) -> int: ...

    def where(self, n: Node) -> str: ...


def _f32(w: Out, base: str, value: Any) -> int:
    return w.b.const(base, np.asarray(value, np.float32))


def _temp(w: Out, base: str, shape: Any) -> int:
    return w.b.tensor(base, tuple(int(d) for d in shape), "float32")


def _act_builtin(op: str, p: dict[str, float]) -> str | None:
    """The parameterless builtin of an activation, if there is one."""
    if op == "Clip":
        return _CLIPS.get((float(p["min"]), float(p["max"])))
    if op == "Elu" and float(p["alpha"]) == 1.0:
        return "ELU"
    return _UNARY.get(op) if op in ("Relu", "Sigmoid", "Tanh", "HardSwish") else None


def _activation(w: Out, n: Node, op: str, p: dict[str, float], x: int, y: int,
                shape: Any) -> bool:
    """Activation ``op`` with parameters ``p`` from tensor index ``x`` to ``y``."""
    b = w.b
    name = _act_builtin(op, p)
    if name is not None:
        b.op(name, [x], [y])
    elif op == "LeakyRelu":
        b.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", alpha=float(p["alpha"]))
    elif op == "Gelu":
        b.op("GELU", [x], [y], "GeluOptions", approximate=bool(p["tanh"]))
    elif op == "Pow":
        return _pow(w, n, float(p["exponent"]), x, y, shape)
    elif op == "Clip":
        lo, hi = float(p["min"]), float(p["max"])
        y_name = n.outputs[0]
        if lo != float("-inf"):
            mid = y if hi == float("inf") else _temp(w, f"{y_name}_clip_lo", shape)
            b.op("MAXIMUM", [x, _f32(w, f"{y_name}_min", lo)], [mid])
            x = mid
        if hi != float("inf"):
            b.op("MINIMUM", [x, _f32(w, f"{y_name}_max", hi)], [y])
        elif lo == float("-inf"):
            b.op("RESHAPE", [x, w.i32(f"{y_name}_shape", list(shape))], [y], "ReshapeOptions",
                 newShape=np.asarray(list(shape), np.int32))
    else:
        return False
    return True


def _pow(w: Out, n: Node, e: float, x: int, y: int, shape: Any) -> bool:
    """Pow by a constant exponent, the cases edgec's C computes without powf (the same
    arithmetic): x·x, x·x·x, sqrt, 1/x; TFLite's POW is not read by edgec's front-end."""
    b, name = w.b, n.outputs[0]
    if e == 2.0:
        b.op("MUL", [x, x], [y], "MulOptions")
    elif e == 3.0:
        sq = _temp(w, f"{name}_square", shape)
        b.op("MUL", [x, x], [sq], "MulOptions")
        b.op("MUL", [sq, x], [y], "MulOptions")
    elif e == 0.5:
        b.op("SQRT", [x], [y])
    elif e == -1.0:
        b.op("DIV", [_f32(w, f"{name}_one", 1.0), x], [y], "DivOptions")
    else:
        return False
    return True


def _with_act(w: Out, n: Node, write: Any, fuses: bool = True) -> bool:
    """Write a kernel node through ``write(y_index, fused_code)``, applying its ``_act``:
    as the builtin's fused activation (when the builtin ``fuses`` one), or as the
    activation's builtin after it."""
    y = n.outputs[0]
    act = n.attrs.get("_act")
    if act is None:
        write(w.t(y), 0)
        return True
    op, p = act[0], dict(act[1])
    code = _FUSED_CODES.get(_act_builtin(op, p) or "") if fuses else None
    if code is not None:
        write(w.t(y), code)
        return True
    shape = w.g.shape(y)
    pre = _temp(w, f"{y}_pre_act", shape)
    write(pre, 0)
    if not _activation(w, n, op, p, pre, w.t(y), shape):
        raise EdgecError(f"{w.where(n)}: fused activation {op} has no TFLite builtin; write "
                         f"the model as .onnx")
    return True


def _binary(w: Out, n: Node) -> bool:
    name = _BINARY[n.op]
    a, c = (w.t(i) for i in n.inputs[:2])
    return _with_act(w, n, lambda y, code: w.b.op(
        name, [a, c], [y], f"{name.capitalize()}Options", fusedActivationFunction=code))


def _reduce(w: Out, n: Node, name: str, axes: list[int], keep: bool) -> bool:
    x = n.inputs[0]
    w.b.op(name, [w.t(x), w.i32(f"{n.outputs[0]}_axes", axes)], [w.t(n.outputs[0])],
           "ReducerOptions", keepDims=keep)
    return True


def _last_axis(n: Node, g: Graph) -> bool:
    """Does (Log)Softmax normalise rows of the last axis (TFLite's only form; before opset 13
    ONNX flattens from ``axis`` on)?"""
    shape = g.shape(n.inputs[0])
    if not shape:
        return False
    _, size, inner = softmax_layout(n, g, shape)
    return inner == 1 and size == shape[-1]


def _fully_connected(w: Out, n: Node, x: str, weights: np.ndarray, bias: int) -> bool:
    """FULLY_CONNECTED of ``x`` [..., K] by ``weights`` [M, K]."""
    y = n.outputs[0]
    wi = _f32(w, f"{y}_weights", np.ascontiguousarray(weights))
    keep = len(w.g.shape(y)) != 2
    xi = w.t(x)
    return _with_act(w, n, lambda yi, code: w.b.op(
        "FULLY_CONNECTED", [xi, wi, bias], [yi], "FullyConnectedOptions",
        fusedActivationFunction=code, keepNumDims=keep))


def _gemm(w: Out, n: Node) -> bool:
    g = w.g
    b = g.const(n.inputs[1])
    if (b is None or n.attr("transA", 0) or float(n.attr("alpha", 1.0)) != 1.0
            or float(n.attr("beta", 1.0)) != 1.0 or len(g.shape(n.inputs[0])) != 2):
        return False
    weights = np.asarray(b, np.float32) if n.attr("transB", 0) else np.asarray(b, np.float32).T
    bias = -1
    if len(n.inputs) > 2 and n.inputs[2]:
        c = g.const(n.inputs[2])
        m = weights.shape[0]
        if c is None or np.asarray(c).size not in (1, m) or (
                np.asarray(c).ndim == 2 and np.asarray(c).shape[0] != 1):
            return False
        bias = _f32(w, f"{n.outputs[0]}_bias", np.broadcast_to(np.asarray(c).reshape(-1), (m,)))
    return _fully_connected(w, n, n.inputs[0], weights, bias)


def _matmul(w: Out, n: Node) -> bool:
    g = w.g
    a, bname = n.inputs[:2]
    b = g.const(bname)
    if b is not None and np.asarray(b).ndim == 2 and len(g.shape(a)) >= 2:
        return _fully_connected(w, n, a, np.asarray(b, np.float32).T, -1)
    if b is None and len(g.shape(a)) >= 2 and len(g.shape(bname)) >= 2:
        xa, xb = w.t(a), w.t(bname)
        return _with_act(w, n, lambda y, code: w.b.op(
            "BATCH_MATMUL", [xa, xb], [y], "BatchMatMulOptions", adjX=False, adjY=False),
            fuses=False)  # no fused activation: an activation after it
    return False


def _layer_norm(w: Out, n: Node) -> bool:
    g = w.g
    if any(o for o in n.outputs[1:]):
        return False
    x = n.inputs[0]
    shape = g.shape(x)
    rank = len(shape)
    axis = norm_axes(n, [int(n.attr("axis", -1))], rank)[0]
    axes = list(range(axis, rank))
    stat = tuple(d if k < axis else 1 for k, d in enumerate(shape))
    y = n.outputs[0]
    b = w.b

    def step(name: str, ins: list[int], suffix: str, out_shape: Any,
             options: str | None = None, **fields: Any) -> int:
        out = _temp(w, f"{y}_{suffix}", out_shape)
        b.op(name, ins, [out], options, **fields)
        return out

    xi = w.t(x)
    ax = w.i32(f"{y}_axes", axes)
    mean = step("MEAN", [xi, ax], "mean", stat, "ReducerOptions", keepDims=True)
    d = step("SUB", [xi, mean], "centered", shape, "SubOptions")
    sq = step("MUL", [d, d], "squared", shape, "MulOptions")
    var = step("MEAN", [sq, ax], "variance", stat, "ReducerOptions", keepDims=True)
    eps = _f32(w, f"{y}_epsilon", float(n.attr("epsilon", 1e-5)))
    ve = step("ADD", [var, eps], "variance_eps", stat, "AddOptions")
    inv = step("RSQRT", [ve], "inv_std", stat)
    params = [p for p in n.inputs[1:3] if p]
    norm = step("MUL", [d, inv], "normalized", shape, "MulOptions") if params else None
    if not params:
        b.op("MUL", [d, inv], [w.t(y)], "MulOptions")
        return True
    assert norm is not None
    scale = w.t(n.inputs[1])
    if len(params) == 1:
        b.op("MUL", [norm, scale], [w.t(y)], "MulOptions")
        return True
    scaled = step("MUL", [norm, scale], "scaled", shape, "MulOptions")
    b.op("ADD", [scaled, w.t(n.inputs[2])], [w.t(y)], "AddOptions")
    return True


def _tfl_padding(axes: list[Any], mode: str) -> tuple[list[int], int] | None:
    """(explicit [t, b, l, r] pads to write as a PAD, TFLite padding: 0 SAME, 1 VALID) giving
    the windows of edgec's resolved ``axes``, or None. ``mode``: "conv" (padding taps add 0),
    "max" (padding never wins), "count" (AveragePool counting the padding: a PAD of zeros, not
    SAME, whose kernel leaves padding out) or "exclude" (AveragePool leaving it out: SAME or
    VALID only)."""
    same = valid = True
    pads: list[int] = []
    fits = True
    for a in axes:
        span = (a.kernel - 1) * a.dilation + 1
        end = (a.size_out - 1) * a.stride + span - a.size_in - a.pad_begin  # padding used
        out_same = -(-a.size_in // a.stride)
        total = max((out_same - 1) * a.stride + span - a.size_in, 0)
        same = same and a.size_out == out_same and a.pad_begin == total // 2
        valid = valid and a.pad_begin == 0 and end <= 0
        # a count_include_pad window past the end padding (ceil_mode) counts only taps up to
        # it, which no PAD reproduces
        fits = fits and end >= 0 and (mode != "count" or end <= a.pad_end)
        pads += [a.pad_begin, max(end, 0)]
    if valid:
        return [], 1
    if same and mode != "count":
        return [], 0
    if mode == "exclude" or not fits:
        return None
    return pads, 1


def _nhwc(w: Out, n: Node, x: str, pads: list[int], fill: float) -> int:
    """Tensor index of ``x`` (NCHW) transposed to NHWC and padded."""
    nb, c, h, wd = w.g.shape(x)
    t = _temp(w, f"{n.outputs[0]}_nhwc_in", (nb, h, wd, c))
    w.b.op("TRANSPOSE", [w.t(x), w.i32(f"{n.outputs[0]}_perm_in", NCHW_TO_NHWC)], [t],
           "TransposeOptions")
    if not any(pads):
        return t
    pt, pb, pl, pr = pads
    padded = _temp(w, f"{n.outputs[0]}_padded", (nb, h + pt + pb, wd + pl + pr, c))
    spec = w.i32(f"{n.outputs[0]}_pads", [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    if fill == 0.0:
        w.b.op("PAD", [t, spec], [padded], "PadOptions")
    else:
        w.b.op("PADV2", [t, spec, _f32(w, f"{n.outputs[0]}_pad_value", fill)], [padded],
               "PadV2Options")
    return padded


def _nchw_out(w: Out, n: Node, write: Any) -> bool:
    """``write(nhwc_output_index, fused_code)``, then TRANSPOSE to the NCHW output (and the
    node's ``_act`` when it is no fused clamp: an elementwise builtin after the TRANSPOSE)."""
    y = n.outputs[0]
    nb, c, h, wd = w.g.shape(y)
    t = _temp(w, f"{y}_nhwc", (nb, h, wd, c))
    act = n.attrs.get("_act")
    code = 0
    if act is not None:
        code = _FUSED_CODES.get(_act_builtin(act[0], dict(act[1])) or "", -1)
    write(t, max(code, 0))
    out = w.t(y) if code >= 0 else _temp(w, f"{y}_pre_act", (nb, c, h, wd))
    w.b.op("TRANSPOSE", [t, w.i32(f"{y}_perm_out", NHWC_TO_NCHW)], [out], "TransposeOptions")
    if code < 0 and not _activation(w, n, act[0], dict(act[1]), out, w.t(y), (nb, c, h, wd)):
        raise EdgecError(f"{w.where(n)}: fused activation {act[0]} has no TFLite builtin; "
                         f"write the model as .onnx")
    return True


def _conv(w: Out, n: Node) -> bool:
    g = w.g
    wt = g.const(n.inputs[1])
    if wt is None or len(g.shape(n.inputs[0])) != 4:
        return False
    wt = np.asarray(wt, np.float32)
    o, cg, kh, kw = wt.shape
    c = g.shape(n.inputs[0])[1]
    axes = window_axes(n, g.shape(n.inputs[0])[2:], [kh, kw])
    geo = _tfl_padding(axes, "conv")
    if geo is None:
        return False
    pads, pad = geo
    if not pads:
        pads = [0, 0, 0, 0]
    y = n.outputs[0]
    groups = int(n.attr("group", 1))
    depthwise = groups == c and cg == 1 and groups > 1
    if depthwise:
        filt = _f32(w, f"{y}_filter", np.ascontiguousarray(wt.transpose(1, 2, 3, 0)))
    else:
        filt = _f32(w, f"{y}_filter", np.ascontiguousarray(wt.transpose(0, 2, 3, 1)))
    if len(n.inputs) > 2 and n.inputs[2]:
        bias = w.t(n.inputs[2])
    else:  # TFLite's float convolutions require one
        bias = _f32(w, f"{y}_bias", np.zeros(o, np.float32))
    x = _nhwc(w, n, n.inputs[0], pads, 0.0)
    (sh, sw), (dh, dw) = ((a.stride for a in axes), (a.dilation for a in axes))
    fields = dict(padding=pad, strideH=sh, strideW=sw, dilationHFactor=dh, dilationWFactor=dw)
    if depthwise:
        return _nchw_out(w, n, lambda yi, code: w.b.op(
            "DEPTHWISE_CONV_2D", [x, filt, bias], [yi], "DepthwiseConv2DOptions",
            depthMultiplier=o // c, fusedActivationFunction=code, **fields))
    return _nchw_out(w, n, lambda yi, code: w.b.op(
        "CONV_2D", [x, filt, bias], [yi], "Conv2DOptions", fusedActivationFunction=code,
        **fields))


def _pool(w: Out, n: Node) -> bool:
    g = w.g
    xs = g.shape(n.inputs[0])
    if len(xs) != 4 or any(int(d) != 1 for d in n.attr("dilations", [1, 1])):
        return False
    kh, kw = (int(k) for k in n.attr("kernel_shape"))
    axes = window_axes(n, xs[2:], [kh, kw], pool=True, ceil_mode=bool(n.attr("ceil_mode", 0)))
    is_max = n.op == "MaxPool"
    mode = "max" if is_max else "count" if n.attr("count_include_pad", 0) else "exclude"
    geo = _tfl_padding(axes, mode)
    if geo is None:
        return False
    pads, pad = geo
    if not pads:
        pads = [0, 0, 0, 0]
    fill = float(np.finfo(np.float32).min) if is_max else 0.0
    x = _nhwc(w, n, n.inputs[0], pads, fill)
    sh, sw = (a.stride for a in axes)
    return _nchw_out(w, n, lambda yi, code: w.b.op(
        "MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", [x], [yi], "Pool2DOptions",
        padding=pad, strideH=sh, strideW=sw, filterHeight=kh, filterWidth=kw,
        fusedActivationFunction=code))


def write_float(w: Out, n: Node) -> bool:
    """Write float node ``n`` as TFLite builtins; False when it has no TFLite form."""
    g, b, op = w.g, w.b, n.op
    if g.tensor(n.outputs[0]).dtype != "float32":
        return False
    if op in ("Elu", "LeakyRelu", "Gelu", "Clip", "Relu", "Sigmoid", "Tanh", "HardSwish", "Pow"):
        return _activation(w, n, op, unary_params(n, g), w.t(n.inputs[0]), w.t(n.outputs[0]),
                           g.shape(n.outputs[0]))
    if op in _UNARY:
        b.op(_UNARY[op], [w.t(n.inputs[0])], [w.t(n.outputs[0])])
        return True
    if op == "Reciprocal":
        b.op("DIV", [_f32(w, f"{n.outputs[0]}_one", 1.0), w.t(n.inputs[0])],
             [w.t(n.outputs[0])], "DivOptions")
        return True
    if op in _BINARY and len(n.inputs) == 2:
        return _binary(w, n)
    if op in _MINMAX and len(n.inputs) == 2 and "_act" not in n.attrs:
        b.op(_MINMAX[op], [w.t(i) for i in n.inputs], [w.t(n.outputs[0])])
        return True
    if op == "PRelu":
        b.op("PRELU", [w.t(i) for i in n.inputs], [w.t(n.outputs[0])])
        return True
    if op in _REDUCE:
        rank = len(g.shape(n.inputs[0]))
        axes = reduce_axes(n, g, rank)
        return bool(axes) and _reduce(w, n, _REDUCE[op], axes, bool(n.attr("keepdims", 1)))
    if op == "GlobalAveragePool" and len(g.shape(n.inputs[0])) == 4:
        return _reduce(w, n, "MEAN", [2, 3], True)
    if op in ("Softmax", "LogSoftmax") and _last_axis(n, g):
        if op == "Softmax":
            b.op("SOFTMAX", [w.t(n.inputs[0])], [w.t(n.outputs[0])], "SoftmaxOptions", beta=1.0)
        else:
            b.op("LOG_SOFTMAX", [w.t(n.inputs[0])], [w.t(n.outputs[0])])
        return True
    if op == "Concat":
        rank = len(g.shape(n.outputs[0]))
        axis = norm_axes(n, [int(n.attr("axis", 0))], rank)[0]
        b.op("CONCATENATION", [w.t(i) for i in n.inputs], [w.t(n.outputs[0])],
             "ConcatenationOptions", axis=axis)
        return True
    if op == "Gemm":
        return _gemm(w, n)
    if op == "MatMul":
        return _matmul(w, n)
    if op == "LayerNormalization":
        return _layer_norm(w, n)
    if op == "Conv":
        return _conv(w, n)
    if op in ("MaxPool", "AveragePool"):
        return _pool(w, n)
    return False
