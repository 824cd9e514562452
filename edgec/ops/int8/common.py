"""What the int8 ops share: quantization look-ups with clear errors, the fused requantize +
clamp, sliding-window geometry. The GEMM kernels of QFullyConnected/QConv2D live in gemm_s8.py.
"""

from __future__ import annotations

import numpy as np

from edgec.errors import UnsupportedOpError
from edgec.ir import Graph, Node, Quant
from edgec.ops.base import EmitContext, Op, unsupported
from edgec.ops.int8.fixedpoint import clamp_int8, mbqm, use_mbqm


class QOp(Op):
    """Base of the int8 ops: they take int8 tensors and read their quantization."""

    int8 = True


def quant_of(node: Node, g: Graph, name: str, what: str) -> Quant:
    q = g.quant(name)
    if q is None:
        raise unsupported(node, f"{what} '{name}' has no quantization (scale and zero point)")
    return q


def per_tensor(node: Node, g: Graph, name: str, what: str) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor, or a clear error."""
    q = quant_of(node, g, name, what)
    if q.size != 1:
        raise unsupported(
            node, f"{what} '{name}' is quantized per channel; this op needs one scale and zero "
            "point"
        )
    return q.scalar()


def require_dtype(node: Node, g: Graph, name: str, dtype: str, what: str) -> None:
    got = g.tensor(name).dtype
    if got != dtype:
        raise unsupported(node, f"{what} '{name}' is {got}; expected {dtype}")


def act_range(node: Node) -> tuple[int, int]:
    """The fused activation clamp (``act_min``, ``act_max`` attributes; default -128, 127)."""
    lo, hi = int(node.attr("act_min", -128)), int(node.attr("act_max", 127))
    if not -128 <= lo <= hi <= 127:
        raise UnsupportedOpError(
            f"node '{node.name}' ({node.op}): act_min/act_max = {lo}/{hi} must satisfy "
            "-128 <= act_min <= act_max <= 127"
        )
    return lo, hi


def requantize_ref(acc: np.ndarray, mult: object, shift: object, zero_point: int,
                   lo: int, hi: int, rounding: str) -> np.ndarray:
    """int32 accumulators → int8: MultiplyByQuantizedMultiplier, + zero point, clamp."""
    return clamp_int8(mbqm(acc, mult, shift, rounding) + zero_point, lo, hi)


REQUANT_C = """\
/* int32 accumulator -> int8: TFLite MultiplyByQuantizedMultiplier ({form} rounding), + zero
 * point, clamp. */
static inline int8_t {name}(int32_t acc, int32_t multiplier, int shift,
{pad}int32_t zero_point, int32_t lo, int32_t hi)
{{
    int32_t v = {mbqm}(acc, multiplier, shift) + zero_point;
    v = v < lo ? lo : v;
    return (int8_t)(v > hi ? hi : v);
}}"""

def use_requant(ctx: EmitContext, rounding: str, shifts: object = None) -> str:
    """The fused requantize + clamp C helper of form ``rounding`` (emitted once); its name.
    ``shifts``: the kernel's shifts, for the branch-free double rounding (``use_mbqm``)."""
    mbqm_c = use_mbqm(ctx, rounding, shifts)
    name = {"edgec_mbqm_single": "edgec_requant_s8_single",
            "edgec_mbqm_right": "edgec_requant_s8_right"}.get(mbqm_c, "edgec_requant_s8")
    pad = " " * len(f"static inline int8_t {name}(")
    return ctx.helper(name, REQUANT_C.format(name=name, mbqm=mbqm_c, form=rounding, pad=pad))


class Requant:
    """Per-channel or per-tensor requantization constants of one kernel, as C expressions."""

    def __init__(self, ctx: EmitContext, base: str, mult: np.ndarray, shift: np.ndarray,
                 shift_ctype: str = "int32_t", path: str | None = None):
        """``path``: the build path that reads the per-channel tables, when only one does
        (``EmitContext.const_array``)."""
        mult, shift = np.asarray(mult).reshape(-1), np.asarray(shift).reshape(-1)
        self.shift_ctype = shift_ctype
        self.per_channel = mult.size > 1 and not (np.all(mult == mult[0])
                                                 and np.all(shift == shift[0]))
        if self.per_channel:
            self.mult_sym = ctx.const_array(f"{base}_mult", mult, "int32_t", param=False,
                                            path=path)
            self.shift_sym = ctx.const_array(f"{base}_shift", shift, shift_ctype, param=False,
                                             path=path)
        else:
            self.m0, self.s0 = int(mult[0]), int(shift[0])

    def mult(self, c: str) -> str:
        return f"{self.mult_sym}[{c}]" if self.per_channel else str(self.m0)

    def shift(self, c: str) -> str:
        return f"{self.shift_sym}[{c}]" if self.per_channel else str(self.s0)


def fits_int32(node: Node, what: str, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.int64)
    if v.size and (v.min() < -(2**31) or v.max() > 2**31 - 1):
        raise unsupported(node, f"{what} overflows int32")
    return v.astype(np.int32)


