"""The ops of issue 15 on an emulated Cortex-M4F (newlib's sinf/cosf/atanf/erff/rintf, the
select, layer-norm and lowered-einsum kernels) against onnxruntime, and in `edgec ops`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.frontend.catalog import onnx_entries, torch_entries
from edgec.mcu.project import build_firmware
from edgec.mcu.qemu import run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from tests.helpers import ort_run

ONNX_OPS = {"Sin", "Cos", "Atan", "Erf", "Sign", "Round", "ArgMax", "TopK",
            "LayerNormalization", "Einsum"}
TORCH_FUNCTIONS = {"sin", "cos", "atan", "erf", "sign", "round", "argmax", "topk", "layer_norm",
                   "einsum"}


def test_listed_by_edgec_ops() -> None:
    assert ONNX_OPS <= {e.name for e in onnx_entries()}
    torch_names = {e.name for e in torch_entries()}
    assert TORCH_FUNCTIONS <= torch_names
    assert "torch.nn.modules.normalization.LayerNorm" in torch_names


def _model() -> onnx.ModelProto:
    """x (2, 8) → layer norm → sin + cos + atan + erf → round(4x)/4 + sign → einsum with a
    weight; ArgMax and TopK of the result as more outputs."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("LayerNormalization", ["x", "s", "b"], ["n"], axis=-1),
        helper.make_node("Sin", ["n"], ["a1"]), helper.make_node("Cos", ["n"], ["a2"]),
        helper.make_node("Atan", ["x"], ["a3"]), helper.make_node("Erf", ["n"], ["a4"]),
        helper.make_node("Add", ["a1", "a2"], ["h1"]),
        helper.make_node("Add", ["a3", "a4"], ["h2"]),
        helper.make_node("Mul", ["x", "four"], ["x4"]),
        helper.make_node("Round", ["x4"], ["r"]), helper.make_node("Sign", ["x"], ["sg"]),
        helper.make_node("Add", ["h1", "h2"], ["h3"]), helper.make_node("Add", ["r", "sg"], ["h4"]),
        helper.make_node("Add", ["h3", "h4"], ["h"]),
        helper.make_node("Einsum", ["h", "w"], ["y"], equation="bi,oi->bo"),
        helper.make_node("ArgMax", ["y"], ["am"], axis=1, keepdims=0),
        helper.make_node("TopK", ["y", "k"], ["tv", "ti"], axis=1),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "s": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "b": rng.uniform(-0.2, 0.2, 8).astype(np.float32),
        "four": np.array(4.0, np.float32),
        "w": rng.uniform(-1, 1, (6, 8)).astype(np.float32),
        "k": np.array([3], np.int64)}.items()]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in
            (("y", f), ("am", TensorProto.INT64), ("tv", f), ("ti", TensorProto.INT64))]
    graph = helper.make_graph(nodes, "robotics", [helper.make_tensor_value_info("x", f, [2, 8])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_on_cortex_m4f(tmp_path: Path) -> None:
    model = _model()
    m = edgec.compile(model)
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-2, 2, (2, 8)).astype(np.float32) for _ in range(3)]
    xs[0][0, :4] = [0.125, 0.375, -0.625, -0.0]  # 4x lands on halves: Round ties to even
    b = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs])
    assert b.warnings == []
    res = run_qemu(b, timeout_s=60)
    assert res.returncode == 0 and "EDGEC-END ok" in res.stdout
    for x, got in zip(xs, res.outputs, strict=True):
        for g_, e_ in zip(got, ort_run(model, {"x": x}), strict=True):
            np.testing.assert_allclose(g_, np.asarray(e_, np.float32).reshape(g_.shape),
                                       rtol=1e-4, atol=1e-4)
