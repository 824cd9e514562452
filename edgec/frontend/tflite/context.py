"""The translation context: what each operator's translation function sees and uses.

A :class:`Ctx` wraps one TFLite subgraph being translated into one IR graph: the operator's
input/output tensors as IR names, and ``add`` to append IR nodes (shapes are inferred node by
node, so every translation sees exact shapes and folded constants). ``lookup`` picks the
translation function of an operator (``tables.translator_for``); loop bodies are translated with
a child context of their own graph (:meth:`Ctx.child`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgec.errors import EdgecError, MalformedOperatorError, UnsupportedOpError
from edgec.frontend.tflite.reader import TflModel, TflOperator, TflSubgraph, TflTensor
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.interpret import infer_node

Translator = Callable[["Ctx", TflOperator], None]
Lookup = Callable[["Ctx", TflOperator], Translator]
#: TFLite quantization → IR quantization (``tables.quant_of``)
QuantOf = Callable[[TflTensor], Quant | None]


class Ctx:
    """What a translation function sees: the operator's tensors, and ways to add IR nodes.

    ``x(i)``/``y(i)`` are the IR tensor names of the operator's input/output ``i``; ``add`` appends
    a node and infers its shapes at once (constant inputs fold), so ``shape``/``const`` of any IR
    tensor are exact at every step.
    """

    def __init__(self, model: TflModel, sg: TflSubgraph, g: Graph, names: dict[int, str],
                 lookup: Lookup, quant_of: QuantOf):
        self.lookup = lookup
        self.quant_of = quant_of
        self.model = model
        self.sg = sg
        self.g = g
        self.names = names  # TFLite tensor index → IR tensor name
        self.op: TflOperator | None = None
        self._counter = 0
        self._reserved: set[str] = set()
        #: quantization of the subgraph's tensors by IR name (given to outputs before inference)
        self.quants = {names[t.index]: q for t in sg.tensors
                       if (q := quant_of(t)) is not None}
        self.state_outputs: list[tuple[str, str]] = []
        self.root = self

    # -- where we are ------------------------------------------------------------------------
    @property
    def where(self) -> str:
        op = self.op
        what = f"operator {op.index} ({op.op})" if op is not None else "model"
        return f"{self.model.source}: subgraph {self.sg.index} {what}"

    def fail(self, msg: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.where}: {msg}")

    @property
    def opts(self) -> dict[str, Any]:
        assert self.op is not None
        return self.op.builtin_options

    # -- the current operator's tensors ------------------------------------------------------
    def tfl_in(self, i: int) -> TflTensor | None:
        assert self.op is not None
        k = self.op.inputs[i] if i < len(self.op.inputs) else -1
        return None if k < 0 else self.sg.tensors[k]

    def tfl_out(self, i: int) -> TflTensor:
        assert self.op is not None
        return self.sg.tensors[self.op.outputs[i]]

    def x(self, i: int) -> str:
        """IR name of input ``i`` ('' when absent)."""
        assert self.op is not None
        k = self.op.inputs[i] if i < len(self.op.inputs) else -1
        return "" if k < 0 else self.names[k]

    def y(self, i: int) -> str:
        assert self.op is not None
        return self.names[self.op.outputs[i]]

    @property
    def n_in(self) -> int:
        assert self.op is not None
        return len(self.op.inputs)

    # -- IR tensors --------------------------------------------------------------------------
    def _known(self, name: str) -> str:
        if name not in self.g.tensors:
            raise self.fail(f"tensor '{name}' is not defined here (corrupt model?)" if name else
                            "a required input is absent (tensor index -1)")
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.shape(self._known(name))

    def shape_n(self, name: str, rank: int, what: str) -> tuple[int, ...]:
        """The shape of ``name``, which must have ``rank`` dimensions."""
        shape = self.shape(name)
        if len(shape) != rank:
            raise self.fail(f"{what} must be {rank}-D, got shape {list(shape)}")
        return shape

    def axis(self, value: Any, rank: int, what: str = "axis") -> int:
        """``value`` as an axis of a rank-``rank`` tensor (negative counts from the end); one
        outside [-rank, rank) is refused, as TFLite's kernels refuse it."""
        a = int(value)
        if not -rank <= a < rank:
            raise self.fail(f"{what} {a} is out of range for a {rank}-D tensor")
        return a % rank

    def dtype(self, name: str) -> str:
        return self.g.tensor(self._known(name)).dtype

    def const(self, name: str) -> np.ndarray | None:
        return self.g.const(name) if name else None

    def need_const(self, i: int, what: str) -> np.ndarray:
        val = self.const(self.x(i))
        if val is None:
            raise self.fail(f"{what} (input {i}) must be a compile-time constant")
        return val

    def add_const(self, base: str, data: np.ndarray) -> str:
        name = self.fresh(base)
        self.set_const(name, np.asarray(data))
        return name

    def _base(self) -> str:
        op = self.op
        return f"{op.op}_{op.index}" if op is not None else "tflite"

    def fresh(self, suffix: str) -> str:
        """A new tensor name, reserved at once (so two fresh names never collide)."""
        base = f"{self._base()}/{suffix}"
        name, i = base, 0
        while name in self.g.tensors or name in self._reserved:
            i += 1
            name = f"{base}_{i}"
        self._reserved.add(name)
        return name

    def add(self, op_type: str, inputs: Sequence[str], out: str | None = None,
            n_out: int = 1, **attrs: Any) -> str:
        """Append ``op_type(inputs)``; returns its (first) output name (``out`` or a fresh one)."""
        outs = [out] if out is not None else []
        while len(outs) < n_out:
            outs.append(self.fresh(op_type.lower()))
        return self.add_multi(op_type, inputs, outs, **attrs)[0]

    def add_multi(self, op_type: str, inputs: Sequence[str], outs: Sequence[str],
                  **attrs: Any) -> list[str]:
        self._counter += 1
        node = Node(op_type, f"{self._base()}#{self._counter}", list(inputs), list(outs),
                    dict(attrs))
        for o in outs:  # placeholders: a name is taken before the node infers its shape
            if o and o not in self.g.tensors:
                self.g.tensors[o] = Tensor(o, (), quant=self.quants.get(o))
        self.g.nodes.append(node)
        try:
            infer_node(self.g, node)
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"{self.where}: {exc}") from None
        except EdgecError as exc:
            raise type(exc)(f"{self.where}: {exc}") from None
        return list(outs)

    def set_const(self, name: str, value: np.ndarray) -> None:
        """IR tensor ``name`` is the constant ``value`` (computed at compile time)."""
        arr = np.asarray(value, order="C")
        self.g.tensors[name] = Tensor(name, tuple(int(d) for d in arr.shape), str(arr.dtype), arr)

    def make_state(self, name: str) -> None:
        """A TFLite variable (zero at first) becomes state carried between ``_step`` calls: a
        graph input whose next value a translation gives with :meth:`add_state_output`."""
        t = self.g.tensor(name)
        if name in self.g.inputs or self.g is not self.root.g:
            raise self.fail(f"variable '{name}' is updated twice or inside a loop body")
        t.data = None
        self.g.inputs.append(name)

    def add_state_output(self, var: str, nxt: str) -> None:
        self.state_outputs.append((var, nxt))

    def child(self, sg: TflSubgraph, g: Graph, names: dict[int, str]) -> Ctx:
        """A context translating subgraph ``sg`` (a loop body) into graph ``g``."""
        c = Ctx(self.model, sg, g, names, self.lookup, self.quant_of)
        c.root = self.root
        return c

    def alias(self, dst: str, src: str) -> None:
        """Make IR tensor ``dst`` (an operator output) equal to ``src``."""
        self.add("Identity", [src], out=dst)


