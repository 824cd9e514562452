"""Einsum with a constant equation (ONNX ``Einsum``, ``torch.einsum``).

edgec has no Einsum kernel: :mod:`edgec.passes.einsum` lowers each node to the existing ops
(Transpose, Reshape, ReduceSum and MatMul; an outer product is a MatMul with K = 1) before the
back-end runs. This module parses the equation once for both: explicit (``ij,jk->ik``) and
implicit (``ij,jk``: the indices that appear once, sorted) forms, ``...`` for leading
dimensions (the same sizes in every operand: no broadcasting inside ``...``), any number of
operands (contracted left to right). A repeated index inside one operand (a diagonal or trace,
``ii->i``) and size mismatches are refused at import with the node named.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, register, unsupported
from edgec.ops.shape_ops import shape_error

#: characters that stand for the dimensions of ``...`` (never letters of an equation)
_ELLIPSIS_BASE = 0x3B1  # Greek small alpha onwards


@dataclass(frozen=True)
class Equation:
    """One index string per operand and the output's, ``...`` expanded to private letters."""

    operands: tuple[str, ...]
    output: str
    sizes: dict[str, int]


def parse_equation(node: Node, shapes: list[Shape]) -> Equation:
    eq = str(node.attr("equation", "")).replace(" ", "")
    if not eq:
        raise shape_error(node, "Einsum needs its 'equation' attribute")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise shape_error(node, f"equation '{eq}' has {len(terms)} operand(s), the node "
                          f"{len(shapes)}")
    for t in [*terms, rhs]:
        bad = set(t.replace("...", "")) - set(string.ascii_letters)
        if bad or t.count("...") > 1:
            raise shape_error(node, f"equation '{eq}': malformed term '{t}'")
    n_ell = 0
    operands: list[str] = []
    sizes: dict[str, int] = {}
    for t, shape in zip(terms, shapes, strict=True):
        letters = t.replace("...", "")
        rank_ell = len(shape) - len(letters)
        if rank_ell < 0 or (rank_ell > 0 and "..." not in t):
            raise shape_error(node, f"equation '{eq}': term '{t}' does not fit an operand of "
                              f"rank {len(shape)}")
        n_ell = max(n_ell, rank_ell)
        ell = "".join(chr(_ELLIPSIS_BASE + n_ell - rank_ell + i) for i in range(rank_ell))
        full = t.replace("...", ell)
        if len(set(full)) != len(full):
            raise unsupported(node, f"equation '{eq}': an index repeated inside one operand "
                              f"('{t}', a diagonal or trace) is not supported")
        for c, d in zip(full, shape, strict=True):
            if sizes.setdefault(c, int(d)) != int(d):
                what = "'...'" if ord(c) >= _ELLIPSIS_BASE else f"index '{c}'"
                raise shape_error(node, f"equation '{eq}': {what} has sizes {sizes[c]} and {d} "
                                  f"(no broadcasting inside Einsum)")
        operands.append(full)
    all_ell = "".join(chr(_ELLIPSIS_BASE + i) for i in range(n_ell))
    if arrow:
        output = rhs.replace("...", all_ell)
    else:
        counts: dict[str, int] = {}
        for t in operands:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        output = all_ell + "".join(sorted(c for c, k in counts.items()
                                          if k == 1 and ord(c) < _ELLIPSIS_BASE))
    if len(set(output)) != len(output) or any(c not in sizes for c in output):
        raise shape_error(node, f"equation '{eq}': the output '{rhs}' repeats an index or "
                          f"names one no operand has")
    return Equation(tuple(operands), output, sizes)


def equation_of(node: Node, g: Graph) -> Equation:
    return parse_equation(node, [g.shape(i) for i in node.inputs])


@register
class Einsum(Op):
    types = ("Einsum",)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        if not node.inputs:
            raise shape_error(node, "Einsum needs at least one operand")
        eq = equation_of(node, g)
        return [(tuple(eq.sizes[c] for c in eq.output), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        assert all(x is not None for x in inputs)
        eq = str(node.attr("equation")).replace(" ", "")
        return [np.asarray(np.einsum(eq, *inputs)).astype(np.float32)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise unsupported(node, "Einsum reaches the C back-end only lowered "
                          "(edgec.passes.lower_einsum)")
