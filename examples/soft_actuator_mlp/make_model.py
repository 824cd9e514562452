"""Train the soft-actuator forward-kinematics MLP (4 → 64 → 64 → 3, tanh) and export it.

The four inputs are normalised chamber pressures in [0, 1] of a four-chamber soft continuum
actuator; the three outputs are its tip position (x, y, z) in units of the rest length, from a
constant-curvature model: opposite chambers bend the actuator, the mean pressure lengthens it.

Runs in a few seconds on one CPU thread and is deterministic: the same PyTorch build writes the
same bytes. Writes ``model.onnx`` (legacy exporter: one self-contained file) and ``inputs.npz``
(``x``: 20 sample inputs, float32 [20, 4]) next to this script, or into ``--out DIR``.

    python examples/soft_actuator_mlp/make_model.py
    edgec examples/soft_actuator_mlp/model.onnx -o out/
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0
N_TRAIN = 2048
STEPS = 1500
BENDING_GAIN = 2.5  # curvature (1 / rest length) at full differential pressure
ELONGATION_GAIN = 0.3  # relative elongation at full mean pressure
OPSET = 17


def tip_position(p: np.ndarray) -> np.ndarray:
    """Constant-curvature forward kinematics: pressures [N, 4] → tip position [N, 3]."""
    p = p.astype(np.float64)
    kx = BENDING_GAIN * (p[:, 0] - p[:, 2])
    ky = BENDING_GAIN * (p[:, 1] - p[:, 3])
    kappa = np.hypot(kx, ky)
    phi = np.arctan2(ky, kx)
    length = 1.0 + ELONGATION_GAIN * p.mean(axis=1)
    theta = kappa * length  # bending angle
    safe = np.where(kappa > 1e-9, kappa, 1.0)
    radial = np.where(kappa > 1e-9, (1.0 - np.cos(theta)) / safe, 0.0)
    axial = np.where(kappa > 1e-9, np.sin(theta) / safe, length)
    return np.stack([radial * np.cos(phi), radial * np.sin(phi), axial], axis=1)


class SoftActuatorMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train() -> tuple[SoftActuatorMLP, float]:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    p = rng.uniform(0.0, 1.0, (N_TRAIN, 4)).astype(np.float32)
    x = torch.from_numpy(p)
    y = torch.from_numpy(tip_position(p).astype(np.float32))
    model = SoftActuatorMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    loss = torch.zeros(())
    for _ in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), float(loss.detach().sqrt())


def export(model: nn.Module, path: Path) -> None:
    example = torch.zeros(1, 4)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["x"], output_names=["tip"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="directory for model.onnx and inputs.npz (default: next to this script)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, rmse = train()
    export(model, args.out / "model.onnx")
    samples = np.random.default_rng(SEED + 1).uniform(0.0, 1.0, (20, 4)).astype(np.float32)
    np.savez(args.out / "inputs.npz", x=samples)
    with torch.no_grad():
        test_err = model(torch.from_numpy(samples)).numpy() - tip_position(samples)
    print(f"trained: rmse {rmse:.4f} (train), {np.sqrt(np.mean(test_err ** 2)):.4f} (samples); "
          f"wrote {args.out / 'model.onnx'} and {args.out / 'inputs.npz'}")


if __name__ == "__main__":
    main()
