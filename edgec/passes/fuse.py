"""Activation fusion: an activation that is the only consumer of a fusable kernel's output
becomes the kernel's ``_act`` attribute (applied in registers before the store)."""

from __future__ import annotations

from edgec.ir import Graph, Node
from edgec.ops import get_op
from edgec.ops.unary import FUSABLE_ACTIVATIONS, unary_params


def fuse_activations(g: Graph) -> Graph:
    g = g.copy()
    consumers = g.consumers()
    producers = g.producers()
    removed: set[int] = set()
    for act in g.nodes:
        if act.op not in FUSABLE_ACTIVATIONS:
            continue
        src = act.inputs[0]
        prod: Node | None = producers.get(src)
        if prod is None or id(prod) in removed or "_act" in prod.attrs:
            continue
        if not get_op(prod, g).fusable or prod.outputs[0] != src:
            continue
        if len(consumers.get(src, [])) != 1 or src in g.outputs:
            continue
        if any(src == s_out for _, s_out in g.state):
            continue
        prod.attrs["_act"] = (act.op, unary_params(act, g))
        prod.outputs[0] = act.outputs[0]
        g.tensors[act.outputs[0]].shape = g.tensors[src].shape
        del g.tensors[src]
        producers[act.outputs[0]] = prod
        removed.add(id(act))
    g.nodes = [n for n in g.nodes if id(n) not in removed]
    return g
