"""Plant models for closed-loop simulation (Python, integrated with RK4 between control ticks).

Mass-spring-damper (``msd``), the benchmark of the soft-composites paper's controller::

    m x'' + c x' + k x = F            y = x (position, m), u = F (force, N)
    m = 1 kg, c = 0.8 N s/m, k = 4 N/m   (natural frequency 2 rad/s, damping ratio 0.2)
    F in [-20, 20] N

Tendon-driven soft actuator (``soft-actuator``): a silicone finger bent by two antagonistic
tendons, y = bending angle theta (rad), u = (u1, u2) normalised motor commands in [0, 1]::

    F_i   = F_max u_i^2                                  tendon tension (N), i = 1, 2
    I theta'' = r (F1 - F2) - (k1 + k_cc (F1 + F2)) theta - k3 theta^3 - c theta'
                - m g l cos(theta)
    I = 2e-5 kg m^2, c = 0.02 N m s, k1 = 0.08 N m, k3 = 0.05 N m, k_cc = 0.002 m,
    F_max = 8 N, r = 0.012 m, m g l = 0.0098 N m (finger mounted horizontally)

The silicone is heavily damped (poles near -4 and -1000 rad/s): quasi-static on the scale of a
100 Hz control tick, stiffening with angle and with co-contraction (k_cc), and gravity pulls it
down by 0.12 rad at rest.

``msd_narx_module`` and ``msd_dynamics_module`` build exact (zero-order-hold) discrete models of
the mass-spring-damper as torch modules: a NARX predictor y(t+1) = f(u(t), u(t-1), y(t),
y(t-1)) and a one-step state model x' = A x + B u.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgec.errors import EdgecError

Deriv = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _rk4(f: Deriv, x: np.ndarray, u: np.ndarray, dt: float, substeps: int) -> np.ndarray:
    h = dt / substeps
    for _ in range(substeps):
        k1 = f(x, u)
        k2 = f(x + 0.5 * h * k1, u)
        k3 = f(x + 0.5 * h * k2, u)
        k4 = f(x + h * k3, u)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@dataclass
class Plant:
    """A continuous-time plant sampled every ``dt`` seconds with the command held (ZOH)."""

    dt: float = 0.01
    substeps: int = 10
    x: np.ndarray = field(default_factory=lambda: np.zeros(2))

    name: ClassVar[str] = "plant"
    n_u: ClassVar[int] = 1
    n_y: ClassVar[int] = 1
    u_min: ClassVar[tuple[float, ...]] = (-1.0,)
    u_max: ClassVar[tuple[float, ...]] = (1.0,)
    #: what the output and the commands are, with units (plot axes)
    y_label: ClassVar[str] = "output"
    u_label: ClassVar[str] = "command"

    def deriv(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def reset(self, x0: np.ndarray | None = None) -> None:
        self.x = np.zeros(2) if x0 is None else np.asarray(x0, np.float64).copy()

    def output(self) -> np.ndarray:
        return self.x[:1].copy()

    def step(self, u: np.ndarray) -> np.ndarray:
        uu = np.clip(np.asarray(u, np.float64).reshape(-1), self.u_min, self.u_max)
        self.x = _rk4(self.deriv, self.x, uu, self.dt, self.substeps)
        return self.output()


@dataclass
class MassSpringDamper(Plant):
    m: float = 1.0
    c: float = 0.8
    k: float = 4.0

    name = "msd"
    u_min = (-20.0,)
    u_max = (20.0,)
    y_label = "position (m)"
    u_label = "force (N)"

    def deriv(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.array([x[1], (u[0] - self.c * x[1] - self.k * x[0]) / self.m])

    def continuous(self) -> tuple[np.ndarray, np.ndarray]:
        a = np.array([[0.0, 1.0], [-self.k / self.m, -self.c / self.m]])
        b = np.array([[0.0], [1.0 / self.m]])
        return a, b

    def discrete(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact zero-order-hold discretisation (Ad, Bd) at ``dt``."""
        a, b = self.continuous()
        aug = np.zeros((3, 3))
        aug[:2, :2] = a
        aug[:2, 2:] = b
        e = expm(aug * self.dt)
        return e[:2, :2], e[:2, 2:]

    def narx_coefficients(self) -> tuple[float, float, float, float]:
        """y(t+1) = a1 y(t) + a2 y(t-1) + b1 u(t) + b2 u(t-1) (exact at the samples)."""
        ad, bd = self.discrete()
        c = np.array([[1.0, 0.0]])
        tr = float(np.trace(ad))
        a1, a2 = tr, -float(np.linalg.det(ad))
        b1 = float((c @ bd)[0, 0])
        b2 = -float((c @ (tr * np.eye(2) - ad) @ bd)[0, 0])
        return a1, a2, b1, b2


