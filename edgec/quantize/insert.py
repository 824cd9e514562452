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
from edgec.ir import Graph, Node, Tensor
from edgec.ops.interpret import infer_shapes
from edgec.passes.qdq import FUSES_ACTIVATION, INT8_PATTERNS, MOVES
from edgec.quantize.calibrate import Ranges

_FIXED = {"Softmax": (1.0 / 256.0, -128), "Sigmoid": (1.0 / 256.0, -128),
          "Tanh": (1.0 / 128.0, 0)}
_WEIGHTED = ("Conv", "Gemm", "MatMul")
_CONST_OPERANDS = ("Add", "Sub", "Mul", "Concat")


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric int8 tensor whose reals span [lo, hi] (0 kept
    exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = float(np.float32((hi - lo) / 255.0))
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


class _Inserter:
    def __init__(self, g: Graph, ranges: Ranges, per_channel: bool):
        self.g = g
        self.ranges = ranges
        self.per_channel = per_channel
        self.params: dict[str, tuple[float, int]] = {}
        self.new_nodes: dict[str, list[Node]] = {}  # after the node that produces a tensor
        self.head: list[Node] = []  # before every node (graph inputs, constants)

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
        chosen: set[str] = set()
        for name, t in g.tensors.items():
            if t.dtype != "float32" or t.is_const or name in absorbed:
                continue
            if name not in self.ranges.lo:
                continue
            p = prod.get(name)
            made = p is not None and p.op in INT8_PATTERNS
            used = any(c.op in INT8_PATTERNS for c in cons.get(name, []))
            if made or used:
                chosen.add(name)
        return chosen

    def run(self) -> Graph:
        g = self.g
        chosen = self.plan()
        prod = g.producers()
        # parameters in graph order (moves inherit their input's)
        order = [i for i in g.inputs if i in chosen] + [o for n in g.nodes for o in n.outputs
                                                        if o in chosen]
        for name in order:
            p = prod.get(name)
            if p is not None and p.op in _FIXED:
                self.params[name] = _FIXED[p.op]
            elif p is not None and p.op in MOVES and p.inputs[0] in self.params:
                self.params[name] = self.params[p.inputs[0]]
            else:
                self.params[name] = activation_params(self.ranges.lo[name], self.ranges.hi[name])
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
        nodes = list(self.head)
        for n in g.nodes:
            nodes.append(n)
            nodes += self.new_nodes.get(n.name, [])
        g.nodes = nodes
        g.toposort()
        infer_shapes(g)
        return g

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
