"""The op interface and registry.

Each op module in ``edgec.ops`` defines one or more :class:`Op` subclasses decorated with
:func:`register`. An op knows, in one place: its shape rule (:meth:`Op.infer`), its numpy
reference (:meth:`Op.reference`), its C emission (:meth:`Op.emit`) and its cost (:meth:`Op.macs`).
Semantics follow ONNX; constant inputs (shapes, axes, pads...) are read from the graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from edgec.errors import UnsupportedOpError, ops_hint
from edgec.ir import Graph, Node, Shape

if TYPE_CHECKING:  # pragma: no cover
    pass

REGISTRY: dict[str, Op] = {}

#: the two builds of an int8 model's C (``EmitContext.const_array``'s ``path``): "dsp" on cores
#: with the DSP extension (``EDGEC_S8_DSP``: Cortex-M4, M7, M33), "generic" elsewhere (host, M0,
#: M3) and with ``-DEDGEC_NO_DSP``; a build links only the tables its path reads
BUILD_PATHS = ("dsp", "generic")


class EmitContext(Protocol):
    """What the C back-end offers an op while it writes the op's kernel."""

    g: Graph
    node: Node

    def inp(self, i: int) -> str:
        """C expression of input ``i`` (a ``const float *``, or ``const int8_t *`` for an int8
        tensor; a weight symbol for constants)."""
        ...

    def out(self, i: int) -> str:
        """C expression of output ``i`` (a ``float *``, or ``int8_t *`` for an int8 tensor)."""
        ...

    def ctype(self, tensor: str) -> str:
        """The C element type of a tensor in kernels: ``float``, ``int8_t`` or ``int32_t``."""
        ...

    def scratch(self) -> str:
        """C expression of this node's scratch buffer (see :meth:`Op.scratch`)."""
        ...

    def act(self, expr: str) -> str:
        """``expr`` with the node's fused activation applied (``expr`` itself when none)."""
        ...

    def const_array(
        self, base: str, data: np.ndarray, ctype: str = "float", param: bool | None = None,
        padding: int = 0, path: str | None = None,
    ) -> str:
        """Emit a derived constant table (flash) and return its symbol. ``param``: whether its
        values count as model parameters in the report (default: float tables do), less
        ``padding`` values that a kernel's layout added. ``path``: the int8 build path that
        reads the table, when only one does: ``"dsp"`` (the ``EDGEC_S8_DSP`` kernels of
        Cortex-M4/M7/M33) or ``"generic"`` (the C of every other build, and of
        ``-DEDGEC_NO_DSP``); None: both (the report's per-path weight bytes,
        :data:`BUILD_PATHS`)."""
        ...

    def helper(self, name: str, code: str) -> str:
        """Emit a shared static C helper function once per file; returns ``name``."""
        ...


class Op:
    """Base class of all ops. Subclasses set ``types`` and override what they need."""

    types: ClassVar[tuple[str, ...]] = ()
    #: output 0 is input 0 with another shape (Reshape, Flatten, Squeeze...): no data moves.
    view: ClassVar[bool] = False
    #: the kernel can apply a fused activation to its output (see passes.fuse_activation).
    fusable: ClassVar[bool] = False
    #: the kernel must round like the reference (e.g. bit-exact spike trains): the back-end
    #: compiles it without FMA contraction even in -ffp-contract=fast firmware builds.
    exact_fp: ClassVar[bool] = False
    #: the op takes int8 tensors (the int8 ops, and data movement that copies codes unchanged);
    #: any other op handed an int8 tensor is refused at shape inference.
    int8: ClassVar[bool] = False
    #: the outputs hold input 0's values (moved, not changed): an int8 output without its own
    #: quantization inherits input 0's (see :meth:`quant_axis` for per-channel parameters).
    quant_passthrough: ClassVar[bool] = False

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        raise NotImplementedError

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        raise NotImplementedError

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise NotImplementedError

    def macs(self, node: Node, g: Graph) -> int:
        return 0

    def inplace(self, node: Node, g: Graph) -> bool:
        """True when output 0 may be written over input 0 (same size, read-before-write kernel)."""
        return False

    def inplace_inputs(self, node: Node, g: Graph) -> tuple[int, ...]:
        """Inputs output 0 may be written over, in order of preference (the planner takes the
        first that dies at this node): input 0 when :meth:`inplace` allows it."""
        return (0,) if self.inplace(node, g) else ()

    def state_inplace(self, node: Node, i_in: int, i_out: int) -> bool:
        """True when output ``i_out`` may be written over input ``i_in`` (the kernel reads
        each part of the input before it writes that part of the output): a stateful model's
        state is then updated in place instead of double-buffered."""
        return False

    def value_inputs(self, node: Node) -> tuple[int, ...] | None:
        """Inputs whose VALUES the op reads (None: all). The others matter only through their
        shape and dtype, so the node folds to a constant once these inputs are constant."""
        return None

    def scratch(self, node: Node, g: Graph) -> int:
        """Elements (of :meth:`scratch_ctype`) of scratch memory the kernel needs while it runs
        (planned in the arena)."""
        return 0

    def scratch_ctype(self, node: Node, g: Graph) -> str:
        """C type of the scratch buffer's elements: ``float`` or ``int8_t``."""
        return "float"

    def quant_axis(self, node: Node, g: Graph, axis: int, out_shape: Shape) -> int | None:
        """Where input 0's per-channel axis lands in output 0 (None: it does not survive)."""
        return None


