"""ONNX → IR. Opsets 7-21, float32 at the model boundary.

Handles both PyTorch exporters: the dynamo exporter (weights in an external ``.onnx.data`` file,
ONNX local functions, axes/pads/splits as inputs) and the legacy TorchScript exporter (Shape →
Gather → Concat → Expand chains that constant folding removes once shapes are static).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from edgec.errors import EdgecError, ShapeError, UnsupportedOpError, ops_hint
from edgec.frontend.onnx_checks import (
    check_names,
    check_node,
    check_opsets,
    check_types,
)
from edgec.frontend.onnx_quant import expand_qoperators
from edgec.ir import Graph, Node, Tensor
from edgec.ops import REGISTRY
from edgec.ops.interpret import infer_shapes

_FLOAT_TYPES = {onnx.TensorProto.FLOAT}


def parse_input_shapes(specs: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x:1x3x32x32", "h:1x1x16"]`` → ``{"x": (1, 3, 32, 32), ...}``; every dimension a
    positive integer."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        parts = dims.lower().split("x")
        if not sep or not name or not dims or not all(d.strip().isdigit() for d in parts):
            raise EdgecError(
                f"--input-shape '{spec}': expected NAME:D1xD2x... whose dimensions are positive "
                f"integers (e.g. x:1x3x32x32)"
            )
        shape = tuple(int(d) for d in parts)
        if any(d < 1 for d in shape):
            raise EdgecError(f"--input-shape '{spec}': dimensions must be at least 1")
        out[name] = shape
    return out


def load_model_proto(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file and its external data, with one-line errors for every way it can fail."""
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (
        DecodeError,
        ValueError,
        RuntimeError,
        onnx.onnx_cpp2py_export.checker.ValidationError,
    ) as exc:
        raise EdgecError(
            f"{p}: not a valid ONNX file (corrupt or truncated): {_first_line(exc)}"
        ) from None
    except Exception as exc:  # protobuf raises several types for garbage input
        raise EdgecError(
            f"{p}: not a valid ONNX file (corrupt or truncated): {_first_line(exc)}"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise EdgecError(f"{p}: not a valid ONNX file (it holds no graph)")
    _load_external(model, p)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_external(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    missing: set[str] = set()
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if not (path.parent / loc).is_file():
                missing.add(loc)
    if missing:
        names = ", ".join(sorted(missing))
        raise EdgecError(
            f"{path}: the weights live in an external data file that is missing: {names} "
            f"(expected next to the model in {path.parent}/; copy it there with the .onnx file)"
        )
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise EdgecError(f"{path}: cannot read its external data: {_first_line(exc)}") from None


def _tensor_array(t: onnx.TensorProto, what: str) -> np.ndarray:
    """A TensorProto's values; a corrupt one (data size not matching its dims, an unknown data
    type) is a one-line error."""
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:
        raise EdgecError(
            f"{what} is corrupt or of an unsupported type: {_first_line(exc)}"
        ) from None


def _attr_value(a: onnx.AttributeProto) -> Any:
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return None  # control flow: rejected by the op check
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, onnx.TensorProto):
        return _tensor_array(v, f"attribute '{a.name}'")
    if isinstance(v, list):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
    return v


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    for a in node.attribute:
        v = _attr_value(a)
        if a.name == "value":
            return np.asarray(v)
        if a.name == "value_float":
            return np.asarray(v, np.float32)
        if a.name == "value_floats":
            return np.asarray(v, np.float32)
        if a.name == "value_int":
            return np.asarray(v, np.int64)
        if a.name == "value_ints":
            return np.asarray(v, np.int64)
    raise UnsupportedOpError(f"Constant node '{node.name}' has no supported value attribute")


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def from_model_proto(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    source: str = "<model>",
    name: str | None = None,
) -> Graph:
    input_shapes = dict(input_shapes or {})
    model = expand_qoperators(model)
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as exc:
            raise EdgecError(
                f"{source}: cannot inline ONNX local functions: {_first_line(exc)}"
            ) from None
    check_names(model, source)
    opset = check_opsets(model, source)
    if model.ir_version > onnx.IR_VERSION:
        raise EdgecError(f"{source}: ONNX IR version {model.ir_version} is newer than the "
                         f"installed onnx package reads (up to {onnx.IR_VERSION})")
    og = model.graph
    if not og.output:
        raise EdgecError(f"{source}: the graph has no outputs")
    g = Graph(
        name=name or _c_ident(Path(source).stem or og.name or "model"),
        opset=int(opset),
        source=source,
    )

    for init in og.initializer:
        arr = _tensor_array(init, f"{source}: initializer '{init.name}'")
        g.tensors[init.name] = Tensor(
            init.name, tuple(int(d) for d in arr.shape), str(arr.dtype), arr
        )
    for sp in og.sparse_initializer:
        arr = numpy_helper.to_array(onnx.numpy_helper.to_array(sp.values))  # pragma: no cover
        raise UnsupportedOpError(f"{source}: sparse initializers are not supported")

    real_inputs = [vi.name for vi in og.input if vi.name not in g.tensors]
    unknown = set(input_shapes) - set(real_inputs)
    if unknown:
        raise EdgecError(
            f"{source}: --input-shape names unknown input(s) {', '.join(sorted(unknown))}; "
            f"inputs are {', '.join(real_inputs)}"
        )
    for vi in og.input:
        if vi.name in g.tensors:
            continue  # an initializer listed as input (IR version < 4)
        elem = vi.type.tensor_type.elem_type
        if elem not in _FLOAT_TYPES:
            tname = onnx.TensorProto.DataType.Name(elem) if elem else "unknown"
            raise EdgecError(
                f"{source}: input '{vi.name}' has dtype {tname}; edgec compiles float32 models "
                f"(quantize or cast outside the model)"
            )
        dims = _dims(vi)
        if vi.name in input_shapes:
            shape = tuple(int(d) for d in input_shapes[vi.name])
            if len(shape) != len(dims) or any(
                isinstance(d, int) and d != s for d, s in zip(dims, shape, strict=False)
            ):
                raise ShapeError(
                    f"{source}: --input-shape {vi.name}:{'x'.join(map(str, shape))} does not "
                    f"match the model's shape {_fmt_dims(dims)}"
                )
        else:
            if any(not isinstance(d, int) for d in dims):
                hint = "x".join(str(d) if isinstance(d, int) else "1" for d in dims)
                raise ShapeError(
                    f"{source}: input '{vi.name}' has dynamic shape {_fmt_dims(dims)}; "
                    f"give it a static one with --input-shape {vi.name}:{hint}"
                )
            shape = tuple(int(d) for d in dims)
        if any(d == 0 for d in shape):
            raise ShapeError(
                f"{source}: input '{vi.name}' has a zero-size dimension {list(shape)}; edgec "
                f"compiles tensors with at least one element"
            )
        g.tensors[vi.name] = Tensor(vi.name, shape, "float32")
        g.inputs.append(vi.name)
    used_names: set[str] = set()
    for idx, n in enumerate(og.node):
        if n.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(
                f"{source}: node '{n.name or idx}': op {n.domain}::{n.op_type} is not supported "
                f"(custom domain); {ops_hint('onnx')}"
            )
        node_name = n.name or f"{n.op_type}_{idx}"
        if node_name in used_names:
            node_name = f"{node_name}_{idx}"
        used_names.add(node_name)
        check_node(n, opset, source, node_name)
        if n.op_type == "Constant":
            try:
                arr = _constant_value(n)
            except EdgecError as exc:
                raise type(exc)(f"{source}: node '{node_name}' (Constant): {exc}") from None
            g.tensors[n.output[0]] = Tensor(
                n.output[0], tuple(int(d) for d in arr.shape), str(arr.dtype), arr
            )
            continue
        if n.op_type not in REGISTRY or not onnx.defs.has(n.op_type):
            raise UnsupportedOpError(
                f"{source}: node '{node_name}': op {n.op_type} (opset {opset}) is not supported; "
                f"{ops_hint('onnx')}"
            )
        try:
            attrs = {a.name: _attr_value(a) for a in n.attribute}
        except EdgecError as exc:
            raise type(exc)(f"{source}: node '{node_name}' ({n.op_type}): {exc}") from None
        if any(v is None for v in attrs.values()):
            raise UnsupportedOpError(
                f"{source}: node '{node_name}': op {n.op_type} with subgraphs (control flow) is "
                f"not supported"
            )
        g.nodes.append(Node(n.op_type, node_name, list(n.input), list(n.output), attrs))

    g.outputs = [o.name for o in og.output]
    try:
        g.toposort()
    except ValueError as exc:
        raise EdgecError(f"{source}: {exc}") from None
    try:
        infer_shapes(g)
    except EdgecError as exc:
        raise type(exc)(f"{source}: {exc}") from None
    for vo in og.output:
        elem = vo.type.tensor_type.elem_type
        if elem == onnx.TensorProto.FLOAT:
            continue
        produced = g.tensors.get(vo.name)
        if elem == onnx.TensorProto.INT64 and produced is not None and produced.dtype == "int64":
            continue  # indices (ArgMax, ArgMin, TopK): exact integers in float32 at run time
        names = onnx.TensorProto.DataType.values()
        tname = onnx.TensorProto.DataType.Name(elem) if elem in names else "no type"
        raise EdgecError(
            f"{source}: output '{vo.name}' is declared {tname}; edgec's outputs are float32 "
            f"(int64 only for indices from ArgMax, ArgMin, TopK)"
        )
    check_types(model, source)
    for o in g.outputs:
        if o not in g.tensors:
            raise EdgecError(f"{source}: graph output '{o}' is not produced by any node")
    return g


def _fmt_dims(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _c_ident(s: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in s)
    if not out or out[0].isdigit():
        out = "m_" + out
    return out.lower()


def load_onnx(
    path: str | os.PathLike[str],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str | None = None,
) -> Graph:
    model = load_model_proto(path)
    return from_model_proto(model, input_shapes, source=str(path), name=name)
