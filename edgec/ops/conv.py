"""Conv (1-D and 2-D), and the window geometry the pooling and transposed-conv kernels share.

Geometry is resolved at compile time, one :class:`Axis` per spatial dimension (a 1-D op is a 2-D
one with a trivial height axis). For each output position the range of kernel taps that fall
inside the input is known in Python, so the C never tests padding per tap: output columns are
split into border segments (tap ranges read from small ``static const`` tables) and one interior
segment (full, compile-time-constant tap range), and output rows read their tap range from a table
only when some row is clipped.

Conv picks one of three kernels at compile time (:func:`conv_kernel`):

* ``im2col`` (constant weights, four or more output channels per group): per output position the
  input window ``[ic][kh][kw]`` is gathered into scratch (zeros in the padding), then each block
  of four output channels takes its dot products with ``edgec_dot4`` (:mod:`edgec.ops.gemm`: a
  VLDM/VFMA assembly loop on Cortex-M FPU cores, plain C elsewhere) over weights interleaved by
  four at compile time; leftover channels use plain ``[ic][kh][kw]`` rows.
* ``stencil`` (constant weights, one input channel per output channel: depthwise): the channel's
  taps are held in locals and four neighbouring outputs are computed together.
* ``direct`` (run-time weights, fewer than four channels per group, kernels too large to unroll):
  output-stationary loops, four output channels sharing every input load, weights re-laid out as
  ``[group][block][ic][kh][kw][4]`` (:func:`channel_loops`).

The first two never test bounds per tap: output positions are grouped into runs sharing a tap
range (:func:`tap_runs`) and every run's taps are unrolled with constant offsets (im2col reads the
ranges from tables instead when the unrolled variants would be too large). Bias initialises the
accumulators and the fused activation is applied before the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import (
    EmitContext,
    Op,
    c_float,
    int_list,
    prod,
    register,
    require_finite,
    unsupported,
)
from edgec.ops.gemm import AVX2_MV4_HELPER, DOT4_HELPER

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
#: output channels computed together by the Conv kernel (accumulators kept in registers)
BLOCK = 4


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


@dataclass(frozen=True)
class Axis:
    """One spatial dimension of a sliding-window op: output ``o`` reads input positions
    ``o * stride - pad_begin + k * dilation`` for taps ``k`` in ``[0, kernel)``."""

    size_in: int
    size_out: int
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_begin: int = 0
    pad_end: int = 0

    @property
    def trivial(self) -> bool:
        return self.size_in == 1 and self.size_out == 1 and self.kernel == 1

    def taps(self, o: int) -> tuple[int, int]:
        """The range ``[k0, k1)`` of taps of output ``o`` that read inside the input."""
        start = o * self.stride - self.pad_begin
        k0 = max(0, _ceil_div(-start, self.dilation))
        k1 = min(self.kernel, _ceil_div(self.size_in - start, self.dilation))
        return k0, max(k0, k1)

    def padded_count(self, o: int) -> int:
        """Taps of output ``o`` inside the padded input ``[-pad_begin, size_in + pad_end)``."""
        start = o * self.stride - self.pad_begin
        return sum(
            1
            for k in range(self.kernel)
            if -self.pad_begin <= start + k * self.dilation < self.size_in + self.pad_end
        )

    def tap_ranges(self) -> list[tuple[int, int]]:
        return [self.taps(o) for o in range(self.size_out)]

    @property
    def all_interior(self) -> bool:
        return all(t == (0, self.kernel) for t in self.tap_ranges())

    def segments(self) -> list[tuple[int, int, bool]]:
        """Output ranges ``(o0, o1, interior)``: border ranges need per-position tap bounds."""
        full = [t == (0, self.kernel) for t in self.tap_ranges()]
        if not any(full):
            return [(0, self.size_out, False)]
        a = full.index(True)
        b = self.size_out - full[::-1].index(True)
        if not all(full[a:b]):  # not contiguous (cannot happen for a valid geometry)
            return [(0, self.size_out, False)]
        segs = [(0, a, False), (a, b, True), (b, self.size_out, False)]
        return [s for s in segs if s[1] > s[0]]

    @property
    def valid_taps(self) -> int:
        """Total number of in-input taps over all outputs (for true MAC counts)."""
        return sum(k1 - k0 for k0, k1 in self.tap_ranges())

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(clipped input index [out, kernel], validity mask) for numpy references."""
        o = np.arange(self.size_out)[:, None]
        k = np.arange(self.kernel)[None, :]
        pos = o * self.stride - self.pad_begin + k * self.dilation
        valid = (pos >= 0) & (pos < self.size_in)
        return np.clip(pos, 0, self.size_in - 1), valid


TRIVIAL = Axis(1, 1)


# -- attribute resolution ----------------------------------------------------------------------


def spatial_list(node: Node, key: str, n: int, default: int) -> list[int]:
    v = node.attr(key)
    if v is None:
        return [default] * n
    vals = int_list(v)
    if len(vals) != n:
        raise unsupported(node, f"attribute {key}={vals} must have {n} values (one per axis)")
    return vals


def auto_pad(node: Node) -> str:
    ap = str(node.attr("auto_pad", "NOTSET") or "NOTSET")
    if ap not in AUTO_PADS:
        raise unsupported(node, f"auto_pad={ap!r}; supported: {', '.join(AUTO_PADS)}")
    return ap


