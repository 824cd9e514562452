"""Tune an NCAP swimmer on a physics-free swimmer, compile it, check the C against PyTorch.

The swimmer is a chain of ``n`` joints, each a damped, spring-loaded hinge driven by its torque
(semi-implicit Euler, dt = 0.05 s). Undulatory swimming needs a wave travelling head → tail, so
the forward-speed proxy is the phase lag between neighbouring joints,
``v = k Σ_i (θ_i ω_{i+1} − θ_{i+1} ω_i)`` (positive when joint i leads joint i + 1), integrated
into a distance. A (1 + λ) evolution strategy with a fixed seed tunes the four shared NCAP weights
(proprioceptive, oscillator, ipsilateral, contralateral) in a few seconds; the sign constraints
stay inside the module's forward. Then edgec compiles the module (sign constraints folded, the
step counter in the C state) and the C controller and the PyTorch module each drive their own
swimmer for a long closed-loop rollout: torques must be bit-identical.

    python examples/swimmer_ncap/train.py            # about 15 s
    python examples/swimmer_ncap/train.py --quick    # a few seconds (CI)
    python examples/swimmer_ncap/train.py --out build/swimmer   # also write swimmer.c/.h
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ncap import SwimmerModule  # noqa: E402

import edgec  # noqa: E402

N_JOINTS = 6
DT = 0.05
STIFFNESS, DAMPING, GAIN = 4.0, 1.5, 4.0  # torque 1 holds a joint at GAIN / STIFFNESS = 1 rad
SPEED_GAIN = 0.1
SEED = 0
PARAM_KEYS = ("bneuron_prop", "bneuron_osc", "muscle_ipsi", "muscle_contra")


class Swimmer:
    """A chain of damped torque-driven hinges with a travelling-wave forward-speed proxy."""

    def __init__(self, n_joints: int = N_JOINTS):
        self.theta = np.zeros(n_joints)
        self.omega = np.zeros(n_joints)
        self.distance = 0.0

    def observe(self) -> np.ndarray:
        return self.theta.astype(np.float32)

    def step(self, torque: np.ndarray) -> float:
        u = np.asarray(torque, np.float64).reshape(-1)
        self.omega += DT * (GAIN * u - DAMPING * self.omega - STIFFNESS * self.theta)
        self.theta += DT * self.omega
        th, om = self.theta, self.omega
        speed = SPEED_GAIN * float(np.sum(th[:-1] * om[1:] - th[1:] * om[:-1]))
        self.distance += DT * speed
        return speed


def rollout(policy, ticks: int) -> tuple[float, np.ndarray]:
    """Closed loop: ``policy(q [1, J]) -> torques [1, J]`` drives a fresh swimmer."""
    body = Swimmer()
    torques = np.zeros((ticks, N_JOINTS), np.float32)
    for t in range(ticks):
        u = np.asarray(policy(body.observe()[None, :]), np.float32).reshape(-1)
        torques[t] = u
        body.step(u)
    return body.distance, torques


def torch_policy(model: SwimmerModule):
    model.reset()

    def act(q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(q)).numpy()

    return act


def set_params(model: SwimmerModule, values: np.ndarray) -> None:
    with torch.no_grad():
        for key, v in zip(PARAM_KEYS, values, strict=True):
            model.params[key].fill_(float(v))


def get_params(model: SwimmerModule) -> np.ndarray:
    return np.array([float(model.params[k].detach()) for k in PARAM_KEYS])


def tune(model: SwimmerModule, generations: int, offspring: int, ticks: int) -> float:
    """(1 + λ) evolution strategy on the four shared weights (signs enforced in forward)."""
    rng = np.random.default_rng(SEED)
    best = get_params(model)
    best_fit, _ = rollout(torch_policy(model), ticks)
    sigma = 0.3
    for gen in range(generations):
        improved = False
        for _ in range(offspring):
            cand = best + sigma * rng.standard_normal(best.size)
            set_params(model, cand)
            fit, _ = rollout(torch_policy(model), ticks)
            if fit > best_fit:
                best, best_fit, improved = cand, fit, True
        sigma *= 1.2 if improved else 0.7
        print(f"  generation {gen + 1}: distance {best_fit:.3f}, weights {np.round(best, 3)}")
    set_params(model, best)
    return best_fit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a reduced run for CI (seconds)")
    ap.add_argument("--out", type=Path, help="write the generated C here")
    args = ap.parse_args(argv)
    gens, offspring, ticks, check_ticks = (2, 3, 120, 300) if args.quick else (12, 8, 240, 1000)

    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    model = SwimmerModule(N_JOINTS).eval()
    start, _ = rollout(torch_policy(model), ticks)
    print(f"initial NCAP weights (+1, +1, +1, -1): distance {start:.3f} in {ticks} ticks")
    best = tune(model, gens, offspring, ticks)
    print(f"tuned: distance {best:.3f} ({time.perf_counter() - t0:.1f} s)")

    m = edgec.compile(model, example_inputs=(torch.zeros(1, N_JOINTS),), name="swimmer")
    if args.out:
        m.write(args.out)
    rep = m.report()
    print(f"compiled: {rep['weight_bytes']} B flash, {rep['arena_bytes']} B arena, "
          f"{rep['state_bytes']} B state, {rep['macs']} MACs per tick")

    m.reset()
    d_c, tq_c = rollout(lambda q: m.step(q), check_ticks)
    d_t, tq_t = rollout(torch_policy(model), check_ticks)
    equal = np.array_equal(tq_c, tq_t)
    print(f"C vs PyTorch over {check_ticks} closed-loop ticks: torques "
          f"{'bit-identical' if equal else 'DIFFER'} (max |diff| "
          f"{np.abs(tq_c - tq_t).max():.2e}); distance C {d_c:.4f}, torch {d_t:.4f}")
    return 0 if equal and best >= start else 1


if __name__ == "__main__":
    raise SystemExit(main())
