"""What the two PyTorch exporters produce, and hand-written ONNX with local functions:
external weight files, dynamic batch axes, ONNX local functions (inlined)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxscript import FLOAT, script
from onnxscript import opset18 as op
from onnxscript.values import Opset

import edgec
from edgec.errors import EdgecError, ShapeError
from tests import models
from tests.helpers import check_model, make_model


def _example(shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    return [torch.from_numpy(x) for x in models.random_inputs([shape], seed=seed)]


# -- dynamo exporter: weights in <model>.onnx.data ----------------------------------------------

@pytest.fixture(scope="module")
def dynamo_mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = models.build(models.TanhMLP)
    path = models.export(model, _example((1, 4)), tmp_path_factory.mktemp("dyn") / "mlp.onnx",
                         "dynamo")
    return model, path


def test_dynamo_external_data(dynamo_mlp: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    model, path = dynamo_mlp
    data = path.with_name(path.name + ".data")
    assert data.is_file()
    proto = onnx.load(str(path), load_external_data=False)
    external = {t.name for t in proto.graph.initializer if t.external_data}
    assert {"net.0.weight", "net.2.weight", "net.4.weight"} <= external, external
    # the pair moved together to another directory still compiles (data found next to the model)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(path, moved / path.name)
    shutil.copy(data, moved / data.name)
    inputs = models.random_inputs([(1, 4)], seed=5)
    m = models.check_exported(moved / path.name, model, inputs)
    assert m.report()["params"] == (4 + 1) * 64 + (64 + 1) * 64 + (64 + 1) * 3


def test_dynamo_missing_external_data(dynamo_mlp: tuple[torch.nn.Module, Path],
                                      tmp_path: Path) -> None:
    _, path = dynamo_mlp
    lonely = tmp_path / path.name
    shutil.copy(path, lonely)  # without mlp.onnx.data
    with pytest.raises(EdgecError) as info:
        edgec.compile(lonely)
    msg = str(info.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert "mlp.onnx.data" in msg
    assert "missing" in msg


# -- dynamic batch axes ----------------------------------------------------------------------

DYNAMIC_CASES = [
    ("mlp", models.TanhMLP, (4,)),
    ("cnn1d", models.CNN1d, (3, 37)),
    ("gru", models.GRUNet, (9, 3)),
]


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("factory,sample_shape", [c[1:] for c in DYNAMIC_CASES],
                         ids=[c[0] for c in DYNAMIC_CASES])
def test_dynamic_batch_needs_input_shape(tmp_path: Path, exporter: models.Exporter,
                                         factory: type[torch.nn.Module],
                                         sample_shape: tuple[int, ...]) -> None:
    model = models.build(factory, seed=4)
    path = models.export(model, _example((2, *sample_shape)), tmp_path / "dyn.onnx", exporter,
                         dynamic_batch=True)
    proto = onnx.load(str(path), load_external_data=False)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value, "the export has a static batch"

    with pytest.raises(ShapeError) as info:
        edgec.compile(path)
    msg = str(info.value)
    assert isinstance(info.value, EdgecError)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert "'x'" in msg and "--input-shape" in msg

    for batch in (1, 3):
        inputs = models.random_inputs([(batch, *sample_shape)], seed=batch)
        m = models.check_exported(path, model, inputs,
                                  input_shapes={"x": (batch, *sample_shape)})
        assert m.graph.shape(m.input_names[0]) == (batch, *sample_shape)


def test_input_shape_must_match_static_dims(tmp_path: Path) -> None:
    model = models.build(models.TanhMLP)
    path = models.export(model, _example((2, 4)), tmp_path / "dyn.onnx", "legacy",
                         dynamic_batch=True)
    with pytest.raises(ShapeError) as info:
        edgec.compile(path, input_shapes={"x": (2, 5)})
    assert "\n" not in str(info.value) and "x" in str(info.value)


# -- ONNX local functions ----------------------------------------------------------------------

def test_legacy_modules_as_functions(tmp_path: Path) -> None:
    """torch's export_modules_as_functions: every Linear/Tanh becomes a FunctionProto call."""
    model = models.build(models.TanhMLP)
    path = models.export(model, _example((1, 4)), tmp_path / "fn.onnx", "legacy",
                         export_modules_as_functions={torch.nn.Linear, torch.nn.Tanh})
    proto = onnx.load(str(path))
    assert {f.name for f in proto.functions} == {"Linear", "Tanh"}
    assert all(n.domain for n in proto.graph.node), "the graph calls no functions"
    m = models.check_exported(path, model, models.random_inputs([(1, 4)], seed=2))
    assert sorted({n.op for n in m.graph.nodes}) == ["Gemm"]


