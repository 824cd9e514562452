"""Trials per second of ``edgec tune`` on 1 and 2 Ray workers: ``python -m bench.scale``.

The same job on each: a grid of 8 move-suppression weights for the analytic mass-spring-damper
controller (``examples/soft_actuator_mpc/msd_exact.toml``, 10-step horizon), every trial the
compiled controller in closed loop on the 20 s example path, repeated until one trial takes at
least about a second. Trials/s counts the search's wall time (Tune's scheduling included, Ray's
start-up and the forward model's compilation excluded). Goal: 2 workers >= 1.6x 1 worker.

The ratio needs two idle cores: on a machine shared with other work it measures the share the
two workers got (the load average is printed with the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec.tables import format_table

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mpc"
CONFIG = EXAMPLE / "msd_exact.toml"
SPACE = '["solver.du_weight"]\nvalues = [1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4]\n'
GOAL_RATIO = 1.6


def run(workers: int, repeats: int, tmp: Path) -> dict[str, Any]:
    import ray

    from edgec.scale.tune import run_tune

    space = tmp / "space.toml"
    space.write_text(SPACE)
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        res = run_tune(CONFIG, "msd", space, tmp / f"w{workers}", search="grid",
                       quiet=True, repeats=repeats)
    finally:
        ray.shutdown()
    ok = [r for r in res.trials if r["status"] == "ok"]
    spans = [(r["started"], r["started"] + r["seconds"]) for r in ok]
    return {
        "workers": workers, "trials": len(res.trials), "wall_s": res.fit_seconds,
        "trials_per_s": len(res.trials) / res.fit_seconds,
        "mean_trial_s": sum(r["seconds"] for r in ok) / max(1, len(ok)),
        # trials' CPU time over the search's wall time: the cores the workers actually got
        "cpu_share": sum(r["cpu_seconds"] for r in ok) / res.fit_seconds,
        "max_overlap": max((sum(a <= t < b for a, b in spans) for t, _ in spans), default=0),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=6,
                    help="closed-loop runs per trial (each about 0.4 s on an idle core)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgec-bench-scale-") as tmp:
        load0 = os.getloadavg()[0]
        rows = [run(w, args.repeats, Path(tmp)) for w in (1, 2)]
        load1 = os.getloadavg()[0]
    ratio = rows[1]["trials_per_s"] / rows[0]["trials_per_s"]
    if args.json:
        print(json.dumps({"runs": rows, "ratio": ratio, "goal": GOAL_RATIO,
                          "load_average": [load0, load1]}, indent=2))
        return 0
    print(format_table(
        ["workers", "trials", "wall (s)", "mean trial (s)", "trials/s", "trials at once",
         "CPU cores used"],
        [[str(r["workers"]), str(r["trials"]), f"{r['wall_s']:.1f}",
          f"{r['mean_trial_s']:.2f}", f"{r['trials_per_s']:.3f}", str(r["max_overlap"]),
          f"{r['cpu_share']:.2f}"] for r in rows],
        align="rrrrrrr",
    ))
    print(f"2 workers / 1 worker: {ratio:.2f}x (goal >= {GOAL_RATIO}x); "
          f"1-minute load average {load0:.1f} before, {load1:.1f} after, on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
