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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgec.errors import EdgecError, ShapeError
from edgec.frontend.tflite.context import (
    Ctx,
    _unique_names,
    add_constants,
    attach_quant,
    translate_ops,
)
from edgec.frontend.tflite.reader import TflModel, TflTensor, read_tflite
from edgec.frontend.tflite.tables import quant_of, translator_for
from edgec.ir import Graph, Tensor

#: TFLite types edgec refuses with a reason (anything else non-float32/int8 at run time fails too)
_REFUSED_TYPES = {
    "FLOAT16": "float16 (post-training float16 quantization)",
    "INT16": "int16 (16x8 quantization)",
    "UINT8": "uint8 (legacy asymmetric quantization)",
    "INT4": "int4",
    "FLOAT64": "float64",
}


def _ident(s: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in s).strip("_")
    if not out or out[0].isdigit():
        out = "m_" + out
    return out.lower()


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


def tensor_names(model: TflModel) -> dict[int, str]:
    """IR names of subgraph 0's tensors: signature names (as C identifiers) for the model's
    inputs and outputs when the file has a signature, TFLite tensor names otherwise."""
    preferred = {**model.input_names, **model.output_names}
    return _unique_names(model.subgraphs[0],
                         preferred={k: _ident(v) or v for k, v in preferred.items()})


def from_tflite_model(model: TflModel, input_shapes: Mapping[str, Sequence[int]] | None = None,
                      name: str | None = None) -> Graph:
    _check_types(model)
    sg = model.subgraphs[0]
    if not sg.outputs:
        raise EdgecError(f"{model.source}: subgraph 0 has no outputs")
    input_shapes = dict(input_shapes or {})
    g = Graph(name=name or _ident(Path(model.source).stem or "model"), opset=18,
              source=model.source)
    names = tensor_names(model)
    cx = Ctx(model, sg, g, names, translator_for, quant_of)
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
        if t.type not in ("FLOAT32", "INT8", "INT32"):
            raise EdgecError(f"{model.source}: input '{nm}' has type {t.type}; edgec compiles "
                             f"float32 and int8 TFLite models (and int32 index inputs)")
        shape = _input_shape(model, t, nm, input_shapes.get(nm))
        g.tensors[nm] = Tensor(nm, shape, t.dtype or "float32")
        attach_quant(cx, g.tensors[nm], t)
        g.inputs.append(nm)
    for t in sg.tensors:
        if t.is_variable and t.data is None and t.index not in sg.inputs:
            # a variable without initial contents starts at zero (TFLite resets it so)
            g.tensors[names[t.index]] = Tensor(names[t.index], t.shape, t.dtype or "float32",
                                               np.zeros(t.shape, t.dtype or "float32"))
            attach_quant(cx, g.tensors[names[t.index]], t)
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
