"""Validation of an ONNX graph against the ONNX operator schemas, before any lowering.

Each node is checked against ``onnx.defs.get_schema(op, opset, domain)``: the opset the model
imports must be one ONNX defines, the op must exist at that opset, its input and output counts must
fit the schema (optional and variadic parameters included), required inputs must be given, and
every attribute must be one the schema declares, of the declared type, finite where it is a float.
Each failure is a one-line :class:`EdgecError` naming the file, the node and the op.
"""

from __future__ import annotations

import math

import onnx
from onnx import defs

from edgec.errors import EdgecError, UnsupportedOpError, ops_hint

_DEFAULT_DOMAINS = ("", "ai.onnx")

#: int attributes that are flags: 0 or 1 (onnxruntime reads some as "== 1", others as "!= 0")
_FLAGS = {
    "keepdims", "transA", "transB", "ceil_mode", "count_include_pad", "noop_with_empty_axes",
    "linear_before_reset", "input_forget", "training_mode", "select_last_index", "exclusive",
    "reverse", "layout", "spatial", "fmod", "allowzero", "is_test",
}

#: float attributes where +-infinity is meaningful (opset 6 Clip bounds); NaN never is
_INF_ALLOWED = {("Clip", "min"), ("Clip", "max")}


def check_opsets(model: onnx.ModelProto, source: str) -> int:
    """The default-domain opset the model imports, checked against what this onnx defines."""
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise EdgecError(f"{source}: the model imports no default-domain ONNX opset")
    if len(set(versions)) > 1:
        raise EdgecError(f"{source}: the model imports the ONNX opset twice ({versions})")
    opset = int(versions[0])
    newest = defs.onnx_opset_version()
    if not 1 <= opset <= newest:
        raise EdgecError(
            f"{source}: the model imports ONNX opset {opset}; known opsets are 1 to {newest}"
        )
    return opset


def check_names(model: onnx.ModelProto, source: str) -> None:
    """Every name and string attribute is text (a corrupted file can hold invalid UTF-8)."""
    g = model.graph
    names: list[object] = [v.name for v in (*g.input, *g.output, *g.value_info)]
    names += [t.name for t in g.initializer]
    for node in g.node:
        names += [node.op_type, node.name, node.domain, *node.input, *node.output]
        for a in node.attribute:
            names.append(a.name)
            for s in [a.s, *a.strings]:
                try:
                    s.decode("utf-8")
                except UnicodeDecodeError:
                    names.append(s)
    names += [o.domain for o in model.opset_import]
    bad = next((n for n in names if not isinstance(n, str)), None)
    if bad is not None:
        raise EdgecError(
            f"{source}: not a valid ONNX file (corrupt): a name or string is not UTF-8 text "
            f"({bad!r:.60})"
        )


def check_types(model: onnx.ModelProto, source: str) -> None:
    """ONNX's own type and shape inference, strict: element types that do not bind (a float
    Clip bound of type int64, a graph output declared double), ranks and dimensions that
    contradict an op's schema. Runs after the node checks, so its messages are the rarer ones."""
    from onnx import shape_inference

    # declared shapes of outputs and intermediate values are hints (onnxruntime warns and goes
    # on; edgec infers its own): only the ops' own rules are checked
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for vo in bare.graph.output:
        vo.type.tensor_type.ClearField("shape")
    try:
        shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError, or protobuf trouble
        text = " ".join(str(exc).split())
        raise EdgecError(f"{source}: the model fails ONNX type/shape inference: {text}") from None


def _attr_type_name(t: int) -> str:
    try:
        return onnx.AttributeProto.AttributeType.Name(t)
    except ValueError:
        return f"type {t}"


def check_node(node: onnx.NodeProto, opset: int, source: str, label: str) -> None:
    """Raise a one-line EdgecError when ``node`` does not fit its ONNX schema at ``opset``."""
    op = node.op_type
    where = f"{source}: node '{label}' ({op})"
    try:
        schema = defs.get_schema(op, opset, "")
    except defs.SchemaError:
        if defs.has(op):
            first = min(
                s.since_version for s in defs.get_all_schemas_with_history() if s.name == op
            )
            raise UnsupportedOpError(
                f"{where}: op {op} does not exist at opset {opset} (it appears in opset {first})"
            ) from None
        raise UnsupportedOpError(
            f"{source}: node '{label}': op {op} (opset {opset}) is not an ONNX op; "
            f"{ops_hint('onnx')}"
        ) from None
    _check_arity(node, schema, where)
    _check_attributes(node, schema, where)


def _arity(lo: int, hi: int) -> str:
    if lo == hi:
        return f"exactly {lo}"
    if hi >= 2**31 - 1:
        return f"at least {lo}"
    return f"{lo} to {hi}"


def _check_arity(node: onnx.NodeProto, schema: defs.OpSchema, where: str) -> None:
    opt = defs.OpSchema.FormalParameterOption
    for kind, given, params, lo, hi in (
        ("inputs", list(node.input), schema.inputs, schema.min_input, schema.max_input),
        ("outputs", list(node.output), schema.outputs, schema.min_output, schema.max_output),
    ):
        if not lo <= len(given) <= hi:
            raise EdgecError(
                f"{where}: has {len(given)} {kind}; opset {schema.since_version} {schema.name} "
                f"takes {_arity(lo, hi)}"
            )
        for k, name in enumerate(given):
            if not name and k < len(params) and params[k].option == opt.Single:
                raise EdgecError(f"{where}: required {kind[:-1]} {k} ('{params[k].name}') is empty")


def _attribute_since(op: str, attr: str, after: int) -> int | None:
    """The first opset after ``after`` whose ``op`` has attribute ``attr`` (None: none)."""
    versions = sorted(
        s.since_version
        for s in defs.get_all_schemas_with_history()
        if s.name == op and s.domain == "" and s.since_version > after and attr in s.attributes
    )
    return versions[0] if versions else None


def _check_attributes(node: onnx.NodeProto, schema: defs.OpSchema, where: str) -> None:
    declared = schema.attributes
    seen: set[str] = set()
    for a in node.attribute:
        if a.name in seen:
            raise EdgecError(f"{where}: attribute '{a.name}' is given twice")
        seen.add(a.name)
        spec = declared.get(a.name)
        if spec is None:
            known = ", ".join(sorted(declared)) or "none"
            later = _attribute_since(schema.name, a.name, schema.since_version)
            when = f"; '{a.name}' appears in opset {later}" if later else ""
            raise UnsupportedOpError(
                f"{where}: unknown attribute '{a.name}' (opset {schema.since_version} "
                f"{schema.name} takes: {known}{when})"
            )
        if a.ref_attr_name:
            raise EdgecError(f"{where}: attribute '{a.name}' refers to a function attribute")
        want = int(spec.type)
        if a.type != want:
            raise EdgecError(
                f"{where}: attribute '{a.name}' has type {_attr_type_name(a.type)}; the schema "
                f"wants {_attr_type_name(want)}"
            )
        if a.name in _FLAGS and a.type == onnx.AttributeProto.INT and a.i not in (0, 1):
            raise EdgecError(f"{where}: attribute '{a.name}' is {a.i}; it must be 0 or 1")
        floats = [a.f] if a.type == onnx.AttributeProto.FLOAT else list(a.floats)
        for v in floats:
            if math.isnan(v) or (math.isinf(v) and (node.op_type, a.name) not in _INF_ALLOWED):
                raise EdgecError(f"{where}: attribute '{a.name}' is {v}; it must be finite")
    for name, spec in declared.items():
        if spec.required and name not in seen:
            raise EdgecError(f"{where}: required attribute '{name}' is missing")
