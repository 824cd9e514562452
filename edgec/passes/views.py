"""Turn data-movement nodes that do not move data into Reshape (a view: no code, no copy).

A Transpose that keeps the order of the non-unit dimensions, a Gather of index 0 along a unit
axis, a Slice that keeps everything, an Expand to the same shape, a Concat of a single input and
a Split into one piece are all the identity on the flat buffer.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node


def _is_memory_identity(g: Graph, n: Node) -> bool:
    if not n.inputs or not n.inputs[0] or g.const(n.inputs[0]) is not None:
        return False
    outs = [o for o in n.outputs if o]
    if len(outs) != 1 or outs[0] != n.outputs[0]:
        return False
    x_shape, y_shape = g.shape(n.inputs[0]), g.shape(n.outputs[0])
    if int(np.prod(x_shape, dtype=np.int64)) != int(np.prod(y_shape, dtype=np.int64)):
        return False
    if n.op == "Transpose":
        perm = n.attr("perm") or list(range(len(x_shape)))[::-1]
        moved = [int(p) for p in perm if x_shape[int(p)] != 1]
        return moved == sorted(moved)
    if n.op == "Gather":
        idx = g.const(n.inputs[1])
        axis = int(n.attr("axis", 0)) % len(x_shape)
        return idx is not None and x_shape[axis] == 1 and np.all(np.asarray(idx) % 1 == 0)
    if n.op == "Expand":
        return x_shape == y_shape
    if n.op == "Slice":  # same shape and no reversal along a non-unit axis
        if x_shape != y_shape:
            return False
        if len(n.inputs) < 5 or not n.inputs[4]:
            return True
        steps, axes_t = g.const(n.inputs[4]), g.const(n.inputs[3]) if n.inputs[3] else None
        if steps is None:
            return False
        axes = range(len(steps)) if axes_t is None else [int(a) for a in axes_t]
        return all(st > 0 or x_shape[int(a)] == 1 for a, st in zip(axes, steps, strict=False))
    if n.op in ("Concat", "Split"):
        return len([i for i in n.inputs if i]) == 1 or (n.op == "Split" and x_shape == y_shape)
    return False


def simplify_views(g: Graph) -> Graph:
    g = g.copy()
    for i, n in enumerate(g.nodes):
        if _is_memory_identity(g, n):
            shape = g.add_const(f"{n.name}_shape", np.asarray(g.shape(n.outputs[0]), np.int64))
            g.nodes[i] = Node("Reshape", n.name, [n.inputs[0], shape], [n.outputs[0]], {})
    return g
