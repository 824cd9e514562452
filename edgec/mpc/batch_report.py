"""What a batch of closed loops did (:mod:`edgec.mpc.batch`): the RMSE distribution, fallbacks
and limit hits, the worst loops with their parameters; as one JSON object, a text table, a CSV
of every loop and a PNG (RMSE histogram + the worst loop's trajectory beside the nominal one).

Percentiles are loop values (numpy's ``higher`` method: the smallest loop value at or above the
rank), so a diverged loop (RMSE inf) shows as inf rather than as an interpolation; JSON writes
inf as null.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgec.mpc.batch import PLANT_PARAMS, BatchRun

PERCENTILES = (50, 90, 99)
N_WORST = 5


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def distribution(v: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        f"p{q}": _num(float(np.percentile(v, q, method="higher"))) for q in PERCENTILES
    }
    out["max"] = _num(float(v.max()))
    finite = v[np.isfinite(v)]
    out["mean"] = _num(float(finite.mean())) if finite.size else None
    return out


def worst_loops(run: BatchRun, k: int = N_WORST) -> list[int]:
    """The k loops with the largest RMSE (diverged ones first), ties by loop index."""
    order = np.lexsort((np.arange(len(run.results)), -run.results["rmse"]))
    return [int(i) for i in order[:k]]


def loop_summary(run: BatchRun, i: int) -> dict[str, Any]:
    r = run.results[i]
    lib = run.library
    ticks = int(r["ticks"])
    return {
        "loop": i,
        "rmse": _num(float(r["rmse"])),
        "max_error": _num(float(r["max_error"])),
        "fallbacks": int(r["fallbacks"]),
        "u_limit_ticks": int(r["u_limit"]),
        "rate_limit_ticks": int(r["rate_limit"]),
        "no_converge_ticks": int(r["no_converge"]),
        "mean_iterations": float(r["mean_iterations"]),
        "mean_evaluations": float(r["mean_evaluations"]),
        "ticks": ticks,
        "reference": lib.refs[int(lib.ref_index[i])].name,
        "params": run.draws.loop_params(run.plant_name, i),
        "noise": float(run.draws.noise[i]),
    }


def _counts(col: np.ndarray) -> dict[str, int]:
    return {"loops": int(np.count_nonzero(col)), "ticks": int(col.sum())}


def summarize(run: BatchRun) -> dict[str, Any]:
    """The batch as one JSON-able object."""
    res = run.results
    return {
        "plant": run.plant_name,
        "controller": run.library.cfg.name,
        "device": run.library.device,
        "loops": int(len(res)),
        "loop_ticks": run.loop_ticks,
        "threads": run.threads if run.library.device == "cpu" else None,
        "seed": run.seed,
        "vary": {k: list(v) for k, v in run.vary.items()},
        "noise": float(run.draws.noise.max(initial=0.0)),
        "references": [r.name for r in run.library.refs],
        "rmse": distribution(res["rmse"]),
        "max_error": distribution(res["max_error"]),
        "diverged_loops": int(np.count_nonzero(~np.isfinite(res["rmse"]))),
        "fallbacks": _counts(res["fallbacks"]),
        "u_limit": _counts(res["u_limit"]),
        "rate_limit": _counts(res["rate_limit"]),
        "no_converge": _counts(res["no_converge"]),
        "mean_iterations": float(res["mean_iterations"].mean()),
        "nominal": loop_summary(run, 0),
        "worst": [loop_summary(run, i) for i in worst_loops(run)],
        "seconds": run.seconds,
        "loop_ticks_per_s": run.loop_ticks / run.seconds if run.seconds > 0 else None,
    }


def _fmt(v: float | None) -> str:
    return "inf" if v is None else f"{v:.3g}"


def format_summary(s: dict[str, Any]) -> str:
    from edgec.tables import format_table

    dist = format_table(
        ["", *[f"p{q}" for q in PERCENTILES], "max", "nominal (loop 0)"],
        [[what, *[_fmt(s[key][f"p{q}"]) for q in PERCENTILES], _fmt(s[key]["max"]),
          _fmt(s["nominal"][key])] for what, key in (("RMSE", "rmse"),
                                                      ("max error", "max_error"))],
        align="lrrrrr",
    )
    n = s["loops"]
    events = format_table(
        ["event", "loops", "ticks"],
        [[what, f"{s[key]['loops']:,} of {n:,}", f"{s[key]['ticks']:,}"]
         for what, key in (("fallback (command held)", "fallbacks"),
                           ("command on u_min/u_max", "u_limit"),
                           ("command on its rate limit", "rate_limit"),
                           ("iteration budget exhausted", "no_converge"))]
        + [["diverged (output not finite)", f"{s['diverged_loops']:,} of {n:,}", ""]],
        align="lrr",
    )
    varied = [k for k in PLANT_PARAMS[s["plant"]] if k.name in s["vary"]]
    worst = format_table(
        ["loop", "RMSE", "max error", "fallbacks", "reference",
         *[f"{p.name} ({p.unit})" for p in varied]],
        [[str(w["loop"]), _fmt(w["rmse"]), _fmt(w["max_error"]), str(w["fallbacks"]),
          w["reference"], *[f"{w['params'][p.name]:.4g}" for p in varied]]
         for w in s["worst"]],
        align="lrrrl" + "r" * len(varied),
    )
    return f"{dist}\n\n{events}\n\nworst loops:\n{worst}"


def describe(s: dict[str, Any]) -> str:
    vary = ", ".join(f"{k} {lo:g}..{hi:g}" for k, (lo, hi) in s["vary"].items()) or "none"
    rate = s["loop_ticks_per_s"]
    speed = f", {rate:,.0f} loop-ticks/s" if rate else ""
    where = (f"{s['threads']} thread(s)" if s["device"] == "cpu" else "one GPU thread per loop")
    return (f"{s['loops']:,} closed loops of '{s['controller']}' on '{s['plant']}' (device "
            f"{s['device']}, {where}): {s['loop_ticks']:,} ticks in {s['seconds']:.2f} s"
            f"{speed}; varied: {vary}; noise {s['noise']:g}; seed {s['seed']}; "
            f"{len(s['references'])} reference(s)")


def write_csv(path: Path, run: BatchRun) -> None:
    """One row per loop: its parameters, reference and scores."""
    names = [p.name for p in PLANT_PARAMS[run.plant_name]]
    res = run.results
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["loop", *names, "noise", "reference", *res.dtype.names])
        for i in range(len(res)):
            p = run.draws.loop_params(run.plant_name, i)
            ref = run.library.refs[int(run.library.ref_index[i])].name
            w.writerow([i, *[f"{p[n]:.6g}" for n in names], f"{run.draws.noise[i]:.6g}", ref,
                        *[f"{float(res[f][i]):.6g}" for f in res.dtype.names]])


def plot(path: Path, run: BatchRun, worst: int) -> None:
    """Top: the RMSE histogram (log bins when it spans a decade or more); below, the worst
    loop's output and command against its reference, with the nominal loop 0 for scale."""
    from edgec.mpc.simulate import pyplot

    plt = pyplot()
    lib = run.library
    plant = lib.plant
    rmse = run.results["rmse"]
    finite = rmse[np.isfinite(rmse) & (rmse > 0)]
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(10, 9),
                                        gridspec_kw={"height_ratios": [2, 3, 2]})
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        log = hi > 10 * lo
        bins = np.geomspace(lo, hi * 1.0001, 40) if log else 40
        ax0.hist(finite, bins=bins, color="C0", alpha=0.8)
        if log:
            ax0.set_xscale("log")
        for q, ls in zip(PERCENTILES, ("-", "--", ":"), strict=True):
            v = float(np.percentile(rmse, q, method="higher"))
            if math.isfinite(v):
                ax0.axvline(v, color="k", lw=1.0, ls=ls, label=f"p{q} {v:.3g}")
    diverged = int(np.count_nonzero(~np.isfinite(rmse)))
    ax0.set_title(f"{len(rmse):,} loops on '{plant.name}'"
                  + (f" ({diverged} diverged, not shown)" if diverged else ""))
    ax0.set_xlabel(f"tracking RMSE {plant.y_label[plant.y_label.find('('):]}"
                   if "(" in plant.y_label else "tracking RMSE")
    ax0.set_ylabel("loops")
    times = lambda i: lib.cfg.dt * np.arange(1, lib.ticks(i) + 1)  # noqa: E731
    nu = lib.cfg.commands
    for i, color, label in ((0, "C2", "nominal loop 0"), (worst, "C3", f"worst loop {worst}")):
        _, tr = lib.trace(i)
        ref = lib.refs[int(lib.ref_index[i])]
        t = times(i)
        if i == 0 or lib.ref_index[i] != lib.ref_index[0]:
            ax1.plot(t, ref.rows[1:, 0], color="k" if i == 0 else "0.4", ls="--", lw=1.2,
                     label=f"reference ({ref.name})")
        ax1.plot(t, tr[:, 0], color=color, lw=1.1, label=label)
        for j in range(nu):
            ax2.plot(t, tr[:, 1 + j], color=color, lw=1.0, ls="-" if j == 0 else ":",
                     label=f"{label}: u{j} at the plant")
    params = run.draws.loop_params(run.plant_name, worst)
    ax1.set_title("worst loop: " + ", ".join(f"{k}={v:.4g}" for k, v in params.items()),
                  fontsize="small")
    ax1.set_ylabel(plant.y_label)
    ax2.set_ylabel(plant.u_label)
    ax2.set_xlabel("time (s)")
    for ax in (ax0, ax1, ax2):
        ax.grid(True, lw=0.4, alpha=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                      fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)


