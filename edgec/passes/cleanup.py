"""Constant folding, identity removal and dead-node elimination."""

from __future__ import annotations

from edgec.ir import Graph, Node

#: ops that pass their input through unchanged at inference time
IDENTITY_OPS = frozenset({"Identity", "Dropout"})
#: Cast targets (TensorProto FLOAT, BOOL) → the input dtype for which the Cast changes nothing
_SAME_TYPE_CASTS = {1: "float32", 9: "bool"}


def fold_constants(g: Graph) -> Graph:
    """Drop nodes whose outputs shape inference already evaluated to constants."""
    g = g.copy()
    kept: list[Node] = []
    for n in g.nodes:
        outs = [o for o in n.outputs if o]
        if outs and all(g.const(o) is not None for o in outs):
            continue
        kept.append(n)
    g.nodes = kept
    return g


def _rename_uses(g: Graph, old: str, new: str) -> None:
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def remove_identities(g: Graph) -> Graph:
    """Bypass Identity, inference-mode Dropout and Casts to the type their input already has
    (float32 → FLOAT, a comparison's bool → BOOL), unless the output is a graph output (then
    the node stays as a copy)."""
    g = g.copy()
    used = set(g.outputs) | {i for m in g.nodes for i in m.inputs if i}
    kept: list[Node] = []
    for n in g.nodes:
        if n.op in IDENTITY_OPS:  # drop unused extra outputs (Dropout's mask)
            n.outputs = n.outputs[:1] + [o if o in used else "" for o in n.outputs[1:]]
        float_cast = (
            n.op == "Cast"
            and int(n.attr("to", 0)) in _SAME_TYPE_CASTS
            and g.tensor(n.inputs[0]).dtype == _SAME_TYPE_CASTS[int(n.attr("to", 0))]
        )
        if (n.op in IDENTITY_OPS or float_cast) and n.outputs[0] not in g.outputs:
            extra = [o for o in n.outputs[1:] if o]
            if not extra:
                _rename_uses(g, n.outputs[0], n.inputs[0])
                continue
        kept.append(n)
    g.nodes = kept
    return eliminate_dead_nodes(g)


def eliminate_dead_nodes(g: Graph) -> Graph:
    """Remove nodes none of whose outputs reach a graph output (or a state output)."""
    g = g.copy()
    needed = set(g.outputs) | {s_out for _, s_out in g.state}
    kept: list[Node] = []
    for n in reversed(g.nodes):
        if any(o in needed for o in n.outputs if o):
            kept.append(n)
            needed.update(i for i in n.inputs if i)
    g.nodes = kept[::-1]
    live = needed | set(g.inputs) | set(g.outputs)
    for o in {o for n in g.nodes for o in n.outputs if o}:
        live.add(o)
    for n in g.nodes:  # tensors of nodes held in an attribute (a PatchLoop's body)
        for v in n.attrs.values():
            if isinstance(v, list) and v and all(isinstance(b, Node) for b in v):
                live.update(t for b in v for t in (*b.inputs, *b.outputs) if t)
    g.tensors = {k: t for k, t in g.tensors.items() if k in live}
    return g
