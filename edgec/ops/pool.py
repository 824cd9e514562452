"""MaxPool, AveragePool (1-D and 2-D), GlobalAveragePool and GlobalMaxPool.

Window geometry (pads, strides, dilations, auto_pad, ceil_mode) is resolved at compile time by
:func:`edgec.ops.conv.window_axes`, so the kernels never test padding per tap: interior columns
walk the full window, border columns and clipped rows read their tap range from small tables.
AveragePool's divisor is per axis (``count_include_pad`` counts taps inside the padded input,
never a ceil_mode overhang, as onnxruntime does), so it is a compile-time constant for interior
positions and a product of two per-axis reciprocal tables elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, int_list, prod, register, unsupported
from edgec.ops.conv import (
    Axis,
    Pos,
    as_2d,
    c_for,
    conv_row,
    gather_windows,
    lin,
    spatial_list,
    tap_loop,
    window_axes,
    window_grid,
)

#: the float MaxPool starts from (onnxruntime's numeric_limits<float>::lowest())
LOWEST = float(np.finfo(np.float32).min)


def _pool_axes(node: Node, g: Graph) -> list[Axis]:
    x_shape = g.shape(node.inputs[0])
    if len(x_shape) not in (3, 4):
        raise unsupported(
            node, f"{node.op} supports 1-D and 2-D inputs (rank 3 or 4); got shape {x_shape}"
        )
    if len([o for o in node.outputs if o]) > 1 or (len(node.outputs) > 1 and node.outputs[1]):
        raise unsupported(node, "MaxPool's Indices output is not supported (use Y only)")
    n = len(x_shape) - 2
    ks = node.attr("kernel_shape")
    if ks is None or len(int_list(ks)) != n:
        raise unsupported(node, f"kernel_shape must list {n} sizes, got {ks}")
    dilations = spatial_list(node, "dilations", n, 1)
    if node.op == "AveragePool" and g.opset < 19 and any(d != 1 for d in dilations):
        raise unsupported(node, f"AveragePool dilations need opset 19 (model opset {g.opset})")
    pads = spatial_list(node, "pads", 2 * n, 0)
    kernel = int_list(ks)
    if any(p >= kernel[i % n] for i, p in enumerate(pads)):
        raise unsupported(node, f"pads {pads} must each be smaller than the kernel {kernel}")
    return window_axes(
        node,
        tuple(int(d) for d in x_shape[2:]),
        kernel,
        pool=True,
        ceil_mode=bool(node.attr("ceil_mode", 0)),
        dilations=dilations,
    )


def _divisors(node: Node, axis: Axis) -> list[int]:
    """AveragePool's per-axis divisor of every output position."""
    if node.attr("count_include_pad", 0):
        return [axis.padded_count(o) for o in range(axis.size_out)]
    return [k1 - k0 for k0, k1 in axis.tap_ranges()]


