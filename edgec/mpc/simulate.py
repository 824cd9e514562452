"""Closed-loop simulation on the host: the compiled C controller in the loop with a Python plant,
against the IMC-tuned PID on the same path.

The reference CSV has a header and columns ``t`` then one per tracked output; it is interpolated
at the control rate. At tick t (time t * dt) the MPC is asked for y((t + 1) dt) (the next
sample: the preview a predictive controller is built for; dynamics mode gets the next H samples)
and the PID acts on the error at time t. Both are scored on y((t + 1) dt) - ref((t + 1) dt).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.mpc.build import build_controller
from edgec.mpc.config import MpcConfig
from edgec.mpc.pid import run_pid, tune_pid
from edgec.mpc.plants import Plant, make_plant
from edgec.mpc.reference import FLAG_FALLBACK


@dataclass
class LoopResult:
    y: np.ndarray  # (T, ny) output after each tick
    u: np.ndarray  # (T, nu) command of each tick
    iterations: np.ndarray  # (T,)
    evaluations: np.ndarray  # (T,)
    flags: np.ndarray  # (T,)

    def metrics(self, ref: np.ndarray) -> dict[str, float | int]:
        err = self.y[:, : ref.shape[1]] - ref
        finite = bool(np.all(np.isfinite(err)))
        return {
            "rmse": float(np.sqrt(np.mean(err**2))) if finite else math.inf,
            "max_error": float(np.abs(err).max()) if finite else math.inf,
            "mean_iterations": float(np.mean(self.iterations)),
            "mean_evaluations": float(np.mean(self.evaluations)),
            "fallbacks": int(np.count_nonzero(self.flags & FLAG_FALLBACK)),
        }


def load_reference(path: str | Path, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such reference file")
    try:
        data = np.genfromtxt(p, delimiter=",", names=True, dtype=np.float64)
    except ValueError as exc:
        raise EdgecError(f"{p}: cannot read the reference CSV ({exc})") from None
    names = data.dtype.names or ()
    if not names or names[0] != "t" or len(names) != 1 + n_outputs or data.size < 2:
        raise EdgecError(
            f"{p}: expected a header 't,<output>...' with {n_outputs} output column(s) and at "
            f"least 2 rows, got columns {list(names)}"
        )
    t = np.atleast_1d(data["t"])
    ref = np.stack([np.atleast_1d(data[n]) for n in names[1:]], axis=1)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(ref)) and np.all(np.diff(t) > 0)):
        raise EdgecError(f"{p}: times must increase and every value must be finite")
    return t, ref


def resample(t: np.ndarray, ref: np.ndarray, dt: float) -> np.ndarray:
    """The reference at t0 + k dt, k = 0 .. (duration / dt)."""
    n = int(np.floor((t[-1] - t[0]) / dt + 1e-9)) + 1
    grid = t[0] + dt * np.arange(n)
    return np.stack([np.interp(grid, t, ref[:, i]) for i in range(ref.shape[1])], axis=1)


def run_mpc(
    cfg: MpcConfig, controller: Any, plant: Plant, ref: np.ndarray, label: str = ""
) -> LoopResult:
    """``ref[k]``: the reference at tick k; tick k targets ref[k + 1]. ``label``: draw a
    progress bar with it on stderr (a terminal only), for loops that take seconds."""
    from edgec.tables import progress

    plant.reset()
    controller.reset()
    y = plant.output()
    if not cfg.horizon_mode:
        controller.prime(np.concatenate([y, np.zeros(cfg.sensors)]))
    n = len(ref) - 1
    ys, us, its, evs, fl = [], [], [], [], []
    for k in progress(range(n), label) if label else range(n):
        if cfg.horizon_mode:
            idx = np.minimum(np.arange(k + 1, k + 1 + cfg.horizon), len(ref) - 1)
            u = controller.step(ref[idx].reshape(-1), plant.x)
        else:
            u = controller.step(ref[k + 1], np.concatenate([y, np.zeros(cfg.sensors)]))
        rep = controller.report
        y = plant.step(u)
        ys.append(y.copy())
        us.append(np.asarray(u, np.float64))
        its.append(rep.iterations)
        evs.append(rep.evaluations)
        fl.append(rep.flags)
    return LoopResult(np.array(ys), np.array(us), np.array(its), np.array(evs), np.array(fl))


def _check_plant(cfg: MpcConfig, plant: Plant) -> None:
    if cfg.commands != plant.n_u:
        raise EdgecError(
            f"{cfg.source}: the config has {cfg.commands} command(s); plant '{plant.name}' "
            f"takes {plant.n_u}"
        )
    if cfg.horizon_mode and cfg.states != plant.x.size:
        raise EdgecError(
            f"{cfg.source}: the dynamics model has {cfg.states} states; plant '{plant.name}' "
            f"has {plant.x.size}"
        )
    if not cfg.horizon_mode and cfg.outputs != plant.n_y:
        raise EdgecError(
            f"{cfg.source}: the config has {cfg.outputs} output(s); plant '{plant.name}' "
            f"measures {plant.n_y}"
        )


def simulate(
    cfg: MpcConfig,
    plant_name: str,
    t: np.ndarray,
    ref_raw: np.ndarray,
    out_dir: str | Path | None = None,
    module: Any = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Runs MPC and PID on the path; writes sim.csv and sim.png into ``out_dir`` if given.

    ``target``: run the controller on that target's emulated board (plant on the host, one tick
    per exchange, see :mod:`edgec.mpc.target`) instead of the host library."""
    plant = make_plant(plant_name, cfg.dt)
    _check_plant(cfg, plant)
    ref = resample(t, ref_raw, cfg.dt)
    if len(ref) < 2:
        raise EdgecError(f"{cfg.source}: the reference is shorter than one control tick")
    ctrl = build_controller(cfg, module)
    if target is None:
        mpc = run_mpc(cfg, ctrl.host(), plant, ref)
    else:
        import tempfile

        from edgec.mpc.target import BoardController, build_mpc_firmware

        with tempfile.TemporaryDirectory(prefix="edgec-mpc-board-") as tmp:
            fw = build_mpc_firmware(ctrl, target, Path(tmp) / "fw", link=True)
            with BoardController(cfg, fw) as board:
                mpc = run_mpc(cfg, board, plant, ref, label=f"closed loop on {target} (QEMU)")
    target = ref[1:]
    pid = tune_pid(plant, target, float(cfg.du_max[0]))
    pid_y, pid_u = run_pid(pid, plant, target)
    zeros = np.zeros(len(target), np.int64)
    pid_res = LoopResult(pid_y, pid_u, zeros, zeros, zeros)
    results: dict[str, Any] = {
        "mpc": mpc.metrics(target),
        "pid": pid_res.metrics(target) | {"lambda_s": pid.lam},
    }
    if out_dir is not None:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        times = t[0] + cfg.dt * np.arange(1, len(ref))
        write_csv(d / "sim.csv", times, target, mpc, pid_res)
        plot(d / "sim.png", times, target, mpc, pid_res, plant.name, plant.y_label,
             plant.u_label)
        results["files"] = [str(d / "sim.csv"), str(d / "sim.png")]
    return results


