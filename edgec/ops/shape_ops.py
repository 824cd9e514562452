"""Data movement and shape computations.

* Views (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout): output 0 is input 0 with
  another shape. The planner aliases them (no code); otherwise the kernel is one ``memcpy``.
* Copies with compile-time strides (Transpose, Slice, Gather, Concat, Split, Pad, Expand): loop
  nests over coalesced dimensions, ``memcpy`` for contiguous runs.
* Shape computations (Shape, Size, ConstantOfShape, Range, Cast on integers, and the small
  integer ops the legacy PyTorch exporter emits: Equal, Where, Floor, Min, Max...) fold to
  constants at compile time; the few that make sense on run-time float data also emit C.

The data-movement ops also move int8 codes unchanged (their int8 outputs inherit input 0's
quantization; Concat needs every input quantized like its output, else QConcat requantizes; int8
Pad fills with the zero point unless a constant is given). Otherwise edgec's run-time tensors
are float32: a run-time Cast to FLOAT16/BFLOAT16 rounds each value to
that precision but keeps it in a float32 buffer, a run-time Cast to DOUBLE is a float32 copy, and
run-time casts to integer or bool types are unsupported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto, helper

from edgec.errors import ShapeError
from edgec.ir import Graph, Node, Shape
from edgec.ops.base import (
    EmitContext,
    Op,
    broadcast_shape,
    c_float,
    int_list,
    norm_axis,
    prod,
    register,
    strides,
    unsupported,
    view_axis,
)
from edgec.ops.loops import broadcast_loop, coalesce

Arrays = list[np.ndarray | None]
Outs = list[tuple[Shape, str]]


# -- helpers -----------------------------------------------------------------------------------

def const_input(node: Node, g: Graph, idx: int, what: str) -> np.ndarray | None:
    """The constant value of optional input ``idx`` (None when absent); run-time → unsupported."""
    if len(node.inputs) <= idx or not node.inputs[idx]:
        return None
    val = g.const(node.inputs[idx])
    if val is None:
        raise unsupported(node, f"{what} (input {idx}) must be a compile-time constant")
    return val


def ints_from(node: Node, g: Graph, idx: int, attr: str, what: str) -> list[int] | None:
    """An int list given as input ``idx`` (newer opsets) or as attribute ``attr`` (older ones)."""
    val = const_input(node, g, idx, what)
    if val is not None:
        if np.ndim(val) > 1:
            raise shape_error(node, f"{what} must be a 1-D tensor, got shape {np.shape(val)}")
        return int_list(val)
    if attr in node.attrs:
        return int_list(node.attrs[attr])
    return None


def shape_error(node: Node, what: str) -> ShapeError:
    return ShapeError(f"node '{node.name}' ({node.op}): {what}")


def norm_axes(node: Node, axes: Sequence[int], rank: int) -> list[int]:
    out = []
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise shape_error(node, f"axis {a} is out of range for rank {rank}")
        out.append(norm_axis(int(a), rank) if rank else 0)
    if len(set(out)) != len(out):
        raise shape_error(node, f"repeated axes {list(axes)}")
    return out


def _index(offset: int, terms: Sequence[tuple[str, int]]) -> str:
    parts = [f"{v}" if s == 1 else f"{v} * {s}" for v, s in terms if s > 0]
    neg = [f"{v}" if s == -1 else f"{v} * {-s}" for v, s in terms if s < 0]
    expr = " + ".join(([str(offset)] if offset else []) + parts) or "0"
    for n in neg:
        expr = f"{expr} - {n}" if expr != "0" else f"-{n}"
    return expr


def copy_nest(
    shape: Sequence[int],
    dst: str, dst_off: int, dst_strides: Sequence[int],
    src: str, src_off: int, src_strides: Sequence[int],
    elem: str = "float",
) -> str:
    """C copying ``shape`` elements: dst[dst_off + i·dst_strides] = src[src_off + i·src_strides].

    Dimensions both sides walk linearly are merged; a run contiguous on both sides is one memcpy
    (of ``elem``-typed elements).
    """
    if prod(shape) == 0:
        return ""
    dims, (ds, ss) = coalesce(tuple(shape), [list(dst_strides), list(src_strides)])
    run = 1
    if dims and ds[-1] == 1 and ss[-1] == 1:
        run = dims[-1]
        dims, ds, ss = dims[:-1], ds[:-1], ss[:-1]
    names = [f"i{k}" for k in range(len(dims))]
    d_idx = _index(dst_off, list(zip(names, ds, strict=True)))
    s_idx = _index(src_off, list(zip(names, ss, strict=True)))
    if run > 1:
        stmt = f"memcpy({dst} + {d_idx}, {src} + {s_idx}, sizeof({elem}) * {run});"
    else:
        stmt = f"{dst}[{d_idx}] = {src}[{s_idx}];"
    lines = []
    for k, d in enumerate(dims):
        lines.append("    " * k + f"for (int {names[k]} = 0; {names[k]} < {d}; ++{names[k]}) {{")
    lines.append("    " * len(dims) + stmt)
    for k in range(len(dims) - 1, -1, -1):
        lines.append("    " * k + "}")
    return "\n".join(lines) + "\n"


def copy_all(dst: str, src: str, n: int, elem: str = "float") -> str:
    return f"memcpy({dst}, {src}, sizeof({elem}) * {n});\n"


def c_order(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy or view that keeps 0-d arrays 0-d (ascontiguousarray makes them 1-d)."""
    return np.asarray(a, order="C")


