"""Shape inference and the numpy reference interpreter of the IR."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from edgec.errors import EdgecError, UnsupportedOpError
from edgec.ir import Graph, Node, Quant, Shape, Tensor
from edgec.ops import Op, get_op
from edgec.ops.select import INDEX_CONSUMERS
from edgec.ops.unary import act_ref

#: dtypes whose tensors carry a Quant (docs/int8.md)
QUANT_DTYPES = ("int8", "int32")

#: called by :func:`interpret` with the graph and every tensor's value once a run finishes;
#: set by :func:`observe_runs` (calibration sees loop bodies' intermediates in each iteration)
Observer = Callable[[Graph, Mapping[str, np.ndarray]], None]
_OBSERVER: ContextVar[Observer | None] = ContextVar("edgec_interpret_observer", default=None)


@contextmanager
def observe_runs(fn: Observer) -> Iterator[None]:
    """``with observe_runs(fn):`` every :func:`interpret` run inside the block (a Scan's body
    runs once per iteration) reports its graph and all its values to ``fn``."""
    token = _OBSERVER.set(fn)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


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
        for k, (name, val) in enumerate(zip(node.outputs, outs, strict=False)):
            if name:
                arr = np.asarray(val, order="C")  # keeps 0-d (ascontiguousarray makes 1-d)
                shape = tuple(int(d) for d in arr.shape)
                quant = _out_quant(g, node, op, k, shape, str(arr.dtype))
                g.tensors[name] = Tensor(name, shape, str(arr.dtype), arr, quant)
        return
    try:
        results = op.infer(node, g)
    except EdgecError:
        raise
    except Exception as exc:  # a malformed node: name it
        raise EdgecError(f"node '{node.name}' ({node.op}): cannot infer shapes: {exc}") from exc
    for k, (name, (shape, dtype)) in enumerate(zip(node.outputs, results, strict=False)):
        if not name:
            continue
        old = g.tensors.get(name)
        data = old.data if old is not None else None
        out_shape = tuple(int(d) for d in shape)
        quant = _out_quant(g, node, op, k, out_shape, dtype)
        g.tensors[name] = Tensor(name, out_shape, dtype, data, quant)
    if not op.int8:
        _refuse_int8(g, node)
    if node.op not in INDEX_CONSUMERS:
        _refuse_index_math(g, node)


def _out_quant(g: Graph, node: Node, op: Op, k: int, shape: Shape, dtype: str) -> Quant | None:
    """The quantization of output ``k``: the one the front-end gave it, else, for ops that move
    data without changing it (Reshape, Transpose, Slice, Split...), input 0's (a per-channel
    axis follows the data where the op can say where it goes, see ``Op.quant_axis``)."""
    old = g.tensors.get(node.outputs[k])
    if old is not None and old.quant is not None:
        return old.quant
    if dtype not in QUANT_DTYPES or not op.quant_passthrough or not node.inputs:
        return None
    src = g.quant(node.inputs[0])
    if src is None:
        return None
    if src.axis is None:
        return src
    axis = op.quant_axis(node, g, src.axis, shape)
    return None if axis is None else Quant(src.scale, src.zero_point, axis)


def _refuse_int8(g: Graph, node: Node) -> None:
    """A float op must not be handed int8 codes: its arithmetic would ignore the quantization."""
    ints = [t for t in node.inputs if t and g.const(t) is None and g.tensor(t).dtype == "int8"]
    ints += [t for t in node.outputs if t and g.tensor(t).dtype == "int8"]
    if ints:
        from edgec.ops import REGISTRY

        capable = sorted(k for k, v in REGISTRY.items() if v.int8)
        raise UnsupportedOpError(
            f"node '{node.name}' ({node.op}): int8 tensor '{ints[0]}' is not supported by this "
            f"op (it computes in float); ops on int8 tensors: {', '.join(capable)}"
        )


def _refuse_index_math(g: Graph, node: Node) -> None:
    """Run-time int64 indices (ArgMax, TopK) live in float buffers: ops that would do integer
    arithmetic on them in float (Div, Mod...) are refused (see ops/select.py)."""
    idx = [t for t in node.inputs if t and g.const(t) is None and g.tensor(t).dtype == "int64"]
    if idx:
        raise UnsupportedOpError(
            f"node '{node.name}' ({node.op}): reads the int64 indices '{idx[0]}' computed at run "
            "time; they are held as float values, so only data movement, comparisons, Where, "
            "Add/Sub/Mul/Neg/Abs/Min/Max and Cast may use them (Cast them to float first)"
        )


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
    observer = _OBSERVER.get()
    if observer is not None:
        observer(g, values)
    return {o: values[o] for o in g.outputs}
