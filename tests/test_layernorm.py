"""LayerNormalization against onnxruntime (axes, broadcast Scale/B, optional Mean/InvStdDev
outputs, run-time Scale) and torch (nn.LayerNorm, F.layer_norm, .pt2 before and after ATen
decomposition, both ONNX exporters); strict C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgec
from edgec.errors import EdgecError
from tests import models
from tests.c_checks import strict_and_sanitized
from tests.helpers import ort_run

RTOL, ATOL = 1e-4, 1e-5


def _model(shape: tuple[int, ...], axis: int, pshape: tuple[int, ...], bias: bool = True,
           n_out: int = 1, eps: float = 1e-5, runtime_scale: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(len(shape) + axis)
    outs = ["y", "mean", "inv"][:n_out]
    node = helper.make_node("LayerNormalization", ["x", "s", "b"] if bias else ["x", "s"], outs,
                            axis=axis, epsilon=eps)
    inits = [numpy_helper.from_array(rng.standard_normal(pshape).astype(np.float32), "b")][:bias]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    if runtime_scale:
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, list(pshape)))
    else:
        inits.append(numpy_helper.from_array(rng.standard_normal(pshape).astype(np.float32), "s"))
    graph = helper.make_graph([node], "m", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> edgec.CompiledModel:
    expected = ort_run(model, feeds)
    m = edgec.compile(model)
    for got in (m.run(**feeds), m.reference(**feeds)):
        got = got if isinstance(got, list) else [got]
        assert len(got) == len(expected)
        for g_, e_ in zip(got, expected, strict=True):
            assert g_.shape == e_.shape
            np.testing.assert_allclose(g_, e_, rtol=RTOL, atol=ATOL)
    return m


CASES = [((2, 5), -1, (5,)), ((2, 3, 4), 1, (3, 4)), ((2, 3, 4), -2, (1, 4)),
         ((3, 4), 0, (3, 4)), ((2, 3, 4), -1, (1,)), ((2, 3, 4), 1, (4,)), ((1, 64), -1, (64,))]


@pytest.mark.parametrize("shape,axis,pshape", CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n_out", [1, 3])
def test_vs_onnxruntime(shape: tuple[int, ...], axis: int, pshape: tuple[int, ...], bias: bool,
                        n_out: int) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3 + 1
    _check(_model(shape, axis, pshape, bias, n_out), {"x": x})


def test_runtime_scale_and_epsilon() -> None:
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((3, 6)).astype(np.float32),
             "s": rng.standard_normal(6).astype(np.float32)}
    _check(_model((3, 6), -1, (6,), eps=0.5, runtime_scale=True), feeds)
    const_row = {"x": np.full((3, 6), 2.5, np.float32), "s": feeds["s"]}  # variance 0: eps only
    _check(_model((3, 6), -1, (6,), eps=1e-3, runtime_scale=True), const_row)


def test_bad_scale_shape_is_an_error() -> None:
    with pytest.raises(EdgecError, match="does not broadcast"):
        edgec.compile(_model((2, 3, 4), -1, (3,)))
    with pytest.raises(EdgecError, match="normalised shape"):
        edgec.compile(_model((2, 3, 4), 1, (4,), runtime_scale=True))


def test_strict_c(tmp_path: Path) -> None:
    model = _model((2, 3, 4), 1, (1, 4), n_out=3)
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    got = strict_and_sanitized(edgec.compile(model), tmp_path, [x])
    for g_, e_ in zip(got, ort_run(model, {"x": x}), strict=True):
        np.testing.assert_allclose(g_, e_, rtol=RTOL, atol=ATOL)


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(6)
        self.plain = nn.LayerNorm((4, 6), elementwise_affine=False)
        self.no_bias = nn.LayerNorm(6, bias=False, eps=1e-3)
        self.w = nn.Parameter(torch.randn(6))
        with torch.no_grad():
            self.ln.weight.normal_()
            self.ln.bias.normal_()
            self.no_bias.weight.normal_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.ln(x), self.plain(x), self.no_bias(x),
                nn.functional.layer_norm(x, (6,), self.w, None, 1e-2))


@pytest.mark.parametrize("via", ["fx", "pt2", "pt2-decomposed"])
def test_torch(via: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6) * 2 + 1
    module = Norms().eval()
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    if via == "fx":
        m = edgec.compile(module, example_inputs=(x,))
    else:
        ep = torch.export.export(module, (x,))
        if via == "pt2-decomposed":  # aten.native_layer_norm (y, mean, rstd)
            ep = ep.run_decompositions()
        torch.export.save(ep, str(tmp_path / "m.pt2"))
        m = edgec.compile(str(tmp_path / "m.pt2"))
    assert [n.op for n in m.graph.nodes] == ["LayerNormalization"] * 4
    for g_, e_ in zip(m.run(x.numpy()), expected, strict=True):
        np.testing.assert_allclose(g_, e_, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
def test_onnx_exporters(exporter: models.Exporter, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 5)
    path = models.export(module, [x], tmp_path / "ln.onnx", exporter, opset=17)
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(edgec.compile(str(path)).run(x.numpy()), want, rtol=RTOL,
                               atol=ATOL)
