"""PatchLoop: a stage of int8 convolutions executed patch by patch (MCUNetV2-style patch-based
inference), so the stage's full-resolution intermediate tensors never exist in RAM.

``PatchLoop(x, weights and biases...) -> y``: the stage is a chain of ``QConv2D`` /
``QDepthwiseConv2D`` nodes (attribute ``body``: the chain rewritten to work on tiles, unpadded)
from ``x`` [1, H0, W0, C0] to ``y`` [1, HL, WL, CL]. ``y`` is cut into a ``grid`` of equal
``(ph, pw)`` patches; for each patch the stage runs on tiles ``tiles[0..L]`` (tensor names in the
graph, ``tiles[l]`` a [1, th_l, tw_l, C_l] window of the stage's l-th tensor with its halo):
tile 0 is gathered from ``x``, each body node computes the next tile from the previous one, and
the last tile is the patch of ``y``. Tile l starts at row ``py * rows[l][0] + rows[l][1]`` and
column ``px * cols[l][0] + cols[l][1]`` of its full-size tensor (``full[l]`` = (H_l, W_l)).
Positions of a tile outside its full-size tensor are the convolutions' padding: they hold the
tensor's zero point, which a TFLite int8 convolution counts as zero (it skips padding taps, and
``w * (zp - zp) = 0``), so every patch is bit-exact. The halo rows and columns neighbouring
patches share are computed again by each: ``recompute_macs`` (attribute) is the extra work.

The C back-end does not emit a PatchLoop as one kernel: :func:`expand` replaces it by
``PatchBegin`` (opens ``for (int pD = 0; pD < GY * GX; ++pD) {`` and gathers tile 0), the body's
nodes with a ``PatchMask`` after each intermediate tile (writes the zero point over its padding
positions), and ``PatchEnd`` (copies the last tile into ``y``, closes the loop), so the tiles are
planned in the arena like any other tensor (see ``edgec.backend.flatten``).
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, get_op, register
from edgec.ops.scan import LoopControl

#: the convolutions a patch stage may hold (padding = zero point is exact for both)
STAGE_OPS = ("QConv2D", "QDepthwiseConv2D")


def _zero_point(g: Graph, name: str) -> int:
    q = g.quant(name)
    return 0 if q is None else int(q.zero_point.reshape(-1)[0])


def tile_origin(node: Node, level: int, py: int, px: int) -> tuple[int, int]:
    (ra, rb), (ca, cb) = node.attr("rows")[level], node.attr("cols")[level]
    return py * ra + rb, px * ca + cb


def _fill_outside(tile: np.ndarray, r0: int, c0: int, full: tuple[int, int], zp: int) -> None:
    _, th, tw, _ = tile.shape
    rows = np.arange(r0, r0 + th)
    cols = np.arange(c0, c0 + tw)
    tile[:, (rows < 0) | (rows >= full[0])] = zp
    tile[:, :, (cols < 0) | (cols >= full[1])] = zp


def _gather(x: np.ndarray, shape: Shape, r0: int, c0: int, zp: int) -> np.ndarray:
    """The [1, th, tw, C] window of x at (r0, c0), zero point outside x."""
    _, th, tw, _ = shape
    tile = np.full(shape, zp, np.int8)
    h, w = x.shape[1:3]
    ra, rz = max(r0, 0), min(r0 + th, h)
    ca, cz = max(c0, 0), min(c0 + tw, w)
    if ra < rz and ca < cz:
        tile[:, ra - r0 : rz - r0, ca - c0 : cz - c0] = x[:, ra:rz, ca:cz]
    return tile


@register
class PatchLoop(Op):
    types = ("PatchLoop",)
    int8 = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        gy, gx = node.attr("grid")
        _, ph, pw, c = g.shape(node.attr("tiles")[-1])
        return [((1, gy * ph, gx * pw, c), "int8")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        tiles, body = node.attr("tiles"), node.attr("body")
        full = node.attr("full")
        gy, gx = node.attr("grid")
        _, ph, pw, c = g.shape(tiles[-1])
        y = np.zeros((1, gy * ph, gx * pw, c), np.int8)
        zps = [_zero_point(g, t) for t in tiles]
        for py in range(gy):
            for px in range(gx):
                r0, c0 = tile_origin(node, 0, py, px)
                t = _gather(x, g.shape(tiles[0]), r0, c0, zps[0])
                for lvl, bn in enumerate(body, start=1):
                    ins = [t] + [g.const(i) for i in bn.inputs[1:]]
                    t = np.array(get_op(bn, g).reference(bn, ins, g)[0], np.int8)
                    if lvl < len(body):
                        _fill_outside(t, *tile_origin(node, lvl, py, px), full[lvl], zps[lvl])
                y[:, py * ph : (py + 1) * ph, px * pw : (px + 1) * pw] = t
        return [y]

    def macs(self, node: Node, g: Graph) -> int:
        gy, gx = node.attr("grid")
        return gy * gx * sum(get_op(bn, g).macs(bn, g) for bn in node.attr("body"))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise AssertionError("a PatchLoop is emitted as a loop (edgec.ops.patches.expand)")


def expand(node: Node, depth: int) -> list[Node]:
    """The flat form the C back-end plans and emits: PatchBegin, body nodes with a PatchMask
    after each intermediate tile, PatchEnd."""
    tiles, body = node.attr("tiles"), node.attr("body")
    var = f"p{depth}"
    common = {k: node.attrs[k] for k in ("grid", "rows", "cols", "full", "tiles",
                                         "recompute_macs")}
    out = [Node("PatchBegin", f"{node.name}/begin", [node.inputs[0]],
                [node.outputs[0], tiles[0]], {**common, "var": var})]
    for lvl, bn in enumerate(body, start=1):
        out.append(bn)
        if lvl < len(body):
            out.append(Node("PatchMask", f"{node.name}/mask{lvl}", [tiles[lvl]], [],
                            {**common, "var": var, "level": lvl}))
    out.append(Node("PatchEnd", f"{node.name}/end", [tiles[-1], node.outputs[0], node.inputs[0]],
                    [], {**common, "var": var}))
    return out


def _origin_c(node: Node, level: int) -> tuple[str, str]:
    var = str(node.attr("var"))
    (ra, rb), (ca, cb) = node.attr("rows")[level], node.attr("cols")[level]
    return f"{var}y * {ra} + ({rb})", f"{var}x * {ca} + ({cb})"


def _window_c(node: Node, g: Graph, level: int, dst: str, src: str | None) -> list[str]:
    """C that fills tile ``level`` (at ``dst``): rows and columns outside the full tensor get the
    zero point; with ``src`` (the full tensor) the positions inside are copied from it."""
    _, th, tw, c = g.shape(node.attr("tiles")[level])
    h, w = node.attr("full")[level]
    zp = _zero_point(g, node.attr("tiles")[level])
    r0, c0 = _origin_c(node, level)
    lines = [
        "{",
        f"    const int r0 = {r0}, c0 = {c0};",
        f"    const int lo = c0 < 0 ? -c0 : 0, hi = {w} - c0 < {tw} ? {w} - c0 : {tw};",
        f"    for (int r = 0; r < {th}; ++r) {{",
        f"        int8_t *row = {dst} + r * {tw * c};",
        f"        if (r0 + r < 0 || r0 + r >= {h} || hi <= lo) {{ memset(row, {zp}, {tw * c}); "
        f"continue; }}",
        f"        if (lo > 0) memset(row, {zp}, (size_t)lo * {c});",
        f"        if (hi < {tw}) memset(row + hi * {c}, {zp}, (size_t)({tw} - hi) * {c});",
    ]
    if src is not None:
        lines.append(f"        memcpy(row + lo * {c}, {src} + ((r0 + r) * {w} + c0 + lo) * {c}, "
                     f"(size_t)(hi - lo) * {c});")
    return [*lines, "    }", "}"]


@register
class PatchBegin(LoopControl):
    """inputs: the stage input; outputs: the stage output (alive through the loop), tile 0."""

    types = ("PatchBegin",)
    depth_change = 1

    def label(self, node: Node) -> str:
        gy, gx = node.attr("grid")
        return f"loop x{gy * gx} patches"

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        """Counted in the compile report's ``structure``."""
        return {"patch_loops": 1, "patch_recompute_macs": int(node.attr("recompute_macs"))}

    def emit_control(self, node: Node, ctx: EmitContext, ptr: dict[str, str]) -> list[str]:
        gy, gx = node.attr("grid")
        var = str(node.attr("var"))
        src = ptr[node.inputs[0]]
        lines = [f"/* {node.name}: {gy}x{gx} patches */",
                 f"for (int {var} = 0; {var} < {gy * gx}; ++{var}) {{",
                 f"    const int {var}y = {var} / {gx}, {var}x = {var} % {gx};"]
        gather = _window_c(node, ctx.g, 0, ptr[node.outputs[1]], f"(const int8_t *)({src})")
        return lines + ["    " + ln for ln in gather]


@register
class PatchMask(LoopControl):
    """inputs: an intermediate tile, whose positions outside its full tensor get the zero
    point (the next convolution's padding)."""

    types = ("PatchMask",)

    def label(self, node: Node) -> str:
        return "zero point outside"

    def emit_control(self, node: Node, ctx: EmitContext, ptr: dict[str, str]) -> list[str]:
        return _window_c(node, ctx.g, int(node.attr("level")), ptr[node.inputs[0]], None)


@register
class PatchEnd(LoopControl):
    """inputs: the last tile, then (alive through the loop) the stage output and input."""

    types = ("PatchEnd",)
    depth_change = -1

    def emit_control(self, node: Node, ctx: EmitContext, ptr: dict[str, str]) -> list[str]:
        g = ctx.g
        var = str(node.attr("var"))
        _, ph, pw, c = g.shape(node.inputs[0])
        w = g.shape(node.inputs[1])[2]
        dst, src = ptr[node.inputs[1]], ptr[node.inputs[0]]
        return [
            f"    for (int r = 0; r < {ph}; ++r) memcpy({dst} + (({var}y * {ph} + r) * {w} + "
            f"{var}x * {pw}) * {c}, {src} + r * {pw * c}, {pw * c});",
            "}",
        ]