@dataclass
class SoftActuator(Plant):
    inertia: float = 2e-5
    damping: float = 0.02
    k1: float = 0.08
    k3: float = 0.05
    k_cc: float = 0.002
    f_max: float = 8.0
    radius: float = 0.012
    mgl: float = 0.0098

    name = "soft-actuator"
    n_u = 2
    u_min = (0.0, 0.0)
    u_max = (1.0, 1.0)
    y_label = "joint angle (rad)"
    u_label = "tendon drive (0..1)"
    substeps: int = 10  # RK4 at h = 1 ms: stable and accurate for the pole at -1000 rad/s

    def tensions(self, u: np.ndarray) -> tuple[float, float]:
        return self.f_max * float(u[0]) ** 2, self.f_max * float(u[1]) ** 2

    def deriv(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        f1, f2 = self.tensions(u)
        th, om = x
        torque = (
            self.radius * (f1 - f2)
            - (self.k1 + self.k_cc * (f1 + f2)) * th
            - self.k3 * th**3
            - self.damping * om
            - self.mgl * np.cos(th)
        )
        return np.array([om, torque / self.inertia])

    def reset(self, x0: np.ndarray | None = None) -> None:
        if x0 is None:  # rest with both tendons slack
            th = 0.0
            for _ in range(50):  # Newton on k1 th + k3 th^3 + mgl cos th = 0
                f = self.k1 * th + self.k3 * th**3 + self.mgl * np.cos(th)
                df = self.k1 + 3 * self.k3 * th**2 - self.mgl * np.sin(th)
                th -= f / df
            x0 = np.array([th, 0.0])
        super().reset(x0)


PLANTS: dict[str, type[Plant]] = {"msd": MassSpringDamper, "soft-actuator": SoftActuator}


def make_plant(name: str, dt: float) -> Plant:
    if name not in PLANTS:
        raise EdgecError(f"unknown plant '{name}' (known: {', '.join(PLANTS)})")
    p = PLANTS[name](dt=dt)
    p.reset()
    return p


def expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring with a Taylor series (small matrices)."""
    norm = float(np.abs(a).sum(axis=1).max(initial=0.0))
    s = max(0, int(np.ceil(np.log2(norm))) + 1) if norm > 0.5 else 0
    m = a / (2**s)
    out = np.eye(a.shape[0])
    term = np.eye(a.shape[0])
    for k in range(1, 20):
        term = term @ m / k
        out = out + term
    for _ in range(s):
        out = out @ out
    return out


def msd_narx_module(plant: MassSpringDamper) -> Any:
    """torch Linear(4, 1): z = [u(t), u(t-1), y(t), y(t-1)] -> y(t+1), exact at the samples."""
    import torch

    a1, a2, b1, b2 = plant.narx_coefficients()
    lin = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[b1, b2, a1, a2]], dtype=torch.float32))
    return lin


def msd_dynamics_module(plant: MassSpringDamper) -> Any:
    """torch Linear(3, 2): z = [x, v, u] -> [x', v'] (zero-order hold, exact)."""
    import torch

    ad, bd = plant.discrete()
    lin = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.hstack([ad, bd]), dtype=torch.float32))
    return lin
