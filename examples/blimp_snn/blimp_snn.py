"""Evolved spiking altitude controllers for a blimp, compiled to C with edgec.

* Plant (dt = 0.01 s, semi-implicit Euler): z'' = sat(u, U_MIN, U_MAX) - G_NET - DRAG·z'|z'|:
  a blimp heavier than air (non-neutral buoyancy G_NET), quadratic drag, thrust limits.
* Target: a PID (P on e, I on ∫e, D on the filtered measurement rate) tracking random set-points.
* Controller input x = [e, ė, ∫e]: the error, its rate on the measurement (-Δz/dt) and the
  accumulated error, computed by the flight code (`Sensing`) as the PID computes them.
* Two complementary SNN controllers, 81 neurons each (40 encoding LIF neurons in mirrored pairs
  (w, -w) on one input each, 40 current-based hidden LIF neurons with subtractive reset, one
  leaky-integrator output): the *fast* one (encoding pairs on e and ė, adaptive thresholds,
  λ = 0.8) imitates the PID's P + D terms, the *steady-state* one (encoding pairs on ∫e, λ = 0.95)
  its I term, which holds the buoyancy compensation. u = u_fast + u_steady.
* Their parameters (encoding gains and biases, hidden weights and biases: 1700 per controller)
  are evolved with a separable CMA-ES-like (mu/mu_w, lambda)-ES (rank-mu variance update,
  cumulative step-size adaptation): fast on PID flights over steps and ramps, steady on a sweep
  of ∫e over [-1.5, 4.5] m s (wider than flights visit, so its map stays monotonic); each target
  passed through the controller's own output filter. Each candidate's linear readout is fitted by
  least squares inside its fitness evaluation (Lamarckian readout). Hidden weights live on a 2^-8
  grid, so spike-driven sums are exact in any order.
* The combined controller is compiled with edgec (event-driven hidden and readout layers,
  bit-packed spikes); the C's spike trains must equal PyTorch's for 1000 steps of inputs recorded
  in PyTorch's closed loop (open loop: both see the same inputs); closed-loop tracking of PID, the
  fast controller alone, and both (PyTorch and C) is reported.

    python examples/blimp_snn/blimp_snn.py            # about 30 s on 2 cores
    python examples/blimp_snn/blimp_snn.py --quick    # a few seconds (CI)
    python examples/blimp_snn/blimp_snn.py --ray      # generations on Ray (edgec[scale])
    python examples/blimp_snn/blimp_snn.py --population 4096 --generations 30
                                                      # GPU when present, else CPU threads
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
N_IN, E_IDX, RATE_IDX, INT_IDX = 3, 0, 1, 2  # controller input x = [e, ė, ∫e]
N_ENC, N_HID = 40, 40
GRID = 256.0  # hidden weights are multiples of 1/GRID
BETA_ENC, BETA_HID, ALPHA_HID = 0.8, 0.9, 0.5
ADAPT_DECAY, ADAPT_ADD = 0.97, 0.5
GENS, POP, TRAIN_STEPS = 120, 16, 3000  # the full run's evolution budget
W_DIAG, W_NOISE = 0.45, 0.1  # initial hidden weights: a noisy copy of the encoding layer
GAIN_RANGE = {E_IDX: (0.2, 2.0), RATE_IDX: (0.2, 2.0), INT_IDX: (0.2, 2.0)}  # initial
INT_RANGE = (-1.5, 4.5)  # m s of accumulated error the steady controller is trained on


# --- plant, sensing and PID -----------------------------------------------------------------------


@dataclass
class Blimp:
    z: float = 0.0
    v: float = 0.0

    def step(self, u: float) -> float:
        a = min(max(u, U_MIN), U_MAX) - G_NET - DRAG * self.v * abs(self.v)
        self.v += DT * a
        self.z += DT * self.v
        return self.z


class Sensing:
    """The controller inputs from set-point and altitude: x = [e, ė, ∫e] with e = r - z, ė the
    error rate on the measurement (-Δz/dt: no kick at set-point steps, like the PID's D) and ∫e
    the accumulated error (Σ e·dt, as the PID's I). Three lines of C on the flight computer."""

    def __init__(self) -> None:
        self.integral = 0.0
        self.z_prev: float | None = None

    def __call__(self, r: float, z: float) -> np.ndarray:
        e = r - z
        rate = 0.0 if self.z_prev is None else -(z - self.z_prev) / DT
        self.z_prev = z
        self.integral += e * DT
        return np.array([[e, rate, self.integral]], np.float32)


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
    """Random altitude steps in [0, 3] m held ``hold`` ticks each."""
    levels = rng.uniform(0.0, 3.0, size=steps // hold + 1)
    return np.repeat(levels, hold)[:steps]


def training_reference(steps: int, rng: np.random.Generator, segment: int = 300) -> np.ndarray:
    """Steps and ramps (alternately) between random levels in [0, 3] m."""
    out, level = [], 0.0
    for k in range(steps // segment + 1):
        new = float(rng.uniform(0.0, 3.0))
        if k % 2:  # ramp over the first two thirds, then hold
            n = 2 * segment // 3
            out.append(np.concatenate([np.linspace(level, new, n), np.full(segment - n, new)]))
        else:
            out.append(np.full(segment, new))
        level = new
    return np.concatenate(out)[:steps]


def integral_sweep(steps: int, rng: np.random.Generator) -> np.ndarray:
    """Inputs [T, 3] whose ∫e wanders piecewise linearly through [-1, 4] m s (e = ė = 0): the
    steady controller reads ∫e only, and this covers more of it than the flights visit."""
    out, level = [], 0.0
    while sum(len(o) for o in out) < steps:
        new = float(rng.uniform(INT_RANGE[0], INT_RANGE[1]))
        speed = rng.uniform(0.05, 1.5)  # m: ∫e moves at the rate of an error of that size
        out.append(np.linspace(level, new, 2 + int(abs(new - level) / (speed * DT))))
        out.append(np.full(int(rng.integers(0, 200)), new))
        level = new
    x = np.zeros((steps, N_IN), np.float32)
    x[:, INT_IDX] = np.concatenate(out)[:steps]
    return x


def leaky(signal: np.ndarray, lam: float) -> np.ndarray:
    """y ← λ·y + (1-λ)·signal: what an output neuron with that λ makes of the signal."""
    out, y = np.empty_like(signal), 0.0
    for t, v in enumerate(signal):
        y = lam * y + (1 - lam) * float(v)
        out[t] = y
    return out


def fly_pid(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed loop with the PID: inputs [T, 3], fast target (P + D) and steady target (I)."""
    plant, pid, sense = Blimp(), PID(), Sensing()
    xs, fast, steady = [], [], []
    for r in ref:
        xs.append(sense(float(r), plant.z)[0])
        p, i, d = pid.terms(float(r - plant.z), plant.z)
        fast.append(p + d)
        steady.append(i)
        plant.step(p + i + d)
    return np.array(xs, np.float32), np.array(fast, np.float32), np.array(steady, np.float32)


# --- the controllers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One controller: the input each mirrored encoding pair reads, its hidden neurons, its output
    filter and the seed of its evolution."""

    name: str
    sources: tuple[int, ...]  # per mirrored pair: 0 = e, 1 = ė, 2 = ∫e
    adaptive: bool  # adaptive hidden thresholds
    lam: float  # output leaky integrator
    seed: int


HALF = N_ENC // 2
FAST = Spec("fast", (E_IDX,) * (HALF // 2) + (RATE_IDX,) * (HALF - HALF // 2), True, 0.8, 2)
STEADY = Spec("steady", (INT_IDX,) * HALF, False, 0.95, 3)


def encoder_sources(spec: Spec) -> np.ndarray:
    """The input index of every encoding neuron: pair k is neurons k and k + N_ENC/2."""
    return np.array(spec.sources * 2, np.int64)


class SNNController(nn.Module):
    """x [1, 3] → encoding LIF (40, mirrored pairs) → Linear → hidden LIF (40) → Linear → leaky
    integrator. ``route`` is a fixed one-hot matrix that hands each encoding neuron its input (a
    product by 1 and sums of zeros: exact in any order, so the C's currents equal PyTorch's)."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.route = nn.Linear(N_IN, N_ENC, bias=False)
        with torch.no_grad():
            self.route.weight.zero_()
            self.route.weight[torch.arange(N_ENC), torch.from_numpy(encoder_sources(spec))] = 1.0
        self.register_buffer("w_enc", torch.zeros(N_ENC))
        self.register_buffer("b_enc", torch.zeros(N_ENC))
        self.enc = enn.LIF(N_ENC, beta=BETA_ENC, threshold=1.0)
        self.fc = nn.Linear(N_ENC, N_HID)
        self.hid = enn.LIF(
            N_HID, beta=BETA_HID, alpha=ALPHA_HID, threshold=1.0,
            adapt_decay=ADAPT_DECAY if spec.adaptive else None, adapt_add=ADAPT_ADD,
        )
        self.readout = nn.Linear(N_HID, 1)
        self.out = enn.LeakyIntegrator(1, lam=spec.lam)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s_enc = self.enc(self.route(x) * self.w_enc + self.b_enc)
        s_hid = self.hid(self.fc(s_enc))
        return self.out(self.readout(s_hid)), s_enc, s_hid


class BlimpSNN(nn.Module):
    """The two complementary controllers; x = [e, ė, ∫e] → u (and, for checking, all spikes)."""

    def __init__(self, return_spikes: bool = False):
        super().__init__()
        self.fast = SNNController(FAST)
        self.steady = SNNController(STEADY)
        self.return_spikes = return_spikes

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        u_f, s1, s2 = self.fast(x)
        u_s, s3, s4 = self.steady(x)
        u = u_f + u_s
        return (u, s1, s2, s3, s4) if self.return_spikes else u


# --- batched simulation for the evolution (numpy, same equations) --------------------------------


def unpack(theta: np.ndarray) -> tuple[np.ndarray, ...]:
    """[P, D] → w_enc [P, E], b_enc [P, E], W [P, E, H] (grid), b_hid [P, H]."""
    p = theta.shape[0]
    w = theta[:, :HALF]
    w_enc = np.concatenate([w, -w], axis=1)  # mirrored pairs (w, -w)
    o = HALF
    b_enc = theta[:, o : o + N_ENC]
    o += N_ENC
    w_hid = np.round(theta[:, o : o + N_ENC * N_HID].reshape(p, N_ENC, N_HID) * GRID) / GRID
    o += N_ENC * N_HID
    b_hid = theta[:, o : o + N_HID]
    return w_enc, b_enc, w_hid, b_hid


N_PARAMS = HALF + N_ENC + N_ENC * N_HID + N_HID


def features(theta: np.ndarray, inputs: np.ndarray, spec: Spec) -> np.ndarray:
    """Leaky-integrated hidden spikes [P, T, H] of every candidate for inputs [T, 3]."""
    w_enc, b_enc, w_hid, b_hid = (a.astype(np.float32) for a in unpack(theta))
    routed = inputs[:, encoder_sources(spec)].astype(np.float32)  # [T, E]
    pop, lam = theta.shape[0], np.float32(spec.lam)
    m1 = np.zeros((pop, N_ENC), np.float32)
    syn = np.zeros((pop, N_HID), np.float32)
    m2 = np.zeros_like(syn)
    tr = np.zeros_like(syn)
    f = np.zeros_like(syn)
    out = np.empty((pop, len(routed), N_HID), np.float32)
    for t, xe in enumerate(routed):
        m1 = BETA_ENC * m1 + (xe * w_enc + b_enc)
        s1 = (m1 > 1.0).astype(np.float32)
        m1 -= s1
        syn = ALPHA_HID * syn + np.einsum("pe,peh->ph", s1, w_hid) + b_hid
        m2 = BETA_HID * m2 + syn
        theta_h = 1.0 + ADAPT_ADD * tr if spec.adaptive else 1.0
        s2 = (m2 > theta_h).astype(np.float32)
        m2 -= s2 * theta_h
        if spec.adaptive:
            tr = ADAPT_DECAY * tr + s2
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


def initial_mean(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """Encoding gains from fine to coarse per input, assorted biases (some tonic), hidden
    weights a noisy copy of the encoding layer (rates pass through unsaturated), small biases."""
    src, counts = np.unique(spec.sources, return_counts=True)
    gains = np.concatenate([np.geomspace(*GAIN_RANGE[k], n)
                            for k, n in zip(src, counts, strict=True)])
    return np.concatenate([
        gains,
        np.where(np.arange(N_ENC) % 5 == 0, 0.35, rng.uniform(-0.3, 0.15, N_ENC)),
        (np.eye(N_ENC, N_HID) * W_DIAG + rng.normal(0, W_NOISE, (N_ENC, N_HID))).ravel(),
        rng.uniform(-0.05, 0.1, N_HID),
    ])


def fitness(cand: np.ndarray, inputs: np.ndarray, target: np.ndarray,
            spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's least-squares readout and imitation MSE (one row per candidate)."""
    return fit_readout(features(cand, inputs, spec), target, spec.lam)


def evolve(
    inputs: np.ndarray, target: np.ndarray, spec: Spec, gens: int, pop: int,
    ray: object = None, device: str = "numpy",
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Separable CMA-ES-like (mu/mu_w, lambda)-ES; returns the best parameters, readout, history.
    ``ray``: evaluate each generation as Ray tasks (edgec.scale.evolve.ray_batch, one slice per
    worker); the candidates come from the same seeded generator, so the result is the same.
    ``device`` cpu, cuda or auto: each generation in compiled code (population.cu: one candidate
    per GPU thread, or the host build of the same code on CPU threads); numpy: ``fitness``."""
    if device != "numpy":
        from population import PopulationFitness

        evaluate = PopulationFitness(inputs, target, spec, device)
    elif ray is None:
        def evaluate(cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return fitness(cand, inputs, target, spec)
    else:
        from edgec.scale.evolve import ray_batch
        from edgec.scale.session import cluster_cpus

        evaluate = ray_batch(ray, fitness, cluster_cpus(ray), inputs=inputs, target=target,
                             spec=spec)
    rng = np.random.default_rng(spec.seed)
    mean = initial_mean(spec, rng)
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
        w, mse = evaluate(cand)
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


def fly(controller, ref: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Closed loop; ``controller(r, z) -> u``. Returns the altitude."""
    plant = Blimp()
    return np.array([plant.step(float(controller(float(r), plant.z))) for r in ref])


def metrics(ref: np.ndarray, z: np.ndarray, hold: int) -> dict[str, float]:
    err = ref - z
    tails = [err[k + hold - hold // 5 : k + hold] for k in range(0, ref.size, hold)]
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "iae": float(np.sum(np.abs(err)) * DT),
        "ss_err": float(np.mean([np.abs(t).mean() for t in tails if t.size])),
    }


def snn_ctrl(step, record: list[np.ndarray] | None = None):  # type: ignore[no-untyped-def]
    """A controller of (r, z) from ``step(x) -> u``: senses x = [e, ė, ∫e] (recorded if asked)."""
    sense = Sensing()

    def f(r: float, z: float) -> float:
        x = sense(r, z)
        if record is not None:
            record.append(x[0])
        return step(x)

    return f


def torch_step(net: nn.Module):  # type: ignore[no-untyped-def]
    enn.reset_states(net)

    def f(x: np.ndarray) -> float:
        with torch.no_grad():
            return float(net(torch.from_numpy(x)).reshape(-1)[0])

    return f


def c_step(m: edgec.CompiledModel):  # type: ignore[no-untyped-def]
    m.reset()
    return lambda x: float(np.asarray(m.step(x)).reshape(-1)[0])


def pid_ctrl():  # type: ignore[no-untyped-def]
    pid = PID()
    return lambda r, z: sum(pid.terms(r - z, z))


def check_c_against_torch(net: BlimpSNN, inputs: np.ndarray) -> int:
    """Open loop on a recorded input sequence: the C's spike trains (all four layers) must equal
    PyTorch's at every step, u within 1e-4. Returns the number of spikes compared."""
    check = BlimpSNN(return_spikes=True)
    check.load_state_dict(net.state_dict())
    m_check = edgec.compile(check, example_inputs=(torch.zeros(1, N_IN),), name="blimp_snn_check")
    enn.reset_states(check)
    m_check.reset()
    n_spikes = 0
    for x in inputs:
        with torch.no_grad():
            ref_out = check(torch.from_numpy(x[None]))
        c_out = m_check.step(x[None])
        for a, b in zip(c_out[1:], ref_out[1:], strict=True):
            if not np.array_equal(a, b.numpy()):
                raise SystemExit("spike trains of the C and PyTorch differ")
        n_spikes += int(sum(float(b.sum()) for b in ref_out[1:]))
        np.testing.assert_allclose(c_out[0], ref_out[0].numpy(), rtol=1e-4, atol=1e-5)
    return n_spikes


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few generations (CI)")
    ap.add_argument("--out", type=Path, default=None, help="write the C sources here")
    ap.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="evaluate the generations on Ray (edgec[scale]): this machine's cores, "
                    "or a cluster at ADDRESS (ray://HOST:PORT or auto); same result")
    ap.add_argument("--population", type=int, default=None, metavar="N",
                    help=f"candidates per generation (default {POP}; e.g. 4096 with --device)")
    ap.add_argument("--generations", type=int, default=None, metavar="G",
                    help=f"generations (default {GENS})")
    ap.add_argument("--device", choices=("numpy", "cpu", "cuda", "auto"), default=None,
                    help="where each generation is evaluated: numpy (default), or compiled "
                    "population.cu on the GPU (cuda), the CPU's threads (cpu) or the GPU when "
                    "one is present (auto, the default with --population)")
    args = ap.parse_args(argv)
    device = args.device or ("auto" if args.population else "numpy")
    ray = None
    if args.ray:
        from edgec.scale.session import start

        ray, _ = start(None if args.ray == "local" else args.ray)
    torch.manual_seed(0)
    gens, pop, train_steps = (4, 8, 600) if args.quick else (GENS, POP, TRAIN_STEPS)
    gens, pop = args.generations or gens, args.population or pop
    if device != "numpy":
        from population import pick_device

        device = pick_device(device)
        print(f"evaluating {pop} candidates per generation on the {device.upper()} "
              f"(population.cu)")
    hold = 600
    t0 = time.time()
    # fast: P + D along PID flights (steps and ramps); steady: I = KI·∫e over a sweep of ∫e;
    # both targets as their output neuron (λ) passes them: that lag is the design's, evolution
    # cannot remove it, and leaving it in the target would drown the rest of the error
    flights, pd, _ = fly_pid(training_reference(train_steps, np.random.default_rng(1)))
    fast_t = leaky(pd, FAST.lam)
    sweep = integral_sweep(train_steps, np.random.default_rng(4))
    steady_t = leaky(KI * sweep[:, INT_IDX], STEADY.lam)
    net = BlimpSNN()
    for spec, ctrl, inputs, target in ((FAST, net.fast, flights, fast_t),
                                       (STEADY, net.steady, sweep, steady_t)):
        theta, readout, hist = evolve(inputs, target, spec, gens, pop, ray, device)
        load(ctrl, theta, readout)
        print(f"evolved {spec.name:6s}: imitation MSE {hist[0]:.4f} -> {min(hist):.4f} "
              f"({gens} generations x {pop})")
    print(f"evolution: {time.time() - t0:.1f} s")

    test_steps = 2400 if args.quick else 4800
    ref = setpoints(test_steps, np.random.default_rng(11), hold)
    fast_only = BlimpSNN()
    fast_only.load_state_dict(net.state_dict())
    with torch.no_grad():
        fast_only.steady.readout.weight.zero_()
        fast_only.steady.readout.bias.zero_()
    recorded: list[np.ndarray] = []
    z_snn = fly(snn_ctrl(torch_step(net), recorded), ref)

    # the C's spike trains vs PyTorch's, both fed the inputs recorded in PyTorch's closed loop
    n_spikes = check_c_against_torch(net, np.array(recorded[:1000]))
    print(f"C vs PyTorch: spike trains equal for 1000 steps ({n_spikes} spikes), u within 1e-4")
    deploy = edgec.compile(net, example_inputs=(torch.zeros(1, N_IN),), name="blimp_snn")
    rep = deploy.report()
    print(f"compiled: {rep['weight_bytes']} B weights, {rep['arena_bytes']} B arena, "
          f"{rep['state_bytes']} B state, "
          f"{sum(n.op == 'EventDense' for n in deploy.graph.nodes)} event-driven layers")
    if args.out:
        deploy.write(args.out)

    rows = {
        "PID": fly(pid_ctrl(), ref),
        "SNN fast only": fly(snn_ctrl(torch_step(fast_only)), ref),
        "SNN fast + steady (PyTorch)": z_snn,
        "SNN fast + steady (C)": fly(snn_ctrl(c_step(deploy)), ref),
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