@register
class Pool(Op):
    types = ("MaxPool", "AveragePool")
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        x_shape = g.shape(node.inputs[0])
        axes = _pool_axes(node, g)
        return [((*x_shape[:2], *(a.size_out for a in axes)), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axes = _pool_axes(node, g)
        h, w = as_2d(axes)
        nb, ch = x.shape[:2]
        x4 = x.reshape(nb, ch, h.size_in, w.size_in)
        win, mask = gather_windows(x4.astype(np.float64), h, w)  # [N, C, OH, KH, OW, KW]
        if node.op == "MaxPool":
            # a NaN tap propagates (as numpy, torch); see docs/conformance.md for onnxruntime
            y = np.where(mask, win, -np.inf).max(axis=(3, 5))
            y = np.where(np.isneginf(y), LOWEST, y)
        else:
            div = np.outer(_divisors(node, h), _divisors(node, w)).astype(np.float64)
            y = win.sum(axis=(3, 5)) / np.maximum(div, 1)
        return [y.astype(np.float32).reshape(*x.shape[:2], *(a.size_out for a in axes))]

    def macs(self, node: Node, g: Graph) -> int:
        x_shape = g.shape(node.inputs[0])
        h, w = as_2d(_pool_axes(node, g))
        return prod(x_shape[:2]) * h.valid_taps * w.valid_taps

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        x_shape = g.shape(node.inputs[0])
        h, w = as_2d(_pool_axes(node, g))
        if node.op == "MaxPool":
            body = self._max_body(ctx, w)
            prologue = conv_row(w)
        else:
            body, prologue = self._avg_body(node, ctx, h, w)
        ihw, ohw = h.size_in * w.size_in, h.size_out * w.size_out
        plane = (
            f"const float *xc = {ctx.inp(0)} + {lin((ihw, 'c'))};\n"
            f"float *yc = {ctx.out(0)} + {lin((ohw, 'c'))};\n"
            + window_grid(ctx, h, w, body, prologue)
        )
        return c_for("c", 0, prod(x_shape[:2]), plane)

    @staticmethod
    def _taps(h: Axis, w: Axis, hp: Pos, wp: Pos, update: str) -> str:
        """Tap loops reading ``v`` at every in-input tap, then ``update``."""
        read = f"const float v = xc[{lin((1, 'xr'), (w.dilation, 'kw'))}];\n{update}"
        if h.trivial:
            return "const int xr = iws;\n" + tap_loop("kw", wp, read)
        row = f"const int xr = {lin((h.dilation * w.size_in, 'kh'), (1, 'xrow'), (1, 'iws'))};\n"
        return tap_loop("kh", hp, row + tap_loop("kw", wp, read))

    def _max_body(self, ctx: EmitContext, w: Axis) -> Callable[[Pos, Pos], str]:
        def body(hp: Pos, wp: Pos) -> str:
            return (
                f"float m = {c_float(LOWEST)};\n"
                f"const int iws = {wp.start()};\n"
                + self._taps(hp.axis, w, hp, wp, "m = (v > m || v != v) ? v : m;\n")
                + f"yc[{lin((w.size_out, hp.o), (1, wp.o))}] = {ctx.act('m')};\n"
            )

        return body

    def _avg_body(
        self, node: Node, ctx: EmitContext, h: Axis, w: Axis
    ) -> tuple[Callable[[Pos, Pos], str], Callable[[Pos], str]]:
        hdiv, wdiv = _divisors(node, h), _divisors(node, w)
        h_const = len(set(hdiv)) == 1
        w_const = len(set(wdiv)) == 1
        name = node.name
        hinv = (
            None
            if h_const
            else ctx.const_array(f"{name}_invh", 1.0 / np.maximum(np.asarray(hdiv, np.float64), 1))
        )
        winv = (
            None
            if w_const
            else ctx.const_array(f"{name}_invw", 1.0 / np.maximum(np.asarray(wdiv, np.float64), 1))
        )
        row = conv_row(w)

        def prologue(hp: Pos) -> str:
            return row(hp) + (f"const float invh = {hinv}[{hp.o}];\n" if hinv else "")

        def scale(hp: Pos, wp: Pos) -> str:
            wd: int | None = wdiv[0] if w_const else (w.kernel if wp.interior else None)
            if hinv is None and wd is not None:
                return c_float(1.0 / max(hdiv[0] * wd, 1))
            hs = "invh" if hinv else c_float(1.0 / max(hdiv[0], 1))
            ws = c_float(1.0 / max(wd, 1)) if wd is not None else f"{winv}[{wp.o}]"
            return f"({hs} * {ws})"

        def body(hp: Pos, wp: Pos) -> str:
            return (
                "float s = 0.0f;\n"
                f"const int iws = {wp.start()};\n"
                + self._taps(h, w, hp, wp, "s += v;\n")
                + f"const float r = s * {scale(hp, wp)};\n"
                + f"yc[{lin((w.size_out, hp.o), (1, wp.o))}] = {ctx.act('r')};\n"
            )

        return body, prologue


@register
class GlobalPool(Op):
    types = ("GlobalAveragePool", "GlobalMaxPool")
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        x_shape = g.shape(node.inputs[0])
        if len(x_shape) < 3:
            raise unsupported(node, f"{node.op} needs an input of rank >= 3, got {x_shape}")
        return [((*x_shape[:2], *([1] * (len(x_shape) - 2))), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axes = tuple(range(2, x.ndim))
        x64 = x.astype(np.float64)
        y = (
            x64.mean(axis=axes, keepdims=True)
            if node.op == "GlobalAveragePool"
            else x64.max(axis=axes, keepdims=True)
        )
        return [y.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        return prod(g.shape(node.inputs[0]))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        x_shape = ctx.g.shape(node.inputs[0])
        size = prod(x_shape[2:])
        if node.op == "GlobalMaxPool":
            # a NaN propagates: once r is NaN both compares are false
            init, update, result = "xc[0]", "r = (xc[i] > r || xc[i] != xc[i]) ? xc[i] : r;", "r"
            first = 1
        else:
            init, update, result = "0.0f", "r += xc[i];", f"r * {c_float(1.0 / size)}"
            first = 0
        loop = f"for (int i = {first}; i < {size}; ++i) {update}\n" if size > first else ""
        plane = (
            f"const float *xc = {ctx.inp(0)} + {lin((size, 'c'))};\n"
            f"float r = {init};\n"
            + loop
            + (f"r = {result};\n" if result != "r" else "")
            + f"{ctx.out(0)}[c] = {ctx.act('r')};\n"
        )
        return c_for("c", 0, prod(x_shape[:2]), plane)
