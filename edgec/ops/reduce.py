"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceSumSquare and ReduceLogSumExp.

Axes come from the ``axes`` attribute (before opset 18; ReduceSum before 13) or from the second
input (later opsets); an empty axes list reduces everything, or nothing with
``noop_with_empty_axes``. The kernel keeps one accumulator in a local per output element and walks
the reduced axes with compile-time strides (both loop nests coalesced).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, prod, register, strides
from edgec.ops.loops import coalesce
from edgec.ops.shape_ops import ints_from, norm_axes

Ref = Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]


@dataclass(frozen=True)
class Reduction:
    init: str  # C initial value of the accumulator
    step: str  # C statement folding value ``v`` into ``acc``
    final: str  # C expression of the result from ``acc`` (``{n}``: element count)
    ref: Ref


def _lse(x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
    x64 = x.astype(np.float64)
    m = np.max(x64, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.log(np.sum(np.exp(x64 - m), axis=axes, keepdims=True)) + m
    return s if keep else np.squeeze(s, axis=axes)


def _l2(x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
    return np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=axes, keepdims=keep))


REDUCTIONS: dict[str, Reduction] = {
    "ReduceSum": Reduction("0.0f", "acc += v;", "acc",
                           lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "ReduceMean": Reduction("0.0f", "acc += v;", "acc / {n}.0f",
                            lambda x, a, k: np.mean(x, axis=a, keepdims=k)),
    "ReduceMax": Reduction("-INFINITY", "acc = (v > acc || v != v) ? v : acc;", "acc",
                           lambda x, a, k: np.max(x, axis=a, keepdims=k)),
    "ReduceMin": Reduction("INFINITY", "acc = (v < acc || v != v) ? v : acc;", "acc",
                           lambda x, a, k: np.min(x, axis=a, keepdims=k)),
    "ReduceProd": Reduction("1.0f", "acc *= v;", "acc",
                            lambda x, a, k: np.prod(x, axis=a, keepdims=k)),
    "ReduceL1": Reduction("0.0f", "acc += fabsf(v);", "acc",
                          lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k)),
    "ReduceL2": Reduction("0.0f", "acc += v * v;", "sqrtf(acc)", _l2),
    "ReduceSumSquare": Reduction("0.0f", "acc += v * v;", "acc",
                                 lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k)),
    # two passes: the maximum first, then the sum of exp(v - max)
    "ReduceLogSumExp": Reduction("0.0f", "acc += expf(v - m);", "m + logf(acc)", _lse),
}

def reduce_axes(node: Node, g: Graph, rank: int) -> list[int]:
    """Sorted axes to reduce (empty: the op is the identity)."""
    axes = ints_from(node, g, 1, "axes", "axes")
    if not axes:
        return [] if node.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(norm_axes(node, axes, rank))


def _out_shape(shape: Shape, axes: list[int], keep: bool) -> Shape:
    if keep:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _nest(dims: list[int], names: list[str], depth: int) -> tuple[list[str], list[str]]:
    opens = ["    " * (depth + k) + f"for (int {v} = 0; {v} < {d}; ++{v}) {{"
             for k, (v, d) in enumerate(zip(names, dims, strict=True))]
    closes = ["    " * (depth + k) + "}" for k in range(len(dims) - 1, -1, -1)]
    return opens, closes


def _terms(names: list[str], sts: list[int]) -> list[str]:
    return [v if s == 1 else f"{v} * {s}" for v, s in zip(names, sts, strict=True) if s]


@register
class Reduce(Op):
    types = tuple(REDUCTIONS)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = g.shape(node.inputs[0])
        axes = reduce_axes(node, g, len(shape))
        keep = bool(node.attr("keepdims", 1))
        return [(_out_shape(shape, axes, keep), g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axes = reduce_axes(node, g, x.ndim)
        if not axes:
            return [x.copy()]
        keep = bool(node.attr("keepdims", 1))
        with np.errstate(all="ignore"):
            out = REDUCTIONS[node.op].ref(x, tuple(axes), keep)
        return [np.asarray(out).astype(x.dtype)]

    def macs(self, node: Node, g: Graph) -> int:
        return prod(g.shape(node.inputs[0]))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        shape = g.shape(node.inputs[0])
        axes = reduce_axes(node, g, len(shape))
        x, y = ctx.inp(0), ctx.out(0)
        if not axes:
            return f"memcpy({y}, {x}, sizeof(float) * {prod(shape)});\n" if prod(shape) else ""
        if prod(shape) == 0:
            return ""
        in_st = strides(shape)
        kept = [d for i, d in enumerate(shape) if i not in axes]
        k_dims, (k_in, k_out) = coalesce(tuple(kept), [
            [s for i, s in enumerate(in_st) if i not in axes], strides(kept)])
        r_dims, (r_in,) = coalesce(tuple(shape[a] for a in axes), [[in_st[a] for a in axes]])
        k_names = [f"o{k}" for k in range(len(k_dims))]
        r_names = [f"r{k}" for k in range(len(r_dims))]
        spec = REDUCTIONS[node.op]
        depth = len(k_dims)
        pad = "    " * depth
        lines, closes = _nest(k_dims, k_names, 0)
        base = " + ".join(_terms(k_names, k_in)) or "0"
        if base != "0":
            lines.append(pad + f"const float *xr = {x} + {base};")
        else:
            lines.append(pad + f"const float *xr = {x};")
        read = " + ".join(_terms(r_names, r_in)) or "0"

        def inner(statement: str) -> list[str]:
            opens, ends = _nest(r_dims, r_names, depth)
            body = "    " * (depth + len(r_dims))
            return opens + [body + f"const float v = xr[{read}];", body + statement] + ends

        if node.op == "ReduceLogSumExp":
            lines.append(pad + "float m = -INFINITY;")
            lines += inner("m = v > m ? v : m;")
            lines.append(pad + "if (!(m > -INFINITY && m < INFINITY)) m = 0.0f;")
        lines.append(pad + f"float acc = {spec.init};")
        lines += inner(spec.step)
        out_idx = " + ".join(_terms(k_names, k_out)) or "0"
        final = spec.final.format(n=prod(shape) // max(prod(kept), 1))
        lines.append(pad + f"{y}[{out_idx}] = {final};")
        lines += closes
        return "\n".join(lines) + "\n"
