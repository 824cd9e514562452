"""A lowered int8 graph as a ``.tflite`` flatbuffer (``edgec quantize -o model_int8.tflite``).

Each int8 op of docs/int8.md is the TFLite builtin whose reference kernel it reproduces, so the
TFLite interpreter runs the file to the same bytes as edgec's C: QConv2D → CONV_2D,
QDepthwiseConv2D → DEPTHWISE_CONV_2D, QFullyConnected → FULLY_CONNECTED, pools, ADD/SUB/MUL,
MEAN, SOFTMAX, QSquaredDifference → SQUARED_DIFFERENCE, QRsqrt → RSQRT, CONCATENATION
(inputs quantized otherwise than the output go through a QUANTIZE first), QBatchMatMul →
BATCH_MATMUL (a clamp as the activation builtin after it), activation tables → the
activation builtin they model (RELU, RELU6, LOGISTIC, TANH, LEAKY_RELU,
HARD_SWISH), Quantize/Requantize → QUANTIZE, Dequantize →
DEQUANTIZE, Transpose → TRANSPOSE, views → RESHAPE, Slice/Split → SLICE/SPLIT_V, an int8 loop
(Scan) → WHILE with a condition and a body subgraph (``tflite_loops.write_loop``). Explicit
padding other than SAME/VALID becomes a PAD (filled with the zero point). A clamp becomes the
fused activation with exactly its range.

A mixed-precision graph's float islands (ops with no int8 kernel, between Dequantize and
Quantize) are written as float32 builtins by ``tflite_float.write_float`` (its docstring lists
them: elementwise, reductions, softmax, dense, LayerNormalization as a chain, 2-D Conv and
pools...). A float op with no TFLite form (GRU, LSTM, 1-D or 3-D Conv...) is a one-line error
naming the node that says to write ``.onnx`` (QDQ) instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.tflite.builder import Subgraph, TflBuilder
from edgec.ir import Graph, Node
from edgec.ops import get_op
from edgec.ops.int8.fixedpoint import activation_range
from edgec.quantize.tflite_float import write_float
from edgec.quantize.tflite_loops import write_loop, write_moves

_FUSED = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
_TABLES = {("Relu", 0.0, None): "RELU", ("Relu", 0.0, 6.0): "RELU6",
           ("Relu", -1.0, 1.0): "RELU_N1_TO_1", ("Relu", 0.0, 1.0): "RELU_0_TO_1"}


class _Writer:
    def __init__(self, g: Graph, sg: Subgraph | None = None,
                 io: dict[int, tuple[list[int], list[int]]] | None = None):
        self.g = g
        if sg is None:
            sg = TflBuilder()
            sg.description = "edgec quantize"
        self.b = sg
        self.index: dict[str, int] = {}
        self.alias: dict[str, str] = {}
        #: inputs and outputs of every subgraph past the main one (WHILE cond/body), by id
        self.io = {} if io is None else io

    def child(self, g: Graph, sg: Subgraph) -> _Writer:
        """A writer for loop body ``g`` into subgraph ``sg`` (edgec.quantize.tflite_loops)."""
        return _Writer(g, sg, self.io)

    def register(self, sg: Subgraph, inputs: list[int], outputs: list[int]) -> None:
        self.io[id(sg)] = (inputs, outputs)

    def where(self, n: Node) -> str:
        return f"{self.g.source or self.g.name}: node '{n.name}' ({n.op})"

    def t(self, name: str) -> int:
        name = self.alias.get(name, name)
        if not name:
            return -1
        if name in self.index:
            return self.index[name]
        t = self.g.tensor(name)
        q = t.quant
        quant = None if q is None else (q.scale, q.zero_point, q.axis or 0)
        if t.data is not None:
            k = self.b.const(name, t.data, quant=quant)
        else:
            k = self.b.tensor(name, t.shape, t.dtype, quant=quant)
        self.index[name] = k
        return k

    def i32(self, base: str, values: Any) -> int:
        return self.b.const(f"{base}", np.asarray(values, np.int32))

    def fused(self, n: Node) -> int:
        lo, hi = int(n.attr("act_min", -128)), int(n.attr("act_max", 127))
        q = self.g.quant(n.outputs[0])
        assert q is not None
        s, zp = q.scalar()
        for name, code in _FUSED.items():
            if activation_range(name, s, zp) == (lo, hi):
                return code
        raise EdgecError(f"{self.where(n)}: clamp [{lo}, {hi}] is no TFLite fused activation")

    def padding(self, n: Node, x: str, kh: int, kw: int) -> tuple[str, int]:
        """(x or its PAD, TFLite padding) for the node's explicit pads."""
        pads = [int(p) for p in n.attr("pads", [0, 0, 0, 0])]
        _, h, w, _ = self.g.shape(x)
        sh, sw = (int(v) for v in n.attr("strides", [1, 1]))
        dh, dw = (int(v) for v in n.attr("dilations", [1, 1]))
        if not any(pads):
            return x, 1  # VALID
        same = []
        for size, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            same.append((total // 2, total - total // 2))
        if pads == [same[0][0], same[1][0], same[0][1], same[1][1]]:
            return x, 0  # SAME
        if n.op == "QMaxPool2D":
            raise EdgecError(f"{self.where(n)}: pads {pads} are neither SAME nor VALID")
        q = self.g.quant(x)
        assert q is not None
        padded = f"{x}_padded"
        shape = (1, h + pads[0] + pads[2], w + pads[1] + pads[3], self.g.shape(x)[3])
        k = self.b.tensor(padded, shape, "int8", quant=(q.scale, q.zero_point, 0))
        spec = self.i32(f"{padded}_pads", [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]],
                                           [0, 0]])
        self.b.op("PAD", [self.t(x), spec], [k], "PadOptions")
        self.index[padded] = k
        return padded, 1

    def node(self, n: Node) -> None:
        op, ins, y = n.op, n.inputs, n.outputs[0]
        if op == "Identity":
            self.alias[y] = self.alias.get(ins[0], ins[0])
            return
        if op in ("Quantize", "Requantize"):
            self.b.op("QUANTIZE", [self.t(ins[0])], [self.t(y)])
        elif op == "Dequantize":
            self.b.op("DEQUANTIZE", [self.t(ins[0])], [self.t(y)])
        elif op == "Transpose":
            perm = self.i32(f"{y}_perm", n.attr("perm"))
            self.b.op("TRANSPOSE", [self.t(ins[0]), perm], [self.t(y)], "TransposeOptions")
        elif get_op(n).view:
            shape = list(self.g.shape(y))
            self.b.op("RESHAPE", [self.t(ins[0]), self.i32(f"{y}_shape", shape)], [self.t(y)],
                      "ReshapeOptions", newShape=np.asarray(shape, np.int32))
        elif op in ("QConv2D", "QDepthwiseConv2D"):
            _, kh, kw, _ = self.g.shape(ins[1])
            x, pad = self.padding(n, ins[0], kh, kw)
            sh, sw = (int(v) for v in n.attr("strides", [1, 1]))
            dh, dw = (int(v) for v in n.attr("dilations", [1, 1]))
            fields = dict(padding=pad, strideH=sh, strideW=sw, dilationHFactor=dh,
                          dilationWFactor=dw, fusedActivationFunction=self.fused(n))
            if op == "QConv2D":
                self.b.op("CONV_2D", [self.t(x), self.t(ins[1]), self.t(ins[2])], [self.t(y)],
                          "Conv2DOptions", **fields)
            else:
                self.b.op("DEPTHWISE_CONV_2D", [self.t(x), self.t(ins[1]), self.t(ins[2])],
                          [self.t(y)], "DepthwiseConv2DOptions",
                          depthMultiplier=int(n.attr("depth_multiplier", 1)), **fields)
        elif op == "QFullyConnected":
            self.b.op("FULLY_CONNECTED", [self.t(ins[0]), self.t(ins[1]),
                                          self.t(ins[2] if len(ins) > 2 else "")],
                      [self.t(y)], "FullyConnectedOptions",
                      fusedActivationFunction=self.fused(n),
                      keepNumDims=len(self.g.shape(y)) != 2)
        elif op in ("QMaxPool2D", "QAveragePool2D"):
            kh, kw = (int(v) for v in n.attr("kernel"))
            x, pad = self.padding(n, ins[0], kh, kw)
            sh, sw = (int(v) for v in n.attr("strides", [1, 1]))
            self.b.op("MAX_POOL_2D" if op == "QMaxPool2D" else "AVERAGE_POOL_2D",
                      [self.t(x)], [self.t(y)], "Pool2DOptions", padding=pad, strideH=sh,
                      strideW=sw, filterHeight=kh, filterWidth=kw,
                      fusedActivationFunction=self.fused(n))
        elif op in ("QAdd", "QSub", "QMul"):
            name = {"QAdd": "ADD", "QSub": "SUB", "QMul": "MUL"}[op]
            self.b.op(name, [self.t(ins[0]), self.t(ins[1])], [self.t(y)],
                      f"{name.capitalize()}Options", fusedActivationFunction=self.fused(n))
        elif op == "QMean":
            axes = self.i32(f"{y}_axes", n.attr("axes"))
            self.b.op("MEAN", [self.t(ins[0]), axes], [self.t(y)], "ReducerOptions",
                      keepDims=bool(n.attr("keepdims", 1)))
        elif op in ("QSquaredDifference", "QRsqrt"):
            name = "SQUARED_DIFFERENCE" if op == "QSquaredDifference" else "RSQRT"
            self.b.op(name, [self.t(i) for i in ins], [self.t(y)])
        elif op == "QSoftmax":
            self.b.op("SOFTMAX", [self.t(ins[0])], [self.t(y)], "SoftmaxOptions",
                      beta=float(n.attr("beta", 1.0)))
        elif op == "QConcat":
            axis = int(n.attr("axis", 0))
            axis = axis + len(self.g.shape(y)) if axis < 0 else axis
            self.b.op("CONCATENATION", [self.same_quant(i, y) for i in ins], [self.t(y)],
                      "ConcatenationOptions", axis=axis)
        elif op == "QBatchMatMul":
            self.batch_matmul(n)
        elif op == "QLut":
            self.table(n)
        elif op == "Scan":
            write_loop(self, n)
        elif not (write_moves(self, n) or write_float(self, n)):
            raise EdgecError(f"{self.where(n)}: no TFLite builtin for this "
                             f"{self.g.tensor(y).dtype} op; write the model as .onnx "
                             f"(QDQ) instead")

    def same_quant(self, x: str, like: str) -> int:
        """Tensor ``x``, or a QUANTIZE of it to ``like``'s scale and zero point when they differ
        (TFLite's int8 CONCATENATION takes inputs quantized as its output only; QConcat
        requantizes the others with Requantize's arithmetic, which is QUANTIZE's)."""
        qx, qy = self.g.quant(x), self.g.quant(like)
        if qx is None or qy is None or qx.same_as(qy):
            return self.t(x)
        name = f"{x}_as_{like}"
        if name not in self.index:
            self.index[name] = self.b.tensor(name, self.g.shape(x), self.g.tensor(x).dtype,
                                             quant=(qy.scale, qy.zero_point, qy.axis or 0))
            self.b.op("QUANTIZE", [self.t(x)], [self.index[name]])
        return self.index[name]

    def batch_matmul(self, n: Node) -> None:
        """QBatchMatMul → BATCH_MATMUL (adjX/adjY as the node's); BATCH_MATMUL has no fused
        activation, so a clamp (a Relu after an ONNX MatMul) becomes its own builtin after it."""
        x0, x1, y = (self.t(i) for i in (*n.inputs[:2], n.outputs[0]))
        code = self.fused(n)
        out = y
        if code:
            q = self.g.quant(n.outputs[0])
            assert q is not None
            out = self.b.tensor(f"{n.outputs[0]}_unclamped", self.g.shape(n.outputs[0]), "int8",
                                quant=(q.scale, q.zero_point, 0))
        self.b.op("BATCH_MATMUL", [x0, x1], [out], "BatchMatMulOptions",
                  adjX=bool(n.attr("adj_x", 0)), adjY=bool(n.attr("adj_y", 0)))
        if code:
            name = next(k for k, v in _FUSED.items() if v == code)
            self.b.op(name, [out], [y])

    def table(self, n: Node) -> None:
        fn = tuple(n.attr("_fn") or ())
        x, y = self.t(n.inputs[0]), self.t(n.outputs[0])
        if fn[:1] == ("LeakyRelu",):
            self.b.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", alpha=float(fn[1]))
            return
        name = {("Sigmoid",): "LOGISTIC", ("Tanh",): "TANH",
                ("HardSwish",): "HARD_SWISH"}.get(fn) or _TABLES.get(fn)
        if name is None:
            raise EdgecError(f"{self.where(n)}: this activation table ({fn or 'unknown'}) has "
                             f"no TFLite builtin")
        self.b.op(name, [x], [y])

    def run(self) -> bytes:
        g = self.g
        ins = [self.t(i) for i in g.inputs]
        for n in g.nodes:
            self.node(n)
        b = self.b
        assert isinstance(b, TflBuilder)
        return b.build(ins, [self.t(o) for o in g.outputs],
                       io=[self.io[id(sg)] for sg in b.extra])


def to_tflite(g: Graph) -> bytes:
    """The lowered int8 graph ``g`` (``edgec.quantize.QuantizedModel.lowered``) as .tflite."""
    return _Writer(g).run()
