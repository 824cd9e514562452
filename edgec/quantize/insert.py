"""Post-training quantization of a float graph into its QDQ form (ONNX semantics).

Every float tensor that an op with an int8 kernel reads or writes gets a
``QuantizeLinear → DequantizeLinear`` pair with per-tensor asymmetric int8 parameters from its
calibration range (the range widened to hold 0, TFLite's convention); the weights of Conv, Gemm
and MatMul become per-channel symmetric int8 constants (zero point 0, codes in [-127, 127])
behind a DequantizeLinear; constant operands of Add/Sub/Mul/Concat per-tensor int8. Biases stay
float here: ``passes.qdq.lower_qdq`` quantizes them to int32 at input scale x weight scale.
Ops that move values (Reshape, Transpose, pools...) keep their input's parameters; Softmax and
Sigmoid outputs take TFLite's fixed 1/256, -128, Tanh's 1/128, 0; a Relu or Clip right after a
Conv/Gemm/MatMul/Add is left to be the kernel's clamp. Tensors only float ops touch stay float
(the mixed-precision islands ``passes.qdq.float_islands`` lists once lowered).
"""

from __future__ import annotations

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.interpret import infer_shapes
from edgec.ops.scan import scan_spec
from edgec.passes.qdq import FUSES_ACTIVATION, INT8_PATTERNS, MOVES
from edgec.quantize.calibrate import Ranges

_FIXED = {"Softmax": (1.0 / 256.0, -128), "Sigmoid": (1.0 / 256.0, -128),
          "Tanh": (1.0 / 128.0, 0)}
_WEIGHTED = ("Conv", "Gemm", "MatMul")
_CONST_OPERANDS = ("Add", "Sub", "Mul", "Concat")


def activation_params(lo: float, hi: float, min_scale: float = 0.0) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor whose reals span [lo, hi] (0 kept
    exactly representable), the scale at least ``min_scale``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = float(np.float32(max((hi - lo) / 255.0, min_scale)))
    zp = int(np.clip(np.rint(-128.0 - lo / scale), -128, 127))
    return scale, zp