def write_outputs(out_dir: str | Path, run: BatchRun, summary: dict[str, Any]) -> list[str]:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_csv(d / "batch.csv", run)
    plot(d / "batch.png", run, summary["worst"][0]["loop"])
    return [str(d / "batch.csv"), str(d / "batch.png")]


def simulate_batch(
    cfg: Any,
    plant_name: str,
    n: int,
    vary: dict[str, tuple[float, float]] | None = None,
    refs: list[Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    noise: float = 0.0,
    out_dir: str | Path | None = None,
    module: Any = None,
    label: str = "",
    device: str = "cpu",
) -> tuple[BatchRun, dict[str, Any]]:
    """Builds and runs the batch (default reference: the plant's example path for every loop),
    summarizes it and, with ``out_dir``, writes batch.csv and batch.png there. ``device``: cpu
    (POSIX threads) or cuda (one GPU thread per loop, edgec.mpc.batch_cuda)."""
    from edgec.mpc.batch import check_batch_args, reference_from_rows, run_batch
    from edgec.mpc.batch_open import open_batch
    from edgec.mpc.simulate import default_reference

    check_batch_args(n, threads, noise)
    lib = open_batch(cfg, plant_name, module=module, device=device)
    if refs is None:
        rows = default_reference(plant_name)
        refs = [reference_from_rows(f"example {plant_name} path", rows[:, 0], rows[:, 1:], cfg)]
    run = run_batch(lib, n, vary or {}, refs, seed, threads, noise, label)
    summary = summarize(run)
    if out_dir is not None:
        summary["files"] = write_outputs(out_dir, run, summary)
    return run, summary
