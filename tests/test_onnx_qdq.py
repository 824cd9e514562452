"""Quantized ONNX models (onnxruntime's quantize_static, QDQ and QOperator formats) lowered to
edgec's int8 ops and compared with onnxruntime.

onnxruntime requantizes with a float multiplier and rounds halves to even; edgec uses TFLite's
fixed-point multiplier and rounds halves away from zero, so intermediate codes can differ by one
and the difference can grow through layers. Measured on the CNN (2 x 500 inputs, each format):
16-18% of outputs differ by 1 output LSB, 0.04-0.06% by 2, none by more; top-1 agrees on all.
The MLP, whose last layer is a table, agrees exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.errors import EdgecError
from edgec.passes.qdq import float_islands
from tests.c_checks import strict_and_sanitized
from tests.helpers import ort_run
from tests.onnx_quant_models import calibration, float_cnn, float_mlp, ort_quantize

CASES = [("qdq", True, "int8"), ("qdq", False, "int8"), ("qdq", True, "uint8"),
         ("qoperator", False, "uint8"), ("qoperator", True, "int8")]
INT8_OPS = {"QConv2D", "QDepthwiseConv2D", "QMaxPool2D", "QAdd", "QMean", "QFullyConnected"}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, Path]:
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice
    tmp = tmp_path_factory.mktemp("ortq")
    out = {}
    for name, build in (("cnn", float_cnn), ("mlp", float_mlp)):
        model = build()
        for fmt, pc, act in CASES:
            out[(name, fmt, pc, act)] = ort_quantize(model, tmp / f"{name}_{fmt}_{pc}_{act}.onnx",
                                                     fmt, pc, act)
    return out


def _output_scale(m: edgec.CompiledModel) -> float:
    deq = [n for n in m.graph.nodes if n.op == "Dequantize"][-1]
    q = m.graph.quant(deq.inputs[0])
    assert q is not None
    return float(q.scale[0])


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_cnn_within_two_lsb_of_onnxruntime(quantized: dict, case: tuple) -> None:
    path = quantized[("cnn", *case)]
    m = edgec.compile(str(path))
    ops = {n.op for n in m.graph.nodes}
    assert INT8_OPS <= ops, ops
    assert float_islands(m.graph) == []
    assert not ops & {"Conv", "Gemm", "MaxPool", "QuantizeLinear", "DequantizeLinear"}
    proto = onnx.load(str(path))
    lsb = _output_scale(m)
    worst, one, two = 0.0, 0, 0
    xs = calibration(float_cnn(), 40, seed=7)
    for x in xs:
        got = m.run(x)
        np.testing.assert_array_equal(got, m.reference(x))  # C == numpy reference
        diff = np.abs(got - ort_run(proto, {"x": x})[0]) / lsb
        worst = max(worst, float(diff.max()))
        one += int(np.sum(diff > 0.5))
        two += int(np.sum(diff > 1.5))
    n = len(xs) * 10
    assert worst <= 2.0 + 1e-3, worst
    assert one <= 0.25 * n and two <= 0.01 * n, (one, two)


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4], ids=["qdq", "qoperator"])
def test_mlp_matches_onnxruntime_exactly(quantized: dict, case: tuple) -> None:
    path = quantized[("mlp", *case)]
    m = edgec.compile(str(path))
    assert [n.op for n in m.graph.nodes] == ["Quantize", "QFullyConnected", "QLut",
                                              "QFullyConnected", "QLut", "Dequantize"]
    proto = onnx.load(str(path))
    for x in calibration(float_mlp(), 40, seed=3):
        np.testing.assert_array_equal(m.run(x), ort_run(proto, {"x": x})[0])


def test_qdq_strict_c_and_sanitizers(quantized: dict, tmp_path: Path) -> None:
    m = edgec.compile(str(quantized[("cnn", "qdq", True, "int8")]))
    x = calibration(float_cnn(), 1, seed=9)[0]
    (out,) = strict_and_sanitized(m, tmp_path, [x])
    np.testing.assert_array_equal(out, m.run(x))


def _qdq_model(op: str, zp_type: int = TensorProto.INT8, opset: int = 17) -> onnx.ModelProto:
    zp = helper.make_tensor("zp", zp_type, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node(op, ["xd"], ["e"]),
             helper.make_node("QuantizeLinear", ["e", "s2", "zp"], ["eq"]),
             helper.make_node("DequantizeLinear", ["eq", "s2", "zp"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(np.float32(0.02), "s"),
         numpy_helper.from_array(np.float32(0.05), "s2"), zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10
    return model


def test_op_without_int8_kernel_stays_float_between_dequantize_and_quantize() -> None:
    model = _qdq_model("Exp")
    m = edgec.compile(model)
    assert [n.op for n in m.graph.nodes] == ["Quantize", "Dequantize", "Exp", "Quantize",
                                              "Dequantize"]
    assert float_islands(m.graph) == [f"{m.graph.nodes[2].name} (Exp)"]
    x = np.linspace(-2.5, 1.5, 16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_allclose(m.run(x), ort_run(model, {"x": x})[0], atol=0.05 + 1e-6)


def test_int16_qdq_is_a_one_line_error() -> None:
    with pytest.raises(EdgecError, match="int16 quantization is not supported") as exc:
        edgec.compile(_qdq_model("Relu", TensorProto.INT16, opset=21))
    assert "\n" not in str(exc.value)


def test_verify_defaults_to_two_output_lsb(quantized: dict, capsys: pytest.CaptureFixture) -> None:
    """``edgec verify`` of a quantized ONNX model passes without --atol: a dequantized int8
    output gets 2 of its LSB against onnxruntime, and says so; an explicit --atol wins."""
    import json

    from edgec.cli import main

    path = str(quantized[("cnn", "qdq", True, "int8")])
    lsb = _output_scale(edgec.compile(path))
    assert main(["verify", path, "--n", "20", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    (out,) = js["outputs"]
    assert out["atol"] == pytest.approx(2 * lsb) and out["max_abs_err"] > 0
    assert main(["verify", path, "--n", "20"]) == 0
    assert "dequantized int8 outputs: 2 LSB" in capsys.readouterr().out
    assert main(["verify", path, "--n", "20", "--atol", "1e-9", "--rtol", "0"]) == 1


def _asymmetric_weights_model(op: str, w_zp: int) -> onnx.ModelProto:
    """x (QDQ) -> Gemm / MatMul with int8 weights of zero point ``w_zp`` -> QDQ."""
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (16, 8)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(0.02), "s"),
             numpy_helper.from_array(np.float32(0.05), "s2"),
             numpy_helper.from_array(np.float32(0.01), "ws"), numpy_helper.from_array(w, "w"),
             helper.make_tensor("zp", TensorProto.INT8, [], [3]),
             helper.make_tensor("wz", TensorProto.INT8, [], [w_zp])]
    ins = ["xd", "wd"]
    if op == "Gemm":
        inits.append(numpy_helper.from_array((0.1 * rng.normal(size=8)).astype(np.float32), "b"))
        ins.append("b")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
             helper.make_node(op, ins, ["e"]),
             helper.make_node("QuantizeLinear", ["e", "s2", "zp"], ["eq"]),
             helper.make_node("DequantizeLinear", ["eq", "s2", "zp"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_asymmetric_int8_weights_stay_float(op: str) -> None:
    """Weights with a non-zero zero point (onnxruntime's quantizer writes them for a weight the
    torch exporter shared through an Identity) have no int8 kernel: the layer stays float
    between Dequantize and Quantize (reported), equal to onnxruntime; symmetric ones go int8.
    Before, the lowering made an int8 layer and compiling stopped at 'int8 weights must be
    symmetric'."""
    x = np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 16)
    sym = edgec.compile(_asymmetric_weights_model(op, 0))
    assert "QFullyConnected" in [n.op for n in sym.graph.nodes]
    model = _asymmetric_weights_model(op, 5)
    m = edgec.compile(model)
    assert [f.split(" ")[1] for f in float_islands(m.graph)] == [f"({op})"]
    np.testing.assert_allclose(m.run(x), ort_run(model, {"x": x})[0], atol=0.05 + 1e-6)


def test_a_bias_scale_that_underflows_keeps_the_layer_float() -> None:
    """A weight scale of 1e-44 (a damaged file, bench/fuzz_model_bytes.py): input scale x
    weight scale underflows float32, so the int32 bias has no scale; the layer stays float
    (reported) instead of dividing by zero, and still equals onnxruntime."""
    import warnings

    model = _asymmetric_weights_model("Gemm", 0)
    for init in model.graph.initializer:
        if init.name == "ws":
            init.CopyFrom(numpy_helper.from_array(np.float32(1e-44), "ws"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = edgec.compile(model)
    assert [f.split(" ")[1] for f in float_islands(m.graph)] == ["(Gemm)"]
    x = np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_allclose(m.run(x), ort_run(model, {"x": x})[0], atol=0.05 + 1e-6)
