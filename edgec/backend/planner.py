"""Static memory planning: every run-time tensor gets an offset in ONE activation arena.

The arena is planned in bytes: every buffer starts at a multiple of ``ALIGN`` bytes (so float
tensors stay float-aligned and int8 tensors take a quarter of a float tensor's space).
Tensors whose lifetimes do not overlap share memory. View ops (Reshape, Flatten, ...) alias their
input; elementwise ops write over an input that dies at that node (in place: input 0, or
for binary ops either operand of the output's shape). Buffers are placed
greedily by size (largest first, each at the lowest offset that does not collide with a buffer
alive at the same time). The lower bound is the largest total of buffers alive at one step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgec.ir import Graph, Node
from edgec.ops import get_op

#: every buffer's offset and size are multiples of this many bytes
ALIGN = 4

_CTYPE_BYTES = {"float": 4, "int32_t": 4, "int16_t": 2, "int8_t": 1, "uint8_t": 1}


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def tensor_bytes(g: Graph, name: str) -> int:
    """Arena bytes of a run-time tensor (booleans computed at run time are 0/1 floats)."""
    t = g.tensor(name)
    item = 4 if t.dtype == "bool" else np.dtype(t.dtype).itemsize
    return t.size * item


@dataclass
class Buffer:
    size: int  # bytes (a multiple of ALIGN)
    start: int
    end: int
    tensors: list[str] = field(default_factory=list)
    offset: int = -1


@dataclass
class MemoryPlan:
    offsets: dict[str, int]  # tensor name → byte offset in the arena (a multiple of ALIGN)
    scratch: dict[int, int]  # node index → byte offset of its scratch buffer
    aliased: set[str]  # view outputs that share their input's memory (no copy emitted)
    inplace: set[str]  # outputs written over their (dying) input 0
    arena_bytes: int
    lower_bound_bytes: int

    @property
    def arena_floats(self) -> int:
        """The arena's size in floats (the C arena is a float array, see c_emit)."""
        return -(-self.arena_bytes // 4)

    @property
    def lower_bound_floats(self) -> int:
        return -(-self.lower_bound_bytes // 4)


def _inplace_over(n: Node, candidates: tuple[int, ...], buf_of: dict[str, Buffer],
                  size: int, i: int, members_end: Callable[[Buffer], int]) -> Buffer | None:
    """The buffer of the first candidate input of ``n`` (node ``i``) that output 0 may be
    written over: the same size, read by no later node, and not read twice by ``n``."""
    for k in candidates:
        src = n.inputs[k] if k < len(n.inputs) else ""
        b = buf_of.get(src)
        if (b is not None and b.size == size and members_end(b) <= i
                and n.inputs.count(src) == 1):
            return b
    return None


def plan_memory(g: Graph) -> MemoryPlan:
    boundary = set(g.inputs) | set(g.outputs)
    last_use: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            if t:
                last_use[t] = i
    buf_of: dict[str, Buffer] = {}
    buffers: list[Buffer] = []
    scratch_bufs: dict[int, Buffer] = {}
    aliased: set[str] = set()
    inplace: set[str] = set()

    def members_end(b: Buffer) -> int:
        return max(last_use.get(t, b.start) for t in b.tensors)

    for i, n in enumerate(g.nodes):
        op = get_op(n, g)
        src = n.inputs[0] if n.inputs else ""
        for k, t in enumerate(n.outputs):
            if not t or t in boundary or g.const(t) is not None:
                continue
            size = _aligned(tensor_bytes(g, t))
            src_buf = buf_of.get(src) if k == 0 else None
            if src_buf is not None and op.view and src_buf.size == size:
                src_buf.tensors.append(t)
                buf_of[t] = src_buf
                aliased.add(t)
                continue
            over = _inplace_over(n, op.inplace_inputs(n, g), buf_of, size, i,
                                 members_end) if k == 0 else None
            if over is not None:
                over.tensors.append(t)
                buf_of[t] = over
                inplace.add(t)
                continue
            b = Buffer(size, i, i, [t])
            buffers.append(b)
            buf_of[t] = b
        sc = op.scratch(n, g)
        if sc:
            b = Buffer(_aligned(sc * _CTYPE_BYTES[op.scratch_ctype(n, g)]), i, i, [])
            scratch_bufs[i] = b
            buffers.append(b)
    for b in buffers:
        if b.tensors:
            b.end = max(b.start, members_end(b))

    steps = len(g.nodes)
    live = [0] * max(steps, 1)
    for b in buffers:
        for s in range(b.start, b.end + 1):
            live[s] += b.size
    lower = max(live) if buffers else 0

    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.start, b.end)):
        overlapping = sorted(
            (p for p in placed if p.start <= b.end and b.start <= p.end), key=lambda p: p.offset
        )
        off = 0
        for p in overlapping:
            if off + b.size <= p.offset:
                break
            off = max(off, p.offset + p.size)
        b.offset = off
        placed.append(b)
    arena = max((b.offset + b.size for b in buffers), default=0)
    offsets = {t: b.offset for b in buffers for t in b.tensors}
    return MemoryPlan(
        offsets=offsets,
        scratch={i: b.offset for i, b in scratch_bufs.items()},
        aliased=aliased,
        inplace=inplace,
        arena_bytes=arena,
        lower_bound_bytes=lower,
    )
