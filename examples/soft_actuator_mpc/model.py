"""Forward models referenced by the configs (``module = "model:<function>"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgec.mpc.learn import make_narx_mlp
from edgec.mpc.plants import MassSpringDamper, msd_dynamics_module

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "forward_weights.npz"
N_IN, N_OUT, Y_INDEX, HIDDEN = 6, 1, 4, 32


def load_forward() -> torch.nn.Module:
    """The trained soft-actuator NARX MLP (6 -> 32 -> 32 -> 1, tanh), weights from train.py."""
    net = make_narx_mlp(N_IN, N_OUT, Y_INDEX, HIDDEN)
    data = np.load(WEIGHTS)
    net.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return net.eval()


def msd_dynamics() -> torch.nn.Module:
    return msd_dynamics_module(MassSpringDamper(dt=0.01))


def mlp_2x32x32x2() -> torch.nn.Module:
    """The goal model of bench/mpc.py: a 2 -> 32 -> 32 -> 2 tanh MLP (fixed seed, well-conditioned
    Jacobian around 0: y ~ u plus a smooth nonlinear part), a static map y = f(u)."""
    gen = torch.Generator().manual_seed(7)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 2),
    )
    with torch.no_grad():
        for layer in (net[0], net[2], net[4]):
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / fan_in**0.5)
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=gen))
    return _PlusIdentity(net).eval()


class _PlusIdentity(torch.nn.Module):
    """y = u + 0.5 * net(u): invertible near the origin, nonlinear enough to need iterations."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + 0.5 * self.net(u)