def write_csv(
    path: Path, times: np.ndarray, ref: np.ndarray, mpc: LoopResult, pid: LoopResult
) -> None:
    ny, nu = ref.shape[1], mpc.u.shape[1]
    head = (
        ["t"] + [f"ref{i}" for i in range(ny)] + [f"y_mpc{i}" for i in range(ny)]
        + [f"y_pid{i}" for i in range(ny)] + [f"u_mpc{j}" for j in range(nu)]
        + [f"u_pid{j}" for j in range(pid.u.shape[1])] + ["iterations", "evaluations", "flags"]
    )
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for k in range(len(times)):
            row = [times[k], *ref[k], *mpc.y[k, :ny], *pid.y[k, :ny], *mpc.u[k], *pid.u[k]]
            w.writerow([f"{v:.6g}" for v in row]
                       + [int(mpc.iterations[k]), int(mpc.evaluations[k]), int(mpc.flags[k])])


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files, no display); a one-line EdgecError without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgecError(
            "the plot needs matplotlib: pip install matplotlib (or edgec[dev])"
        ) from None
    return plt


def plot(
    path: Path, times: np.ndarray, ref: np.ndarray, mpc: LoopResult, pid: LoopResult,
    title: str, y_label: str = "output", u_label: str = "command",
) -> None:
    """Three panels sharing the time axis: the output with its reference, the tracking error
    (where MPC and PID differ visibly even when the outputs overlap) and the commands; legends
    sit to the right of the axes, outside the data."""
    plt = pyplot()
    fig, (ax0, ax1, ax2) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 8), gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    ax0.plot(times, ref[:, 0], color="k", ls="--", lw=1.6, label="reference", zorder=3)
    ax0.plot(times, mpc.y[:, 0], color="C0", lw=1.2, label="MPC")
    ax0.plot(times, pid.y[:, 0], color="C1", lw=1.0, ls="-.", label="PID")
    ax0.set_ylabel(y_label)
    ax0.set_title(f"closed loop on '{title}'")
    e_mpc = mpc.y[:, 0] - ref[:, 0]
    e_pid = pid.y[:, 0] - ref[:, 0]
    rms = lambda e: float(np.sqrt(np.mean(e**2)))  # noqa: E731
    ax1.axhline(0.0, color="k", lw=0.6)
    ax1.plot(times, e_mpc, color="C0", lw=1.0, label=f"MPC (RMSE {rms(e_mpc):.3g})")
    ax1.plot(times, e_pid, color="C1", lw=1.0, ls="-.", label=f"PID (RMSE {rms(e_pid):.3g})")
    unit = y_label[y_label.find("(") :] if "(" in y_label else ""
    ax1.set_ylabel(f"tracking error {unit}".strip())
    for j in range(mpc.u.shape[1]):
        ax2.plot(times, mpc.u[:, j], color=f"C{2 * j}", lw=1.0, label=f"MPC u{j}")
    for j in range(pid.u.shape[1]):
        ax2.plot(times, pid.u[:, j], color=f"C{2 * j + 1}", lw=0.9, ls=":", label=f"PID u{j}")
    ax2.set_ylabel(u_label)
    ax2.set_xlabel("time (s)")
    for ax in (ax0, ax1, ax2):
        ax.grid(True, lw=0.4, alpha=0.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)