def _unique_names(sg: TflSubgraph, prefix: str = "",
                  preferred: Mapping[int, str] | None = None) -> dict[int, str]:
    names: dict[int, str] = {}
    taken: set[str] = set()
    for t in sg.tensors:
        base = (preferred or {}).get(t.index) or t.name or f"t{t.index}"
        base = prefix + base
        name = base if base not in taken else f"{base}#{t.index}"
        taken.add(name)
        names[t.index] = name
    return names


def translate_ops(cx: Ctx, ops: Sequence[TflOperator]) -> None:
    """Translate ``ops`` in order with the table that fits each one's tensor types."""
    for op in ops:
        cx.op = op
        for k in op.inputs:
            if k >= 0 and cx.names[k] not in cx.g.tensors:
                raise cx.fail(f"reads tensor {k} '{cx.names[k]}', which is no input, "
                              "constant or earlier operator's output (corrupt or unsorted model)")
        fn = cx.lookup(cx, op)
        try:
            fn(cx, op)
        except EdgecError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError,
                OverflowError) as exc:
            if os.environ.get("EDGEC_DEBUG"):
                raise
            detail = (str(exc).splitlines() or [""])[0][:200]
            raise MalformedOperatorError(
                f"{cx.where}: its inputs or options do not fit together ({type(exc).__name__}: "
                f"{detail}); if the file is not corrupt, please report it (EDGEC_DEBUG=1 shows "
                "the traceback)"
            ) from exc
        for k in op.outputs:
            name = cx.names[k]
            if k >= 0 and name not in cx.g.tensors:
                raise cx.fail(f"translation did not produce output tensor '{name}'")
    cx.op = None


def add_constants(cx: Ctx) -> None:
    """Every constant tensor of the subgraph becomes an IR constant."""
    for t in cx.sg.tensors:
        if t.data is not None:
            cx.g.tensors[cx.names[t.index]] = Tensor(cx.names[t.index], t.shape, str(t.data.dtype),
                                                     t.data)
            attach_quant(cx, cx.g.tensors[cx.names[t.index]], t)


def attach_quant(cx: Ctx, tensor: Tensor, t: TflTensor) -> None:
    """Carry a TFLite tensor's quantization into the IR (int8 tensors; see docs/int8.md)."""
    q = cx.quant_of(t)
    if q is not None:
        tensor.quant = q


