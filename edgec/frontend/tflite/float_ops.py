"""float32 TFLite builtins → edgec's ONNX-semantics ops: one function per builtin, one table.

TFLite is NHWC; edgec's float Conv and pools are NCHW, so CONV_2D, DEPTHWISE_CONV_2D and the
pools are translated as ``Transpose(NHWC→NCHW) → kernel → fused activation →
Transpose(NCHW→NHWC)``; ``passes.transposes`` cancels the inverse pairs between layers. SAME/VALID
padding is resolved to explicit pads here (TFLite's rule: ``out = ceil(in / stride)``, the extra
padding row/column at the end). Fused activations become activation nodes after the kernel
(``passes.fuse_activations`` folds them back into the kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgec.frontend.tflite.context import Ctx, Translator
from edgec.frontend.tflite.reader import TflOperator

NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]

#: TFLite ActivationFunctionType → (edgec unary op, Clip bounds). TFLite's kernels apply a fused
#: activation as an output clamp, so only the ReLU family exists there (TANH/SIGN_BIT are the
#: recurrent ops' cell activations, see unidirectional_sequence_lstm)
_FUSED: dict[int, tuple[str, tuple[float, float] | None] | None] = {
    0: None,
    1: ("Relu", None),
    2: ("Clip", (-1.0, 1.0)),  # RELU_N1_TO_1
    3: ("Clip", (0.0, 6.0)),  # RELU6
}
_FUSED_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


# -- shared pieces -----------------------------------------------------------------------------

def fused_code(cx: Ctx) -> int:
    return int(cx.opts.get("fusedActivationFunction", 0) or 0)


def activation(cx: Ctx, x: str, code: int, out: str | None = None) -> str:
    """``x`` with TFLite's fused activation ``code`` applied (written to ``out`` if given)."""
    if code not in _FUSED:
        raise cx.fail(f"fused activation {_FUSED_NAMES.get(code, code)} is not supported here "
                      f"(TFLite kernels clamp with NONE, RELU, RELU_N1_TO_1 or RELU6)")
    spec = _FUSED[code]
    if spec is None:
        if out is None:
            return x
        return cx.add("Identity", [x], out=out)
    kind, bounds = spec
    if bounds is None:
        return cx.add(kind, [x], out=out)
    lo = cx.add_const("min", np.float32(bounds[0]))
    hi = cx.add_const("max", np.float32(bounds[1]))
    return cx.add("Clip", [x, lo, hi], out=out)


def with_act(cx: Ctx, op_type: str, inputs: Sequence[str], out: str | None = None,
             **attrs: Any) -> str:
    """``op_type(inputs)`` followed by the operator's fused activation; the last node writes
    ``out`` (default: the operator's output 0)."""
    out = out if out is not None else cx.y(0)
    code = fused_code(cx)
    if _FUSED.get(code, ()) is None:
        return cx.add(op_type, inputs, out=out, **attrs)
    return activation(cx, cx.add(op_type, inputs, **attrs), code, out=out)


def int64(cx: Ctx, base: str, values: Sequence[int] | np.ndarray) -> str:
    return cx.add_const(base, np.asarray(values, np.int64).reshape(-1))


def reshape(cx: Ctx, x: str, shape: Sequence[int], out: str | None = None) -> str:
    if out is None and tuple(cx.shape(x)) == tuple(shape):
        return x
    return cx.add("Reshape", [x, int64(cx, "shape", shape)], out=out)


def transpose(cx: Ctx, x: str, perm: Sequence[int], out: str | None = None) -> str:
    return cx.add("Transpose", [x], out=out, perm=[int(p) for p in perm])


