"""A numpy reference of the C runtime's solver (firmware/mpc/edgec_mpc.c), step for step.

Used by the tests to check the C controller: same warm start, same projection, same damped
Newton / Levenberg-Marquardt steps, same acceptance rules, in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgec.mpc.config import MpcConfig

#: z -> (model output, Jacobian rows = outputs, columns = differentiated inputs)
ModelFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

TRIES = 4
FLAG_CONVERGED = 0x001
FLAG_STATIONARY = 0x002
FLAG_FALLBACK = 0x004
FLAG_NONFINITE_INPUT = 0x008
FLAG_NONFINITE_MODEL = 0x010
FLAG_NO_CONVERGE = 0x020
FLAG_U_LIMIT = 0x040
FLAG_RATE_LIMIT = 0x080
FLAG_SINGULAR = 0x100

FLAG_NAMES = {
    FLAG_CONVERGED: "converged",
    FLAG_STATIONARY: "stationary",
    FLAG_FALLBACK: "fallback",
    FLAG_NONFINITE_INPUT: "nonfinite_input",
    FLAG_NONFINITE_MODEL: "nonfinite_model",
    FLAG_NO_CONVERGE: "no_converge",
    FLAG_U_LIMIT: "u_limit",
    FLAG_RATE_LIMIT: "rate_limit",
    FLAG_SINGULAR: "singular",
}


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


@dataclass
class Report:
    iterations: int = 0
    evaluations: int = 0
    residual: float = 0.0
    cost: float = 0.0
    flags: int = 0


def _damped_solve(a: np.ndarray, g: np.ndarray, lam: float) -> np.ndarray | None:
    diag = np.diag(a).copy()
    floor = 1e-6 * max(float(diag.max()), 0.0)
    m = a.copy()
    m[np.diag_indices_from(m)] = diag + lam * np.maximum(diag, floor) + 1e-30
    try:
        low = np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        return None
    d = np.linalg.solve(low.T, np.linalg.solve(low, -g))
    return d if np.all(np.isfinite(d)) else None


def _newton_solve(jac: np.ndarray, r: np.ndarray) -> np.ndarray | None:
    a = jac.astype(np.float64).copy()
    b = -r.astype(np.float64).copy()
    n = a.shape[0]
    scale = float(np.abs(a).max(initial=0.0))
    for k in range(n):
        piv = k + int(np.argmax(np.abs(a[k:, k])))
        if not abs(a[piv, k]) > 1e-6 * scale:
            return None
        a[[k, piv]] = a[[piv, k]]
        b[[k, piv]] = b[[piv, k]]
        for i in range(k + 1, n):
            f = a[i, k] / a[k, k]
            a[i, k:] -= f * a[k, k:]
            b[i] -= f * b[k]
    d = np.zeros(n)
    for i in range(n - 1, -1, -1):
        d[i] = (b[i] - a[i, i + 1 :] @ d[i + 1 :]) / a[i, i]
    return d if np.all(np.isfinite(d)) else None


@dataclass
class ReferenceController:
    """The one-step (NARX) and horizon controllers of edgec_mpc.c in numpy."""

    cfg: MpcConfig
    model: ModelFn
    u_last: np.ndarray = field(init=False)
    u_plan: np.ndarray = field(init=False)
    u_hist: list[np.ndarray] = field(init=False)  # newest first: u(t-1), u(t-2), ...
    y_hist: list[np.ndarray] = field(init=False)  # newest first: y(t), y(t-1), ...
    sensors: np.ndarray = field(init=False)
    report: Report = field(init=False)
    #: one-step mode: the model input and result at the last tick's final iterate, reused (not
    #: re-evaluated, not counted) when the next tick starts from the same model input
    last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(init=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        c = self.cfg
        self.u_last = np.clip(c.u_init, c.u_min, c.u_max).astype(np.float64)
        self.u_plan = np.tile(self.u_last, c.horizon)
        self.u_hist = [self.u_last.copy() for _ in range(c.command_lags)]
        self.y_hist = [np.zeros(c.outputs) for _ in range(c.output_lags)]
        self.sensors = np.zeros(c.sensors)
        self.report = Report()
        self.last = None

    def prime(self, measurement: np.ndarray) -> None:
        m = np.asarray(measurement, np.float64)
        if not np.all(np.isfinite(m)):
            return
        ny = self.cfg.outputs
        self.y_hist = [m[:ny].copy() for _ in range(self.cfg.output_lags)]
        self.sensors = m[ny:].copy()

    # -- shared --------------------------------------------------------------------------
    def bounds(self, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.cfg
        lo = np.maximum(prev - c.du_max, c.u_min)
        hi = np.minimum(prev + c.du_max, c.u_max)
        return lo, np.maximum(hi, lo)

    def _eval(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        y, jac = self.model(z)
        self.report.evaluations += self.cfg.evals_per_model_call
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(jac))):
            return None
        return np.asarray(y, np.float64).reshape(-1), np.asarray(jac, np.float64)

    def _limit_flags(self, u: np.ndarray) -> int:
        c = self.cfg
        f = 0
        if np.any((u <= c.u_min) | (u >= c.u_max)):
            f |= FLAG_U_LIMIT
        if np.any((u <= self.u_last - c.du_max) | (u >= self.u_last + c.du_max)):
            f |= FLAG_RATE_LIMIT
        return f

    def step(self, y_ref: np.ndarray, measurement: np.ndarray) -> np.ndarray:
        c = self.cfg
        self.report = Report()
        y_ref = np.asarray(y_ref, np.float64).reshape(-1)
        meas = np.asarray(measurement, np.float64).reshape(-1)
        u = self.u_last.copy()
        if not (np.all(np.isfinite(y_ref)) and np.all(np.isfinite(meas))):
            if not c.horizon_mode and c.output_lags:
                self.y_hist = [self.y_hist[0].copy()] + self.y_hist[:-1]
            flags = FLAG_NONFINITE_INPUT | FLAG_FALLBACK
            self.report.residual = self.report.cost = float("nan")
        elif c.horizon_mode:
            flags, u = self._solve_horizon(meas, y_ref, u)
        else:
            if c.output_lags:
                self.y_hist = [meas[: c.outputs].copy()] + self.y_hist[:-1]
            self.sensors = meas[c.outputs :].copy()
            flags, u = self._solve_one_step(y_ref, u)
        lo, hi = self.bounds(self.u_last)
        u = np.clip(u, lo, hi)
        flags |= self._limit_flags(u)
        self.u_last = u.copy()
        if c.horizon_mode:
            if flags & FLAG_FALLBACK:
                self.u_plan = np.tile(u, c.horizon)
        else:
            self.u_plan = u.copy()
            if c.command_lags:
                self.u_hist = [u.copy()] + self.u_hist[:-1]
        self.report.flags = flags
        return u

    # -- one-step ------------------------------------------------------------------------
    def model_input(self, u: np.ndarray) -> np.ndarray:
        parts = [np.asarray(u, np.float64)] + self.u_hist + self.y_hist + [self.sensors]
        return np.concatenate(parts)

    def _point(self, u: np.ndarray, y_ref: np.ndarray, may_reuse: bool = False) -> dict | None:
        z = self.model_input(u)
        if may_reuse and self.last is not None and np.array_equal(z, self.last[0]):
            res: tuple[np.ndarray, np.ndarray] | None = self.last[1:]
        else:
            res = self._eval(z)
        if res is None:
            return None
        y, jac = res
        r = y - y_ref
        du = u - self.u_last
        cost = 0.5 * (float(r @ r) + float(self.cfg.du_weight @ (du * du)))
        return {"u": u, "z": z, "y": y, "jac": jac, "r": r, "cost": cost,
                "rmax": float(np.abs(r).max())}

    def _solve_one_step(self, y_ref: np.ndarray, u_hold: np.ndarray) -> tuple[int, np.ndarray]:
        c = self.cfg
        lo, hi = self.bounds(self.u_last)
        cur = self._point(np.clip(self.u_plan, lo, hi), y_ref, may_reuse=True)
        if cur is None:
            return FLAG_NONFINITE_MODEL | FLAG_FALLBACK, u_hold
        lam = c.damping
        flags = 0
        for _ in range(c.max_iterations):
            if cur["rmax"] <= c.tolerance:
                flags |= FLAG_CONVERGED
                break
            self.report.iterations += 1
            d_newton = _newton_solve(cur["jac"], cur["r"]) if c.newton else None
            if c.newton and d_newton is None:
                flags |= FLAG_SINGULAR
            jac, w = cur["jac"], c.du_weight
            g = jac.T @ cur["r"] + w * (cur["u"] - self.u_last)
            a = jac.T @ jac + np.diag(w)
            trial = None
            for t in range(TRIES):
                if d_newton is not None:
                    cand = np.clip(cur["u"] + d_newton / (1 << t), lo, hi)
                else:
                    d = _damped_solve(a, g, lam)
                    if d is None:
                        lam *= 10.0
                        continue
                    cand = np.clip(cur["u"] + d, lo, hi)
                p = self._point(cand, y_ref)
                if p is not None and p["cost"] < cur["cost"]:
                    trial = p
                    if d_newton is None:
                        lam = max(lam * 0.1, 1e-7)
                    break
                if d_newton is None:
                    lam *= 10.0
            if trial is None:
                flags |= FLAG_STATIONARY
                break
            step = float(np.abs(trial["u"] - cur["u"]).max())
            cur = trial
            if cur["rmax"] <= c.tolerance:
                flags |= FLAG_CONVERGED
                break
            if step <= c.step_tolerance:
                flags |= FLAG_STATIONARY
                break
        self.last = (cur["z"], cur["y"], cur["jac"])
        self.report.residual = cur["rmax"]
        self.report.cost = cur["cost"]
        if not flags & (FLAG_CONVERGED | FLAG_STATIONARY):
            return flags | FLAG_NO_CONVERGE | FLAG_FALLBACK, u_hold
        return flags, cur["u"]

    # -- horizon -------------------------------------------------------------------------
    def project_plan(self, plan: np.ndarray) -> np.ndarray:
        nu = self.cfg.commands
        out = plan.copy()
        prev = self.u_last
        for k in range(self.cfg.horizon):
            lo, hi = self.bounds(prev)
            out[k * nu : (k + 1) * nu] = np.clip(out[k * nu : (k + 1) * nu], lo, hi)
            prev = out[k * nu : (k + 1) * nu]
        return out

    def rollout(self, x0: np.ndarray, y_ref: np.ndarray, plan: np.ndarray) -> dict | None:
        c = self.cfg
        nu, nx, hzn = c.commands, c.states, c.horizon
        ndec = nu * hzn
        x = x0.copy()
        sens = np.zeros((nx, ndec))
        a = np.zeros((ndec, ndec))
        g = np.zeros(ndec)
        cost = 0.0
        rmax = 0.0
        w = c.du_weight
        refs = y_ref.reshape(hzn, len(c.track))
        for k in range(hzn):
            uk = plan[k * nu : (k + 1) * nu]
            prev = self.u_last if k == 0 else plan[(k - 1) * nu : k * nu]
            du = uk - prev
            cost += float(w @ (du * du))
            for j in range(nu):
                ia = k * nu + j
                g[ia] += w[j] * du[j]
                a[ia, ia] += w[j]
                if k > 0:
                    ib = (k - 1) * nu + j
                    g[ib] -= w[j] * du[j]
                    a[ib, ib] += w[j]
                    a[ia, ib] -= w[j]
                    a[ib, ia] -= w[j]
            res = self._eval(np.concatenate([x, uk]))
            if res is None:
                return None
            xn, jac = res
            sens = jac[:, :nx] @ sens
            sens[:, k * nu : (k + 1) * nu] += jac[:, nx:]
            x = xn
            for i, o in enumerate(c.track):
                e = x[o] - refs[k, i]
                cost += c.q[i] * e * e
                rmax = max(rmax, abs(e))
                row = sens[o]
                g += c.q[i] * row * e
                a += c.q[i] * np.outer(row, row)
        return {"u": plan, "a": a, "g": g, "cost": 0.5 * cost, "rmax": rmax}

    def _solve_horizon(
        self, x0: np.ndarray, y_ref: np.ndarray, u_hold: np.ndarray
    ) -> tuple[int, np.ndarray]:
        c = self.cfg
        nu, hzn = c.commands, c.horizon
        warm = np.concatenate(
            [self.u_plan[min(k + 1, hzn - 1) * nu : (min(k + 1, hzn - 1) + 1) * nu]
             for k in range(hzn)]
        )
        cur = self.rollout(x0, y_ref, self.project_plan(warm))
        if cur is None:
            return FLAG_NONFINITE_MODEL | FLAG_FALLBACK, u_hold
        lam = c.damping
        flags = 0
        for _ in range(c.max_iterations):
            if cur["rmax"] <= c.tolerance:
                flags |= FLAG_CONVERGED
                break
            self.report.iterations += 1
            trial = None
            for _ in range(TRIES):
                d = _damped_solve(cur["a"], cur["g"], lam)
                if d is None:
                    lam *= 10.0
                    continue
                p = self.rollout(x0, y_ref, self.project_plan(cur["u"] + d))
                if p is not None and p["cost"] < cur["cost"]:
                    trial = p
                    lam = max(lam * 0.1, 1e-7)
                    break
                lam *= 10.0
            if trial is None:
                flags |= FLAG_STATIONARY
                break
            step = float(np.abs(trial["u"] - cur["u"]).max())
            cur = trial
            if step <= c.step_tolerance:
                flags |= FLAG_STATIONARY
                break
        else:
            flags |= FLAG_NO_CONVERGE
        self.report.residual = cur["rmax"]
        self.report.cost = cur["cost"]
        self.u_plan = cur["u"].copy()
        return flags, cur["u"][:nu].copy()
