"""Evolved spiking altitude controllers for a blimp, compiled to C with edgec.

* Plant (dt = 0.01 s, semi-implicit Euler): z'' = sat(u, U_MIN, U_MAX) - G_NET - DRAG·z'|z'|:
  a blimp heavier than air (non-neutral buoyancy G_NET), quadratic drag, thrust limits.
* Target: a PID (derivative of the filtered error) tracking random altitude set-points.
* Two complementary SNN controllers, 81 neurons each (40 encoding LIF neurons fed by the error
  with mirrored weights (w, -w), 40 current-based hidden LIF neurons with subtractive reset, one
  leaky-integrator output): the *fast* one (adaptive thresholds, short output time constant)
  imitates the PID's P + D terms, the *steady-state* one (long time constant, tonic neurons)
  its I term, buoyancy compensation included. u = u_fast + u_steady.
* Their parameters (encoding weights and biases, hidden weights and biases: 1700 per controller)
  are evolved with a separable CMA-ES-like (mu/mu_w, lambda)-ES (rank-mu variance update,
  cumulative step-size adaptation) to imitate the PID terms along PID-controlled flights; each
  candidate's linear readout is fitted by least squares inside its fitness evaluation (Lamarckian
  readout). Hidden weights live on a 2^-8 grid, so spike-driven sums are exact in any order.
* The combined controller is compiled with edgec (event-driven hidden and readout layers,
  bit-packed spikes); the C's spike trains must equal PyTorch's for 1000 steps; closed-loop
  tracking of PID, the fast controller alone, and both (PyTorch and C) is reported.

    python examples/blimp_snn/blimp_snn.py            # evolves in about a minute
    python examples/blimp_snn/blimp_snn.py --quick    # a few seconds (CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import edgec  # noqa: E402
import edgec.nn as enn  # noqa: E402

DT = 0.01
G_NET = 2.02  # m/s^2 the thrust must supply to hover (heavier than air)
DRAG = 0.8
U_MIN, U_MAX = -1.0, 6.0
KP, KI, KD, D_FILTER = 4.0, 1.5, 3.0, 0.2
N_ENC, N_HID = 40, 40
GRID = 256.0  # hidden weights are multiples of 1/GRID
BETA_ENC, BETA_HID, ALPHA_HID = 0.8, 0.9, 0.5


# --- plant and PID --------------------------------------------------------------------------------


@dataclass
class Blimp:
    z: float = 0.0
    v: float = 0.0

    def step(self, u: float) -> float:
        a = min(max(u, U_MIN), U_MAX) - G_NET - DRAG * self.v * abs(self.v)
        self.v += DT * a
        self.z += DT * self.v
        return self.z


class PID:
    """P + I + D on the measurement (filtered): no derivative kick at set-point steps."""

    def __init__(self) -> None:
        self.i = 0.0
        self.d = 0.0
        self.z_prev: float | None = None

    def terms(self, e: float, z: float) -> tuple[float, float, float]:
        self.i += KI * DT * e
        if self.z_prev is not None:
            self.d = (1 - D_FILTER) * self.d - D_FILTER * KD * (z - self.z_prev) / DT
        self.z_prev = z
        return KP * e, self.i, self.d


def setpoints(steps: int, rng: np.random.Generator, hold: int = 600) -> np.ndarray:
    levels = rng.uniform(0.0, 3.0, size=steps // hold + 1)
    return np.repeat(levels, hold)[:steps]


def fly_pid(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed loop with the PID: errors, fast target (P + D) and steady target (I)."""
    plant, pid = Blimp(), PID()
    es, fast, steady = [], [], []
    for r in ref:
        e = float(r - plant.z)
        p, i, d = pid.terms(e, plant.z)
        es.append(e)
        fast.append(p + d)
        steady.append(i)
        plant.step(p + i + d)
    return np.array(es, np.float32), np.array(fast, np.float32), np.array(steady, np.float32)


# --- the controllers --------------------------------------------------------------------------


