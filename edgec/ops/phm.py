"""Parameterized hypercomplex (PHM) layers kept factored: ``PhmLinear`` and ``PhmConv``.

A PHM layer's weight is a sum of Kronecker products, ``W = sum_m A[m] (x) F[m]`` with
``A`` of shape ``[n, n, n]`` and ``F`` of shape ``[n, out/n, in/n]`` (linear) or
``[n, out/n, in/n, kh, kw]`` (convolution, the product taken over channels per kernel tap):
``W[r*o + p, s*i + q] = sum_m A[m, r, s] * F[m, p, q]`` with ``o = out/n``, ``i = in/n``.

These ops keep only ``A`` and ``F`` in flash (``n^3 + out*in*k/n`` values instead of
``out*in*k``) and never materialise ``W``. Per block ``r`` of ``o`` outputs the kernel first
mixes the ``n`` input blocks, ``xt[m][q] = sum_s A[m, r, s] * x[s*i + q]`` (``n^2 * in``
multiply-adds per input position over all ``r``), then applies ``G = [F[0] | ... | F[n-1]]``
(``o x n*i``, shared by every ``r``) to the stacked ``xt``: ``y[r*o + p] = sum_c G[p, c] xt[c]``
(``out * in`` multiply-adds, the dense layer's count). The linear kernel runs the second stage
through :func:`edgec.ops.gemm.dense_layer`; the convolution mixes a whole zero-padded image per
``r`` in scratch, then convolves it with ``G`` tap by tap.

Inputs: ``x``, ``A``, ``F`` (both constant) and an optional ``bias`` ``[out]``. ``PhmConv``
attributes: ``strides`` ``[sh, sw]`` and ``pads`` ``[top, left, bottom, right]`` (2-D only, no
dilation or groups, as in the PHNN reference layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, int_list, prod, register, unsupported
from edgec.ops.gemm import dense_layer


def materialise(a: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The dense weight ``sum_m kron(A[m], F[m])`` (over channels, per tap for convolutions),
    computed in float64 and rounded once to float32."""
    a64, f64 = np.asarray(a, np.float64), np.asarray(f, np.float64)
    n, o, i = (int(d) for d in f64.shape[:3])
    taps = f64.shape[3:]
    w = np.einsum("mrs,mpq...->rpsq...", a64, f64)
    return w.reshape(n * o, n * i, *taps).astype(np.float32)


@dataclass(frozen=True)
class Factors:
    n: int
    out_block: int  # o = out / n
    in_block: int  # i = in / n

    @property
    def n_out(self) -> int:
        return self.n * self.out_block

    @property
    def n_in(self) -> int:
        return self.n * self.in_block


def _factors(node: Node, g: Graph, f_rank: int) -> Factors:
    a_shape, f_shape = g.shape(node.inputs[1]), g.shape(node.inputs[2])
    if len(a_shape) != 3 or len(set(a_shape)) != 1:
        raise unsupported(node, f"A must have shape [n, n, n], got {list(a_shape)}")
    n = int(a_shape[0])
    if len(f_shape) != f_rank or int(f_shape[0]) != n:
        raise unsupported(node, f"F must have rank {f_rank} and {n} factors, got {list(f_shape)}")
    if g.const(node.inputs[1]) is None or g.const(node.inputs[2]) is None:
        raise unsupported(node, "the factors A and F must be constants")
    fac = Factors(n, int(f_shape[1]), int(f_shape[2]))
    if len(node.inputs) > 3 and node.inputs[3]:
        if g.const(node.inputs[3]) is None or g.shape(node.inputs[3]) != (fac.n_out,):
            raise unsupported(node, f"bias must be a constant of shape [{fac.n_out}]")
    return fac


def _bias(node: Node, inputs: list[np.ndarray | None]) -> np.ndarray | None:
    return inputs[3] if len(inputs) > 3 and node.inputs[3] else None


def _a_by_block(a: np.ndarray) -> np.ndarray:
    """``A`` re-laid out as ``[r][m][s]`` so block ``r``'s mixing walks it contiguously."""
    return np.ascontiguousarray(np.asarray(a, np.float32).transpose(1, 0, 2))


