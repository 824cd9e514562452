"""QAdd, QSub, QMul: TFLite's int8 ADD / SUB / MUL (reference_integer_ops/add.h, mul.h), with
numpy broadcasting.

Add/Sub (TFLite's Prepare, left_shift = 20): with ``twice_max = 2 * max(s1, s2)`` each input is
``MBQM((q - zp) << 20, QM(s_i / twice_max))``, the sum (difference) is
``MBQM(·, QM(twice_max / (2^20 * s_out))) + zp_out``, clamped. Mul:
``MBQM((q1 - zp1) * (q2 - zp2), QM(s1 * s2 / s_out)) + zp_out`` with the multiplier computed in
float32 as TFLite does. ``act_min``/``act_max`` clamp the result.

The C takes each double-rounding multiply as one SMMLAR (:func:`smmlar_form`: the rounding
term, the sign correction and the zero point folded in, one instruction on cores with the DSP
extension, a 64-bit product elsewhere) wherever the constants allow it; an Add input whose
multiplier is exactly 1/2 (the input of the larger scale) is a plain shift. About 17
instructions per output on the Cortex-M4F instead of ~50; other constants keep the generic
MultiplyByQuantizedMultiplier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, broadcast_shape, register
from edgec.ops.int8.common import QOp, act_range, per_tensor, require_dtype, use_requant
from edgec.ops.int8.fixedpoint import (
    clamp_int8,
    f32,
    mbqm,
    quantize_multiplier,
    rounding_of,
    smmlar_form,
    use_helpers,
    use_mbqm,
)
from edgec.ops.loops import broadcast_loop

Outs = list[tuple[Shape, str]]
LEFT_SHIFT = 20
#: the largest |q - zp| of an int8 code
CODE_SPAN = 255


def _rq(ctx: EmitContext, doubled: str, sign: str, m: int, form: tuple[int, int]) -> str:
    """The C of ``MBQM(x) (+ zp)`` in the SMMLAR form: ``doubled`` = 2x, ``sign`` = x."""
    use_helpers(ctx, "edgec_smmlar")
    e, r = form
    v = f"edgec_smmlar({doubled}, {m}, {r})"
    return f"({v} - ({sign} < 0)) >> {e}" if e else v


def _clamp(ctx: EmitContext, v: str, lo: int, hi: int) -> str:
    """C statements clamping int32 ``v`` to [lo, hi] (SSAT, then the narrower bounds)."""
    use_helpers(ctx, "edgec_ssat8")
    out = f"{v} = edgec_ssat8({v});\n"
    if lo > -128:
        out += f"{v} = {v} < {lo} ? {lo} : {v};\n"
    if hi < 127:
        out += f"{v} = {v} > {hi} ? {hi} : {v};\n"
    return out


def add_rescales(s1: float, s2: float, so: float) -> tuple[float, float, float]:
    """The three real multipliers of int8 ADD/SUB as TFLite's Prepare computes them (add.cc:
    ``twice_max`` in float32, the ratios in double): input 1's, input 2's (each <= 1/2) and the
    output's ``twice_max / (2^20 * s_out)``, which TFLite requires below 1
    (``QuantizeMultiplierSmallerThanOneExp``)."""
    twice_max = float(np.float32(2.0) * np.float32(max(np.float32(s1), np.float32(s2))))
    return (float(s1) / twice_max, float(s2) / twice_max,
            twice_max / f32((1 << LEFT_SHIFT) * np.float32(so)))


def _scales(node: Node, g: Graph) -> tuple[tuple[float, int], tuple[float, int], tuple[float, int]]:
    return (per_tensor(node, g, node.inputs[0], "input 0"),
            per_tensor(node, g, node.inputs[1], "input 1"),
            per_tensor(node, g, node.outputs[0], "output"))


class _QBinary(QOp):
    def infer(self, node: Node, g: Graph) -> Outs:
        for k in (0, 1):
            require_dtype(node, g, node.inputs[k], "int8", f"input {k}")
        self.params(node, g)
        act_range(node)
        return [(broadcast_shape(g.shape(node.inputs[0]), g.shape(node.inputs[1])), "int8")]

    def inplace(self, node: Node, g: Graph) -> bool:
        return g.shape(node.inputs[0]) == g.shape(node.outputs[0])

    def inplace_inputs(self, node: Node, g: Graph) -> tuple[int, ...]:
        """Either operand of the output's shape: each output element reads its own position of
        that operand before it is written (the other operand may broadcast)."""
        return tuple(k for k in (0, 1) if g.shape(node.inputs[k]) == g.shape(node.outputs[0]))

    def params(self, node: Node, g: Graph) -> dict[str, int]:
        raise NotImplementedError


class _QAddSub(_QBinary):
    sign = 1

    def params(self, node: Node, g: Graph) -> dict[str, int]:
        (s1, z1), (s2, z2), (so, zo) = _scales(node, g)
        r = rounding_of(g)
        r1, r2, ro = add_rescales(s1, s2, so)
        m1, h1 = quantize_multiplier(r1, r)
        m2, h2 = quantize_multiplier(r2, r)
        mo, ho = quantize_multiplier(ro, r)
        return {"z1": z1, "z2": z2, "zo": zo, "m1": m1, "h1": h1, "m2": m2, "h2": h2,
                "mo": mo, "ho": ho}

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        p, r = self.params(node, g), rounding_of(g)
        lo, hi = act_range(node)
        sa = mbqm((a.astype(np.int64) - p["z1"]) << LEFT_SHIFT, p["m1"], p["h1"], r)
        sb = mbqm((b.astype(np.int64) - p["z2"]) << LEFT_SHIFT, p["m2"], p["h2"], r)
        out = mbqm(sa + self.sign * sb, p["mo"], p["ho"], r) + p["zo"]
        return [clamp_int8(out, lo, hi)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        p = self.params(node, g)
        lo, hi = act_range(node)
        shapes = [g.shape(node.inputs[0]), g.shape(node.inputs[1])]
        fast = self._fast_body(ctx, p, lo, hi) if rounding_of(g) == "double" else None
        if fast is not None:
            return broadcast_loop(g.shape(node.outputs[0]), shapes, fast)
        mbqm_c = use_mbqm(ctx, rounding_of(g))
        requant = use_requant(ctx, rounding_of(g))
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        op = "+" if self.sign > 0 else "-"

        def body(ix: list[str], iy: str) -> str:
            return (
                f"const int32_t sa = {mbqm_c}(((int32_t){a}[{ix[0]}] - ({p['z1']})) * "
                f"{1 << LEFT_SHIFT}, {p['m1']}, {p['h1']});\n"
                f"const int32_t sb = {mbqm_c}(((int32_t){b}[{ix[1]}] - ({p['z2']})) * "
                f"{1 << LEFT_SHIFT}, {p['m2']}, {p['h2']});\n"
                f"{y}[{iy}] = {requant}(sa {op} sb, {p['mo']}, {p['ho']}, {p['zo']}, {lo}, "
                f"{hi});\n"
            )

        return broadcast_loop(g.shape(node.outputs[0]), shapes, body)

    def _fast_body(self, ctx: EmitContext, p: dict[str, int], lo: int,
                   hi: int) -> Callable[[list[str], str], str] | None:
        """The SMMLAR-form loop body, or None where a multiplier does not allow it."""
        terms, smax = [], 0
        for m, h in ((p["m1"], p["h1"]), (p["m2"], p["h2"])):
            if (m, h) == (1 << 30, 0):  # MBQM(d << 20, 1/2) = d << 19 exactly
                terms.append(None)
                smax += CODE_SPAN << (LEFT_SHIFT - 1)
                continue
            form = smmlar_form(m, h, 0, CODE_SPAN << LEFT_SHIFT)
            if form is None:
                return None
            terms.append(form)
            smax += ((CODE_SPAN << (LEFT_SHIFT + 1)) * m >> 32 >> form[0]) + 2
        out_form = smmlar_form(p["mo"], p["ho"], p["zo"], smax)
        if out_form is None:
            return None
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        op = "+" if self.sign > 0 else "-"
        ms = (p["m1"], p["m2"])
        zs = (p["z1"], p["z2"])

        def body(ix: list[str], iy: str) -> str:
            lines = []
            for k, (src, form) in enumerate(zip((a, b), terms, strict=True)):
                lines.append(f"const int32_t d{k} = (int32_t){src}[{ix[k]}] - ({zs[k]});\n")
                if form is None:
                    expr = f"d{k} * {1 << (LEFT_SHIFT - 1)}"
                else:
                    expr = _rq(ctx, f"d{k} * {1 << (LEFT_SHIFT + 1)}", f"d{k}", ms[k], form)
                lines.append(f"const int32_t t{k} = {expr};\n")
            lines.append(f"const int32_t s = t0 {op} t1;\n")
            lines.append(f"int32_t v = {_rq(ctx, 's * 2', 's', p['mo'], out_form)};\n")
            return "".join(lines) + _clamp(ctx, "v", lo, hi) + f"{y}[{iy}] = (int8_t)v;\n"

        return body


@register
class QAdd(_QAddSub):
    types = ("QAdd",)
    sign = 1


@register
class QSub(_QAddSub):
    types = ("QSub",)
    sign = -1


@register
class QMul(_QBinary):
    types = ("QMul",)

    def params(self, node: Node, g: Graph) -> dict[str, int]:
        (s1, z1), (s2, z2), (so, zo) = _scales(node, g)
        real = f32(np.float32(f32(np.float32(s1) * np.float32(s2))) / np.float32(so))
        m, h = quantize_multiplier(real, rounding_of(g))
        return {"z1": z1, "z2": z2, "zo": zo, "m": m, "h": h}

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        p = self.params(node, g)
        lo, hi = act_range(node)
        prod = (a.astype(np.int64) - p["z1"]) * (b.astype(np.int64) - p["z2"])
        return [clamp_int8(mbqm(prod, p["m"], p["h"], rounding_of(g)) + p["zo"], lo, hi)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        p = self.params(node, g)
        lo, hi = act_range(node)
        a, b, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        form = smmlar_form(p["m"], p["h"], p["zo"], CODE_SPAN * CODE_SPAN)
        if rounding_of(g) != "double":
            form = None
        requant = "" if form is not None else use_requant(ctx, rounding_of(ctx.g))

        def fast(ix: list[str], iy: str) -> str:
            assert form is not None
            return (
                f"const int32_t prod = ((int32_t){a}[{ix[0]}] - ({p['z1']})) * "
                f"((int32_t){b}[{ix[1]}] - ({p['z2']}));\n"
                f"int32_t v = {_rq(ctx, 'prod * 2', 'prod', p['m'], form)};\n"
                + _clamp(ctx, "v", lo, hi) + f"{y}[{iy}] = (int8_t)v;\n"
            )

        def body(ix: list[str], iy: str) -> str:
            return (
                f"const int32_t prod = ((int32_t){a}[{ix[0]}] - ({p['z1']})) * "
                f"((int32_t){b}[{ix[1]}] - ({p['z2']}));\n"
                f"{y}[{iy}] = {requant}(prod, {p['m']}, {p['h']}, {p['zo']}, {lo}, {hi});\n"
            )

        return broadcast_loop(g.shape(node.outputs[0]),
                              [g.shape(node.inputs[0]), g.shape(node.inputs[1])],
                              body if form is None else fast)
