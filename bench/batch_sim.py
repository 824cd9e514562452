"""Throughput of the batched closed-loop simulator (``edgec simulate --batch N --device
cpu|cuda``): loop-ticks per second for N loops on T host threads, or one loop per GPU thread.

    python -m bench.batch_sim [--config msd_exact.toml] [--plant msd] [--seconds 5]
                              [--sizes 1,1000,10000] [--threads 1,2] [--device cpu] [--json]

``--device cuda`` (a GPU and nvcc needed) times the nvcc library; ``--threads`` is then unused.
The GPU time includes each launch's copy of the results back to the host (the batch's inputs
are uploaded once, outside the timing as the library build is).

Each loop tracks the plant's example path for ``--seconds`` (100 Hz: 100 ticks a second) with
stiffness and damping drawn from +-20 % of nominal (msd) and actuator delays of 0..1 ticks, as a
sweep would (the delayed loops need more solver iterations per tick than the nominal loop 0,
so N = 1 runs the cheapest loop). The library is built once, outside the timing; small batches
are repeated until they take 0.5 s and the best repeat counts. The machine's load is printed
with the numbers: other processes on the cores slow the threads down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgec.tables import format_table

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mpc"
VARY = {
    "msd": {"k": (3.2, 4.8), "c": (0.64, 0.96), "delay": (0, 1)},
    "soft-actuator": {"k1": (0.064, 0.096), "damping": (0.016, 0.024), "delay": (0, 1)},
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"
    return out.strip().splitlines()[0] if out.strip() else "unknown GPU"


def measure(config: str, plant: str, seconds: float, sizes: list[int],
            threads: list[int], device: str = "cpu") -> dict[str, Any]:
    from edgec.mpc.batch import reference_from_rows, run_batch
    from edgec.mpc.batch_open import open_batch
    from edgec.mpc.config import load_config
    from edgec.mpc.simulate import default_reference

    cfg = load_config(EXAMPLE / config)
    lib = open_batch(cfg, plant, device=device)
    threads = threads if device == "cpu" else [0]  # 0: one loop per GPU thread
    rows = default_reference(plant, seconds)
    ref = reference_from_rows("example path", rows[:, 0], rows[:, 1:], cfg)
    out = []
    for n in sizes:
        for t in threads:
            best, reps, spent = float("inf"), 0, 0.0
            while reps < 1 or (spent < 0.5 and reps < 50):
                run = run_batch(lib, n, VARY[plant], [ref], seed=0, threads=t or None)
                best, reps, spent = min(best, run.seconds), reps + 1, spent + run.seconds
            ticks = run.loop_ticks
            out.append({"loops": n, "threads": t, "loop_ticks": ticks, "seconds": best,
                        "loop_ticks_per_s": ticks / best, "loops_per_s": n / best,
                        "mean_iterations": float(run.results["mean_iterations"].mean()),
                        "repeats": reps})
    return {
        "config": config, "plant": plant, "ticks_per_loop": len(ref.rows) - 1,
        "vary": {k: list(v) for k, v in VARY[plant].items()},
        "device": device, "gpu": gpu_name() if device == "cuda" else None,
        "cpu": cpu_name(), "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
        "rows": out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="msd_exact.toml",
                    help="a config in examples/soft_actuator_mpc (default: msd_exact.toml)")
    ap.add_argument("--plant", default="msd", choices=sorted(VARY))
    ap.add_argument("--seconds", type=float, default=5.0, help="path length (default: 5 s)")
    ap.add_argument("--sizes", default="1,1000,10000", help="loop counts N")
    ap.add_argument("--threads", default="1,2", help="thread counts T (device cpu)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from edgec.errors import EdgecError

    t0 = time.perf_counter()
    try:
        res = measure(args.config, args.plant, args.seconds,
                      [int(v) for v in args.sizes.split(",")],
                      [int(v) for v in args.threads.split(",")], args.device)
    except EdgecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"batched closed loops: {res['config']} on '{res['plant']}', "
          f"{res['ticks_per_loop']} ticks per loop, varied {res['vary']}; device {res['device']}"
          f"{' (' + res['gpu'] + ')' if res['gpu'] else ''}; {res['cpu']}, "
          f"{res['cpus']} CPUs, load average {res['load_average'][0]:.2f} at the start; "
          f"{time.perf_counter() - t0:.0f} s in all")
    print(format_table(
        ["N", "threads", "loop-ticks/s", "loops/s", "seconds", "solver iterations/tick",
         "repeats"],
        [[r["loops"], r["threads"] or "GPU", f"{r['loop_ticks_per_s']:,.0f}",
          f"{r['loops_per_s']:,.1f}", f"{r['seconds']:.3g}", f"{r['mean_iterations']:.2f}",
          r["repeats"]]
         for r in res["rows"]],
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