def _scaled_tanh_function() -> onnx.FunctionProto:
    """y = tanh(alpha * x), alpha an attribute of the call."""
    alpha = helper.make_node("Constant", [], ["a"])
    alpha.attribute.append(
        onnx.AttributeProto(name="value_float", ref_attr_name="alpha",
                            type=onnx.AttributeProto.FLOAT)
    )
    return helper.make_function(
        "local.fn", "ScaledTanh", ["x"], ["y"],
        [alpha, helper.make_node("Mul", ["x", "a"], ["t"]), helper.make_node("Tanh", ["t"], ["y"])],
        [helper.make_opsetid("", 17)], attributes=["alpha"],
    )


def _residual_block_function() -> onnx.FunctionProto:
    """y = x + ScaledTanh(x W + b; alpha=0.5): a function that calls another function."""
    return helper.make_function(
        "local.fn", "ResidualBlock", ["x", "w", "b"], ["y"],
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("Add", ["h", "b"], ["hb"]),
         helper.make_node("ScaledTanh", ["hb"], ["t"], domain="local.fn", alpha=0.5),
         helper.make_node("Add", ["x", "t"], ["y"])],
        [helper.make_opsetid("", 17), helper.make_opsetid("local.fn", 1)],
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_hand_built_nested_functions(batch: int) -> None:
    rng = np.random.default_rng(9)
    inits = {f"w{i}": rng.standard_normal((7, 7)).astype(np.float32) * 0.4 for i in range(2)}
    inits.update({f"b{i}": rng.standard_normal(7).astype(np.float32) * 0.1 for i in range(2)})
    nodes = [
        helper.make_node("ResidualBlock", ["x", "w0", "b0"], ["h0"], domain="local.fn"),
        helper.make_node("ResidualBlock", ["h0", "w1", "b1"], ["h1"], domain="local.fn"),
        helper.make_node("ScaledTanh", ["h1"], ["y"], domain="local.fn", alpha=2.0),
    ]
    graph = helper.make_graph(
        nodes, "fn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 7])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fn", 1)],
        functions=[_scaled_tanh_function(), _residual_block_function()],
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    m = check_model(proto)
    ops = {n.op for n in m.graph.nodes}
    assert not ops & {"ScaledTanh", "ResidualBlock"}, f"functions not inlined: {ops}"


LOCAL = Opset("this", 1)


@script(LOCAL, default_opset=op)
def swish(x, beta: float):
    return op.Mul(x, op.Sigmoid(op.Mul(x, op.Constant(value_float=beta))))


@script(default_opset=op)
def swish_model(x: FLOAT[3, 5]) -> FLOAT[3, 5]:
    return swish(op.Add(x, op.Constant(value_float=0.25)), beta=1.5)


def test_onnxscript_local_function() -> None:
    proto = swish_model.to_model_proto()
    assert [f.name for f in proto.functions] == ["swish"]
    m = check_model(proto)
    assert "swish" not in {n.op for n in m.graph.nodes}


def test_function_missing_definition_is_one_line_error() -> None:
    """A call into a custom domain with no FunctionProto is an unsupported op, not a crash."""
    node = helper.make_node("Mystery", ["x"], ["y"], domain="local.fn")
    proto = make_model([node], {"x": (3,)}, {"y": None})
    proto.opset_import.append(helper.make_opsetid("local.fn", 1))
    with pytest.raises(EdgecError) as info:
        edgec.compile(proto)
    assert "\n" not in str(info.value) and "Mystery" in str(info.value)
