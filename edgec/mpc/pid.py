"""The PID baseline, tuned by the IMC rules on each plant's own model.

Tuning (internal model control, Rivera, Morari & Skogestad 1986; Skogestad's SIMC 2003):

* mass-spring-damper, G(s) = 1 / (m s^2 + c s + k): the IMC-PID for a second-order process with
  closed-loop time constant lambda cancels the plant exactly:
  Kp = c / lambda, Ki = k / lambda, Kd = m / lambda (so C G = 1 / (lambda s)).
* soft actuator, linearised at theta = 0 with both tendons at the bias b = 0.5 and the
  antagonistic mix u1 = b + v, u2 = b - v (net torque 4 r F_max b v, linear in v):
  G(s) = K / ((tau1 s + 1)(tau2 s + 1)), K = 4 r F_max b / k_eff, k_eff = k1 + 2 k_cc F_max b^2,
  tau1 = c / k_eff, tau2 = I / c. SIMC: Kp = tau1 / (K (lambda + theta)), Ti = min(tau1,
  4 (lambda + theta)), Td = tau2, with theta = dt / 2 (the zero-order hold's delay).

lambda is the one free knob of both rules. ``tune_pid`` picks it from a grid
(dt x 1, 2, 4, ..., 128) by the tracking RMSE the PID reaches on the simulated path itself: the
PID's best case on that path, so the comparison with the MPC is conservative.

The PID runs on the same command limits as the MPC (box and rate), with the derivative on the
measurement through a first-order filter (Td / 10), and conditional integration (anti-windup).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgec.errors import EdgecError
from edgec.mpc.plants import MassSpringDamper, Plant, SoftActuator

LAMBDA_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
SOFT_BIAS = 0.5


@dataclass
class PID:
    kp: float
    ki: float
    kd: float
    dt: float
    v_min: float
    v_max: float
    dv_max: float
    #: maps the scalar PID output v to the plant's command vector
    mix: Callable[[float], np.ndarray] = field(default=lambda v: np.array([v]))
    lam: float = 0.0
    #: time constant of the derivative's first-order filter (s)
    t_filter: float = 0.0
    v: float = 0.0
    integ: float = 0.0
    d_filt: float = 0.0
    e_prev: float | None = None

    def reset(self, v0: float = 0.0) -> None:
        self.v = v0
        self.integ = v0
        self.d_filt = 0.0
        self.e_prev = None

    def step(self, r: float, y: float) -> np.ndarray:
        e = r - y
        if self.e_prev is None:
            self.e_prev = e
        alpha = self.dt / (self.t_filter + self.dt)
        self.d_filt += alpha * ((e - self.e_prev) / self.dt - self.d_filt)
        self.e_prev = e
        v_unsat = self.kp * e + self.integ + self.ki * self.dt * e + self.kd * self.d_filt
        lo = max(self.v_min, self.v - self.dv_max)
        hi = min(self.v_max, self.v + self.dv_max)
        v = min(max(v_unsat, lo), hi)
        if v == v_unsat or (v_unsat > hi and e < 0) or (v_unsat < lo and e > 0):
            self.integ += self.ki * self.dt * e  # conditional integration
        self.v = v
        return self.mix(v)


def _soft_mix(v: float) -> np.ndarray:
    return np.clip(np.array([SOFT_BIAS + v, SOFT_BIAS - v]), 0.0, 1.0)


def imc_pid(plant: Plant, lam: float, du_max: float) -> PID:
    """The IMC/SIMC PID for ``plant`` with closed-loop time constant ``lam``."""
    if isinstance(plant, MassSpringDamper):
        return PID(
            kp=plant.c / lam, ki=plant.k / lam, kd=plant.m / lam, dt=plant.dt,
            v_min=plant.u_min[0], v_max=plant.u_max[0], dv_max=du_max, lam=lam,
        )
    if isinstance(plant, SoftActuator):
        b = SOFT_BIAS
        k_eff = plant.k1 + 2 * plant.k_cc * plant.f_max * b * b
        gain = 4 * plant.radius * plant.f_max * b / k_eff
        tau1 = plant.damping / k_eff
        tau2 = plant.inertia / plant.damping
        theta = plant.dt / 2
        kp = tau1 / (gain * (lam + theta))
        ti = min(tau1, 4 * (lam + theta))
        return PID(
            kp=kp, ki=kp / ti, kd=kp * tau2, dt=plant.dt, v_min=-1.0, v_max=1.0,
            dv_max=du_max, mix=_soft_mix, lam=lam,
        )
    raise EdgecError(f"no PID tuning rule for plant '{plant.name}'")


def run_pid(
    pid: PID, plant: Plant, ref_next: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closed loop from the plant's rest state. ``ref_next[t]`` is the reference for y(t+1);
    the PID acts on e(t) = ref(t) - y(t) with ref(t) = ref_next[t-1]. Returns (y, u) per tick
    (y[t] measured after applying u[t])."""
    plant.reset()
    pid.reset(0.0)
    y = plant.output()
    ys, us = [], []
    prev_ref = float(y[0])
    for r in ref_next:
        u = pid.step(prev_ref, float(y[0]))
        y = plant.step(u)
        ys.append(y.copy())
        us.append(np.asarray(u, np.float64).copy())
        prev_ref = float(r[0])
    return np.array(ys), np.array(us)


def tune_pid(plant: Plant, ref_next: np.ndarray, du_max: float) -> PID:
    """IMC/SIMC PID with the grid lambda of least RMSE on this path (see the module doc)."""
    best: tuple[float, PID] | None = None
    for mult in LAMBDA_GRID:
        pid = imc_pid(plant, mult * plant.dt, du_max)
        ys, _ = run_pid(pid, plant, ref_next)
        err = ys[:, 0] - ref_next[:, 0]
        rmse = float(np.sqrt(np.mean(err**2))) if np.all(np.isfinite(err)) else float("inf")
        if best is None or rmse < best[0]:
            best = (rmse, pid)
    assert best is not None
    return best[1]
