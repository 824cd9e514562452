"""ConvTranspose (1-D and 2-D): strides, pads, dilations, group, output_padding, output_shape and
auto_pad.

The kernel gathers rather than scatters, so every output is accumulated once in registers (bias
and the fused activation applied before the store). Output position ``o`` of an axis receives
tap ``k`` from input ``i`` when ``o + pad_begin = i * stride + k * dilation``; those (input
offset, tap) pairs are listed at compile time per output position (CSR tables, ``static const``),
so the C never tests divisibility or bounds. The weights use Conv's layout (four output channels
interleaved, see :func:`edgec.ops.conv.channel_loops`).

Output size and padding follow the ONNX spec, which onnxruntime 1.32 matches: with
``output_shape`` the total padding ``stride * (in - 1) + output_padding + (k - 1) * dilation + 1
- out`` is split with the odd pixel at the end for SAME_UPPER and at the start otherwise; SAME
without ``output_shape`` gives ``in * stride``; explicit pads are ignored when ``output_shape`` is
given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, int_list, register, require_finite, unsupported
from edgec.ops.conv import (
    Axis,
    ConvGeom,
    auto_pad,
    c_for,
    channel_loops,
    int_table,
    lin,
    spatial_list,
)


@dataclass(frozen=True)
class TransposedAxis:
    """One spatial axis of a transposed convolution."""

    size_in: int
    size_out: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int

    def taps(self, o: int) -> list[tuple[int, int]]:
        """(input index, tap) pairs feeding output ``o``."""
        out = []
        for k in range(self.kernel):
            t = o + self.pad_begin - k * self.dilation
            if t % self.stride == 0 and 0 <= t // self.stride < self.size_in:
                out.append((t // self.stride, k))
        return out

    @property
    def trivial(self) -> bool:
        return self.size_in == 1 and self.size_out == 1 and self.kernel == 1

    def csr(self) -> tuple[list[int], list[int], list[int]]:
        """(offsets [out + 1], input indices, taps) of every output position."""
        offsets, inputs, taps = [0], [], []
        for o in range(self.size_out):
            for i, k in self.taps(o):
                inputs.append(i)
                taps.append(k)
            offsets.append(len(inputs))
        return offsets, inputs, taps

    def as_axis(self) -> Axis:
        return Axis(self.size_in, self.size_out, self.kernel, self.stride, self.dilation)


def _axes(node: Node, g: Graph) -> tuple[list[TransposedAxis], int, int, int]:
    """Spatial axes, input channels, output channels and group of a ConvTranspose."""
    x_shape, w_shape = g.shape(node.inputs[0]), g.shape(node.inputs[1])
    rank = len(x_shape)
    if rank not in (3, 4) or len(w_shape) != rank:
        raise unsupported(
            node,
            f"ConvTranspose supports 1-D and 2-D inputs (rank 3 or 4); got {x_shape}, {w_shape}",
        )
    n = rank - 2
    group = int(node.attr("group", 1))
    c_in = int(x_shape[1])
    if group < 1 or w_shape[0] != c_in or c_in % group:
        raise unsupported(node, f"group={group} does not match input {x_shape} and W {w_shape}")
    c_out = int(w_shape[1]) * group
    kernel = [int(k) for k in w_shape[2:]]
    ks = node.attr("kernel_shape")
    if ks is not None and int_list(ks) != kernel:
        raise unsupported(node, f"kernel_shape {int_list(ks)} differs from the weights' {kernel}")
    strides_ = spatial_list(node, "strides", n, 1)
    dils = spatial_list(node, "dilations", n, 1)
    out_pad = spatial_list(node, "output_padding", n, 0)
    pads = spatial_list(node, "pads", 2 * n, 0)
    if any(s < 1 for s in strides_) or any(d < 1 for d in dils) or min(pads + out_pad) < 0:
        raise unsupported(node, "strides/dilations must be >= 1, pads/output_padding >= 0")
    mode = auto_pad(node)
    out_shape = node.attr("output_shape")
    given = int_list(out_shape) if out_shape is not None else None
    if given is not None and len(given) == rank:
        given = given[2:]
    if given is not None and len(given) != n:
        raise unsupported(node, f"output_shape {int_list(out_shape)} must list {n} sizes")
    axes: list[TransposedAxis] = []
    for i in range(n):
        size, k, s, d = int(x_shape[2 + i]), kernel[i], strides_[i], dils[i]
        full = s * (size - 1) + out_pad[i] + (k - 1) * d + 1
        if given is not None or mode in ("SAME_UPPER", "SAME_LOWER"):
            out = given[i] if given is not None else size * s
            total = full - out
            if total < 0:
                raise unsupported(
                    node, f"output size {out} exceeds the full transposed extent {full}"
                )
            pb = total // 2 if mode == "SAME_UPPER" else total - total // 2
        elif mode == "VALID":
            out, pb = full, 0
        else:
            pb = pads[i]
            out = full - pb - pads[n + i]
        if out < 1:
            raise unsupported(node, f"output size {out} along spatial axis {i} is empty")
        axes.append(TransposedAxis(size, out, k, s, d, pb))
    return axes, c_in, c_out, group


def _geom(node: Node, g: Graph) -> tuple[ConvGeom, TransposedAxis, TransposedAxis]:
    require_finite(node, g, (1, 2))
    axes, c_in, c_out, group = _axes(node, g)
    th, tw = (TransposedAxis(1, 1, 1, 1, 1, 0), axes[0]) if len(axes) == 1 else axes
    n = int(g.shape(node.inputs[0])[0])
    out_shape = (n, c_out, *(a.size_out for a in axes))
    return ConvGeom(n, c_in, c_out, group, th.as_axis(), tw.as_axis(), out_shape), th, tw


def _conv_layout(wts: np.ndarray, group: int) -> np.ndarray:
    """ConvTranspose weights ``[ic][ocg][kh][kw]`` as Conv's ``[oc][icg][kh][kw]``."""
    c_in, ocg = wts.shape[:2]
    w5 = wts.reshape(group, c_in // group, ocg, -1)
    return np.ascontiguousarray(w5.transpose(0, 2, 1, 3).reshape(group * ocg, c_in // group, -1))


@register
class ConvTranspose(Op):
    types = ("ConvTranspose",)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        return [(_geom(node, g)[0].out_shape, "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, wts = inputs[0], inputs[1]
        assert x is not None and wts is not None
        geom, th, tw = _geom(node, g)
        n, grp, icg, ocg = geom.n, geom.group, geom.ic_per_group, geom.oc_per_group
        x5 = x.astype(np.float64).reshape(n, grp, icg, th.size_in, tw.size_in)
        w6 = wts.astype(np.float64).reshape(grp, icg, ocg, th.kernel, tw.kernel)
        span_h = (th.size_in - 1) * th.stride + 1
        span_w = (tw.size_in - 1) * tw.stride + 1
        full = np.zeros(
            (
                n,
                grp,
                ocg,
                span_h + (th.kernel - 1) * th.dilation,
                span_w + (tw.kernel - 1) * tw.dilation,
            )
        )
        for kh in range(th.kernel):
            for kw in range(tw.kernel):
                h0, w0 = kh * th.dilation, kw * tw.dilation
                full[:, :, :, h0 : h0 + span_h : th.stride, w0 : w0 + span_w : tw.stride] += (
                    np.einsum("ngchw,gco->ngohw", x5, w6[..., kh, kw])
                )
        hi = np.arange(th.size_out) + th.pad_begin
        wi = np.arange(tw.size_out) + tw.pad_begin
        hv = (hi >= 0) & (hi < full.shape[3])
        wv = (wi >= 0) & (wi < full.shape[4])
        y = full[:, :, :, np.clip(hi, 0, full.shape[3] - 1)][..., np.clip(wi, 0, full.shape[4] - 1)]
        y = y * (hv[:, None] & wv[None, :])
        y = y.reshape(n, geom.c_out, th.size_out, tw.size_out)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2].astype(np.float64).reshape(1, -1, 1, 1)
        return [y.astype(np.float32).reshape(geom.out_shape)]

    def macs(self, node: Node, g: Graph) -> int:
        geom, th, tw = _geom(node, g)
        taps_h, taps_w = len(th.csr()[1]), len(tw.csr()[1])
        return geom.n * geom.c_out * geom.ic_per_group * taps_h * taps_w

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        geom, th, tw = _geom(node, g)
        wconst = g.const(node.inputs[1])
        if wconst is None:
            raise unsupported(node, "ConvTranspose needs constant weights")
        bias = ctx.inp(2) if len(node.inputs) > 2 and node.inputs[2] else None
        wconv = _conv_layout(wconst.astype(np.float32), geom.group)
        return channel_loops(
            ctx, geom, wconv, bias, lambda block: self._grid(ctx, geom, th, tw, bias, block)
        )

    @staticmethod
    def _grid(
        ctx: EmitContext,
        geom: ConvGeom,
        th: TransposedAxis,
        tw: TransposedAxis,
        bias: str | None,
        block: int,
    ) -> str:
        name = ctx.node.name
        iw, ow = tw.size_in, tw.size_out
        ihw, ohw = th.size_in * iw, th.size_out * ow
        kk = th.kernel * tw.kernel
        woff, win, wtap = tw.csr()
        wo = int_table(ctx, f"{name}_wofs", woff)
        wx = int_table(ctx, f"{name}_wx", win)
        wk = int_table(ctx, f"{name}_wk", wtap)
        accs = [f"acc{j}" for j in range(block)] if block > 1 else ["acc"]
        init = [f"{bias}[{lin((1, 'oc'), j)}]" if bias else "0.0f" for j in range(block)]
        trivial = th.trivial
        xr, wr = ("", "wc") if trivial else ("xr", "wr")
        tap = f"const float xv = xc[{lin((1, xr), (1, f'{wx}[tw]'))}];\n"
        if block > 1:
            tap += f"const float *wt = {wr} + {lin((block, f'{wk}[tw]'))};\n"
            tap += "".join(f"{a} += wt[{j}] * xv;\n" for j, a in enumerate(accs))
        else:
            tap += f"acc += {wr}[{wk}[tw]] * xv;\n"
        cols = c_for("tw", "tw0", "tw1", tap)
        if trivial:
            ic_inner, row_head, oh = cols, "", "0"
        else:
            hoff, hin, htap = th.csr()
            ho = int_table(ctx, f"{name}_hofs", hoff)
            hx = int_table(ctx, f"{name}_hx", [i * iw for i in hin])
            hk = int_table(ctx, f"{name}_hk", htap)
            ic_inner = c_for(
                "th",
                "th0",
                "th1",
                f"const int xr = {hx}[th];\n"
                f"const float *wr = wc + {lin((tw.kernel * block, f'{hk}[th]'))};\n" + cols,
            )
            row_head, oh = f"const int th0 = {ho}[oh];\nconst int th1 = {ho}[oh + 1];\n", "oh"
        body = (
            f"const int tw0 = {wo}[ow];\nconst int tw1 = {wo}[ow + 1];\n"
            + "".join(f"float {a} = {v};\n" for a, v in zip(accs, init, strict=True))
            + c_for(
                "ic",
                0,
                geom.ic_per_group,
                f"const float *xc = xg + {lin((ihw, 'ic'))};\n"
                f"const float *wc = wb + {lin((kk * block, 'ic'))};\n" + ic_inner,
            )
            + "".join(
                f"yb[{lin((ow, oh), (1, 'ow'), ohw * j)}] = {ctx.act(a)};\n"
                for j, a in enumerate(accs)
            )
        )
        row = row_head + c_for("ow", 0, ow, body)
        return row if oh == "0" else c_for("oh", 0, th.size_out, row)
