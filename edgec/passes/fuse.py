"""Fusion into kernels: a bias Add after a Gemm becomes the Gemm's bias (``fuse_bias_adds``);
an activation that is the only consumer of a fusable kernel's output becomes the kernel's
``_act`` attribute, applied in registers before the store (``fuse_activations``)."""

from __future__ import annotations

import numpy as np

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


def _bias_target(g: Graph, name: str, producers: dict[str, Node],
                 consumers: dict[str, list[Node]], depth: int = 0) -> Node | None:
    """The Gemm (without C, read only here) whose output reaches ``name`` through a chain of
    two-input Adds each read once: a bias added at the end can go into that Gemm."""
    node = producers.get(name)
    if node is None or len(consumers.get(name, [])) != 1 or name in g.outputs:
        return None
    if node.op == "Gemm" and node.outputs[0] == name and "_act" not in node.attrs:
        if (len(node.inputs) > 2 and node.inputs[2]) or node.attr("transA", 0):
            return None
        return node
    if node.op == "Add" and depth < 4 and "_act" not in node.attrs:
        for i in node.inputs:
            if g.const(i) is None and g.shape(i) == g.shape(name):
                found = _bias_target(g, i, producers, consumers, depth + 1)
                if found is not None:
                    return found
    return None


def fuse_bias_adds(g: Graph) -> Graph:
    """``Add(Gemm(A, B), c)`` with a constant vector ``c`` of the Gemm's N outputs (and no C of
    its own) → ``Gemm(A, B, c)``, also when the Gemm's output reaches the Add through other
    Adds (``(x W + h U) + b``: how TFLite writes Keras' recurrent cells)."""
    consumers = g.consumers()
    producers = g.producers()
    fused: list[tuple[Node, str, np.ndarray]] = []
    taken: set[int] = set()
    for add in g.nodes:
        if add.op != "Add" or len(add.inputs) != 2 or "_act" in add.attrs:
            continue
        for k in (0, 1):
            src, c = add.inputs[k], g.const(add.inputs[1 - k])
            if c is None or g.const(src) is not None or g.shape(add.outputs[0]) != g.shape(src):
                continue
            gemm = _bias_target(g, src, producers, consumers)
            if gemm is None or id(gemm) in taken:
                continue
            n = g.shape(gemm.outputs[0])[1]
            if g.shape(src) != g.shape(gemm.outputs[0]) or c.size != n or c.ndim > 2 or (
                    c.ndim == 2 and c.shape[0] != 1):
                continue
            taken.add(id(gemm))
            fused.append((add, gemm.name, np.asarray(c, np.float32).reshape(n)))
            break
    if not fused:
        return g
    g = g.copy()
    by_name = {n.name: n for n in g.nodes}
    drop = set()
    for add, gemm_name, c in fused:
        gemm = by_name[gemm_name]
        # the Gemm had no C, so its beta scaled nothing: the bias goes in as it is (dividing
        # by beta would give infinities for a beta of 0)
        bias = g.add_const(f"{gemm.name}_bias", c)
        gemm.inputs = [*gemm.inputs[:2], bias]
        gemm.attrs["beta"] = 1.0
        src = add.inputs[0] if g.const(add.inputs[0]) is None else add.inputs[1]
        # the Add's output is now its run-time input: rename the producer's output
        prod = next(n for n in g.nodes if src in n.outputs)
        prod.outputs = [add.outputs[0] if o == src else o for o in prod.outputs]
        g.tensors.pop(src, None)
        drop.add(add.name)
    g.nodes = [n for n in g.nodes if n.name not in drop]
    return g
