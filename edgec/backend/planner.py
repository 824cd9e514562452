"""Static memory planning: every run-time tensor gets an offset in ONE activation arena.

Tensors whose lifetimes do not overlap share memory. View ops (Reshape, Flatten, ...) alias their
input; elementwise ops write over an input that dies at that node (in place). Buffers are placed
greedily by size (largest first, each at the lowest offset that does not collide with a buffer
alive at the same time). The lower bound is the largest total of buffers alive at one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgec.ir import Graph
from edgec.ops import get_op


@dataclass
class Buffer:
    size: int  # floats
    start: int
    end: int
    tensors: list[str] = field(default_factory=list)
    offset: int = -1


@dataclass
class MemoryPlan:
    offsets: dict[str, int]  # tensor name → float offset in the arena
    scratch: dict[int, int]  # node index → float offset of its scratch buffer
    aliased: set[str]  # view outputs that share their input's memory (no copy emitted)
    inplace: set[str]  # outputs written over their (dying) input 0
    arena_floats: int
    lower_bound_floats: int

    @property
    def arena_bytes(self) -> int:
        return 4 * self.arena_floats

    @property
    def lower_bound_bytes(self) -> int:
        return 4 * self.lower_bound_floats


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
            size = g.tensor(t).size
            src_buf = buf_of.get(src) if k == 0 else None
            if src_buf is not None and op.view and src_buf.size == size:
                src_buf.tensors.append(t)
                buf_of[t] = src_buf
                aliased.add(t)
                continue
            if (
                src_buf is not None
                and op.inplace(n, g)
                and src_buf.size == size
                and members_end(src_buf) <= i
                and src not in n.inputs[1:]
            ):
                src_buf.tensors.append(t)
                buf_of[t] = src_buf
                inplace.add(t)
                continue
            b = Buffer(size, i, i, [t])
            buffers.append(b)
            buf_of[t] = b
        sc = op.scratch(n, g)
        if sc:
            b = Buffer(sc, i, i, [])
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
        arena_floats=arena,
        lower_bound_floats=lower,
    )
