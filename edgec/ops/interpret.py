"""Shape inference and the numpy reference interpreter of the IR."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Tensor
from edgec.ops import get_op
from edgec.ops.unary import act_ref


def _value_inputs(node: Node) -> tuple[int, ...] | None:
    """Indices of the inputs whose values matter (None: all); see Op.value_inputs."""
    return get_op(node).value_inputs(node)


def infer_shapes(g: Graph) -> None:
    """Fill in the shape and dtype of every node output, in topological order.

    Values are propagated too: a node whose inputs are all constant (or that reads only shapes)
    gets constant outputs, so shape subgraphs (Shape → Gather → Concat → Reshape) resolve here and
    ``passes.fold_constants`` can drop them.
    """
    for node in g.nodes:
        infer_node(g, node)


def infer_node(g: Graph, node: Node) -> None:
    """Shape (and, when its inputs are constant, value) of one node's outputs."""
    op = get_op(node, g)
    vi = _value_inputs(node)
    foldable = all(
        g.const(t) is not None for k, t in enumerate(node.inputs) if t and (vi is None or k in vi)
    )
    if foldable:
        try:
            values = {i: g.tensors[i].data for i in node.inputs if i and g.const(i) is not None}
            outs = run_node(node, g, values)
        except EdgecError:
            raise
        except Exception as exc:
            raise EdgecError(
                f"node '{node.name}' ({node.op}): cannot evaluate constant inputs: {exc}"
            ) from exc
        for name, val in zip(node.outputs, outs, strict=False):
            if name:
                arr = np.asarray(val, order="C")  # keeps 0-d (ascontiguousarray makes 1-d)
                g.tensors[name] = Tensor(
                    name, tuple(int(d) for d in arr.shape), str(arr.dtype), arr
                )
        return
    try:
        results = op.infer(node, g)
    except EdgecError:
        raise
    except Exception as exc:  # a malformed node: name it
        raise EdgecError(f"node '{node.name}' ({node.op}): cannot infer shapes: {exc}") from exc
    for name, (shape, dtype) in zip(node.outputs, results, strict=False):
        if not name:
            continue
        old = g.tensors.get(name)
        data = old.data if old is not None else None
        g.tensors[name] = Tensor(name, tuple(int(d) for d in shape), dtype, data)


def run_node(node: Node, g: Graph, values: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    op = get_op(node, g)
    ins = [values.get(i) if i else None for i in node.inputs]
    vi = op.value_inputs(node)
    if vi is not None:  # shape/dtype-only inputs: stand-ins of the right shape and dtype
        ins = [
            x if (k in vi or not t) else np.zeros(g.shape(t), g.tensor(t).dtype)
            for k, (t, x) in enumerate(zip(node.inputs, ins, strict=True))
        ]
    outs = op.reference(node, ins, g)
    act = node.attrs.get("_act")
    if act is not None:
        outs = [act_ref(act[0], act[1], outs[0]), *outs[1:]]
    return outs


def interpret(g: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate the graph with numpy; returns every graph output by name."""
    values: dict[str, np.ndarray] = {
        t.name: t.data for t in g.tensors.values() if t.data is not None
    }
    for name in g.inputs:
        values[name] = np.asarray(feeds[name], dtype=g.tensor(name).dtype).reshape(g.shape(name))
    for node in g.nodes:
        for name, val in zip(node.outputs, run_node(node, g, values), strict=False):
            if name:
                values[name] = np.asarray(val)
    return {o: values[o] for o in g.outputs}
