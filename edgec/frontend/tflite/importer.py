"""TFLite model → IR: tensors, graph inputs/outputs, and one translation per operator.

Operators are translated one by one, in the file's order, by the functions of
:mod:`edgec.frontend.tflite.float_ops` (float32 operators → edgec's ONNX-semantics ops; NHWC
convolutions and pools get Transposes around NCHW kernels, which ``passes.transposes`` cancels
between layers), :mod:`edgec.frontend.tflite.int8_ops` (int8 operators → the int8 ops of
docs/int8.md) and :mod:`edgec.frontend.tflite.loops` (WHILE → Scan). Shapes are inferred node by
node while translating, so every translation sees exact shapes (and constant values: SHAPE →
STRIDED_SLICE → PACK chains fold on the spot).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError, ShapeError, UnsupportedOpError
from edgec.frontend.tflite.reader import TflModel, TflOperator, TflSubgraph, TflTensor, read_tflite
from edgec.interpret import infer_node
from edgec.ir import Graph, Node, Tensor

#: TFLite types edgec refuses with a reason (anything else non-float32/int8 at run time fails too)
_REFUSED_TYPES = {
    "FLOAT16": "float16 (post-training float16 quantization)",
    "INT16": "int16 (16x8 quantization)",
    "UINT8": "uint8 (legacy asymmetric quantization)",
    "INT4": "int4",
    "FLOAT64": "float64",
}

Translator = Callable[["Ctx", TflOperator], None]


def _ident(s: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in s).strip("_")
    if not out or out[0].isdigit():
        out = "m_" + out
    return out.lower()


class Ctx:
    """What a translation function sees: the operator's tensors, and ways to add IR nodes.

    ``x(i)``/``y(i)`` are the IR tensor names of the operator's input/output ``i``; ``add`` appends
    a node and infers its shapes at once (constant inputs fold), so ``shape``/``const`` of any IR
    tensor are exact at every step.
    """

    def __init__(self, model: TflModel, sg: TflSubgraph, g: Graph, names: dict[int, str]):
        self.model = model
        self.sg = sg
        self.g = g
        self.names = names  # TFLite tensor index → IR tensor name
        self.op: TflOperator | None = None
        self._counter = 0
        self._reserved: set[str] = set()
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
        return self.op.options

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
    def shape(self, name: str) -> tuple[int, ...]:
        return self.g.shape(name)

    def dtype(self, name: str) -> str:
        return self.g.tensor(name).dtype

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
                self.g.tensors[o] = Tensor(o, ())
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

    def alias(self, dst: str, src: str) -> None:
        """Make IR tensor ``dst`` (an operator output) equal to ``src``."""
        self.add("Identity", [src], out=dst)


def _check_types(model: TflModel) -> None:
    for sg in model.subgraphs:
        used = set(sg.inputs) | set(sg.outputs)
        for op in sg.operators:
            used.update(k for k in op.inputs + op.outputs if k >= 0)
        for k in sorted(used):
            t = sg.tensors[k]
            if t.type in _REFUSED_TYPES:
                raise EdgecError(
                    f"{model.source}: tensor {k} '{t.name}' (subgraph {sg.index}) is "
                    f"{_REFUSED_TYPES[t.type]}; edgec compiles float32 and int8 TFLite models "
                    f"(convert with full-integer int8 quantization, or without quantization)"
                )
            if t.sparse:
                raise EdgecError(
                    f"{model.source}: tensor {k} '{t.name}' (subgraph {sg.index}) is stored "
                    f"sparse; edgec reads dense TFLite weights only"
                )


def _input_shape(model: TflModel, t: TflTensor, name: str,
                 given: Sequence[int] | None) -> tuple[int, ...]:
    dims = list(t.signature) if t.signature is not None else list(t.shape)
    if given is not None:
        shape = tuple(int(d) for d in given)
        if len(shape) != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, shape,
                                                                             strict=True)):
            raise ShapeError(
                f"{model.source}: --input-shape {name}:{'x'.join(map(str, shape))} does not "
                f"match the model's shape {_fmt(dims)}"
            )
    else:
        # a dynamic batch (axis 0) runs at the size the file stores, as TFLite and TFLite Micro
        # do; any other dynamic dimension needs --input-shape
        dyn = [i for i, d in enumerate(dims) if d < 0 and i > 0]
        if dyn:
            hint = "x".join(str(s if d < 0 else d) for d, s in zip(dims, t.shape, strict=False))
            raise ShapeError(
                f"{model.source}: input '{name}' has dynamic shape {_fmt(dims)}; give it a "
                f"static one with --input-shape {name}:{hint}"
            )
        shape = tuple(int(s) for s in t.shape)
    if any(d <= 0 for d in shape):
        raise ShapeError(f"{model.source}: input '{name}' has an empty dimension {list(shape)}")
    return shape


def _fmt(dims: Sequence[int]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in dims) + "]"


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
    from edgec.frontend.tflite.tables import translator_for

    for op in ops:
        cx.op = op
        fn = translator_for(cx, op)
        fn(cx, op)
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
            attach_quant(cx.g.tensors[cx.names[t.index]], t)


def attach_quant(tensor: Tensor, t: TflTensor) -> None:
    """Carry a TFLite tensor's quantization into the IR (int8 tensors; see docs/int8.md)."""
    from edgec.frontend.tflite.tables import quant_of

    q = quant_of(t)
    if q is not None:
        tensor.quant = q  # type: ignore[attr-defined]


