"""RuntimeGather: Gather with indices computed or given at run time (an int32 model input: the
token ids of a Keras ``Embedding``, TFLite's GATHER). ``Gather`` (``shape_ops.py``) needs
constant indices; this op reads them from an int32 tensor while the model runs.

Out-of-range indices: TFLite's GATHER stops the whole invocation with an error ("gather index
out of bounds"); edgec's C must never read outside the table and has no error path per kernel,
so an index below 0 reads row 0 and one at or past the axis size reads the last row (clamped),
in the numpy reference and in C alike (docs/int8.md, "Ports"). The data may be a constant
table (float32 or int8 codes, whose quantization the output keeps) or a run-time tensor.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, prod, register, unsupported
from edgec.ops.shape_ops import c_order, norm_axes

Outs = list[tuple[Shape, str]]


@register
class RuntimeGather(Op):
    types = ("RuntimeGather",)
    int8 = True  # moves int8 codes unchanged
    quant_passthrough = True

    def axis(self, node: Node, g: Graph) -> int:
        return norm_axes(node, [int(node.attr("axis", 0))], len(g.shape(node.inputs[0])))[0]

    def infer(self, node: Node, g: Graph) -> Outs:
        data, idx = g.tensor(node.inputs[0]), g.tensor(node.inputs[1])
        if idx.dtype != "int32":
            raise unsupported(node, f"indices '{idx.name}' are {idx.dtype}; expected int32")
        if data.dtype not in ("float32", "int8"):
            raise unsupported(node, f"data '{data.name}' is {data.dtype}; expected float32 or "
                                    "int8")
        axis = self.axis(node, g)
        if data.shape[axis] < 1:
            raise unsupported(node, f"axis {axis} of the data is empty")
        return [(data.shape[:axis] + tuple(idx.shape) + data.shape[axis + 1 :], data.dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, idx = inputs[0], inputs[1]
        assert x is not None and idx is not None
        axis = self.axis(node, g)
        clamped = np.clip(idx.astype(np.int64), 0, x.shape[axis] - 1)
        return [c_order(np.take(x, clamped, axis=axis))]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        data = g.shape(node.inputs[0])
        axis = self.axis(node, g)
        rows, dim, inner = prod(data[:axis]), data[axis], prod(data[axis + 1 :])
        n = prod(g.shape(node.inputs[1]))
        x, idx, y = ctx.inp(0), ctx.inp(1), ctx.out(0)
        elem = ctx.ctype(node.outputs[0])
        move = ("yr[j] = xr[k];" if inner == 1 else
                f"memcpy(yr + j * {inner}, xr + k * {inner}, sizeof({elem}) * {inner});")
        return (
            f"for (int r = 0; r < {rows}; ++r) {{\n"
            f"    const {elem} *xr = {x} + r * {dim * inner};\n"
            f"    {elem} *yr = {y} + r * {n * inner};\n"
            f"    for (int j = 0; j < {n}; ++j) {{\n"
            f"        /* out-of-range indices read the nearest row (TFLite: an error) */\n"
            f"        const int32_t v = {idx}[j];\n"
            f"        const int32_t k = v < 0 ? 0 : (v > {dim - 1} ? {dim - 1} : v);\n"
            f"        {move}\n"
            f"    }}\n"
            f"}}\n"
        )
