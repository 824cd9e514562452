"""Lowering rules for standard ``torch.nn`` modules, functions, tensor methods and ATen ops.

Every rule builds IR nodes with ONNX semantics through :class:`TorchLowering`. Library families
(spiking neurons, circuit policies, hypercomplex layers...) register their own rules elsewhere.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgec.frontend.pytorch.lowering import (
    TensorRef,
    TorchLowering,
    function_handler,
    module_handler,
)


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _pair(v: Any, n: int) -> list[int]:
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v] if len(v) == n else [int(v[0])] * n
    return [int(v)] * n


def _arg(args: tuple, kwargs: dict, i: int, key: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(key, default)


# --- layers -------------------------------------------------------------------------------------


def linear(
    lw: TorchLowering, x: TensorRef, w: np.ndarray, b: np.ndarray | None, base: str
) -> TensorRef:
    """x @ w.T + b for x of any rank (Gemm for 2-D inputs, MatMul + Add otherwise)."""
    shape = lw.shape(x)
    if len(shape) == 2:
        ins = [x, lw.const(w, f"{base}_weight")]
        if b is not None:
            ins.append(lw.const(b, f"{base}_bias"))
        return lw.add1("Gemm", ins, {"transB": 1}, base=base)
    y = lw.add1("MatMul", [x, lw.const(np.ascontiguousarray(w.T), f"{base}_weight")], base=base)
    if b is not None:
        y = lw.add1("Add", [y, lw.const(b, f"{base}_bias")], base=base)
    return y


@module_handler("torch.nn.modules.linear.Linear")
def _linear(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return linear(lw, args[0], _np(m.weight), None if m.bias is None else _np(m.bias), path)


@function_handler("linear")
def _f_linear(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    if not isinstance(w, TensorRef) or lw.g.const(w) is None:
        raise lw.unsupported("linear with run-time weights")
    bn = None if b is None else lw.g.const(lw.as_tensor(b))
    return linear(lw, x, lw.g.const(w), bn, "linear")


def conv(
    lw: TorchLowering,
    x: TensorRef,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    base: str,
    transposed: bool = False,
    output_padding: Any = 0,
) -> TensorRef:
    nd = w.ndim - 2
    attrs: dict[str, Any] = {
        "strides": _pair(stride, nd),
        "dilations": _pair(dilation, nd),
        "group": int(groups),
        "kernel_shape": list(w.shape[2:]),
    }
    if isinstance(padding, str):
        if padding == "same":
            attrs["auto_pad"] = "SAME_UPPER"
        elif padding != "valid":
            raise lw.unsupported(f"padding='{padding}'")
    else:
        p = _pair(padding, nd)
        attrs["pads"] = p + p
    if transposed:
        attrs["output_padding"] = _pair(output_padding, nd)
    ins = [x, lw.const(w, f"{base}_weight")]
    if b is not None:
        ins.append(lw.const(b, f"{base}_bias"))
    return lw.add1("ConvTranspose" if transposed else "Conv", ins, attrs, base=base)


@module_handler("torch.nn.modules.conv.Conv1d", "torch.nn.modules.conv.Conv2d")
def _conv(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    if m.padding_mode != "zeros":
        mode = {"reflect": "reflect", "replicate": "edge"}.get(m.padding_mode)
        if mode is None:
            raise lw.unsupported(f"padding_mode='{m.padding_mode}'")
        nd = len(m.kernel_size)
        p = _pair(m.padding, nd)
        pads = [0, 0] + p + [0, 0] + p
        x = lw.add1("Pad", [x, lw.ints(pads)], {"mode": mode}, base=path)
        padding: Any = 0
    else:
        padding = m.padding
    return conv(
        lw,
        x,
        _np(m.weight),
        None if m.bias is None else _np(m.bias),
        m.stride,
        padding,
        m.dilation,
        m.groups,
        path,
    )


@module_handler("torch.nn.modules.conv.ConvTranspose1d", "torch.nn.modules.conv.ConvTranspose2d")
def _conv_t(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return conv(
        lw,
        args[0],
        _np(m.weight),
        None if m.bias is None else _np(m.bias),
        m.stride,
        m.padding,
        m.dilation,
        m.groups,
        path,
        True,
        m.output_padding,
    )


@function_handler("conv1d", "conv2d")
def _f_conv(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x, w = args[0], lw.g.const(_arg(args, kwargs, 1, "weight"))
    b = _arg(args, kwargs, 2, "bias")
    if w is None:
        raise lw.unsupported("convolution with run-time weights")
    return conv(
        lw,
        x,
        w,
        None if b is None else lw.g.const(lw.as_tensor(b)),
        _arg(args, kwargs, 3, "stride", 1),
        _arg(args, kwargs, 4, "padding", 0),
        _arg(args, kwargs, 5, "dilation", 1),
        _arg(args, kwargs, 6, "groups", 1),
        "conv",
    )


@function_handler("convolution")
def _aten_convolution(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x, w, b, stride, padding, dilation, transposed, out_pad, groups = args[:9]
    wc = lw.g.const(w)
    if wc is None:
        raise lw.unsupported("convolution with run-time weights")
    return conv(
        lw,
        x,
        wc,
        None if b is None else lw.g.const(b),
        stride,
        padding,
        dilation,
        groups,
        "conv",
        bool(transposed),
        out_pad,
    )


def batchnorm(
    lw: TorchLowering,
    x: TensorRef,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    base: str,
) -> TensorRef:
    ins = [
        x,
        lw.const(scale, f"{base}_scale"),
        lw.const(bias, f"{base}_bias"),
        lw.const(mean, f"{base}_mean"),
        lw.const(var, f"{base}_var"),
    ]
    return lw.add1("BatchNormalization", ins, {"epsilon": float(eps)}, base=base)


@module_handler("torch.nn.modules.batchnorm.BatchNorm1d", "torch.nn.modules.batchnorm.BatchNorm2d")
def _bn(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    c = m.num_features
    scale = _np(m.weight) if m.weight is not None else np.ones(c, np.float32)
    bias = _np(m.bias) if m.bias is not None else np.zeros(c, np.float32)
    if m.running_mean is None:
        raise lw.unsupported("BatchNorm without running statistics (track_running_stats=False)")
    return batchnorm(lw, args[0], scale, bias, _np(m.running_mean), _np(m.running_var), m.eps, path)


@function_handler("_native_batch_norm_legit_no_training", "batch_norm")
def _f_bn(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
    if args and len(args) >= 7 and isinstance(args[5], bool):  # F.batch_norm / aten.batch_norm
        x, w, b, mean, var, training, _mom, eps = (list(args) + [1e-5])[:8]
        if training:
            raise lw.unsupported("batch_norm in training mode")
    else:  # aten._native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)
        x, w, b, mean, var, _mom, eps = args[:7]
    c = lw.shape(x)[1]
    scale = lw.g.const(w) if w is not None else np.ones(c, np.float32)
    bias = lw.g.const(b) if b is not None else np.zeros(c, np.float32)
    y = batchnorm(lw, x, scale, bias, lw.g.const(mean), lw.g.const(var), eps, "bn")
    return (y, None, None) if len(args) == 7 and not isinstance(args[5], bool) else y


# --- activations ---------------------------------------------------------------------------------

_SIMPLE = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "neg": "Neg",
    "abs": "Abs",
    "hardswish": "HardSwish",
    "selu": "Selu",
    "reciprocal": "Reciprocal",
}

for _name, _op in _SIMPLE.items():

    def _make(op: str):
        def h(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
            return lw.add1(op, [args[0]])

        return h

    function_handler(_name, f"{_name}_")(_make(_op))

_MODULE_ACTS = {
    "ReLU": ("Relu", {}),
    "Sigmoid": ("Sigmoid", {}),
    "Tanh": ("Tanh", {}),
    "Hardswish": ("HardSwish", {}),
    "SELU": ("Selu", {}),
}
for _cls, (_op, _attrs) in _MODULE_ACTS.items():

    def _makem(op: str, attrs: dict):
        def h(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
            return lw.add1(op, [args[0]], attrs, base=path)

        return h

    module_handler(f"torch.nn.modules.activation.{_cls}")(_makem(_op, _attrs))


def clip(lw: TorchLowering, x: TensorRef, lo: float | None, hi: float | None) -> TensorRef:
    ins = [
        x,
        lw.const(np.float32(-np.inf if lo is None else lo), "min"),
        lw.const(np.float32(np.inf if hi is None else hi), "max"),
    ]
    return lw.add1("Clip", ins)


@module_handler("torch.nn.modules.activation.ReLU6", "torch.nn.modules.activation.Hardtanh")
def _hardtanh(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return clip(lw, args[0], float(m.min_val), float(m.max_val))


@function_handler("relu6")
def _f_relu6(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return clip(lw, args[0], 0.0, 6.0)


@function_handler("hardtanh", "hardtanh_")
def _f_hardtanh(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
    return clip(lw, args[0], lo, float(_arg(args, kwargs, 2, "max_val", 1.0)))


@function_handler("clamp", "clip", "clamp_")
def _f_clamp(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    lo, hi = _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
    return clip(lw, args[0], None if lo is None else float(lo), None if hi is None else float(hi))


@module_handler("torch.nn.modules.activation.LeakyReLU")
def _leaky(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("LeakyRelu", [args[0]], {"alpha": float(m.negative_slope)}, base=path)


@function_handler("leaky_relu", "leaky_relu_")
def _f_leaky(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    alpha = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
    return lw.add1("LeakyRelu", [args[0]], {"alpha": alpha})


@module_handler("torch.nn.modules.activation.ELU")
def _elu(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Elu", [args[0]], {"alpha": float(m.alpha)}, base=path)


@function_handler("elu", "elu_")
def _f_elu(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Elu", [args[0]], {"alpha": float(_arg(args, kwargs, 1, "alpha", 1.0))})


def softplus(lw: TorchLowering, x: TensorRef, beta: float, threshold: float) -> TensorRef:
    """torch's softplus: log(1 + exp(beta x)) / beta, and x itself where beta x > threshold.
    The linear part differs from the smooth curve by log1p(exp(-threshold)) / beta, below
    float32 resolution at the default threshold 20; a lower threshold gets the Where."""
    xb = x if beta == 1.0 else lw.add1("Mul", [x, lw.const(np.float32(beta))])
    sp = lw.add1("Softplus", [xb])
    if beta != 1.0:
        sp = lw.add1("Div", [sp, lw.const(np.float32(beta))])
    if threshold < 20.0:
        linear = lw.add1("Greater", [xb, lw.const(np.float32(threshold))])
        sp = lw.add1("Where", [linear, x, sp])
    return sp


@module_handler("torch.nn.modules.activation.Softplus")
def _softplus(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return softplus(lw, args[0], float(m.beta), float(m.threshold))


@function_handler("softplus")
def _f_softplus(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return softplus(lw, args[0], float(_arg(args, kwargs, 1, "beta", 1.0)),
                    float(_arg(args, kwargs, 2, "threshold", 20.0)))


@module_handler("torch.nn.modules.activation.Hardsigmoid")
def _hsig(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("HardSigmoid", [args[0]], {"alpha": 1.0 / 6.0, "beta": 0.5}, base=path)


@function_handler("hardsigmoid")
def _f_hsig(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("HardSigmoid", [args[0]], {"alpha": 1.0 / 6.0, "beta": 0.5})


def softmax(lw: TorchLowering, x: TensorRef, dim: int, log: bool) -> TensorRef:
    return lw.add1("LogSoftmax" if log else "Softmax", [x], {"axis": int(dim)})


@module_handler("torch.nn.modules.activation.Softmax", "torch.nn.modules.activation.LogSoftmax")
def _softmax_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    dim = m.dim if m.dim is not None else -1
    return softmax(lw, args[0], dim, type(m).__name__ == "LogSoftmax")


def _softmax_fn(log: bool):
    def h(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
        dim = _arg(args, kwargs, 1, "dim", -1)
        return softmax(lw, args[0], -1 if dim is None else dim, log)

    return h


function_handler("softmax", "_softmax")(_softmax_fn(False))
function_handler("log_softmax", "_log_softmax")(_softmax_fn(True))


@module_handler(
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.dropout.Dropout1d",
    "torch.nn.modules.dropout.Dropout2d",
)
def _identity_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    return args[0]


@function_handler("float", "to", "type_as", "_to_copy")
def _f_to_float(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
    x = args[0]
    if isinstance(x, TensorRef) and lw.g.tensor(x).dtype in ("bool", "int64"):
        return lw.add1("Cast", [x], {"to": 1})  # 0/1 mask or argmax/topk indices → float
    return x


@function_handler(
    "dropout",
    "dropout_",
    "contiguous",
    "clone",
    "detach",
    "alias",
    "lift_fresh_copy",
    "feature_dropout",
)
def _f_identity(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
    return args[0]


# --- arithmetic --------------------------------------------------------------------------------

_PY_BINARY = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mul": operator.mul,
    "Div": operator.truediv,
}


def _binary(op: str, reverse: bool = False):
    def h(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
        a, b = args[0], _arg(args, kwargs, 1, "other")
        if reverse:
            a, b = b, a
        if not isinstance(a, TensorRef) and not isinstance(b, TensorRef):
            return _PY_BINARY[op](a, b)  # shape arithmetic on Python numbers
        alpha = kwargs.get("alpha", 1)
        if alpha != 1:
            b = lw.add1("Mul", [lw.as_tensor(b), lw.const(np.float32(alpha))])
        return lw.add1(op, [lw.as_tensor(a), lw.as_tensor(b)])

    return h


function_handler("add", "add_", "iadd")(_binary("Add"))
function_handler("sub", "sub_", "isub", "subtract")(_binary("Sub"))
function_handler("mul", "mul_", "imul", "multiply")(_binary("Mul"))
function_handler("truediv", "div", "div_", "itruediv", "divide")(_binary("Div"))
function_handler("rsub")(_binary("Sub", reverse=True))
function_handler("radd")(_binary("Add", reverse=True))
function_handler("rmul")(_binary("Mul", reverse=True))
function_handler("rtruediv")(_binary("Div", reverse=True))


@function_handler("pow")
def _f_pow(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x, e = args[0], _arg(args, kwargs, 1, "exponent")
    if isinstance(e, TensorRef):
        if lw.g.const(e) is None:
            raise lw.unsupported("pow with a run-time exponent")
        return lw.add1("Pow", [x, e])
    return lw.add1("Pow", [x, lw.const(np.float32(e))])


@function_handler("matmul", "mm", "bmm")
def _f_matmul(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("MatMul", [lw.as_tensor(args[0]), lw.as_tensor(args[1])])


@function_handler("addmm")
def _f_addmm(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    bias, x, w = args[:3]
    y = lw.add1("MatMul", [x, w])
    return lw.add1("Add", [y, bias])


# --- shapes --------------------------------------------------------------------------------------


def _shape_args(args: tuple) -> list[int]:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return [int(d) for d in args[0]]
    return [int(d) for d in args]


@function_handler("view", "reshape", "_unsafe_view", "view_copy")
def _f_reshape(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    shape = _shape_args(args[1:] or (kwargs.get("shape") or kwargs.get("size"),))
    return lw.add1("Reshape", [x, lw.ints(shape)])


@function_handler("flatten")
def _f_flatten(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    shape = lw.shape(x)
    r = len(shape)
    s = int(_arg(args, kwargs, 1, "start_dim", 0)) % max(r, 1)
    e = int(_arg(args, kwargs, 2, "end_dim", -1)) % max(r, 1)
    new = list(shape[:s]) + [int(np.prod(shape[s : e + 1]))] + list(shape[e + 1 :])
    return lw.add1("Reshape", [x, lw.ints(new)])


@module_handler("torch.nn.modules.flatten.Flatten")
def _flatten_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return _f_flatten(lw, (args[0], m.start_dim, m.end_dim), {})


@function_handler("permute")
def _f_permute(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    dims = _shape_args(args[1:] or (kwargs.get("dims"),))
    return lw.add1("Transpose", [args[0]], {"perm": dims})


@function_handler("transpose", "swapaxes")
def _f_transpose(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    r = len(lw.shape(x))
    a, b = int(args[1]) % r, int(args[2]) % r
    perm = list(range(r))
    perm[a], perm[b] = perm[b], perm[a]
    return lw.add1("Transpose", [x], {"perm": perm})


@function_handler("t", "numpy_T")
def _f_t(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    if len(lw.shape(x)) < 2:
        return x
    return lw.add1("Transpose", [x], {"perm": [1, 0]})


@function_handler("unsqueeze")
def _f_unsqueeze(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Unsqueeze", [args[0], lw.ints([int(_arg(args, kwargs, 1, "dim"))])])


@function_handler("squeeze")
def _f_squeeze(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    dim = _arg(args, kwargs, 1, "dim")
    shape = lw.shape(x)
    if dim is None:
        dims = [i for i, d in enumerate(shape) if d == 1]
    else:
        dims = [int(d) % len(shape) for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
        dims = [d for d in dims if shape[d] == 1]
    if not dims:
        return x
    return lw.add1("Squeeze", [x, lw.ints(dims)])


@function_handler("cat", "concat", "concatenate")
def _f_cat(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    xs = [lw.as_tensor(t) for t in args[0]]
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    return lw.add1("Concat", xs, {"axis": dim})


@function_handler("stack")
def _f_stack(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    xs = [lw.as_tensor(t) for t in args[0]]
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    r = len(lw.shape(xs[0])) + 1
    us = [lw.add1("Unsqueeze", [x, lw.ints([dim % r])]) for x in xs]
    return lw.add1("Concat", us, {"axis": dim})


@function_handler("size")
def _f_size(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
    shape = lw.shape(args[0])
    dim = _arg(args, kwargs, 1, "dim")
    return tuple(shape) if dim is None else shape[int(dim)]


@function_handler("getattr")
def _f_getattr(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
    obj, attr = args[0], args[1]
    if isinstance(obj, TensorRef):
        if attr == "shape":
            return tuple(lw.shape(obj))
        if attr == "T":
            return _f_t(lw, (obj,), {})
        raise lw.unsupported(f"tensor attribute '{attr}'")
    return getattr(obj, attr)


@function_handler("getitem")
def _f_getitem(lw: TorchLowering, args: tuple, kwargs: dict) -> Any:
    x, idx = args[0], args[1]
    shape = lw.shape(x)
    if not isinstance(idx, tuple):
        idx = (idx,)
    starts, ends, axes, steps = [], [], [], []
    squeeze: list[int] = []
    dim = 0
    for it in idx:
        if it is Ellipsis:
            dim = len(shape) - (len(idx) - 1 - idx.index(Ellipsis)) + 0
            continue
        if it is None:
            raise lw.unsupported("indexing with None (new axis)")
        if isinstance(it, slice):
            if it != slice(None):
                st = it.step or 1
                starts.append(0 if it.start is None else int(it.start))
                ends.append((2**62 if st > 0 else -(2**62)) if it.stop is None else int(it.stop))
                if it.start is None and st < 0:
                    starts[-1] = -1
                axes.append(dim)
                steps.append(int(st))
        elif isinstance(it, int):
            i = it % shape[dim]
            starts.append(i)
            ends.append(i + 1)
            axes.append(dim)
            steps.append(1)
            squeeze.append(dim)
        else:
            raise lw.unsupported(f"indexing with {type(it).__name__}")
        dim += 1
    y = x
    if axes:
        y = lw.add1("Slice", [x, lw.ints(starts), lw.ints(ends), lw.ints(axes), lw.ints(steps)])
    if squeeze:
        y = lw.add1("Squeeze", [y, lw.ints(squeeze)])
    return y


def _reduce(op: str):
    def h(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
        x = args[0]
        dim = _arg(args, kwargs, 1, "dim")
        keep = bool(_arg(args, kwargs, 2, "keepdim", False))
        r = len(lw.shape(x))
        axes = (
            list(range(r))
            if dim is None
            else [int(d) % r for d in (dim if isinstance(dim, (list, tuple)) else [dim])]
        )
        return lw.add1(op, [x, lw.ints(axes)], {"keepdims": int(keep)})

    return h


function_handler("mean")(_reduce("ReduceMean"))
function_handler("sum")(_reduce("ReduceSum"))
function_handler("amax")(_reduce("ReduceMax"))


# --- pooling -------------------------------------------------------------------------------------


def pool(
    lw: TorchLowering,
    x: TensorRef,
    kind: str,
    kernel: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool = True,
    dilation: Any = 1,
    base: str = "pool",
) -> TensorRef:
    nd = len(lw.shape(x)) - 2
    k = _pair(kernel, nd)
    s = _pair(stride if stride not in (None, [], ()) else kernel, nd)
    p = _pair(padding, nd)
    attrs: dict[str, Any] = {
        "kernel_shape": k,
        "strides": s,
        "pads": p + p,
        "ceil_mode": int(bool(ceil_mode)),
    }
    if kind == "MaxPool":
        attrs["dilations"] = _pair(dilation, nd)
    else:
        attrs["count_include_pad"] = int(bool(count_include_pad))
    return lw.add1(kind, [x], attrs, base=base)


@module_handler("torch.nn.modules.pooling.MaxPool1d", "torch.nn.modules.pooling.MaxPool2d")
def _maxpool(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    if m.return_indices:
        raise lw.unsupported("MaxPool with return_indices=True")
    return pool(
        lw,
        args[0],
        "MaxPool",
        m.kernel_size,
        m.stride,
        m.padding,
        m.ceil_mode,
        dilation=m.dilation,
        base=path,
    )


@module_handler("torch.nn.modules.pooling.AvgPool1d", "torch.nn.modules.pooling.AvgPool2d")
def _avgpool(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    if getattr(m, "divisor_override", None):
        raise lw.unsupported("AvgPool with divisor_override")
    return pool(
        lw,
        args[0],
        "AveragePool",
        m.kernel_size,
        m.stride,
        m.padding,
        m.ceil_mode,
        m.count_include_pad,
        base=path,
    )


@function_handler("max_pool1d", "max_pool2d")
def _f_maxpool(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return pool(
        lw,
        args[0],
        "MaxPool",
        _arg(args, kwargs, 1, "kernel_size"),
        _arg(args, kwargs, 2, "stride"),
        _arg(args, kwargs, 3, "padding", 0),
        bool(_arg(args, kwargs, 5, "ceil_mode", False)),
        dilation=_arg(args, kwargs, 4, "dilation", 1),
    )


@function_handler("avg_pool1d", "avg_pool2d")
def _f_avgpool(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return pool(
        lw,
        args[0],
        "AveragePool",
        _arg(args, kwargs, 1, "kernel_size"),
        _arg(args, kwargs, 2, "stride"),
        _arg(args, kwargs, 3, "padding", 0),
        bool(_arg(args, kwargs, 4, "ceil_mode", False)),
        bool(_arg(args, kwargs, 5, "count_include_pad", True)),
    )


def _adaptive(lw: TorchLowering, x: TensorRef, out: Any, kind: str) -> TensorRef:
    nd = len(lw.shape(x)) - 2
    o = _pair(out, nd)
    if all(v == 1 for v in o):
        return lw.add1("GlobalAveragePool" if kind == "avg" else "GlobalMaxPool", [x])
    spatial = lw.shape(x)[2:]
    if any(s % v for s, v in zip(spatial, o, strict=True)):
        raise lw.unsupported(f"adaptive pooling to {o} from {spatial} (needs divisible sizes)")
    k = [s // v for s, v in zip(spatial, o, strict=True)]
    return pool(lw, x, "AveragePool" if kind == "avg" else "MaxPool", k, k, 0, False)


@module_handler(
    "torch.nn.modules.pooling.AdaptiveAvgPool1d", "torch.nn.modules.pooling.AdaptiveAvgPool2d"
)
def _aavg(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return _adaptive(lw, args[0], m.output_size, "avg")


@module_handler(
    "torch.nn.modules.pooling.AdaptiveMaxPool1d", "torch.nn.modules.pooling.AdaptiveMaxPool2d"
)
def _amax(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    if m.return_indices:
        raise lw.unsupported("AdaptiveMaxPool with return_indices=True")
    return _adaptive(lw, args[0], m.output_size, "max")


@function_handler("adaptive_avg_pool1d", "adaptive_avg_pool2d")
def _f_aavg(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return _adaptive(lw, args[0], args[1], "avg")


# --- recurrent layers ----------------------------------------------------------------------------

#: torch gate order → ONNX gate order (row blocks of W, R, B)
_GATE_ORDER = {"GRU": [1, 0, 2], "LSTM": [0, 3, 1, 2], "RNN": [0]}


def _reorder(w: np.ndarray, kind: str) -> np.ndarray:
    blocks = np.split(w, len(_GATE_ORDER[kind]), axis=0)
    return np.concatenate([blocks[i] for i in _GATE_ORDER[kind]], axis=0)


def recurrent(lw: TorchLowering, m: Any, path: str, args: tuple) -> Any:
    kind = {"GRU": "GRU", "LSTM": "LSTM", "RNN": "RNN"}[type(m).__name__]
    if getattr(m, "proj_size", 0):
        raise lw.unsupported("LSTM with proj_size")
    x = args[0]
    hx = args[1] if len(args) > 1 else None
    dirs = 2 if m.bidirectional else 1
    hidden = m.hidden_size
    if m.batch_first:
        x = lw.add1("Transpose", [x], {"perm": [1, 0, 2]}, base=path)
    if len(lw.shape(x)) != 3:
        raise lw.unsupported("recurrent layers need batched (3-D) input")
    batch = lw.shape(x)[1]
    h0 = c0 = None
    if kind == "LSTM" and hx is not None:
        h0, c0 = hx
    elif hx is not None:
        h0 = hx
    attrs: dict[str, Any] = {
        "hidden_size": hidden,
        "direction": "bidirectional" if dirs == 2 else "forward",
    }
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    if kind == "RNN":
        attrs["activations"] = ["Tanh" if m.nonlinearity == "tanh" else "Relu"] * dirs
    hs, cs = [], []
    y = x
    for layer in range(m.num_layers):
        ws, rs, bs = [], [], []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = _np(getattr(m, f"weight_ih{sfx}"))
            r = _np(getattr(m, f"weight_hh{sfx}"))
            if m.bias:
                bi, bh = _np(getattr(m, f"bias_ih{sfx}")), _np(getattr(m, f"bias_hh{sfx}"))
            else:
                bi = bh = np.zeros(w.shape[0], np.float32)
            ws.append(_reorder(w, kind))
            rs.append(_reorder(r, kind))
            bs.append(np.concatenate([_reorder(bi, kind), _reorder(bh, kind)]))
        ins = [
            y,
            lw.const(np.stack(ws), f"{path}_W{layer}"),
            lw.const(np.stack(rs), f"{path}_R{layer}"),
            lw.const(np.stack(bs), f"{path}_B{layer}"),
            "",
        ]

        def layer_state(s: TensorRef | None, layer: int = layer) -> str:
            if s is None:
                return ""
            if m.num_layers == 1:
                return s
            return lw.add1(
                "Slice",
                [s, lw.ints([layer * dirs]), lw.ints([(layer + 1) * dirs]), lw.ints([0])],
                base=path,
            )

        ins.append(layer_state(h0))
        if kind == "LSTM":
            ins.append(layer_state(c0))
        n_out = 3 if kind == "LSTM" else 2
        outs = lw.add(kind, ins, attrs, n_out, base=f"{path}_l{layer}")
        yl = outs[0]  # (T, dirs, B, H)
        hs.append(outs[1])
        if kind == "LSTM":
            cs.append(outs[2])
        seq = lw.shape(yl)[0]
        if dirs == 1:
            y = lw.add1("Squeeze", [yl, lw.ints([1])], base=path)
        else:
            yt = lw.add1("Transpose", [yl], {"perm": [0, 2, 1, 3]}, base=path)
            y = lw.add1("Reshape", [yt, lw.ints([seq, batch, dirs * hidden])], base=path)
    h_n = hs[0] if len(hs) == 1 else lw.add1("Concat", hs, {"axis": 0}, base=path)
    if m.batch_first:
        y = lw.add1("Transpose", [y], {"perm": [1, 0, 2]}, base=path)
    if kind == "LSTM":
        c_n = cs[0] if len(cs) == 1 else lw.add1("Concat", cs, {"axis": 0}, base=path)
        return y, (h_n, c_n)
    return y, h_n


for _k in ("GRU", "LSTM", "RNN"):
    module_handler(f"torch.nn.modules.rnn.{_k}")(
        lambda lw, m, path, args, kwargs: recurrent(lw, m, path, args)
    )


def as_shape(v: Sequence[int]) -> list[int]:
    return [int(d) for d in v]


@function_handler("slice")
def _aten_slice(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    dim = int(_arg(args, kwargs, 1, "dim", 0))
    start = _arg(args, kwargs, 2, "start", None)
    end = _arg(args, kwargs, 3, "end", None)
    step = int(_arg(args, kwargs, 4, "step", 1))
    s = 0 if start is None else int(start)
    e = 2**62 if end is None else min(int(end), 2**62)
    return lw.add1("Slice", [x, lw.ints([s]), lw.ints([e]), lw.ints([dim]), lw.ints([step])])


@function_handler("select")
def _aten_select(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x, dim, index = args[0], int(args[1]), int(args[2])
    shape = lw.shape(x)
    dim %= len(shape)
    i = index % shape[dim]
    y = lw.add1("Slice", [x, lw.ints([i]), lw.ints([i + 1]), lw.ints([dim]), lw.ints([1])])
    return lw.add1("Squeeze", [y, lw.ints([dim])])


def _pieces(lw: TorchLowering, x: TensorRef, sizes: Sequence[int], dim: int) -> tuple:
    """``x`` cut along ``dim`` into consecutive pieces of ``sizes`` (one Slice each)."""
    out, start = [], 0
    for n in sizes:
        out.append(lw.add1("Slice", [x, lw.ints([start]), lw.ints([start + n]), lw.ints([dim]),
                                     lw.ints([1])]))
        start += n
    return tuple(out)


@function_handler("unbind")
def _unbind(lw: TorchLowering, args: tuple, kwargs: dict) -> tuple:
    x = args[0]
    shape = lw.shape(x)
    dim = int(_arg(args, kwargs, 1, "dim", 0)) % len(shape)
    return tuple(lw.add1("Squeeze", [p, lw.ints([dim])])
                 for p in _pieces(lw, x, [1] * shape[dim], dim))


def _split_fn(chunk: bool) -> Any:
    def handler(lw: TorchLowering, args: tuple, kwargs: dict) -> tuple:
        """torch.split / split_with_sizes (a piece size, or the sizes) and torch.chunk (that
        many pieces of ceil(n / chunks), the last one smaller)."""
        x = args[0]
        shape = lw.shape(x)
        what = _arg(args, kwargs, 1, "chunks" if chunk else "split_size_or_sections")
        if what is None:
            what = kwargs.get("split_size", kwargs.get("split_sizes"))
        dim = int(_arg(args, kwargs, 2, "dim", 0)) % len(shape)
        n = shape[dim]
        if isinstance(what, (list, tuple)):
            sizes = [int(v) for v in what]
        else:
            step = -(-n // int(what)) if chunk else int(what)
            sizes = [min(step, n - i) for i in range(0, n, step)]
        if sum(sizes) != n:
            raise lw.unsupported(f"split sizes {sizes} do not add up to the axis length {n}")
        return _pieces(lw, x, sizes, dim)

    return handler


function_handler("split", "split_with_sizes")(_split_fn(chunk=False))
function_handler("chunk")(_split_fn(chunk=True))


@function_handler("expand", "expand_as", "broadcast_to", "expand_copy")
def _expand(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    """x.expand(2, -1, 4) / expand(x, [2, -1, 4]) / expand_as(x, y) / broadcast_to: -1 keeps
    the input's size (the sizes align with the input's trailing axes)."""
    x = args[0]
    rest = args[1:] if len(args) > 1 else (_arg(args, kwargs, 1, "size"),)
    if len(rest) == 1 and isinstance(rest[0], TensorRef):  # expand_as
        sizes = list(lw.shape(rest[0]))
    elif len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        sizes = [int(v) for v in rest[0]]
    else:
        sizes = [int(v) for v in rest]
    shape = lw.shape(x)
    lead = len(sizes) - len(shape)
    out = [shape[i - lead] if v == -1 and i >= lead else v for i, v in enumerate(sizes)]
    return lw.add1("Expand", [x, lw.ints(out)])


@function_handler("flip")
def _flip(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x = args[0]
    dims = _arg(args, kwargs, 1, "dims")
    dims = [int(dims)] if isinstance(dims, int) else [int(d) for d in dims]
    k = len(dims)
    return lw.add1("Slice", [x, lw.ints([-1] * k), lw.ints([-(2**62)] * k), lw.ints(dims),
                             lw.ints([-1] * k)])


@module_handler("torch.nn.modules.activation.GELU")
def _gelu_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Gelu", [args[0]], {"approximate": m.approximate}, base=path)


@function_handler("gelu")
def _f_gelu(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Gelu", [args[0]], {"approximate": kwargs.get("approximate", "none")})


@module_handler("torch.nn.modules.activation.Mish")
def _mish_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Mish", [args[0]], base=path)


@function_handler("mish")
def _f_mish(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Mish", [args[0]])


@module_handler("torch.nn.modules.activation.CELU")
def _celu_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    return lw.add1("Celu", [args[0]], {"alpha": float(m.alpha)}, base=path)


_COMPARE = {
    "gt": "Greater",
    "lt": "Less",
    "ge": "GreaterOrEqual",
    "le": "LessOrEqual",
    "eq": "Equal",
    "greater": "Greater",
    "less": "Less",
}


def _compare(op: str):
    def h(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
        a, b = lw.as_tensor(args[0]), lw.as_tensor(_arg(args, kwargs, 1, "other"))
        return lw.add1(op, [a, b])

    return h


for _name, _op in _COMPARE.items():
    function_handler(_name)(_compare(_op))


@function_handler("where")
def _f_where(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    cond, a, b = args[0], lw.as_tensor(args[1]), lw.as_tensor(args[2])
    return lw.add1("Where", [cond, a, b])


@function_handler("masked_fill", "masked_fill_")
def _f_masked_fill(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    x, mask = args[0], _arg(args, kwargs, 1, "mask")
    value = lw.as_tensor(_arg(args, kwargs, 2, "value"))
    return lw.add1("Where", [mask, value, x])


@function_handler(
    "_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_constrain_range_for_size"
)
def _f_assert(lw: TorchLowering, args: tuple, kwargs: dict) -> None:
    """Run-time metadata checks in ATen graphs: shapes are static here, nothing to emit."""
    return None
