"""PyTorch front-end: nn.Module (torch.fx with leaf modules) and torch.export (.pt2) → C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgec
from edgec.errors import EdgecError, UnsupportedOpError

RTOL, ATOL = 1e-4, 1e-5


def _check(module: nn.Module, *xs: torch.Tensor, pt2: Path | None = None) -> edgec.CompiledModel:
    module = module.eval()
    with torch.no_grad():
        ref = module(*xs)
    refs = [r.numpy() for r in _flat(ref)]
    m = edgec.compile(module, example_inputs=xs)
    got = m.run(*[x.numpy() for x in _flat(xs)])
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(refs)
    for g_, r_ in zip(got, refs, strict=True):
        np.testing.assert_allclose(g_, r_, rtol=RTOL, atol=ATOL)
    if pt2 is not None:
        torch.export.save(torch.export.export(module, xs), str(pt2))
        m2 = edgec.compile(str(pt2))
        got2 = m2.run(*[x.numpy() for x in _flat(xs)])
        got2 = got2 if isinstance(got2, list) else [got2]
        for g_, r_ in zip(got2, refs, strict=True):
            np.testing.assert_allclose(g_, r_, rtol=RTOL, atol=ATOL)
    return m


def _flat(v):
    if isinstance(v, (tuple, list)):
        return [y for x in v for y in _flat(x)]
    return [v]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(7, 5))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.sigmoid(x @ self.w) * 2.0 - y
        b = torch.nn.functional.leaky_relu(a, 0.1).clamp(-0.5, 0.8)
        c = torch.cat([a, b], dim=-1).permute(1, 0).reshape(2, -1)
        d = torch.nn.functional.softmax(c, dim=1).mean(dim=0, keepdim=True)
        return d, 1.0 - b[:, 1:4].transpose(0, 1)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self.bn(self.c1(x)))
        y = torch.relu(self.pw(self.dw(y)))
        y = nn.functional.max_pool2d(y, 2)
        return self.fc(self.pool(y).flatten(1))


def test_mlp(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = _check(MLP(), torch.randn(1, 4), pt2=tmp_path / "mlp.pt2")
    assert [n.op for n in m.graph.nodes] == ["Gemm", "Gemm", "Gemm"]  # tanh fused


def test_functional_ops_and_two_outputs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    _check(Functional(), torch.randn(3, 7), torch.randn(3, 5), pt2=tmp_path / "f.pt2")


def test_cnn_with_batchnorm(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = SmallCNN()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    m = _check(net, torch.randn(1, 3, 17, 17), pt2=tmp_path / "cnn.pt2")
    assert "BatchNormalization" not in [n.op for n in m.graph.nodes]


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_modules(kind: str, batch_first: bool) -> None:
    torch.manual_seed(3)
    rnn = getattr(nn, kind)(3, 7, batch_first=batch_first)
    x = torch.randn(1, 5, 3) if batch_first else torch.randn(5, 1, 3)
    h = torch.randn(1, 1, 7)
    hx = (h, torch.randn(1, 1, 7)) if kind == "LSTM" else h
    _check(rnn, x, hx)


def test_two_layer_bidirectional_lstm() -> None:
    torch.manual_seed(4)
    _check(nn.LSTM(3, 5, num_layers=2, bidirectional=True), torch.randn(6, 2, 3))


def test_gru_state_carried_by_step() -> None:
    """run(x, h) returns (y, h) as torch does, and reset/step carries h inside the C."""
    torch.manual_seed(5)
    gru = nn.GRU(4, 8).eval()
    m = edgec.compile(gru, example_inputs=(torch.randn(1, 1, 4), torch.zeros(1, 1, 8)))
    assert m.is_stateful
    xs = torch.randn(30, 1, 4)
    with torch.no_grad():
        y_ref, h_ref = gru(xs)
    m.reset()
    ys = [m.step(xs[t : t + 1].numpy()) for t in range(30)]
    np.testing.assert_allclose(np.concatenate(ys), y_ref.numpy(), rtol=RTOL, atol=ATOL)
    state = next(iter(m.state().values()))
    np.testing.assert_allclose(state, h_ref.numpy(), rtol=RTOL, atol=ATOL)


def test_unsupported_module_names_path_and_list() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 3), nn.Hardshrink())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    with pytest.raises(UnsupportedOpError) as ei:
        edgec.compile(Odd(), example_inputs=(torch.randn(1, 3),))
    msg = str(ei.value)
    assert "body.1" in msg and "Hardshrink" in msg and "edgec ops" in msg and "\n" not in msg


def test_unsupported_function() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, 1)

    with pytest.raises(UnsupportedOpError, match="cumsum"):
        edgec.compile(Odd(), example_inputs=(torch.randn(1, 3),))


def test_module_needs_example_inputs() -> None:
    with pytest.raises(EdgecError, match="example_inputs"):
        edgec.compile(MLP())


def test_bad_pt2_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(EdgecError, match="x.pt2"):
        edgec.compile(str(bad))


def test_comparisons_and_where(tmp_path: Path) -> None:
    class Piecewise(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spikes = (x > 0.25).float()
            return torch.where(x < -0.5, -x, x * 2.0) + spikes

    torch.manual_seed(7)
    _check(Piecewise(), torch.randn(3, 17), pt2=tmp_path / "pw.pt2")


def test_readable_port_names() -> None:
    """C parameters are named after forward()'s arguments and y / y0.. for the results."""
    gru = nn.GRU(4, 8)
    m = edgec.compile(gru, example_inputs=(torch.randn(1, 1, 4), torch.zeros(1, 1, 8)),
                      name="ctl")
    assert ("int ctl_run(const float *EDGEC_RESTRICT in_input, const float *in_hx, "
            "float *EDGEC_RESTRICT out_y0, float *out_y1);") in m.c_header
    m2 = edgec.compile(MLP(), example_inputs=(torch.randn(1, 4),), name="mlp")
    assert ("int mlp_run(const float *EDGEC_RESTRICT in_x, float *EDGEC_RESTRICT out_y);"
            in m2.c_header)
