"""Liquid-state machine on synthetic event-camera data: moving bars in eight directions.

Generates the dataset, builds a 200-neuron LIF reservoir from edgec's seeded generator, trains a
linear readout on the reservoir's firing rates, reports the test accuracy, compiles the model in
the three weight modes (regen / ram / flash) and checks the C against PyTorch: the reservoir's
spike trains bit for bit, the readout's logits within float tolerance.

    python examples/lsm_events/train.py            # full run (about half a minute)
    python examples/lsm_events/train.py --quick    # reduced run for CI (seconds)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import edgec  # noqa: E402
from edgec.nn.lsm import LSMClassifier, Reservoir, fit_readout  # noqa: E402

#: unit vectors of the eight directions (E, NE, N, NW, W, SW, S, SE)
DIRECTIONS = [(math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)) for k in range(8)]


def moving_bar_events(
    label: int, side: int, steps: int, rng: np.random.Generator, noise: float = 0.01
) -> np.ndarray:
    """One sample ``[steps, 2 * side * side]``: ON and OFF events (0/1) of a bar crossing a
    ``side x side`` sensor in direction ``label``, plus background noise events."""
    dx, dy = DIRECTIONS[label]
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    c = (side - 1) / 2
    # signed distance along the motion of each pixel from the sensor centre
    along = (xs - c) * dx + (ys - c) * dy
    speed = rng.uniform(0.3, 0.6)
    width = rng.uniform(1.5, 3.0)
    start = -side / 2 - width + rng.uniform(-1.0, 1.0)
    prev = np.zeros((side, side), bool)
    out = np.zeros((steps, 2, side, side), np.float32)
    for t in range(steps):
        pos = start + speed * t
        cur = (along <= pos) & (along > pos - width)
        out[t, 0] = cur & ~prev  # ON: the bar arrives
        out[t, 1] = prev & ~cur  # OFF: the bar leaves
        prev = cur
    out = np.maximum(out, rng.random(out.shape) < noise)
    return out.reshape(steps, -1)


def dataset(count: int, side: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(DIRECTIONS)
    rng.shuffle(labels)
    x = np.stack([moving_bar_events(int(k), side, steps, rng) for k in labels])
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small dataset, for CI")
    ap.add_argument("--out", default="build/lsm_events", help="where to write the C sources")
    ap.add_argument("--seed", type=int, default=2024, help="reservoir generator seed")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    side, steps = (10, 40) if args.quick else (16, 50)
    n_train, n_test = (160, 80) if args.quick else (800, 400)
    n_in, n_res = 2 * side * side, 120 if args.quick else 200
    x_train, y_train = dataset(n_train, side, steps, seed=1)
    x_test, y_test = dataset(n_test, side, steps, seed=2)
    print(f"dataset: {n_train} train / {n_test} test windows of {steps} steps, "
          f"{side}x{side} sensor, 2 polarities ({n_in} inputs), {len(DIRECTIONS)} directions; "
          f"{float(x_train.mean()) * n_in:.1f} events per step on average")

    reservoir = Reservoir(
        n_in, n_res, seed=args.seed, density_in=0.15, density_rec=0.1, scale_in=2.5,
        scale_rec=2.0, decay=0.9, v_th=5.0,
    )
    model = LSMClassifier(reservoir, nn.Linear(n_res, len(DIRECTIONS)))
    torch.manual_seed(0)
    losses = fit_readout(model, x_train, y_train, epochs=150 if args.quick else 400, lr=0.03)
    rates = reservoir.rates(x_test)
    with torch.no_grad():
        acc_train = float((model(x_train).argmax(-1) == y_train).float().mean())
        logits = model(x_test)
    acc_test = float((logits.argmax(-1) == y_test).float().mean())
    print(f"reservoir: {n_res} LIF neurons, mean firing rate {float(rates.mean()):.3f} per step")
    print(f"readout accuracy: train {acc_train:.1%}, test {acc_test:.1%} "
          f"(chance {1 / len(DIRECTIONS):.1%}; final loss {losses[-1]:.3f})")

    out_dir = Path(args.out)
    checks = min(n_test, 16 if args.quick else 64)
    print(f"\n{'mode':6} {'weights flash':>14} {'weights RAM':>12} {'max |logit diff|':>17} "
          f"{'argmax agree':>13}")
    worst = 0.0
    for mode in ("regen", "ram", "flash"):
        cm = edgec.compile(model, example_inputs=(x_test[0],), name=f"lsm_events_{mode}",
                           options={"lsm": mode})
        cm.write(out_dir / mode)
        got = np.stack([cm.run(x_test[i].numpy()) for i in range(checks)])
        diff = float(np.abs(got - logits[:checks].numpy()).max())
        agree = float(np.mean(got.argmax(-1) == logits[:checks].numpy().argmax(-1)))
        worst = max(worst, diff)
        rep = cm.report()
        s = rep.get("structure", {})
        flash = rep["weight_bytes"]
        ram = s.get("lsm_weight_ram_bytes", 0)
        print(f"{mode:6} {flash:>14} {ram:>12} {diff:>17.2e} {agree:>13.0%}")
        if diff > 1e-4 or agree < 1.0:
            print(f"FAIL: {mode} logits differ from PyTorch")
            return 1
    # spike trains, step by step, through the stateful reservoir
    step_model = edgec.compile(reservoir, example_inputs=(torch.zeros(1, n_in),),
                               options={"lsm": "regen"})
    mismatches = 0
    for i in range(min(checks, 8)):
        reservoir.reset()
        step_model.reset()
        for t in range(steps):
            xt = x_test[i, t : t + 1]
            want = reservoir(xt).numpy()
            mismatches += int(not np.array_equal(np.asarray(step_model.step(xt.numpy())), want))
    if mismatches:
        print(f"FAIL: {mismatches} steps with different spikes")
        return 1
    print(f"\nC == PyTorch: spike trains identical over {min(checks, 8) * steps} steps (regen), "
          f"logits within {worst:.1e} on {checks} windows in every mode")
    total = time.perf_counter() - t_start
    print(f"C sources in {out_dir}/{{regen,ram,flash}}; total {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
