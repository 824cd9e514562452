"""Learning a NARX forward model from a simulated plant (for the examples and the tests).

``collect_narx_data`` excites the plant with random held commands and lays the samples out as
the runtime feeds its model, ``z = [u(t) | u(t-1) .. u(t-Lu) | y(t) .. y(t-Ly+1) | s(t)]``, with
the target y(t+1). ``NarxMLP`` predicts y(t+1) = y(t) + scale * MLP(z) (tanh hidden layers), and
``train_narx`` fits it with full-batch Adam from a fixed seed (deterministic on CPU).

``collect_dynamics_data`` excites a plant from random initial states with random held commands
and records one-step transitions ``z = [x(t) | u(t)] -> x(t+1)`` for the horizon mode;
``DynamicsMLP`` predicts ``x' = x + MLP(z)`` (tanh hidden layers) and ``train_dynamics`` fits it
on standardised inputs and increments, then folds the scalings into the first and last layers
so the compiled model is just the MLP.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.mpc.config import MpcConfig
from edgec.mpc.plants import Plant


def collect_narx_data(
    plant: Plant, cfg: MpcConfig, n_ticks: int, seed: int = 0, max_hold: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Random held commands in the config's box; returns (Z, Y) float32."""
    rng = np.random.default_rng(seed)
    if cfg.sensors:
        raise EdgecError("collect_narx_data: plants without extra sensor signals only")
    ny, lu, ly = cfg.outputs, cfg.command_lags, cfg.output_lags
    lo, hi = cfg.u_min, cfg.u_max
    plant.reset()
    u = np.clip(cfg.u_init, lo, hi).astype(np.float64)
    u_hist = [u.copy() for _ in range(lu)]
    y_hist = [plant.output() for _ in range(ly)]
    zs, ys = [], []
    hold = 0
    for _ in range(n_ticks):
        if hold == 0:
            target = rng.uniform(lo, hi)
            hold = int(rng.integers(1, max_hold + 1))
        hold -= 1
        u = np.clip(target, np.maximum(lo, u - cfg.du_max), np.minimum(hi, u + cfg.du_max))
        z = np.concatenate([u, *u_hist, *y_hist])
        y_next = plant.step(u)
        zs.append(z)
        ys.append(y_next[:ny])
        if lu:
            u_hist = [u.copy()] + u_hist[:-1]
        if ly:
            y_hist = [y_next[:ny].copy()] + y_hist[:-1]
    return np.asarray(zs, np.float32), np.asarray(ys, np.float32)


def make_narx_mlp(n_in: int, n_out: int, y_index: int, hidden: int = 32, scale: float = 0.1) -> Any:
    import torch
    from torch import nn

    class NarxMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(n_in, hidden), nn.Tanh(),
                nn.Linear(hidden, hidden), nn.Tanh(),
                nn.Linear(hidden, n_out),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z[:, y_index : y_index + n_out] + scale * self.net(z)

    return NarxMLP()


def train_narx(
    z: np.ndarray,
    y: np.ndarray,
    cfg: MpcConfig,
    hidden: int = 32,
    steps: int = 1500,
    lr: float = 1e-2,
    seed: int = 0,
) -> Any:
    """Full-batch Adam with a cosine learning-rate decay; returns the trained module (eval)."""
    import torch

    torch.manual_seed(seed)
    y_index = cfg.commands * (1 + cfg.command_lags)
    model = make_narx_mlp(z.shape[1], y.shape[1], y_index, hidden)
    zt = torch.from_numpy(z)
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.mean((model(zt) - yt) ** 2)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def collect_dynamics_data(
    plant: Plant,
    cfg: MpcConfig,
    n_ticks: int,
    state_box: np.ndarray,
    seed: int = 0,
    episode: int = 100,
    max_hold: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Episodes of ``episode`` ticks, each from a state drawn uniformly in ``[-state_box,
    state_box]``, driven by random held commands uniform in the config's box (the rate limit
    applied); returns (Z, X') float32 with ``Z = [x(t) | u(t)]``."""
    rng = np.random.default_rng(seed)
    box = np.asarray(state_box, np.float64)
    lo, hi = cfg.u_min, cfg.u_max
    zs, xs = [], []
    u = np.clip(cfg.u_init, lo, hi).astype(np.float64)
    target = u
    hold = 0
    for k in range(n_ticks):
        if k % episode == 0:
            plant.reset(rng.uniform(-box, box))
            u = rng.uniform(lo, hi)
            hold = 0
        if hold == 0:
            target = rng.uniform(lo, hi)
            hold = int(rng.integers(1, max_hold + 1))
        hold -= 1
        u = np.clip(target, np.maximum(lo, u - cfg.du_max), np.minimum(hi, u + cfg.du_max))
        z = np.concatenate([plant.x, u])
        plant.step(u)
        zs.append(z)
        xs.append(plant.x.copy())
    return np.asarray(zs, np.float32), np.asarray(xs, np.float32)


def make_dynamics_mlp(n_x: int, n_u: int, hidden: int = 32) -> Any:
    import torch
    from torch import nn

    class DynamicsMLP(nn.Module):
        """x' = x + MLP([x | u]), two tanh hidden layers."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(n_x + n_u, hidden), nn.Tanh(),
                nn.Linear(hidden, hidden), nn.Tanh(),
                nn.Linear(hidden, n_x),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z[:, :n_x] + self.net(z)

    return DynamicsMLP()


def train_dynamics(
    z: np.ndarray,
    x_next: np.ndarray,
    hidden: int = 32,
    steps: int = 3000,
    lr: float = 1e-2,
    seed: int = 0,
) -> Any:
    """Full-batch Adam (cosine decay) on standardised inputs and increments x' - x; the
    standardisation is folded into the first and last layer afterwards (same function, plain
    MLP). Returns the trained module (eval)."""
    import torch

    n_x = x_next.shape[1]
    torch.manual_seed(seed)
    model = make_dynamics_mlp(n_x, z.shape[1] - n_x, hidden)
    z64 = z.astype(np.float64)
    dx = x_next.astype(np.float64) - z64[:, :n_x]
    z_mean, z_std = z64.mean(axis=0), z64.std(axis=0) + 1e-12
    dx_mean, dx_std = dx.mean(axis=0), dx.std(axis=0) + 1e-12
    zt = torch.tensor((z64 - z_mean) / z_std, dtype=torch.float32)
    dt = torch.tensor((dx - dx_mean) / dx_std, dtype=torch.float32)
    net = model.net
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.mean((net(zt) - dt) ** 2)
        loss.backward()
        opt.step()
        sched.step()
    first, last = net[0], net[-1]
    with torch.no_grad():  # net(z) = dx_std * net_n((z - z_mean) / z_std) + dx_mean
        w = first.weight.double() / torch.from_numpy(z_std)[None, :]
        first.bias.copy_(first.bias.double() - w @ torch.from_numpy(z_mean))
        first.weight.copy_(w)
        scale = torch.from_numpy(dx_std)
        last.bias.copy_(last.bias.double() * scale + torch.from_numpy(dx_mean))
        last.weight.copy_(last.weight.double() * scale[:, None])
    return model.eval()