def _float_out(node: Node, g: Graph, shape: Shape) -> Outs:
    return [(shape, g.tensor(node.inputs[0]).dtype)]


# -- views ---------------------------------------------------------------------------------------

class MoveOp(Op):
    """An op that moves values without changing them: it carries int8 codes (and input 0's
    quantization) as they are."""

    int8 = True
    quant_passthrough = True


class ViewOp(MoveOp):
    """Output 0 holds input 0's elements in the same order, with the shape ``out_shape`` says."""

    view = True

    def quant_axis(self, node: Node, g: Graph, axis: int, out_shape: Shape) -> int | None:
        return view_axis(g.shape(node.inputs[0]), out_shape, axis)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        raise NotImplementedError

    def infer(self, node: Node, g: Graph) -> Outs:
        return _float_out(node, g, self.out_shape(node, g, g.shape(node.inputs[0])))

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        return [np.reshape(x, self.out_shape(node, g, tuple(x.shape)))]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        n = prod(ctx.g.shape(node.outputs[0]))
        return copy_all(ctx.out(0), ctx.inp(0), n, ctx.ctype(node.outputs[0])) if n else ""


@register
class Reshape(ViewOp):
    types = ("Reshape",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        target = ints_from(node, g, 1, "shape", "the target shape")
        if target is None:
            raise unsupported(node, "Reshape needs a constant shape")
        allow_zero = bool(node.attr("allowzero", 0))
        out: list[int] = []
        infer_at = -1
        for i, d in enumerate(target):
            if d == 0 and not allow_zero:
                if i >= len(in_shape):
                    raise shape_error(node, f"shape {target}: 0 at {i} copies no input dim")
                d = in_shape[i]
            elif d == -1:
                if infer_at >= 0:
                    raise shape_error(node, f"shape {target} has more than one -1")
                infer_at = i
                d = 1
            elif d < 0:
                raise shape_error(node, f"shape {target} has a negative dimension")
            out.append(int(d))
        total, known = prod(in_shape), prod(out)
        if infer_at >= 0:
            if known == 0 or total % known:
                raise shape_error(node, f"cannot reshape {list(in_shape)} to {target}")
            out[infer_at] = total // known
        if prod(out) != total:
            raise shape_error(node, f"cannot reshape {list(in_shape)} to {target}")
        return tuple(out)


@register
class Flatten(ViewOp):
    types = ("Flatten",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        rank = len(in_shape)
        axis = int(node.attr("axis", 1))
        if not -rank <= axis <= rank:
            raise shape_error(node, f"axis {axis} is out of range for rank {rank}")
        axis = axis + rank if axis < 0 else axis
        return (prod(in_shape[:axis]), prod(in_shape[axis:]))


@register
class Squeeze(ViewOp):
    types = ("Squeeze",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        axes = ints_from(node, g, 1, "axes", "axes")
        if not axes:  # absent or empty: every dimension of size 1 (as onnxruntime)
            return tuple(d for d in in_shape if d != 1)
        drop = norm_axes(node, axes, len(in_shape))
        for a in drop:
            if in_shape[a] != 1:
                raise shape_error(node, f"cannot squeeze axis {a} of size {in_shape[a]}")
        return tuple(d for i, d in enumerate(in_shape) if i not in drop)


@register
class Unsqueeze(ViewOp):
    types = ("Unsqueeze",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        axes = ints_from(node, g, 1, "axes", "axes")
        if axes is None:
            raise unsupported(node, "Unsqueeze needs axes")
        rank = len(in_shape) + len(axes)
        ones = norm_axes(node, axes, rank)
        rest = iter(in_shape)
        return tuple(1 if i in ones else next(rest) for i in range(rank))


@register
class Identity(ViewOp):
    types = ("Identity",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        return in_shape


@register
class Dropout(ViewOp):
    """Inference-mode Dropout: the identity. Its mask output (all true) must be unused."""

    types = ("Dropout",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        return in_shape

    def _check(self, node: Node, g: Graph) -> None:
        training = const_input(node, g, 2, "training_mode")
        if training is not None and bool(np.asarray(training).reshape(-1)[0]):
            raise unsupported(node, "Dropout in training mode is not supported (inference only)")

    def infer(self, node: Node, g: Graph) -> Outs:
        self._check(node, g)
        shape, dtype = g.shape(node.inputs[0]), g.tensor(node.inputs[0]).dtype
        outs: Outs = [(shape, dtype)]
        if len(node.outputs) > 1 and node.outputs[1]:
            mask = node.outputs[1]
            if mask in g.outputs or any(mask in n.inputs for n in g.nodes):
                raise unsupported(node, "the Dropout mask output is supported only when unused")
            outs.append((shape, "bool"))
        return outs

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        self._check(node, g)
        x = inputs[0]
        assert x is not None
        return [x, np.ones(x.shape, np.bool_)][: max(1, len(node.outputs))]


# -- copies with compile-time strides -------------------------------------------------------------

@register
class Transpose(MoveOp):
    types = ("Transpose",)

    def quant_axis(self, node: Node, g: Graph, axis: int, out_shape: Shape) -> int | None:
        return self.perm(node, len(g.shape(node.inputs[0]))).index(axis)

    def perm(self, node: Node, rank: int) -> list[int]:
        perm = node.attr("perm")
        p = list(range(rank))[::-1] if perm is None else int_list(perm)
        if sorted(p) != list(range(rank)):
            raise shape_error(node, f"perm {p} is not a permutation of {rank} axes")
        return p

    def infer(self, node: Node, g: Graph) -> Outs:
        s = g.shape(node.inputs[0])
        return _float_out(node, g, tuple(s[p] for p in self.perm(node, len(s))))

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        return [c_order(np.transpose(x, self.perm(node, x.ndim)))]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if ctx.g.tensor(node.outputs[0]).size == 0:
            return ""
        s = ctx.g.shape(node.inputs[0])
        p = self.perm(node, len(s))
        out = [s[k] for k in p]
        st = strides(s)
        return copy_nest(out, ctx.out(0), 0, strides(out), ctx.inp(0), 0, [st[k] for k in p],
                         ctx.ctype(node.outputs[0]))


def _block_copy(dst: str, dst_off: int, dst_row: int, src: str, src_off: int, src_row: int,
                rows: int, block: int, elem: str = "float") -> str:
    """``rows`` blocks of ``block`` contiguous elements, one per row on each side."""
    return copy_nest((rows, block), dst, dst_off, (dst_row, 1), src, src_off, (src_row, 1), elem)


@register
class Concat(MoveOp):
    types = ("Concat",)

    def _check_quant(self, node: Node, g: Graph) -> None:
        """int8 inputs are concatenated as codes: all must share the output's quantization."""
        names = [i for i in node.inputs if i]
        if g.tensor(names[0]).dtype != "int8":
            return
        want = g.quant(node.outputs[0]) or g.quant(names[0])
        for i in names:
            q = g.quant(i)
            if want is None or q is None or not q.same_as(want):
                raise unsupported(
                    node, f"int8 input '{i}' is quantized differently from the output "
                    f"({q.describe() if q else 'no quantization'} vs "
                    f"{want.describe() if want else 'none'}); QConcat requantizes such inputs")

    def _axis(self, node: Node, rank: int) -> int:
        if "axis" not in node.attrs:
            raise unsupported(node, "Concat needs the axis attribute")
        return norm_axes(node, [int(node.attrs["axis"])], rank)[0]

    def infer(self, node: Node, g: Graph) -> Outs:
        shapes = [g.shape(i) for i in node.inputs if i]
        axis = self._axis(node, len(shapes[0]))
        for s in shapes:
            if len(s) != len(shapes[0]) or any(
                a != b for k, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if k != axis
            ):
                raise shape_error(node, f"cannot concatenate shapes {shapes} on axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        self._check_quant(node, g)
        return [(tuple(out), g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        arrs = [x for x in inputs if x is not None]
        return [np.concatenate(arrs, axis=self._axis(node, arrs[0].ndim))]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if ctx.g.tensor(node.outputs[0]).size == 0:
            return ""
        g = ctx.g
        out = g.shape(node.outputs[0])
        axis = self._axis(node, len(out))
        rows, inner = prod(out[:axis]), prod(out[axis + 1 :])
        code, offset = "", 0
        for i, name in enumerate(node.inputs):
            if not name or g.tensor(name).size == 0:
                continue
            block = g.shape(name)[axis] * inner
            code += _block_copy(ctx.out(0), offset, out[axis] * inner, ctx.inp(i), 0, block,
                                rows, block, ctx.ctype(node.outputs[0]))
            offset += block
        return code


@register
class Split(MoveOp):
    types = ("Split",)

    def sizes(self, node: Node, g: Graph) -> tuple[int, list[int]]:
        shape = g.shape(node.inputs[0])
        axis = norm_axes(node, [int(node.attr("axis", 0))], len(shape))[0]
        dim, n_out = shape[axis], len(node.outputs)
        split = ints_from(node, g, 1, "split", "split")
        if split is not None:
            if len(split) != n_out or sum(split) != dim or min(split) < 0:
                raise shape_error(node, f"split {split} does not cover axis {axis} of size {dim}")
            return axis, split
        if "num_outputs" in node.attrs:
            n = int(node.attrs["num_outputs"])
            if n != n_out or n < 1:
                raise shape_error(node, f"num_outputs={n} but the node has {n_out} outputs")
            chunk = -(-dim // n)
            sizes = [min(chunk, max(0, dim - k * chunk)) for k in range(n)]
            return axis, sizes
        if dim % n_out:
            raise shape_error(node, f"axis {axis} of size {dim} does not split in {n_out} parts")
        return axis, [dim // n_out] * n_out

    def infer(self, node: Node, g: Graph) -> Outs:
        shape = g.shape(node.inputs[0])
        axis, sizes = self.sizes(node, g)
        dtype = g.tensor(node.inputs[0]).dtype
        return [(shape[:axis] + (s,) + shape[axis + 1 :], dtype) for s in sizes]

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        axis, sizes = self.sizes(node, g)
        cuts = np.cumsum(sizes)[:-1]
        return [c_order(p) for p in np.split(x, cuts, axis=axis)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        shape = ctx.g.shape(node.inputs[0])
        axis, sizes = self.sizes(node, ctx.g)
        rows, inner = prod(shape[:axis]), prod(shape[axis + 1 :])
        code, offset = "", 0
        for i, (name, size) in enumerate(zip(node.outputs, sizes, strict=True)):
            block = size * inner
            if name:
                code += _block_copy(ctx.out(i), 0, block, ctx.inp(0), offset,
                                    shape[axis] * inner, rows, block, ctx.ctype(name))
            offset += block
        return code


def slice_params(node: Node, g: Graph, shape: Shape) -> list[tuple[int, int, int]]:
    """(start, step, length) of every axis, with ONNX's clamping of out-of-range bounds."""
    if g.opset < 10:
        starts = int_list(node.attr("starts", []))
        ends = int_list(node.attr("ends", []))
        axes = int_list(node.attr("axes")) if "axes" in node.attrs else None
        steps: list[int] | None = None
    else:
        starts = ints_from(node, g, 1, "", "starts") or []
        ends = ints_from(node, g, 2, "", "ends") or []
        axes = ints_from(node, g, 3, "", "axes")
        steps = ints_from(node, g, 4, "", "steps")
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else norm_axes(node, axes, rank)
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise shape_error(node, "starts, ends, axes and steps differ in length")
    params = [(0, 1, d) for d in shape]
    for a, start, end, step in zip(axes, starts, ends, steps, strict=True):
        dim = shape[a]
        if step == 0:
            raise shape_error(node, "a step of 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        length = max(0, -((start - end) // step))
        params[a] = (start, step, length)
    return params


@register
class Slice(MoveOp):
    types = ("Slice",)

    def infer(self, node: Node, g: Graph) -> Outs:
        params = slice_params(node, g, g.shape(node.inputs[0]))
        return _float_out(node, g, tuple(p[2] for p in params))

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        params = slice_params(node, g, x.shape)
        index = []
        for start, step, length in params:
            stop = start + step * length
            index.append(slice(start, stop if stop >= 0 else None, step))
        return [c_order(x[tuple(index)])]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if ctx.g.tensor(node.outputs[0]).size == 0:
            return ""
        shape = ctx.g.shape(node.inputs[0])
        params = slice_params(node, ctx.g, shape)
        st = strides(shape)
        out = [p[2] for p in params]
        offset = sum(p[0] * s for p, s in zip(params, st, strict=True))
        src_st = [p[1] * s for p, s in zip(params, st, strict=True)]
        return copy_nest(out, ctx.out(0), 0, strides(out), ctx.inp(0), offset, src_st,
                         ctx.ctype(node.outputs[0]))


@register
class Gather(MoveOp):
    types = ("Gather",)

    def parts(self, node: Node, g: Graph, data_shape: Shape,
              indices: np.ndarray) -> tuple[int, list[int]]:
        axis = norm_axes(node, [int(node.attr("axis", 0))], len(data_shape))[0]
        dim = data_shape[axis]
        flat = []
        for i in int_list(indices):
            if not -dim <= i < dim:
                raise shape_error(node, f"index {i} is out of range for axis {axis} of size {dim}")
            flat.append(i + dim if i < 0 else i)
        return axis, flat

    def infer(self, node: Node, g: Graph) -> Outs:
        data = g.shape(node.inputs[0])
        idx = g.const(node.inputs[1])
        if idx is None:
            raise unsupported(node, "Gather needs constant indices")
        axis, _ = self.parts(node, g, data, idx)
        out = data[:axis] + tuple(idx.shape) + data[axis + 1 :]
        return _float_out(node, g, out)

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x, idx = inputs[0], inputs[1]
        assert x is not None and idx is not None
        axis, flat = self.parts(node, g, x.shape, idx)
        taken = np.take(x, np.asarray(flat, np.int64).reshape(idx.shape), axis=axis)
        return [c_order(taken)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if ctx.g.tensor(node.outputs[0]).size == 0:
            return ""
        g = ctx.g
        data = g.shape(node.inputs[0])
        idx = g.const(node.inputs[1])
        assert idx is not None
        axis, flat = self.parts(node, g, data, idx)
        rows, dim, inner, n = prod(data[:axis]), data[axis], prod(data[axis + 1 :]), len(flat)
        x, y = ctx.inp(0), ctx.out(0)
        elem = ctx.ctype(node.outputs[0])
        steps = {b - a for a, b in zip(flat, flat[1:], strict=False)}
        if len(steps) <= 1:  # one index, or an arithmetic progression: a strided copy
            step = steps.pop() if steps else 1
            shape = (rows, n, inner)
            return copy_nest(shape, y, 0, strides(shape), x, flat[0] * inner,
                             (dim * inner, step * inner, 1), elem)
        table = ctx.const_array(f"{node.name}_offsets",
                                np.asarray(flat, np.int64) * inner, "int32_t")
        if inner == 1:
            move = f"yr[j] = xr[{table}[j]];"
        else:
            move = f"memcpy(yr + j * {inner}, xr + {table}[j], sizeof({elem}) * {inner});"
        return (
            f"for (int r = 0; r < {rows}; ++r) {{\n"
            f"    const {elem} *xr = {x} + r * {dim * inner};\n"
            f"    {elem} *yr = {y} + r * {n * inner};\n"
            f"    for (int j = 0; j < {n}; ++j) {move}\n"
            f"}}\n"
        )


PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad_params(node: Node, g: Graph, shape: Shape) -> tuple[str, list[int], list[int], float]:
    """(mode, begin pads, end pads, constant value) for every axis."""
    mode = node.attr("mode", "constant")
    # 'wrap' is opset 19's, but torch.onnx.export(dynamo=True) writes it for circular padding
    # at opset 18 too, and onnxruntime runs it there: accepted at any opset
    if mode not in PAD_MODES:
        raise unsupported(node, f"Pad mode '{mode}'; supported: constant, reflect, edge, wrap")
    rank = len(shape)
    if g.opset < 11:
        pads = int_list(node.attr("pads", node.attr("paddings", [])))
        value = float(node.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = ints_from(node, g, 1, "", "pads")
        if pads is None:
            raise unsupported(node, "Pad needs pads")
        cval = const_input(node, g, 2, "constant_value")
        value = 0.0 if cval is None or cval.size == 0 else float(cval.reshape(-1)[0])
        given = ints_from(node, g, 3, "", "axes")
        axes = list(range(rank)) if given is None else norm_axes(node, given, rank)
    if len(pads) != 2 * len(axes):
        raise shape_error(node, f"pads {pads} do not match {len(axes)} axes")
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    for a in range(rank):
        kept = shape[a] - max(0, -begin[a]) - max(0, -end[a])
        if kept < 0:
            raise shape_error(node, f"pads {pads} remove more than axis {a} holds")
        if mode != "constant" and (begin[a] > 0 or end[a] > 0) and kept == 0:
            raise shape_error(node, f"mode '{mode}' cannot pad the empty axis {a}")
    return mode, begin, end, value


def _source_index(mode: str, i: int, dim: int) -> int:
    """The input index an output position maps to, for the non-constant pad modes."""
    if mode == "edge":
        return min(max(i, 0), dim - 1)
    if mode == "wrap":
        return i % dim
    if dim == 1:
        return 0
    period = 2 * (dim - 1)
    i = i % period
    return i if i < dim else period - i


def pad_constant(node: Node, g: Graph, value: float) -> float | int:
    """The value constant-mode Pad writes: ``value``; for an int8 input the int8 code: the given
    constant, else the output's zero point (the real 0 of the output; Pad moves codes
    unchanged, so an output quantized unlike its input reinterprets them, as TFLite's PAD does,
    which fills with the output's zero point), else the input's."""
    if g.tensor(node.inputs[0]).dtype != "int8":
        return value
    given = (const_input(node, g, 2, "constant_value") if g.opset >= 11
             else node.attrs.get("value"))
    if given is not None and np.asarray(given).size:
        code = int(np.asarray(given).reshape(-1)[0])
        if not -128 <= code <= 127:
            raise unsupported(node, f"int8 Pad constant {code} is outside [-128, 127]")
        return code
    q = g.quant(node.outputs[0]) or g.quant(node.inputs[0])
    return int(q.zero_point[0]) if q is not None and q.size == 1 else 0


@register
class Pad(MoveOp):
    types = ("Pad",)

    def infer(self, node: Node, g: Graph) -> Outs:
        shape = g.shape(node.inputs[0])
        _, begin, end, _ = pad_params(node, g, shape)
        out = tuple(d + b + e for d, b, e in zip(shape, begin, end, strict=True))
        return _float_out(node, g, out)

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        mode, begin, end, value = pad_params(node, g, x.shape)
        crop = tuple(slice(max(0, -b), d - max(0, -e))
                     for d, b, e in zip(x.shape, begin, end, strict=True))
        x = x[crop]
        widths = [(max(0, b), max(0, e)) for b, e in zip(begin, end, strict=True)]
        if mode == "constant":
            value = pad_constant(node, g, value)
            return [np.pad(x, widths, mode="constant", constant_values=value).astype(x.dtype)]
        maps = [np.array([_source_index(mode, i - b, d) for i in range(d + b + e)], np.int64)
                for d, (b, e) in zip(x.shape, widths, strict=True)]
        return [c_order(x[np.ix_(*maps)])] if maps else [x.copy()]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if ctx.g.tensor(node.outputs[0]).size == 0:
            return ""
        shape = ctx.g.shape(node.inputs[0])
        mode, begin, end, value = pad_params(node, ctx.g, shape)
        out = [d + b + e for d, b, e in zip(shape, begin, end, strict=True)]
        x, y = ctx.inp(0), ctx.out(0)
        in_st, out_st = strides(shape), strides(out)
        if mode == "constant":
            inner = [d - max(0, -b) - max(0, -e) for d, b, e in zip(shape, begin, end, strict=True)]
            code = ""
            elem = ctx.ctype(node.outputs[0])
            if prod(inner) != prod(out):
                fill = pad_constant(node, ctx.g, value)
                lit = c_float(fill) if elem == "float" else str(int(fill))
                code = f"for (int i = 0; i < {prod(out)}; ++i) {y}[i] = {lit};\n"
            src_off = sum(max(0, -b) * s for b, s in zip(begin, in_st, strict=True))
            dst_off = sum(max(0, b) * s for b, s in zip(begin, out_st, strict=True))
            return code + copy_nest(inner, y, dst_off, out_st, x, src_off, in_st, elem)
        return self._emit_mapped(ctx, mode, shape, begin, out)

    def _emit_mapped(self, ctx: EmitContext, mode: str, shape: Shape, begin: list[int],
                     out: list[int]) -> str:
        """Edge/reflect/wrap: per-axis tables of input offsets; unpadded axes walk directly."""
        node, x, y = ctx.node, ctx.inp(0), ctx.out(0)
        if prod(out) == 0:
            return ""
        in_st = strides(shape)
        crop = [max(0, -b) for b in begin]
        end = [o - d - b for d, b, o in zip(shape, begin, out, strict=True)]
        kept = [d - c - max(0, -e) for d, c, e in zip(shape, crop, end, strict=True)]
        tables: list[int] = []
        lines: list[str] = []
        terms: list[str] = []
        for k, d in enumerate(out):
            v = f"i{k}"
            lines.append("    " * k + f"for (int {v} = 0; {v} < {d}; ++{v}) {{")
            if d == shape[k] and begin[k] == 0:
                terms.append(f"{v} * {in_st[k]}" if in_st[k] != 1 else v)
                continue
            base = len(tables)
            lead = max(0, begin[k])
            tables += [(crop[k] + _source_index(mode, i - lead, kept[k])) * in_st[k]
                       for i in range(d)]
            terms.append(f"tab[{base} + {v}]" if base else f"tab[{v}]")
        lines.append("    " * len(out) + f"{y}[o++] = {x}[{' + '.join(terms) or '0'}];")
        lines += ["    " * k + "}" for k in range(len(out) - 1, -1, -1)]
        head = "int o = 0;\n"
        if tables:
            sym = ctx.const_array(f"{node.name}_src", np.asarray(tables, np.int64), "int32_t")
            head += f"const int32_t *tab = {sym};\n"
        return head + "\n".join(lines) + "\n"


@register
class Expand(MoveOp):
    types = ("Expand",)

    def out_shape(self, node: Node, g: Graph, in_shape: Shape) -> Shape:
        shape = const_input(node, g, 1, "the shape")
        if shape is None:
            raise unsupported(node, "Expand needs a shape")
        try:
            return broadcast_shape(in_shape, tuple(int_list(shape)))
        except ValueError:
            what = f"cannot expand {list(in_shape)} to {int_list(shape)}"
            raise shape_error(node, what) from None

    def infer(self, node: Node, g: Graph) -> Outs:
        return _float_out(node, g, self.out_shape(node, g, g.shape(node.inputs[0])))

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        return [c_order(np.broadcast_to(x, self.out_shape(node, g, x.shape)))]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        if ctx.g.tensor(node.outputs[0]).size == 0:
            return ""
        out = ctx.g.shape(node.outputs[0])
        x, y = ctx.inp(0), ctx.out(0)
        return broadcast_loop(out, [ctx.g.shape(node.inputs[0])],
                              lambda ix, iy: f"{y}[{iy}] = {x}[{ix[0]}];\n")


# -- Cast ------------------------------------------------------------------------------------------

_RUNTIME_FLOAT_CASTS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                        TensorProto.BFLOAT16}


def _round_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 precision (nearest, ties to even), kept as float32."""
    bits = np.asarray(x, np.float32, order="C").view(np.uint32).astype(np.uint64)
    nan = np.isnan(x)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return np.where(nan, x, bits.view(np.float32)).astype(np.float32)


def _round_half(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x.astype(np.float32).astype(np.float16).astype(np.float32)


# float → float16 → float in C without _Float16: round the float32 bits (normal range) or scale to
# a multiple of 2^-24 (half subnormals); values beyond 65504 round to infinity.
_HALF_C = """\
for (int i = 0; i < {n}; ++i) {{
    const float v = {x}[i];
    const float a = fabsf(v);
    float r;
    if (!(a < 6.103515625e-05f)) {{
        uint32_t u;
        memcpy(&u, &v, sizeof u);
        if ((u & 0x7f800000u) != 0x7f800000u) {{
            u = (u + 0x00000fffu + ((u >> 13) & 1u)) & 0xffffe000u;
            if ((u & 0x7fffffffu) > 0x477fe000u) u = (u & 0x80000000u) | 0x7f800000u;
        }}
        memcpy(&r, &u, sizeof r);
    }} else {{
        r = copysignf(rintf(a * 16777216.0f) * 5.9604644775390625e-08f, v);
    }}
    {y}[i] = r;
}}
"""

_BFLOAT16_C = """\
for (int i = 0; i < {n}; ++i) {{
    const float v = {x}[i];
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    if ((u & 0x7fffffffu) <= 0x7f800000u) u = (u + 0x00007fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    float r;
    memcpy(&r, &u, sizeof r);
    {y}[i] = r;
}}
"""


@register
class Cast(Op):
    types = ("Cast",)

    def _target(self, node: Node) -> int:
        if "to" not in node.attrs:
            raise unsupported(node, "Cast needs the 'to' attribute")
        return int(node.attrs["to"])

    def _np_dtype(self, node: Node, to: int) -> np.dtype:
        if to == TensorProto.BFLOAT16:
            return np.dtype(np.float32)  # numpy has no bfloat16: values rounded, kept as float32
        try:
            dt = np.dtype(helper.tensor_dtype_to_np_dtype(to))
        except Exception:
            dt = np.dtype(object)
        if dt.kind not in "biuf" or dt.itemsize > 8 or (dt.kind == "f" and dt.itemsize < 2):
            name = TensorProto.DataType.Name(to) if to in TensorProto.DataType.values() else to
            raise unsupported(node, f"Cast to {name}; supported: float, integer and bool types")
        return dt

    def _runtime(self, node: Node, g: Graph) -> bool:
        return g.const(node.inputs[0]) is None

    def _check_runtime(self, node: Node, g: Graph) -> int:
        to = self._target(node)
        if to not in _RUNTIME_FLOAT_CASTS:
            raise unsupported(
                node, f"a run-time Cast to {TensorProto.DataType.Name(to)}; run-time tensors are "
                "float32, so only casts to FLOAT, DOUBLE, FLOAT16 and BFLOAT16 are supported "
                "(integer casts fold only on constants)")
        return to

    def infer(self, node: Node, g: Graph) -> Outs:
        shape = g.shape(node.inputs[0])
        if self._runtime(node, g) and g.tensor(node.inputs[0]).dtype == "float32":
            self._check_runtime(node, g)
            return [(shape, "float32")]
        return [(shape, str(self._np_dtype(node, self._target(node))))]

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        to = self._target(node)
        if to == TensorProto.BFLOAT16:
            return [_round_bfloat16(x.astype(np.float32))]
        if self._runtime(node, g) and x.dtype == np.float32:
            self._check_runtime(node, g)
            return [_round_half(x) if to == TensorProto.FLOAT16 else x.copy()]
        with np.errstate(invalid="ignore", over="ignore"):
            return [x.astype(self._np_dtype(node, to))]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        to = self._check_runtime(node, ctx.g)
        n = prod(ctx.g.shape(node.outputs[0]))
        x, y = ctx.inp(0), ctx.out(0)
        if to == TensorProto.FLOAT16:
            return _HALF_C.format(n=n, x=x, y=y)
        if to == TensorProto.BFLOAT16:
            return _BFLOAT16_C.format(n=n, x=x, y=y)
        return f"for (int i = 0; i < {n}; ++i) {y}[i] = {x}[i];\n"


# -- shape computations (fold at compile time) ------------------------------------------------

class FoldOnly(Op):
    """An op evaluated at compile time only: its inputs are constants or shapes."""

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise unsupported(node, f"{node.op} is supported on compile-time constants only")

    def infer(self, node: Node, g: Graph) -> Outs:
        raise unsupported(node, f"{node.op} is supported on compile-time constants only")


@register
class ShapeOp(FoldOnly):
    types = ("Shape",)

    def value_inputs(self, node: Node) -> tuple[int, ...]:
        return ()

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        rank = x.ndim
        start, end = int(node.attr("start", 0)), int(node.attr("end", rank))
        start = min(max(start + rank if start < 0 else start, 0), rank)
        end = min(max(end + rank if end < 0 else end, 0), rank)
        return [np.asarray(x.shape[start:end], np.int64).reshape(-1)]


@register
class Size(FoldOnly):
    types = ("Size",)

    def value_inputs(self, node: Node) -> tuple[int, ...]:
        return ()

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        return [np.asarray(x.size, np.int64)]


@register
class ConstantOfShape(FoldOnly):
    types = ("ConstantOfShape",)

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        shape = inputs[0]
        assert shape is not None
        value = np.asarray(node.attr("value", np.zeros(1, np.float32)))
        return [np.full(tuple(int_list(shape)), value.reshape(-1)[0], value.dtype)]


@register
class Range(FoldOnly):
    types = ("Range",)

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        start, limit, delta = inputs[0], inputs[1], inputs[2]
        assert start is not None and limit is not None and delta is not None
        s, lim, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
        if d == 0:
            raise shape_error(node, "Range with delta 0")
        n = max(int(np.ceil((float(lim) - float(s)) / float(d))), 0)
        return [(s + np.arange(n, dtype=s.dtype) * d).astype(s.dtype)]


# Small ops of exported shape computations (comparisons, logic and Where live in logic.py).

_ROUND_C = {"Floor": "floorf", "Ceil": "ceilf"}


@register
class Rounding(Op):
    types = tuple(_ROUND_C)

    def infer(self, node: Node, g: Graph) -> Outs:
        return [(g.shape(node.inputs[0]), g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        fn = np.floor if node.op == "Floor" else np.ceil
        return [x.copy() if x.dtype.kind in "iub" else fn(x).astype(x.dtype)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        n = prod(ctx.g.shape(node.outputs[0]))
        fn = _ROUND_C[node.op]
        return f"for (int i = 0; i < {n}; ++i) {ctx.out(0)}[i] = {fn}({ctx.inp(0)}[i]);\n"


@register
class MinMax(Op):
    types = ("Min", "Max")

    def infer(self, node: Node, g: Graph) -> Outs:
        shape = broadcast_shape(*(g.shape(i) for i in node.inputs if i))
        return [(shape, g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        arrs = [a for a in inputs if a is not None]
        fn = np.minimum if node.op == "Min" else np.maximum
        out = arrs[0]
        for a in arrs[1:]:
            out = fn(out, a)
        return [np.asarray(out).astype(arrs[0].dtype)]

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        used = [i for i, name in enumerate(node.inputs) if name]
        # compares instead of fminf/fmaxf, which drop a NaN: onnxruntime's Min/Max return NaN
        # when any input is NaN (a NaN r stays: both comparisons with it are false)
        cmp = "<" if node.op == "Min" else ">"
        ptrs = [ctx.inp(i) for i in used]
        y = ctx.out(0)

        def body(ix: list[str], iy: str) -> str:
            lines = [f"float r = {ptrs[0]}[{ix[0]}];"]
            for p, i in zip(ptrs[1:], ix[1:], strict=True):
                lines.append(f"{{ const float v = {p}[{i}]; r = (v {cmp} r || v != v) ? v : r; }}")
            return "\n".join(lines) + f"\n{y}[{iy}] = r;\n"

        return broadcast_loop(g.shape(node.outputs[0]), [g.shape(node.inputs[i]) for i in used],
                              body)


@register
class Mod(FoldOnly):
    types = ("Mod",)

    def reference(self, node: Node, inputs: Arrays, g: Graph) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        assert a is not None and b is not None
        fn = np.fmod if node.attr("fmod", 0) else np.mod
        with np.errstate(all="ignore"):
            return [np.asarray(fn(a, b)).astype(a.dtype)]
