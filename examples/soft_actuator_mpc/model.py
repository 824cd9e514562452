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
