"""Elementwise unary ops and activations (also used as fused activations by other kernels).

Each entry holds the op's parameters (from attributes or constant inputs), its numpy reference and
its C expression over a float variable. ``Pow`` with a constant exponent lives here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, prod, register, unsupported

Params = dict[str, float]


@dataclass(frozen=True)
class Unary:
    c: Callable[[str, Params], str]
    ref: Callable[[np.ndarray, Params], np.ndarray]
    defaults: tuple[tuple[str, float], ...] = ()


def _f(v: float) -> str:
    return c_float(v)


def _clamp(e: str, lo: str, hi: str) -> str:
    """min(max(e, lo), hi) with comparisons: no fminf/fmaxf library calls on FPv4 cores, NaN
    propagates, and min > max gives max everywhere (as ONNX Clip and numpy.clip)."""
    lower = f"({e} < {lo} ? {lo} : {e})"
    return f"({lower} > {hi} ? {hi} : {lower})"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _softplus(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (np.maximum(x64, 0) + np.log1p(np.exp(-np.abs(x64)))).astype(np.float32)


def _elu(x: np.ndarray, a: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, a * (np.exp(x.astype(np.float64)) - 1)).astype(np.float32)


UNARY: dict[str, Unary] = {
    # written so that NaN propagates (as onnxruntime): NaN < 0 is false
    "Relu": Unary(lambda v, p: f"({v} < 0.0f ? 0.0f : {v})", lambda x, p: np.maximum(x, 0)),
    "LeakyRelu": Unary(
        lambda v, p: f"({v} >= 0.0f ? {v} : {_f(p['alpha'])} * {v})",
        lambda x, p: np.where(x >= 0, x, np.float32(p["alpha"]) * x),
        (("alpha", 0.01),),
    ),
    "Sigmoid": Unary(lambda v, p: f"(1.0f / (1.0f + expf(-{v})))", lambda x, p: _sigmoid(x)),
    "Tanh": Unary(lambda v, p: f"tanhf({v})", lambda x, p: np.tanh(x)),
    "HardSigmoid": Unary(
        lambda v, p: _clamp(f"({_f(p['alpha'])} * {v} + {_f(p['beta'])})", "0.0f", "1.0f"),
        lambda x, p: np.clip(np.float32(p["alpha"]) * x + np.float32(p["beta"]), 0, 1),
        (("alpha", 0.2), ("beta", 0.5)),
    ),
    "HardSwish": Unary(
        lambda v, p: f"({v} * {_clamp(f'({_f(1 / 6)} * {v} + 0.5f)', '0.0f', '1.0f')})",
        lambda x, p: x * np.clip(np.float32(1 / 6) * x + np.float32(0.5), 0, 1),
    ),
    "Elu": Unary(
        lambda v, p: f"({v} > 0.0f ? {v} : {_f(p['alpha'])} * (expf({v}) - 1.0f))",
        lambda x, p: _elu(x, p["alpha"]),
        (("alpha", 1.0),),
    ),
    "Selu": Unary(
        lambda v, p: (
            f"({_f(p['gamma'])} * ({v} > 0.0f ? {v} : "
            f"{_f(p['alpha'])} * expf({v}) - {_f(p['alpha'])}))"
        ),
        lambda x, p: (np.float32(p["gamma"]) * _elu(x, p["alpha"])).astype(np.float32),
        (("alpha", 1.67326319217681884765625), ("gamma", 1.05070102214813232421875)),
    ),
    "Softplus": Unary(
        lambda v, p: f"(({v} > 0.0f ? {v} : 0.0f) + log1pf(expf(-fabsf({v}))))",
        lambda x, p: _softplus(x),
    ),
    "Clip": Unary(
        lambda v, p: _clamp(v, _f(p["min"]), _f(p["max"])),
        lambda x, p: np.minimum(np.maximum(x, np.float32(p["min"])), np.float32(p["max"])),
        (("min", float("-inf")), ("max", float("inf"))),
    ),
    "Exp": Unary(lambda v, p: f"expf({v})", lambda x, p: np.exp(x)),
    "Log": Unary(lambda v, p: f"logf({v})", lambda x, p: np.log(x)),
    "Sqrt": Unary(lambda v, p: f"sqrtf({v})", lambda x, p: np.sqrt(x)),
    "Neg": Unary(lambda v, p: f"(-{v})", lambda x, p: -x),
    "Abs": Unary(lambda v, p: f"fabsf({v})", lambda x, p: np.abs(x)),
    "Reciprocal": Unary(lambda v, p: f"(1.0f / {v})", lambda x, p: np.float32(1) / x),
}


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf, otypes=[np.float64])(x.astype(np.float64))


def _gelu_ref(x: np.ndarray, p: Params) -> np.ndarray:
    x64 = x.astype(np.float64)
    if p["tanh"]:
        inner = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
        return (0.5 * x64 * (1 + np.tanh(inner))).astype(np.float32)
    return (0.5 * x64 * (1 + _erf(x64 / np.sqrt(2)))).astype(np.float32)


def _gelu_c(v: str, p: Params) -> str:
    if p["tanh"]:
        return (
            f"(0.5f * {v} * (1.0f + tanhf({_f(np.sqrt(2 / np.pi))} * "
            f"({v} + 0.044715f * {v} * {v} * {v}))))"
        )
    return f"(0.5f * {v} * (1.0f + erff({v} * {_f(1 / np.sqrt(2))})))"


UNARY["Gelu"] = Unary(_gelu_c, _gelu_ref, (("tanh", 0.0),))
UNARY["Mish"] = Unary(
    lambda v, p: f"({v} * tanhf(fmaxf({v}, 0.0f) + log1pf(expf(-fabsf({v})))))",
    lambda x, p: (x.astype(np.float64) * np.tanh(_softplus(x).astype(np.float64))).astype(
        np.float32
    ),
)
UNARY["Celu"] = Unary(
    lambda v, p: (
        f"(({v} < 0.0f ? 0.0f : {v}) + ({v} > 0.0f ? 0.0f : {_f(p['alpha'])} * "
        f"(expf({v} / {_f(p['alpha'])}) - 1.0f)))"
    ),
    lambda x, p: (
        np.maximum(x, 0)
        + np.minimum(0, p["alpha"] * (np.exp(x.astype(np.float64) / p["alpha"]) - 1))
    ).astype(np.float32),
    (("alpha", 1.0),),
)


def _pow_c(v: str, p: Params) -> str:
    e = p["exponent"]
    if e == 1.0:
        return v
    if e == 2.0:
        return f"({v} * {v})"
    if e == 3.0:
        return f"({v} * {v} * {v})"
    if e == 0.5:
        return f"sqrtf({v})"
    if e == -1.0:
        return f"(1.0f / {v})"
    return f"powf({v}, {_f(e)})"


def _pow_ref(x: np.ndarray, p: Params) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.power(x, np.float32(p["exponent"])).astype(np.float32)


UNARY["Pow"] = Unary(_pow_c, _pow_ref)

#: activations another kernel may absorb (see passes.fuse_activation)
FUSABLE_ACTIVATIONS = (
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Softplus",
    "Clip",
    "Gelu",
    "Mish",
    "Celu",
)


def unary_params(node: Node, g: Graph) -> Params:
    """Resolve an activation's parameters from attributes or constant inputs (Clip, Pow)."""
    spec = UNARY[node.op]
    if node.op == "Gelu":  # the one string attribute: approximate = "none" | "tanh"
        return {"tanh": 1.0 if node.attrs.get("approximate", "none") == "tanh" else 0.0}
    p: Params = {k: float(node.attrs.get(k, d)) for k, d in spec.defaults}
    if node.op == "Clip" and len(node.inputs) > 1:
        for idx, key in ((1, "min"), (2, "max")):
            if len(node.inputs) > idx and node.inputs[idx]:
                c = g.const(node.inputs[idx])
                if c is None:
                    raise unsupported(node, f"Clip {key} must be a constant")
                if np.asarray(c).size != 1:
                    raise unsupported(node, f"Clip {key} must be a scalar, got shape {c.shape}")
                p[key] = float(np.asarray(c).reshape(-1)[0])
                if np.isnan(p[key]):
                    raise unsupported(node, f"Clip {key} is NaN")
    if node.op == "Pow":
        c = g.const(node.inputs[1]) if len(node.inputs) > 1 else None
        if c is None or np.asarray(c).size != 1:
            raise unsupported(node, "Pow is supported with a constant scalar exponent only")
        p["exponent"] = float(np.asarray(c).reshape(-1)[0])
    return p