def weight_params(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes and scales of ``w``, per channel along ``axis`` (None: one scale)."""
    w = np.asarray(w, np.float32)
    if axis is None:
        amax = np.asarray([np.abs(w).max()], np.float32)
        shaped = amax.reshape(())
    else:
        red = tuple(k for k in range(w.ndim) if k != axis)
        amax = np.abs(w).max(axis=red).astype(np.float32)
        shaped = amax.reshape([-1 if k == axis else 1 for k in range(w.ndim)])
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    sshaped = np.where(shaped > 0, shaped / np.float32(127.0), np.float32(1.0))
    q = np.clip(np.rint(w / sshaped), -127, 127).astype(np.int8)
    return q, scale


def _weight_axis(n: Node, g: Graph) -> int | None:
    if n.op == "Conv":
        return 0
    if n.op == "Gemm":
        return 0 if n.attr("transB", 0) else 1
    return 1 if len(g.shape(n.inputs[1])) == 2 else None


Params = tuple[float, int]


class _Inserter:
    """The QDQ form of one graph: the model, or (``body=True``) a loop body whose inputs and
    outputs become int8 codes (the Scan carries codes; see :meth:`scan`). ``forced`` fixes the
    parameters of some tensors (a body's inputs)."""

    def __init__(self, g: Graph, ranges: Ranges, per_channel: bool,
                 forced: dict[str, Params] | None = None, body: bool = False):
        self.g = g
        self.ranges = ranges
        self.per_channel = per_channel
        self.forced = dict(forced or {})
        self.body = body
        self.params: dict[str, Params] = {}
        self.new_nodes: dict[str, list[Node]] = {}  # after the node that produces a tensor
        self.before: dict[str, list[Node]] = {}  # before a node
        self.head: list[Node] = []  # before every node (graph inputs, constants)
        #: Scan node name → (its body's QDQ form, parameters of the Scan's inputs, outputs)
        self.loops: dict[str, tuple[Graph, list[Params], list[Params]]] = {}

    def const(self, base: str, value: np.ndarray) -> str:
        return self.g.add_const(base, np.asarray(value))

    def qdq_nodes(self, src: str, dst: str, scale: object, zp: object,
                  axis: int | None = None) -> list[Node]:
        s = self.const(f"{src}_scale", np.asarray(scale, np.float32))
        z = self.const(f"{src}_zero_point", np.asarray(zp, np.int8))
        q = self.g.fresh_name(f"{src}_q")
        self.g.tensors[q] = Tensor(q, ())
        attrs = {} if axis is None else {"axis": axis}
        return [Node("QuantizeLinear", f"{src}_quantize", [src, s, z], [q], dict(attrs)),
                Node("DequantizeLinear", f"{src}_dequantize", [q, s, z], [dst], dict(attrs))]

    def loop_ok(self, n: Node) -> bool:
        """Scan ``n`` gets an int8 body: calibrated, float32 at every body input and output."""
        body = n.attrs.get("body") if n.op == "Scan" else None
        if not isinstance(body, Graph) or n.name not in self.ranges.bodies:
            return False
        br = self.ranges.bodies[n.name]
        return all(body.tensor(t).dtype == "float32" and body.const(t) is None and t in br.lo
                   for t in [*body.inputs, *body.outputs])

    def plan(self) -> set[str]:
        """The float tensors that get a Quantize/Dequantize pair."""
        g = self.g
        cons = g.consumers()
        prod = g.producers()
        absorbed: set[str] = set()  # conv outputs whose Relu becomes the clamp
        for n in g.nodes:
            c = cons.get(n.outputs[0], []) if n.outputs else []
            if (n.op in FUSES_ACTIVATION and len(c) == 1 and c[0].op in ("Relu", "Clip")
                    and n.outputs[0] not in g.outputs):
                absorbed.add(n.outputs[0])
        # an int8 loop's outputs are dequantized where the Scan writes them (see run)
        loop_outs = {o for n in g.nodes if self.loop_ok(n) for o in n.outputs if o}
        boundary = set(g.inputs) | set(g.outputs) if self.body else set()
        chosen: set[str] = set()
        for name, t in g.tensors.items():
            if t.dtype != "float32" or t.is_const or name in loop_outs:
                continue
            if name not in self.ranges.lo:
                continue
            if name in boundary:
                chosen.add(name)
                continue
            if name in absorbed:
                continue
            p = prod.get(name)
            made = p is not None and p.op in INT8_PATTERNS
            used = any(c.op in INT8_PATTERNS for c in cons.get(name, []))
            if made or used:
                chosen.add(name)
        return chosen

    def range_params(self, name: str) -> Params:
        v = self.g.const(name)
        if v is not None and v.size:
            return activation_params(float(v.min()), float(v.max()))
        return activation_params(self.ranges.lo.get(name, 0.0), self.ranges.hi.get(name, 0.0))

    def assign(self, chosen: set[str]) -> None:
        """Parameters of the chosen tensors, in graph order (moves inherit their input's;
        loops are quantized as they are met)."""
        g = self.g
        prod = g.producers()

        def one(name: str) -> Params:
            p = prod.get(name)
            if name in self.forced:
                return self.forced[name]
            if p is not None and p.op in _FIXED:
                return _FIXED[p.op]
            if p is not None and p.op in MOVES and p.inputs[0] in self.params:
                return self.params[p.inputs[0]]
            return activation_params(self.ranges.lo[name], self.ranges.hi[name],
                                     self.add_sub_min_scale(p, prod))

        for name in g.inputs:
            if name in chosen:
                self.params[name] = one(name)
        for n in g.nodes:
            if self.loop_ok(n):
                self.scan(n)
            for o in n.outputs:
                if o in chosen:
                    self.params[o] = one(o)

    def add_sub_min_scale(self, p: Node | None, prod: dict[str, Node]) -> float:
        """The smallest output scale of an int8 Add/Sub (``p``, or the Relu/Clip it fuses):
        TFLite's output rescale ``2·max(s1, s2) / (2^20·s_out)`` must be below 1 (its ADD
        aborts, its SUB gives wrong codes, edgec's TFLite front-end refuses it), as a range
        that cancels (``x - x``) would give. The floor makes it 1/2: steps finer than
        ``2·max(s1, s2) / 2^20`` carry nothing, the inputs are rescaled to that grid first."""
        if p is not None and p.op in ("Relu", "Clip") and p.inputs[0] not in self.params:
            p = prod.get(p.inputs[0])
        if p is None or p.op not in ("Add", "Sub"):
            return 0.0
        scales = []
        for i in p.inputs[:2]:
            v = self.g.const(i)
            if i in self.params:
                scales.append(self.params[i][0])
            elif v is not None and v.dtype == np.float32 and v.size:
                scales.append(activation_params(float(v.min()), float(v.max()))[0])
        return 2.0 * max(scales) / (1 << 19) if scales else 0.0

    def scan(self, n: Node) -> None:
        """Quantize loop ``n``'s body. The Scan carries int8 codes: a scan input keeps the
        parameters its sequence has outside the loop, a state one scale and zero point for the
        body's input and output (TFLite's int8 recurrent kernels do the same), so no step
        requantizes it. The state's parameters are those the body's rules give its next value
        (Tanh's 1/128, a move's input's, else the range of the state over the initial value and
        every iteration); the body's input takes them, which may change what its moves inherit,
        so this repeats until nothing changes."""
        s = scan_spec(n, self.g)
        body = s.body
        br = self.ranges.bodies[n.name]
        br = Ranges(dict(br.lo), dict(br.hi), br.bodies)
        forced: dict[str, Params] = {}
        for k in range(s.n_scan_in):
            t = n.inputs[s.n_state + k]
            forced[body.inputs[s.n_state + k]] = self.params.get(t) or self.range_params(t)
        for k in range(s.n_state):
            i, o, init = body.inputs[k], body.outputs[k], n.inputs[k]
            v = self.g.const(init)
            ilo, ihi = ((float(v.min()), float(v.max())) if v is not None and v.size else
                        (self.ranges.lo.get(init, 0.0), self.ranges.hi.get(init, 0.0)))
            lo = min(br.lo[i], br.lo[o], ilo)
            hi = max(br.hi[i], br.hi[o], ihi)
            br.lo[i] = br.lo[o] = lo
            br.hi[i] = br.hi[o] = hi
        for _ in range(8):
            inner = _Inserter(body.copy(), br, self.per_channel, forced, body=True)
            inner.assign(inner.plan())
            nxt = dict(forced)
            for k in range(s.n_state):
                nxt[body.inputs[k]] = inner.params[body.outputs[k]]
            if nxt == forced:
                break
            forced = nxt
        else:
            raise EdgecError(f"node '{n.name}' (Scan): the loop state's quantization does not "
                             f"settle")
        qbody = _Inserter(body.copy(), br, self.per_channel, forced, body=True).run()
        ins = [forced[t] for t in body.inputs]
        outs = [inner.params[t] for t in body.outputs]
        self.loops[n.name] = (qbody, ins, outs)
        for o, p in zip(n.outputs, outs, strict=False):
            if o:
                self.params[o] = p

    def run(self) -> Graph:
        g = self.g
        chosen = self.plan()
        prod = g.producers()
        self.assign(chosen)
        order = [i for i in g.inputs if i in chosen] + [o for n in g.nodes for o in n.outputs
                                                        if o in chosen]
        renames: dict[str, str] = {}
        for name in order:
            scale, zp = self.params[name]
            if name in g.inputs:
                dq = g.fresh_name(f"{name}_dq")
                g.tensors[dq] = Tensor(dq, ())
                renames[name] = dq
                self.head += self.qdq_nodes(name, dq, scale, zp)
            else:
                raw = g.fresh_name(f"{name}_float")
                g.tensors[raw] = Tensor(raw, ())
                p = prod[name]
                p.outputs = [raw if o == name else o for o in p.outputs]
                self.new_nodes.setdefault(p.name, []).extend(self.qdq_nodes(raw, name, scale, zp))
        for n in g.nodes:
            n.inputs = [renames.get(i, i) for i in n.inputs]
            if n.op in _WEIGHTED:
                self.weights(n)
            if n.op in _CONST_OPERANDS:
                self.const_operands(n)
            if n.name in self.loops:
                self.int8_loop(n)
        nodes = list(self.head)
        for n in g.nodes:
            nodes += self.before.get(n.name, [])
            nodes.append(n)
            nodes += self.new_nodes.get(n.name, [])
        g.nodes = nodes
        if self.body:
            self.int8_boundary(renames)
        g.toposort()
        infer_shapes(g)
        return g

    def int8_loop(self, n: Node) -> None:
        """Scan ``n`` reads and writes codes: a QuantizeLinear before each input, a
        DequantizeLinear after each output (lower_qdq makes them Identity/Requantize)."""
        qbody, ins, outs = self.loops[n.name]
        n.attrs["body"] = qbody
        for k, (t, (scale, zp)) in enumerate(zip(n.inputs, ins, strict=True)):
            s = self.const(f"{t}_scale", np.float32(scale))
            z = self.const(f"{t}_zero_point", np.int8(zp))
            q = self.g.fresh_name(f"{t}_codes")
            self.g.tensors[q] = Tensor(q, ())
            self.before.setdefault(n.name, []).append(
                Node("QuantizeLinear", f"{n.name}_in{k}_quantize", [t, s, z], [q]))
            n.inputs[k] = q
        for k, (y, (scale, zp)) in enumerate(zip(n.outputs, outs, strict=False)):
            if not y:
                continue
            s = self.const(f"{y}_scale", np.float32(scale))
            z = self.const(f"{y}_zero_point", np.int8(zp))
            q = self.g.fresh_name(f"{y}_codes")
            self.g.tensors[q] = Tensor(q, ())
            n.outputs[k] = q
            self.new_nodes.setdefault(n.name, []).append(
                Node("DequantizeLinear", f"{n.name}_out{k}_dequantize", [q, s, z], [y]))

    def int8_boundary(self, renames: dict[str, str]) -> None:
        """A loop body's inputs and outputs become the codes of their Quantize/Dequantize
        pairs: the body reads int8 inputs and writes int8 outputs."""
        g = self.g
        quantize = {n.inputs[0]: n for n in g.nodes if n.op == "QuantizeLinear"}
        drop: set[int] = set()
        codes: dict[str, str] = {}
        for k, x in enumerate(g.inputs):
            qn = quantize[x]
            drop.add(id(qn))
            q = qn.outputs[0]
            scale, zp = self.params[x]
            g.tensors[q] = Tensor(q, g.shape(x), "int8", quant=Quant.per_tensor(scale, zp))
            del g.tensors[x]
            g.inputs[k] = codes[x] = q
        for k, o in enumerate(g.outputs):
            if o in codes:  # a state carried unchanged
                g.outputs[k] = codes[o]
                continue
            raw = next(n for n in g.nodes if n.op == "DequantizeLinear" and n.outputs[0] == o)
            g.outputs[k] = raw.inputs[0]
        g.nodes = [n for n in g.nodes if id(n) not in drop]
    def weights(self, n: Node) -> None:
        name = n.inputs[1] if len(n.inputs) > 1 else ""
        w = self.g.const(name)
        if w is None or w.dtype != np.float32:
            return
        axis = _weight_axis(n, self.g) if self.per_channel else None
        q, scale = weight_params(w, axis)
        qc = self.const(f"{name}_int8", q)
        dq = self.g.fresh_name(f"{name}_dq")
        self.g.tensors[dq] = Tensor(dq, ())
        s = self.const(f"{name}_scale", scale if axis is not None else scale.reshape(()))
        z = self.const(f"{name}_zero_point",
                       np.zeros(scale.shape if axis is not None else (), np.int8))
        attrs = {} if axis is None else {"axis": axis}
        self.head.append(Node("DequantizeLinear", f"{name}_dequantize", [qc, s, z], [dq], attrs))
        n.inputs[1] = dq

    def const_operands(self, n: Node) -> None:
        for k, name in enumerate(n.inputs):
            v = self.g.const(name)
            if v is None or v.dtype != np.float32 or not v.size:
                continue
            scale, zp = activation_params(float(v.min()), float(v.max()))
            q = np.clip(np.rint(v / np.float32(scale)) + zp, -128, 127).astype(np.int8)
            qc = self.const(f"{name}_int8", q)
            dq = self.g.fresh_name(f"{name}_dq")
            self.g.tensors[dq] = Tensor(dq, ())
            s = self.const(f"{name}_scale", np.float32(scale))
            z = self.const(f"{name}_zero_point", np.int8(zp))
            self.head.append(Node("DequantizeLinear", f"{name}_dequantize", [qc, s, z], [dq]))
            n.inputs[k] = dq


def insert_qdq(g: Graph, ranges: Ranges, per_channel: bool = True) -> Graph:
    """The QDQ form of float graph ``g`` for the calibration ``ranges``."""
    if any(n.op in ("QuantizeLinear", "DequantizeLinear") or any(
            g.tensor(o).dtype == "int8" for o in n.outputs if o) for n in g.nodes):
        raise EdgecError(f"{g.source or g.name}: the model is already quantized; quantize a "
                         f"float model")
    return _Inserter(g.copy(), ranges, per_channel).run()