def padding(cx: Ctx, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(pad before, pad after) of one spatial axis for the operator's SAME/VALID padding."""
    mode = int(cx.opts.get("padding", 0) or 0)
    if mode == 1:  # VALID
        return 0, 0
    if mode != 0:
        raise cx.fail(f"padding type {mode} is not supported (SAME, VALID)")
    extent = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _nhwc_input(cx: Ctx, what: str) -> tuple[str, tuple[int, ...]]:
    x = cx.x(0)
    shape = cx.shape(x)
    if len(shape) != 4:
        raise cx.fail(f"{what} needs a 4-D NHWC input, got shape {list(shape)}")
    return x, shape


def _weights_nchw(cx: Ctx, w: str, perm: Sequence[int]) -> str:
    data = cx.const(w)
    if data is not None:
        return cx.add_const("weights", np.ascontiguousarray(np.transpose(data, perm)))
    return transpose(cx, w, perm)


# -- convolutions and pools --------------------------------------------------------------------

def conv_2d(cx: Ctx, op: TflOperator) -> None:
    x, (n, h, w_, c) = _nhwc_input(cx, "CONV_2D")
    wt = cx.x(1)
    o, kh, kw, ci = cx.shape_n(wt, 4, "the filter")
    if c % ci:
        raise cx.fail(f"input channels {c} are not a multiple of the filter's {ci}")
    sh, sw = int(cx.opts.get("strideH", 1)), int(cx.opts.get("strideW", 1))
    dh = int(cx.opts.get("dilationHFactor", 1) or 1)
    dw = int(cx.opts.get("dilationWFactor", 1) or 1)
    pt, pb = padding(cx, h, kh, sh, dh)
    pl, pr = padding(cx, w_, kw, sw, dw)
    inputs = [transpose(cx, x, NHWC_TO_NCHW), _weights_nchw(cx, wt, NHWC_TO_NCHW)]
    if cx.x(2):
        inputs.append(cx.x(2))
    y = with_act(cx, "Conv", inputs, out=cx.fresh("conv"), strides=[sh, sw],
                 dilations=[dh, dw], pads=[pt, pl, pb, pr], group=c // ci,
                 kernel_shape=[kh, kw])
    transpose(cx, y, NCHW_TO_NHWC, out=cx.y(0))


def depthwise_conv_2d(cx: Ctx, op: TflOperator) -> None:
    x, (n, h, w_, c) = _nhwc_input(cx, "DEPTHWISE_CONV_2D")
    wt = cx.x(1)
    one, kh, kw, cm = cx.shape_n(wt, 4, "the filter")
    if one != 1 or cm % c:
        raise cx.fail(f"depthwise filter shape {[one, kh, kw, cm]} does not fit {c} input "
                      f"channels")
    sh, sw = int(cx.opts.get("strideH", 1)), int(cx.opts.get("strideW", 1))
    dh = int(cx.opts.get("dilationHFactor", 1) or 1)
    dw = int(cx.opts.get("dilationWFactor", 1) or 1)
    pt, pb = padding(cx, h, kh, sh, dh)
    pl, pr = padding(cx, w_, kw, sw, dw)
    # [1, KH, KW, C*m] → [C*m, 1, KH, KW]: output channel c*m + j reads input channel c
    inputs = [transpose(cx, x, NHWC_TO_NCHW), _weights_nchw(cx, wt, [3, 0, 1, 2])]
    if cx.x(2):
        inputs.append(cx.x(2))
    y = with_act(cx, "Conv", inputs, out=cx.fresh("conv"), strides=[sh, sw],
                 dilations=[dh, dw], pads=[pt, pl, pb, pr], group=c, kernel_shape=[kh, kw])
    transpose(cx, y, NCHW_TO_NHWC, out=cx.y(0))


def _pool(kind: str) -> Translator:
    def pool(cx: Ctx, op: TflOperator) -> None:
        x, (n, h, w_, c) = _nhwc_input(cx, op.op)
        kh, kw = int(cx.opts.get("filterHeight", 1)), int(cx.opts.get("filterWidth", 1))
        sh, sw = int(cx.opts.get("strideH", 1)), int(cx.opts.get("strideW", 1))
        pt, pb = padding(cx, h, kh, sh, 1)
        pl, pr = padding(cx, w_, kw, sw, 1)
        y = with_act(cx, kind, [transpose(cx, x, NHWC_TO_NCHW)], out=cx.fresh("pool"),
                     kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr])
        transpose(cx, y, NCHW_TO_NHWC, out=cx.y(0))

    return pool


# -- dense -------------------------------------------------------------------------------------

def fully_connected(cx: Ctx, op: TflOperator) -> None:
    if int(cx.opts.get("weightsFormat", 0) or 0) != 0:
        raise cx.fail("shuffled FULLY_CONNECTED weights are not supported")
    x, w = cx.x(0), cx.x(1)
    m, k = cx.shape_n(w, 2, "the weights")
    xs = cx.shape(x)
    size = int(np.prod(xs, dtype=np.int64))
    if size % k:
        raise cx.fail(f"input shape {list(xs)} does not flatten to rows of {k}")
    rows = size // k
    out_shape = (*xs[:-1], m) if cx.opts.get("keepNumDims") else (rows, m)
    inputs = [reshape(cx, x, (rows, k)), w] + ([cx.x(2)] if cx.x(2) else [])
    if out_shape == (rows, m):
        with_act(cx, "Gemm", inputs, transB=1)
    else:
        y = with_act(cx, "Gemm", inputs, out=cx.fresh("gemm"), transB=1)
        reshape(cx, y, out_shape, out=cx.y(0))


def batch_matmul(cx: Ctx, op: TflOperator) -> None:
    a, b = cx.x(0), cx.x(1)
    if cx.opts.get("adjX"):
        a = transpose(cx, a, _swap_last(len(cx.shape(a))))
    if cx.opts.get("adjY"):
        b = transpose(cx, b, _swap_last(len(cx.shape(b))))
    cx.add("MatMul", [a, b], out=cx.y(0))


