"""Invalid ONNX models are one-line errors; NaN and infinity in data follow onnxruntime; the
differential fuzzer (bench/fuzz.py) finds no internal error, crash, hang or silent mismatch."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from bench import fuzz
from edgec.errors import EdgecError
from tests.helpers import check_model, make_model

nan, inf = np.float32(np.nan), np.float32(np.inf)


def _refused(model: onnx.ModelProto, *parts: str) -> str:
    with pytest.raises(EdgecError) as info:
        edgec.compile(model, name="bad")
    text = str(info.value)
    assert "\n" not in text
    for p in parts:
        assert p in text, text
    return text


# -- schema: arity, attributes, opset --------------------------------------------------------


def test_unknown_attribute() -> None:
    m = make_model([helper.make_node("Abs", ["x"], ["y"], axis=1)], {"x": [1, 4]}, ["y"])
    _refused(m, "bad", "node 'Abs_0'", "(Abs)", "unknown attribute 'axis'")


def test_a_graph_without_outputs_and_a_future_ir_version() -> None:
    """Both found by bench.fuzz (seed 8): onnxruntime refuses them; edgec compiled a model with
    no outputs and one of IR version 121."""
    m = make_model([helper.make_node("Abs", ["x"], ["y"])], {"x": [1, 4]}, ["y"])
    del m.graph.output[:]
    _refused(m, "the graph has no outputs")
    m = make_model([helper.make_node("Abs", ["x"], ["y"])], {"x": [1, 4]}, ["y"])
    m.ir_version = onnx.IR_VERSION + 1
    _refused(m, f"ONNX IR version {onnx.IR_VERSION + 1} is newer than the installed onnx")


def test_too_many_inputs() -> None:
    m = make_model([helper.make_node("Add", ["x"] * 5, ["y"])], {"x": [1, 4]}, ["y"])
    _refused(m, "(Add)", "has 5 inputs", "exactly 2")
    m = make_model([helper.make_node("Transpose", ["x"] * 3, ["y"])], {"x": [1, 4]}, ["y"])
    _refused(m, "(Transpose)", "has 3 inputs")


def test_axes_input_before_opset13() -> None:
    m = make_model(
        [helper.make_node("Squeeze", ["x", "ax"], ["y"])], {"x": [1, 4]}, ["y"],
        {"ax": np.array([0], np.int64)}, opset=1,
    )
    _refused(m, "(Squeeze)", "has 2 inputs", "opset 1 Squeeze takes exactly 1")


def test_attribute_type_and_missing_required() -> None:
    node = helper.make_node("Softmax", ["x"], ["y"])
    node.attribute.append(helper.make_attribute("axis", 1.5))
    _refused(make_model([node], {"x": [1, 4]}, ["y"]), "attribute 'axis' has type FLOAT")
    m = make_model([helper.make_node("Concat", ["x", "x"], ["y"])], {"x": [1, 4]}, ["y"])
    _refused(m, "(Concat)", "required attribute 'axis' is missing")


def test_unknown_opset_and_op_at_opset() -> None:
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 4]}, ["y"])
    m.opset_import[0].version = 99
    _refused(m, "opset 99", "known opsets are 1 to")
    m = make_model([helper.make_node("Gelu", ["x"], ["y"])], {"x": [1, 4]}, ["y"], opset=17)
    _refused(m, "(Gelu)", "does not exist at opset 17", "appears in opset 20")


def test_types_that_do_not_bind() -> None:
    m = make_model(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"x": [1, 4]}, {"y": [1, 4]},
        {"lo": np.array(0, np.float32), "hi": np.array(1, np.int64)},
    )
    _refused(m, "fails ONNX type/shape inference")


# -- parameter shapes --------------------------------------------------------------------------


def test_gemm_bias_must_broadcast() -> None:
    w = np.ones((4, 4), np.float32)
    m = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], {"x": [1, 4]}, ["y"],
                   {"w": w, "b": np.ones(3, np.float32)})
    _refused(m, "(Gemm)", "bias C of shape (3,) does not broadcast to the output (1, 4)")


def test_batchnorm_parameter_lengths() -> None:
    c = np.ones(3, np.float32)
    m = make_model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
        {"x": [1, 3, 2, 2]}, ["y"], {"s": c, "b": c, "m": np.ones(2, np.float32), "v": c},
    )
    _refused(m, "(BatchNormalization)", "mean has 2 values", "needs 3")


def test_conv_bias_length() -> None:
    m = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1])],
        {"x": [1, 2, 3, 3]}, ["y"],
        {"w": np.ones((4, 2, 1, 1), np.float32), "b": np.ones(3, np.float32)},
    )
    _refused(m, "(Conv)", "bias shape (3,) must be (4,)")


# -- non-finite attributes and corrupt files ---------------------------------------------------


@pytest.mark.parametrize(("op", "attr", "value"), [
    ("LeakyRelu", "alpha", float("nan")),
    ("Elu", "alpha", float("inf")),
    ("BatchNormalization", "epsilon", float("nan")),
])
def test_nonfinite_attribute(op: str, attr: str, value: float) -> None:
    c = np.ones(2, np.float32)
    ins = ["x", "s", "b", "m", "v"] if op == "BatchNormalization" else ["x"]
    inits = {k: c for k in ins[1:]}
    node = helper.make_node(op, ins, ["y"], **{attr: value})
    model = make_model([node], {"x": [1, 2, 2]}, ["y"], inits)
    _refused(model, f"({op})", f"attribute '{attr}' is {value}", "must be finite")


def test_corrupt_files_are_edgec_errors(tmp_path: object) -> None:
    from pathlib import Path

    base = fuzz.seed_models()["conv_bn_pool"].SerializeToString()
    r = random.Random(1)
    refused = 0
    for k in range(40):
        data = fuzz._mut_bytes(base, r)
        path = Path(str(tmp_path)) / f"c{k}.onnx"
        path.write_bytes(data)
        try:
            edgec.compile(path)
        except EdgecError as exc:
            assert "\n" not in str(exc)
            refused += 1
    assert refused > 10  # most corruptions break the file; none may raise anything else


# -- NaN and infinity in data: as onnxruntime ---------------------------------------------------

_X8 = np.array([[[nan, 1, -2, 3, inf, nan, -1, -inf]]], np.float32)


@pytest.mark.parametrize("node", [
    helper.make_node("Relu", ["x"], ["y"]),
    helper.make_node("Clip", ["x", "lo", "hi"], ["y"]),
    helper.make_node("Celu", ["x"], ["y"], alpha=1.0),
    helper.make_node("HardSigmoid", ["x"], ["y"]),
    helper.make_node("ReduceMax", ["x"], ["y"], keepdims=1),
    helper.make_node("ReduceMin", ["x"], ["y"], keepdims=1),
], ids=lambda n: n.op_type)
def test_nan_like_onnxruntime(node: onnx.NodeProto) -> None:
    inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}
    used = {k: v for k, v in inits.items() if k in node.input}
    check_model(make_model([node], {"x": [1, 1, 8]}, ["y"], used), {"x": _X8})


@pytest.mark.parametrize(("node", "want"), [
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], strides=[2]), [nan, 3, nan, -1]),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[1], pads=[1, 1]),
     [nan, nan, 3, inf, nan, nan, nan, -1]),
    (helper.make_node("GlobalMaxPool", ["x"], ["y"]), [nan]),
], ids=lambda v: getattr(v, "op_type", ""))
def test_max_pools_propagate_nan(node: onnx.NodeProto, want: list[float]) -> None:
    """A NaN in a window gives NaN, in C and in the reference, as numpy and torch do (onnxruntime's
    MaxPool kernels disagree with one another here: docs/conformance.md)."""
    cm = edgec.compile(make_model([node], {"x": [1, 1, 8]}, ["y"]))
    np.testing.assert_array_equal(cm.run(_X8).reshape(-1), np.array(want, np.float32))
    np.testing.assert_array_equal(cm.reference(_X8).reshape(-1), np.array(want, np.float32))


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_propagate_nan(op: str) -> None:
    a = np.array([nan, 1, nan, 2, -inf, 3], np.float32)
    b = np.array([1, nan, nan, 3, 0, inf], np.float32)
    m = make_model([helper.make_node(op, ["a", "b"], ["y"])], {"a": [6], "b": [6]}, ["y"])
    cm = check_model(m, {"a": a, "b": b})
    assert np.isnan(cm.run(a=a, b=b)[:3]).all()


def test_fused_relu_propagates_nan() -> None:
    w = np.arange(1, 17, dtype=np.float32).reshape(4, 4) / 8  # dense: no zero is skipped
    m = make_model(
        [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        {"x": [1, 4]}, ["y"], {"w": w},
    )
    cm = check_model(m, {"x": np.array([[nan, -1, 2, 3]], np.float32)})
    assert np.isnan(cm.run(np.array([[nan, -1, 2, 3]], np.float32))).all()
    assert "fmaxf" not in cm.c_source


# -- the differential fuzzer, bounded --------------------------------------------------------


def test_fuzz_bounded() -> None:
    res = fuzz.fuzz(200, seed=1, execute="numpy", timeout=60)
    summary = res.summary()
    assert summary["mutants"] == 200
    assert res.bad_count == 0, [(m.index, m.what, o, d) for m, o, d in res.bad][:5]
    # the mutants exercise both outcomes: refusals and compiled models checked against ORT
    assert res.counts["refused"] > 20 and res.counts["match"] > 20, summary


def test_fuzz_bounded_host_c() -> None:
    """Fewer mutants, but each compiled one runs as C on the host (gcc, cached by content)."""
    res = fuzz.fuzz(100, seed=2, execute="host", timeout=120)
    assert res.bad_count == 0, [(m.index, m.what, o, d) for m, o, d in res.bad][:5]
    assert res.counts["match"] > 5, res.summary()
