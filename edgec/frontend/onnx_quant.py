"""onnxruntime's QOperator format → QDQ, before the ONNX import.

``quantize_static(..., quant_format=QuantFormat.QOperator)`` writes integer operators
(QLinearConv, QLinearMatMul, and from the ``com.microsoft`` domain QGemm, QLinearAdd,
QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat, QLinearSigmoid,
QLinearLeakyRelu) whose
tensors between layers are codes, and runs data movement (MaxPool, Flatten, Reshape...) on those
codes directly. :func:`expand_qoperators` rewrites each integer operator as
``DequantizeLinear → float op → QuantizeLinear`` (the QDQ form) and wraps data movement on codes
the same way, so the graph is standard ONNX with QDQ semantics that ``passes.qdq.lower_qdq``
folds into edgec's int8 ops. Graphs without these operators are returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.errors import UnsupportedOpError

_MS = "com.microsoft"
#: data movement that onnxruntime runs on codes (input 0 codes → output codes, same params)
_CODE_MOVES = frozenset({"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                         "Identity", "Slice", "Gather", "Split", "Resize"})

_POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides",
               "channels_last")


class _Expander:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[onnx.TensorProto] = []
        self.qparams: dict[str, tuple[str, str]] = {}  # code tensor → (scale, zero point)
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__qdq{self.count}"

    def dq(self, x: str, scale: str, zp: str, axis: int | None = None) -> str:
        y = self.fresh(f"{x}_dq")
        attrs = {"axis": axis} if axis is not None else {}
        self.nodes.append(helper.make_node("DequantizeLinear", [x, scale, zp], [y],
                                           name=self.fresh("dq"), **attrs))
        return y

    def q(self, x: str, y: str, scale: str, zp: str) -> None:
        self.nodes.append(helper.make_node("QuantizeLinear", [x, scale, zp], [y],
                                           name=self.fresh("q")))
        self.qparams[y] = (scale, zp)

    def value(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.new_inits.append(numpy_helper.from_array(arr, name))
        return name

    def weight_axis(self, scale: str, axis: int) -> int | None:
        return axis if scale in self.inits and self.value(scale).size > 1 else None

    def bias(self, b: str, x_scale: str, w_scale: str, axis: int = 0) -> str:
        """An int32 bias dequantized at scale x_scale * w_scale."""
        if not b:
            return ""
        scale = (self.value(x_scale).astype(np.float32)
                 * self.value(w_scale).astype(np.float32)).reshape(-1).astype(np.float32)
        s = self.const(f"{b}_scale", scale if scale.size > 1 else scale.reshape(()))
        return self.dq(b, s, "", axis if scale.size > 1 else None)

    def float_op(self, n: onnx.NodeProto, op: str, inputs: list[str], y: str, scale: str,
                 zp: str, domain_attrs: bool = True) -> None:
        yf = self.fresh(f"{y}_f")
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute} if domain_attrs else {}
        self.nodes.append(helper.make_node(op, inputs, [yf], name=n.name or self.fresh(op),
                                           **attrs))
        self.q(yf, y, scale, zp)

    # -- the integer operators -----------------------------------------------------------------
    def qlinear_conv(self, n: onnx.NodeProto) -> None:
        i = list(n.input) + [""] * (9 - len(n.input))
        x = self.dq(i[0], i[1], i[2])
        w = self.dq(i[3], i[4], i[5], self.weight_axis(i[4], 0))
        self.float_op(n, "Conv", [x, w] + ([self.bias(i[8], i[1], i[4])] if i[8] else []),
                      n.output[0], i[6], i[7])

    def qlinear_matmul(self, n: onnx.NodeProto) -> None:
        i = list(n.input)
        a = self.dq(i[0], i[1], i[2])
        b = self.dq(i[3], i[4], i[5], self.weight_axis(i[4], 1))
        self.float_op(n, "MatMul", [a, b], n.output[0], i[6], i[7])

    def qgemm(self, n: onnx.NodeProto) -> None:
        i = list(n.input) + [""] * (9 - len(n.input))
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        a = self.dq(i[0], i[1], i[2])
        b = self.dq(i[3], i[4], i[5], self.weight_axis(i[4], 0 if attrs.get("transB") else 1))
        ins = [a, b] + ([self.bias(i[6], i[1], i[4])] if i[6] else [])
        if not i[7]:  # float output
            self.nodes.append(helper.make_node("Gemm", ins, [n.output[0]], name=n.name, **attrs))
            return
        self.float_op(n, "Gemm", ins, n.output[0], i[7], i[8])

    def binary(self, op: str) -> Callable[[onnx.NodeProto], None]:
        def expand(n: onnx.NodeProto) -> None:
            i = list(n.input)
            a, b = self.dq(i[0], i[1], i[2]), self.dq(i[3], i[4], i[5])
            self.float_op(n, op, [a, b], n.output[0], i[6], i[7], domain_attrs=False)

        return expand

    def unary(self, op: str, keep: tuple[str, ...] = ()) -> Callable[[onnx.NodeProto], None]:
        def expand(n: onnx.NodeProto) -> None:
            i = list(n.input) + [""] * (5 - len(n.input))
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute
                     if a.name in keep}
            if attrs.get("channels_last"):
                raise UnsupportedOpError(f"node '{n.name}' ({n.op_type}): channels_last=1 is "
                                         f"not supported")
            x = self.dq(i[0], i[1], i[2])
            yf = self.fresh(f"{n.output[0]}_f")
            self.nodes.append(helper.make_node(op, [x], [yf], name=n.name or self.fresh(op),
                                               **{k: v for k, v in attrs.items()
                                                  if k != "channels_last"}))
            self.q(yf, n.output[0], i[3], i[4])

        return expand

    def qlinear_average_pool(self, n: onnx.NodeProto) -> None:
        attrs = {a.name: a.i for a in n.attribute if a.name in ("ceil_mode", "count_include_pad")}
        if attrs.get("ceil_mode") and attrs.get("count_include_pad"):
            raise UnsupportedOpError(
                f"node '{n.name}' (QLinearAveragePool): ceil_mode=1 with count_include_pad=1 is "
                f"not supported (onnxruntime's QLinearAveragePool then divides windows that hang "
                f"over the end by the whole kernel, its AveragePool by the taps inside)")
        self.unary("AveragePool", _POOL_ATTRS)(n)

    def qlinear_concat(self, n: onnx.NodeProto) -> None:
        i = list(n.input)
        ins = [self.dq(i[k], i[k + 1], i[k + 2]) for k in range(2, len(i), 3)]
        self.float_op(n, "Concat", ins, n.output[0], i[0], i[1])

    def code_move(self, n: onnx.NodeProto) -> None:
        scale, zp = self.qparams[n.input[0]]
        x = self.dq(n.input[0], scale, zp)
        outs = [o for o in n.output if o]
        yfs = [self.fresh(f"{o}_f") for o in outs]
        self.nodes.append(helper.make_node(n.op_type, [x, *n.input[1:]], yfs, name=n.name,
                                           domain=n.domain,
                                           **{a.name: helper.get_attribute_value(a)
                                              for a in n.attribute}))
        for yf, o in zip(yfs, outs, strict=True):
            self.q(yf, o, scale, zp)

    def run(self) -> onnx.ModelProto:
        table: dict[tuple[str, str], Callable[[onnx.NodeProto], None]] = {
            ("", "QLinearConv"): self.qlinear_conv,
            ("", "QLinearMatMul"): self.qlinear_matmul,
            (_MS, "QGemm"): self.qgemm,
            (_MS, "QLinearAdd"): self.binary("Add"),
            (_MS, "QLinearMul"): self.binary("Mul"),
            (_MS, "QLinearGlobalAveragePool"): self.unary("GlobalAveragePool",
                                                          ("channels_last",)),
            (_MS, "QLinearAveragePool"): self.qlinear_average_pool,
            (_MS, "QLinearSigmoid"): self.unary("Sigmoid"),
            (_MS, "QLinearLeakyRelu"): self.unary("LeakyRelu", ("alpha",)),
            (_MS, "QLinearConcat"): self.qlinear_concat,
        }
        for n in self.model.graph.node:
            domain = "" if n.domain in ("", "ai.onnx") else n.domain
            fn = table.get((domain, n.op_type))
            if fn is not None:
                fn(n)
            elif n.op_type in _CODE_MOVES and n.input and n.input[0] in self.qparams:
                self.code_move(n)
            else:
                self.nodes.append(n)
                if n.op_type == "QuantizeLinear" and len(n.input) == 3:
                    self.qparams[n.output[0]] = (n.input[1], n.input[2])
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        del out.graph.node[:]
        out.graph.node.extend(self.nodes)
        out.graph.initializer.extend(self.new_inits)
        return out


def has_qoperators(model: onnx.ModelProto) -> bool:
    ops = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
           "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
           "QLinearConcat"}
    return any(n.op_type in ops for n in model.graph.node)


def expand_qoperators(model: onnx.ModelProto) -> onnx.ModelProto:
    """The QDQ form of a QOperator-format model (the model itself when it has none)."""
    if not has_qoperators(model):
        return model
    return _Expander(model).run()