def _swap_last(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


# -- elementwise -------------------------------------------------------------------------------

def _binary(kind: str) -> Translator:
    def binary(cx: Ctx, op: TflOperator) -> None:
        with_act(cx, kind, [cx.x(0), cx.x(1)])

    return binary


def _plain(kind: str, **attrs: Any) -> Translator:
    def plain(cx: Ctx, op: TflOperator) -> None:
        cx.add(kind, [cx.x(i) for i in range(cx.n_in)], out=cx.y(0), **attrs)

    return plain


def _clip(lo: float, hi: float) -> Translator:
    def clip(cx: Ctx, op: TflOperator) -> None:
        cx.add("Clip", [cx.x(0), cx.add_const("min", np.float32(lo)),
                        cx.add_const("max", np.float32(hi))], out=cx.y(0))

    return clip


def leaky_relu(cx: Ctx, op: TflOperator) -> None:
    cx.add("LeakyRelu", [cx.x(0)], out=cx.y(0), alpha=float(cx.opts.get("alpha", 0.2)))


def gelu(cx: Ctx, op: TflOperator) -> None:
    cx.add("Gelu", [cx.x(0)], out=cx.y(0),
           approximate="tanh" if cx.opts.get("approximate") else "none")


def rsqrt(cx: Ctx, op: TflOperator) -> None:
    cx.add("Reciprocal", [cx.add("Sqrt", [cx.x(0)])], out=cx.y(0))


def square(cx: Ctx, op: TflOperator) -> None:
    cx.add("Mul", [cx.x(0), cx.x(0)], out=cx.y(0))


def squared_difference(cx: Ctx, op: TflOperator) -> None:
    d = cx.add("Sub", [cx.x(0), cx.x(1)])
    cx.add("Mul", [d, d], out=cx.y(0))


def softmax(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    beta = float(cx.opts.get("beta", 1.0))
    if beta != 1.0:
        x = cx.add("Mul", [x, cx.add_const("beta", np.float32(beta))])
    cx.add("Softmax", [x], out=cx.y(0), axis=-1)


def cast(cx: Ctx, op: TflOperator) -> None:
    src, dst = cx.tfl_in(0), cx.tfl_out(0)
    val = cx.const(cx.x(0))
    if val is not None and dst.dtype is not None:
        cx.set_const(cx.y(0), val.astype(dst.dtype))
        return
    if src is not None and src.type == dst.type:
        cx.alias(cx.y(0), cx.x(0))
        return
    raise cx.fail(f"a run-time CAST from {src.type if src else '?'} to {dst.type} is not "
                  f"supported (edgec computes float32 at run time)")


# -- shapes and data movement ------------------------------------------------------------------

def _resolve_shape(cx: Ctx, size: int, new: Sequence[int]) -> tuple[int, ...]:
    dims = [int(d) for d in new]
    if dims.count(-1) > 1:
        raise cx.fail(f"new shape {dims} has more than one -1")
    known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
    if -1 in dims:
        if known == 0 or size % known:
            raise cx.fail(f"cannot reshape {size} elements to {dims}")
        dims[dims.index(-1)] = size // known
    if int(np.prod(dims, dtype=np.int64)) != size:
        raise cx.fail(f"cannot reshape {size} elements to {dims}")
    return tuple(dims)


def reshape_op(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    size = int(np.prod(cx.shape(x), dtype=np.int64))
    if cx.n_in > 1 and cx.x(1):
        new = cx.const(cx.x(1))
        if new is None:
            raise cx.fail("the new shape (input 1) must be known at compile time")
        new_dims = [int(v) for v in np.asarray(new).reshape(-1)]
    elif cx.opts.get("newShape") is not None:
        new_dims = [int(v) for v in cx.opts["newShape"]]
    else:
        new_dims = list(cx.tfl_out(0).shape)
    shape = _resolve_shape(cx, size, new_dims)
    val = cx.const(x)
    if val is not None:
        cx.set_const(cx.y(0), val.reshape(shape))
        return
    cx.add("Reshape", [x, int64(cx, "shape", shape)], out=cx.y(0))


def squeeze(cx: Ctx, op: TflOperator) -> None:
    xs = cx.shape(cx.x(0))
    dims = [int(d) % max(len(xs), 1) for d in (cx.opts.get("squeezeDims") or [])]
    keep = [d for i, d in enumerate(xs) if (i not in dims if dims else d != 1)]
    _reshape_to(cx, keep)


def expand_dims(cx: Ctx, op: TflOperator) -> None:
    xs = list(cx.shape(cx.x(0)))
    axis = cx.axis(np.asarray(cx.need_const(1, "axis")).reshape(-1)[0], len(xs) + 1)
    _reshape_to(cx, xs[:axis] + [1] + xs[axis:])


def _reshape_to(cx: Ctx, shape: Sequence[int]) -> None:
    val = cx.const(cx.x(0))
    if val is not None:
        cx.set_const(cx.y(0), val.reshape(tuple(shape)))
    else:
        cx.add("Reshape", [cx.x(0), int64(cx, "shape", shape)], out=cx.y(0))


def shape_op(cx: Ctx, op: TflOperator) -> None:
    dtype = cx.tfl_out(0).dtype or "int32"
    cx.set_const(cx.y(0), np.asarray(cx.shape(cx.x(0)), dtype))


def pack(cx: Ctx, op: TflOperator) -> None:
    axis = int(cx.opts.get("axis", 0) or 0)
    names = [cx.x(i) for i in range(cx.n_in)]
    vals = [cx.const(n) for n in names]
    if len({cx.shape(n) for n in names}) != 1:
        raise cx.fail(f"PACK inputs differ in shape: {[list(cx.shape(n)) for n in names]}")
    if all(v is not None for v in vals):
        cx.set_const(cx.y(0), np.stack(vals, axis=axis))  # type: ignore[arg-type]
        return
    shape = list(cx.shape(names[0]))
    axis = cx.axis(axis, len(shape) + 1)
    parts = [reshape(cx, n, shape[:axis] + [1] + shape[axis:]) for n in names]
    cx.add("Concat", parts, out=cx.y(0), axis=axis)


def unpack(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    shape = list(cx.shape(x))
    if not shape:
        raise cx.fail("cannot unpack a scalar")
    axis = cx.axis(cx.opts.get("axis", 0) or 0, len(shape))
    num = shape[axis]
    if int(cx.opts.get("num", num) or num) != num or len(op.outputs) != num:
        raise cx.fail(f"UNPACK num {cx.opts.get('num')} with {len(op.outputs)} outputs does not "
                      f"match axis {axis} of size {num}")
    outs = [cx.fresh("split") for _ in range(num)]
    cx.add_multi("Split", [x, int64(cx, "split", [1] * num)], outs, axis=axis)
    for i, o in enumerate(outs):
        reshape(cx, o, shape[:axis] + shape[axis + 1:], out=cx.y(i))


def split(cx: Ctx, op: TflOperator) -> None:
    axis = int(np.asarray(cx.need_const(0, "axis")).reshape(-1)[0])
    x = cx.x(1)
    shape = cx.shape(x)
    if not shape:
        raise cx.fail("cannot split a scalar")
    axis = cx.axis(axis, len(shape))
    num = int(cx.opts.get("numSplits", len(op.outputs)))
    if num != len(op.outputs):
        raise cx.fail(f"num_splits {num} but {len(op.outputs)} outputs")
    if shape[axis] % num:
        raise cx.fail(f"axis {axis} of size {shape[axis]} does not split into {num}")
    outs = [cx.y(i) for i in range(num)]
    cx.add_multi("Split", [x, int64(cx, "split", [shape[axis] // num] * num)], outs, axis=axis)


def split_v(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    shape = cx.shape(x)
    sizes = [int(v) for v in np.asarray(cx.need_const(1, "size_splits")).reshape(-1)]
    axis = cx.axis(np.asarray(cx.need_const(2, "axis")).reshape(-1)[0], len(shape))
    if -1 in sizes:
        sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
    outs = [cx.y(i) for i in range(len(sizes))]
    cx.add_multi("Split", [x, int64(cx, "split", sizes)], outs, axis=axis)


def concatenation(cx: Ctx, op: TflOperator) -> None:
    names = [cx.x(i) for i in range(cx.n_in)]
    axis = int(cx.opts.get("axis", 0) or 0)
    vals = [cx.const(n) for n in names]
    if all(v is not None for v in vals) and fused_code(cx) == 0:
        cx.set_const(cx.y(0), np.concatenate(vals, axis=axis))  # type: ignore[arg-type]
        return
    with_act(cx, "Concat", names, axis=axis)


def transpose_op(cx: Ctx, op: TflOperator) -> None:
    perm = [int(p) for p in np.asarray(cx.need_const(1, "perm")).reshape(-1)]
    transpose(cx, cx.x(0), perm, out=cx.y(0))


def gather(cx: Ctx, op: TflOperator) -> None:
    """Constant indices: ``Gather``; int32 indices at run time (an Embedding's token ids):
    ``RuntimeGather`` (out-of-range indices clamped, where TFLite stops with an error)."""
    if int(cx.opts.get("batchDims", 0) or 0):
        raise cx.fail("GATHER with batch_dims is not supported")
    axis = int(cx.opts.get("axis", 0) or 0)
    if cx.const(cx.x(1)) is None:
        if cx.dtype(cx.x(1)) != "int32":
            raise cx.fail(f"GATHER indices at run time must be int32, got "
                          f"{cx.dtype(cx.x(1))}")
        cx.add("RuntimeGather", [cx.x(0), cx.x(1)], out=cx.y(0), axis=axis)
        return
    cx.add("Gather", [cx.x(0), cx.x(1)], out=cx.y(0), axis=axis)


def select(cx: Ctx, op: TflOperator) -> None:
    """SELECT / SELECT_V2 (broadcasting): ``Where``; TFLite writes it before the GATHER of an
    Embedding, wrapping negative token ids (``id < 0 ? id + n : id``) on int32 at run time."""
    cond, x = cx.shape(cx.x(0)), cx.shape(cx.x(1))
    if op.op == "SELECT" and cond != x and len(cond) == 1 and len(x) > 1:
        raise cx.fail(f"SELECT of rows by a 1-D condition {list(cond)} over {list(x)} is not "
                      "supported (same shapes, or SELECT_V2's broadcasting)")
    cx.add("Where", [cx.x(0), cx.x(1), cx.x(2)], out=cx.y(0))


def slice_op(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    shape = cx.shape(x)
    begin = [int(v) for v in np.asarray(cx.need_const(1, "begin")).reshape(-1)]
    size = [int(v) for v in np.asarray(cx.need_const(2, "size")).reshape(-1)]
    end = [d if s == -1 else b + s for b, s, d in zip(begin, size, shape, strict=True)]
    _slice(cx, x, begin, end, list(range(len(shape))), [1] * len(shape), out=cx.y(0))


def _slice(cx: Ctx, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
           steps: Sequence[int], out: str | None = None) -> str:
    return cx.add("Slice", [x, int64(cx, "starts", starts), int64(cx, "ends", ends),
                            int64(cx, "axes", axes), int64(cx, "steps", steps)], out=out)


def _bits(v: Any) -> int:
    return int(v or 0)


def _offset_slice(cx: Ctx, shape: Sequence[int], begin: list[int], end: list[int],
                  strides: list[int], masks: int) -> tuple[list[int], list[int]]:
    """STRIDED_SLICE with ``offset``: ``end`` is a size added to the start (a negative start
    counts from the end first). TFLite's kernel neither clamps such a slice nor honours masks
    or negative strides with it (it reads outside the input), so only masks of 0, positive
    strides and slices inside the input are compiled; the result is plain (start, stop) pairs."""
    if masks:
        raise cx.fail("STRIDED_SLICE with offset=true and a begin/end/ellipsis/new-axis/shrink "
                      "mask is not supported")
    if len(begin) != len(shape) or len(end) != len(shape) or len(strides) != len(shape):
        raise cx.fail("STRIDED_SLICE with offset=true needs begin, end and strides for every "
                      "axis")
    starts, stops = [], []
    for d, b, e, st in zip(shape, begin, end, strides, strict=True):
        a = b + d if b < 0 else b
        z = a + e
        if st <= 0 or not 0 <= a <= z <= d:
            raise cx.fail(f"STRIDED_SLICE with offset=true: begin {b}, size {e}, stride {st} "
                          f"on an axis of {d} is not supported (only positive strides and "
                          "slices inside the input: TFLite's kernel reads outside it otherwise)")
        starts.append(a)
        stops.append(z)
    return starts, stops


def strided_slice(cx: Ctx, op: TflOperator) -> None:
    """numpy's basic indexing (which TFLite's STRIDED_SLICE follows): masks → an index tuple →
    a Slice over the input axes + a Reshape for the removed (shrink) and added (new) axes."""
    x = cx.x(0)
    shape = cx.shape(x)
    begin = [int(v) for v in np.asarray(cx.need_const(1, "begin")).reshape(-1)]
    end = [int(v) for v in np.asarray(cx.need_const(2, "end")).reshape(-1)]
    strides = ([int(v) for v in np.asarray(cx.need_const(3, "strides")).reshape(-1)]
               if cx.n_in > 3 and cx.x(3) else [1] * len(begin))
    if -(2**31) in strides:
        raise cx.fail("a STRIDED_SLICE stride of INT32_MIN is not supported (TFLite's kernel "
                      "does not support it either)")
    bm, em = _bits(cx.opts.get("beginMask")), _bits(cx.opts.get("endMask"))
    el, na = _bits(cx.opts.get("ellipsisMask")), _bits(cx.opts.get("newAxisMask"))
    sh = _bits(cx.opts.get("shrinkAxisMask"))
    if any(sh & (1 << i) and st < 0 for i, st in enumerate(strides)):
        raise cx.fail("a STRIDED_SLICE shrink axis with a negative stride is not supported "
                      "(TFLite's kernel reads outside the input there)")
    offset = bool(cx.opts.get("offset"))
    if offset:
        begin, end = _offset_slice(cx, shape, begin, end, strides, bm | em | el | na | sh)
        bm, em = 0, 0
    index: list[Any] = []
    for i in range(len(begin)):
        bit = 1 << i
        if el & bit:
            index.append(Ellipsis)
        elif na & bit:
            index.append(None)
        elif sh & bit:
            index.append(begin[i])
        else:
            index.append(slice(None if bm & bit else begin[i], None if em & bit else end[i],
                               strides[i]))
    try:
        out_shape = np.broadcast_to(np.float32(0), shape)[tuple(index)].shape
    except (IndexError, ValueError) as exc:
        raise cx.fail(f"cannot slice shape {list(shape)}: {exc}") from None
    # per input axis: (start, stop, step) after resolving the ellipsis and dropping new axes
    real = [e for e in index if e is not None]
    if Ellipsis in real:
        k = real.index(Ellipsis)
        fill = len(shape) - (len(real) - 1)
        real = real[:k] + [slice(None)] * fill + real[k + 1:]
    real += [slice(None)] * (len(shape) - len(real))
    starts, stops, steps = [], [], []
    for d, e in zip(shape, real, strict=True):
        if isinstance(e, slice):
            a, b, s = e.indices(d)
        else:
            a = int(e) % d if d else 0
            b, s = a + 1, 1
        n = len(range(a, b, s))
        starts.append(a)
        steps.append(s)
        stops.append(a + s * n if s > 0 or a + s * n >= 0 else -d - 1)
    val = cx.const(x)
    if val is not None:
        cx.set_const(cx.y(0), np.array(val[tuple(index)], order="C"))
        return
    sliced = _slice(cx, x, starts, stops, list(range(len(shape))), steps)
    reshape(cx, sliced, out_shape, out=cx.y(0))


def reverse_v2(cx: Ctx, op: TflOperator) -> None:
    x = cx.x(0)
    shape = cx.shape(x)
    axes = [cx.axis(a, len(shape)) for a in np.asarray(cx.need_const(1, "axis")).reshape(-1)]
    _slice(cx, x, [shape[a] - 1 for a in axes], [-shape[a] - 1 for a in axes], axes,
           [-1] * len(axes), out=cx.y(0))


def pad(cx: Ctx, op: TflOperator) -> None:
    pads = np.asarray(cx.need_const(1, "paddings")).reshape(-1, 2)
    inputs = [cx.x(0), int64(cx, "pads", list(pads[:, 0]) + list(pads[:, 1]))]
    if op.op == "PADV2" and cx.n_in > 2 and cx.x(2):
        inputs.append(cx.x(2))
    cx.add("Pad", inputs, out=cx.y(0), mode="constant")


def mirror_pad(cx: Ctx, op: TflOperator) -> None:
    if int(cx.opts.get("mode", 0) or 0) != 0:
        raise cx.fail("MIRROR_PAD mode SYMMETRIC is not supported (REFLECT is)")
    pads = np.asarray(cx.need_const(1, "paddings")).reshape(-1, 2)
    cx.add("Pad", [cx.x(0), int64(cx, "pads", list(pads[:, 0]) + list(pads[:, 1]))],
           out=cx.y(0), mode="reflect")


def _reduce(kind: str) -> Translator:
    def reduce(cx: Ctx, op: TflOperator) -> None:
        axes = np.asarray(cx.need_const(1, "axes")).reshape(-1)
        cx.add(kind, [cx.x(0), int64(cx, "axes", axes)], out=cx.y(0),
               keepdims=1 if cx.opts.get("keepDims") else 0)

    return reduce


def fill(cx: Ctx, op: TflOperator) -> None:
    dims = [int(v) for v in np.asarray(cx.need_const(0, "dims")).reshape(-1)]
    value = cx.need_const(1, "value")
    cx.set_const(cx.y(0), np.full(dims, np.asarray(value).reshape(-1)[0], value.dtype))


def zeros_like(cx: Ctx, op: TflOperator) -> None:
    t = cx.g.tensor(cx.x(0))
    cx.set_const(cx.y(0), np.zeros(t.shape, t.dtype))


def transpose_conv(cx: Ctx, op: TflOperator) -> None:
    """TRANSPOSE_CONV (inputs: output shape, weights [O, KH, KW, I], input, bias) → ONNX
    ConvTranspose; TFLite's SAME padding crops ``total // 2`` before (the extra row at the end)."""
    x = cx.x(2)
    xs = cx.shape(x)
    if len(xs) != 4:
        raise cx.fail(f"TRANSPOSE_CONV needs a 4-D NHWC input, got shape {list(xs)}")
    wt = cx.x(1)
    o, kh, kw, ci = cx.shape_n(wt, 4, "the filter")
    if ci != xs[3]:
        raise cx.fail(f"input channels {xs[3]} differ from the filter's {ci}")
    out_shape = [int(v) for v in np.asarray(cx.need_const(0, "output_shape")).reshape(-1)]
    geo = transpose_conv_geometry(cx, xs, out_shape, kh, kw)
    inputs = [transpose(cx, x, NHWC_TO_NCHW), _weights_nchw(cx, wt, [3, 0, 1, 2])]
    if cx.n_in > 3 and cx.x(3):
        inputs.append(cx.x(3))
    (pt, pl), (pb, pr), (oh, ow) = geo["begin"], geo["end"], geo["extra"]
    y = with_act(cx, "ConvTranspose", inputs, out=cx.fresh("convt"), strides=geo["strides"],
                 pads=[pt, pl, pb, pr], output_padding=[oh, ow], kernel_shape=[kh, kw])
    transpose(cx, y, NCHW_TO_NHWC, out=cx.y(0))


def transpose_conv_geometry(cx: Ctx, xs: Sequence[int], out_shape: Sequence[int], kh: int,
                            kw: int) -> dict[str, Any]:
    """Per spatial axis of a TRANSPOSE_CONV: the rows cropped before (``begin``) and after
    (``end``) the full scatter ``(in - 1) * stride + k``, and the rows added after it
    (``extra``, when the output is longer than the full scatter)."""
    if len(out_shape) != 4 or out_shape[0] != xs[0]:
        raise cx.fail(f"output_shape {list(out_shape)} does not fit input {list(xs)}")
    strides = [int(cx.opts.get("strideH", 1)), int(cx.opts.get("strideW", 1))]
    begin, end, extra = [], [], []
    for size, k, s, out in zip(xs[1:3], (kh, kw), strides, out_shape[1:3], strict=True):
        # TFLite pads as a convolution from the output (size ``out``) back to the input
        before, _ = padding(cx, out, k, s, 1)
        full = (size - 1) * s + k
        begin.append(before)
        end.append(max(full - out - before, 0))
        extra.append(max(out - (full - before), 0))
    return {"strides": strides, "begin": begin, "end": end, "extra": extra}


def tile(cx: Ctx, op: TflOperator) -> None:
    """TILE as Reshape (a unit axis before each axis) → Expand (the multiples there) → Reshape:
    data movement only, so int8 codes pass unchanged."""
    x = cx.x(0)
    xs = list(cx.shape(x))
    reps = [int(v) for v in np.asarray(cx.need_const(1, "multiples")).reshape(-1)]
    if len(reps) != len(xs) or min(reps, default=1) < 1:
        raise cx.fail(f"multiples {reps} do not fit input shape {xs}")
    split = [d for pair in zip([1] * len(xs), xs, strict=True) for d in pair]
    wide = [d for pair in zip(reps, xs, strict=True) for d in pair]
    y = cx.add("Expand", [reshape(cx, x, split), int64(cx, "shape", wide)])
    reshape(cx, y, [r * d for r, d in zip(reps, xs, strict=True)], out=cx.y(0))


def resize_weights(cx: Ctx, size_in: int, size_out: int) -> np.ndarray:
    """[out, in] bilinear weights of one axis, TFLite's float reference rule
    (``ComputeInterpolationValues``: scaled source position, lower index clamped at 0, upper
    at ``in - 1``)."""
    align = bool(cx.opts.get("alignCorners"))
    half = bool(cx.opts.get("halfPixelCenters"))
    scale = (np.float32(size_in - 1) / np.float32(size_out - 1) if align and size_out > 1
             else np.float32(size_in) / np.float32(size_out))
    a = np.zeros((size_out, size_in), np.float32)
    for o in range(size_out):
        pos = ((np.float32(o) + np.float32(0.5)) * scale - np.float32(0.5) if half
               else np.float32(o) * scale)
        lo = max(int(np.floor(pos)), 0)
        hi = min(int(np.ceil(pos)), size_in - 1)
        frac = np.float32(pos - np.float32(lo))
        a[o, lo] += np.float32(1) - frac
        a[o, hi] += frac
    return a


def resize_bilinear(cx: Ctx, op: TflOperator) -> None:
    """RESIZE_BILINEAR as two MatMuls with constant interpolation weights (rows, then
    columns) on the NHWC tensor."""
    x = cx.x(0)
    xs = cx.shape(x)
    if len(xs) != 4:
        raise cx.fail(f"RESIZE_BILINEAR needs a 4-D NHWC input, got shape {list(xs)}")
    n, h, w_, c = xs
    h2, w2 = (int(v) for v in np.asarray(cx.need_const(1, "size")).reshape(-1))
    rows = cx.add_const("resize_rows", resize_weights(cx, h, h2))
    cols = cx.add_const("resize_cols", resize_weights(cx, w_, w2))
    y = cx.add("MatMul", [rows, reshape(cx, x, (n, h, w_ * c))])
    y = cx.add("MatMul", [cols, reshape(cx, y, (n * h2, w_, c))])
    reshape(cx, y, (n, h2, w2, c), out=cx.y(0))


def nearest_indices(cx: Ctx, size_in: int, size_out: int) -> np.ndarray:
    """Source index of every output position, TFLite's ``GetNearestNeighbor`` (float32
    position, floor, or round half away from zero with ``align_corners``; clamped)."""
    align = bool(cx.opts.get("alignCorners"))
    half = bool(cx.opts.get("halfPixelCenters"))
    scale = (np.float32(size_in - 1) / np.float32(size_out - 1) if align and size_out > 1
             else np.float32(size_in) / np.float32(size_out))
    pos = ((np.arange(size_out, dtype=np.float32) + np.float32(0.5 if half else 0.0))
           * scale).astype(np.float32)
    idx = (np.sign(pos) * np.floor(np.abs(pos) + np.float32(0.5)) if align else np.floor(pos))
    idx = np.minimum(idx.astype(np.int64), size_in - 1)
    return np.maximum(idx, 0) if half else idx


def resize_nearest_neighbor(cx: Ctx, op: TflOperator) -> None:
    """RESIZE_NEAREST_NEIGHBOR as two Gathers with constant indices (rows, then columns):
    data movement, so int8 codes pass unchanged."""
    x = cx.x(0)
    xs = cx.shape(x)
    if len(xs) != 4:
        raise cx.fail(f"RESIZE_NEAREST_NEIGHBOR needs a 4-D NHWC input, got shape {list(xs)}")
    h2, w2 = (int(v) for v in np.asarray(cx.need_const(1, "size")).reshape(-1))
    rows = cx.add_const("rows", nearest_indices(cx, xs[1], h2))
    y = cx.add("Gather", [x, rows], axis=1)
    cx.add("Gather", [y, cx.add_const("cols", nearest_indices(cx, xs[2], w2))], out=cx.y(0),
           axis=2)


# -- recurrent ---------------------------------------------------------------------------------

def unidirectional_sequence_lstm(cx: Ctx, op: TflOperator) -> None:
    """→ ONNX LSTM (gates i, o, f, c; peepholes i, o, f). The states are TFLite variables,
    which the interpreter carries from one invocation to the next: they become edgec state
    (``<name>_step`` carries them; ``<name>_reset`` zeroes them like a fresh interpreter)."""
    if cx.n_in < 20:
        raise cx.fail(f"expected 20 or 24 inputs, got {cx.n_in}")
    if any(cx.x(i) for i in (16, 17)):
        raise cx.fail("LSTM projection (inputs 16, 17) is not supported")
    if any(cx.x(i) for i in range(20, min(cx.n_in, 24))):
        raise cx.fail("layer-normalised LSTM (inputs 20-23) is not supported")
    if float(cx.opts.get("cellClip", 0) or 0) or float(cx.opts.get("projClip", 0) or 0):
        raise cx.fail("LSTM cell_clip/proj_clip are not supported")
    acts = {1: "Relu", 4: "Tanh", 6: "Sigmoid"}
    code = fused_code(cx) or 4
    if code not in acts:
        raise cx.fail(f"LSTM activation {_FUSED_NAMES.get(code, code)} is not supported "
                      f"(TANH, RELU, SIGMOID)")
    x = cx.x(0)
    xs = cx.shape(x)
    if len(xs) != 3:
        raise cx.fail(f"expected a 3-D input, got shape {list(xs)}")
    time_major = bool(cx.opts.get("timeMajor"))
    batch = xs[1] if time_major else xs[0]
    w_f = cx.need_const(2, "input_to_forget_weights")
    hidden, in_size = w_f.shape
    cifg = not cx.x(1)

    def w(i: int, cols: int) -> np.ndarray:
        if cifg and i in (1, 5):  # no input gate: i = 1 - f = sigmoid(-(forget pre-activation))
            return -w(i + 1, cols)
        if not cx.x(i):
            return np.zeros((hidden, cols), np.float32)
        return np.asarray(cx.need_const(i, f"weights {i}"), np.float32).reshape(hidden, cols)

    def vec(i: int) -> np.ndarray:
        if cifg and i in (9, 12):
            return -vec(10 if i == 9 else 13)
        if not cx.x(i):
            return np.zeros(hidden, np.float32)
        return np.asarray(cx.need_const(i, f"vector {i}"), np.float32).reshape(hidden)

    # TFLite order: input, forget, cell, output → ONNX: input, output, forget, cell
    order_w, order_r, order_b = (1, 4, 2, 3), (5, 8, 6, 7), (12, 15, 13, 14)
    wt = np.concatenate([w(i, in_size) for i in order_w])[None]
    rt = np.concatenate([w(i, hidden) for i in order_r])[None]
    bias = np.concatenate([vec(i) for i in order_b] + [np.zeros(4 * hidden, np.float32)])[None]
    inputs = [x, cx.add_const("W", wt), cx.add_const("R", rt), cx.add_const("B", bias), ""]
    state_shape = (1, batch, hidden) if time_major else (batch, 1, hidden)
    carried: list[tuple[str, str]] = []  # (variable, its value after the op)
    for k in (18, 19):
        name = cx.x(k)
        t = cx.tfl_in(k)
        if t is not None and t.is_variable:  # TFLite keeps it between invocations: state
            cx.make_state(name)
            carried.append((name, cx.g.fresh_name(f"{name}_next")))
            inputs.append(reshape(cx, name, state_shape))
        elif cx.const(name) is not None:
            inputs.append(cx.add_const("state", np.asarray(cx.const(name), np.float32)
                                       .reshape(state_shape)))
        else:
            raise cx.fail(f"the LSTM state (input {k}) must be a variable or a constant")
    if any(cx.x(i) for i in (9, 10, 11)):
        inputs.append(cx.add_const("P", np.concatenate([vec(i) for i in (9, 11, 10)])[None]))
    act = acts[code]
    outs = [cx.fresh("lstm"), cx.fresh("h"), cx.fresh("c")]
    cx.add_multi("LSTM", inputs, outs, hidden_size=hidden, layout=0 if time_major else 1,
                 activations=["Sigmoid", act, act])
    reshape(cx, outs[0], (xs[0], xs[1], hidden), out=cx.y(0))
    for (var, nxt), final in zip(carried, outs[1:], strict=False):
        reshape(cx, final, cx.shape(var), out=nxt)
        cx.add_state_output(var, nxt)


#: every float32 builtin edgec translates
FLOAT_OPS: dict[str, Translator] = {
    "ABS": _plain("Abs"),
    "ADD": _binary("Add"),
    "AVERAGE_POOL_2D": _pool("AveragePool"),
    "BATCH_MATMUL": batch_matmul,
    "CAST": cast,
    "CONCATENATION": concatenation,
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "DIV": _binary("Div"),
    "ELU": _plain("Elu"),
    "EQUAL": _plain("Equal"),
    "EXP": _plain("Exp"),
    "EXPAND_DIMS": expand_dims,
    "FILL": fill,
    "FULLY_CONNECTED": fully_connected,
    "GATHER": gather,
    "GELU": gelu,
    "GREATER": _plain("Greater"),
    "GREATER_EQUAL": _plain("GreaterOrEqual"),
    "HARD_SWISH": _plain("HardSwish"),
    "LEAKY_RELU": leaky_relu,
    "LESS": _plain("Less"),
    "LESS_EQUAL": _plain("LessOrEqual"),
    "LOG": _plain("Log"),
    "LOGICAL_AND": _plain("And"),
    "LOGICAL_NOT": _plain("Not"),
    "LOGICAL_OR": _plain("Or"),
    "LOGISTIC": _plain("Sigmoid"),
    "LOG_SOFTMAX": _plain("LogSoftmax", axis=-1),
    "MAXIMUM": _plain("Max"),
    "MAX_POOL_2D": _pool("MaxPool"),
    "MEAN": _reduce("ReduceMean"),
    "MINIMUM": _plain("Min"),
    "MIRROR_PAD": mirror_pad,
    "MUL": _binary("Mul"),
    "NEG": _plain("Neg"),
    "PACK": pack,
    "PAD": pad,
    "PADV2": pad,
    "PRELU": _plain("PRelu"),
    "REDUCE_MAX": _reduce("ReduceMax"),
    "REDUCE_MIN": _reduce("ReduceMin"),
    "REDUCE_PROD": _reduce("ReduceProd"),
    "RELU": _plain("Relu"),
    "RELU6": _clip(0.0, 6.0),
    "RELU_0_TO_1": _clip(0.0, 1.0),
    "RELU_N1_TO_1": _clip(-1.0, 1.0),
    "RESHAPE": reshape_op,
    "RESIZE_BILINEAR": resize_bilinear,
    "RESIZE_NEAREST_NEIGHBOR": resize_nearest_neighbor,
    "REVERSE_V2": reverse_v2,
    "RSQRT": rsqrt,
    "SHAPE": shape_op,
    "SLICE": slice_op,
    "SOFTMAX": softmax,
    "SPLIT": split,
    "SPLIT_V": split_v,
    "SQRT": _plain("Sqrt"),
    "SQUARE": square,
    "SELECT": select,
    "SELECT_V2": select,
    "SQUARED_DIFFERENCE": squared_difference,
    "SQUEEZE": squeeze,
    "STRIDED_SLICE": strided_slice,
    "SUB": _binary("Sub"),
    "SUM": _reduce("ReduceSum"),
    "TANH": _plain("Tanh"),
    "TILE": tile,
    "TRANSPOSE": transpose_op,
    "TRANSPOSE_CONV": transpose_conv,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": unidirectional_sequence_lstm,
    "UNPACK": unpack,
    "ZEROS_LIKE": zeros_like,
}
