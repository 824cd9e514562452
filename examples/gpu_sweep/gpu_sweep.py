"""The soft-actuator NR-MPC swept over many plant variations, and a ResNet-style CNN compiled
for CUDA and checked against torch: edgec's two GPU uses in one script.

    python examples/gpu_sweep/gpu_sweep.py                # GPU: 100,000 loops; CPU: 256
    python examples/gpu_sweep/gpu_sweep.py --loops 2000 --device cpu -o sweep-out
    python examples/gpu_sweep/gpu_sweep.py --quick        # seconds (the test runs it)

Part 1: the controller of examples/soft_actuator_mpc (its learned NARX forward model, exact
Jacobian) closes the loop on the tendon-driven soft actuator's C plant, one loop per GPU thread
(``edgec simulate --batch --device cuda``; on a machine without a GPU the same loops run on CPU
threads). Loop 0 is the nominal plant; the others draw the tendon stiffness k1 (±25 %), the
joint damping (friction, 0.5-1.5x) and an actuator delay of 0-2 ticks. It prints the RMSE
distribution and the worst loops and writes batch.csv and batch.png.

Part 2: a small ResNet (two residual blocks, BatchNorm folded, 3x32x32 → 10) compiled with
``target="cuda"`` and run on a batch of images, on the GPU or through the host build of the same
``.cu``, against torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgec
from edgec.backend.cuda.build import gpu_count
from edgec.errors import EdgecError
from edgec.mpc.batch import nominal, reference_from_rows
from edgec.mpc.batch_report import describe, format_summary, simulate_batch
from edgec.mpc.config import load_config
from edgec.mpc.simulate import default_reference

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "soft_actuator_mpc" / "soft_actuator.toml"
PLANT = "soft-actuator"
GPU_LOOPS, CPU_LOOPS, QUICK_LOOPS = 100_000, 256, 6
QUICK_SECONDS = 2.0
#: the ResNet check: max abs difference to torch (float32; the GPU build uses -fmad=false where
#: rounding matters, see docs/cuda.md)
RESNET_ATOL = 1e-4


def variations() -> dict[str, tuple[float, float]]:
    nom = nominal(PLANT)
    return {"k1": (0.75 * nom["k1"], 1.25 * nom["k1"]),
            "damping": (0.5 * nom["damping"], 1.5 * nom["damping"]),
            "delay": (0.0, 2.0)}


def sweep(loops: int, device: str, out: Path | None, seconds: float | None) -> dict:
    cfg = load_config(CONFIG)
    rows = default_reference(PLANT)
    if seconds is not None:
        rows = rows[rows[:, 0] <= rows[0, 0] + seconds]
    refs = [reference_from_rows("example soft-actuator path", rows[:, 0], rows[:, 1:], cfg)]
    _, summary = simulate_batch(cfg, PLANT, loops, variations(), refs, seed=1, noise=1e-4,
                                out_dir=out, label=f"{loops:,} closed loops", device=device)
    return summary


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.head(y.mean(dim=(2, 3)))


def resnet_check(device: str, batch: int) -> float:
    """Max abs difference of edgec's CUDA build (``device``: cuda, or cpu = the host build of the
    same .cu) to torch on ``batch`` random images."""
    torch.manual_seed(0)
    net = TinyResNet()
    for m in net.modules():  # non-trivial BatchNorm statistics, so folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    x = torch.randn(batch, 3, 32, 32)
    cu = edgec.compile(net, example_inputs=(x[:1],), name="tiny_resnet", target="cuda")
    with torch.no_grad():
        want = net(x).numpy()
    got = np.asarray(cu.run(x.numpy(), device=device)).reshape(want.shape)
    return float(np.abs(got - want).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="auto: the GPU when one is visible")
    ap.add_argument("--loops", type=int, help=f"closed loops (default {GPU_LOOPS:,} on a GPU, "
                    f"{CPU_LOOPS} on the CPU)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_LOOPS} loops over {QUICK_SECONDS:g} s of the path")
    ap.add_argument("-o", "--output", default="gpu-sweep-out", help="batch.csv, batch.png")
    args = ap.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if gpu_count()[0] > 0 else "cpu"
    loops = args.loops or (QUICK_LOOPS if args.quick else
                           GPU_LOOPS if device == "cuda" else CPU_LOOPS)
    try:
        summary = sweep(loops, device, Path(args.output), QUICK_SECONDS if args.quick else None)
        print(describe(summary) + f"; wrote {', '.join(summary['files'])}")
        print(format_summary(summary))
        err = resnet_check(device, 4 if args.quick else 64)
    except EdgecError as exc:
        print(f"gpu_sweep: {exc}", file=sys.stderr)
        return 2
    ok = err <= RESNET_ATOL
    print(f"tiny ResNet (target cuda, device {device}) vs torch: max abs err {err:.2e} "
          f"({'within' if ok else 'OUTSIDE'} {RESNET_ATOL:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
