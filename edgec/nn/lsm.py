"""Liquid-state machines whose reservoir comes from edgec's seeded generator.

``Reservoir`` is a fixed (not trainable) layer of LIF neurons with sparse random input and
recurrent weights drawn by the counter-based generator documented in :mod:`edgec.ops.lsm` (the
same bits in numpy and in the generated C, so firmware can regenerate the weights instead of
storing them). Per step, in float32 and in this order::

    mem = (decay * mem) * (1 - s) + c_in * (K_in x) + c_rec * (K_rec s) + bias
    s = mem > v_th                      (strict)

i.e. ``mem_t = decay mem_{t-1} (1 - s_{t-1}) + W_in x_t + W_rec s_{t-1} + b`` with
``W = c K``, ``K`` integer and ``b = b_in + b_rec`` folded into one vector.

``LSMClassifier`` runs a window ``x [T, n_in]`` through the reservoir from rest, takes each
neuron's firing rate (spike count / T) and applies a trained readout (``nn.Linear`` or a small
``nn.Sequential`` MLP). :func:`fit_readout` trains that readout on the reservoir's rates.

Compile with ``edgec.compile(model, example_inputs=(x,), options={"lsm": "regen"})`` (or
``ram``/``flash``, CLI ``--option lsm=regen``): ``regen`` regenerates the synapses every step (no
weight storage), ``ram`` generates them into static RAM on the first call, ``flash`` stores them
as constants. ``Reservoir`` alone compiles to a stateful model (``step(x)`` once per tick).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from edgec.ops.lsm import (
    DISTRIBUTIONS,
    LSM_MODES,
    ReservoirSpec,
    draw,
    generate,
    int_weights,
    mix32,
    stream_key,
)

__all__ = [
    "DISTRIBUTIONS",
    "LSM_MODES",
    "LSMClassifier",
    "Reservoir",
    "ReservoirSpec",
    "draw",
    "fit_readout",
    "generate",
    "int_weights",
    "mix32",
    "stream_key",
]


class Reservoir(nn.Module):
    """A generated LIF reservoir; ``forward(x [T, n_in]) -> spikes [T, n_res]`` carries state.

    Call :meth:`reset` to put the neurons at rest; ``forward`` continues from the state the
    previous call left (one call per tick with ``T = 1``, or a whole window). :meth:`run` is the
    stateless form and accepts a batch ``[B, T, n_in]``.
    """

    def __init__(
        self,
        n_in: int,
        n_res: int,
        seed: int = 0,
        density_in: float = 0.1,
        density_rec: float = 0.1,
        scale_in: float = 1.0,
        scale_rec: float = 1.0,
        dist: str = "gaussian",
        decay: float = 0.9,
        v_th: float = 1.0,
        bias_mean: float = 0.0,
        bias_scale: float = 0.0,
    ):
        super().__init__()
        self.spec = ReservoirSpec(
            int(seed), int(n_in), int(n_res), float(density_in), float(density_rec),
            float(scale_in), float(scale_rec), str(dist), float(decay), float(v_th),
            float(bias_mean), float(bias_scale),
        )
        self.spec.validate()
        k_in, k_rec, bias = generate(self.spec)
        self.n_in, self.n_res = self.spec.n_in, self.spec.n_res
        self.has_bias = bool(np.any(bias))
        buffers = {
            "k_in_t": np.ascontiguousarray(k_in.T.astype(np.float32)),
            "k_rec_t": np.ascontiguousarray(k_rec.T.astype(np.float32)),
            "bias": bias.astype(np.float32),
            "c_in": np.float32(self.spec.c_in),
            "c_rec": np.float32(self.spec.c_rec),
            "decay": np.float32(self.spec.decay),
            "v_th": np.float32(self.spec.v_th),
        }
        for key, val in buffers.items():  # regenerated from the spec: not saved
            self.register_buffer(key, torch.from_numpy(np.array(val)), persistent=False)
        self.register_buffer("mem", torch.zeros(n_res), persistent=False)
        self.register_buffer("spk", torch.zeros(n_res), persistent=False)

    def reset(self) -> None:
        self.mem = torch.zeros(self.n_res)
        self.spk = torch.zeros(self.n_res)

    def run(
        self, x: torch.Tensor, mem: torch.Tensor | None = None, spk: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stateless: ``x [..., T, n_in]`` from ``(mem, spk)`` (rest when None) →
        ``(spikes [..., T, n_res], mem, spk)``."""
        if x.shape[-1] != self.n_in or x.dim() < 2:
            raise ValueError(f"Reservoir: input {list(x.shape)} must be [..., T, {self.n_in}]")
        x = x.to(torch.float32)
        batch = x.shape[:-2]
        mem = torch.zeros(*batch, self.n_res) if mem is None else mem
        spk = torch.zeros(*batch, self.n_res) if spk is None else spk
        in_cur = self.c_in * (x @ self.k_in_t)  # [..., T, n_res]; exact sums for integer x
        out = []
        for t in range(x.shape[-2]):
            m = (self.decay * mem) * (1.0 - spk)
            m = m + in_cur[..., t, :]
            m = m + self.c_rec * (spk @ self.k_rec_t)
            if self.has_bias:
                m = m + self.bias
            mem = m
            spk = (mem > self.v_th).to(torch.float32)
            out.append(spk)
        return torch.stack(out, dim=-2), mem, spk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            spikes, mem, spk = self.run(x, self.mem, self.spk)
        self.mem, self.spk = mem, spk
        return spikes

    def rates(self, x: torch.Tensor) -> torch.Tensor:
        """Firing rates over each window, from rest: ``[..., T, n_in] -> [..., n_res]``."""
        with torch.no_grad():
            spikes, _, _ = self.run(x)
        return spikes.sum(dim=-2) / float(x.shape[-2])


class LSMClassifier(nn.Module):
    """``readout(rates)`` of a window run through ``reservoir`` from rest."""

    def __init__(self, reservoir: Reservoir, readout: nn.Module):
        super().__init__()
        self.reservoir = reservoir
        self.readout = readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.reservoir.rates(x))


def fit_readout(
    model: LSMClassifier,
    x: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 300,
    lr: float = 0.02,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """Train ``model.readout`` (cross-entropy, Adam, full batch) on the reservoir's rates of
    ``x [B, T, n_in]``; returns the loss per epoch."""
    torch.manual_seed(seed)
    feats = model.reservoir.rates(x)
    opt = torch.optim.Adam(model.readout.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    for _ in range(int(epochs)):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model.readout(feats), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def accuracy(model: nn.Module, x: torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    with torch.no_grad():
        pred = model(x).argmax(dim=-1)
    return float((pred == torch.as_tensor(labels)).float().mean())
