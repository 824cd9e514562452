"""Sparse weights: a Gemm / MatMul with a constant, mostly-zero weight matrix → ``SparseLinear``.

Exporters fold wiring and pruning masks into dense matrices; this pass recovers the structure
from the zeros so flash is proportional to the non-zeros (CSR tables, see
:mod:`edgec.ops.circuits`). Compile option ``sparse`` (``g.options``, CLI ``--option
sparse=...``): ``auto`` (default) stores a matrix as CSR when :func:`prefer_sparse` says the
tables are small enough (the rule the ncps handlers use), ``csr`` whenever it has a zero,
``dense`` never. Skipping exact zeros changes no sum except that ``0 · inf`` (NaN in the dense
kernel) is not formed.

Converted: ``Gemm`` with ``transA = 0``, a constant B and either no C or a constant C that is one
value per output column (``alpha`` and ``beta`` folded in, ``transB`` honoured); ``MatMul`` with a
constant 2-D right-hand side (any leading dims of the left-hand side are rows). Float32 only.
The pass runs before activation fusion; ``SparseLinear`` is fusable.
"""

from __future__ import annotations

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph, Node
from edgec.ops.circuits import use_sparse

SPARSE_MODES = ("auto", "csr", "dense")

#: compile options this module reads (collected by :func:`edgec.api.known_options`)
OPTIONS = {
    "sparse": "auto | csr | dense: how constant weights with zeros are stored "
    "(default auto: CSR when it saves flash)"
}


def sparse_mode(g: Graph) -> str:
    """The graph's ``sparse`` option, checked."""
    mode = str(g.options.get("sparse", "auto"))
    if mode not in SPARSE_MODES:
        raise EdgecError(
            f"option sparse={g.options['sparse']!r} is not supported; "
            f"use one of {', '.join(SPARSE_MODES)}"
        )
    return mode


def _gemm_weights(node: Node, g: Graph) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(W [N, K], bias [N] or None) of a Gemm that a dense layer computes, else None."""
    if node.attr("transA", 0) or len(g.shape(node.inputs[0])) != 2:
        return None
    b = g.const(node.inputs[1])
    if b is None or b.ndim != 2:
        return None
    w = b if node.attr("transB", 0) else b.T
    w = np.float32(node.attr("alpha", 1.0)) * np.asarray(w, np.float32)
    n = int(w.shape[0])
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if not c_name:
        return w, None
    c = g.const(c_name)
    if c is None:
        return None
    per_column = c.size == n and (c.ndim < 2 or c.shape[0] == 1)
    if not (per_column or c.size == 1):
        return None
    bias = np.float32(node.attr("beta", 1.0)) * np.asarray(c, np.float32).reshape(-1)
    return w, np.ascontiguousarray(np.broadcast_to(bias, (n,)), np.float32)


def _matmul_weights(node: Node, g: Graph) -> tuple[np.ndarray, None] | None:
    """(W [N, K], None) of a MatMul with a constant 2-D right-hand side, else None."""
    b = g.const(node.inputs[1])
    if b is None or b.ndim != 2 or not g.shape(node.inputs[0]):
        return None
    return np.asarray(b, np.float32).T, None


def _sparse_weights(node: Node, g: Graph, mode: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The (W, bias) of a node worth storing sparsely under ``mode``, else None."""
    if node.op not in ("Gemm", "MatMul") or len(node.outputs) != 1:
        return None
    if any(g.tensor(t).dtype != "float32" for t in node.inputs[:2]):
        return None
    parts = _gemm_weights(node, g) if node.op == "Gemm" else _matmul_weights(node, g)
    if parts is None:
        return None
    w = parts[0]
    if w.size == 0 or np.count_nonzero(w) == w.size or not use_sparse(w, mode):
        return None
    return parts


def use_sparse_weights(g: Graph) -> Graph:
    """Gemm / MatMul nodes whose constant weights are sparse enough → ``SparseLinear``."""
    mode = sparse_mode(g)
    if mode == "dense":
        return g
    found = [(i, parts) for i, n in enumerate(g.nodes)
             if (parts := _sparse_weights(n, g, mode)) is not None]
    if not found:
        return g
    g = g.copy()
    for idx, (w, bias) in found:
        node = g.nodes[idx]
        ins = [node.inputs[0], g.add_const(f"{node.name}_csr_w", np.ascontiguousarray(w))]
        if bias is not None:
            ins.append(g.add_const(f"{node.name}_csr_b", bias))
        kept = {k: v for k, v in node.attrs.items() if k.startswith("_")}  # e.g. a fused ``_act``
        g.nodes[idx] = Node("SparseLinear", node.name, ins, list(node.outputs), kept)
    return g