def _g_matrix(f: np.ndarray) -> np.ndarray:
    """``G[p, m*i + q (, taps)] = F[m, p, q (, taps)]``: the factors side by side."""
    f32 = np.asarray(f, np.float32)
    g = np.moveaxis(f32, 0, 1)  # [p, m, q, ...]
    return np.ascontiguousarray(g.reshape(f32.shape[1], -1))


@register
class PhmLinear(Op):
    types = ("PhmLinear",)
    fusable = True

    def _shape(self, node: Node, g: Graph) -> tuple[Factors, int]:
        fac = _factors(node, g, 3)
        x_shape = g.shape(node.inputs[0])
        if not x_shape or int(x_shape[-1]) != fac.n_in:
            raise unsupported(
                node, f"input {list(x_shape)} must end in {fac.n_in} features (n * F.shape[2])"
            )
        return fac, prod(x_shape[:-1])

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        fac, _ = self._shape(node, g)
        return [(tuple(g.shape(node.inputs[0])[:-1]) + (fac.n_out,), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, a, f = inputs[0], inputs[1], inputs[2]
        assert x is not None and a is not None and f is not None
        w = materialise(a, f).astype(np.float64)
        y = x.astype(np.float64) @ w.T
        b = _bias(node, inputs)
        if b is not None:
            y = y + b.astype(np.float64)
        return [y.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        fac, rows = self._shape(node, g)
        return rows * (fac.n * fac.n * fac.n_in + fac.n_out * fac.n_in)

    def scratch(self, node: Node, g: Graph) -> int:
        return self._shape(node, g)[0].n_in

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        fac, _ = self._shape(node, g)
        return {
            "phm_factored_layers": 1,
            "phm_dense_equivalent_params": fac.n_out * fac.n_in,
            "phm_factor_params": fac.n**3 + fac.n_out * fac.n_in // fac.n,
        }

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        fac, rows = self._shape(node, g)
        n, o, i = fac.n, fac.out_block, fac.in_block
        a_sym = ctx.const_array(f"{node.name}_A", _a_by_block(g.const(node.inputs[1])))
        gmat = _g_matrix(g.const(node.inputs[2]))
        has_bias = len(node.inputs) > 3 and bool(node.inputs[3])
        bias = ctx.inp(3) if has_bias else None
        x, y, xt = ctx.inp(0), ctx.out(0), ctx.scratch()
        inner = dense_layer(ctx, "phm_xt", gmat, "phm_b" if bias else None, "phm_y", 1, base="G")
        mix = (
            f"for (int pm = 0; pm < {n}; ++pm) {{\n"
            f"    const float *pa = {a_sym} + (pr * {n} + pm) * {n};\n"
            f"    for (int pq = 0; pq < {i}; ++pq) {{\n"
            f"        float pacc = 0.0f;\n"
            f"        for (int ps = 0; ps < {n}; ++ps) pacc += pa[ps] * phm_x[ps * {i} + pq];\n"
            f"        phm_xt[pm * {i} + pq] = pacc;\n"
            f"    }}\n"
            f"}}\n"
        )
        block = (
            f"float *phm_xt = {xt};\n"
            + (f"const float *phm_b = {bias} + pr * {o};\n" if bias else "")
            + f"float *phm_y = {y} + prow * {fac.n_out} + pr * {o};\n"
            + mix
            + inner
        )
        body = (
            f"const float *phm_x = {x} + prow * {fac.n_in};\n"
            f"for (int pr = 0; pr < {n}; ++pr) {{\n{_indent(block)}}}\n"
        )
        return (
            f"/* PHM linear, factored: n={n}, {fac.n_in} -> {fac.n_out}, W never materialised */\n"
            f"for (int prow = 0; prow < {rows}; ++prow) {{\n{_indent(body)}}}\n"
        )


@dataclass(frozen=True)
class ConvShape:
    fac: Factors
    batch: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    pads: tuple[int, int, int, int]  # top, left, bottom, right

    @property
    def hp(self) -> int:
        return self.h + self.pads[0] + self.pads[2]

    @property
    def wp(self) -> int:
        return self.w + self.pads[1] + self.pads[3]

    @property
    def oh(self) -> int:
        return (self.hp - self.kh) // self.sh + 1

    @property
    def ow(self) -> int:
        return (self.wp - self.kw) // self.sw + 1


@register
class PhmConv(Op):
    types = ("PhmConv",)
    fusable = True

    def _shape(self, node: Node, g: Graph) -> ConvShape:
        fac = _factors(node, g, 5)
        x_shape = g.shape(node.inputs[0])
        if len(x_shape) != 4 or int(x_shape[1]) != fac.n_in:
            raise unsupported(
                node, f"input {list(x_shape)} must be [N, {fac.n_in}, H, W] (2-D convolution)"
            )
        f_shape = g.shape(node.inputs[2])
        strides = int_list(node.attr("strides", [1, 1]))
        pads = int_list(node.attr("pads", [0, 0, 0, 0]))
        if len(strides) != 2 or min(strides) < 1 or len(pads) != 4 or min(pads) < 0:
            raise unsupported(
                node, f"strides {strides} / pads {pads}: need 2 positive strides and 4 pads >= 0"
            )
        cs = ConvShape(
            fac, int(x_shape[0]), int(x_shape[2]), int(x_shape[3]), int(f_shape[3]),
            int(f_shape[4]), strides[0], strides[1], (pads[0], pads[1], pads[2], pads[3]),
        )
        if cs.hp < cs.kh or cs.wp < cs.kw:
            raise unsupported(node, f"kernel {cs.kh}x{cs.kw} larger than the padded input")
        return cs

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        cs = self._shape(node, g)
        return [((cs.batch, cs.fac.n_out, cs.oh, cs.ow), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, a, f = inputs[0], inputs[1], inputs[2]
        assert x is not None and a is not None and f is not None
        cs = self._shape(node, g)
        w = materialise(a, f).astype(np.float64)
        pt, pl, pb, pr = cs.pads
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        y = np.zeros((cs.batch, cs.fac.n_out, cs.oh, cs.ow))
        for kh in range(cs.kh):
            for kw in range(cs.kw):
                patch = xp[:, :, kh : kh + cs.sh * (cs.oh - 1) + 1 : cs.sh,
                           kw : kw + cs.sw * (cs.ow - 1) + 1 : cs.sw]
                y += np.einsum("nchw,oc->nohw", patch, w[:, :, kh, kw])
        b = _bias(node, inputs)
        if b is not None:
            y = y + b.astype(np.float64).reshape(1, -1, 1, 1)
        return [y.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        cs = self._shape(node, g)
        fac = cs.fac
        mix = fac.n * fac.n * fac.n_in * cs.h * cs.w
        conv = fac.n_out * fac.n_in * cs.kh * cs.kw * cs.oh * cs.ow
        return cs.batch * (mix + conv)

    def scratch(self, node: Node, g: Graph) -> int:
        cs = self._shape(node, g)
        return cs.fac.n_in * cs.hp * cs.wp

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        cs = self._shape(node, g)
        fac, taps = cs.fac, cs.kh * cs.kw
        return {
            "phm_factored_layers": 1,
            "phm_dense_equivalent_params": fac.n_out * fac.n_in * taps,
            "phm_factor_params": fac.n**3 + fac.n_out * fac.n_in * taps // fac.n,
        }

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        cs = self._shape(node, g)
        fac = cs.fac
        n, o, i = fac.n, fac.out_block, fac.in_block
        hp, wp, hw = cs.hp, cs.wp, cs.h * cs.w
        pt, pl = cs.pads[0], cs.pads[1]
        a_sym = ctx.const_array(f"{node.name}_A", _a_by_block(g.const(node.inputs[1])))
        has_bias = len(node.inputs) > 3 and bool(node.inputs[3])
        bias = ctx.inp(3) if has_bias else None
        x, y, xt = ctx.inp(0), ctx.out(0), ctx.scratch()
        padded = any(cs.pads)
        taps = n * i * cs.kh * cs.kw
        lines = [
            f"/* PHM convolution, factored: n={n}, {fac.n_in} -> {fac.n_out} channels, "
            f"{cs.kh}x{cs.kw} taps; W never materialised */"
        ]
        if padded:  # the mixed image's zero border, written once per call
            lines.append(f"for (int pi = 0; pi < {fac.n_in * hp * wp}; ++pi) {xt}[pi] = 0.0f;")
        mix = (
            f"for (int pm = 0; pm < {n}; ++pm) {{\n"
            f"    const float *pa = {a_sym} + (pr * {n} + pm) * {n};\n"
            f"    for (int pq = 0; pq < {i}; ++pq) {{\n"
            f"        const float *px = pxb + pq * {hw};\n"
            f"        float *pdst = {xt} + (pm * {i} + pq) * {hp * wp} + {pt * wp + pl};\n"
            f"        for (int ph = 0; ph < {cs.h}; ++ph) {{\n"
            f"            for (int pcol = 0; pcol < {cs.w}; ++pcol) {{\n"
            f"                float pacc = 0.0f;\n"
            f"                for (int ps = 0; ps < {n}; ++ps)\n"
            f"                    pacc += pa[ps] * px[ps * {i * hw} + ph * {cs.w} + pcol];\n"
            f"                pdst[ph * {wp} + pcol] = pacc;\n"
            f"            }}\n"
            f"        }}\n"
            f"    }}\n"
            f"}}\n"
        )
        gmat = _g_matrix(g.const(node.inputs[2]))
        nb = o - o % 4
        conv = ""
        if nb:  # four output channels share every input load; weights [block][tap][4]
            g4 = gmat[:nb].reshape(nb // 4, 4, taps).transpose(0, 2, 1)
            g4_sym = ctx.const_array(f"{node.name}_G4", np.ascontiguousarray(g4))
            conv += self._conv_loop(ctx, cs, 4, 0, nb, g4_sym, bias)
        if o % 4:
            g1_sym = ctx.const_array(f"{node.name}_G", np.ascontiguousarray(gmat[nb:]))
            conv += self._conv_loop(ctx, cs, 1, nb, o, g1_sym, bias)
        per_r = f"for (int pr = 0; pr < {n}; ++pr) {{\n{_indent(mix + conv)}}}\n"
        batch = (
            f"const float *pxb = {x} + pb * {fac.n_in * hw};\n"
            f"float *pyb = {y} + pb * {fac.n_out * cs.oh * cs.ow};\n" + per_r
        )
        lines.append(f"for (int pb = 0; pb < {cs.batch}; ++pb) {{\n{_indent(batch)}}}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _conv_loop(
        ctx: EmitContext, cs: ConvShape, block: int, first: int, last: int, wsym: str,
        bias: str | None,
    ) -> str:
        """Output channels ``first..last-1`` of block ``pr`` in groups of ``block``, convolving
        the mixed image in scratch with ``G`` (``wsym``: ``[group][tap][block]``)."""
        fac = cs.fac
        o, hp, wp = fac.out_block, cs.hp, cs.wp
        taps = fac.n_in * cs.kh * cs.kw
        accs = [f"pacc{j}" for j in range(block)]
        init = "".join(
            f"float {a} = {f'{bias}[pr * {o} + pp + {j}]' if bias else '0.0f'};\n"
            for j, a in enumerate(accs)
        )
        fma = "".join(f"{a} += pw[{j}] * xv;\n" for j, a in enumerate(accs))
        store = "".join(
            f"py[{j * cs.oh * cs.ow} + oh * {cs.ow} + ow] = {ctx.act(a)};\n"
            for j, a in enumerate(accs)
        )
        tap = (
            f"for (int pc = 0; pc < {fac.n_in}; ++pc) {{\n"
            f"    const float *pxc = pxs + pc * {hp * wp};\n"
            f"    for (int kh = 0; kh < {cs.kh}; ++kh) {{\n"
            f"        for (int kw = 0; kw < {cs.kw}; ++kw) {{\n"
            f"            const float xv = pxc[kh * {wp} + kw];\n"
            + _indent(_indent(_indent(fma)))
            + f"            pw += {block};\n"
            f"        }}\n"
            f"    }}\n"
            f"}}\n"
        )
        pixel = (
            f"const float *pxs = {ctx.scratch()} + oh * {cs.sh * wp} + ow * {cs.sw};\n"
            f"const float *pw = {wsym} + (pp - {first}) * {taps};\n" + init + tap + store
        )
        body = (
            f"float *py = pyb + (pr * {o} + pp) * {cs.oh * cs.ow};\n"
            f"for (int oh = 0; oh < {cs.oh}; ++oh) {{\n"
            f"    for (int ow = 0; ow < {cs.ow}; ++ow) {{\n"
            + _indent(_indent(pixel))
            + "    }\n}\n"
        )
        return f"for (int pp = {first}; pp < {last}; pp += {block}) {{\n{_indent(body)}}}\n"


def _indent(code: str) -> str:
    return "".join(f"    {ln}\n" if ln else "\n" for ln in code.rstrip("\n").split("\n"))