def from_tflite_model(model: TflModel, input_shapes: Mapping[str, Sequence[int]] | None = None,
                      name: str | None = None) -> Graph:
    _check_types(model)
    sg = model.subgraphs[0]
    input_shapes = dict(input_shapes or {})
    g = Graph(name=name or _ident(Path(model.source).stem or "model"), opset=18,
              source=model.source)
    preferred = {**model.input_names, **model.output_names}
    names = _unique_names(sg, preferred={k: _ident(v) or v for k, v in preferred.items()})
    cx = Ctx(model, sg, g, names)
    add_constants(cx)
    in_names = [names[k] for k in sg.inputs]
    unknown = set(input_shapes) - set(in_names)
    if unknown:
        raise EdgecError(
            f"{model.source}: --input-shape names unknown input(s) {', '.join(sorted(unknown))}; "
            f"inputs are {', '.join(in_names)}"
        )
    for k in sg.inputs:
        t = sg.tensors[k]
        nm = names[k]
        if t.data is not None:
            continue  # a constant listed as an input
        if t.type not in ("FLOAT32", "INT8"):
            raise EdgecError(f"{model.source}: input '{nm}' has type {t.type}; edgec compiles "
                             f"float32 and int8 TFLite models")
        shape = _input_shape(model, t, nm, input_shapes.get(nm))
        g.tensors[nm] = Tensor(nm, shape, t.dtype or "float32")
        attach_quant(g.tensors[nm], t)
        g.inputs.append(nm)
    for t in sg.tensors:
        if t.is_variable and t.data is None and t.index not in sg.inputs:
            # a variable without initial contents starts at zero (TFLite resets it so)
            g.tensors[names[t.index]] = Tensor(names[t.index], t.shape, t.dtype or "float32",
                                               np.zeros(t.shape, t.dtype or "float32"))
            attach_quant(g.tensors[names[t.index]], t)
    translate_ops(cx, sg.operators)
    g.outputs = [names[k] for k in sg.outputs] + [nxt for _, nxt in cx.state_outputs]
    g.state = list(cx.state_outputs)
    for o in g.outputs:
        if o not in g.tensors:
            raise EdgecError(f"{model.source}: output '{o}' is not produced by any operator")
    return g


def from_tflite_bytes(data: bytes, input_shapes: Mapping[str, Sequence[int]] | None = None,
                      source: str = "<tflite>", name: str | None = None) -> Graph:
    return from_tflite_model(read_tflite(data, source=source), input_shapes, name)


def load_tflite(path: str | os.PathLike[str],
                input_shapes: Mapping[str, Sequence[int]] | None = None,
                name: str | None = None) -> Graph:
    return from_tflite_model(read_tflite(path), input_shapes, name)
