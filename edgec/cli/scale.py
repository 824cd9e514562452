"""``edgec tune`` and ``edgec evolve`` on Ray (and ``edgec verify --matrix``, whose options live
with ``verify`` in :mod:`edgec.cli.model`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from edgec.cli.common import add_ray_args, output_dir
from edgec.errors import EdgecError
from edgec.scale.trial import AGGREGATES, BATCH_DEVICES, BatchTrial

Handler = Callable[[argparse.Namespace], int]

def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "tune",
        help="search an MPC config's parameters on Ray (closed-loop tracking RMSE)",
        description="Search the MPC config's parameters named in the space file (grid, random, "
        "or Optuna through Ray Tune). Each trial builds the controller's C where it runs and "
        "tracks the plant's reference in closed loop; the objective is the tracking RMSE "
        "times (1 + fallback_weight * fallbacks/ticks + limit_weight * limit hits/ticks). "
        "Writes trials.jsonl, best.toml (for 'edgec mpc build'), search.png and tune.json "
        "into -o DIR; --resume DIR continues an interrupted run.",
    )
    p.add_argument("config", metavar="CONFIG.toml", help="the MPC configuration")
    p.add_argument("--plant", required=True, choices=("msd", "soft-actuator"),
                   help="the simulated plant")
    p.add_argument("--space", required=True, metavar="SPACE.toml",
                   help='the search space: ["section.key"] tables with values = [...], '
                   "uniform = [lo, hi] or log_uniform = [lo, hi]")
    p.add_argument("--trials", type=int, metavar="N",
                   help="trials in all (default: the whole grid; 20 for random and optuna)")
    p.add_argument("--search", choices=("grid", "random", "optuna"),
                   help="searcher (default: grid when every key lists values, else optuna)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of random and optuna searches and of the --batch draws")
    p.add_argument("--reference", metavar="PATH.csv",
                   help="the path to track (default: the plant's example path, 20 s)")
    p.add_argument("--duration", type=float, metavar="S",
                   help="track only the first S seconds of the path")
    b = p.add_argument_group(
        "robust tuning", "each trial runs N loops of the batched simulator (the controller and a "
        "C plant per loop; loop 0 nominal, loops 1.. with drawn plant parameters and noise, the "
        "same plants in every trial) and scores the loops' objectives together")
    b.add_argument("--batch", type=int, metavar="N", help="loops per trial")
    b.add_argument("--vary", action="append", default=[], metavar="PARAM=LO:HI",
                   help="draw plant parameter PARAM of loops 1.. uniformly from [LO, HI] "
                   "(repeatable; as edgec mpc simulate --vary)")
    b.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian noise on the measured output, loops 1..")
    b.add_argument("--aggregate", choices=AGGREGATES, default="mean",
                   help="the trial's objective over its loops")
    b.add_argument("--device", choices=BATCH_DEVICES, default="auto",
                   help="where a trial's loops run: cpu (its one CPU), cuda (the GPU simulator, "
                   "each trial holding an equal share of the cluster's GPUs), auto (cuda when "
                   "the Ray cluster has GPUs, else cpu)")
    add_ray_args(p)
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR without repeating its finished trials")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="the results directory (default: tune-out)")
    p.add_argument("--json", action="store_true",
                   help='print {"trials", "best", "best_rmse", "best_config"}')

    e = sub.add_parser(
        "evolve",
        help="evolve controller parameters on Ray (closed-loop fitness, seeded)",
        description="Population-based evolution (a separable CMA-ES-like strategy) of the "
        "parameters a spec file names, with fitness from closed-loop simulation: PID gains "
        "on a plant, an MPC config's keys with the compiled controller, or a Python function. "
        "Each generation is evaluated as Ray tasks; the same seed gives the same best.",
    )
    e.add_argument("spec", metavar="SPEC.toml", help="[evolve] settings and [params] bounds")
    add_ray_args(e)
    e.add_argument("-o", "--output", metavar="DIR",
                   help="write best.json and history.png here")
    e.add_argument("--json", action="store_true",
                   help='print {"best", "best_cost", "history", "evaluations"}')
    return {"tune": cmd_tune, "evolve": cmd_evolve}


def cmd_tune(args: argparse.Namespace) -> int:
    from edgec.scale.session import require_tune
    from edgec.scale.tune import format_trials, run_tune

    require_tune()
    if args.resume and args.output and args.output != args.resume:
        raise EdgecError(f"--resume {args.resume} continues that directory; "
                         f"-o {args.output} names another")
    out = args.resume or args.output or "tune-out"
    batch = _batch_trial(args)
    output_dir(out)
    res = run_tune(
        args.config, args.plant, args.space, out, trials=args.trials, search=args.search,
        address=args.address, resume=bool(args.resume), seed=args.seed,
        reference=args.reference, duration=args.duration, workers=args.workers,
        quiet=args.json, batch=batch,
    )
    if args.json:
        print(json.dumps(res.to_json(), indent=2, sort_keys=True))
        return 0 if res.best is not None else 1
    print(f"tune {args.config} on '{args.plant}': {res.search} search, {len(res.trials)} "
          f"trials ({res.ran} run now, {len(res.failed)} failed); results in {res.out_dir}")
    print(format_trials(res))
    if res.best is None:
        print("no trial succeeded")
        return 1
    print(f"best: trial {res.best['trial']}, RMSE {res.best['rmse']:.4g} -> {res.best_config}"
          f" (edgec mpc build {res.best_config})")
    print(f"wrote {', '.join(str(f) for f in res.files)}")
    return 0


def _batch_trial(args: argparse.Namespace) -> BatchTrial | None:
    """--batch and its options as a BatchTrial (None without --batch; its options alone are an
    error)."""
    if args.batch is None:
        for flag, used in (("--vary", args.vary), ("--noise", args.noise != 0.0),
                           ("--aggregate", args.aggregate != "mean"),
                           ("--device", args.device != "auto")):
            if used:
                raise EdgecError(f"{flag} is an option of robust tuning: add --batch N")
        return None
    from edgec.mpc.batch import parse_vary

    return BatchTrial(args.batch, parse_vary(args.vary, args.plant), args.noise, args.seed,
                      args.aggregate, args.device)


def cmd_evolve(args: argparse.Namespace) -> int:
    from edgec.scale.evolve import load_spec, run_evolve
    from edgec.scale.session import require_ray

    require_ray()
    spec = load_spec(args.spec)
    out = output_dir(args.output) if args.output else None

    def progress(g: int, best: float) -> None:
        if not args.json:
            print(f"generation {g + 1}/{spec.generations}: best cost {best:.6g}", flush=True)

    res = run_evolve(spec, address=args.address, workers=args.workers, on_generation=progress)
    if out is not None:
        (out / "best.json").write_text(json.dumps(res.to_json(), indent=2, sort_keys=True) + "\n")
        _plot_history(out / "history.png", res.history, spec.source)
    if args.json:
        print(json.dumps(res.to_json(), indent=2, sort_keys=True))
        return 0
    best = ", ".join(f"{k} = {v:.6g}" for k, v in res.best.items())
    print(f"best of {res.evaluations} evaluations (seed {spec.seed}): cost {res.best_cost:.6g}: "
          f"{best}")
    if out is not None:
        print(f"wrote {out / 'best.json'}, {out / 'history.png'}")
    return 0


def _plot_history(path: object, history: list[float], title: str) -> None:
    from edgec.mpc.simulate import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(history) + 1), history, "o-")
    ax.set_xlabel("generation")
    ax.set_ylabel("best cost of the generation")
    ax.set_title(f"edgec evolve {title}")
    ax.grid(True, lw=0.4, alpha=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def cmd_verify_matrix(args: argparse.Namespace) -> int:
    """``edgec verify --matrix DIR --targets a,b``: called by ``edgec verify``."""
    from edgec.scale.matrix import format_matrix, run_matrix
    from edgec.scale.session import require_ray

    require_ray()
    targets = [t.strip() for t in (args.targets or "").split(",") if t.strip()]
    if args.model is not None:
        raise EdgecError("edgec verify: give a MODEL or --matrix DIR, not both")
    rows = run_matrix(args.matrix, targets, address=args.address, workers=args.workers,
                      n=args.n, seed=args.seed, rtol=args.rtol, atol=args.atol)
    if args.json:
        print(json.dumps({"pairs": rows, "pass": all(r["pass"] for r in rows)}, indent=2,
                         sort_keys=True))
    else:
        print(f"verify --matrix {args.matrix}: {len(rows)} model x target pairs on emulated "
              f"boards")
        print(format_matrix(rows))
    return 0 if all(r["pass"] for r in rows) else 1
