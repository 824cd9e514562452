"""Models written as the libraries' tutorials write them (issue 9): snnTorch's convolutional SNN
(``output=True`` on the last layer), an ``RLeaky`` controller, ncps ``CfC(mixed_memory=True)``
and ``LTC`` with an ``NCP`` wiring inside a user's module. (The kron-sum PHM MLP and the
hand-written LIF reservoir with buffer state are in test_torch_user_models.py.)"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
snn = pytest.importorskip("snntorch")
ncps = pytest.importorskip("ncps")
from ncps.torch import LTC, CfC  # noqa: E402
from ncps.wirings import NCP, AutoNCP  # noqa: E402
from snntorch import surrogate  # noqa: E402
from torch import nn  # noqa: E402

import edgec  # noqa: E402


def _hidden_zero(net: nn.Module) -> None:
    for m in net.modules():
        for a in ("spk", "mem", "syn"):
            if isinstance(getattr(m, a, None), torch.Tensor):
                setattr(m, a, torch.zeros(0))


def test_snntorch_convolutional_snn_tutorial() -> None:
    torch.manual_seed(0)
    beta, grad = 0.5, surrogate.fast_sigmoid(slope=25)
    net = nn.Sequential(  # snnTorch tutorial 7, scaled to a 12x12 image
        nn.Conv2d(1, 4, 3), nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        nn.Conv2d(4, 8, 3), nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(8, 10),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True),
    ).eval()
    xs = (torch.rand(40, 1, 1, 12, 12) < 0.4).float() * 3
    cm = edgec.compile(net, example_inputs=xs[0])
    assert cm.is_stateful and len(cm.cmodel.state) == 3
    _hidden_zero(net)
    with torch.no_grad():
        ref = [net(x) for x in xs]
    cm.reset()
    got = [cm.step(x.numpy()) for x in xs]
    spk_ref = np.stack([r[0].numpy() for r in ref])
    spk = np.stack([np.asarray(g[0]) for g in got]).reshape(spk_ref.shape)
    assert 0 < spk_ref.sum() < spk_ref.size
    np.testing.assert_array_equal(spk, spk_ref)
    mem_ref = np.stack([r[1].numpy() for r in ref])
    mem = np.stack([np.asarray(g[1]) for g in got]).reshape(mem_ref.shape)
    np.testing.assert_allclose(mem, mem_ref, rtol=1e-4, atol=1e-5)


class RLeakyController(nn.Module):
    """Sensors → spiking recurrent layer → motor commands, stepped once per control tick."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.enc = nn.Linear(4, 16)
        self.rlif = snn.RLeaky(beta=0.9, linear_features=16, init_hidden=True)
        self.motor = nn.Linear(16, 2)

    def forward(self, sensors: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.motor(self.rlif(self.enc(sensors))))


def test_rleaky_controller_over_300_ticks() -> None:
    net = RLeakyController().eval()
    t = torch.arange(300, dtype=torch.float32)[:, None, None]
    xs = torch.cat([torch.sin(t / 7), torch.cos(t / 11), torch.sin(t / 3), torch.ones_like(t)], -1)
    cm = edgec.compile(net, example_inputs=xs[0] * 2)
    _hidden_zero(net)
    with torch.no_grad():
        ref = np.stack([net(2 * x).numpy() for x in xs])
    cm.reset()
    got = np.stack([np.asarray(cm.step(2 * x.numpy())) for x in xs]).reshape(ref.shape)
    assert np.ptp(ref) > 0.1
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


class CfCPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.rnn = CfC(3, AutoNCP(12, 2), mixed_memory=True, batch_first=True)

    def forward(self, x: torch.Tensor, hx: tuple) -> tuple:
        y, hx = self.rnn(x, hx)
        return torch.tanh(y), hx


class LTCPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.rnn = LTC(3, NCP(4, 3, 3, 2, 2, 2, 2), batch_first=True)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y)


def test_cfc_mixed_memory_policy_with_explicit_state() -> None:
    net = CfCPolicy().eval()
    x = torch.randn(1, 20, 3)
    hx = (torch.zeros(1, 12), torch.zeros(1, 12))
    cm = edgec.compile(net, example_inputs=(x, hx))
    with torch.no_grad():
        y, (h, c) = net(x, hx)
        y2, (h2, c2) = net(x, (h, c))
    outs = cm.run(x.numpy(), np.zeros((1, 12), np.float32), np.zeros((1, 12), np.float32))
    np.testing.assert_allclose(np.asarray(outs[0]).reshape(y.shape), y.numpy(), rtol=1e-4,
                               atol=1e-5)
    outs2 = cm.run(x.numpy(), np.asarray(outs[1]), np.asarray(outs[2]))
    np.testing.assert_allclose(np.asarray(outs2[0]).reshape(y2.shape), y2.numpy(), rtol=1e-4,
                               atol=1e-5)


def test_ltc_ncp_policy() -> None:
    net = LTCPolicy().eval()
    x = torch.randn(1, 15, 3)
    cm = edgec.compile(net, example_inputs=x)
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(np.asarray(cm.run(x.numpy())).reshape(ref.shape), ref,
                               rtol=1e-4, atol=1e-5)
