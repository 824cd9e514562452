"""Einsum → Transpose, Reshape, ReduceSum and MatMul (the existing kernels).

Per node (equation parsed by :mod:`edgec.ops.einsum`): first each operand sums out the indices
no other operand and not the output has (ReduceSum); then operands are contracted pairwise, left
to right: with ``batch`` the indices both have that are still needed, ``k`` those they share
that are not, and ``m`` / ``n`` the rest of each, the left one is laid out as [batch, m, k] and
the right one as [batch, k, n] (Transpose + Reshape), multiplied (MatMul) and reshaped back to
[batch, m, n]; a final Transpose puts the output's order. Transposes and Reshapes of constant
operands fold at compile time, so ``bi,oi->bo`` with constant weights becomes a dense layer.
"""

from __future__ import annotations

import math

import numpy as np

from edgec.ir import Graph, Node
from edgec.ops.einsum import equation_of
from edgec.ops.interpret import infer_node


class _Builder:
    """Appends nodes (shapes inferred as they are added) in place of one Einsum node."""

    def __init__(self, g: Graph, node: Node):
        self.g, self.node = g, node
        self.nodes: list[Node] = []
        self.count = 0

    def add(self, op: str, inputs: list[str], attrs: dict | None = None,
            out: str | None = None) -> str:
        self.count += 1
        base = f"{self.node.name}_{op.lower()}{self.count}"
        out = out or self.g.fresh_name(base)
        n = Node(op, self.g.fresh_name(f"{self.node.name}_{op}{self.count}"), inputs, [out],
                 dict(attrs or {}))
        self.nodes.append(n)
        infer_node(self.g, n)
        return out

    def ints(self, values: list[int]) -> str:
        return self.g.add_const(f"{self.node.name}_shape", np.asarray(values, np.int64))

    def transpose(self, x: str, have: str, want: str) -> str:
        if have == want:
            return x
        return self.add("Transpose", [x], {"perm": [have.index(c) for c in want]})

    def reshape(self, x: str, shape: list[int]) -> str:
        if list(self.g.shape(x)) == shape:
            return x
        return self.add("Reshape", [x, self.ints(shape)])


def _lower(g: Graph, node: Node) -> list[Node]:
    eq = equation_of(node, g)
    b = _Builder(g, node)
    size = eq.sizes
    terms = list(eq.operands)
    xs = list(node.inputs)
    # sum out what only one operand has
    for i, t in enumerate(terms):
        others = set(eq.output).union(*(set(u) for j, u in enumerate(terms) if j != i))
        drop = [k for k, c in enumerate(t) if c not in others]
        if drop:
            xs[i] = b.add("ReduceSum", [xs[i], b.ints(drop)], {"keepdims": 0})
            terms[i] = "".join(c for c in t if c in others)
    x, t = xs[0], terms[0]
    for j in range(1, len(terms)):
        y, u = xs[j], terms[j]
        later = set(eq.output).union(*(set(v) for v in terms[j + 1 :]))
        batch = [c for c in t if c in u and c in later]
        k = [c for c in t if c in u and c not in later]
        m = [c for c in t if c not in u]
        n = [c for c in u if c not in t]
        dims = [math.prod(size[c] for c in cs) for cs in (batch, m, k, n)]
        lead = [dims[0]] if batch else []
        a = b.reshape(b.transpose(x, t, "".join(batch + m + k)), [*lead, dims[1], dims[2]])
        c = b.reshape(b.transpose(y, u, "".join(batch + k + n)), [*lead, dims[2], dims[3]])
        prod = b.add("MatMul", [a, c])
        t = "".join(batch + m + n)
        x = b.reshape(prod, [size[ch] for ch in t])
    x = b.transpose(x, t, eq.output)
    out = node.outputs[0]
    if b.nodes and b.nodes[-1].outputs[0] == x:  # the last node writes the Einsum's output
        last = b.nodes[-1]
        last.outputs[0] = out
        del g.tensors[x]
        infer_node(g, last)
    else:  # nothing to do ('ij->ij'): a copy, removed by passes.cleanup unless an output
        b.add("Identity", [x], out=out)
    return b.nodes


def lower_einsum(g: Graph) -> Graph:
    """Replace every Einsum node computed at run time by the ops above."""
    if not any(n.op == "Einsum" for n in g.nodes):
        return g
    g = g.copy()
    nodes: list[Node] = []
    for n in g.nodes:
        if n.op == "Einsum" and any(g.const(o) is None for o in n.outputs if o):
            nodes.extend(_lower(g, n))
        else:
            nodes.append(n)
    g.nodes = nodes
    return g
