"""Event-driven dense layers: Gemm/MatMul nodes fed by spikes become ``EventDense`` (adds the
weight columns of the inputs that spiked), and spikes only such layers read are bit-packed.

The kernels live in :mod:`edgec.ops.spiking`; this pass only rewrites the graph.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node
from edgec.ops.spiking import NEURON_OPS, can_pack, spike_shape

F32 = np.float32
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def _spike_source(t: str, g: Graph, producers: dict[str, Node]) -> Node | None:
    """The neuron node whose spike output ``t`` is (through element-order-keeping views)."""
    while True:
        p = producers.get(t)
        if p is None:
            return None
        if p.op in NEURON_OPS and p.outputs[0] == t:
            return p
        if p.op not in _VIEWS or g.tensor(p.inputs[0]).size != g.tensor(t).size:
            return None
        t = p.inputs[0]


def _as_event_dense(node: Node, g: Graph) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(W [N, K], bias) of a Gemm/MatMul with constant weights, or None."""
    if node.op == "Gemm":
        if node.attr("transA", 0) or len(g.shape(node.inputs[0])) != 2:
            return None
        b = g.const(node.inputs[1])
        if b is None:
            return None
        w = (b if node.attr("transB", 0) else b.T) * F32(node.attr("alpha", 1.0))
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            c = g.const(node.inputs[2])
            n = w.shape[0]
            if c is None or not (c.size == n and (c.ndim < 2 or c.shape[0] == 1) or c.size == 1):
                return None
            bias = np.broadcast_to(F32(node.attr("beta", 1.0)) * c.reshape(-1), (n,))
        return np.asarray(w, F32), None if bias is None else np.asarray(bias, F32)
    if node.op == "MatMul":
        b = g.const(node.inputs[1])
        if b is None or b.ndim != 2 or len(g.shape(node.inputs[0])) < 1:
            return None
        return np.ascontiguousarray(np.asarray(b, F32).T), None
    return None


def use_event_kernels(g: Graph) -> Graph:
    """Dense layers fed by spikes → ``EventDense``; spikes only such layers read → bit-packed.

    A neuron node's ``events`` attribute selects the mode: ``packed`` (default), ``event`` (float
    spikes) or ``dense`` (leave the dense kernels alone).
    """
    if not any(n.op in NEURON_OPS for n in g.nodes):
        return g
    g = g.copy()
    producers = g.producers()
    changed = False
    for idx, node in enumerate(g.nodes):
        if node.op not in ("Gemm", "MatMul") or "_act" in node.attrs:
            continue
        src = _spike_source(node.inputs[0], g, producers)
        if src is None or src.attr("events", "packed") == "dense" or src.attr("packed", 0):
            continue
        parts = _as_event_dense(node, g)
        if parts is None:
            continue
        w, bias = parts
        ins = [node.inputs[0], g.add_const(f"{node.name}_w", w)]
        if bias is not None:
            ins.append(g.add_const(f"{node.name}_b", bias))
        g.nodes[idx] = Node("EventDense", node.name, ins, list(node.outputs), {})
        changed = True
    if not changed:
        return g
    consumers = g.consumers()
    boundary = set(g.outputs) | {s for _, s in g.state}
    for node in g.nodes:
        if node.op not in NEURON_OPS or node.attr("events", "packed") != "packed":
            continue
        spk = node.outputs[0]
        users = consumers.get(spk, [])
        if spk in boundary or not users or not can_pack(node, g):
            continue
        if any(u.op != "EventDense" or u.inputs[0] != spk for u in users):
            continue
        k = g.shape(spk)[-1]
        node.attrs["packed"] = 1
        g.tensors[spk].shape = spike_shape(node, g.shape(spk))
        for u in users:
            u.attrs["packed"] = 1
            u.attrs["k"] = k
    return g
