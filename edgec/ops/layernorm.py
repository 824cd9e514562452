"""LayerNormalization (ONNX opset 17; ``torch.nn.LayerNorm`` / ``F.layer_norm``).

Each row (the dimensions from ``axis`` on, flattened) is normalised with its own mean and
biased variance: ``y = (x - mean) / sqrt(var + epsilon) * scale + bias``. ``Scale`` and the
optional ``B`` broadcast to the normalised dimensions (a constant that broadcasts is expanded
at compile time; a run-time one must have the normalised shape). The optional outputs ``Mean``
and ``InvStdDev`` (shape: the row dimensions, then 1s) are written when the node has them.
Statistics are computed in float32 (``stash_type`` 1, the only value ONNX defines for
float32 inputs), two passes over the row (mean, then the squared deviations).
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, prod, register, unsupported
from edgec.ops.shape_ops import norm_axes, shape_error


def _axis(node: Node, g: Graph) -> int:
    rank = len(g.shape(node.inputs[0]))
    if rank == 0:
        raise unsupported(node, "LayerNormalization of a scalar")
    return norm_axes(node, [int(node.attr("axis", -1))], rank)[0]


def _param(node: Node, i: int) -> str:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i] else ""


def _has_output(node: Node, i: int) -> bool:
    return len(node.outputs) > i and bool(node.outputs[i])


@register
class LayerNorm(Op):
    types = ("LayerNormalization",)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = g.shape(node.inputs[0])
        axis = _axis(node, g)
        norm = shape[axis:]
        for i, what in ((1, "Scale"), (2, "B")):
            p = _param(node, i)
            if not p:
                if i == 1:
                    raise shape_error(node, "LayerNormalization needs its Scale input")
                continue
            ps = g.shape(p)
            try:
                ok = np.broadcast_shapes(ps, norm) == tuple(norm)
            except ValueError:
                ok = False
            if not ok:
                raise shape_error(
                    node, f"{what} of shape {list(ps)} does not broadcast to the normalised "
                    f"shape {list(norm)}")
            if g.const(p) is None and tuple(ps) != tuple(norm) and prod(ps) != prod(norm):
                raise unsupported(node, f"a run-time {what} must have the normalised shape")
        stats = tuple(shape[:axis]) + (1,) * (len(shape) - axis)
        dtype = g.tensor(node.inputs[0]).dtype
        return [(shape, dtype), (stats, "float32"), (stats, "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None and inputs[1] is not None
        axis = _axis(node, g)
        eps = float(node.attr("epsilon", 1e-5))
        axes = tuple(range(axis, x.ndim))
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=axes, keepdims=True)
        var = np.square(x64 - mean).mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + eps)
        y = (x64 - mean) * inv * inputs[1].astype(np.float64)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2].astype(np.float64)
        return [y.astype(x.dtype), mean.astype(np.float32), inv.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        return 3 * prod(g.shape(node.inputs[0]))

    def inplace(self, node: Node, g: Graph) -> bool:
        return True  # each row is read in full (mean, variance) before it is written

    def _param_c(self, node: Node, ctx: EmitContext, i: int, norm: Shape) -> str:
        """C expression of Scale / B at row element ``j`` ('' when absent)."""
        p = _param(node, i)
        if not p:
            return ""
        data = ctx.g.const(p)
        if data is not None and data.size == 1:
            return c_float(float(data.reshape(-1)[0]))
        if prod(ctx.g.shape(p)) == prod(norm):
            return f"{ctx.inp(i)}[j]"
        assert data is not None  # infer refused run-time parameters that broadcast
        full = np.broadcast_to(data.astype(np.float32), norm)
        sym = ctx.const_array(f"{node.name}_{'scale' if i == 1 else 'bias'}", full)
        return f"{sym}[j]"

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        shape = g.shape(node.inputs[0])
        axis = _axis(node, g)
        rows, n = prod(shape[:axis]), prod(shape[axis:])
        if rows * n == 0:
            return ""
        eps = c_float(float(node.attr("epsilon", 1e-5)))
        scale = self._param_c(node, ctx, 1, shape[axis:])
        bias = self._param_c(node, ctx, 2, shape[axis:])
        value = f"(xr[j] - mean) * inv * {scale}" + (f" + {bias}" if bias else "")
        x, y = ctx.inp(0), ctx.out(0)
        stats = ""
        if _has_output(node, 1):
            stats += f"    {ctx.out(1)}[r] = mean;\n"
        if _has_output(node, 2):
            stats += f"    {ctx.out(2)}[r] = inv;\n"
        return (
            f"for (int r = 0; r < {rows}; ++r) {{\n"
            f"    const float *xr = {x} + r * {n};\n"
            f"    float *yr = {y} + r * {n};\n"
            f"    float mean = 0.0f;\n"
            f"    float var = 0.0f;\n"
            f"    for (int j = 0; j < {n}; ++j) mean += xr[j];\n"
            f"    mean /= {n}.0f;\n"
            f"    for (int j = 0; j < {n}; ++j) {{\n"
            f"        const float d = xr[j] - mean;\n"
            f"        var += d * d;\n"
            f"    }}\n"
            f"    const float inv = 1.0f / sqrtf(var / {n}.0f + {eps});\n"
            f"{stats}"
            f"    for (int j = 0; j < {n}; ++j) yr[j] = {value};\n"
            f"}}\n"
        )
