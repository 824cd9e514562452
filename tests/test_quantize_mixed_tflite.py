"""Mixed-precision .tflite from ``edgec quantize``: ops without an int8 kernel stay float between
DEQUANTIZE and QUANTIZE and are written as float32 TFLite builtins (edgec/quantize/
tflite_float.py). The TFLite interpreter (reference kernels) runs the file; edgec's C of the
same quantized model agrees bit for bit on every output that is an int8 tensor (dequantized),
including int8 tensors computed after a float island, and within the float tolerance of
tests/test_tflite.py (rtol 1e-4, atol 1e-5) on float outputs; edgec's TFLite front-end compiles
the file back to the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.api import compile_graph, load_graph
from edgec.cli import main
from edgec.errors import EdgecError
from edgec.passes import optimize
from edgec.passes.qdq import float_islands
from edgec.quantize import QuantizedModel, quantize_graph
from edgec.quantize.tflite_writer import to_tflite
from tests.helpers import make_model
from tests.tflite_builder import run_interpreter

pytest.importorskip("ai_edge_litert")

RTOL, ATOL = 1e-4, 1e-5  # tests/test_tflite.py's float tolerance


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def dense_model() -> onnx.ModelProto:
    """int8 dense, float Exp(-h·h) and LayerNormalization and Gelu, int8 dense, int8
    attention-like MatMul of two run-time tensors, float ReduceSum, Sqrt, Div: 1x8 → the int8 tensor
    before the islands, one after two of them, and two float outputs."""
    r = _rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Mul", ["h", "h"], ["h2"]),
        helper.make_node("Neg", ["h2"], ["nh2"]),
        helper.make_node("Exp", ["nh2"], ["e"]),
        helper.make_node("LayerNormalization", ["e", "gamma", "beta"], ["ln"], axis=-1,
                         epsilon=1e-5),
        helper.make_node("Gelu", ["ln"], ["ge"]),
        helper.make_node("Gemm", ["ge", "w2", "b2"], ["z"], transB=1),  # int8 after islands
        helper.make_node("Reshape", ["z", "shape"], ["zc"]),  # 1x4x3
        helper.make_node("Transpose", ["zc"], ["zt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["zc", "zt"], ["att"]),  # run-time MatMul: int8
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("ReduceSum", ["z2", "axes"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["norm"]),
        helper.make_node("Div", ["z", "norm"], ["unit"]),
    ]
    return make_model(
        nodes, {"x": (1, 8)}, {"h": (1, 16), "z": (1, 12), "att": (1, 4, 4), "unit": (1, 12)},
        {"w1": r.standard_normal((16, 8)).astype(np.float32) * 0.5,
         "b1": r.standard_normal(16).astype(np.float32) * 0.1,
         "gamma": (1 + 0.2 * r.standard_normal(16)).astype(np.float32),
         "beta": (0.1 * r.standard_normal(16)).astype(np.float32),
         "w2": r.standard_normal((12, 16)).astype(np.float32) * 0.4,
         "b2": r.standard_normal(12).astype(np.float32) * 0.1,
         "shape": np.asarray([1, 4, 3], np.int64), "axes": np.asarray([-1], np.int64)},
        opset=20)


def conv_model() -> onnx.ModelProto:
    """int8 conv, float Abs, int8 conv, float AveragePool counting its padding (no int8 form),
    int8 global pool + dense, float LogSoftmax: 1x3x8x8 → the first conv's int8 output, the
    int8 logits (after two islands) and the float log-probabilities."""
    r = _rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Abs", ["c1"], ["e1"]),
        helper.make_node("Conv", ["e1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["p"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("LogSoftmax", ["logits"], ["logp"], axis=-1),
    ]
    return make_model(
        nodes, {"x": (1, 3, 8, 8)}, {"c1": (1, 6, 8, 8), "logits": (1, 5), "logp": (1, 5)},
        {"w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3,
         "b1": r.standard_normal(6).astype(np.float32) * 0.1,
         "w2": r.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.2,
         "b2": r.standard_normal(8).astype(np.float32) * 0.1,
         "w3": r.standard_normal((5, 8)).astype(np.float32),
         "b3": r.standard_normal(5).astype(np.float32) * 0.1})


#: per model: builder, input shape, int8 outputs computed before any float island, int8 outputs
#: computed after one (the rest are float)
MODELS = {"dense": (dense_model, (1, 8), {"h"}, {"z"}),
          "conv": (conv_model, (1, 3, 8, 8), {"c1"}, {"logits"})}
@pytest.fixture(scope="module")
def quantized() -> dict[str, tuple[QuantizedModel, np.ndarray]]:
    out = {}
    for name, (build, shape, _, _) in MODELS.items():
        cal = _rng(2).standard_normal((24, *shape)).astype(np.float32)
        out[name] = (quantize_graph(load_graph(build()), {"x": cal}), cal)
    return out


def _as_list(v: object) -> list[np.ndarray]:
    return list(v) if isinstance(v, (list, tuple)) else [np.asarray(v)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mixed_tflite_matches_edgec_c(quantized: dict, name: str) -> None:
    """int8 outputs bit-exact, before and after the float islands (the islands' float results
    agree closely enough that no QUANTIZE after them lands on another code on these inputs);
    float outputs within rtol 1e-4, atol 1e-5."""
    q, cal = quantized[name]
    _, shape, before, after = MODELS[name]
    islands = {s.split(" ")[-1] for s in float_islands(q.lowered)}
    want = {"dense": {"(Neg)", "(Exp)", "(LayerNormalization)", "(Gelu)",
                      "(ReduceSum)", "(Sqrt)", "(Div)"},
            "conv": {"(Abs)", "(AveragePool)", "(LogSoftmax)"}}[name]
    assert want <= islands
    if name == "dense":  # the run-time MatMul is int8 (QBatchMatMul → BATCH_MATMUL)
        assert "QBatchMatMul" in {n.op for n in q.lowered.nodes}
    dequantized = {n.outputs[0] for n in q.lowered.nodes if n.op == "Dequantize"}
    assert before | after <= dequantized
    data = to_tflite(q.lowered)
    assert to_tflite(q.lowered) == data  # deterministic
    m = compile_graph(q.qdq)
    back = edgec.compile(data)
    assert {n.op for n in back.graph.nodes} & {"QFullyConnected", "QConv2D"}
    for x in _rng(7).standard_normal((12, *shape)).astype(np.float32):
        got = zip(q.lowered.outputs, _as_list(m.run(x)), run_interpreter(data, [x]),
                  _as_list(back.run(x)), strict=True)
        for o, cv, lv, bv in got:
            lv, bv = lv.reshape(cv.shape), bv.reshape(cv.shape)
            if o in before | after:
                np.testing.assert_array_equal(lv, cv, err_msg=o)
                np.testing.assert_array_equal(bv, cv, err_msg=o)
            else:
                np.testing.assert_allclose(lv, cv, rtol=RTOL, atol=ATOL, err_msg=o)
                np.testing.assert_allclose(bv, cv, rtol=RTOL, atol=ATOL, err_msg=o)


def test_float_islands_are_float_builtins(quantized: dict) -> None:
    from edgec.frontend.tflite.reader import read_tflite

    q, _ = quantized["conv"]
    ops = [o.op for o in read_tflite(to_tflite(q.lowered)).subgraphs[0].operators]
    # the islands: ABS, the PAD + AVERAGE_POOL_2D of count_include_pad, LOG_SOFTMAX
    assert {"ABS", "PAD", "AVERAGE_POOL_2D", "LOG_SOFTMAX", "DEQUANTIZE", "QUANTIZE",
            "CONV_2D", "FULLY_CONNECTED"} <= set(ops)


def _float_graph_ops() -> onnx.ModelProto:
    """A float model of the builtins a float island can need that the quantizer tests above do
    not reach: grouped, depthwise (multiplier 2), strided, dilated and asymmetrically padded
    Conv with fused activations, MaxPool with pads and ceil_mode, AveragePool SAME, dense with and
    without bias, clips, min/max, reductions, Softmax, Concat, PRelu, Reciprocal, Pow, a
    run-time MatMul with a fused Relu."""
    r = _rng(3)
    f = np.float32
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[0, 1, 2, 1], strides=[1, 2]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "wd", "bd"], ["d"], group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["d", "lo6", "hi6"], ["d6"]),
        helper.make_node("Conv", ["d6", "wg", "bg"], ["gc"], group=2, dilations=[2, 1],
                         pads=[2, 0, 2, 0]),
        helper.make_node("MaxPool", ["gc"], ["gm"], kernel_shape=[3, 2], strides=[2, 2],
                         pads=[2, 0, 1, 0], ceil_mode=1),  # a PADV2 of the lowest float
        helper.make_node("Sigmoid", ["gm"], ["mp"]),
        helper.make_node("AveragePool", ["gc"], ["ap"], kernel_shape=[3, 3],
                         auto_pad="SAME_UPPER"),
        helper.make_node("ReduceMax", ["ap", "ax23"], ["apm"], keepdims=0),
        helper.make_node("Flatten", ["mp"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wf"], ["fc"]),
        helper.make_node("Clip", ["fc", "lo", "hi"], ["fcc"]),
        helper.make_node("MatMul", ["apm", "wm"], ["mm"]),
        helper.make_node("Max", ["fcc", "mm"], ["mx"]),
        helper.make_node("Min", ["fcc", "mm"], ["mn"]),
        helper.make_node("PRelu", ["mn", "slope"], ["pr"]),
        helper.make_node("Abs", ["mx"], ["ab"]),
        helper.make_node("Add", ["ab", "one"], ["ab1"]),
        helper.make_node("Reciprocal", ["ab1"], ["rc"]),
        helper.make_node("Log", ["ab1"], ["lg"]),
        helper.make_node("Pow", ["ab1", "two"], ["p2"]),
        helper.make_node("Pow", ["mx", "three"], ["p3"]),
        helper.make_node("Pow", ["ab1", "half"], ["p05"]),
        helper.make_node("Pow", ["ab1", "minus_one"], ["pm1"]),
        helper.make_node("Concat", ["rc", "pr", "lg", "p2", "p3", "p05", "pm1"], ["cat"], axis=1),
        helper.make_node("Reshape", ["cat", "s67"], ["c67"]),
        helper.make_node("Reshape", ["cat", "s76"], ["c76"]),
        helper.make_node("MatMul", ["c67", "c76"], ["mm2"]),  # run-time: BATCH_MATMUL
        helper.make_node("Relu", ["mm2"], ["am"]),  # fused into it: a RELU after the builtin
        helper.make_node("Softmax", ["cat"], ["y"], axis=-1),
        helper.make_node("ReduceMean", ["cat", "ax1"], ["mean"], keepdims=1),
        helper.make_node("Tanh", ["mean"], ["t"]),
        helper.make_node("LeakyRelu", ["t"], ["lr"], alpha=0.3),
        helper.make_node("HardSwish", ["lr"], ["hs"]),
        helper.make_node("Elu", ["hs"], ["el"]),  # no reference kernel: optimized ones run
    ]
    return make_model(
        nodes, {"x": (1, 4, 7, 9)}, {"y": (1, 42), "el": (1, 1), "am": (1, 6, 6)},
        {"wa": r.standard_normal((4, 4, 3, 3)).astype(f) * 0.3,
         "wd": r.standard_normal((8, 1, 3, 3)).astype(f) * 2.0,  # past the RELU6 bound
         "bd": r.standard_normal(8).astype(f) * 0.1,
         "lo6": f(0.0), "hi6": f(6.0),
         "wg": r.standard_normal((6, 4, 3, 1)).astype(f) * 0.3,
         "bg": r.standard_normal(6).astype(f) * 0.1,
         "wf": r.standard_normal((90, 6)).astype(f) * 0.2,
         "lo": f(-0.5), "hi": f(0.75),
         "wm": r.standard_normal((6, 6)).astype(f),
         "slope": r.uniform(0.1, 0.5, 6).astype(f),
         "one": f(1.0), "two": f(2.0), "three": f(3.0), "half": f(0.5), "minus_one": f(-1.0),
         "s67": np.asarray([1, 6, 7], np.int64), "s76": np.asarray([1, 7, 6], np.int64),
         "ax23": np.asarray([2, 3], np.int64), "ax1": np.asarray([1], np.int64)},
        opset=18)


def test_float_builtins_of_the_writer_match_edgec_c() -> None:
    """The float writer on a whole float graph (what an island can hold) against edgec's C."""
    model = _float_graph_ops()
    g = optimize(load_graph(model))
    fused = {n.op for n in g.nodes if "_act" in n.attrs}
    assert {"Conv", "MatMul"} <= fused  # fused Relu / Clip
    data = to_tflite(g)
    m = compile_graph(g)
    back = edgec.compile(data)
    for x in _rng(4).standard_normal((6, 1, 4, 7, 9)).astype(np.float32):
        c = m.run(x)
        for cv, lv, bv in zip(c, run_interpreter(data, [x]), back.run(x), strict=True):
            np.testing.assert_allclose(lv.reshape(cv.shape), cv, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(bv.reshape(cv.shape), cv, rtol=RTOL, atol=ATOL)


def _gru_model() -> onnx.ModelProto:
    r = _rng(5)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("GRU", ["h", "W", "R"], ["seq", "last"], hidden_size=3),
             helper.make_node("Reshape", ["last", "shape"], ["l2"]),
             helper.make_node("MatMul", ["l2", "w2"], ["y"])]
    return make_model(nodes, {"x": (2, 1, 4)}, {"y": (1, 2)},
                      {"w": r.standard_normal((4, 5)).astype(np.float32),
                       "W": r.standard_normal((1, 9, 5)).astype(np.float32),
                       "R": r.standard_normal((1, 9, 3)).astype(np.float32),
                       "shape": np.asarray([1, 3], np.int64),
                       "w2": r.standard_normal((3, 2)).astype(np.float32)})


