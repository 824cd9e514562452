"""Lowering rules for elementwise math, selection, layer normalisation and einsum: ``sin``,
``cos``, ``atan``, ``erf``, ``sign``, ``round``, ``argmax``/``argmin``, ``topk``,
``nn.LayerNorm``/``layer_norm`` and ``einsum`` (functions, tensor methods and ATen ops).

Indices (argmax, topk) are int64 tensors as in torch; a later ``.float()`` turns them into
float32 values (see :mod:`edgec.ops.select`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.frontend.pytorch.lowering import (
    TensorRef,
    TorchLowering,
    function_handler,
    module_handler,
)
from edgec.ops.interpret import infer_node

_ELEMENTWISE = {
    ("sin", "sin_"): "Sin",
    ("cos", "cos_"): "Cos",
    ("atan", "atan_", "arctan"): "Atan",
    ("erf", "erf_", "special_erf"): "Erf",
    ("sign", "sign_"): "Sign",
}


def _elementwise(op: str):
    def h(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
        return lw.add1(op, [lw.as_tensor(args[0])])

    return h


for _names, _op in _ELEMENTWISE.items():
    function_handler(*_names)(_elementwise(_op))


def _arg(args: tuple, kwargs: dict, i: int, key: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(key, default)


@function_handler("round", "round_")
def _f_round(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    """torch.round(x, decimals=d): halves to even on x * 10^d, scaled back (as torch does)."""
    x = lw.as_tensor(args[0])
    d = int(_arg(args, kwargs, 1, "decimals", 0))
    if d == 0:
        return lw.add1("Round", [x])
    scale = lw.const(np.float32(10.0**d))
    y = lw.add1("Round", [lw.add1("Mul", [x, scale])])
    return lw.add1("Div", [y, scale])


def _argmax(op: str):
    def h(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
        x = args[0]
        dim = _arg(args, kwargs, 1, "dim")
        keep = bool(_arg(args, kwargs, 2, "keepdim", False))
        shape = lw.shape(x)
        if dim is None:  # the index into the flattened tensor
            flat = lw.add1("Reshape", [x, lw.ints([int(np.prod(shape))])])
            y = lw.add1(op, [flat], {"axis": 0, "keepdims": 0})
            if keep:
                y = lw.add1("Reshape", [y, lw.ints([1] * len(shape))])
            return y
        return lw.add1(op, [x], {"axis": int(dim), "keepdims": int(keep)})

    return h


function_handler("argmax")(_argmax("ArgMax"))
function_handler("argmin")(_argmax("ArgMin"))


@function_handler("topk")
def _f_topk(lw: TorchLowering, args: tuple, kwargs: dict) -> tuple[TensorRef, TensorRef]:
    x = args[0]
    k = int(_arg(args, kwargs, 1, "k"))
    attrs = {
        "axis": int(_arg(args, kwargs, 2, "dim", -1)),
        "largest": int(bool(_arg(args, kwargs, 3, "largest", True))),
        "sorted": int(bool(_arg(args, kwargs, 4, "sorted", True))),
    }
    values, indices = lw.add("TopK", [x, lw.ints([k])], attrs, 2)
    return values, indices


# --- layer normalisation -------------------------------------------------------------------------


def layer_norm(lw: TorchLowering, x: TensorRef, normalized_shape: Any, weight: Any, bias: Any,
               eps: float, base: str = "layer_norm") -> TensorRef:
    """LayerNormalization over the last ``len(normalized_shape)`` dimensions."""
    norm = [int(d) for d in (normalized_shape if isinstance(normalized_shape, (list, tuple))
                             else [normalized_shape])]
    rank = len(lw.shape(x))
    if list(lw.shape(x)[rank - len(norm):]) != norm:
        raise lw.unsupported(f"layer_norm over {norm} of a tensor of shape {list(lw.shape(x))}")
    scale = (lw.const(np.ones(norm, np.float32), f"{base}_weight") if weight is None
             else lw.as_tensor(weight))
    ins = [x, scale] + ([] if bias is None else [lw.as_tensor(bias)])
    attrs = {"axis": rank - len(norm), "epsilon": float(eps)}
    return lw.add1("LayerNormalization", ins, attrs, base=base)


@module_handler("torch.nn.modules.normalization.LayerNorm")
def _layer_norm_m(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    def param(p: Any) -> Any:
        return None if p is None else lw.const(p.detach().cpu().numpy().astype(np.float32),
                                               f"{path}_param")

    return layer_norm(lw, args[0], m.normalized_shape, param(m.weight), param(m.bias), m.eps,
                      path)


@function_handler("layer_norm")
def _f_layer_norm(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    return layer_norm(lw, args[0], _arg(args, kwargs, 1, "normalized_shape"),
                      _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"),
                      float(_arg(args, kwargs, 4, "eps", 1e-5)))


@function_handler("native_layer_norm")
def _aten_native_layer_norm(lw: TorchLowering, args: tuple, kwargs: dict) -> tuple:
    """aten.native_layer_norm(x, shape, weight, bias, eps) → (y, mean, rstd)."""
    x, shape, weight, bias, eps = args[:5]
    y = layer_norm(lw, x, shape, weight, bias, float(eps))
    node = lw.g.nodes[-1]
    node.outputs += [lw.fresh(f"{node.name}_mean"), lw.fresh(f"{node.name}_rstd")]
    infer_node(lw.g, node)
    return y, TensorRef(node.outputs[1]), TensorRef(node.outputs[2])


# --- einsum --------------------------------------------------------------------------------------


@function_handler("einsum")
def _f_einsum(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    """torch.einsum(eq, a, b, ...), torch.einsum(eq, [a, b]) and aten.einsum(eq, [a, b]): an
    Einsum node, lowered to MatMul/Transpose/Reshape/ReduceSum by passes.lower_einsum."""
    eq = args[0] if args else kwargs.get("equation")
    ops = args[1:] if len(args) > 1 else (kwargs.get("tensors") or kwargs.get("operands") or ())
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = tuple(ops[0])
    if not isinstance(eq, str):
        raise lw.unsupported("einsum needs a constant equation string")
    return lw.add1("Einsum", [lw.as_tensor(t) for t in ops], {"equation": eq})
