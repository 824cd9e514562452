"""Forward-mode Jacobians as an IR transformation.

``add_jacobian(g, wrt, indices)`` returns a graph that also outputs J = ∂y/∂u for every output
y, where u are selected elements (``indices``, flat within the non-batch dimensions) of the graph
input ``wrt``. Every tensor t gets a tangent of shape (p,) + t.shape[1:] (p = len(indices); the
batch dimension must be 1): row i is ∂t/∂u_i. Each op has a rule that builds its tangent from
existing IR ops — a Gemm's tangent is the same Gemm without bias applied to p rows, an
activation's is f'(x) ⊙ ẋ (``ActGrad``) — so the C back-end, the memory planner and the numpy
interpreter handle the derivative code like any other, and the cost is a small multiple of one
inference (exact, no finite differences). Constant subexpressions fold: the first layer's tangent
of a seed selecting input columns is a constant table.

J is returned as an extra output named ``d_<y>__d_<wrt>`` of shape (N, p), N = size of y:
J[n][i] = ∂y_n/∂u_i.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph, Node
from edgec.ops.interpret import infer_node
from edgec.ops.unary import DERIV, DERIV_FROM_OUTPUT, unary_params

LINEAR_VIEWS = {"Identity", "Dropout"}
ZERO_TANGENT = ""  # marks "no dependence on u"


class _Builder:
    def __init__(self, g: Graph, p: int):
        self.g = g
        self.p = p
        self.nodes: list[Node] = []
        self.count = 0

    def add(
        self, op: str, inputs: Sequence[str], attrs: dict | None = None, base: str = "jvp"
    ) -> str:
        self.count += 1
        out = self.g.fresh_name(f"{base}_d{self.count}")
        self.g.tensors[out] = self.g.tensors[inputs[0]].__class__(out, ())
        node = Node(op, f"jvp{self.count}_{op}", list(inputs), [out], dict(attrs or {}))
        self.g.nodes.append(node)
        infer_node(self.g, node)
        return out

    def const(self, arr: np.ndarray, base: str) -> str:
        return self.g.add_const(self.g.fresh_name(base), arr)

    def ints(self, v: Sequence[int]) -> str:
        return self.const(np.asarray(list(v), np.int64), "jvp_shape")


def _err(node: Node, what: str) -> EdgecError:
    return EdgecError(
        f"node '{node.name}' ({node.op}): cannot differentiate {what}; forward-mode Jacobians "
        f"support Gemm, MatMul, Conv, Add, Sub, Mul, Div, BatchNormalization, Concat, Reshape, "
        f"Flatten, Slice, Squeeze, Unsqueeze, Transpose, Identity and the unary activations"
    )


def add_jacobian(
    g: Graph, wrt: str, indices: Sequence[int] | None = None, outputs: Sequence[str] | None = None
) -> Graph:
    g = g.copy()
    if wrt not in g.inputs:
        raise EdgecError(f"jacobian: '{wrt}' is not a graph input (inputs: {', '.join(g.inputs)})")
    shape = g.shape(wrt)
    if not shape or shape[0] != 1:
        raise EdgecError(
            f"jacobian: input '{wrt}' must have a leading batch dimension of 1, "
            f"got shape {list(shape)}"
        )
    inner = int(np.prod(shape[1:], dtype=np.int64))
    idx = list(range(inner)) if indices is None else [int(i) for i in indices]
    if not idx or any(i < 0 or i >= inner for i in idx):
        raise EdgecError(f"jacobian: indices {idx} out of range for input '{wrt}' ({inner} values)")
    p = len(idx)
    b = _Builder(g, p)
    seed = np.zeros((p, inner), np.float32)
    seed[np.arange(p), idx] = 1.0
    tan: dict[str, str] = {wrt: b.const(seed.reshape((p,) + tuple(shape[1:])), f"seed_{wrt}")}
    original = list(g.nodes)
    for node in original:
        if not any(t in tan for t in node.inputs if t):
            continue
        _rule(b, node, tan)
    outs = (
        list(outputs)
        if outputs is not None
        else [o for o in g.outputs if all(o != s for _, s in g.state)]
    )
    for y in outs:
        n_y = int(np.prod(g.shape(y)[1:], dtype=np.int64)) if g.shape(y) else 1
        t = tan.get(y)
        if t is None:
            jac = b.const(np.zeros((n_y, p), np.float32), f"d_{y}__d_{wrt}_zero")
        else:
            flat = b.add("Reshape", [t, b.ints([p, n_y])])
            jac = b.add("Transpose", [flat], {"perm": [1, 0]})
        name = f"d_{y}__d_{wrt}"
        ident = Node("Identity", g.fresh_name(f"{name}_out"), [jac], [name])
        g.tensors[name] = g.tensors[jac].__class__(name, ())
        g.nodes.append(ident)
        infer_node(g, ident)
        g.outputs.append(name)
    return g


def _bcast_ok(g: Graph, node: Node, t_in: str) -> None:
    if g.shape(t_in)[1:] != g.shape(node.outputs[0])[1:] and len(g.shape(t_in)) == len(
        g.shape(node.outputs[0])
    ):
        raise _err(node, "a broadcast of a u-dependent operand")


def _rule(b: _Builder, node: Node, tan: dict[str, str]) -> None:
    g = b.g
    op = node.op
    ins = node.inputs
    y = node.outputs[0]
    t = [tan.get(i) if i else None for i in ins]
    if op in ("Gemm",):
        if node.attr("transA", 0) or t[1] is not None or (len(ins) > 2 and t[2] is not None):
            raise _err(node, "a Gemm whose weights or bias depend on u")
        attrs = {k: v for k, v in node.attrs.items() if k in ("transB", "alpha")}
        tan[y] = b.add("Gemm", [t[0], ins[1]], attrs)
    elif op == "MatMul":
        if t[1] is not None or len(g.shape(ins[0])) < 2:
            raise _err(node, "a MatMul with a u-dependent right operand")
        tan[y] = b.add("MatMul", [t[0], ins[1]])
    elif op in ("Conv", "ConvTranspose"):
        if t[1] is not None or (len(ins) > 2 and ins[2] and t[2] is not None):
            raise _err(node, "a convolution whose weights depend on u")
        attrs = {k: v for k, v in node.attrs.items() if not k.startswith("_")}
        tan[y] = b.add(op, [t[0], ins[1]], attrs)
    elif op in ("Add", "Sub"):
        parts = []
        for k in (0, 1):
            if t[k] is not None:
                _bcast_ok(g, node, ins[k])
                parts.append(t[k] if (k == 0 or op == "Add") else b.add("Neg", [t[k]]))
        tan[y] = parts[0] if len(parts) == 1 else b.add("Add", parts)
    elif op == "Mul":
        parts = []
        for k, other in ((0, 1), (1, 0)):
            if t[k] is not None:
                _bcast_ok(g, node, ins[k])
                parts.append(b.add("Mul", [t[k], ins[other]]))
        tan[y] = parts[0] if len(parts) == 1 else b.add("Add", parts)
    elif op == "Div":
        parts = []
        if t[0] is not None:
            _bcast_ok(g, node, ins[0])
            parts.append(b.add("Div", [t[0], ins[1]]))
        if t[1] is not None:  # -(a / b^2) * db = -(y / b) * db
            _bcast_ok(g, node, ins[1])
            q = b.add("Div", [y, ins[1]])
            parts.append(b.add("Neg", [b.add("Mul", [t[1], q])]))
        tan[y] = parts[0] if len(parts) == 1 else b.add("Add", parts)
    elif op in DERIV:
        if any(x is not None for x in t[1:]):
            raise _err(node, f"{op} with u-dependent parameters")
        params = unary_params(node, g)
        if op == "Gelu" and params.get("tanh"):
            raise _err(node, "Gelu with approximate='tanh'")
        if op in DERIV_FROM_OUTPUT:  # f' from the forward output: no second tanhf/expf
            d = b.add("ActGrad", [y], {"kind": op, "params": params, "from_output": 1})
        else:
            d = b.add("ActGrad", [ins[0]], {"kind": op, "params": params})
        tan[y] = b.add("Mul", [t[0], d])
    elif op == "BatchNormalization":
        scale, _bias, _mean, var = (g.const(i) for i in ins[1:5])
        if any(v is None for v in (scale, var)) or any(x is not None for x in t[1:]):
            raise _err(node, "BatchNormalization with run-time statistics")
        s = scale / np.sqrt(var.astype(np.float64) + float(node.attr("epsilon", 1e-5)))
        rank = len(g.shape(ins[0]))
        tan[y] = b.add(
            "Mul",
            [t[0], b.const(s.astype(np.float32).reshape((-1,) + (1,) * (rank - 2)), "jvp_bn")],
        )
    elif op in LINEAR_VIEWS:
        tan[y] = t[0]
    elif op in ("Reshape", "Flatten"):
        out_shape = g.shape(y)
        if not out_shape or out_shape[0] != 1:
            raise _err(node, "a reshape that moves the batch dimension")
        tan[y] = b.add("Reshape", [t[0], b.ints((b.p,) + tuple(out_shape[1:]))])
    elif op == "Concat":
        axis = int(node.attr("axis", 0))
        if axis % len(g.shape(y)) == 0:
            raise _err(node, "a Concat along the batch dimension")
        parts = []
        for k, i in enumerate(ins):
            if t[k] is not None:
                parts.append(t[k])
            else:
                zeros = np.zeros((b.p,) + tuple(g.shape(i)[1:]), np.float32)
                parts.append(b.const(zeros, "jvp_zero"))
        tan[y] = b.add("Concat", parts, {"axis": axis})
    elif op in ("Slice", "Squeeze", "Unsqueeze", "Transpose"):
        if any(x is not None for x in t[1:]):
            raise _err(node, f"{op} with u-dependent parameters")
        if _touches_batch(g, node):
            raise _err(node, f"a {op} that involves the batch dimension")
        attrs = {k: v for k, v in node.attrs.items() if not k.startswith("_")}
        tan[y] = b.add(op, [t[0], *ins[1:]], attrs)
    else:
        raise _err(node, f"op {op}")


def _touches_batch(g: Graph, node: Node) -> bool:
    """Whether a data-movement node reads or writes along axis 0 (the tangent's p axis)."""
    rank_in, rank_out = len(g.shape(node.inputs[0])), len(g.shape(node.outputs[0]))
    if node.op == "Transpose":
        perm = node.attr("perm") or list(range(rank_in))[::-1]
        return int(perm[0]) != 0
    axes_src = (
        node.inputs[3] if node.op == "Slice" else (node.inputs[1] if len(node.inputs) > 1 else "")
    )
    axes = g.const(axes_src) if axes_src else node.attr("axes")
    if axes is None:
        if node.op == "Slice" and g.const(node.inputs[1]) is not None:
            axes = list(range(len(g.const(node.inputs[1]))))  # type: ignore[arg-type]
        else:
            return True
    rank = rank_out if node.op == "Unsqueeze" else rank_in
    return any(int(a) % rank == 0 for a in np.asarray(axes).reshape(-1))


def _gemm_weights(node: Node, g: Graph) -> tuple[str, int, float] | None:
    """(weights, transB, alpha) of a Gemm with constant weights and no transA, else None."""
    if node.op != "Gemm" or node.attr("transA", 0) or g.const(node.inputs[1]) is None:
        return None
    return node.inputs[1], int(node.attr("transB", 0)), float(node.attr("alpha", 1.0))


def _reaches(producers: dict[str, Node], tensor: str, node: Node) -> bool:
    """Whether ``tensor`` is computed from an output of ``node`` (walks producers back)."""
    seen: set[str] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        p = producers.get(t)
        if p is node:
            return True
        if p is not None:
            stack.extend(i for i in p.inputs if i)
    return False


def fuse_tangent_gemms(g: Graph) -> Graph:
    """A dense layer ``y = act(Gemm(x, W, b))`` of one row and the tangent of it that
    :func:`add_jacobian` built (``Gemm(dx, W)``, then ``Mul`` by ``ActGrad(y)`` when there is an
    activation whose derivative comes from its output) → one ``GemmJvp`` node: the layer and
    its p tangent rows from one walk over W (runs after ``fuse_activations``)."""
    g = g.copy()
    consumers = g.consumers()
    producers = g.producers()
    fused: list[tuple[Node, Node, Node | None, Node | None]] = []
    used: set[int] = set()
    for tg in g.nodes:
        key = _gemm_weights(tg, g)
        if (key is None or id(tg) in used or "_act" in tg.attrs
                or (len(tg.inputs) > 2 and tg.inputs[2])):
            continue
        fwd = next((n for n in consumers.get(tg.inputs[1], []) if n is not tg
                    and _gemm_weights(n, g) == key and id(n) not in used), None)
        if fwd is None or g.shape(fwd.inputs[0])[0] != 1 or g.const(tg.inputs[0]) is not None:
            continue
        if g.shape(fwd.inputs[0])[1:] != g.shape(tg.inputs[0])[1:]:
            continue
        # Two Gemms on one weight table need not be a layer and its tangent (an unrolled RNN
        # multiplies every step's state by the same recurrent weights): one node computes
        # both only where neither reads what the other writes.
        if _reaches(producers, tg.inputs[0], fwd) or _reaches(producers, fwd.inputs[0], tg):
            continue
        c = g.const(fwd.inputs[2]) if len(fwd.inputs) > 2 and fwd.inputs[2] else None
        n_out = g.shape(fwd.outputs[0])[1]
        if len(fwd.inputs) > 2 and fwd.inputs[2] and (c is None or c.size not in (1, n_out)):
            continue
        act = fwd.attrs.get("_act")
        grad = mul = None
        if act is not None:
            if act[0] not in DERIV_FROM_OUTPUT:
                continue
            s_users = consumers.get(tg.outputs[0], [])
            mul = s_users[0] if len(s_users) == 1 and s_users[0].op == "Mul" else None
            if mul is None or "_act" in mul.attrs or tg.outputs[0] in g.outputs:
                continue
            other = mul.inputs[1] if mul.inputs[0] == tg.outputs[0] else mul.inputs[0]
            grad = producers.get(other)
            if (grad is None or grad.op != "ActGrad" or not grad.attrs.get("from_output")
                    or grad.attrs["kind"] != act[0] or grad.inputs[0] != fwd.outputs[0]
                    or len(consumers.get(other, [])) != 1 or other in g.outputs
                    or g.shape(mul.outputs[0]) != g.shape(tg.outputs[0])):
                continue
        used.update({id(fwd), id(tg)})
        fused.append((fwd, tg, grad, mul))
    pre: list[tuple[Node, str, Node, Node]] = []  # the seed's layer: tangent folded to a table
    for mul in g.nodes:
        if mul.op != "Mul" or "_act" in mul.attrs or len(mul.inputs) != 2:
            continue
        k_const = 0 if g.const(mul.inputs[0]) is not None else 1
        table, other = mul.inputs[k_const], mul.inputs[1 - k_const]
        grad = producers.get(other)
        if g.const(table) is None or grad is None or grad.op != "ActGrad":
            continue
        fwd = producers.get(grad.inputs[0])
        if (fwd is None or id(fwd) in used or _gemm_weights(fwd, g) is None
                or fwd.attrs.get("_act") is None or not grad.attrs.get("from_output")
                or grad.attrs["kind"] != fwd.attrs["_act"][0]
                or g.shape(fwd.inputs[0])[0] != 1 or len(consumers.get(other, [])) != 1
                or other in g.outputs or len(g.shape(table)) != 2
                or g.shape(table)[1:] != g.shape(fwd.outputs[0])[1:]
                or g.shape(mul.outputs[0]) != g.shape(table)):
            continue
        if len(fwd.inputs) > 2 and fwd.inputs[2]:
            c = g.const(fwd.inputs[2])
            if c is None or c.size not in (1, g.shape(fwd.outputs[0])[1]):
                continue
        used.add(id(fwd))
        pre.append((fwd, table, grad, mul))
    if not fused and not pre:
        return g
    drop: set[int] = set()
    jobs = [(f, t.inputs[0], t, gr, m, 0) for f, t, gr, m in fused]
    jobs += [(f, table, None, gr, m, 1) for f, table, gr, m in pre]
    for fwd, dx, tg, grad, mul, from_table in jobs:
        bias = fwd.inputs[2] if len(fwd.inputs) > 2 else ""
        dy = mul.outputs[0] if mul is not None else tg.outputs[0]
        attrs = {k: v for k, v in fwd.attrs.items() if k in ("transB", "alpha", "beta", "_act")}
        if from_table:
            attrs["_pre_tangent"] = 1
        node = Node("GemmJvp", f"{fwd.name}_jvp", [fwd.inputs[0], fwd.inputs[1], bias, dx],
                    [fwd.outputs[0], dy], attrs)
        g.nodes[g.nodes.index(fwd)] = node
        drop.update(id(n) for n in (tg, grad, mul) if n is not None)
        for n in (tg, grad):
            if n is not None and n.outputs[0] != dy:
                del g.tensors[n.outputs[0]]
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    g.toposort()
    return g
