"""Forward models referenced by the configs (``module = "model:<function>"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgec.mpc.learn import make_dynamics_mlp, make_narx_mlp
from edgec.mpc.plants import MassSpringDamper, msd_dynamics_module

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "forward_weights.npz"
N_IN, N_OUT, Y_INDEX, HIDDEN = 6, 1, 4, 32
MSD_WEIGHTS = HERE / "msd_dynamics_weights.npz"
MSD_STATES, MSD_COMMANDS, MSD_HIDDEN = 2, 1, 32
# training data of the learned MSD model: episodes from states uniform in +-(position m,
# velocity m/s), driven by random held forces over the config's limits (train.py)
MSD_STATE_BOX = (1.5, 3.0)


def load_forward() -> torch.nn.Module:
    """The trained soft-actuator NARX MLP (6 -> 32 -> 32 -> 1, tanh), weights from train.py."""
    return _load(make_narx_mlp(N_IN, N_OUT, Y_INDEX, HIDDEN), WEIGHTS)


def _load(net: torch.nn.Module, path: Path) -> torch.nn.Module:
    data = np.load(path)
    net.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    return net.eval()


def msd_learned_dynamics() -> torch.nn.Module:
    """The learned MSD one-step model x' = x + MLP([x, v, F]) (3 -> 32 -> 32 -> 2, tanh),
    weights from train.py (msd.toml)."""
    return _load(make_dynamics_mlp(MSD_STATES, MSD_COMMANDS, MSD_HIDDEN), MSD_WEIGHTS)


def msd_dynamics() -> torch.nn.Module:
    """The analytic MSD one-step model x' = A x + B u (exact zero-order hold; msd_exact.toml)."""
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