def format_results(results: dict[str, Any]) -> str:
    from edgec.tables import format_table

    rows = []
    for key in ("mpc", "pid"):
        r = results[key]
        rows.append([
            key.upper(), f"{r['rmse']:.3g}", f"{r['max_error']:.3g}",
            f"{r['mean_iterations']:.2f}", str(r["fallbacks"]),
        ])
    return format_table(
        ["controller", "RMSE", "max error", "mean iterations", "fallbacks"], rows, align="lrrrr"
    )


def default_reference(plant_name: str, duration: float = 20.0, dt: float = 0.01) -> np.ndarray:
    """The example paths: rows (t, ref), starting at the plant's rest output."""
    t = np.arange(0.0, duration + dt / 2, dt)
    if plant_name == "msd":
        r = 0.3 * np.sin(0.5 * t) + 0.2 * np.sin(1.3 * t)
        r += 0.3 * (np.tanh(4 * (t - 5)) - np.tanh(4 * (t - 12)))
    elif plant_name == "soft-actuator":
        rest = make_plant("soft-actuator", dt).output()[0]
        r = rest + (1 - np.exp(-2 * t)) * (
            0.3 + 0.12 * np.sin(1.5 * t) + 0.08 * np.sin(3.7 * t)
        )
        r += 0.15 * (np.tanh(6 * (t - 5)) - np.tanh(6 * (t - 12)))
    else:
        raise EdgecError(f"no default reference for plant '{plant_name}'")
    return np.stack([t, r], axis=1)


def write_reference(path: str | Path, rows: np.ndarray, column: str = "y") -> None:
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t", column])
        for row in rows:
            w.writerow([f"{v:.6g}" for v in row])
