"""Pass lower_qdq: ONNX QDQ patterns → edgec's int8 ops (docs/int8.md).

A quantized ONNX model (onnxruntime's ``quantize_static`` QDQ format, or its QOperator format
once ``frontend.onnx_quant`` expanded it) computes each layer as
``DequantizeLinear(codes) → float op → QuantizeLinear``. This pass replaces every such pattern
whose op has an int8 kernel by that kernel reading and writing codes: the QuantizeLinear outputs
become int8 tensors carrying their quantization (uint8 codes become int8 ones with the zero point
shifted by 128: the same real values), constant DequantizeLinear inputs become int8 weights and
int32 biases; a MatMul of two run-time tensors (attention) becomes ``QBatchMatMul``. NCHW
convolutions and pools are wrapped in Transposes around the NHWC int8
kernels (``passes.transposes`` cancels them between layers); 1-D ones (NCL) run the same kernels
with H = 1 (NCL → NLC, viewed as N x 1 x L x C). ``ceil_mode`` pools get the end padding that
makes the kernels' floor rule give the ceil output size. A Relu or Clip between the op and
its QuantizeLinear becomes the kernel's clamp.

Patterns without an int8 kernel stay float: their DequantizeLinear inputs become ``Dequantize``
nodes and their QuantizeLinear outputs ``Quantize`` nodes (mixed precision;
:func:`float_islands` lists them). So do weighted ops whose int8 weights have a non-zero zero
point (onnxruntime's quantizer writes such asymmetric weights for a weight the exporter shared
through an Identity): the int8 kernels take symmetric weights only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgec.errors import UnsupportedOpError
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.base import int_list, norm_axis, unsupported
from edgec.ops.conv import Axis, as_2d, window_axes
from edgec.ops.int8 import lut
from edgec.ops.int8.fixedpoint import tflite_round
from edgec.ops.interpret import infer_node
from edgec.ops.qdq import qdq_params

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: ops that move values without changing them: on codes they stay the same op
_MOVES = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                    "Dropout", "Slice", "Gather", "Split", "Expand"})
_TO_NHWC, _TO_NCHW, _NCL_NLC = [0, 2, 3, 1], [0, 3, 1, 2], [0, 2, 1]


def has_qdq(g: Graph) -> bool:
    return any(n.op in QDQ_OPS for n in g.nodes)


def lower_qdq(g: Graph) -> Graph:
    """Fold QDQ patterns into int8 ops (a no-op on graphs without QuantizeLinear nodes)."""
    if not has_qdq(g):
        return g
    return _Lowering(g).run()


def float_islands(g: Graph) -> list[str]:
    """Nodes of a lowered graph that compute in float between Dequantize and Quantize (the
    mixed-precision part), as ``name (op)``; inside an int8 loop (a Scan reading codes) as
    ``scan/body: name (op)``."""
    fed = {o for n in g.nodes if n.op == "Dequantize" for o in n.outputs}
    out: list[str] = []
    for n in g.nodes:
        if n.op not in ("Dequantize", "Quantize") and any(i in fed for i in n.inputs):
            out.append(f"{n.name} ({n.op})")
            fed.update(o for o in n.outputs if o)
        elif n.op == "Scan" and isinstance(n.attrs.get("body"), Graph):
            out += [f"{n.name}/body: {f}" for f in float_islands(n.attrs["body"])]
    return out


class _Code:
    """An int8 tensor of the lowered graph that a float tensor of the QDQ graph dequantizes."""

    def __init__(self, name: str, quant: Quant, const: bool):
        self.name, self.quant, self.const = name, quant, const


class _Lowering:
    def __init__(self, g: Graph):
        self.src = g
        self.g = g.copy()
        self.g.nodes = []
        self.consumers = g.consumers()
        self.codes: dict[str, _Code] = {}  # DequantizeLinear output → the codes it reads
        self.done: set[str] = set()  # QuantizeLinear outputs already written
        self.floats: set[str] = set()  # dequantized tensors materialized as float
        self.fused: set[str] = set()  # Relu/Clip nodes that became a kernel's clamp
        self.count = 0

    # -- building --------------------------------------------------------------------------
    def add(self, op: str, inputs: list[str], out: str, quant: Quant | None = None,
            name: str = "", **attrs: object) -> str:
        self.count += 1
        old = self.g.tensors.get(out)
        self.g.tensors[out] = Tensor(out, old.shape if old else (), quant=quant)
        node = Node(op, name or f"{out}#qdq{self.count}", list(inputs), [out], dict(attrs))
        self.g.nodes.append(node)
        infer_node(self.g, node)
        t = self.g.tensors[out]
        if quant is not None and t.dtype == "int8":
            t.quant = quant
        return out

    def fresh(self, base: str) -> str:
        name = self.g.fresh_name(base)
        self.g.tensors[name] = Tensor(name, ())
        return name

    def int8_const(self, base: str, data: np.ndarray, quant: Quant) -> str:
        return self.g.add_const(base, np.ascontiguousarray(data), quant)

    # -- reading the QDQ graph ---------------------------------------------------------------
    def params(self, n: Node) -> tuple[Quant, str]:
        """The int8 quantization a QuantizeLinear/DequantizeLinear node describes."""
        rank = len(self.src.shape(n.inputs[0]))
        scale, zp, code, axis = qdq_params(n, self.src, rank)
        bad = scale[~(np.isfinite(scale) & (scale > 0))]
        if bad.size:
            raise unsupported(n, f"scale {float(bad[0])} is not a finite positive number; the "
                                 "int8 lowering needs one")
        if code == "uint8":
            zp = zp - 128
        return Quant(scale, zp, axis if scale.size > 1 else None), code

    def q_of(self, name: str) -> tuple[Node, Quant] | None:
        """The QuantizeLinear that alone consumes ``name``, with its (int8) quantization."""
        cons = self.consumers.get(name, [])
        if name in self.src.outputs or len(cons) != 1 or cons[0].op != "QuantizeLinear":
            return None
        q, _ = self.params(cons[0])
        return (cons[0], q) if q.size == 1 else None

    def code(self, name: str) -> _Code | None:
        return self.codes.get(name) if name else None

    def runtime(self, name: str) -> _Code | None:
        c = self.code(name)
        return c if c is not None and not c.const and c.quant.size == 1 else None

    # -- the walk ----------------------------------------------------------------------------
    def run(self) -> Graph:
        for n in self.src.nodes:
            if n.op == "DequantizeLinear":
                self.dequantize_linear(n)
            elif n.op == "QuantizeLinear":
                if n.outputs[0] not in self.done:
                    self.quantize_linear(n)
            elif n.name in self.fused:
                continue
            elif n.op == "Scan":
                self.scan(n)
            elif not self.lower(n):
                self.keep_float(n)
        for o in self.src.outputs:
            if o in self.codes:
                self.materialize(o)
            elif self.src.tensor(o).dtype == "uint8":
                raise UnsupportedOpError(f"graph output '{o}' is uint8 codes; edgec's quantized "
                                         f"outputs are int8 or float (dequantize it)")
        g = self.g
        g.toposort()
        return g

    def dequantize_linear(self, n: Node) -> None:
        x, y = n.inputs[0], n.outputs[0]
        quant, code = self.params(n)
        data = self.src.const(x)
        if data is not None:
            if code == "uint8":
                data = (data.astype(np.int16) - 128).astype(np.int8)
            self.codes[y] = _Code(self.int8_const(f"{x}_q", data, quant), quant, const=True)
        elif x in self.g.tensors and self.g.tensor(x).dtype == "int8":
            self.codes[y] = _Code(x, self.g.tensor(x).quant or quant, const=False)
        else:
            raise UnsupportedOpError(f"node '{n.name}' (DequantizeLinear): input '{x}' is not "
                                     f"the output of a QuantizeLinear edgec lowered")

    def quantize_linear(self, n: Node) -> None:
        x, y = n.inputs[0], n.outputs[0]
        quant, _ = self.params(n)
        if quant.size != 1:
            raise unsupported(n, "per-axis quantization of activations is not supported")
        src = self.runtime(x)
        if src is not None and x not in self.floats:  # DQ → Q: codes to codes
            op = "Identity" if src.quant.same_as(quant) else "Requantize"
            self.add(op, [src.name], y, quant, name=n.name)
        else:
            self.need_float(x)
            self.add("Quantize", [x], y, quant, name=n.name)
        self.done.add(y)

    def materialize(self, name: str) -> None:
        """Make dequantized tensor ``name`` exist as float (a Dequantize of its codes)."""
        if name in self.floats:
            return
        c = self.codes[name]
        if not c.const:
            if c.quant.size != 1:
                raise UnsupportedOpError(f"'{name}': per-axis dequantization of activations is "
                                         f"not supported")
            self.add("Dequantize", [c.name], name)
        self.floats.add(name)

    def need_float(self, name: str) -> None:
        if name in self.codes:
            self.materialize(name)

    def scan(self, n: Node) -> None:
        """A loop: its body lowered too; an int8 body (codes in and out, see
        ``quantize.insert``) gives the Scan's outputs its outputs' quantization."""
        body = n.attrs.get("body")
        if not isinstance(body, Graph) or not has_qdq(body):
            self.keep_float(n)
            return
        for i in n.inputs:
            self.need_float(i)
        body = lower_qdq(body)
        node = Node(n.op, n.name, list(n.inputs), list(n.outputs), {**n.attrs, "body": body})
        self.g.nodes.append(node)
        infer_node(self.g, node)
        n_state = len(n.inputs) - int(n.attr("num_scan_inputs", 0))
        for k, o in enumerate(n.outputs):
            q = body.quant(body.outputs[k])
            if o and q is not None and self.g.tensor(o).dtype == "int8":
                self.g.tensors[o].quant = q
                if k < n_state and not q.same_as(body.quant(body.inputs[k]) or q):
                    raise UnsupportedOpError(f"node '{n.name}' (Scan): state {k} is quantized "
                                             f"differently at the body's input and output")

    def split(self, n: Node) -> bool:
        """Split on codes (each output requantized where its QuantizeLinear says otherwise)."""
        x = self.runtime(n.inputs[0])
        outs = [self.q_of(o) if o else None for o in n.outputs]
        if x is None or any(i in self.codes for i in n.inputs[1:]) or None in outs:
            return False
        names = []
        for q_node, q_y in outs:  # type: ignore[misc]
            y = q_node.outputs[0]
            names.append(y if q_y.same_as(x.quant) else self.fresh(f"{y}_split"))
            self.g.tensors[names[-1]] = Tensor(names[-1], (), quant=x.quant)
        node = Node("Split", n.name, [x.name, *n.inputs[1:]], names, dict(n.attrs))
        self.g.nodes.append(node)
        infer_node(self.g, node)
        for name, (q_node, q_y) in zip(names, outs, strict=True):  # type: ignore[misc]
            if name != q_node.outputs[0]:
                self.add("Requantize", [name], q_node.outputs[0], q_y)
            self.done.add(q_node.outputs[0])
        return True

    def keep_float(self, n: Node) -> None:
        for i in n.inputs:
            self.need_float(i)
        node = Node(n.op, n.name, list(n.inputs), list(n.outputs), dict(n.attrs))
        self.g.nodes.append(node)
        infer_node(self.g, node)

    # -- patterns ----------------------------------------------------------------------------
    def lower(self, n: Node) -> bool:
        if n.op == "Split" and len([o for o in n.outputs if o]) > 1:
            return self.split(n)
        rule = _RULES.get(n.op)
        if rule is None or not n.outputs or len([o for o in n.outputs if o]) != 1:
            return False
        out = self.q_of(n.outputs[0])
        act: tuple[float | None, float | None] = (None, None)
        act_node = None
        if out is None and n.op in _FUSES_ACT:
            out, act = self.fused_act(n)
            act_node = self.consumers[n.outputs[0]][0] if out is not None else None
        if out is None:
            return False
        q_node, q_out = out
        try:
            lowered = rule(self, n, q_node.outputs[0], q_out, act)
        except UnsupportedOpError:
            return False
        if lowered:
            self.done.add(q_node.outputs[0])
            if act_node is not None:
                self.fused.add(act_node.name)
        return lowered

    def fused_act(self, n: Node) -> tuple[tuple[Node, Quant] | None,
                                          tuple[float | None, float | None]]:
        cons = self.consumers.get(n.outputs[0], [])
        if n.outputs[0] in self.src.outputs or len(cons) != 1:
            return None, (None, None)
        a = cons[0]
        bounds = _clip_bounds(a, self.src)
        out = self.q_of(a.outputs[0]) if bounds is not None else None
        if out is None or bounds is None:
            return None, (None, None)
        return out, bounds


def _clip_bounds(n: Node, g: Graph) -> tuple[float | None, float | None] | None:
    if n.op == "Relu":
        return 0.0, None
    if n.op != "Clip":
        return None
    if "min" in n.attrs or "max" in n.attrs:  # opset < 11
        return n.attrs.get("min"), n.attrs.get("max")
    vals: list[float | None] = []
    for k in (1, 2):
        name = n.inputs[k] if len(n.inputs) > k else ""
        v = g.const(name) if name else None
        if name and v is None:
            return None
        vals.append(None if v is None else float(v))
    return vals[0], vals[1]


def _act_attrs(q: Quant, act: tuple[float | None, float | None]) -> dict[str, int]:
    """A fused Relu/Clip as the output's clamp (TFLite's CalculateActivationRangeQuantized)."""
    scale, zp = q.scalar()
    lo, hi = act

    def code(v: float) -> int:
        return zp + tflite_round(float(np.float32(np.float32(v) / np.float32(scale))))

    return {"act_min": -128 if lo is None else max(-128, min(127, code(lo))),
            "act_max": 127 if hi is None else min(127, max(-128, code(hi)))}


Rule = Callable[[_Lowering, Node, str, Quant, tuple[float | None, float | None]], bool]


def _bias(lw: _Lowering, n: Node, idx: int, s_x: float, s_w: np.ndarray) -> str:
    """An int32 bias at scale s_x * s_w (a dequantized int32 bias is taken as it is when its
    scale is that product, else it is requantized from its real values)."""
    name = n.inputs[idx] if len(n.inputs) > idx else ""
    if not name:
        return ""
    scale = (np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32)
    if not np.all(scale > 0):
        raise unsupported(n, f"the bias scale (input scale {s_x:g} x weight scale "
                             f"{float(s_w.reshape(-1)[np.argmin(scale)]):g}) underflows float32")
    c = lw.code(name)
    if c is not None and c.const:
        data = lw.g.const(c.name)
        assert data is not None
        if (data.dtype == np.int32 and np.allclose(np.broadcast_to(c.quant.scale, scale.shape),
                                                   scale, rtol=1e-6, atol=0)
                and not np.any(c.quant.zero_point)):
            return lw.g.add_const(f"{name}_i32", data.reshape(-1).astype(np.int32),
                                  _bias_quant(scale))
    real = lw.src.const(name)
    if real is None:
        raise unsupported(n, f"bias '{name}' must be a constant")
    q = np.rint(real.reshape(-1).astype(np.float64) / scale.astype(np.float64))
    if np.any(np.abs(q) > 2**31 - 1):
        raise unsupported(n, f"bias '{name}' does not fit int32 at scale input x weight")
    return lw.g.add_const(f"{name}_i32", q.astype(np.int32), _bias_quant(scale))


def _bias_quant(scale: np.ndarray) -> Quant:
    return Quant(scale, np.zeros(scale.size, np.int32), 0 if scale.size > 1 else None)


def _weights(lw: _Lowering, n: Node, idx: int, out_axis: int) -> tuple[np.ndarray, Quant]:
    c = lw.code(n.inputs[idx])
    if c is None or not c.const:
        raise unsupported(n, "weights must be dequantized int8 constants")
    data = lw.g.const(c.name)
    assert data is not None
    if c.quant.size > 1 and c.quant.axis != out_axis:
        raise unsupported(n, f"per-channel weights on axis {c.quant.axis}; expected the output "
                             f"channel axis {out_axis}")
    if np.any(c.quant.zero_point != 0):  # the int8 kernels take symmetric weights: stays float
        raise unsupported(n, f"weights '{n.inputs[idx]}' with a non-zero zero point")
    return data, c.quant


def _geometry(axes: list[Axis], ceil_pads: bool = False) -> dict[str, list[int]]:
    """The NHWC kernels' strides/dilations/pads for 1-D (H = 1) or 2-D window ``axes``; with
    ``ceil_pads`` the end pads are set so that the kernel's floor rule gives each axis's output
    size (pooling's ceil_mode: the extra padding holds no valid tap, so it neither counts in an
    average nor wins a max)."""
    h, w = as_2d(axes)
    ends = [_ceil_pad(a) if ceil_pads else a.pad_end for a in (h, w)]
    return {"strides": [h.stride, w.stride], "dilations": [h.dilation, w.dilation],
            "pads": [h.pad_begin, w.pad_begin, *ends]}


def _ceil_pad(a: Axis) -> int:
    """The least end pad giving ``a.size_out`` outputs by the floor rule (one below it would
    give one output fewer; a window reads its end pad only if it starts in the input)."""
    span = (a.kernel - 1) * a.dilation + 1
    return max(0, (a.size_out - 1) * a.stride + span - a.size_in - a.pad_begin)


def _to_nhwc(lw: _Lowering, x: _Code, shape: tuple[int, ...], y: str) -> str:
    """Codes ``x`` (NCHW, or NCL as N x C x 1 x L) laid out NHWC for the int8 kernels."""
    if len(shape) == 4:
        return lw.add("Transpose", [x.name], lw.fresh(f"{y}_nhwc_in"), x.quant, perm=_TO_NHWC)
    n, c, length = shape
    t = lw.add("Transpose", [x.name], lw.fresh(f"{y}_nlc_in"), x.quant, perm=_NCL_NLC)
    return lw.add("Reshape", [t, _ints(lw, (n, 1, length, c))], lw.fresh(f"{y}_nhwc_in"),
                  x.quant)


def _from_nhwc(lw: _Lowering, yt: str, y: str, q_in: Quant, q_y: Quant, rank: int) -> None:
    """NHWC codes ``yt`` back to the layout of ``y`` (NCHW, or NCL from N x 1 x L x C)."""
    perm = _TO_NCHW
    if rank == 3:
        n, _, length, c = lw.g.shape(yt)
        yt = lw.add("Reshape", [yt, _ints(lw, (n, length, c))], lw.fresh(f"{y}_nlc"), q_in)
        perm = _NCL_NLC
    _move_to(lw, "Transpose", [yt], y, q_in, q_y, perm=perm)


def _ints(lw: _Lowering, values: tuple[int, ...]) -> str:
    return lw.g.add_const("shape", np.asarray(values, np.int64))


def _conv(lw: _Lowering, n: Node, y: str, q_y: Quant,
          act: tuple[float | None, float | None]) -> bool:
    x = lw.runtime(n.inputs[0])
    shape = lw.src.shape(n.inputs[0])
    if x is None or len(shape) not in (3, 4):
        return False
    w, q_w = _weights(lw, n, 1, 0)
    if w.ndim == 3:  # 1-D: O x C/g x K as O x C/g x 1 x K
        w = w[:, :, None, :]
    o, cg, kh, kw = w.shape
    c = shape[1]
    geo = _geometry(window_axes(n, shape[2:], [kh, kw][4 - len(shape):]))
    s_x = x.quant.scalar()[0]
    s_w = q_w.scale if q_w.size > 1 else np.repeat(q_w.scale, o)
    b = _bias(lw, n, 2, s_x, s_w)
    xt = _to_nhwc(lw, x, shape, y)
    yt = lw.fresh(f"{y}_nhwc")
    group = int(n.attr("group", 1))
    if group == c and cg == 1 and group > 1:
        wq = Quant(q_w.scale, q_w.zero_point, 3 if q_w.size > 1 else None)
        wt = lw.int8_const(f"{n.inputs[1]}_dw", w.transpose(1, 2, 3, 0), wq)
        lw.add("QDepthwiseConv2D", [xt, wt, b], yt, q_y, name=n.name, **geo,
               depth_multiplier=o // c, **_act_attrs(q_y, act))
    else:
        wt = lw.int8_const(f"{n.inputs[1]}_ohwi", w.transpose(0, 2, 3, 1), q_w)
        lw.add("QConv2D", [xt, wt, b], yt, q_y, name=n.name, **geo, **_act_attrs(q_y, act))
    _from_nhwc(lw, yt, y, q_y, q_y, len(shape))
    return True


def _dense(lw: _Lowering, n: Node, y: str, q_y: Quant,
           act: tuple[float | None, float | None]) -> bool:
    x = lw.runtime(n.inputs[0])
    if x is None:
        return False
    if n.op == "Gemm":
        if (n.attr("transA", 0) or float(n.attr("alpha", 1.0)) != 1.0
                or float(n.attr("beta", 1.0)) != 1.0):
            return False
        trans_b = bool(n.attr("transB", 0))
    else:
        trans_b = False
    w, q_w = _weights(lw, n, 1, 0 if trans_b else 1)
    if w.ndim != 2:
        return False
    if not trans_b:
        w = w.T
    m = w.shape[0]
    wq = Quant(q_w.scale, q_w.zero_point, 0 if q_w.size > 1 else None)
    s_w = q_w.scale if q_w.size > 1 else np.repeat(q_w.scale, m)
    b = _bias(lw, n, 2, x.quant.scalar()[0], s_w) if n.op == "Gemm" else ""
    if b and lw.src.shape(n.inputs[2]) not in ((m,), (1, m)):
        return False
    wt = lw.int8_const(f"{n.inputs[1]}_mk", np.ascontiguousarray(w), wq)
    lw.add("QFullyConnected", [x.name, wt, b], y, q_y, name=n.name, **_act_attrs(q_y, act))
    return True


def _matmul(lw: _Lowering, n: Node, y: str, q_y: Quant,
            act: tuple[float | None, float | None]) -> bool:
    """MatMul by constant weights → QFullyConnected (``_dense``); of two run-time int8 tensors
    of rank >= 2 (attention's Q·Kᵀ and scores·V) → QBatchMatMul (TFLite's BATCH_MATMUL)."""
    a, b = lw.runtime(n.inputs[0]), lw.runtime(n.inputs[1])
    if a is None or b is None:
        return _dense(lw, n, y, q_y, act)
    if min(len(lw.src.shape(i)) for i in n.inputs[:2]) < 2:
        return False
    try:
        lw.add("QBatchMatMul", [a.name, b.name], y, q_y, name=n.name, **_act_attrs(q_y, act))
    except UnsupportedOpError:  # e.g. an int32 accumulator that could overflow: stays float
        lw.g.nodes.pop()
        raise
    return True


def _binary(kind: str) -> Rule:
    def rule(lw: _Lowering, n: Node, y: str, q_y: Quant,
             act: tuple[float | None, float | None]) -> bool:
        ins = [lw.code(i) for i in n.inputs[:2]]
        if any(c is None or c.quant.size != 1 for c in ins) or all(c.const for c in ins if c):
            return False
        lw.add(kind, [c.name for c in ins if c], y, q_y, name=n.name, **_act_attrs(q_y, act))
        return True

    return rule


def _table(fn: Callable[[Node, Graph, Quant, Quant], np.ndarray]) -> Rule:
    def rule(lw: _Lowering, n: Node, y: str, q_y: Quant,
             act: tuple[float | None, float | None]) -> bool:
        x = lw.runtime(n.inputs[0])
        if x is None:
            return False
        lw.add("QLut", [x.name], y, q_y, name=n.name, table=fn(n, lw.src, x.quant, q_y),
               _fn=_function_of(n, lw.src))
        return True

    return rule


def _function_of(n: Node, g: Graph) -> tuple:
    """What a table computes: (op, parameters), for writers that map it back to a builtin."""
    if n.op in ("Relu", "Clip"):
        bounds = _clip_bounds(n, g)
        return ("Relu", *(bounds or (None, None)))
    if n.op == "LeakyRelu":
        return ("LeakyRelu", float(n.attr("alpha", 0.01)))
    return (n.op,)


def _relu_table(n: Node, g: Graph, qi: Quant, qo: Quant) -> np.ndarray:
    bounds = _clip_bounds(n, g)
    if bounds is None:
        raise unsupported(n, "Clip bounds must be constants")
    return lut.relu_lut(qi, qo, bounds[0], bounds[1])


def _pool(kind: str) -> Rule:
    def rule(lw: _Lowering, n: Node, y: str, q_y: Quant,
             act: tuple[float | None, float | None]) -> bool:
        x = lw.runtime(n.inputs[0])
        shape = lw.src.shape(n.inputs[0])
        if x is None or len(shape) not in (3, 4):
            return False
        ceil = bool(n.attr("ceil_mode", 0))
        axes = window_axes(n, shape[2:], int_list(n.attr("kernel_shape")), pool=True,
                           ceil_mode=ceil)
        if any(a.dilation != 1 for a in axes) or (
                kind == "QAveragePool2D" and n.attr("count_include_pad", 0)
                and any(a.pad_begin or max(a.pad_end, _ceil_pad(a)) for a in axes)):
            return False  # the padding, or the overhang of a ceil_mode window, counts
        geo = _geometry(axes, ceil_pads=ceil)
        pt = lw.add(kind, [_to_nhwc(lw, x, shape, y)], lw.fresh(f"{y}_nhwc"), x.quant,
                    name=n.name, kernel=[a.kernel for a in as_2d(axes)],
                    strides=geo["strides"], pads=geo["pads"])
        _from_nhwc(lw, pt, y, x.quant, q_y, len(shape))
        return True

    return rule


def _move_to(lw: _Lowering, op: str, inputs: list[str], y: str, q_in: Quant, q_y: Quant,
             **attrs: object) -> None:
    """``op`` on codes; a Requantize follows when the output is quantized differently."""
    if q_in.same_as(q_y):
        lw.add(op, inputs, y, q_y, **attrs)
    else:
        mid = lw.add(op, inputs, lw.fresh(f"{y}_moved"), q_in, **attrs)
        lw.add("Requantize", [mid], y, q_y)


def _mean(lw: _Lowering, n: Node, y: str, q_y: Quant,
          act: tuple[float | None, float | None]) -> bool:
    x = lw.runtime(n.inputs[0])
    if x is None:
        return False
    rank = len(lw.src.shape(n.inputs[0]))
    if n.op == "GlobalAveragePool":
        axes, keep = list(range(2, rank)), 1
    else:
        v = n.attr("axes")
        if v is None and len(n.inputs) > 1 and n.inputs[1]:
            v = lw.src.const(n.inputs[1])
        if v is None:
            return False
        axes, keep = [norm_axis(a, rank) for a in int_list(v)], int(n.attr("keepdims", 1))
    lw.add("QMean", [x.name], y, q_y, name=n.name, axes=axes, keepdims=keep)
    return True


def _softmax(lw: _Lowering, n: Node, y: str, q_y: Quant,
             act: tuple[float | None, float | None]) -> bool:
    x = lw.runtime(n.inputs[0])
    rank = len(lw.src.shape(n.inputs[0]))
    axis = norm_axis(int(n.attr("axis", -1 if lw.src.opset >= 13 else 1)), rank)
    if x is None or axis != rank - 1 or q_y.size != 1:
        return False
    q_tfl = Quant.per_tensor(float(np.float32(1 / 256)), -128)  # what TFLite's kernel writes
    if q_y.same_as(q_tfl):
        lw.add("QSoftmax", [x.name], y, q_y, name=n.name, beta=1.0)
    else:  # e.g. onnxruntime's 1/255: TFLite's softmax, then requantized (<= 1 LSB more)
        mid = lw.add("QSoftmax", [x.name], lw.fresh(f"{y}_q256"), q_tfl, name=n.name, beta=1.0)
        lw.add("Requantize", [mid], y, q_y)
    return True


def _concat(lw: _Lowering, n: Node, y: str, q_y: Quant,
            act: tuple[float | None, float | None]) -> bool:
    ins = [lw.code(i) for i in n.inputs]
    if any(c is None or c.quant.size != 1 for c in ins):
        return False
    lw.add("QConcat", [c.name for c in ins if c], y, q_y, name=n.name,
           axis=int(n.attr("axis", 0)))
    return True


def _move(lw: _Lowering, n: Node, y: str, q_y: Quant,
          act: tuple[float | None, float | None]) -> bool:
    x = lw.runtime(n.inputs[0])
    if x is None or any(i in lw.codes for i in n.inputs[1:]):
        return False
    attrs = dict(n.attrs)
    _move_to(lw, n.op, [x.name, *n.inputs[1:]], y, x.quant, q_y, **attrs)
    return True


_FUSES_ACT = frozenset({"Conv", "Gemm", "MatMul", "Add", "Sub", "Mul"})

_RULES: dict[str, Rule] = {
    "Conv": _conv,
    "Gemm": _dense,
    "MatMul": _matmul,
    "Add": _binary("QAdd"),
    "Sub": _binary("QSub"),
    "Mul": _binary("QMul"),
    "Relu": _table(_relu_table),
    "Clip": _table(_relu_table),
    "LeakyRelu": _table(lambda n, g, qi, qo: lut.leaky_relu_lut(
        qi, qo, float(n.attr("alpha", 0.01)))),
    "Sigmoid": _table(lambda n, g, qi, qo: lut.logistic_lut(qi, qo)),
    "Tanh": _table(lambda n, g, qi, qo: lut.tanh_lut(qi, qo)),
    "HardSwish": _table(lambda n, g, qi, qo: lut.hard_swish_lut(qi, qo)),
    "MaxPool": _pool("QMaxPool2D"),
    "AveragePool": _pool("QAveragePool2D"),
    "GlobalAveragePool": _mean,
    "ReduceMean": _mean,
    "Softmax": _softmax,
    "Concat": _concat,
    **dict.fromkeys(_MOVES, _move),
}

#: float ops that have an int8 lowering (with the QDQ pattern around them)
INT8_PATTERNS = frozenset(_RULES)
#: ops whose following Relu/Clip becomes the int8 kernel's clamp
FUSES_ACTIVATION = _FUSES_ACT
#: ops that move codes: their output keeps the input's quantization
MOVES = _MOVES | {"MaxPool", "AveragePool"}
