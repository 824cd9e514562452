"""Patch-based inference (MCUNetV2): run a chain of int8 convolutions patch by patch when that
lowers the model's peak activation memory.

In a CNN whose first layers work at full resolution, the peak of the activation arena is two
large early tensors alive together. Executing that stage one output patch at a time (each
patch's input window with its halo, recomputed where neighbouring patches overlap) keeps only
small tiles of the early tensors alive; the stage's input and output stay whole. The pass tries
every chain of ``QConv2D`` / ``QDepthwiseConv2D`` nodes (each feeding only the next) and every
patch grid that divides the chain's output, estimates the peak of live tensor bytes of the
model with the chain as a ``PatchLoop`` (``edgec.ops.patches``), and rewrites the chain that
gives the lowest peak when it is at most ``GAIN`` of the peak without patches; candidates whose
recompute exceeds option ``patch_recompute`` (a fraction of the model's MACs, default 0.3) are
not considered. Among grids within
10 % of the best peak it takes the one with the fewest MACs (the halo recompute grows as patches
shrink). The ``PatchLoop`` node records ``recompute_macs``; the compile report sums it.

Option ``patches``: ``auto`` (default) or ``off``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Tensor
from edgec.ops import get_op
from edgec.ops.patches import STAGE_OPS

OPTIONS = {
    "patches": "auto | off: execute an early int8 conv stage patch by patch (MCUNetV2-style, "
    "halo recomputed) when that lowers the peak activation memory",
    "patch_recompute": "largest halo recompute the patches pass may add, as a fraction of the "
    "model's MACs (default 0.3)",
}
#: rewrite only when the estimated peak drops to this fraction of the unpatched peak or below
GAIN = 0.8


def _bytes(g: Graph, name: str) -> int:
    t = g.tensor(name)
    return -(-t.size * np.dtype(t.dtype).itemsize // 4) * 4


@dataclass
class _Level:
    """Geometry of one conv of the chain along one axis: kernel span, stride, leading pad."""

    span: int
    stride: int
    pad: int


def _geometry(node: Node, g: Graph, axis: int) -> _Level:
    w = g.shape(node.inputs[1])
    k = w[1 + axis]
    d = int(node.attr("dilations", [1, 1])[axis])
    s = int(node.attr("strides", [1, 1])[axis])
    pad = int(node.attr("pads", [0, 0, 0, 0])[axis])
    return _Level((k - 1) * d + 1, s, pad)


@dataclass
class _Plan:
    start: int
    length: int
    grid: tuple[int, int]
    peak: int
    recompute: int  # MACs beyond the unpatched stage's


class _Chain:
    """A candidate stage: nodes[start:start+length] with tile sizes for a patch size."""

    def __init__(self, g: Graph, nodes: list[Node]):
        self.g, self.nodes = g, nodes
        self.levels = [[_geometry(n, g, a) for n in nodes] for a in (0, 1)]
        self.shapes = [g.shape(nodes[0].inputs[0])] + [g.shape(n.outputs[0]) for n in nodes]

    def tile_sizes(self, axis: int, patch: int) -> list[int]:
        sizes = [patch]
        for lv in reversed(self.levels[axis]):
            sizes.append((sizes[-1] - 1) * lv.stride + lv.span)
        return sizes[::-1]

    def origins(self, axis: int, patch: int) -> list[tuple[int, int]]:
        """(a, b): tile l starts at a * patch_index + b."""
        ab = [(patch, 0)]
        for lv in reversed(self.levels[axis]):
            a, b = ab[-1]
            ab.append((a * lv.stride, b * lv.stride - lv.pad))
        return ab[::-1]

    def tile_shapes(self, ph: int, pw: int) -> list[tuple[int, int, int, int]]:
        hs, ws = self.tile_sizes(0, ph), self.tile_sizes(1, pw)
        return [(1, h, w, s[3]) for h, w, s in zip(hs, ws, self.shapes, strict=True)]

    def tile_peak(self, ph: int, pw: int) -> int:
        shapes = self.tile_shapes(ph, pw)
        sizes = [int(np.prod(s)) for s in shapes]
        peak = 0
        for i, n in enumerate(self.nodes):
            scratch = 0
            if n.op == "QConv2D" and tuple(self.g.shape(n.inputs[1])[1:3]) != (1, 1):
                scratch = int(np.prod(self.g.shape(n.inputs[1])[1:]))
            peak = max(peak, sizes[i] + sizes[i + 1] + scratch)
        return peak

    def macs(self, ph: int, pw: int) -> int:
        shapes = self.tile_shapes(ph, pw)
        gy, gx = self.shapes[-1][1] // ph, self.shapes[-1][2] // pw
        total = 0
        for i, n in enumerate(self.nodes):
            w = self.g.shape(n.inputs[1])
            per_out = w[1] * w[2] * (w[3] if n.op == "QConv2D" else 1)
            total += int(np.prod(shapes[i + 1])) * per_out
        return gy * gx * total


def _live_steps(g: Graph) -> list[int]:
    """Bytes of arena tensors alive at each node (a planner's lower bound, scratch included)."""
    boundary = set(g.inputs) | set(g.outputs)
    last: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            if t:
                last[t] = i
    live = [0] * len(g.nodes)
    for i, n in enumerate(g.nodes):
        op = get_op(n, g)
        sc = op.scratch(n, g)
        live[i] += sc * (1 if op.scratch_ctype(n, g) == "int8_t" else 4)
        for t in n.outputs:
            if not t or t in boundary or g.const(t) is not None:
                continue
            for s in range(i, max(i, last.get(t, i)) + 1):
                live[s] += _bytes(g, t)
    return live


def _spans(g: Graph) -> dict[str, tuple[int, int]]:
    """Arena tensors: (producing node, last reading node)."""
    boundary = set(g.inputs) | set(g.outputs)
    spans: dict[str, tuple[int, int]] = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            if t in spans:
                spans[t] = (spans[t][0], i)
        for t in n.outputs:
            if t and t not in boundary and g.const(t) is None:
                spans[t] = (i, i)
    return spans


def _chains(g: Graph) -> list[tuple[int, int]]:
    """(start, length) of every chain of >= 2 stage convs, each output used only by the next."""
    uses: dict[str, int] = {}
    for n in g.nodes:
        for t in n.inputs:
            uses[t] = uses.get(t, 0) + 1
    out: list[tuple[int, int]] = []
    for s, n in enumerate(g.nodes):
        if n.op not in STAGE_OPS or len(g.shape(n.inputs[0])) != 4 or g.shape(n.inputs[0])[0] != 1:
            continue
        e = s
        while (e + 1 < len(g.nodes) and g.nodes[e + 1].op in STAGE_OPS
               and g.nodes[e + 1].inputs[0] == g.nodes[e].outputs[0]
               and uses.get(g.nodes[e].outputs[0], 0) == 1
               and g.nodes[e].outputs[0] not in g.outputs):
            e += 1
            out.append((s, e - s + 1))
    return out


def _best(g: Graph, budget: float) -> _Plan | None:
    live = _live_steps(g)
    model_macs = sum(get_op(n, g).macs(n, g) for n in g.nodes)
    spans = _spans(g)
    base = max(live, default=0)
    boundary = set(g.inputs) | set(g.outputs)
    cands: list[_Plan] = []
    for start, length in _chains(g):
        nodes = g.nodes[start : start + length]
        ch = _Chain(g, nodes)
        y = nodes[-1].outputs[0]
        # alive through the loop besides the tiles and the stage output: tensors made before
        # the stage and read in or after it (the stage input among them)
        around = sum(_bytes(g, t) for t, (made, used) in spans.items()
                     if made < start <= used)
        outside = max(live[:start] + live[start + length :], default=0)
        _, hl, wl, _ = ch.shapes[-1]
        stage_macs = sum(get_op(n, g).macs(n, g) for n in nodes)
        for ph in (d for d in range(1, hl + 1) if hl % d == 0):
            for pw in (d for d in range(1, wl + 1) if wl % d == 0):
                if (ph, pw) == (hl, wl):
                    continue
                if ch.macs(ph, pw) - stage_macs > budget * model_macs:
                    continue
                stage = around + (0 if y in boundary else _bytes(g, y)) + ch.tile_peak(ph, pw)
                cands.append(_Plan(start, length, (hl // ph, wl // pw), max(outside, stage),
                                   ch.macs(ph, pw) - stage_macs))
    if not cands:
        return None
    best = min(c.peak for c in cands)
    if best > GAIN * base:
        return None
    return min((c for c in cands if c.peak <= 1.1 * best), key=lambda c: (c.recompute, c.peak))


def patch_stage(g: Graph, start: int, length: int, grid: tuple[int, int]) -> Graph:
    """``g`` with nodes[start:start+length] (a chain of stage convs) as a PatchLoop over a
    ``grid`` (rows, columns) of patches of the chain's output."""
    nodes = g.nodes[start : start + length]
    if not (length >= 1 and len(nodes) == length and all(n.op in STAGE_OPS for n in nodes)
            and all(b.inputs[0] == a.outputs[0] for a, b in zip(nodes, nodes[1:], strict=False))):
        raise EdgecError(f"nodes {start}..{start + length - 1}: not a chain of "
                         f"{' / '.join(STAGE_OPS)} nodes")
    _, hl, wl, _ = g.shape(nodes[-1].outputs[0])
    gy, gx = grid
    if gy < 1 or gx < 1 or hl % gy or wl % gx:
        raise EdgecError(f"patch grid {gy}x{gx} does not divide the stage output {hl}x{wl}")
    ch = _Chain(g, nodes)
    stage_macs = sum(get_op(n, g).macs(n, g) for n in nodes)
    return _rewrite(g, _Plan(start, length, grid, 0, ch.macs(hl // gy, wl // gx) - stage_macs))


def _rewrite(g: Graph, plan: _Plan) -> Graph:
    g = g.copy()
    nodes = g.nodes[plan.start : plan.start + plan.length]
    ch = _Chain(g, nodes)
    gy, gx = plan.grid
    ph, pw = ch.shapes[-1][1] // gy, ch.shapes[-1][2] // gx
    name = f"{nodes[0].name}/patches"
    stage = [nodes[0].inputs[0]] + [n.outputs[0] for n in nodes]
    tiles = []
    for lvl, (t, shape) in enumerate(zip(stage, ch.tile_shapes(ph, pw), strict=True)):
        tn = f"{name}/tile{lvl}"
        src = g.tensor(t)
        g.tensors[tn] = Tensor(tn, shape, "int8", quant=src.quant)
        tiles.append(tn)
    body = [Node(n.op, f"{name}/{n.name}", [tiles[i]] + n.inputs[1:], [tiles[i + 1]],
                 {**n.attrs, "pads": [0, 0, 0, 0]}) for i, n in enumerate(nodes)]
    consts = list(dict.fromkeys(i for n in nodes for i in n.inputs[1:] if i))
    loop = Node("PatchLoop", name, [stage[0], *consts], [stage[-1]], {
        "body": body,
        "tiles": tiles,
        "grid": [gy, gx],
        "rows": [list(ab) for ab in ch.origins(0, ph)],
        "cols": [list(ab) for ab in ch.origins(1, pw)],
        "full": [[s[1], s[2]] for s in ch.shapes],
        "recompute_macs": plan.recompute,
    })
    g.nodes[plan.start : plan.start + plan.length] = [loop]
    for t in stage[1:-1]:
        del g.tensors[t]
    return g


def patch_early_stage(g: Graph) -> Graph:
    mode = str(g.options.get("patches", "auto"))
    if mode not in ("auto", "off"):
        raise EdgecError(f"option patches={mode!r}: expected auto or off")
    if mode == "off" or not any(n.op in STAGE_OPS for n in g.nodes):
        return g
    try:
        budget = float(g.options.get("patch_recompute", 0.3))
    except (TypeError, ValueError):
        budget = -1.0
    if not budget >= 0:
        raise EdgecError(f"option patch_recompute={g.options.get('patch_recompute')!r}: "
                         f"expected a fraction >= 0 of the model's MACs")
    plan = _best(g, budget)
    return g if plan is None else _rewrite(g, plan)