class Window:
    """NHWC sliding-window geometry of a QConv2D / QDepthwiseConv2D / pool node: output
    ``(oh, ow)`` reads input rows ``oh * sh - pad_top + kh * dh`` (and columns likewise) for
    taps ``kh < kh_size``; taps outside the input are padding."""

    def __init__(self, node: Node, in_shape: tuple[int, ...], kh: int, kw: int,
                 dilated: bool = True):
        if len(in_shape) != 4:
            raise unsupported(node, f"input {list(in_shape)}: expected NHWC (4 dimensions)")
        self.n, self.h, self.w, self.c = (int(d) for d in in_shape)
        self.kh, self.kw = int(kh), int(kw)
        self.sh, self.sw = _pair(node, "strides", 1)
        self.dh, self.dw = _pair(node, "dilations", 1) if dilated else (1, 1)
        pads = [int(p) for p in node.attr("pads", [0, 0, 0, 0])]
        if len(pads) != 4 or min(pads) < 0:
            raise unsupported(node, f"pads {pads}: expected [top, left, bottom, right] >= 0")
        self.pt, self.pl, self.pb, self.pr = pads
        if min(self.sh, self.sw, self.dh, self.dw, self.kh, self.kw) < 1:
            raise unsupported(node, "strides, dilations and kernel sizes must be >= 1")
        span_h, span_w = (self.kh - 1) * self.dh + 1, (self.kw - 1) * self.dw + 1
        room_h = self.h + self.pt + self.pb - span_h
        room_w = self.w + self.pl + self.pr - span_w
        if room_h < 0 or room_w < 0:
            raise unsupported(node, f"kernel {self.kh}x{self.kw} (dilated {span_h}x{span_w}) "
                                    f"exceeds the padded input")
        self.oh, self.ow = room_h // self.sh + 1, room_w // self.sw + 1

    def padded(self, x: np.ndarray, value: int) -> np.ndarray:
        """The input (int64) padded with ``value`` on every side."""
        return np.pad(x.astype(np.int64),
                      ((0, 0), (self.pt, self.pb), (self.pl, self.pr), (0, 0)),
                      constant_values=value)

    def taps(self, xp: np.ndarray, kh: int, kw: int) -> np.ndarray:
        """The padded input's values tap (kh, kw) reads at every output position:
        [N, OH, OW, C]."""
        r0, c0 = kh * self.dh, kw * self.dw
        return xp[:, r0 : r0 + (self.oh - 1) * self.sh + 1 : self.sh,
                  c0 : c0 + (self.ow - 1) * self.sw + 1 : self.sw, :]

    def valid(self, kh: int, kw: int) -> np.ndarray:
        """Whether tap (kh, kw) is inside the input at each output position: [OH, OW]."""
        rows = np.arange(self.oh) * self.sh - self.pt + kh * self.dh
        cols = np.arange(self.ow) * self.sw - self.pl + kw * self.dw
        return ((rows >= 0) & (rows < self.h))[:, None] & ((cols >= 0) & (cols < self.w))[None]

    def c_tap_range(self, o: str, axis: str) -> str:
        """C declaring ``<axis>0``/``<axis>1`` (the in-input taps of output ``o``) and
        ``i<axis>`` (the input position of tap 0) for axis 'h' or 'w'."""
        size, k, s, d, p = ((self.h, self.kh, self.sh, self.dh, self.pt) if axis == "h"
                            else (self.w, self.kw, self.sw, self.dw, self.pl))
        lines = [f"const int i{axis} = {o} * {s} - {p};"]
        if d == 1:
            lines.append(f"const int k{axis}0 = i{axis} < 0 ? -i{axis} : 0;")
            lines.append(f"const int k{axis}1 = {size} - i{axis} < {k} ? {size} - i{axis} : {k};")
        else:
            lines.append(f"const int k{axis}0 = i{axis} < 0 ? (-i{axis} + {d - 1}) / {d} : 0;")
            lines.append(f"const int k{axis}e = ({size} - i{axis} + {d - 1}) / {d};")
            lines.append(f"const int k{axis}1 = k{axis}e < {k} ? k{axis}e : {k};")
        return "\n".join(lines) + "\n"

    @property
    def any_padding(self) -> bool:
        """Some output reads a tap outside the input."""
        return any(not self.valid(kh, kw).all()
                   for kh in range(self.kh) for kw in range(self.kw))


def _pair(node: Node, key: str, default: int) -> tuple[int, int]:
    v = [int(x) for x in node.attr(key, [default, default])]
    if len(v) != 2:
        raise unsupported(node, f"{key} {v}: expected two values [height, width]")
    return v[0], v[1]


def indent(code: str, levels: int = 1) -> str:
    """``code`` indented by ``levels`` (preprocessor lines stay in column 0)."""
    pad = "    " * levels
    return "".join((pad + ln if ln and not ln.lstrip().startswith("#") else ln) + "\n"
                   for ln in code.rstrip("\n").split("\n"))