def register(cls: type[Op]) -> type[Op]:
    inst = cls()
    for t in cls.types:
        REGISTRY[t] = inst
    return cls


def get_op(node: Node, g: Graph | None = None) -> Op:
    op = REGISTRY.get(node.op)
    if op is None:
        where = f" (opset {g.opset})" if g is not None else ""
        raise UnsupportedOpError(
            f"node '{node.name}': op {node.op}{where} is not supported; {ops_hint()}"
        )
    return op


def unsupported(node: Node, what: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"node '{node.name}' ({node.op}): {what}")


# -- small helpers shared by op modules -------------------------------------------------------


def prod(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def broadcast_shape(*shapes: Shape) -> Shape:
    return tuple(int(d) for d in np.broadcast_shapes(*shapes))


def strides(shape: Sequence[int]) -> list[int]:
    out = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        out[i] = out[i + 1] * int(shape[i + 1])
    return out


def c_float(v: float) -> str:
    """A C99 float literal that round-trips exactly (or INFINITY/NAN from math.h)."""
    f = float(np.float32(v))
    if math.isnan(f):
        return "NAN"
    if math.isinf(f):
        return "INFINITY" if f > 0 else "(-INFINITY)"
    s = np.format_float_positional(np.float32(f), unique=True, trim="0")
    if len(s) > 12:
        s = np.format_float_scientific(np.float32(f), unique=True, trim="0")
    if "." not in s and "e" not in s:
        s += ".0"
    if s.endswith("."):
        s += "0"
    s = s.replace(".e", ".0e")
    return s + "f"


def require_finite(node: Node, g: Graph, indices: Sequence[int], what: str = "weights") -> None:
    """Refuse constant parameter inputs (weights, bias, statistics) holding NaN or infinity: the
    result would depend on the order in which edgec folds and fuses them (a broken model)."""
    for i in indices:
        if i >= len(node.inputs) or not node.inputs[i]:
            continue
        c = g.const(node.inputs[i])
        if c is None or not np.issubdtype(np.asarray(c).dtype, np.floating):
            continue
        bad = int(np.size(c) - np.count_nonzero(np.isfinite(c)))
        if bad:
            raise unsupported(
                node, f"{what} '{node.inputs[i]}' hold {bad} NaN or infinite value(s)"
            )


def float_attr(node: Node, key: str, default: float) -> float:
    return float(node.attrs.get(key, default))


def int_list(v: Any) -> list[int]:
    return [int(x) for x in np.asarray(v).reshape(-1)]


def view_axis(in_shape: Sequence[int], out_shape: Sequence[int], axis: int) -> int | None:
    """The output axis that holds input axis ``axis`` unchanged after a reshape (same extent,
    same product of the dimensions before it), or None."""
    before = prod(in_shape[:axis])
    for k, d in enumerate(out_shape):
        if d == in_shape[axis] and prod(out_shape[:k]) == before:
            return k
    return None
