"""edgec's post-training int8 quantizer: ``edgec.compile(..., quantize="int8")`` and
``edgec quantize``. The quantized model written as .tflite runs in the TFLite interpreter
(reference kernels) to the same bytes as edgec's C; written as QDQ .onnx it compiles back to the
same C and onnxruntime runs it within its rounding (<= 2 output LSB, see test_onnx_qdq.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgec
from edgec.api import compile_graph, load_graph
from edgec.cli import main
from edgec.errors import EdgecError
from edgec.quantize import QuantizedModel, quantize_graph
from edgec.quantize.onnx_writer import to_onnx
from edgec.quantize.tflite_writer import to_tflite
from tests.helpers import make_model, ort_run
from tests.onnx_quant_models import calibration, float_cnn, float_mlp
from tests.tflite_builder import TflBuilder, run_interpreter


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[onnx.ModelProto, np.ndarray, QuantizedModel]]:
    out = {}
    for name, build in (("cnn", float_cnn), ("mlp", float_mlp)):
        model = build()
        cal = np.stack(calibration(model, 24))
        out[name] = (model, cal, quantize_graph(load_graph(model), {"x": cal}))
    return out


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_tflite_interpreter_runs_the_quantized_model_to_the_same_bytes(models: dict,
                                                                        name: str) -> None:
    model, cal, q = models[name]
    m = compile_graph(q.qdq)
    data = to_tflite(q.lowered)
    back = edgec.compile(data)  # edgec's TFLite front-end reads its own file
    for x in calibration(model, 30, seed=11):
        c = m.run(x)
        np.testing.assert_array_equal(run_interpreter(data, [x])[0].reshape(c.shape), c)
        np.testing.assert_array_equal(back.run(x).reshape(c.shape), c)


def test_quantized_graph_and_accuracy_report(models: dict) -> None:
    _, _, q = models["cnn"]
    ops = [n.op for n in q.lowered.nodes]
    assert {"QConv2D", "QDepthwiseConv2D", "QMaxPool2D", "QAdd", "QMean",
            "QFullyConnected"} <= set(ops)
    assert ops[0] == "Quantize" and ops[-1] == "Dequantize"
    assert ops.count("Transpose") == 1  # NCHW → NHWC at the input; the rest cancelled
    conv = next(n for n in q.lowered.nodes if n.op == "QConv2D")
    wq = q.lowered.quant(conv.inputs[1])
    assert wq is not None and wq.size == 8 and wq.axis == 0 and not wq.zero_point.any()
    assert q.lowered.tensor(conv.inputs[2]).dtype == "int32"
    (out,) = q.report.outputs
    assert q.report.sets == 24 and q.report.float_ops == []
    assert out.top1 is not None and out.top1 >= 0.95
    assert 0 < out.mean_abs <= out.max_abs < 0.05
    assert "top-1 agreement" in q.report.format()


def test_compile_quantize_matches_the_written_qdq_onnx(models: dict, tmp_path: Path) -> None:
    model, cal, q = models["mlp"]
    m = edgec.compile(model, quantize="int8", calibration={"x": cal})
    assert m.quant_report is not None and m.quant_report.outputs[0].top1 is not None
    path = tmp_path / "mlp_int8.onnx"
    onnx.save(to_onnx(q.qdq), path)
    onnx.checker.check_model(onnx.load(path))
    back = edgec.compile(str(path))
    lsb = 1.0 / 256.0  # the sigmoid output
    for x in calibration(model, 20, seed=2):
        np.testing.assert_array_equal(back.run(x), m.run(x))
        assert np.abs(ort_run(onnx.load(path), {"x": x})[0] - m.run(x)).max() <= 2 * lsb


def test_percentile_ranges_are_narrower(models: dict) -> None:
    model, cal, q = models["cnn"]
    p = quantize_graph(load_graph(model), {"x": cal}, method="percentile", percentile=99.0)
    first = next(n for n in p.qdq.nodes if n.op == "QuantizeLinear")
    base = next(n for n in q.qdq.nodes if n.op == "QuantizeLinear")
    assert first.inputs[0] == base.inputs[0] == "x"
    assert p.qdq.const(first.inputs[1]) < q.qdq.const(base.inputs[1])


def test_torch_module_and_per_tensor_weights() -> None:
    import torch

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    x = torch.randn(1, 6)
    cal = np.random.default_rng(0).standard_normal((32, 1, 6)).astype(np.float32)
    m = edgec.compile(net.eval(), example_inputs=(x,), quantize="int8", calibration=list(cal))
    fc = [n for n in m.graph.nodes if n.op == "QFullyConnected"]
    # the ReLU is the first layer's clamp (its output zero point is -128: the clamp is the
    # int8 range itself)
    assert [n.op for n in m.graph.nodes] == ["Quantize", "QFullyConnected", "QFullyConnected",
                                             "Dequantize"]
    assert len(fc) == 2
    ref = net(torch.from_numpy(cal[0])).detach().numpy()
    assert np.abs(m.run(cal[0]) - ref).max() < 0.05
    # one array (numpy or torch) for a one-input model: the same sets as the list
    for arr in (cal, torch.from_numpy(cal)):
        same = edgec.compile(net.eval(), example_inputs=(x,), quantize="int8", calibration=arr)
        assert same.c_source == m.c_source
    g = load_graph(net.eval(), example_inputs=(x,))
    q = quantize_graph(g, list(cal), per_channel=False)
    w = next(n for n in q.lowered.nodes if n.op == "QFullyConnected").inputs[1]
    assert q.lowered.quant(w).size == 1  # type: ignore[union-attr]


def test_float_tflite_conv_quantizes_to_the_same_bytes_as_the_interpreter() -> None:
    rng = np.random.default_rng(5)
    b = TflBuilder()
    x = b.input("x", (1, 6, 6, 2))
    w = b.const("w", rng.standard_normal((4, 3, 3, 2)).astype(np.float32))
    bias = b.const("b", rng.standard_normal(4).astype(np.float32))
    h = b.tensor("h", (1, 6, 6, 4))
    b.op("CONV_2D", [x, w, bias], [h], "Conv2DOptions", padding=0, strideH=1, strideW=1,
         fusedActivationFunction=1)
    y = b.tensor("y", (1, 3, 3, 4))
    b.op("MAX_POOL_2D", [h], [y], "Pool2DOptions", padding=1, strideH=2, strideW=2,
         filterHeight=2, filterWidth=2)
    g = load_graph(b.build([x], [y]))
    cal = rng.standard_normal((16, 1, 6, 6, 2)).astype(np.float32)
    q = quantize_graph(g, {"x": cal})
    assert "Conv" not in {n.op for n in q.lowered.nodes}
    m = compile_graph(q.qdq)
    data = to_tflite(q.lowered)
    for s in cal[:8]:
        np.testing.assert_array_equal(run_interpreter(data, [s])[0], m.run(s))


def _mixed_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Elu", ["h"], ["e"]),
             helper.make_node("Gemm", ["e", "w2"], ["y"], transB=1)]
    return make_model(nodes, {"x": (1, 8)}, {"y": (1, 3)},
                      {"w1": rng.standard_normal((5, 8)).astype(np.float32),
                       "b1": np.zeros(5, np.float32),
                       "w2": rng.standard_normal((3, 5)).astype(np.float32)})


def test_op_without_int8_kernel_stays_float_and_is_reported() -> None:
    model = _mixed_model()
    cal = np.random.default_rng(1).standard_normal((16, 1, 8)).astype(np.float32)
    q = quantize_graph(load_graph(model), {"x": cal})
    assert [s.split(" ")[-1] for s in q.report.float_ops] == ["(Elu)"]
    assert [n.op for n in q.lowered.nodes] == ["Quantize", "QFullyConnected", "Dequantize",
                                               "Elu", "Quantize", "QFullyConnected",
                                               "Dequantize"]
    assert "Elu" in q.report.format()
    # the island is written as a float ELU between DEQUANTIZE and QUANTIZE (GRU and others
    # without a builtin: tests/test_quantize_mixed_tflite.py)
    back = edgec.compile(to_tflite(q.lowered))
    assert [n.op for n in back.graph.nodes].count("Elu") == 1
    m = edgec.compile(model, quantize="int8", calibration={"x": cal})
    ref = ort_run(model, {"x": cal[0]})[0]
    assert np.abs(m.run(cal[0]) - ref).max() < 0.1 * np.abs(ref).max() + 0.05


@pytest.mark.parametrize("kwargs, match", [
    ({}, "needs calibration data"),
    ({"calibration": {"x": np.zeros((4, 3, 7, 8), np.float32)}},
     r"input 'x' has shape \(4, 3, 7, 8\); the model expects \(1, 3, 8, 8\)"),
    ({"calibration": {"y": np.zeros((4, 1, 3, 8, 8), np.float32)}}, "lacks input"),
    ({"calibration": "/nonexistent/cal.npz"}, "no such file"),
    ({"calibration": __file__}, r"not a \.npy or \.npz file \(numpy\.save"),  # not numpy's hint
    ({"calibration": 3.5}, r"or \(one-input model\) an array, got float"),
])
def test_bad_calibration_is_a_one_line_error(models: dict, kwargs: dict, match: str) -> None:
    model = models["cnn"][0]
    with pytest.raises(EdgecError, match=match) as exc:
        edgec.compile(model, quantize="int8", **kwargs)
    assert "\n" not in str(exc.value)


def test_already_quantized_model_is_refused() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
         helper.make_tensor("z", TensorProto.INT8, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgecError, match="already quantized"):
        edgec.compile(model, quantize="int8", calibration={"x": np.zeros((2, 1, 4))})


def test_cli_quantize_writes_tflite_and_onnx(models: dict, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model, cal, _ = models["mlp"]
    onnx.save(model, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=cal)
    args = ["quantize", str(tmp_path / "mlp.onnx"), "--calibration", str(tmp_path / "cal.npz")]
    assert main([*args, "-o", str(tmp_path / "q.tflite")]) == 0
    assert "top-1 agreement" in capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "q.onnx"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sets"] == len(cal) and report["float_ops"] == []
    x = cal[0]
    np.testing.assert_array_equal(edgec.compile(str(tmp_path / "q.onnx")).run(x),
                                  edgec.compile(str(tmp_path / "q.tflite")).run(x))
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 5), np.float32))
    assert main([*args[:3], str(tmp_path / "bad.npz"), "-o", str(tmp_path / "b.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "input 'x' has shape (3, 5)" in err


def test_keras_model_quantizes_and_tflite_matches() -> None:
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    tf.random.set_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 2), batch_size=1),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])
    cal = np.random.default_rng(2).standard_normal((16, 1, 8, 8, 2)).astype(np.float32)
    g = load_graph(model)
    q = quantize_graph(g, {g.inputs[0]: cal})
    assert q.report.float_ops == [] and q.report.outputs[0].top1 is not None
    m = compile_graph(q.qdq)
    data = to_tflite(q.lowered)
    ref = model(cal[0]).numpy()
    for s in cal[:6]:
        np.testing.assert_array_equal(run_interpreter(data, [s])[0], m.run(s))
    assert np.abs(m.run(cal[0]) - ref).max() < 0.1 * np.abs(ref).max() + 0.02


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("relu", [False, True])
def test_cancelling_add_sub_gets_an_output_scale_tflite_accepts(op: str, relu: bool) -> None:
    """h + (-h) or h - h: the calibrated output range is 0, whose scale (1e-8 / 255) made
    TFLite's output rescale 2·max(s1, s2) / (2^20·s_out) ≈ 376, which its ADD aborts on and
    its SUB computes wrongly (and edgec's TFLite front-end refuses). The quantizer floors the
    output scale at a rescale of 1/2: the written .tflite runs in the interpreter to the C's
    bytes and compiles back."""
    from edgec.ops.int8.arith import add_rescales

    w = np.full((4, 4), 0.25, np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("MatMul", ["x", "w2"], ["h2"]),
             helper.make_node(op, ["h", "h2"], ["s" if relu else "y"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["s"], ["y"]))
    model = make_model(nodes, {"x": (1, 4)}, {"y": (1, 4)},
                       {"w": w, "w2": w if op == "Sub" else -w})
    cal = np.random.default_rng(0).standard_normal((16, 1, 4)).astype(np.float32)
    q = quantize_graph(load_graph(model), {"x": cal})
    node = next(n for n in q.lowered.nodes if n.op == f"Q{op}")
    (s1, _), (s2, _), (so, _) = (q.lowered.quant(t).scalar() for t in [*node.inputs[:2],
                                                                     *node.outputs])
    assert add_rescales(s1, s2, so)[2] == pytest.approx(0.5, rel=1e-6)
    data = to_tflite(q.lowered)
    m, back = compile_graph(q.qdq), edgec.compile(data)
    for x in [cal[0], cal[1], 3 * cal[2]]:
        c = m.run(x)
        np.testing.assert_array_equal(run_interpreter(data, [x])[0].reshape(c.shape), c)
        np.testing.assert_array_equal(back.run(x).reshape(c.shape), c)
