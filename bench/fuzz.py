"""Seeded differential fuzzer of the ONNX front-end: mutated copies of small models vs onnxruntime.

Each mutant is one seed model changed at the byte level (flipped, inserted, deleted bytes,
truncation) or at the graph level (an attribute's value or type, an initializer's shape or values,
an op type, a declared dimension, the node order, a node's inputs swapped, the opset). For every
mutant edgec must either refuse it with an EdgecError, or compile it and compute what onnxruntime
computes wherever onnxruntime runs it. A mutant that onnxruntime or the ONNX checker rejects and
edgec still compiles counts as ``invalid_compiled`` unless the rejection is one of the stated
reasons in :data:`ACCEPTED_REASONS` (onnxruntime kernels that are missing, not invalid models).

Compilation and execution run in a worker process with a per-mutant time limit, so a crash or
hang is counted (and the worker restarted) instead of ending the run.

    python -m bench.fuzz --count 10000 --seed 0 --exec host      # long run, C on the host
    python -m bench.fuzz --count 200 --exec numpy                # quick: edgec's numpy interpreter

Outcome counts go to stdout as JSON; ``--failures DIR`` keeps every bad mutant as a file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: outcomes that break edgec's promise (a correct program or a clear error)
BAD = ("internal_error", "crash", "hang", "mismatch", "invalid_compiled")

#: onnxruntime rejections that say its kernel is missing, not that the model is invalid: edgec
#: may compile such a model (the ONNX checker, strict shape inference included, accepted it)
ACCEPTED_REASONS = ("NOT_IMPLEMENTED", "Could not find an implementation")

#: onnxruntime rejections of models the ONNX specification allows, where edgec follows the
#: specification (the stated reason is what the fuzzer reports instead of invalid_compiled)
STATED_REASONS = {
    'info.GetAttr("hidden_size"': "RNN/GRU/LSTM hidden_size is optional in ONNX; edgec takes it "
    "from R's shape, onnxruntime requires the attribute",
}

RTOL = 1e-3
ATOL = 1e-4

# -- seed models -------------------------------------------------------------------------------


def _f32(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int]],
    outputs: dict[str, list[int]],
    inits: dict[str, np.ndarray],
    opset: int = 17,
) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()]
    init = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "fuzz", ins, outs, init)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def seed_models() -> dict[str, onnx.ModelProto]:
    """Small models over the common ONNX ops (built here: no torch export needed)."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    i64 = np.int64
    out: dict[str, onnx.ModelProto] = {}
    out["mlp"] = _model(
        [
            n("Gemm", ["x", "w1", "b1"], ["h"], transB=1, alpha=1.0, beta=1.0),
            n("Relu", ["h"], ["r"]),
            n("Gemm", ["r", "w2", "b2"], ["g"], transB=1),
            n("Tanh", ["g"], ["y"]),
        ],
        {"x": [1, 4]},
        {"y": [1, 3]},
        {"w1": _f32(rng, 8, 4), "b1": _f32(rng, 8), "w2": _f32(rng, 3, 8), "b2": _f32(rng, 3)},
    )
    out["conv_bn_pool"] = _model(
        [
            n("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
              strides=[1, 1]),
            n("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"], epsilon=1e-5),
            n("Relu", ["bn"], ["r"]),
            n("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            n("Flatten", ["p"], ["f"], axis=1),
            n("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
        ],
        {"x": [1, 2, 6, 6]},
        {"y": [1, 2]},
        {
            "w": _f32(rng, 3, 2, 3, 3), "b": _f32(rng, 3), "s": _f32(rng, 3) + 1,
            "bb": _f32(rng, 3), "m": _f32(rng, 3), "v": np.abs(_f32(rng, 3)) + 0.5,
            "wf": _f32(rng, 2, 27), "bf": _f32(rng, 2),
        },
    )
    out["elementwise"] = _model(
        [
            n("Add", ["x", "a"], ["s"]),
            n("Mul", ["s", "x"], ["p"]),
            n("Max", ["p", "x"], ["mx"]),
            n("Min", ["mx", "a"], ["mn"]),
            n("Clip", ["mn", "lo", "hi"], ["c"]),
            n("LeakyRelu", ["c"], ["l"], alpha=0.1),
            n("Sigmoid", ["l"], ["y"]),
        ],
        {"x": [2, 5]},
        {"y": [2, 5]},
        {"a": _f32(rng, 5), "lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)},
    )
    out["shapes"] = _model(
        [
            n("Reshape", ["x", "shape"], ["r"]),
            n("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
            n("Unsqueeze", ["t", "ax"], ["u"]),
            n("Squeeze", ["u", "ax"], ["q"]),
            n("Concat", ["q", "q"], ["c"], axis=2),
            n("Softmax", ["c"], ["y"], axis=-1),
        ],
        {"x": [1, 12]},
        {"y": [1, 4, 6]},
        {"shape": np.array([1, 3, 4], i64), "ax": np.array([0], i64)},
    )
    out["pools"] = _model(
        [
            n("AveragePool", ["x"], ["a"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
            n("GlobalAveragePool", ["a"], ["g"]),
            n("ReduceMean", ["a"], ["r"], axes=[2, 3], keepdims=1),
            n("Sub", ["g", "r"], ["d"]),
            n("HardSigmoid", ["d"], ["y"], alpha=0.2, beta=0.5),
        ],
        {"x": [1, 3, 5, 5]},
        {"y": [1, 3, 1, 1]},
        {},
    )
    out["matmul"] = _model(
        [
            n("MatMul", ["x", "w"], ["m"]),
            n("Div", ["m", "d"], ["q"]),
            n("Exp", ["q"], ["e"]),
            n("ReduceSum", ["e", "ax"], ["y"], keepdims=0),
        ],
        {"x": [2, 3, 4]},
        {"y": [2, 3]},
        {"w": _f32(rng, 4, 5), "d": np.array([2.0], np.float32), "ax": np.array([2], i64)},
    )
    out["gru"] = _model(
        [n("GRU", ["x", "W", "R", "B", "", "h0"], ["Y", "y"], hidden_size=3,
           linear_before_reset=1)],
        {"x": [2, 1, 2], "h0": [1, 1, 3]},
        {"Y": [2, 1, 1, 3], "y": [1, 1, 3]},
        {"W": _f32(rng, 1, 9, 2), "R": _f32(rng, 1, 9, 3), "B": _f32(rng, 1, 18)},
    )
    return out


def bench_seed_models() -> dict[str, onnx.ModelProto]:
    """The bench models (exported once from PyTorch and cached; see bench.models)."""
    from bench.models import build_all

    return {f"bench_{k}": onnx.load(str(p)) for k, p in build_all().items()}


# -- mutations ---------------------------------------------------------------------------------

_OPS = [
    "Relu", "Abs", "Add", "Mul", "Max", "Min", "Clip", "Gemm", "MatMul", "Conv", "MaxPool",
    "AveragePool", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Softmax", "Sigmoid", "Tanh",
    "BatchNormalization", "Concat", "Flatten", "Identity", "Sum", "Sqrt", "Neg", "Div",
    "LeakyRelu", "ReduceMean", "GlobalAveragePool", "Split", "Slice", "Pad", "Cast", "Shape",
    "Gather", "Expand", "Where", "Dropout", "NotAnOp",
]
_SPECIAL = [0.0, -1.0, 1e30, -1e30, float("nan"), float("inf"), float("-inf"), 1e-30]


def _pick_special(r: random.Random) -> float:
    return r.choice(_SPECIAL)


def _mut_attribute(m: onnx.ModelProto, r: random.Random) -> str:
    nodes = [nd for nd in m.graph.node if nd.attribute]
    if not nodes or r.random() < 0.2:
        nd = r.choice(list(m.graph.node))
        name = r.choice(["axis", "alpha", "perm", "bogus", "epsilon", "group", "axes"])
        kind = r.choice(["int", "float", "ints"])
        val: Any = {"int": r.randint(-3, 5), "float": _pick_special(r),
                    "ints": [r.randint(-2, 4) for _ in range(r.randint(0, 4))]}[kind]
        del_idx = [i for i, a in enumerate(nd.attribute) if a.name == name]
        for i in reversed(del_idx):
            del nd.attribute[i]
        types = {"int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT,
                 "ints": onnx.AttributeProto.INTS}
        nd.attribute.append(helper.make_attribute(name, val, attr_type=types[kind]))
        return f"add attribute {name}={val!r} to {nd.op_type}"
    nd = r.choice(nodes)
    a = r.choice(list(nd.attribute))
    choice = r.random()
    if choice < 0.15:
        nd.attribute.remove(a)
        return f"drop attribute {a.name} of {nd.op_type}"
    if a.type == onnx.AttributeProto.INT:
        a.i = r.choice([0, 1, -1, 2, 3, a.i + 1, a.i - 1, 1 << 40])
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = _pick_special(r) if choice < 0.6 else a.f * r.choice([-1.0, 10.0, 0.0])
    elif a.type == onnx.AttributeProto.INTS:
        vals = list(a.ints)
        op = r.choice(["drop", "add", "change", "negate"])
        if op == "drop" and vals:
            vals.pop(r.randrange(len(vals)))
        elif op == "add":
            vals.insert(r.randint(0, len(vals)), r.randint(-2, 4))
        elif vals:
            k = r.randrange(len(vals))
            vals[k] = -vals[k] if op == "negate" else r.randint(-3, 6)
        del a.ints[:]
        a.ints.extend(vals)
    elif a.type == onnx.AttributeProto.STRING:
        a.s = r.choice([b"", b"tanh", b"SAME_UPPER", b"VALID", b"bogus"])
    else:
        a.type = onnx.AttributeProto.INT
    if r.random() < 0.1:  # the value under a different type
        a.type = r.choice([onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT,
                           onnx.AttributeProto.INTS, onnx.AttributeProto.STRING])
    return f"change attribute {a.name} of {nd.op_type}"


def _mut_initializer(m: onnx.ModelProto, r: random.Random) -> str:
    if not m.graph.initializer:
        return _mut_attribute(m, r)
    k = r.randrange(len(m.graph.initializer))
    t = m.graph.initializer[k]
    arr = numpy_helper.to_array(t).copy()
    what = r.choice(["shape", "value", "value", "size", "dtype"])
    if what == "shape" and arr.size:
        dims = list(arr.shape)
        opt = r.choice(["flat", "add1", "swap", "drop"])
        if opt == "flat":
            arr = arr.reshape(-1)
        elif opt == "add1":
            arr = arr.reshape([1, *dims])
        elif opt == "swap" and len(dims) > 1:
            arr = arr.reshape(dims[::-1])
        elif dims:
            arr = arr.reshape(-1)[: max(0, arr.size - dims[-1])] if len(dims) > 1 else arr[:-1]
    elif what == "value" and arr.size:
        flat = arr.reshape(-1)
        idx = r.randrange(flat.size)
        if np.issubdtype(flat.dtype, np.floating):
            flat[idx] = _pick_special(r)
        else:
            flat[idx] = r.choice([0, -1, 1, 5, -7, 1 << 20])
        arr = flat.reshape(arr.shape)
    elif what == "size":
        extra = r.randint(1, 3)
        arr = np.concatenate([arr.reshape(-1), arr.reshape(-1)[:extra]]) if arr.size else arr
    else:
        arr = arr.astype(r.choice([np.float64, np.int64, np.float16, np.int32]))
    m.graph.initializer[k].CopyFrom(numpy_helper.from_array(arr, t.name))
    return f"initializer {t.name}: {what}"


def _mut_op_type(m: onnx.ModelProto, r: random.Random) -> str:
    nd = r.choice(list(m.graph.node))
    old = nd.op_type
    nd.op_type = r.choice(_OPS)
    return f"op {old} -> {nd.op_type}"


def _mut_dims(m: onnx.ModelProto, r: random.Random) -> str:
    vis = list(m.graph.input) + list(m.graph.output)
    vi = r.choice(vis)
    dims = vi.type.tensor_type.shape.dim
    choice = r.random()
    if not dims or choice < 0.15:
        vi.type.tensor_type.shape.dim.add().dim_value = r.randint(1, 3)
        return f"add dim to {vi.name}"
    d = r.choice(list(dims))
    if choice < 0.3:
        d.dim_param = "N"
    elif choice < 0.4:
        vi.type.tensor_type.elem_type = r.choice([TensorProto.DOUBLE, TensorProto.INT64])
    elif choice < 0.5:
        dims.remove(d)
    else:
        d.dim_value = r.choice([0, 1, 2, 3, d.dim_value + 1, max(1, d.dim_value - 1), 7])
    return f"dims of {vi.name}"


def _mut_order(m: onnx.ModelProto, r: random.Random) -> str:
    nodes = list(m.graph.node)
    if r.random() < 0.5 and len(nodes) > 1:
        i, j = r.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
        what = "swap two nodes"
    elif nodes:
        del nodes[r.randrange(len(nodes))]
        what = "delete a node"
    else:
        what = "nothing"
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return what


def _mut_inputs(m: onnx.ModelProto, r: random.Random) -> str:
    nd = r.choice(list(m.graph.node))
    ins = list(nd.input)
    names = (
        [i.name for i in m.graph.input] + [t.name for t in m.graph.initializer]
        + [o for x in m.graph.node for o in x.output]
    )
    choice = r.random()
    if choice < 0.4 and len(ins) > 1:
        i, j = r.sample(range(len(ins)), 2)
        ins[i], ins[j] = ins[j], ins[i]
        what = "swap inputs"
    elif choice < 0.7 and ins:
        ins[r.randrange(len(ins))] = r.choice([*names, "", "undefined"])
        what = "rewire an input"
    elif choice < 0.85:
        ins.append(r.choice(names))
        what = "extra input"
    else:
        ins = ins[:-1]
        what = "drop last input"
    del nd.input[:]
    nd.input.extend(ins)
    return f"{what} of {nd.op_type}"


def _mut_opset(m: onnx.ModelProto, r: random.Random) -> str:
    v = r.choice([1, 5, 6, 7, 9, 10, 11, 12, 13, 15, 18, 21, 22, 23, 40])
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = v
    if r.random() < 0.1:
        m.opset_import.add(domain="com.example", version=1)
    return f"opset {v}"


def _mut_bytes(data: bytes, r: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(r.randint(1, 4)):
        op = r.choice(["flip", "set", "insert", "delete", "truncate"])
        if not buf:
            break
        k = r.randrange(len(buf))
        if op == "flip":
            buf[k] ^= 1 << r.randrange(8)
        elif op == "set":
            buf[k] = r.randrange(256)
        elif op == "insert":
            buf[k:k] = bytes(r.randrange(256) for _ in range(r.randint(1, 4)))
        elif op == "delete":
            del buf[k : k + r.randint(1, 4)]
        else:
            del buf[k:]
    return bytes(buf)


GRAPH_MUTATIONS: dict[str, Callable[[onnx.ModelProto, random.Random], str]] = {
    "attribute": _mut_attribute,
    "initializer": _mut_initializer,
    "op_type": _mut_op_type,
    "dims": _mut_dims,
    "order": _mut_order,
    "inputs": _mut_inputs,
    "opset": _mut_opset,
}


@dataclass
class Mutant:
    index: int
    seed_model: str
    kind: str
    what: str
    data: bytes


def mutants(
    seeds: dict[str, onnx.ModelProto], count: int, seed: int
) -> Iterator[Mutant]:
    """``count`` mutants, the same ones for the same seed models and ``seed``."""
    r = random.Random(seed)
    names = sorted(seeds)
    for i in range(count):
        name = r.choice(names)
        base = seeds[name]
        if r.random() < 0.2:
            yield Mutant(i, name, "bytes", "byte edits", _mut_bytes(base.SerializeToString(), r))
            continue
        m = onnx.ModelProto()
        m.CopyFrom(base)
        kinds = r.sample(sorted(GRAPH_MUTATIONS), r.choice([1, 1, 1, 2]))
        whats = [
            GRAPH_MUTATIONS[k](m, r) if m.graph.node else _mut_opset(m, r) for k in kinds
        ]
        yield Mutant(i, name, "+".join(kinds), "; ".join(whats), m.SerializeToString())


# -- running one mutant ------------------------------------------------------------------------


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray] | None:
    rng = np.random.default_rng(seed)
    init = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = vi.type.tensor_type.shape.dim
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in shape]
        if any(d < 1 for d in dims) or int(np.prod(dims)) > 1 << 16:
            return None
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            return None
        x = rng.uniform(-2, 2, dims).astype(np.float32)
        if seed % 5 == 0 and x.size > 1:  # special values in one mutant in five
            flat = x.reshape(-1)
            flat[rng.integers(flat.size)] = np.nan
            flat[rng.integers(flat.size)] = rng.choice([np.inf, -np.inf])
        feeds[vi.name] = x
    return feeds


def _toposort(model: onnx.ModelProto) -> None:
    """Sort the nodes topologically in place (stable); leave them when there is a cycle."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, order = list(g.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            return
        for n in done:
            ready.update(n.output)
        order += done
        pending = rest
    nodes = [onnx.NodeProto() for _ in order]
    for dst, src in zip(nodes, order, strict=True):
        dst.CopyFrom(src)
    del g.node[:]
    g.node.extend(nodes)


def _ort(data: bytes, feeds: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """onnxruntime's verdict: ``ok`` with outputs, or ``invalid`` / ``unsupported`` and why."""
    import onnxruntime as ort

    try:
        model = onnx.load_from_string(data)
        _toposort(model)  # node order is no validity question: edgec and onnxruntime sort
        onnx.checker.check_model(model)
        # declared shapes of outputs and values are hints to both (see onnx_checks.check_types)
        del model.graph.value_info[:]
        for vo in model.graph.output:
            vo.type.tensor_type.ClearField("shape")
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        checked = True
    except Exception as exc:
        checked = False
        check_error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "checker"
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 4
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        if feeds is None:
            return {"status": "no_feeds"}
        outs = sess.run(None, feeds)
    except Exception as exc:
        text = str(exc).strip().replace("\n", " ")[:300]
        if checked and any(s in text for s in ACCEPTED_REASONS):
            return {"status": "unsupported", "why": text}
        return {"status": "invalid", "why": text}
    if not checked:
        return {"status": "ok_unchecked", "outputs": outs, "why": check_error}
    return {"status": "ok", "outputs": outs}


def _edgec(data: bytes, feeds: dict[str, np.ndarray] | None, execute: str) -> dict[str, Any]:
    import edgec
    from edgec.errors import EdgecError

    with tempfile.TemporaryDirectory(prefix="edgec-fuzz-") as tmp:
        path = Path(tmp) / "mutant.onnx"
        path.write_bytes(data)
        try:
            m = edgec.compile(path)
        except EdgecError as exc:
            return {"status": "refused", "why": str(exc)}
        except Exception as exc:  # the outcome this fuzzer hunts
            return {"status": "internal_error", "why": f"{type(exc).__name__}: {exc}"[:400]}
    if feeds is None or set(m.input_names) != set(feeds):
        return {"status": "compiled"}
    try:
        args = {k: feeds[k] for k in m.input_names}
        got = m.run(**args) if execute == "host" else m.reference(**args)
    except Exception as exc:
        return {"status": "internal_error", "why": f"run: {type(exc).__name__}: {exc}"[:400]}
    got = got if isinstance(got, list) else [got]
    return {"status": "compiled", "outputs": [np.asarray(g) for g in got]}


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape and a.size != b.size:
        return False
    a = a.reshape(-1).astype(np.float64)
    b = np.asarray(b).reshape(-1).astype(np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    fin = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(a[~fin & ~np.isnan(a)], b[~fin & ~np.isnan(b)]):
        return False
    return bool(np.all(np.abs(a[fin] - b[fin]) <= ATOL + RTOL * np.abs(b[fin])))


#: ops whose onnxruntime kernels clamp gate pre-activations (a NaN gate saturates there instead
#: of propagating): with non-finite inputs their results differ by design (docs/conformance.md)
RECURRENT_OPS = ("GRU", "LSTM", "RNN")


#: a finite parameter this large amplifies float32 rounding differences (1 ulp of an
#: intermediate) beyond any tolerance: such mismatches are counted as ill-conditioned
EXTREME = 1e20


def extreme_parameters(model: onnx.ModelProto) -> bool:
    """Whether a float attribute or initializer holds a finite value of magnitude >= EXTREME."""
    for nd in model.graph.node:
        for a in nd.attribute:
            vals = [a.f] if a.type == onnx.AttributeProto.FLOAT else list(a.floats)
            if any(np.isfinite(v) and abs(v) >= EXTREME for v in vals):
                return True
    for t in model.graph.initializer:
        try:
            arr = numpy_helper.to_array(t)
        except Exception:
            continue
        if np.issubdtype(arr.dtype, np.floating):
            fin = arr[np.isfinite(arr)]
            if fin.size and float(np.abs(fin).max()) >= EXTREME:
                return True
    return False


def classify(
    ort_res: dict[str, Any],
    ec: dict[str, Any],
    nonfinite_recurrent: bool = False,
    extreme: bool = False,
) -> tuple[str, str]:
    """(outcome, detail) of one mutant from onnxruntime's and edgec's results;
    ``nonfinite_recurrent``: the feeds hold NaN/inf and the model has a recurrent op;
    ``extreme``: a parameter of magnitude >= EXTREME (see :func:`extreme_parameters`)."""
    if ec["status"] == "internal_error":
        return "internal_error", ec["why"]
    if ec["status"] == "refused":
        if ort_res["status"] in ("ok", "ok_unchecked"):
            return "refused_valid", ec["why"]
        return "refused", ec["why"]
    # compiled
    if ort_res["status"] == "invalid":
        reason = next((v for k, v in STATED_REASONS.items() if k in ort_res["why"]), None)
        if reason is not None:
            return "compiled_stated_reason", reason
        return "invalid_compiled", ort_res["why"]
    if ort_res["status"] in ("unsupported", "no_feeds") or "outputs" not in ec:
        return "compiled_unchecked", ort_res.get("why", "")
    expected = ort_res["outputs"]
    got = ec["outputs"]
    if len(expected) != len(got):
        return "mismatch", f"{len(got)} outputs, onnxruntime {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        if not _close(np.asarray(g), np.asarray(e)):
            if nonfinite_recurrent:
                return "nonfinite_recurrent_difference", f"output {k}"
            if extreme:
                return "ill_conditioned_difference", f"output {k}"
            return "mismatch", f"output {k}: edgec {np.asarray(g).reshape(-1)[:6]} " \
                f"onnxruntime {np.asarray(e).reshape(-1)[:6]}"
    if ort_res["status"] == "ok_unchecked":
        return "match_unchecked", ort_res["why"]
    return "match", ""


def _worker(conn: Any, execute: str) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        data, feed_seed = msg
        try:
            model = onnx.load_from_string(data)
            feeds = _feeds(model, feed_seed)
            recurrent = any(nd.op_type in RECURRENT_OPS for nd in model.graph.node)
            extreme = extreme_parameters(model)
        except Exception:
            feeds, recurrent, extreme = None, False, False
        nonfinite = feeds is not None and not all(np.isfinite(v).all() for v in feeds.values())
        conn.send(("phase", "onnxruntime"))
        ort_res = _ort(data, feeds)
        conn.send(("phase", "edgec"))
        ec = _edgec(data, feeds, execute)
        conn.send(("done", classify(ort_res, ec, nonfinite and recurrent, extreme)))


@dataclass
class Runner:
    """A worker process that runs mutants one at a time, restarted after a crash or hang.

    ``worker(conn, execute)`` (a module-level function) answers each ``(data, feed_seed)`` with
    ``("phase", name)`` messages and a final ``("done", (outcome, detail))``; a crash or hang
    before its ``"edgec"`` phase is the reference's (``<ref>_crash``/``<ref>_hang``).
    """

    execute: str
    timeout: float
    worker: Callable[[Any, str], None] = _worker
    ref: str = "ort"
    proc: Any = None
    conn: Any = None
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))

    def _start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=self.worker, args=(child, self.execute),
                                     daemon=True)
        self.proc.start()
        self.conn = parent

    def run(self, data: bytes, feed_seed: int) -> tuple[str, str]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((data, feed_seed))
        phase = "start"
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.conn.poll(left):
                self.stop(kill=True)
                return ("hang", phase) if phase == "edgec" else (f"{self.ref}_hang", phase)
            try:
                kind, val = self.conn.recv()
            except EOFError:
                self.stop(kill=True)
                return ("crash", phase) if phase == "edgec" else (f"{self.ref}_crash", phase)
            if kind == "phase":
                phase = val
                continue
            return val  # type: ignore[no-any-return]

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(5)
        self.proc = None


@dataclass
class FuzzResult:
    counts: Counter[str]
    bad: list[tuple[Mutant, str, str]]
    seconds: float
    #: mutants whose outcome is worth listing though not a bug (``run_mutants``' ``notable``)
    notable: list[tuple[Mutant, str, str]] = field(default_factory=list)
    #: the outcomes that are bugs
    bad_kinds: Sequence[str] = BAD

    @property
    def bad_count(self) -> int:
        return sum(self.counts[k] for k in self.bad_kinds)

    def summary(self) -> dict[str, Any]:
        return {
            "mutants": sum(self.counts.values()),
            "seconds": round(self.seconds, 1),
            "counts": dict(sorted(self.counts.items())),
            "bad": self.bad_count,
        }


def run_mutants(
    runner: Runner,
    muts: Iterable[Mutant],
    seed: int,
    suffix: str,
    bad_kinds: Sequence[str] = BAD,
    notable: Sequence[str] = (),
    failures: Path | None = None,
    progress: Callable[[int, Counter[str]], None] | None = None,
) -> FuzzResult:
    """Run each mutant in ``runner`` (stopped at the end); ``failures`` keeps every bad one as
    ``<index>-<outcome>-<seed model><suffix>`` and a ``.txt`` saying what changed."""
    counts: Counter[str] = Counter()
    bad: list[tuple[Mutant, str, str]] = []
    kept: list[tuple[Mutant, str, str]] = []
    t0 = time.monotonic()
    try:
        for mt in muts:
            outcome, detail = runner.run(mt.data, seed * 1_000_003 + mt.index)
            counts[outcome] += 1
            if outcome in notable:
                kept.append((mt, outcome, detail))
            if outcome in bad_kinds:
                bad.append((mt, outcome, detail))
                if failures is not None:
                    failures.mkdir(parents=True, exist_ok=True)
                    stem = f"{mt.index:06d}-{outcome}-{mt.seed_model}"
                    (failures / f"{stem}{suffix}").write_bytes(mt.data)
                    (failures / f"{stem}.txt").write_text(
                        f"{mt.kind}: {mt.what}\n{outcome}: {detail}\n"
                    )
            if progress is not None:
                progress(mt.index + 1, counts)
    finally:
        runner.stop()
    return FuzzResult(counts, bad, time.monotonic() - t0, kept, bad_kinds)


def fuzz(
    count: int,
    seed: int = 0,
    execute: str = "numpy",
    timeout: float = 60.0,
    seeds: dict[str, onnx.ModelProto] | None = None,
    failures: Path | None = None,
    progress: Callable[[int, Counter[str]], None] | None = None,
) -> FuzzResult:
    """Run ``count`` mutants; returns the outcome counts and the bad mutants."""
    seeds = seeds if seeds is not None else seed_models()
    return run_mutants(Runner(execute, timeout), mutants(seeds, count, seed), seed, ".onnx",
                       failures=failures, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exec", dest="execute", choices=("host", "numpy"), default="host")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    ap.add_argument("--bench-models", action="store_true",
                    help="also mutate the bench models (exported from PyTorch once, cached)")
    ap.add_argument("--failures", type=Path, help="directory to keep the bad mutants in")
    args = ap.parse_args(argv)
    seeds = seed_models()
    if args.bench_models:
        seeds.update(bench_seed_models())

    def progress(done: int, counts: Counter[str]) -> None:
        if done % 100 == 0:
            print(f"{done}/{args.count} {dict(sorted(counts.items()))}", file=sys.stderr,
                  flush=True)

    res = fuzz(args.count, args.seed, args.execute, args.timeout, seeds, args.failures, progress)
    print(json.dumps(res.summary(), indent=2))
    for mt, outcome, detail in res.bad[:50]:
        print(f"#{mt.index} {mt.seed_model} [{mt.kind}: {mt.what}] {outcome}: {detail}")
    return 1 if res.bad_count else 0


if __name__ == "__main__":
    sys.exit(main())