class SNNController(nn.Module):
    """error [1, 1] → encoding LIF (40) → Linear → hidden LIF (40) → Linear → leaky integrator."""

    def __init__(self, adaptive: bool, lam: float):
        super().__init__()
        self.register_buffer("w_enc", torch.zeros(N_ENC))
        self.register_buffer("b_enc", torch.zeros(N_ENC))
        self.enc = enn.LIF(N_ENC, beta=BETA_ENC, threshold=1.0)
        self.fc = nn.Linear(N_ENC, N_HID)
        self.hid = enn.LIF(
            N_HID, beta=BETA_HID, alpha=ALPHA_HID, threshold=1.0,
            adapt_decay=0.97 if adaptive else None, adapt_add=0.5,
        )
        self.readout = nn.Linear(N_HID, 1)
        self.out = enn.LeakyIntegrator(1, lam=lam)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s_enc = self.enc(e * self.w_enc + self.b_enc)
        s_hid = self.hid(self.fc(s_enc))
        return self.out(self.readout(s_hid)), s_enc, s_hid


class BlimpSNN(nn.Module):
    """The two complementary controllers; returns u (and, for checking, all spikes)."""

    def __init__(self, return_spikes: bool = False):
        super().__init__()
        self.fast = SNNController(adaptive=True, lam=0.8)
        self.steady = SNNController(adaptive=False, lam=0.995)
        self.return_spikes = return_spikes

    def forward(self, e: torch.Tensor):  # type: ignore[no-untyped-def]
        u_f, s1, s2 = self.fast(e)
        u_s, s3, s4 = self.steady(e)
        u = u_f + u_s
        return (u, s1, s2, s3, s4) if self.return_spikes else u


# --- batched simulation for the evolution (numpy, same equations) --------------------------------


def unpack(theta: np.ndarray) -> tuple[np.ndarray, ...]:
    """[P, D] → w_enc [P, E], b_enc [P, E], W [P, E, H] (grid), b_hid [P, H]."""
    p = theta.shape[0]
    half = N_ENC // 2
    w = theta[:, :half]
    w_enc = np.concatenate([w, -w], axis=1)  # mirrored pairs (w, -w)
    o = half
    b_enc = theta[:, o : o + N_ENC]
    o += N_ENC
    w_hid = np.round(theta[:, o : o + N_ENC * N_HID].reshape(p, N_ENC, N_HID) * GRID) / GRID
    o += N_ENC * N_HID
    b_hid = theta[:, o : o + N_HID]
    return w_enc, b_enc, w_hid, b_hid


N_PARAMS = N_ENC // 2 + N_ENC + N_ENC * N_HID + N_HID


def features(theta: np.ndarray, errors: np.ndarray, adaptive: bool, lam: float) -> np.ndarray:
    """Leaky-integrated hidden spikes [P, T, H] of every candidate."""
    w_enc, b_enc, w_hid, b_hid = (a.astype(np.float32) for a in unpack(theta))
    pop = theta.shape[0]
    m1 = np.zeros((pop, N_ENC), np.float32)
    syn = np.zeros((pop, N_HID), np.float32)
    m2 = np.zeros_like(syn)
    tr = np.zeros_like(syn)
    f = np.zeros_like(syn)
    out = np.empty((pop, errors.size, N_HID), np.float32)
    for t, e in enumerate(errors):
        m1 = BETA_ENC * m1 + (e * w_enc + b_enc)
        s1 = (m1 > 1.0).astype(np.float32)
        m1 -= s1
        syn = ALPHA_HID * syn + np.einsum("pe,peh->ph", s1, w_hid) + b_hid
        m2 = BETA_HID * m2 + syn
        theta_h = 1.0 + 0.5 * tr if adaptive else 1.0
        s2 = (m2 > theta_h).astype(np.float32)
        m2 -= s2 * theta_h
        if adaptive:
            tr = 0.97 * tr + s2
        f = lam * f + (1 - lam) * s2
        out[:, t] = f
    return out


