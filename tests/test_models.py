"""Whole PyTorch models, exported with both exporters, compiled to C and compared with
onnxruntime and PyTorch (tolerances in tests/models.py: C vs onnxruntime rtol 1e-4 / atol 1e-5,
C vs PyTorch rtol 1e-4 / atol 5e-5). Every test also checks the memory plan is within 10 % of
its lower bound."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgec
from tests import models
from tests.helpers import ort_run

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mlp"


def _export_and_check(
    tmp_path: Path,
    factory: Callable[[], nn.Module],
    shape: Sequence[int],
    exporter: models.Exporter,
    optimize: bool = True,
    seed: int = 0,
) -> tuple[edgec.CompiledModel, onnx.ModelProto]:
    model = models.build(factory, seed=seed)
    inputs = models.random_inputs([shape], seed=seed + 100)
    example = [torch.from_numpy(x) for x in inputs]
    path = models.export(model, example, tmp_path / "model.onnx", exporter, optimize=optimize)
    if exporter == "dynamo":
        assert path.with_name(path.name + ".data").is_file(), "dynamo export wrote no .onnx.data"
    m = models.check_exported(path, model, inputs)
    return m, onnx.load(str(path), load_external_data=False)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("batch", [1, 5])
def test_tanh_mlp(tmp_path: Path, exporter: models.Exporter, batch: int) -> None:
    m, _ = _export_and_check(tmp_path, models.TanhMLP, (batch, 4), exporter)
    assert m.report()["macs"] == batch * (4 * 64 + 64 * 64 + 64 * 3)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("shape", [(1, 3, 17), (1, 3, 37), (2, 3, 101)], ids=str)
def test_cnn1d(tmp_path: Path, exporter: models.Exporter, shape: tuple[int, ...]) -> None:
    _export_and_check(tmp_path, models.CNN1d, shape, exporter, seed=1)


DSCNN_VARIANTS = [
    ("legacy", True), ("legacy", False), ("dynamo", True), ("dynamo", False),
]


@pytest.mark.parametrize("exporter,optimize", DSCNN_VARIANTS,
                         ids=[f"{e}-{'opt' if o else 'raw'}" for e, o in DSCNN_VARIANTS])
@pytest.mark.parametrize("shape", [(1, 3, 17, 17), (2, 3, 15, 21)], ids=str)
def test_depthwise_separable_cnn(
    tmp_path: Path, exporter: models.Exporter, optimize: bool, shape: tuple[int, ...]
) -> None:
    m, source = _export_and_check(tmp_path, models.DSCNN2d, shape, exporter, optimize, seed=2)
    ops = [n.op for n in m.graph.nodes]
    if not optimize:  # the exporter left BatchNormalization in: edgec must fold it
        assert "BatchNormalization" in {n.op_type for n in source.graph.node}
    assert "BatchNormalization" not in ops, f"BatchNormalization not folded: {ops}"
    conv_groups = sorted(int(n.attrs.get("group", 1)) for n in m.graph.nodes if n.op == "Conv")
    assert conv_groups == [1, 1, 1, 8, 16], "depthwise convolutions were lost or duplicated"


ZOO = [
    ("activations", models.ActivationMix, (3, 6)),
    ("pool2d", models.PoolNet2d, (1, 2, 12, 12)),
    ("attention", models.AttentionPool, (1, 7, 8)),
    ("gru", models.GRUNet, (1, 9, 3)),
    ("lstm", models.LSTMNet, (1, 9, 3)),
]


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("factory,shape", [z[1:] for z in ZOO], ids=[z[0] for z in ZOO])
def test_model_zoo(tmp_path: Path, exporter: models.Exporter,
                   factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    _export_and_check(tmp_path, factory, shape, exporter, seed=3)


def test_soft_actuator_example() -> None:
    """The committed example model: self-contained, 4→64→64→3, matches onnxruntime."""
    path = EXAMPLE_DIR / "model.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    assert not any(init.external_data for init in proto.graph.initializer), "not self-contained"
    xs = np.load(EXAMPLE_DIR / "inputs.npz")["x"]
    assert xs.shape == (20, 4) and xs.dtype == np.float32
    m = edgec.compile(path)
    assert m.input_names == ["x"]
    assert m.report()["params"] == (4 + 1) * 64 + (64 + 1) * 64 + (64 + 1) * 3
    models.check_memory_plan(m)
    for x in xs:
        feed = x.reshape(1, 4)
        expected = ort_run(proto, {"x": feed})[0]
        np.testing.assert_allclose(m.run(feed), expected, rtol=models.ORT_RTOL,
                                   atol=models.ORT_ATOL)