def test_float_op_without_tflite_builtin_is_a_one_line_error() -> None:
    cal = _rng(6).standard_normal((8, 2, 1, 4)).astype(np.float32)
    q = quantize_graph(load_graph(_gru_model()), {"x": cal})
    assert any("(GRU)" in s for s in q.report.float_ops)
    with pytest.raises(EdgecError, match=r"node '.*' \(GRU\): no TFLite builtin for this "
                                         r"float32 op; write the model as \.onnx") as exc:
        to_tflite(q.lowered)
    assert "\n" not in str(exc.value)


def test_cli_writes_a_mixed_tflite_and_refuses_a_gru_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx.save(conv_model(), tmp_path / "conv.onnx")
    np.savez(tmp_path / "cal.npz", x=_rng(2).standard_normal((8, 1, 3, 8, 8)).astype(np.float32))
    args = ["quantize", str(tmp_path / "conv.onnx"), "--calibration", str(tmp_path / "cal.npz"),
            "-o", str(tmp_path / "conv.tflite")]
    assert main(args) == 0
    assert "(AveragePool)" in capsys.readouterr().out  # the float ops are listed
    x = _rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    back = edgec.compile(str(tmp_path / "conv.tflite"))
    np.testing.assert_allclose(_as_list(back.run(x))[-1],
                               run_interpreter((tmp_path / "conv.tflite").read_bytes(), [x])[-1]
                               .reshape(1, 5), rtol=RTOL, atol=ATOL)
    onnx.save(_gru_model(), tmp_path / "gru.onnx")
    np.savez(tmp_path / "gru.npz", x=_rng(6).standard_normal((8, 2, 1, 4)).astype(np.float32))
    assert main(["quantize", str(tmp_path / "gru.onnx"), "--calibration",
                 str(tmp_path / "gru.npz"), "-o", str(tmp_path / "gru.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert "(GRU): no TFLite builtin" in err and ".onnx" in err and "\n" not in err


def test_softmax_not_on_the_last_axis_is_refused() -> None:
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    g = load_graph(make_model(nodes, {"x": (1, 3, 4)}, {"y": (1, 3, 4)}))
    with pytest.raises(EdgecError, match=r"\(Softmax\): no TFLite builtin for this float32 op"):
        to_tflite(g)


def test_average_pool_over_a_ceil_mode_end_is_refused() -> None:
    """count_include_pad with a ceil_mode window past the end padding divides by the taps up to
    the padding: no PAD + AVERAGE_POOL_2D gives that."""
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                              count_include_pad=1)]
    g = load_graph(make_model(nodes, {"x": (1, 2, 6, 6)}, {"y": (1, 2, 4, 4)}, opset=19))
    with pytest.raises(EdgecError, match=r"\(AveragePool\): no TFLite builtin"):
        to_tflite(g)
