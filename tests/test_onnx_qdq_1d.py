"""1-D quantized ONNX models (torch ``nn.Conv1d`` / ``MaxPool1d`` / ``AvgPool1d`` stacks,
onnxruntime's quantize_static, QDQ and QOperator) and ``ceil_mode`` pools lowered to int8 (the
2-D kernels with H = 1) and compared with onnxruntime: within 2 output LSB (the documented
tolerance, see tests/test_onnx_qdq.py), the C equal to the numpy reference and, on QEMU, to
the host C."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.errors import EdgecError
from edgec.mcu.project import build_firmware
from edgec.mcu.qemu import run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from edgec.passes.qdq import float_islands
from tests.c_checks import strict_and_sanitized
from tests.helpers import ort_run
from tests.onnx_quant_models import (
    calibration,
    export_1d,
    float_ceil_pools,
    float_conv1d_stack,
    float_separable1d,
    ort_quantize,
)

MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "stack": float_conv1d_stack, "separable": float_separable1d, "ceil": float_ceil_pools}
#: (format, per-channel weights, activation type)
CASES = [("qdq", True, "int8"), ("qdq", False, "uint8"), ("qdq", False, "int8"),
         ("qdq", True, "uint8"), ("qoperator", True, "int8"), ("qoperator", False, "uint8")]
FLOAT_OPS = {"Conv", "MaxPool", "AveragePool", "Gemm", "QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def floats() -> dict[str, onnx.ModelProto]:
    return {name: build() for name, build in MODELS.items()}


@pytest.fixture(scope="module")
def quantized(floats: dict[str, onnx.ModelProto],
              tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, Path]:
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice
    tmp = tmp_path_factory.mktemp("ortq1d")
    return {(name, *case): ort_quantize(model, tmp / f"{name}_{'_'.join(map(str, case))}.onnx",
                                        *case)
            for name, model in floats.items() for case in CASES}


def _output_lsb(m: edgec.CompiledModel) -> float:
    deq = [n for n in m.graph.nodes if n.op == "Dequantize"][-1]
    q = m.graph.quant(deq.inputs[0])
    assert q is not None
    return float(q.scale[0])


def _within_two_lsb(m: edgec.CompiledModel, proto: onnx.ModelProto,
                    xs: list[np.ndarray]) -> float:
    """The worst difference from onnxruntime in output LSB (the C checked against the numpy
    reference on the way)."""
    lsb, worst = _output_lsb(m), 0.0
    for x in xs:
        got = m.run(x)
        np.testing.assert_array_equal(got, m.reference(x))
        worst = max(worst, float(np.abs(got - ort_run(proto, {"x": x})[0]).max()) / lsb)
    assert worst <= 2.0 + 1e-3, worst
    return worst


@pytest.mark.parametrize("case", CASES, ids=[f"{f}-{'pc' if pc else 'pt'}-{a}"
                                             for f, pc, a in CASES])
@pytest.mark.parametrize("name", list(MODELS))
def test_1d_models_are_int8_within_two_lsb(floats: dict, quantized: dict, name: str,
                                           case: tuple) -> None:
    path = quantized[(name, *case)]
    m = edgec.compile(str(path))
    ops = [n.op for n in m.graph.nodes]
    assert float_islands(m.graph) == []
    assert not set(ops) & FLOAT_OPS, ops
    # at the input, and before a Flatten of N x C x L (the stack flattens N x C x 1, in any
    # order): the rest cancelled
    assert ops.count("Transpose") == (1 if name == "stack" else 2), ops
    want = {"stack": {"QConv2D": 3, "QMaxPool2D": 2},
            "separable": {"QDepthwiseConv2D": 1, "QConv2D": 1, "QAveragePool2D": 1},
            "ceil": {"QConv2D": 1, "QMaxPool2D": 1, "QAveragePool2D": 2}}[name]
    assert {op: ops.count(op) for op in want} == want, ops
    _within_two_lsb(m, onnx.load(str(path)), calibration(floats[name], 20, seed=7))


def test_ceil_model_pools_hang_over_the_end(floats: dict, quantized: dict) -> None:
    """The test model really has ceil_mode pools whose last window starts inside the input and
    ends past it (24 → conv 22 → max 3/2: 11 → avg 2/2: 6 → avg 3/2 pad 1: 4; floor: 10, 5, 3)."""
    pools = [n for n in floats["ceil"].graph.node if n.op_type.endswith("Pool")]
    assert [helper.get_attribute_value(a) for n in pools for a in n.attribute
            if a.name == "ceil_mode"] == [1, 1, 1]
    g = edgec.compile(str(quantized[("ceil", "qdq", True, "int8")])).graph
    assert [g.shape(n.outputs[0])[2] for n in g.nodes if n.op.endswith("Pool2D")] == [11, 6, 4]


def test_qoperator_ceil_average_pool_counting_padding_is_a_one_line_error(
        tmp_path: Path) -> None:
    """onnxruntime's QLinearAveragePool with ceil_mode=1 and count_include_pad=1 (torch's
    default) divides a window hanging over the end by the whole kernel, its AveragePool by the
    taps inside: a QOperator model with one is refused, not compiled to either."""
    from torch import nn

    logging.getLogger().setLevel(logging.ERROR)
    model = export_1d(nn.Sequential(nn.Conv1d(2, 4, 3), nn.AvgPool1d(2, ceil_mode=True)), 2, 10)
    path = ort_quantize(model, tmp_path / "avg_qop.onnx", "qoperator", True, "int8")
    with pytest.raises(EdgecError, match="count_include_pad=1 is not supported") as exc:
        edgec.compile(str(path))
    assert "\n" not in str(exc.value)


def _pool_model(op: str, shape: tuple[int, ...], **attrs: object) -> onnx.ModelProto:
    """x → QuantizeLinear → DequantizeLinear → op → QuantizeLinear → DequantizeLinear, one
    scale and zero point throughout (onnxruntime's pools on codes)."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node(op, ["xd"], ["p"], **attrs),
             helper.make_node("QuantizeLinear", ["p", "s", "zp"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "s", "zp"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.float32(0.05), "s"),
         numpy_helper.from_array(np.int8(-3), "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


POOLS = [
    ("MaxPool", (1, 3, 12), {"kernel_shape": [3], "strides": [2]}),
    ("MaxPool", (1, 3, 11), {"kernel_shape": [4], "strides": [3], "pads": [1, 0]}),
    ("MaxPool", (1, 2, 7, 9), {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 0]}),
    ("AveragePool", (1, 3, 12), {"kernel_shape": [3], "strides": [2]}),
    ("AveragePool", (1, 3, 12), {"kernel_shape": [3], "strides": [2], "count_include_pad": 1,
                                 "ceil_mode": 0}),
    ("AveragePool", (1, 3, 11), {"kernel_shape": [4], "strides": [3], "pads": [1, 0]}),
    ("AveragePool", (1, 2, 7, 9), {"kernel_shape": [3, 2], "strides": [2, 2],
                                   "pads": [1, 0, 0, 0]}),
]


@pytest.mark.parametrize("op,shape,attrs", POOLS, ids=[f"{op}-{len(s) - 2}d-{i}"
                                                      for i, (op, s, _) in enumerate(POOLS)])
def test_ceil_mode_pools_match_onnxruntime(op: str, shape: tuple, attrs: dict) -> None:
    """ceil_mode=1 (one more output than ceil_mode=0 along each axis): the int8 kernel's extra
    end padding gives the ceil output size, never wins a max (all inputs negative: the max is
    exact) and is not counted in an average, with count_include_pad 0 or (without pads) 1 (the
    average differs from onnxruntime's float mean only in rounding a tie: <= 1 LSB)."""
    model = _pool_model(op, shape, **{"ceil_mode": 1, **attrs})
    floor = ort_run(_pool_model(op, shape, **{**attrs, "ceil_mode": 0}),
                    {"x": np.zeros(shape, np.float32)})[0]
    m = edgec.compile(model)
    assert float_islands(m.graph) == []
    assert f"Q{op}2D" in {n.op for n in m.graph.nodes}
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = rng.uniform(-6.0, -0.5 if op == "MaxPool" else 6.0, shape).astype(np.float32)
        got, want = m.run(x), ort_run(model, {"x": x})[0]
        assert got.shape == want.shape
        assert all(a == b + attrs.get("ceil_mode", 1) for a, b in
                   zip(want.shape[2:], floor.shape[2:], strict=True))
        np.testing.assert_array_equal(got, m.reference(x))
        tol = 0.0 if op == "MaxPool" else 0.05 + 1e-6
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def _conv_runtime_weights() -> onnx.ModelProto:
    """A 1-D Conv whose weights are a graph input (quantized at run time): no int8 kernel."""
    qdq = [helper.make_node("QuantizeLinear", [t, "s", "zp"], [f"{t}q"]) for t in ("x", "w")]
    qdq += [helper.make_node("DequantizeLinear", [f"{t}q", "s", "zp"], [f"{t}d"])
            for t in ("x", "w")]
    nodes = [*qdq, helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s2", "zp"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s2", "zp"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9]),
                     helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 9])],
        [numpy_helper.from_array(np.float32(0.05), "s"),
         numpy_helper.from_array(np.float32(0.1), "s2"),
         numpy_helper.from_array(np.int8(0), "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_unsupported_1d_ops_stay_float_and_are_listed() -> None:
    """A 1-D Conv with run-time weights, a dilated 1-D MaxPool and a ceil_mode AveragePool that
    counts the padding have no int8 kernel: they stay float between Dequantize and Quantize,
    listed by float_islands, and still compute right."""
    conv = _conv_runtime_weights()
    m = edgec.compile(conv)
    (island,) = float_islands(m.graph)
    assert island.endswith("(Conv)")
    rng = np.random.default_rng(1)
    feeds = {"x": rng.uniform(-2, 2, (1, 2, 9)).astype(np.float32),
             "w": rng.uniform(-1, 1, (3, 2, 3)).astype(np.float32)}
    np.testing.assert_allclose(m.run(feeds), ort_run(conv, feeds)[0], rtol=0, atol=0.1 + 1e-6)

    pool = _pool_model("MaxPool", (1, 3, 12), kernel_shape=[3], dilations=[2])
    m = edgec.compile(pool)
    (island,) = float_islands(m.graph)
    assert island.endswith("(MaxPool)")
    x = rng.uniform(-2, 2, (1, 3, 12)).astype(np.float32)
    np.testing.assert_array_equal(m.run(x), ort_run(pool, {"x": x})[0])

    # ceil_mode with count_include_pad=1 and a window over the end: onnxruntime's optimized
    # session (QLinearAveragePool) divides it by the whole kernel, the unoptimized one and torch
    # by the taps inside
    avg = _pool_model("AveragePool", (1, 3, 12), kernel_shape=[3], strides=[2], ceil_mode=1,
                      count_include_pad=1)
    m = edgec.compile(avg)
    (island,) = float_islands(m.graph)
    assert island.endswith("(AveragePool)")
    np.testing.assert_allclose(m.run(x), ort_run(avg, {"x": x})[0], rtol=0, atol=0.05 + 1e-6)


@pytest.mark.parametrize("name", ["separable", "ceil"])
def test_1d_strict_c_and_sanitizers(floats: dict, quantized: dict, tmp_path: Path,
                                    name: str) -> None:
    m = edgec.compile(str(quantized[(name, "qdq", True, "int8")]))
    x = calibration(floats[name], 1, seed=9)[0]
    (out,) = strict_and_sanitized(m, tmp_path, [x])
    np.testing.assert_array_equal(out, m.run(x))


#: (model, format, per-channel weights, activation type) run on QEMU: every model, QDQ int8
#: and uint8 (QUInt8: codes shifted by -128), QOperator
QEMU_CASES = [("stack", "qdq", True, "int8"), ("separable", "qdq", True, "int8"),
              ("ceil", "qdq", True, "int8"), ("ceil", "qdq", False, "uint8"),
              ("stack", "qdq", False, "uint8"), ("separable", "qdq", True, "uint8"),
              ("stack", "qoperator", True, "int8"), ("separable", "qoperator", False, "uint8"),
              ("ceil", "qoperator", True, "int8")]


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
@pytest.mark.parametrize("name,fmt,pc,act", QEMU_CASES,
                         ids=[f"{n}-{f}-{'pc' if pc else 'pt'}-{a}" for n, f, pc, a in QEMU_CASES])
def test_1d_cortex_m4f_equals_host_c(floats: dict, quantized: dict, tmp_path: Path,
                                     name: str, fmt: str, pc: bool, act: str) -> None:
    """The 1-D models on an emulated Cortex-M4F (mps2-an386, the DSP int8 kernels), including
    the ceil_mode pools, uint8 activations and the QOperator form: bit for bit the host C."""
    m = edgec.compile(str(quantized[(name, fmt, pc, act)]))
    assert float_islands(m.graph) == []
    xs = calibration(floats[name], 2, seed=5)
    res = run_qemu(build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs]),
                   timeout_s=120)
    assert len(res.outputs) == len(xs)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        assert got.tobytes() == m.run(x).astype(np.float32).tobytes()