def act_c(kind: str, params: Params, v: str) -> str:
    return UNARY[kind].c(v, params)


def act_ref(kind: str, params: Params, x: np.ndarray) -> np.ndarray:
    return UNARY[kind].ref(x, params).astype(np.float32)


def map_loop(n: int, src: str, dst: str, expr: str) -> str:
    """C loop ``dst[i] = expr(v)`` with ``v = src[i]`` over ``n`` elements (in-place safe)."""
    return (
        f"for (int i = 0; i < {n}; ++i) {{\n"
        f"    const float v = {src}[i];\n"
        f"    {dst}[i] = {expr};\n"
        f"}}\n"
    )


@register
class UnaryOp(Op):
    types = tuple(UNARY)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        return [(g.shape(node.inputs[0]), g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        out = UNARY[node.op].ref(x, unary_params(node, g))
        return [np.asarray(out).astype(x.dtype)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        expr = UNARY[node.op].c("v", unary_params(node, ctx.g))
        return map_loop(prod(ctx.g.shape(node.outputs[0])), ctx.inp(0), ctx.out(0), expr)


# --- derivatives (forward-mode Jacobians, see passes.jacobian) ----------------------------------


def _sig_d_c(v: str) -> str:
    e = f"expf(-fabsf({v}))"
    return f"({e} / ((1.0f + {e}) * (1.0f + {e})))"


def _sig_d_ref(x: np.ndarray) -> np.ndarray:
    s = _sigmoid(x).astype(np.float64)
    return (s * (1 - s)).astype(np.float32)


def _w(cond: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.where(cond, a, b).astype(np.float32)


#: f'(x) of each differentiable unary op, as a C expression and a numpy reference. At kinks the
#: value matches torch.autograd (Relu'(0) = 0, LeakyRelu'(0) = 1, Clip' = 1 on the bounds).
DERIV: dict[str, Unary] = {
    "Relu": Unary(lambda v, p: f"({v} > 0.0f ? 1.0f : 0.0f)", lambda x, p: _w(x > 0, 1.0, 0.0)),
    "LeakyRelu": Unary(
        lambda v, p: f"({v} >= 0.0f ? 1.0f : {_f(p['alpha'])})",
        lambda x, p: _w(x >= 0, 1.0, np.float32(p["alpha"])),
        (("alpha", 0.01),),
    ),
    "Sigmoid": Unary(lambda v, p: _sig_d_c(v), lambda x, p: _sig_d_ref(x)),
    "Tanh": Unary(
        lambda v, p: f"(1.0f - tanhf({v}) * tanhf({v}))",
        lambda x, p: (1 - np.tanh(x.astype(np.float64)) ** 2).astype(np.float32),
    ),
    "HardSigmoid": Unary(
        lambda v, p: (
            f"(({_f(p['alpha'])} * {v} + {_f(p['beta'])}) > 0.0f && "
            f"({_f(p['alpha'])} * {v} + {_f(p['beta'])}) < 1.0f ? {_f(p['alpha'])} : 0.0f)"
        ),
        lambda x, p: _w(
            (p["alpha"] * x + p["beta"] > 0) & (p["alpha"] * x + p["beta"] < 1),
            np.float32(p["alpha"]),
            0.0,
        ),
        (("alpha", 0.2), ("beta", 0.5)),
    ),
    "HardSwish": Unary(
        lambda v, p: f"({v} < -3.0f ? 0.0f : ({v} > 3.0f ? 1.0f : {v} / 3.0f + 0.5f))",
        lambda x, p: _w(x < -3, 0.0, _w(x > 3, 1.0, x / np.float32(3) + np.float32(0.5))),
    ),
    "Elu": Unary(
        lambda v, p: f"({v} > 0.0f ? 1.0f : {_f(p['alpha'])} * expf({v}))",
        lambda x, p: _w(x > 0, 1.0, np.float32(p["alpha"]) * np.exp(np.minimum(x, 0))),
        (("alpha", 1.0),),
    ),
    "Selu": Unary(
        lambda v, p: f"({_f(p['gamma'])} * ({v} > 0.0f ? 1.0f : {_f(p['alpha'])} * expf({v})))",
        lambda x, p: (
            np.float32(p["gamma"])
            * _w(x > 0, 1.0, np.float32(p["alpha"]) * np.exp(np.minimum(x, 0)))
        ).astype(np.float32),
        (("alpha", 1.67326319217681884765625), ("gamma", 1.05070102214813232421875)),
    ),
    "Softplus": Unary(lambda v, p: f"(1.0f / (1.0f + expf(-{v})))", lambda x, p: _sigmoid(x)),
    "Clip": Unary(
        lambda v, p: f"({v} >= {_f(p['min'])} && {v} <= {_f(p['max'])} ? 1.0f : 0.0f)",
        lambda x, p: _w((x >= np.float32(p["min"])) & (x <= np.float32(p["max"])), 1.0, 0.0),
        (("min", float("-inf")), ("max", float("inf"))),
    ),
    "Gelu": Unary(
        lambda v, p: (
            f"(0.5f * (1.0f + erff({v} * {_f(1 / np.sqrt(2))})) + "
            f"{v} * expf(-0.5f * {v} * {v}) * {_f(1 / np.sqrt(2 * np.pi))})"
        ),
        lambda x, p: (
            0.5 * (1 + _erf(x / np.sqrt(2)))
            + x * np.exp(-0.5 * x.astype(np.float64) ** 2) / np.sqrt(2 * np.pi)
        ).astype(np.float32),
    ),
    "Exp": Unary(lambda v, p: f"expf({v})", lambda x, p: np.exp(x)),
    "Log": Unary(lambda v, p: f"(1.0f / {v})", lambda x, p: (np.float32(1) / x).astype(np.float32)),
    "Sqrt": Unary(
        lambda v, p: f"(0.5f / sqrtf({v}))",
        lambda x, p: (np.float32(0.5) / np.sqrt(x)).astype(np.float32),
    ),
    "Neg": Unary(lambda v, p: "(-1.0f)", lambda x, p: np.full_like(x, -1.0)),
    "Abs": Unary(
        lambda v, p: f"({v} > 0.0f ? 1.0f : ({v} < 0.0f ? -1.0f : 0.0f))",
        lambda x, p: np.sign(x).astype(np.float32),
    ),
    "Reciprocal": Unary(
        lambda v, p: f"(-1.0f / ({v} * {v}))", lambda x, p: (-1 / (x * x)).astype(np.float32)
    ),
    "Pow": Unary(
        lambda v, p: f"({_f(p['exponent'])} * powf({v}, {_f(p['exponent'] - 1.0)}))",
        lambda x, p: (
            np.float32(p["exponent"]) * np.power(x, np.float32(p["exponent"] - 1))
        ).astype(np.float32),
    ),
}


#: f'(x) written in terms of the op's OUTPUT y = f(x), for ops whose forward value makes the
#: derivative cheap (as torch's backward does): no second tanhf/expf per element.
DERIV_FROM_OUTPUT: dict[str, Unary] = {
    "Tanh": Unary(
        lambda v, p: f"(1.0f - {v} * {v})",
        lambda y, p: (np.float32(1) - y * y).astype(np.float32),
    ),
    "Sigmoid": Unary(
        lambda v, p: f"({v} * (1.0f - {v}))",
        lambda y, p: (y * (np.float32(1) - y)).astype(np.float32),
    ),
    "Exp": Unary(lambda v, p: v, lambda y, p: y.astype(np.float32)),
    "Relu": Unary(lambda v, p: f"({v} > 0.0f ? 1.0f : 0.0f)", lambda y, p: _w(y > 0, 1.0, 0.0)),
}


@register
class ActGrad(Op):
    """f'(x) of a unary op, elementwise: attrs ``kind`` (the op), ``params`` (its resolved
    parameters) and ``from_output`` (1: the input is y = f(x), see DERIV_FROM_OUTPUT; 0: it is
    x). Added by passes.jacobian; not an ONNX op."""

    types = ("ActGrad",)

    @staticmethod
    def table(node: Node) -> dict[str, Unary]:
        return DERIV_FROM_OUTPUT if node.attrs.get("from_output") else DERIV

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        if node.attrs["kind"] not in self.table(node):
            raise unsupported(node, f"no derivative for {node.attrs['kind']}")
        return [(g.shape(node.inputs[0]), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        spec = self.table(node)[node.attrs["kind"]]
        return [spec.ref(x, dict(node.attrs["params"])).astype(np.float32)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        expr = self.table(node)[node.attrs["kind"]].c("v", dict(node.attrs["params"]))
        return map_loop(prod(ctx.g.shape(node.outputs[0])), ctx.inp(0), ctx.out(0), expr)