def fit_readout(feats: np.ndarray, target: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Least-squares readout per candidate: returns weights [P, H+1] and the MSE [P]."""
    t = target.size
    one = 1 - lam ** np.arange(1, t + 1, dtype=np.float64)  # the filtered constant input
    x = np.concatenate([feats, np.broadcast_to(one[None, :, None], feats.shape[:2] + (1,))], 2)
    x = x.astype(np.float64)
    xtx = np.einsum("pti,ptj->pij", x, x) + 1e-3 * np.eye(x.shape[2])
    xty = np.einsum("pti,t->pi", x, target.astype(np.float64))
    w = np.linalg.solve(xtx, xty[..., None])[..., 0]
    mse = ((np.einsum("pti,pi->pt", x, w) - target) ** 2).mean(axis=1)
    return w, mse


def evolve(
    errors: np.ndarray, target: np.ndarray, adaptive: bool, lam: float, gens: int, pop: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Separable CMA-ES-like (mu/mu_w, lambda)-ES; returns the best parameters, readout, history."""
    rng = np.random.default_rng(seed)
    half = N_ENC // 2
    mean = np.concatenate([
        np.geomspace(0.3, 4.0, half),  # encoding gains: fine to coarse error sensitivity
        np.where(np.arange(N_ENC) % 5 == 0, 0.35, rng.uniform(-0.3, 0.15, N_ENC)),  # some tonic
        rng.normal(0, 0.4, N_ENC * N_HID),
        rng.uniform(0.0, 0.3, N_HID),
    ])
    diag = np.ones(N_PARAMS)
    sigma = 0.15
    mu = pop // 2
    wts = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    wts /= wts.sum()
    mu_eff = 1 / (wts**2).sum()
    c_s = (mu_eff + 2) / (N_PARAMS + mu_eff + 5)
    d_s = 1 + c_s + 2 * max(0.0, np.sqrt((mu_eff - 1) / (N_PARAMS + 1)) - 1)
    c_mu = min(1.0, mu_eff / (N_PARAMS + 2) ** 1.5) * 20  # separable: faster variance learning
    chi = np.sqrt(N_PARAMS) * (1 - 1 / (4 * N_PARAMS) + 1 / (21 * N_PARAMS**2))
    p_s = np.zeros(N_PARAMS)
    best = (np.inf, mean.copy(), np.zeros(N_HID + 1))
    history = []
    for _ in range(gens):
        z = rng.standard_normal((pop, N_PARAMS))
        cand = mean + sigma * np.sqrt(diag) * z
        w, mse = fit_readout(features(cand, errors, adaptive, lam), target, lam)
        order = np.argsort(mse)
        if mse[order[0]] < best[0]:
            best = (float(mse[order[0]]), cand[order[0]].copy(), w[order[0]].copy())
        history.append(float(mse[order[0]]))
        zsel = z[order[:mu]]
        mean = mean + sigma * np.sqrt(diag) * (wts @ zsel)
        p_s = (1 - c_s) * p_s + np.sqrt(c_s * (2 - c_s) * mu_eff) * (wts @ zsel)
        sigma *= np.exp((c_s / d_s) * (np.linalg.norm(p_s) / chi - 1))
        diag = (1 - c_mu) * diag + c_mu * diag * (wts @ zsel**2)
    return best[1], best[2], history


def load(ctrl: SNNController, theta: np.ndarray, readout: np.ndarray) -> None:
    w_enc, b_enc, w_hid, b_hid = (torch.from_numpy(a[0].astype(np.float32))
                                  for a in unpack(theta[None]))
    with torch.no_grad():
        ctrl.w_enc.copy_(w_enc)
        ctrl.b_enc.copy_(b_enc)
        ctrl.fc.weight.copy_(w_hid.T)
        ctrl.fc.bias.copy_(b_hid)
        ctrl.readout.weight.copy_(torch.from_numpy(readout[None, :N_HID].astype(np.float32)))
        ctrl.readout.bias.fill_(float(readout[N_HID]))


# --- closed loop --------------------------------------------------------------------------------


def fly(controller, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Closed loop; ``controller(e, z) -> u``. Returns (altitude, u)."""
    plant = Blimp()
    zs, us = [], []
    for r in ref:
        u = float(controller(float(r - plant.z), plant.z))
        us.append(u)
        zs.append(plant.step(u))
    return np.array(zs), np.array(us)


def metrics(ref: np.ndarray, z: np.ndarray, hold: int) -> dict[str, float]:
    err = ref - z
    tails = [err[k + hold - hold // 5 : k + hold] for k in range(0, ref.size, hold)]
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "iae": float(np.sum(np.abs(err)) * DT),
        "ss_err": float(np.mean([np.abs(t).mean() for t in tails if t.size])),
    }


def torch_ctrl(net: nn.Module):  # type: ignore[no-untyped-def]
    enn.reset_states(net)

    def f(e: float, z: float) -> float:
        with torch.no_grad():
            out = net(torch.tensor([[e]], dtype=torch.float32))
        return float((out[0] if isinstance(out, tuple) else out).reshape(-1)[0])

    return f


def c_ctrl(m: edgec.CompiledModel):  # type: ignore[no-untyped-def]
    m.reset()

    def f(e: float, z: float) -> float:
        out = m.step(np.array([[e]], np.float32))
        return float((out[0] if isinstance(out, list) else out).reshape(-1)[0])

    return f


def pid_ctrl():  # type: ignore[no-untyped-def]
    pid = PID()
    return lambda e, z: sum(pid.terms(e, z))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few generations (CI)")
    ap.add_argument("--out", type=Path, default=None, help="write the C sources here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    gens, pop, train_steps = (4, 8, 600) if args.quick else (120, 16, 3000)
    hold = 600
    t0 = time.time()
    rng = np.random.default_rng(1)
    errors, fast_t, steady_t = fly_pid(setpoints(train_steps, rng, hold))
    net = BlimpSNN()
    for name, ctrl, target, adaptive, lam, seed in (
        ("fast", net.fast, fast_t, True, 0.8, 2),
        ("steady", net.steady, steady_t, False, 0.995, 3),
    ):
        theta, readout, hist = evolve(errors, target, adaptive, lam, gens, pop, seed)
        load(ctrl, theta, readout)
        print(f"evolved {name:6s}: imitation MSE {hist[0]:.4f} -> {hist[-1]:.4f} "
              f"({gens} generations x {pop})")
    print(f"evolution: {time.time() - t0:.1f} s")

    # compile; check the C's spike trains against PyTorch's on 1000 steps of recorded errors
    check = BlimpSNN(return_spikes=True)
    check.load_state_dict(net.state_dict())
    m_check = edgec.compile(check, example_inputs=(torch.zeros(1, 1),), name="blimp_snn_check")
    deploy = edgec.compile(net, example_inputs=(torch.zeros(1, 1),), name="blimp_snn")
    replay = fly_pid(setpoints(1000, np.random.default_rng(7), 250))[0]
    enn.reset_states(check)
    m_check.reset()
    n_spikes = 0
    for e in replay:
        with torch.no_grad():
            ref_out = check(torch.tensor([[e]]))
        c_out = m_check.step(np.array([[e]], np.float32))
        for a, b in zip(c_out[1:], ref_out[1:], strict=True):
            if not np.array_equal(a, b.numpy()):
                raise SystemExit("spike trains of the C and PyTorch differ")
        n_spikes += int(sum(float(b.sum()) for b in ref_out[1:]))
        np.testing.assert_allclose(c_out[0], ref_out[0].numpy(), rtol=1e-4, atol=1e-5)
    print(f"C vs PyTorch: spike trains equal for {replay.size} steps ({n_spikes} spikes), "
          f"u within 1e-4")
    rep = deploy.report()
    print(f"compiled: {rep['weight_bytes']} B weights, {rep['arena_bytes']} B arena, "
          f"{rep['state_bytes']} B state, "
          f"{sum(n.op == 'EventDense' for n in deploy.graph.nodes)} event-driven layers")
    if args.out:
        deploy.write(args.out)

    test_steps = 2400 if args.quick else 4800
    ref = setpoints(test_steps, np.random.default_rng(11), hold)
    fast_only = BlimpSNN()
    fast_only.load_state_dict(net.state_dict())
    with torch.no_grad():
        fast_only.steady.readout.weight.zero_()
        fast_only.steady.readout.bias.zero_()
    rows = {
        "PID": fly(pid_ctrl(), ref)[0],
        "SNN fast only": fly(torch_ctrl(fast_only), ref)[0],
        "SNN fast + steady (PyTorch)": fly(torch_ctrl(net), ref)[0],
        "SNN fast + steady (C)": fly(c_ctrl(deploy), ref)[0],
    }
    table = {k: metrics(ref, z, hold) for k, z in rows.items()}
    print(f"\nclosed loop, {test_steps * DT:.0f} s of set-point steps:")
    print("| controller | RMSE (m) | IAE (m s) | steady-state error (m) |\n|---|---|---|---|")
    for k, v in table.items():
        print(f"| {k} | {v['rmse']:.3f} | {v['iae']:.2f} | {v['ss_err']:.3f} |")
    print(f"total: {time.time() - t0:.1f} s")
    return table


if __name__ == "__main__":
    main()
