"""Fewer Transposes: cancel inverse pairs, merge chains, and move Transposes down through ops that
do not care about the layout, so that they meet their inverse and cancel.

NHWC front-ends (TFLite) wrap every NCHW kernel in ``Transpose(NHWC→NCHW) → kernel →
Transpose(NCHW→NHWC)``; between two layers the pair ``Transpose(NCHW→NHWC) →
Transpose(NHWC→NCHW)`` is the identity. Activations, elementwise arithmetic (a constant operand
is transposed at compile time), Concat, Pad, reductions and Softmax sit between layers too: a
Transpose whose only consumer is such an op moves below it (the op's axes are remapped). What is
left is the layout change at the model's edges (e.g. before a Flatten, where the order matters).
A Transpose before an int8 batch matmul's second operand gives its last-two-axes swap to adj_y.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Tensor
from edgec.ops.interpret import infer_node
from edgec.ops.unary import UNARY
from edgec.passes.cleanup import eliminate_dead_nodes

#: ops whose data inputs are broadcast elementwise (every input is data)
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "PRelu", "Max", "Min", "Identity",
                          "QAdd", "QSub", "QMul"})
#: ops with one data input (input 0) and parameter inputs (Clip bounds, Pow exponent)
_UNARY = frozenset(UNARY) | {"Dropout", "QLut", "Requantize", "Quantize", "Dequantize"}
_REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                     "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare", "QMean"})


def _perm(n: Node, rank: int) -> list[int]:
    p = n.attr("perm")
    return [int(v) for v in p] if p is not None else list(range(rank))[::-1]


def _inverse(p: list[int]) -> list[int]:
    inv = [0] * len(p)
    for i, v in enumerate(p):
        inv[v] = i
    return inv


def _rename_uses(g: Graph, old: str, new: str) -> None:
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def _merge_pairs(g: Graph) -> bool:
    """Transpose(Transpose(x, p), q) → Transpose(x, p∘q), or x when that is the identity."""
    producers = g.producers()
    changed = False
    for n in list(g.nodes):
        if n.op != "Transpose":
            continue
        m = producers.get(n.inputs[0])
        if m is None or m.op != "Transpose" or m.outputs[0] != n.inputs[0]:
            continue
        rank = len(g.shape(m.inputs[0]))
        p, q = _perm(m, rank), _perm(n, rank)
        composed = [p[v] for v in q]
        if composed == list(range(rank)) and n.outputs[0] not in g.outputs:
            _rename_uses(g, n.outputs[0], m.inputs[0])
            g.nodes.remove(n)
        elif composed == list(range(rank)):
            n.op, n.inputs, n.attrs = "Identity", [m.inputs[0]], {}
        else:
            n.inputs, n.attrs = [m.inputs[0]], {"perm": composed}
        changed = True
    return changed


def _data_inputs(n: Node) -> list[int]:
    if n.op in _ELEMENTWISE or n.op == "Concat":
        return [i for i, t in enumerate(n.inputs) if t]
    return [0]


def _sinkable(g: Graph, n: Node) -> bool:
    if n.op == "Dequantize" and n.outputs[0] in g.outputs:
        return False  # nothing below to cancel with: transpose the int8 codes, not floats
    if n.op in _ELEMENTWISE or n.op in _UNARY or n.op == "Concat":
        return True
    if n.op in _REDUCE:  # constant axes (input since opset 18, attribute before)
        return len(n.inputs) < 2 or not n.inputs[1] or g.const(n.inputs[1]) is not None
    if n.op == "Pad":
        const_pads = len(n.inputs) > 1 and g.const(n.inputs[1]) is not None
        return const_pads and (len(n.inputs) < 4 or not n.inputs[3])
    if n.op in ("Softmax", "LogSoftmax"):
        return g.opset >= 13
    return False


def _sink_one(g: Graph, n: Node, producers: dict[str, Node],
              consumers: dict[str, list[Node]], shared: bool) -> bool:
    """Move the Transposes feeding ``n`` below it; False when they cannot all move. A Transpose
    other nodes read too stays for them (``shared``): a copy moves below ``n``."""
    if len([o for o in n.outputs if o]) != 1 or not _sinkable(g, n):
        return False
    data = _data_inputs(n)
    perm: list[int] | None = None
    sources: dict[int, str] = {}
    for i in data:
        t = n.inputs[i]
        p = producers.get(t)
        if p is not None and p.op == "Transpose":
            users = {id(u) for u in consumers.get(t, [])}
            if (len(users) != 1 and not shared) or t in g.outputs:
                return False
            pp = _perm(p, len(g.shape(t)))
            if perm is not None and pp != perm:
                return False
            perm = pp
            sources[i] = p.inputs[0]
        elif g.const(t) is None:
            return False  # a run-time input in the other layout
    if perm is None:
        return False
    rank = len(perm)
    out = n.outputs[0]
    first = sources[min(sources)]
    if n.op in _ELEMENTWISE or n.op in _UNARY:
        if g.shape(out) != g.shape(n.inputs[min(sources)]):
            return False  # broadcasting widens the output: leave it
    inv = _inverse(perm)
    new_inputs = list(n.inputs)
    for i in data:
        if i in sources:
            new_inputs[i] = sources[i]
            continue
        c = np.asarray(g.const(n.inputs[i]))
        if c.ndim > rank:
            return False
        if c.size > 1:
            full = c.reshape((1,) * (rank - c.ndim) + c.shape)
            new_inputs[i] = g.add_const(f"{n.name}_t", np.ascontiguousarray(full.transpose(inv)),
                                        g.quant(n.inputs[i]))
    attrs = dict(n.attrs)
    post = list(perm)
    if n.op == "Concat":
        attrs["axis"] = perm[int(n.attr("axis")) % rank]
    elif n.op in ("Softmax", "LogSoftmax"):
        attrs["axis"] = perm[int(n.attr("axis", -1)) % rank]
    elif n.op == "Pad":
        pads = [int(v) for v in np.asarray(g.const(n.inputs[1])).reshape(-1)]
        begin, end = pads[:rank], pads[rank:]
        new_inputs[1] = g.add_const(f"{n.name}_pads", np.asarray(
            [begin[inv[a]] for a in range(rank)] + [end[inv[a]] for a in range(rank)], np.int64))
    elif n.op in _REDUCE:
        if len(n.inputs) > 1 and n.inputs[1]:
            axes = [int(v) % rank for v in np.asarray(g.const(n.inputs[1])).reshape(-1)]
        else:
            axes = [int(v) % rank for v in n.attr("axes", [])] or list(range(rank))
        new_axes = sorted(perm[a] for a in axes)
        if len(n.inputs) > 1 and n.inputs[1]:
            new_inputs[1] = g.add_const(f"{n.name}_axes", np.asarray(new_axes, np.int64))
        else:
            attrs["axes"] = new_axes
        if not int(n.attr("keepdims", 1)):
            kept = [a for a in range(rank) if a not in new_axes]
            post = [kept.index(perm[i]) for i in range(rank) if i not in axes]
    tmp = g.fresh_name(f"{out}_pre_t")
    moved = Node(n.op, n.name, new_inputs, [tmp], attrs)
    idx = next(k for k, m in enumerate(g.nodes) if m is n)
    g.nodes[idx] = moved
    g.tensors[tmp] = Tensor(tmp, (), g.tensor(first).dtype, quant=g.tensor(out).quant)
    infer_node(g, moved)
    if post == list(range(len(post))):
        if out in g.outputs:
            g.nodes.insert(idx + 1, Node("Identity", f"{n.name}_id", [tmp], [out], {}))
        else:
            _rename_uses(g, out, tmp)
            del g.tensors[out]
    else:
        g.nodes.insert(idx + 1, Node("Transpose", f"{n.name}_t", [tmp], [out], {"perm": post}))
    return True


def _drop_unused(g: Graph) -> None:
    """Remove Transposes whose output nobody reads any more (no copy of the graph)."""
    while True:
        used = set(g.outputs) | {b for _, b in g.state}
        used.update(i for n in g.nodes for i in n.inputs if i)
        dead = [n for n in g.nodes if n.op == "Transpose" and n.outputs[0] not in used]
        if not dead:
            return
        for n in dead:
            g.nodes.remove(n)
            g.tensors.pop(n.outputs[0], None)


def _fold_into_dense(g: Graph) -> bool:
    """Transpose → Reshape [B, K] → Gemm with constant weights: permute the weights' columns
    instead (the flatten of a channels-last tensor before a Dense layer)."""
    producers, consumers = g.producers(), g.consumers()
    for r in g.nodes:
        if r.op != "Reshape" or r.outputs[0] in g.outputs:
            continue
        t = producers.get(r.inputs[0])
        users = consumers.get(r.outputs[0], [])
        if t is None or t.op != "Transpose" or len(users) != 1 or users[0].op != "Gemm":
            continue
        gemm = users[0]
        if len(consumers.get(t.outputs[0], [])) != 1 or t.outputs[0] in g.outputs:
            continue
        x_shape, y_shape = g.shape(t.inputs[0]), g.shape(r.outputs[0])
        perm = _perm(t, len(x_shape))
        w = g.const(gemm.inputs[1])
        if (w is None or gemm.inputs[0] != r.outputs[0] or gemm.attr("transA", 0)
                or len(y_shape) != 2 or perm[0] != 0 or y_shape[0] != x_shape[0]):
            continue
        inner = x_shape[1:]
        idx = np.arange(int(np.prod(inner))).reshape(inner).transpose(
            [p - 1 for p in perm[1:]]).reshape(-1)
        wt = w if gemm.attr("transB", 0) else w.T  # [M, K]
        new_w = np.empty_like(wt)
        new_w[:, idx] = wt
        gemm.inputs[1] = g.add_const(f"{gemm.name}_w", new_w)
        gemm.attrs["transB"] = 1
        r.inputs[0] = t.inputs[0]
        return True
    return False


def _fold_into_batch_matmul(g: Graph) -> bool:
    """A Transpose feeding a QBatchMatMul's second operand with ``adj_y = 0`` (attention's Kᵀ):
    swap the last two axes of its permutation and set ``adj_y``, so that the kernel reads the
    operand's columns contiguously instead of copying them transposed; a permutation that
    becomes the identity goes away. (``adj_x`` makes the kernel slower: the first operand is
    left alone.) The original Transpose stays for any other reader."""
    producers, consumers = g.producers(), g.consumers()
    for mm in g.nodes:
        if mm.op != "QBatchMatMul" or mm.attr("adj_y", 0):
            continue
        t = producers.get(mm.inputs[1])
        if t is None or t.op != "Transpose":
            continue
        rank = len(g.shape(t.inputs[0]))
        perm = _perm(t, rank)
        q_in, q_out = g.quant(t.inputs[0]), g.quant(t.outputs[0])
        if rank < 2 or q_in is None or q_out is None or not q_in.same_as(q_out):
            continue
        swapped = [*perm[:-2], perm[-1], perm[-2]]
        mm.attrs["adj_y"] = 1
        if swapped == list(range(rank)):
            mm.inputs[1] = t.inputs[0]
        elif len(consumers.get(t.outputs[0], [])) == 1 and t.outputs[0] not in g.outputs:
            t.attrs["perm"] = swapped
            infer_node(g, t)
        else:
            out = f"{t.outputs[0]}_adj"
            g.tensors[out] = Tensor(out, (), g.tensor(t.outputs[0]).dtype, quant=q_out)
            g.nodes.insert(g.nodes.index(mm), Node("Transpose", f"{t.name}_adj",
                                                   [t.inputs[0]], [out], {"perm": swapped}))
            infer_node(g, g.nodes[g.nodes.index(mm) - 1])
            mm.inputs[1] = out
        return True
    return False


def _run(g: Graph, shared: bool) -> Graph:
    g = g.copy()
    while True:  # terminates: merges remove Transposes, sinks only move them towards outputs
        changed = _merge_pairs(g)
        _drop_unused(g)
        producers, consumers = g.producers(), g.consumers()
        for n in list(g.nodes):
            if _sink_one(g, n, producers, consumers, shared):
                changed = True
                _drop_unused(g)
                producers, consumers = g.producers(), g.consumers()
        while _fold_into_dense(g) or _fold_into_batch_matmul(g):
            changed = True
            _drop_unused(g)
        if not changed:
            return eliminate_dead_nodes(g)


def _moved_elements(g: Graph) -> int:
    """Elements the remaining Transposes copy (those that keep the memory order are free)."""
    total = 0
    for n in g.nodes:
        if n.op == "Transpose":
            shape = g.shape(n.inputs[0])
            moved = [p for p in _perm(n, len(shape)) if shape[p] != 1]
            if moved != sorted(moved):
                total += int(np.prod(shape, dtype=np.int64))
    return total


def optimize_transposes(g: Graph) -> Graph:
    """Sink Transposes that feed one node only; then try sinking shared ones too (which can
    duplicate a Transpose) and keep that result only when fewer elements get moved."""
    if not any(n.op == "Transpose" for n in g.nodes):
        return g
    safe = _run(g, shared=False)
    bold = _run(safe, shared=True)
    return bold if _moved_elements(bold) < _moved_elements(safe) else safe
