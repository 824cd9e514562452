"""Sin, Cos, Atan, Erf, Sign and Round: C and the numpy reference against onnxruntime (ONNX)
and torch (torch front-end), edge values, strict C; GELU from both ONNX exporters (the legacy
one writes Erf)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

import edgec
from tests import models
from tests.c_checks import strict_and_sanitized
from tests.helpers import check_model, make_model, ort_run

OPS = ["Sin", "Cos", "Atan", "Erf", "Sign", "Round"]

#: ±0, halves (Round: to even), infinities, NaN, subnormals, large values
EDGE = np.array([0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -4.5, 0.49999997, 1e-40,
                 -1e-40, 8388607.5, 1e30, -1e30, np.inf, -np.inf, np.nan], np.float32)


def _model(op: str, shape: tuple[int, ...], opset: int = 17):
    return make_model([helper.make_node(op, ["x"], ["y"])], {"x": shape}, {"y": shape},
                      opset=opset)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5), (1, 4, 3, 3)], ids=str)
def test_vs_onnxruntime(op: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(len(shape)).uniform(-6, 6, shape).astype(np.float32)
    check_model(_model(op, shape, opset=13 if len(shape) == 2 else 17), {"x": x},
                rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("op", OPS)
def test_edge_values(op: str) -> None:
    x = EDGE if op in ("Sign", "Round", "Atan", "Erf") else EDGE[np.abs(EDGE) < 1e6]
    model = _model(op, x.shape)
    expected = ort_run(model, {"x": x})[0]
    m = edgec.compile(model)
    for got in (m.run(x=x), m.reference(x=x)):
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-7)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))  # ±0 kept apart


def test_round_halves_to_even() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999998], np.float32)
    got = edgec.compile(_model("Round", x.shape)).run(x=x)
    np.testing.assert_array_equal(got, [0.0, 2.0, 2.0, -0.0, -2.0, 2.0])


def test_sign_of_negative_zero_and_nan() -> None:
    x = np.array([-0.0, 0.0, np.nan, -3.0], np.float32)
    got = edgec.compile(_model("Sign", x.shape)).run(x=x)
    np.testing.assert_array_equal(got, [0.0, 0.0, np.nan, -1.0])
    assert not np.signbit(got[0])


def test_strict_c(tmp_path: Path) -> None:
    nodes = [helper.make_node(op, [prev], [out]) for op, prev, out in
             zip(OPS, ["x", "y0", "y1", "y2", "y3", "y4"], ["y0", "y1", "y2", "y3", "y4", "y"],
                 strict=True)]
    model = make_model(nodes, {"x": (4, 5)}, {"y": (4, 5)})
    x = np.random.default_rng(1).uniform(-4, 4, (4, 5)).astype(np.float32)
    m = edgec.compile(model)
    (got,) = strict_and_sanitized(m, tmp_path, [x])
    np.testing.assert_allclose(got, ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


class Elementwise(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.sin(x), x.cos(), torch.atan(x), torch.erf(x), torch.sign(x),
                torch.round(x), torch.round(x, decimals=1), torch.special.erf(x))


@pytest.mark.parametrize("via", ["fx", "pt2"])
def test_torch_functions(via: str, tmp_path: Path) -> None:
    x = torch.from_numpy(np.concatenate([EDGE[:10], np.linspace(-5, 5, 14, dtype=np.float32)]))
    x = x.reshape(2, 12)
    module = Elementwise().eval()
    expected = [t.numpy() for t in module(x)]
    if via == "pt2":
        torch.export.save(torch.export.export(module, (x,)), str(tmp_path / "m.pt2"))
        m = edgec.compile(str(tmp_path / "m.pt2"))
    else:
        m = edgec.compile(module, example_inputs=(x,))
    for got, want in zip(m.run(x.numpy()), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
        np.testing.assert_array_equal(np.signbit(got[np.isfinite(want)]),
                                      np.signbit(want[np.isfinite(want)]))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_from_both_exporters(exporter: models.Exporter, approximate: str, opset: int,
                                  tmp_path: Path) -> None:
    """Below opset 20 the legacy exporter writes GELU out of Erf (or Tanh), from 20 as Gelu."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate=approximate),
                           nn.Linear(8, 3)).eval()
    x = torch.randn(2, 6) * 2
    path = models.export(module, [x], tmp_path / "gelu.onnx", exporter, opset=opset)
    m = edgec.compile(str(path))
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(m.run(x.numpy()), want, rtol=1e-4, atol=1e-5)
    if exporter == "legacy" and approximate == "none" and opset == 17:
        import onnx

        assert "Erf" in {n.op_type for n in onnx.load(str(path)).graph.node}


def test_torch_gelu_modules() -> None:
    x = torch.linspace(-6, 6, 40).reshape(4, 10)
    for approximate in ("none", "tanh"):
        module = nn.GELU(approximate=approximate)
        got = edgec.compile(module, example_inputs=(x,)).run(x.numpy())
        np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-5, atol=1e-6)


class Pendulum(nn.Module):
    """A dynamics-style model: sin/cos/atan/erf of features, round/sign (derivative 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        z = torch.cat([torch.sin(h) * torch.cos(h),
                       torch.atan(h) + torch.erf(h) + torch.round(h) + torch.sign(h)], dim=1)
        return self.b(z)


def test_forward_mode_jacobian_vs_autograd() -> None:
    """passes.jacobian (the MPC's model derivatives) knows the new elementwise ops."""
    from edgec.api import compile_graph
    from edgec.frontend.pytorch.importer import from_module
    from edgec.passes.jacobian import add_jacobian

    torch.manual_seed(0)
    net, x = Pendulum().eval(), torch.randn(1, 4)
    g = from_module(net, (x,))
    y, jac = compile_graph(add_jacobian(g, g.inputs[0], None)).run(x.numpy())
    want = torch.autograd.functional.jacobian(lambda v: net(v).reshape(-1), x).reshape(2, 4)
    np.testing.assert_allclose(y, net(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jac, want.numpy(), rtol=1e-4, atol=1e-5)
