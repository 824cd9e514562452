"""C loop nests shared by kernels: broadcasting walks over coalesced dimensions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edgec.ir import Shape
from edgec.ops.base import strides


def broadcast_strides(in_shape: Shape, out_shape: Shape) -> list[int]:
    """Element strides of an input read at every output index (0 along broadcast dims)."""
    rank = len(out_shape)
    padded = (1,) * (rank - len(in_shape)) + tuple(in_shape)
    st = strides(padded)
    return [0 if padded[k] == 1 and out_shape[k] != 1 else st[k] for k in range(rank)]


def coalesce(
    out_shape: Shape, operand_strides: Sequence[list[int]]
) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dimensions that every operand walks contiguously; drop size-1 dims."""
    dims: list[int] = []
    sts: list[list[int]] = [[] for _ in operand_strides]
    for k, d in enumerate(out_shape):
        if d == 1:
            continue
        if dims and all(s[-1] == st[k] * d for s, st in zip(sts, operand_strides, strict=True)):
            dims[-1] *= d
            for s, st in zip(sts, operand_strides, strict=True):
                s[-1] = st[k]
            continue
        dims.append(int(d))
        for s, st in zip(sts, operand_strides, strict=True):
            s.append(st[k])
    return dims, sts


def broadcast_loop(
    out_shape: Shape, in_shapes: Sequence[Shape], body: Callable[[list[str], str], str]
) -> str:
    """A loop nest over ``out_shape``; ``body(input_index_exprs, output_index_expr)`` is C code.

    The output is walked contiguously; each input index follows its broadcast strides.
    """
    operand = [broadcast_strides(s, out_shape) for s in in_shapes] + [strides(out_shape)]
    dims, sts = coalesce(out_shape, operand)
    if not dims:
        return body(["0"] * len(in_shapes), "0")
    lines: list[str] = []
    idx: list[list[str]] = [[] for _ in sts]
    for k, d in enumerate(dims):
        v = f"i{k}"
        lines.append("    " * k + f"for (int {v} = 0; {v} < {d}; ++{v}) {{")
        for j, s in enumerate(sts):
            if s[k]:
                idx[j].append(v if s[k] == 1 else f"{v} * {s[k]}")
    exprs = [" + ".join(terms) if terms else "0" for terms in idx]
    inner = body(exprs[:-1], exprs[-1])
    pad = "    " * len(dims)
    lines.extend(pad + line for line in inner.rstrip("\n").split("\n"))
    for k in range(len(dims) - 1, -1, -1):
        lines.append("    " * k + "}")
    return "\n".join(lines) + "\n"
