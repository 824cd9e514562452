"""An int8 loop (a Scan whose body the quantizer lowered) as TFLite's WHILE, and the code moves
of loop bodies (Slice → SLICE, Split → SPLIT_V).

The WHILE is written the way TensorFlow's converter writes a Keras recurrent layer, so the
TFLite interpreter runs it and edgec's own front-end reads it back (``frontend/tflite/loops.py``):
carried values ``(i, states..., output lists..., sequences...)``; the condition
``LESS(i, trips)``; the body ``GATHER(sequence, i)`` (``trips - 1 - i`` backwards) for each scan
input, the body's int8 kernels, ``ADD(i, 1)``, the states' next values, and each scan output's
row written as ``CONCATENATION(SLICE(list, 0, t), row, SLICE(list, t + 1, end))``. Every
carried int8 tensor keeps the quantization the Scan gives it (one per state, for the body's input
and output alike), so the interpreter computes on the same codes as edgec's C.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from edgec.frontend.tflite.builder import Subgraph
from edgec.ir import Graph, Node
from edgec.ops.scan import scan_spec


class LoopOut(Protocol):
    """What the writers give: the graph, the subgraph written into, tensor indices."""

    g: Graph
    b: Subgraph

    def t(self, name: str) -> int: ...

    def child(self, g: Graph, sg: Subgraph) -> Any: ...

    def node(self, n: Node) -> None: ...

    def register(self, sg: Subgraph, inputs: list[int], outputs: list[int]) -> None: ...


def _quant(g: Graph, name: str) -> tuple[Any, Any, int] | None:
    q = g.quant(name)
    return None if q is None else (q.scale, q.zero_point, q.axis or 0)


def _like(sg: Subgraph, g: Graph, name: str, label: str) -> int:
    t = g.tensor(name)
    return sg.tensor(label, t.shape, t.dtype, quant=_quant(g, name))


def _i32(sg: Subgraph, name: str, values: Any) -> int:
    return sg.const(name, np.asarray(values, np.int32))


def write_loop(w: LoopOut, n: Node) -> None:
    """Scan ``n`` of ``w.g`` as WHILE with a condition and a body subgraph."""
    g, b = w.g, w.b
    s = scan_spec(n, g)
    body, trips = s.body, s.trips
    root = b.b
    carried = ([("state", k) for k in range(s.n_state)]
               + [("list", k) for k in range(s.n_scan_out)]
               + [("seq", k) for k in range(s.n_scan_in)])

    def proto(kind: str, k: int) -> tuple[str, Graph]:
        """The tensor (and its graph) a carried value is shaped and quantized like."""
        if kind == "state":
            return body.inputs[k], body
        if kind == "seq":
            return n.inputs[s.n_state + k], g
        return body.outputs[s.n_state + k], body

    def shape_of(kind: str, k: int) -> tuple[int, ...]:
        name, graph = proto(kind, k)
        row = tuple(graph.shape(name))
        return (trips, *row) if kind == "list" else row

    def carried_tensor(sg: Subgraph, kind: str, k: int, label: str) -> int:
        name, graph = proto(kind, k)
        return sg.tensor(label, shape_of(kind, k), graph.tensor(name).dtype,
                         quant=_quant(graph, name))

    # -- the WHILE in the enclosing graph ------------------------------------------------------
    ins = [b.const(f"{n.name}_i0", np.array(0, np.int32))]
    outs = [b.tensor(f"{n.name}_i_end", (), "int32")]
    for kind, k in carried:
        if kind == "state":
            ins.append(w.t(n.inputs[k]))
        elif kind == "seq":
            ins.append(w.t(n.inputs[s.n_state + k]))
        else:
            name, graph = proto(kind, k)
            codes = np.full(shape_of(kind, k), _zero_code(graph, name),
                            np.dtype(graph.tensor(name).dtype))
            ins.append(b.const(f"{n.name}_list{k}_init", codes, quant=_quant(graph, name)))
        y = (n.outputs[k] if kind == "state" else
             n.outputs[s.n_state + k] if kind == "list" else "")
        outs.append(w.t(y) if y else carried_tensor(b, kind, k, f"{n.name}_{kind}{k}_end"))
    cond_index = len(root.extra) + 1
    b.op("WHILE", ins, outs, "WhileOptions", condSubgraphIndex=cond_index,
         bodySubgraphIndex=cond_index + 1)

    # -- the condition --------------------------------------------------------------------------
    cond = root.subgraph(f"{n.name}_cond")
    c_in = [cond.tensor("i", (), "int32")] + [carried_tensor(cond, kind, k, f"{kind}{k}")
                                              for kind, k in carried]
    less = cond.tensor("less", (), "bool")
    cond.op("LESS", [c_in[0], _i32(cond, "trips", trips)], [less])
    w.register(cond, c_in, [less])

    # -- the body -------------------------------------------------------------------------------
    sg = root.subgraph(f"{n.name}_body")
    inner = w.child(body, sg)
    i = sg.tensor("i", (), "int32")
    b_in = [i]
    lists: dict[int, int] = {}
    seqs: dict[int, int] = {}
    for kind, k in carried:
        if kind == "state":
            t = inner.t(body.inputs[k])
        else:
            t = carried_tensor(sg, kind, k, f"{kind}{k}")
            (lists if kind == "list" else seqs)[k] = t
        b_in.append(t)
    i1 = sg.tensor("i_next", (), "int32")
    sg.op("ADD", [i, _i32(sg, "one", 1)], [i1], "AddOptions")
    last = None

    def position(reverse: bool) -> int:
        nonlocal last
        if not reverse:
            return i
        if last is None:
            last = sg.tensor("i_backwards", (), "int32")
            sg.op("SUB", [_i32(sg, "last", trips - 1), i], [last], "SubOptions")
        return last

    for k in range(s.n_scan_in):
        sg.op("GATHER", [seqs[k], position(s.in_reverse[k])],
              [inner.t(body.inputs[s.n_state + k])], "GatherOptions", axis=0)
    for m in body.nodes:
        inner.node(m)
    b_out = [i1] + [inner.t(body.outputs[k]) for k in range(s.n_state)]
    for k in range(s.n_scan_out):
        b_out.append(_write_row(sg, inner, body, body.outputs[s.n_state + k], lists[k],
                                position(s.out_reverse[k]), (trips, *body.shape(
                                    body.outputs[s.n_state + k])), f"list{k}"))
    b_out += [seqs[k] for k in range(s.n_scan_in)]
    w.register(sg, b_in, b_out)


def _zero_code(g: Graph, name: str) -> int:
    q = g.quant(name)
    return 0 if q is None else int(q.zero_point.reshape(-1)[0])


def _write_row(sg: Subgraph, inner: LoopOut, body: Graph, elem: str, lst: int, pos: int,
               shape: tuple[int, ...], label: str) -> int:
    """``CONCATENATION(SLICE(list, 0, pos), elem as one row, SLICE(list, pos + 1, end))``."""
    rank = len(shape)
    dtype = body.tensor(elem).dtype
    quant = _quant(body, elem)
    pos_v = sg.tensor(f"{label}_pos", (1,), "int32")
    sg.op("RESHAPE", [pos, _i32(sg, f"{label}_one", [1])], [pos_v], "ReshapeOptions",
          newShape=np.asarray([1], np.int32))
    size = sg.tensor(f"{label}_head_size", (rank,), "int32")
    sg.op("CONCATENATION", [pos_v, _i32(sg, f"{label}_rest", [-1] * (rank - 1))], [size],
          "ConcatenationOptions", axis=0)
    sig = (-1, *shape[1:])
    head = sg.tensor(f"{label}_head", (1, *shape[1:]), dtype, quant=quant, signature=sig)
    sg.op("SLICE", [lst, _i32(sg, f"{label}_zeros", [0] * rank), size], [head])
    nxt = sg.tensor(f"{label}_pos1", (1,), "int32")
    sg.op("ADD", [pos_v, _i32(sg, f"{label}_one1", [1])], [nxt], "AddOptions")
    start = sg.tensor(f"{label}_tail_start", (rank,), "int32")
    sg.op("CONCATENATION", [nxt, _i32(sg, f"{label}_zeros1", [0] * (rank - 1))], [start],
          "ConcatenationOptions", axis=0)
    tail = sg.tensor(f"{label}_tail", (1, *shape[1:]), dtype, quant=quant, signature=sig)
    sg.op("SLICE", [lst, start, _i32(sg, f"{label}_all", [-1] * rank)], [tail])
    row = sg.tensor(f"{label}_row", (1, *shape[1:]), dtype, quant=quant)
    sg.op("RESHAPE", [inner.t(elem), _i32(sg, f"{label}_row_shape", [1, *shape[1:]])], [row],
          "ReshapeOptions", newShape=np.asarray([1, *shape[1:]], np.int32))
    out = sg.tensor(f"{label}_next", shape, dtype, quant=quant)
    sg.op("CONCATENATION", [head, row, tail], [out], "ConcatenationOptions", axis=0)
    return out


def write_moves(w: LoopOut, n: Node) -> bool:
    """Slice (unit steps) → SLICE, Split → SPLIT_V, on any dtype (codes move unchanged)."""
    g, b = w.g, w.b
    shape = g.shape(n.inputs[0])
    if n.op == "Slice":
        begin, size = _slice_box(n, g, shape)
        if begin is None or size is None:
            return False
        b.op("SLICE", [w.t(n.inputs[0]), _i32(b, f"{n.outputs[0]}_begin", begin),
                       _i32(b, f"{n.outputs[0]}_size", size)], [w.t(n.outputs[0])])
        return True
    if n.op == "Split" and all(n.outputs):
        axis = int(n.attr("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        sizes = [g.shape(o)[axis] for o in n.outputs]
        b.op("SPLIT_V", [w.t(n.inputs[0]), _i32(b, f"{n.name}_sizes", sizes),
                         _i32(b, f"{n.name}_axis", axis)], [w.t(o) for o in n.outputs],
             "SplitVOptions", numSplits=len(sizes))
        return True
    return False


def _slice_box(n: Node, g: Graph, shape: tuple[int, ...]) -> tuple[list[int] | None,
                                                                    list[int] | None]:
    """ONNX Slice's constant starts/ends/axes/steps as SLICE's begin and size (unit steps)."""
    vals = [g.const(t) if t else None for t in n.inputs[1:5]]
    if vals[0] is None or vals[1] is None:
        return None, None
    starts, ends = (np.asarray(v).reshape(-1).tolist() for v in vals[:2])
    axes = (np.asarray(vals[2]).reshape(-1).tolist() if len(vals) > 2 and vals[2] is not None
            else list(range(len(starts))))
    steps = (np.asarray(vals[3]).reshape(-1).tolist() if len(vals) > 3 and vals[3] is not None
             else [1] * len(starts))
    begin, size = [0] * len(shape), list(shape)
    for a, st, en, sp in zip(axes, starts, ends, steps, strict=True):
        if sp != 1:
            return None, None
        a = int(a) + len(shape) if a < 0 else int(a)
        lo, hi, _ = slice(int(st), int(en), 1).indices(shape[a])
        begin[a], size[a] = lo, max(hi - lo, 0)
    return begin, size