def window_axes(
    node: Node,
    in_spatial: Shape,
    kernel: list[int],
    *,
    pool: bool = False,
    ceil_mode: bool = False,
    dilations: list[int] | None = None,
) -> list[Axis]:
    """Resolve strides/dilations/pads/auto_pad (and pooling's ceil_mode) into axes.

    Conv follows the ONNX spec: SAME gives ``ceil(in / stride)`` outputs, padded for the dilated
    kernel extent. Pools (``pool=True``) follow onnxruntime, which the spec matches except for
    dilated SAME: SAME pads are computed for the *undilated* kernel, then the output size comes
    from the usual rule with the dilated extent. ``ceil_mode`` rounds the output size up, but a
    last window that would start in the end padding is dropped (onnxruntime, PyTorch and the
    spec since onnx#5741); it applies with auto_pad too. Negative SAME padding (kernel smaller
    than the stride, which onnxruntime rejects) is taken as zero.
    """
    n = len(in_spatial)
    strides_ = spatial_list(node, "strides", n, 1)
    dils = dilations if dilations is not None else spatial_list(node, "dilations", n, 1)
    pads = spatial_list(node, "pads", 2 * n, 0)
    if any(p < 0 for p in pads):
        raise unsupported(node, f"negative pads {pads} are not supported")
    if any(s < 1 for s in strides_) or any(d < 1 for d in dils) or any(k < 1 for k in kernel):
        raise unsupported(node, "strides, dilations and kernel sizes must be >= 1")
    mode = auto_pad(node)
    axes: list[Axis] = []
    for i, size in enumerate(in_spatial):
        k, s, d = kernel[i], strides_[i], dils[i]
        span = (k - 1) * d + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            target = _ceil_div(size, s)
            total = max(0, (target - 1) * s + (k if pool else span) - size)
            small = total // 2
            pb, pe = (small, total - small) if mode == "SAME_UPPER" else (total - small, small)
        elif mode == "VALID":
            pb, pe = 0, 0
        else:
            pb, pe = pads[i], pads[n + i]
        room = size + pb + pe - span
        if room < 0:
            raise unsupported(
                node, f"kernel extent {span} exceeds the padded input {size + pb + pe}"
            )
        out = (_ceil_div(room, s) if ceil_mode else room // s) + 1
        if ceil_mode and (out - 1) * s >= size + pb:
            out -= 1
        axes.append(Axis(int(size), int(out), k, s, d, pb, pe))
    return axes


def as_2d(axes: list[Axis]) -> tuple[Axis, Axis]:
    if len(axes) == 1:
        return TRIVIAL, axes[0]
    return axes[0], axes[1]


# -- C emission helpers --------------------------------------------------------------------------


def lin(*terms: tuple[int, str] | int) -> str:
    """A C integer expression ``c1 * v1 + c2 * v2 + ... + c0`` with zero terms dropped."""
    parts: list[tuple[int, str]] = []
    const = 0
    for t in terms:
        if isinstance(t, int):
            const += t
        elif t[0] != 0 and t[1] != "0":
            parts.append(t)
    out = ""
    for coef, var in parts:
        mag = abs(coef)
        item = var if mag == 1 else f"{var} * {mag}"
        if not out:
            out = item if coef > 0 else f"-{item}"
        else:
            out += f" + {item}" if coef > 0 else f" - {item}"
    if not out:
        return str(const)
    if const:
        out += f" + {const}" if const > 0 else f" - {-const}"
    return out


def c_for(var: str, lo: str | int, hi: str | int, body: str) -> str:
    """``for (int var = lo; var < hi; ++var) { body }``; a one-iteration constant loop becomes a
    block binding ``var``."""
    inner = "".join(f"    {ln}\n" if ln else "\n" for ln in body.rstrip("\n").split("\n"))
    if isinstance(lo, int) and isinstance(hi, int) and hi - lo == 1:
        return f"{{\n    const int {var} = {lo};\n{inner}}}\n"
    return f"for (int {var} = {lo}; {var} < {hi}; ++{var}) {{\n{inner}}}\n"


def int_ctype(values: list[int]) -> str:
    lo, hi = min(values, default=0), max(values, default=0)
    if 0 <= lo and hi < 256:
        return "uint8_t"
    if -32768 <= lo and hi < 32768:
        return "int16_t"
    return "int32_t"


def int_table(ctx: EmitContext, base: str, values: list[int]) -> str:
    ctype = int_ctype(values)
    return ctx.const_array(base, np.asarray(values, np.int64), ctype)


@dataclass(frozen=True)
class Pos:
    """One axis' position inside :func:`window_grid`: the output index variable (``"0"`` for a
    trivial axis), the tap bounds as C expressions, whether the position is interior."""

    axis: Axis
    o: str
    k0: str | int
    k1: str | int
    interior: bool

    def start(self) -> str:
        """C expression of the first input position (may be negative in the padding)."""
        return lin((self.axis.stride, self.o), -self.axis.pad_begin)


def tap_loop(var: str, pos: Pos, body: str) -> str:
    """Loop ``var`` over the valid taps of ``pos`` (nothing for a one-tap trivial axis)."""
    if pos.axis.kernel == 1 and pos.interior:
        return c_for(var, 0, 1, body)
    return c_for(var, pos.k0, pos.k1, body)


def window_grid(
    ctx: EmitContext,
    h: Axis,
    w: Axis,
    body: Callable[[Pos, Pos], str],
    row_prologue: Callable[[Pos], str] | None = None,
) -> str:
    """Loops over the output grid ``h.size_out x w.size_out`` with precomputed tap bounds."""
    name = ctx.node.name
    if h.all_interior:
        hpos = Pos(h, "oh" if h.size_out > 1 else "0", 0, h.kernel, True)
        row_head = ""
    else:
        k0, k1 = zip(*h.tap_ranges(), strict=True)
        t0 = int_table(ctx, f"{name}_kh0", list(k0))
        t1 = int_table(ctx, f"{name}_kh1", list(k1))
        hpos = Pos(h, "oh", "kh0", "kh1", False)
        row_head = f"const int kh0 = {t0}[oh];\nconst int kh1 = {t1}[oh];\n"
    wtab: tuple[str, str] | None = None
    cols = ""
    for o0, o1, interior in w.segments():
        ow = "ow" if w.size_out > 1 else "0"
        if interior:
            wpos = Pos(w, ow, 0, w.kernel, True)
            head = ""
        else:
            if wtab is None:
                k0, k1 = zip(*w.tap_ranges(), strict=True)
                wtab = (
                    int_table(ctx, f"{name}_kw0", list(k0)),
                    int_table(ctx, f"{name}_kw1", list(k1)),
                )
            wpos = Pos(w, ow, "kw0", "kw1", False)
            head = f"const int kw0 = {wtab[0]}[{ow}];\nconst int kw1 = {wtab[1]}[{ow}];\n"
        if ow == "0":
            cols += "{\n" + _indent(head + body(hpos, wpos)) + "}\n"
        else:
            comment = "interior" if interior else "border"
            cols += f"/* columns {o0}..{o1 - 1}: {comment} */\n"
            cols += c_for("ow", o0, o1, head + body(hpos, wpos))
    row = row_head + (row_prologue(hpos) if row_prologue else "") + cols
    if hpos.o == "0":
        return row
    return c_for("oh", 0, h.size_out, row)


def _indent(code: str) -> str:
    return "".join(f"    {ln}\n" if ln else "\n" for ln in code.rstrip("\n").split("\n"))


def gather_windows(x: np.ndarray, h: Axis, w: Axis) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``x[N, C, H, W]`` as ``[N, C, OH, KH, OW, KW]`` (zeros outside the input) and
    the validity mask ``[OH, KH, OW, KW]``."""
    ih, vh = h.index()
    iw, vw = w.index()
    win = x[:, :, ih[:, :, None, None], iw[None, None, :, :]]
    mask = vh[:, :, None, None] & vw[None, None, :, :]
    return np.where(mask, win, 0).astype(x.dtype), mask


# -- Conv ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvGeom:
    n: int
    c_in: int
    c_out: int
    group: int
    h: Axis
    w: Axis
    out_shape: Shape

    @property
    def ic_per_group(self) -> int:
        return self.c_in // self.group

    @property
    def oc_per_group(self) -> int:
        return self.c_out // self.group


def conv_geom(node: Node, g: Graph) -> ConvGeom:
    x_shape = g.shape(node.inputs[0])
    w_shape = g.shape(node.inputs[1])
    rank = len(x_shape)
    if rank not in (3, 4) or len(w_shape) != rank:
        raise unsupported(
            node, f"Conv supports 1-D and 2-D inputs (rank 3 or 4); got {x_shape} and {w_shape}"
        )
    require_finite(node, g, (1, 2))
    group = int(node.attr("group", 1))
    n, c_in = int(x_shape[0]), int(x_shape[1])
    c_out, icg = int(w_shape[0]), int(w_shape[1])
    if group < 1 or c_in != icg * group or c_out % group:
        raise unsupported(
            node, f"group={group} does not match input channels {c_in} and weights {w_shape}"
        )
    kernel = [int(k) for k in w_shape[2:]]
    ks = node.attr("kernel_shape")
    if ks is not None and int_list(ks) != kernel:
        raise unsupported(node, f"kernel_shape {int_list(ks)} differs from the weights' {kernel}")
    axes = window_axes(node, tuple(int(d) for d in x_shape[2:]), kernel)
    h, w = as_2d(axes)
    out_shape = (n, c_out, *(a.size_out for a in axes))
    if len(node.inputs) > 2 and node.inputs[2] and g.shape(node.inputs[2]) != (c_out,):
        raise unsupported(node, f"bias shape {g.shape(node.inputs[2])} must be ({c_out},)")
    if kernel == [1] * len(kernel) and all(
        a.stride == 1 and a.pad_begin == a.pad_end == 0 for a in axes
    ):
        # pointwise: the spatial dimensions flatten into one row
        size = prod([a.size_in for a in axes])
        h, w = TRIVIAL, Axis(size, size)
    return ConvGeom(n, c_in, c_out, group, h, w, out_shape)


def conv_reference(
    x: np.ndarray, wts: np.ndarray, bias: np.ndarray | None, geom: ConvGeom
) -> np.ndarray:
    n, grp = geom.n, geom.group
    x4 = x.reshape(n, geom.c_in, geom.h.size_in, geom.w.size_in).astype(np.float64)
    win, _ = gather_windows(x4, geom.h, geom.w)  # [N, C, OH, KH, OW, KW]
    win = win.reshape(n, grp, geom.ic_per_group, *win.shape[2:])
    w5 = wts.astype(np.float64).reshape(
        grp, geom.oc_per_group, geom.ic_per_group, geom.h.kernel, geom.w.kernel
    )
    y = np.einsum("ngchkwl,gockl->ngohw", win, w5)
    y = y.reshape(n, geom.c_out, geom.h.size_out, geom.w.size_out)
    if bias is not None:
        y = y + bias.astype(np.float64).reshape(1, -1, 1, 1)
    return y.astype(np.float32).reshape(geom.out_shape)


def conv_block(
    ctx: EmitContext, geom: ConvGeom, bias: str | None, block: int
) -> Callable[[Pos, Pos], str]:
    """Body computing ``block`` output channels at one output position.

    In scope: ``xg`` (the group's first input channel), ``wb`` (the block's weights,
    ``[ic][kh][kw][block]``), ``yb`` (the block's first output channel) and, with a bias,
    ``oc`` (the block's first output channel index).
    """
    h, w = geom.h, geom.w
    ihw = h.size_in * w.size_in
    ohw = h.size_out * w.size_out
    kk = h.kernel * w.kernel

    def body(hp: Pos, wp: Pos) -> str:
        accs = [f"acc{j}" for j in range(block)] if block > 1 else ["acc"]
        init = [f"{bias}[{lin((1, 'oc'), j)}]" if bias else "0.0f" for j in range(block)]
        code = "".join(f"float {a} = {v};\n" for a, v in zip(accs, init, strict=True))
        code += f"const int iws = {wp.start()};\n"
        taps = f"const float xv = xc[{lin((1, 'xr'), (w.dilation, 'kw'))}];\n"
        if block > 1:
            taps += f"const float *wt = wr + {lin((block, 'kw'))};\n"
            taps += "".join(f"{a} += wt[{j}] * xv;\n" for j, a in enumerate(accs))
        else:
            taps += "acc += wr[kw] * xv;\n"
        if h.trivial:
            inner = "const int xr = iws;\nconst float *wr = wc;\n" + tap_loop("kw", wp, taps)
        else:
            row = (
                f"const int xr = {lin((h.dilation * w.size_in, 'kh'), (1, 'xrow'), (1, 'iws'))};\n"
                f"const float *wr = wc + {lin((w.kernel * block, 'kh'))};\n"
            )
            inner = tap_loop("kh", hp, row + tap_loop("kw", wp, taps))
        ic_body = (
            f"const float *xc = xg + {lin((ihw, 'ic'))};\n"
            f"const float *wc = wb + {lin((kk * block, 'ic'))};\n" + inner
        )
        code += c_for("ic", 0, geom.ic_per_group, ic_body)
        for j, a in enumerate(accs):
            code += f"yb[{lin((w.size_out, hp.o), (1, wp.o), ohw * j)}] = {ctx.act(a)};\n"
        return code

    return body


def conv_row(w: Axis) -> Callable[[Pos], str]:
    """Row prologue of :func:`conv_block`: ``xrow``, the input offset of the window's first row."""

    def prologue(hp: Pos) -> str:
        if hp.axis.trivial:
            return ""
        a = hp.axis
        return f"const int xrow = {lin((a.stride * w.size_in, hp.o), -a.pad_begin * w.size_in)};\n"

    return prologue


@register
class Conv(Op):
    types = ("Conv",)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        return [(conv_geom(node, g).out_shape, "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, wts = inputs[0], inputs[1]
        assert x is not None and wts is not None
        bias = inputs[2] if len(inputs) > 2 else None
        return [conv_reference(x, wts, bias, conv_geom(node, g))]

    def macs(self, node: Node, g: Graph) -> int:
        geom = conv_geom(node, g)
        return geom.n * geom.c_out * geom.ic_per_group * geom.h.valid_taps * geom.w.valid_taps

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        geom = conv_geom(node, g)
        h, w = geom.h, geom.w
        bias = ctx.inp(2) if len(node.inputs) > 2 and node.inputs[2] else None
        wconst = g.const(node.inputs[1])
        wts = None if wconst is None else wconst.astype(np.float32)
        kernel = conv_kernel(geom, wts is not None)
        if kernel == "stencil" and wts is not None:
            return stencil_conv(ctx, geom, wts, bias)
        if kernel == "im2col" and wts is not None:
            return im2col_conv(ctx, geom, wts, bias)
        return channel_loops(
            ctx,
            geom,
            wts,
            bias,
            lambda block: window_grid(ctx, h, w, conv_block(ctx, geom, bias, block), conv_row(w)),
        )

    def scratch(self, node: Node, g: Graph) -> int:
        geom = conv_geom(node, g)
        if conv_kernel(geom, g.const(node.inputs[1]) is not None) == "im2col":
            return geom.ic_per_group * geom.h.kernel * geom.w.kernel
        return 0


def channel_loops(
    ctx: EmitContext,
    geom: ConvGeom,
    wconv: np.ndarray | None,
    bias: str | None,
    grid: Callable[[int], str],
) -> str:
    """Loops over batch, group and blocks of output channels around ``grid(block)``.

    ``wconv`` holds constant weights in Conv's ``[oc][ic][kh][kw]`` layout; they are re-laid out
    as ``[group][block][ic][kh][kw][BLOCK]`` for whole blocks of four channels and
    ``[group][oc][ic][kh][kw]`` for the rest. Run-time weights (None) are read in place, one
    channel at a time. In scope for ``grid``: ``xg`` (the group's first input channel), ``wb``
    (the block's weights), ``yb`` (the block's first output channel) and, with a bias, ``oc``.
    """
    grp, icg, ocg = geom.group, geom.ic_per_group, geom.oc_per_group
    h, w = geom.h, geom.w
    ihw, ohw = h.size_in * w.size_in, h.size_out * w.size_out
    kk = h.kernel * w.kernel
    nblocks = ocg // BLOCK if wconv is not None else 0
    rest = ocg - nblocks * BLOCK
    name = ctx.node.name

    def loop(block: int, var: str, count: int, first: int, wsym: str, per_group: int) -> str:
        oc = ((ocg, "gr"), (block, var))
        body = f"const int oc = {lin(*oc, first)};\n" if bias else ""
        body += (
            f"const float *wb = {wsym} + {lin((per_group, 'gr'), (icg * kk * block, var))};\n"
            f"float *yb = yn + {lin(*((c * ohw, v) for c, v in oc), first * ohw)};\n" + grid(block)
        )
        return c_for(var, 0, count, body)

    parts: list[str] = []
    if wconv is not None:
        w3 = wconv.reshape(grp, ocg, icg * kk)
        if nblocks:
            w4 = w3[:, : nblocks * BLOCK].reshape(grp, nblocks, BLOCK, icg * kk)
            wsym = ctx.const_array(f"{name}_w4", np.ascontiguousarray(w4.transpose(0, 1, 3, 2)))
            parts.append(loop(BLOCK, "ob", nblocks, 0, wsym, nblocks * icg * kk * BLOCK))
        if rest:
            wsym = ctx.const_array(f"{name}_w1", np.ascontiguousarray(w3[:, nblocks * BLOCK :]))
            parts.append(loop(1, "oc1", rest, nblocks * BLOCK, wsym, rest * icg * kk))
    else:  # ONNX's [oc][ic][kh][kw] is the one-channel layout already
        parts.append(loop(1, "oc1", rest, 0, ctx.inp(1), rest * icg * kk))
    grp_body = f"const float *xg = xn + {lin((icg * ihw, 'gr'))};\n" + "".join(parts)
    n_body = (
        f"const float *xn = {ctx.inp(0)} + {lin((geom.c_in * ihw, 'n'))};\n"
        f"float *yn = {ctx.out(0)} + {lin((geom.c_out * ohw, 'n'))};\n"
        + c_for("gr", 0, grp, grp_body)
    )
    return c_for("n", 0, geom.n, n_body)


# -- kernels for constant weights ----------------------------------------------------------------
#
# Both keep every tap range a compile-time constant: output positions are grouped into runs that
# share a tap range (:func:`tap_runs`: the interior run and one run per distinct border range), so
# the taps unroll with fixed input offsets and padded taps are never read.

#: most unrolled tap statements a kernel may emit for its border/interior variants
UNROLL_BUDGET = 2048
#: output pixels of one channel the stencil kernel computes together (shared input loads)
PIXELS = 4


def tap_runs(axis: Axis) -> list[tuple[int, int, int, int]]:
    """Maximal runs ``(o0, o1, k0, k1)`` of consecutive outputs with the same tap range."""
    runs: list[tuple[int, int, int, int]] = []
    for o, (k0, k1) in enumerate(axis.tap_ranges()):
        if runs and runs[-1][2:] == (k0, k1):
            runs[-1] = (runs[-1][0], o + 1, k0, k1)
        else:
            runs.append((o, o + 1, k0, k1))
    return runs


def _stencil_statements(geom: ConvGeom) -> int:
    rows, cols = tap_runs(geom.h), tap_runs(geom.w)
    return sum((k1 - k0) * (j1 - j0) * (PIXELS + 1) for *_, k0, k1 in rows for *_, j0, j1 in cols)


def conv_kernel(geom: ConvGeom, const_weights: bool) -> str:
    """The kernel that computes a Conv: ``"stencil"`` (constant weights, one input channel per
    output channel: depthwise), ``"im2col"`` (constant weights, at least four output channels
    per group) or ``"direct"`` (run-time weights, few channels, or a stencil too large to
    unroll)."""
    if not const_weights:
        return "direct"
    if geom.ic_per_group == 1 and _stencil_statements(geom) <= UNROLL_BUDGET:
        return "stencil"
    if geom.oc_per_group >= BLOCK:
        return "im2col"
    return "direct"


def _strided_for(var: str, lo: int, hi: int, step: int, body: str) -> str:
    if hi - lo == step:
        return c_for(var, lo, lo + 1, body)
    return f"for (int {var} = {lo}; {var} < {hi}; {var} += {step}) {{\n{_indent(body)}}}\n"


def _uses(code: str, var: str) -> bool:
    return re.search(rf"\b{var}\b", code) is not None


def _tap_offset(h: Axis, w: Axis, kh: int, kw: int) -> int:
    """Input offset of tap ``(kh, kw)`` from the window origin (row ``xrow``, column 0)."""
    return kh * h.dilation * w.size_in + kw * w.dilation - w.pad_begin


#: AVX2 hosts: outputs 0..7 of a stride-2 window row, p[0], p[2], ..., p[14] (reads p[0..14])
EVEN8_HELPER = """#ifdef EDGEC_AVX2
/* p[0], p[2], ..., p[14] as one vector (reads p[0] to p[14] only) */
static inline __m256 edgec_avx2_even8(const float *p)
{
    const __m256 a = _mm256_loadu_ps(p);
    const __m256 b = _mm256_loadu_ps(&p[7]);
    const __m256 ab = _mm256_shuffle_ps(a, b, 0xD8); /* p0 p2 p8 p10 | p4 p6 p12 p14 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ab), 0xD8));
}
#endif"""


def stencil_conv(ctx: EmitContext, geom: ConvGeom, wts: np.ndarray, bias: str | None) -> str:
    """Conv whose output channels each read one input channel (depthwise, channel multiplier
    ``oc_per_group``): the channel's taps are held in locals and :data:`PIXELS` neighbouring
    outputs are computed together, every tap range unrolled with constant offsets."""
    h, w = geom.h, geom.w
    kk, ocg = h.kernel * w.kernel, geom.oc_per_group
    ihw, ohw = h.size_in * w.size_in, h.size_out * w.size_out
    wsym = ctx.const_array(f"{ctx.node.name}_wd", np.ascontiguousarray(wts.reshape(-1, kk)))

    def cols(k0: int, k1: int, c0: int, c1: int, j0: int, j1: int, npix: int) -> str:
        taps = [(kh, kw) for kh in range(k0, k1) for kw in range(j0, j1)]
        accs = [f"a{p}" for p in range(npix)]
        body = "".join(f"float {a} = bv;\n" for a in accs)
        for kh, kw in taps:
            off = _tap_offset(h, w, kh, kw)
            body += "".join(
                f"{a} += w{kh * w.kernel + kw} * xc[{lin((1, 'xo'), off + p * w.stride)}];\n"
                for p, a in enumerate(accs)
            )
        body += "".join(
            f"yc[{lin((w.size_out, 'oh'), (1, 'ow'), p)}] = {ctx.act(a)};\n"
            for p, a in enumerate(accs)
        )
        if _uses(body, "xo"):
            body = f"const int xo = {lin((1, 'xrow'), (w.stride, 'ow'))};\n" + body
        if npix > 1:
            return _strided_for("ow", c0, c1, npix, body)
        return c_for("ow", c0, c1, body)

    lo, hi, exact = avx2_clamp(ctx)

    def vec_cols(k0: int, k1: int, c0: int, c1: int, j0: int, j1: int) -> str:
        """AVX2 hosts: 8 neighbouring outputs per vector (the last 8 of the run overlap the
        previous ones when the run is not a multiple of 8), taps in the plain C's order."""
        span = c1 - c0
        body = (f"const int ow = {c0} + (((q * 8) < {span - 8}) ? (q * 8) : {span - 8});\n"
                f"const int xo = {lin((1, 'xrow'), (w.stride, 'ow'))};\n__m256 a = vb;\n")
        for kh in range(k0, k1):
            for kw in range(j0, j1):
                at = f"&xc[{lin((1, 'xo'), _tap_offset(h, w, kh, kw))}]"
                load = f"_mm256_loadu_ps({at})" if w.stride == 1 else f"edgec_avx2_even8({at})"
                body += f"a = _mm256_fmadd_ps(v{kh * w.kernel + kw}, {load}, a);\n"
        yo = lin((w.size_out, "oh"), (1, "ow"))
        body += f"_mm256_storeu_ps(&yc[{yo}], _mm256_min_ps(vhi, _mm256_max_ps(vlo, a)));\n"
        if not exact:
            body += c_for("p", 0, 8, f"yc[{yo} + p] = {ctx.act(f'yc[{yo} + p]')};\n")
        return c_for("q", 0, -(-span // 8), body)

    grid = ""
    grid_avx2 = ""
    used: set[int] = set()
    for o0, o1, k0, k1 in tap_runs(h):
        row = ""
        row_avx2 = ""
        for c0, c1, j0, j1 in tap_runs(w):
            used |= {kh * w.kernel + kw for kh in range(k0, k1) for kw in range(j0, j1)}
            split = c0 + (c1 - c0) // PIXELS * PIXELS
            plain = ""
            if split > c0:
                plain += cols(k0, k1, c0, split, j0, j1, PIXELS)
            if c1 > split:
                plain += cols(k0, k1, split, c1, j0, j1, 1)
            row += plain
            vector = c1 - c0 >= 8 and w.stride in (1, 2) and k1 > k0 and j1 > j0
            row_avx2 += vec_cols(k0, k1, c0, c1, j0, j1) if vector else plain
        xrow = lin((h.stride * w.size_in, "oh"), -h.pad_begin * w.size_in)
        if _uses(row, "xrow"):
            row = f"const int xrow = {xrow};\n" + row
        if _uses(row_avx2, "xrow"):
            row_avx2 = f"const int xrow = {xrow};\n" + row_avx2
        grid += c_for("oh", o0, o1, row)
        grid_avx2 += c_for("oh", o0, o1, row_avx2)
    if grid_avx2 != grid:  # some runs as vectors on AVX2 hosts
        if w.stride == 2:
            ctx.helper("edgec_avx2_even8", EVEN8_HELPER)
        vecs = "".join(f"const __m256 v{t} = _mm256_set1_ps(w{t});\n" for t in sorted(used))
        grid = (
            "#ifdef EDGEC_AVX2\n"
            f"const __m256 vb = _mm256_set1_ps(bv);\nconst __m256 vlo = _mm256_set1_ps({lo});\n"
            f"const __m256 vhi = _mm256_set1_ps({hi});\n"
            + vecs + grid_avx2 + "#else\n" + grid + "#endif\n"
        )
    taps = "".join(f"const float w{t} = wc[{t}];\n" for t in sorted(used))
    channel = (
        f"const int c = {lin((ocg, 'gr'), (1, 'j'))};\n"
        + (f"const float *wc = {wsym} + c * {kk};\n" if used else "")
        + f"float *yc = yn + c * {ohw};\n"
        + f"const float bv = {f'{bias}[c]' if bias else '0.0f'};\n"
        + taps
        + grid
    )
    group = f"const float *xc = xn + {lin((ihw, 'gr'))};\n" if _uses(grid, "xc") else ""
    group += c_for("j", 0, ocg, channel)
    n_body = (
        f"const float *xn = {ctx.inp(0)} + {lin((geom.c_in * ihw, 'n'))};\n"
        f"float *yn = {ctx.out(0)} + {lin((geom.c_out * ohw, 'n'))};\n"
        + c_for("gr", 0, geom.group, group)
    )
    return c_for("n", 0, geom.n, n_body)


def _if_chain(var: str, runs: list[tuple[int, int, int, int]], bodies: list[str]) -> str:
    """Branches on which run ``var`` falls in (the body itself for a single run)."""
    if len(bodies) == 1:
        return bodies[0]
    code = ""
    for i, ((_, o1, _, _), body) in enumerate(zip(runs, bodies, strict=True)):
        if i == 0:
            code += f"if ({var} < {o1}) {{\n"
        elif i < len(bodies) - 1:
            code += f"}} else if ({var} < {o1}) {{\n"
        else:
            code += "} else {\n"
        code += _indent(body)
    return code + "}\n"


#: AVX2 hosts (``EDGEC_AVX2``, :data:`edgec.ops.gemm.AVX2_MV4_HELPER`): a pointwise Conv as four
#: output channels x 16 pixels of accumulators per walk over the input channels (weights
#: broadcast from the ``[ic][4]`` block, the pixels of a channel loaded 8 at a time), started at
#: the bias and summed in the order of the input channels like the plain C, with fused
#: multiply-adds; the activation's clamp (Relu, Clip; none: +-inf) applied before the store.
PW4_HELPER = """#ifdef EDGEC_AVX2
/* y[r * ys + p] = clamp(init[r] + sum_i w[4 * i + r] * x[i * xs + p], lo, hi), r < 4, p < n
 * (init NULL: 0; clamp as (v < lo ? lo : v) > hi ? hi : ...). */
static void edgec_avx2_pw4(const float *x, int xs, const float *w, int k, const float *init,
                           float *y, int ys, int n, float lo, float hi)
{
    const __m256 vlo = _mm256_set1_ps(lo);
    const __m256 vhi = _mm256_set1_ps(hi);
    __m256 b[4];
    int p = 0;
    for (int r = 0; r < 4; ++r) {
        b[r] = _mm256_set1_ps((init != NULL) ? init[r] : 0.0f);
    }
    for (; (p + 16) <= n; p += 16) {
        __m256 a0 = b[0];
        __m256 a1 = b[1];
        __m256 a2 = b[2];
        __m256 a3 = b[3];
        __m256 c0 = b[0];
        __m256 c1 = b[1];
        __m256 c2 = b[2];
        __m256 c3 = b[3];
        for (int i = 0; i < k; ++i) {
            const float *xi = &x[(i * xs) + p];
            const float *wi = &w[4 * i];
            const __m256 x0 = _mm256_loadu_ps(xi);
            const __m256 x1 = _mm256_loadu_ps(&xi[8]);
            __m256 wv = _mm256_broadcast_ss(&wi[0]);
            a0 = _mm256_fmadd_ps(wv, x0, a0);
            c0 = _mm256_fmadd_ps(wv, x1, c0);
            wv = _mm256_broadcast_ss(&wi[1]);
            a1 = _mm256_fmadd_ps(wv, x0, a1);
            c1 = _mm256_fmadd_ps(wv, x1, c1);
            wv = _mm256_broadcast_ss(&wi[2]);
            a2 = _mm256_fmadd_ps(wv, x0, a2);
            c2 = _mm256_fmadd_ps(wv, x1, c2);
            wv = _mm256_broadcast_ss(&wi[3]);
            a3 = _mm256_fmadd_ps(wv, x0, a3);
            c3 = _mm256_fmadd_ps(wv, x1, c3);
        }
        _mm256_storeu_ps(&y[p], _mm256_min_ps(vhi, _mm256_max_ps(vlo, a0)));
        _mm256_storeu_ps(&y[p + 8], _mm256_min_ps(vhi, _mm256_max_ps(vlo, c0)));
        _mm256_storeu_ps(&y[ys + p], _mm256_min_ps(vhi, _mm256_max_ps(vlo, a1)));
        _mm256_storeu_ps(&y[ys + p + 8], _mm256_min_ps(vhi, _mm256_max_ps(vlo, c1)));
        _mm256_storeu_ps(&y[(2 * ys) + p], _mm256_min_ps(vhi, _mm256_max_ps(vlo, a2)));
        _mm256_storeu_ps(&y[(2 * ys) + p + 8], _mm256_min_ps(vhi, _mm256_max_ps(vlo, c2)));
        _mm256_storeu_ps(&y[(3 * ys) + p], _mm256_min_ps(vhi, _mm256_max_ps(vlo, a3)));
        _mm256_storeu_ps(&y[(3 * ys) + p + 8], _mm256_min_ps(vhi, _mm256_max_ps(vlo, c3)));
    }
    for (; p < n; p += 8) {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - p),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 a[4];
        for (int r = 0; r < 4; ++r) {
            a[r] = b[r];
        }
        for (int i = 0; i < k; ++i) {
            const __m256 x0 = _mm256_maskload_ps(&x[(i * xs) + p], mask);
            for (int r = 0; r < 4; ++r) {
                a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&w[(4 * i) + r]), x0, a[r]);
            }
        }
        for (int r = 0; r < 4; ++r) {
            _mm256_maskstore_ps(&y[(r * ys) + p], mask,
                                _mm256_min_ps(vhi, _mm256_max_ps(vlo, a[r])));
        }
    }
}
#endif"""


def avx2_clamp(ctx: EmitContext) -> tuple[str, str, bool]:
    """(lo, hi, exact) C literals of the node's fused activation as a clamp for the AVX2
    kernels: Relu and Clip are one (exact); no activation is (-inf, inf); any other is applied
    after the kernel (exact False)."""
    a = ctx.node.attrs.get("_act")
    if a is None:
        return "(-INFINITY)", "INFINITY", True
    if a[0] == "Relu":
        return "0.0f", "INFINITY", True
    if a[0] == "Clip":
        return c_float(a[1]["min"]), c_float(a[1]["max"]), True
    return "(-INFINITY)", "INFINITY", False


def im2col_conv(ctx: EmitContext, geom: ConvGeom, wts: np.ndarray, bias: str | None) -> str:
    """Conv as one matrix-vector product per output position: the position's input window
    (``[ic][kh][kw]``, zeros in the padding) is gathered into scratch, then every block of four
    output channels takes its dot products with :func:`edgec.ops.gemm.DOT4_HELPER`'s
    ``edgec_dot4`` (weights interleaved by four at compile time)."""
    h, w = geom.h, geom.w
    grp, icg, ocg = geom.group, geom.ic_per_group, geom.oc_per_group
    kk = h.kernel * w.kernel
    k = icg * kk
    ihw, ohw = h.size_in * w.size_in, h.size_out * w.size_out
    nb, rest = ocg // BLOCK, ocg % BLOCK
    name, pt = ctx.node.name, ctx.scratch()
    w3 = wts.reshape(grp, ocg, k)
    w4 = w3[:, : nb * BLOCK].reshape(grp, nb, BLOCK, k).transpose(0, 1, 3, 2)
    w4sym = ctx.const_array(f"{name}_w4", np.ascontiguousarray(w4))
    dot4 = ctx.helper("edgec_dot4", DOT4_HELPER)

    # the dot products of one output position (window in scratch, index yo)
    init = ", ".join(
        f"{bias}[{lin((ocg, 'gr'), (BLOCK, 'ob'), j)}]" if bias else "0.0f" for j in range(BLOCK)
    )
    blk = f"float acc[{BLOCK}] = {{{init}}};\n"
    blk += f"{dot4}({pt}, wg + {lin((k * BLOCK, 'ob'))}, {k}, acc);\n"
    blk += f"float *yp = yg + {lin((BLOCK * ohw, 'ob'))} + yo;\n"
    blk += "".join(f"yp[{j * ohw}] = {ctx.act(f'acc[{j}]')};\n" for j in range(BLOCK))
    # AVX2 hosts (EDGEC_AVX2, edgec/ops/gemm.py): every block of the group in one call, four
    # blocks per weight walk, then the activation on the way out
    yb0 = f"{bias} + {lin((ocg, 'gr'))}" if bias else "NULL"
    avx2 = (
        f"float acc4[{nb * BLOCK}];\n"
        f"edgec_avx2_mv4({pt}, wg, {k}, {yb0}, acc4, {nb});\n"
        + c_for("j", 0, nb * BLOCK, f"yg[{lin((ohw, 'j'))} + yo] = {ctx.act('acc4[j]')};\n")
    )
    compute = (
        f"const int yo = {lin((w.size_out, 'oh'), (1, 'ow'))};\n"
        + f"#ifdef EDGEC_AVX2\n{{\n(void){dot4}; /* the plain path's helper */\n"
        + _indent(avx2) + "}\n#else\n"
        + c_for("ob", 0, nb, blk) + "#endif\n"
    )
    if rest:
        w1sym = ctx.const_array(f"{name}_w1", np.ascontiguousarray(w3[:, nb * BLOCK :]))
        first = nb * BLOCK
        b1 = f"{bias}[{lin((ocg, 'gr'), (1, 'oc1'), first)}]" if bias else "0.0f"
        one = (
            f"const float *wr = {w1sym} + {lin((rest * k, 'gr'), (k, 'oc1'))};\n"
            f"float acc = {b1};\n"
            f"for (int t = 0; t < {k}; ++t) acc += wr[t] * {pt}[t];\n"
            f"yg[{lin((ohw, 'oc1'), first * ohw)} + yo] = {ctx.act('acc')};\n"
        )
        compute += c_for("oc1", 0, rest, one)

    def gather(k0: int, k1: int, j0: int, j1: int) -> str:
        lines = ""
        for kh in range(h.kernel):
            for kw in range(w.kernel):
                t = kh * w.kernel + kw
                if k0 <= kh < k1 and j0 <= kw < j1:
                    lines += f"pc[{t}] = xc[{lin((1, 'xo'), _tap_offset(h, w, kh, kw))}];\n"
                else:
                    lines += f"pc[{t}] = 0.0f;\n"
        head = f"const float *xc = xg + {lin((ihw, 'ic'))};\n" if _uses(lines, "xc") else ""
        return c_for("ic", 0, icg, head + f"float *pc = {pt} + {lin((kk, 'ic'))};\n" + lines)

    rows, cols = tap_runs(h), tap_runs(w)
    if len(rows) * len(cols) * kk <= UNROLL_BUDGET:
        per_row = [
            _if_chain("ow", cols, [gather(k0, k1, j0, j1) for _, _, j0, j1 in cols])
            for _, _, k0, k1 in rows
        ]
        fill = _if_chain("oh", rows, per_row)
    else:
        fill = _table_gather(ctx, geom, pt)
    pixel = fill + compute
    if _uses(fill, "xo"):
        pixel = f"const int xo = {lin((1, 'xrow'), (w.stride, 'ow'))};\n" + pixel
    row = c_for("ow", 0, w.size_out, pixel)
    if _uses(row, "xrow"):
        xrow = lin((h.stride * w.size_in, "oh"), -h.pad_begin * w.size_in)
        row = f"const int xrow = {xrow};\n" + row
    grid = c_for("oh", 0, h.size_out, row)
    head = (
        f"const float *xg = xn + {lin((icg * ihw, 'gr'))};\n"
        f"float *yg = yn + {lin((ocg * ohw, 'gr'))};\n"
        f"const float *wg = {w4sym} + {lin((nb * k * BLOCK, 'gr'))};\n"
    )
    n_head = (
        f"const float *xn = {ctx.inp(0)} + {lin((geom.c_in * ihw, 'n'))};\n"
        f"float *yn = {ctx.out(0)} + {lin((geom.c_out * ohw, 'n'))};\n"
    )
    plain = c_for("n", 0, geom.n, n_head + c_for("gr", 0, grp, head + grid))
    if not (h.trivial and w.kernel == 1 and w.stride == 1 and w.size_in == w.size_out == ohw
            and nb and not rest):
        ctx.helper("edgec_avx2_mv4", AVX2_MV4_HELPER)
        return plain
    # pointwise on AVX2 hosts: four channels x 16 pixels per walk (PW4_HELPER), no gather
    lo, hi, exact = avx2_clamp(ctx)
    pw4 = ctx.helper("edgec_avx2_pw4", PW4_HELPER)
    init = f"{bias} + {lin((ocg, 'gr'), (BLOCK, 'ob'))}" if bias else "NULL"
    blocks = c_for("ob", 0, nb, (
        f"{pw4}(xg, {ihw}, wg + {lin((k * BLOCK, 'ob'))}, {k}, {init}, "
        f"yg + {lin((BLOCK * ohw, 'ob'))}, {ohw}, {ohw}, {lo}, {hi});\n"
    ))
    if not exact:
        blocks += c_for("t", 0, ocg * ohw, f"yg[t] = {ctx.act('yg[t]')};\n")
    avx2 = f"(void){pt};\n(void){dot4}; /* the plain path's helper */\n" + c_for(
        "n", 0, geom.n, n_head + c_for("gr", 0, grp, head + blocks))
    return "#ifdef EDGEC_AVX2\n" + avx2 + "#else\n" + plain + "#endif\n"


def _table_gather(ctx: EmitContext, geom: ConvGeom, pt: str) -> str:
    """Window gather with tap ranges read from tables (kernels too large to unroll per run)."""
    h, w = geom.h, geom.w
    kk, ihw, name = h.kernel * w.kernel, h.size_in * w.size_in, ctx.node.name
    kh0, kh1 = zip(*h.tap_ranges(), strict=True)
    kw0, kw1 = zip(*w.tap_ranges(), strict=True)
    tabs = [
        int_table(ctx, f"{name}_{v}", list(vals))
        for v, vals in (("kh0", kh0), ("kh1", kh1), ("kw0", kw0), ("kw1", kw1))
    ]
    copy = (
        f"pc[{lin((w.kernel, 'kh'), (1, 'kw'))}] = "
        f"xc[{lin((1, 'xo'), (h.dilation * w.size_in, 'kh'), (w.dilation, 'kw'), -w.pad_begin)}];\n"
    )
    body = (
        f"const float *xc = xg + {lin((ihw, 'ic'))};\n"
        f"float *pc = {pt} + {lin((kk, 'ic'))};\n"
        f"for (int t = 0; t < {kk}; ++t) pc[t] = 0.0f;\n"
        + c_for("kh", "kh0", "kh1", c_for("kw", "kw0", "kw1", copy))
    )
    return (
        f"const int kh0 = {tabs[0]}[oh];\nconst int kh1 = {tabs[1]}[oh];\n"
        f"const int kw0 = {tabs[2]}[ow];\nconst int kw1 = {tabs[3]}[ow];\n"
        + c_for("ic", 0, geom.ic_per_group, body)
    )
