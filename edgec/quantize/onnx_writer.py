"""A quantized graph's QDQ form as an ONNX model (``edgec quantize -o model_int8.onnx``).

The QDQ graph holds ONNX ops (QuantizeLinear/DequantizeLinear around float ops, int8 weights),
so it is written node for node: constants as initializers, static shapes on the inputs and
outputs. onnxruntime runs the file; ``edgec compile`` lowers it to the same int8 C.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgec.errors import EdgecError
from edgec.ir import Graph

_ELEM = {"float32": onnx.TensorProto.FLOAT, "int8": onnx.TensorProto.INT8,
         "uint8": onnx.TensorProto.UINT8, "int32": onnx.TensorProto.INT32}


def _attr(v: object) -> object:
    if isinstance(v, np.ndarray):
        return numpy_helper.from_array(v) if v.ndim else v.item()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def to_onnx(g: Graph) -> onnx.ModelProto:
    """``g`` (ONNX ops only) as a ModelProto at the graph's opset (13 at least: per-axis
    DequantizeLinear)."""
    if g.opset < 13:
        raise EdgecError(f"{g.source or g.name}: opset {g.opset} has no per-axis "
                         f"DequantizeLinear; export the float model at opset 13 or later, or "
                         f"write the quantized model as .tflite")
    loops = [n.name for n in g.nodes if n.op == "Scan"]
    if loops:  # the body's int8 inputs and TFLite's trip count have no ONNX Scan form here
        raise EdgecError(f"{g.source or g.name}: node '{loops[0]}' (Scan) is a quantized loop; "
                         f"edgec writes it as .tflite (WHILE), not .onnx")
    nodes, used, made = [], set(), set()
    for n in g.nodes:
        if n.op not in ("QuantizeLinear", "DequantizeLinear") and not onnx.defs.has(n.op):
            raise EdgecError(f"{g.source or g.name}: node '{n.name}' ({n.op}) is an edgec op "
                             f"with no ONNX form; write the quantized model as .tflite instead")
        attrs = {k: _attr(v) for k, v in n.attrs.items() if not k.startswith("_")}
        nodes.append(helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **attrs))
        used.update(i for i in n.inputs if i)
        made.update(o for o in n.outputs if o)
    inits = [numpy_helper.from_array(np.asarray(g.tensor(t).data), t) for t in sorted(used - made)
             if g.const(t) is not None]

    def info(name: str) -> onnx.ValueInfoProto:
        t = g.tensor(name)
        return helper.make_tensor_value_info(name, _ELEM.get(t.dtype, onnx.TensorProto.FLOAT),
                                             list(t.shape))

    graph = helper.make_graph(nodes, g.name, [info(i) for i in g.inputs],
                              [info(o) for o in g.outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset)],
                              producer_name="edgec quantize")
    model.ir_version = 8
    return model
