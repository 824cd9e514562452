"""Inference BatchNormalization that was not folded into a preceding Conv/Gemm.

``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` becomes ``y = x * a + b`` with the
per-channel ``a`` and ``b`` computed at compile time (float64, then rounded) and stored as flash
tables; the kernel is one multiply-add per element with the fused activation applied before the
store. The statistics must be constants; ``training_mode`` (batch statistics) is rejected.
Opset 6-8's ``spatial=0`` (statistics per channel *and* position) is supported too.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, prod, register, require_finite, unsupported
from edgec.ops.conv import c_for, lin


def _check(node: Node, g: Graph) -> None:
    if int(node.attr("training_mode", 0)):
        raise unsupported(
            node, "training_mode=1 (batch statistics) is not supported; export in eval mode"
        )
    if any(node.outputs[1:]):
        raise unsupported(node, "only the Y output is supported (running statistics are training)")
    if len(node.inputs) < 5:
        raise unsupported(node, "needs the 5 inputs X, scale, B, input_mean, input_var")
    x_shape = g.shape(node.inputs[0])
    require_finite(node, g, (1, 2, 3, 4), "statistics")
    if len(x_shape) < 2:
        raise unsupported(node, f"input must have rank >= 2, got {x_shape}")
    want = x_shape[1] if _per_channel(node, g) else prod(x_shape[1:])
    for what, name in zip(("scale", "B", "mean", "var"), node.inputs[1:5], strict=True):
        size = prod(g.shape(name))
        if size != want:
            raise unsupported(
                node, f"{what} has {size} values; input {x_shape} needs {want} (one per channel)"
            )
    eps = float(node.attr("epsilon", 1e-5))
    if not np.isfinite(eps):
        raise unsupported(node, f"epsilon is {eps}; it must be finite")
    var = g.const(node.inputs[4])
    if var is not None and np.any(np.asarray(var, np.float64) + eps <= 0):
        raise unsupported(node, "var + epsilon must be positive (a variance of a channel is not)")


def _per_channel(node: Node, g: Graph) -> bool:
    """True for per-channel statistics; False for opset 6-8's ``spatial=0`` ([C, D1, ...])."""
    return int(node.attr("spatial", 1)) != 0 or len(g.shape(node.inputs[0])) == 2


def scale_shift(node: Node, stats: list[np.ndarray | None], g: Graph) -> tuple[np.ndarray, ...]:
    """Compile-time ``(a, b)`` with ``y = x * a + b``, flattened per channel (or per element)."""
    if any(s is None for s in stats):
        raise unsupported(node, "scale, B, mean and var must be constants (inference mode)")
    scale, bias, mean, var = (np.asarray(s, np.float64).reshape(-1) for s in stats)  # type: ignore[arg-type]
    eps = float(node.attr("epsilon", 1e-5))
    a = scale / np.sqrt(var + eps)
    b = bias - mean * a
    x_shape = g.shape(node.inputs[0])
    want = x_shape[1] if _per_channel(node, g) else prod(x_shape[1:])
    if a.size != want or b.size != want:
        raise unsupported(node, f"statistics of {a.size} values do not match input {x_shape}")
    return a.astype(np.float32), b.astype(np.float32)


@register
class BatchNormalization(Op):
    types = ("BatchNormalization",)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        _check(node, g)
        return [(g.shape(node.inputs[0]), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        _check(node, g)
        x = inputs[0]
        assert x is not None
        scale, bias, mean, var = (np.asarray(v, np.float64) for v in inputs[1:5])
        eps = float(node.attr("epsilon", 1e-5))
        shape = (1, -1) + (1,) * (x.ndim - 2) if _per_channel(node, g) else (1, *x.shape[1:])

        def bc(v: np.ndarray) -> np.ndarray:
            return v.reshape(shape)

        y = (x.astype(np.float64) - bc(mean)) / np.sqrt(bc(var) + eps) * bc(scale) + bc(bias)
        return [y.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        return prod(g.shape(node.inputs[0]))

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        _check(node, g)
        a, b = scale_shift(node, [g.const(i) for i in node.inputs[1:5]], g)
        asym = ctx.const_array(f"{node.name}_scale", a)
        bsym = ctx.const_array(f"{node.name}_shift", b)
        x_shape = g.shape(node.inputs[0])
        x, y = ctx.inp(0), ctx.out(0)
        if not _per_channel(node, g):
            inner = prod(x_shape[1:])
            body = (
                f"const int i = {lin((inner, 'n'), (1, 'k'))};\n"
                f"const float r = {x}[i] * {asym}[k] + {bsym}[k];\n"
                f"{y}[i] = {ctx.act('r')};\n"
            )
            return c_for("n", 0, x_shape[0], c_for("k", 0, inner, body))
        channels, size = x_shape[1], prod(x_shape[2:])
        elem = f"const float r = xc[i] * a + b;\nyc[i] = {ctx.act('r')};\n"
        plane = (
            f"const float a = {asym}[{lin((1, 'c'))}];\n"
            f"const float b = {bsym}[{lin((1, 'c'))}];\n"
            f"const float *xc = {x} + {lin((size * channels, 'n'), (size, 'c'))};\n"
            f"float *yc = {y} + {lin((size * channels, 'n'), (size, 'c'))};\n"
            + c_for("i", 0, size, elem)
        )
        return c_for("n", 0, x_shape[0], c_for("c", 0, channels, plane))
