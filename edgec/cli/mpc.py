"""``edgec mpc build|simulate|profile``: the Newton-type MPC controller from a TOML config.

``edgec simulate`` is the same as ``edgec mpc simulate``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edgec.cli.common import output_dir
from edgec.errors import EdgecError

Handler = Callable[[argparse.Namespace], int]


def _simulate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG.toml", help="the MPC configuration")
    p.add_argument(
        "--plant", required=True, choices=("msd", "soft-actuator"), help="the simulated plant"
    )
    p.add_argument(
        "--reference", metavar="PATH.csv",
        help="the path to track: header 't,<output>...', one row per time (required without "
        "--batch; with --batch the default is the plant's example path)",
    )
    p.add_argument("-o", "--output", metavar="DIR", default="mpc-sim",
                   help="where sim.csv and sim.png (--batch: batch.csv, batch.png) go")
    p.add_argument("--json", action="store_true",
                   help='print {"mpc": {...}, "pid": {...}} (rmse, max_error, '
                   "mean_iterations, fallbacks); --batch: one object (RMSE percentiles, events, "
                   "nominal and worst loops)")
    p.add_argument("--target", metavar="T",
                   help="run the controller on target T's emulated board (QEMU), the plant on "
                   "the host, one tick per exchange (default: the host library)")
    b = p.add_argument_group(
        "batch", "N independent closed loops in C (controller + C plant each), loop 0 nominal; "
        "writes batch.csv and batch.png (see edgec/mpc/batch.py)")
    b.add_argument("--batch", type=int, metavar="N", help="run N loops")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the loops run (cpu: host threads; cuda: one loop per GPU thread)")
    b.add_argument("--vary", action="append", default=[], metavar="PARAM=LO:HI",
                   help="draw plant parameter PARAM of loops 1.. uniformly from [LO, HI] "
                   "(repeatable; msd: m, c, k, delay; soft-actuator: inertia, damping, k1, k3, "
                   "k_cc, f_max, radius, mgl, delay; delay in whole ticks)")
    b.add_argument("--reference-set", metavar="DIR",
                   help="references (*.csv as --reference, *.npz with arrays t and ref) "
                   "assigned to the loops round-robin in name order")
    b.add_argument("--threads", type=int, metavar="T",
                   help="host threads (default: the CPUs this process may use)")
    b.add_argument("--seed", type=int, default=0, help="seed of the draws")
    b.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="standard deviation of Gaussian noise on each measured value, loops "
                   "1.. (own seed each)")


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "mpc",
        help="Newton-type MPC on a compiled forward model: build, simulate, profile",
        description="Generate the MPC controller (forward model + generated Jacobian + runtime) "
        "from a TOML config, simulate it in closed loop against a PID, or profile it per "
        "control tick on a target.",
    )
    msub = p.add_subparsers(dest="mpc_cmd", metavar="SUBCOMMAND")
    b = msub.add_parser(
        "build",
        help="write the controller's C sources (or a firmware project / host library)",
        description="Write the controller sources (model .h/.c, edgec_mpc.h/.c, "
        "edgec_mpc_config.h). --target T writes a firmware project for that Cortex-M target "
        "(main() replays recorded ticks); --host also builds the host shared library.",
    )
    b.add_argument("config", metavar="CONFIG.toml")
    b.add_argument("--target", metavar="T", help="write a firmware project for target T")
    b.add_argument("-o", "--output", metavar="DIR", default="mpc-build", help="output directory")
    b.add_argument("--host", action="store_true", help="also build the host shared library")
    b.add_argument("--ticks", type=int, default=64,
                   help="control ticks main() replays (a reference tracked in closed loop with "
                   "the controller's own model as the plant)")
    s = msub.add_parser(
        "simulate",
        help="closed loop on a Python plant with the compiled controller vs an IMC-tuned PID",
        description="Run the compiled C controller in closed loop with a plant model and the "
        "PID on the same path; write sim.csv, sim.png and print the table.",
    )
    _simulate_args(s)
    pr = msub.add_parser(
        "profile",
        help="instructions, cycles and rate per control tick on a Cortex-M target (same as "
        "'edgec profile CONFIG.toml')",
        description="Build the controller's firmware, count its instructions per control tick "
        "on the target's emulated board (a real board: on its core's emulated twin) and report "
        "the rate at the target's clock and the flash/RAM it occupies.",
    )
    pr.add_argument("config", metavar="CONFIG.toml")
    pr.add_argument("--target", default="cortex-m4f", metavar="T",
                    help="target (edgec targets)")
    pr.add_argument("-o", "--output", metavar="DIR", help="keep the firmware project in DIR")
    pr.add_argument("--json", action="store_true", help="print the profile as JSON")
    top = sub.add_parser("simulate", help="same as 'edgec mpc simulate'",
                         description="Same as 'edgec mpc simulate'.")
    _simulate_args(top)
    top.set_defaults(mpc_cmd="simulate")
    return {"mpc": cmd_mpc, "simulate": cmd_mpc}


def cmd_mpc(args: argparse.Namespace) -> int:
    if getattr(args, "mpc_cmd", None) == "build":
        return _build(args)
    if getattr(args, "mpc_cmd", None) == "simulate":
        return _simulate(args)
    if getattr(args, "mpc_cmd", None) == "profile":
        from edgec.cli.profile import profile_mpc

        args.model = args.config
        return profile_mpc(args)
    raise EdgecError("edgec mpc: choose a sub-command: build, simulate or profile")


def _build(args: argparse.Namespace) -> int:
    from edgec.mpc.build import build_controller, write_firmware_project
    from edgec.mpc.config import load_config

    out = output_dir(args.output)
    cfg = load_config(args.config)
    ctrl = build_controller(cfg)
    if args.target:
        from edgec.mpc.target import MODEL_LOOP_NOTE, model_loop_ticks

        ticks = model_loop_ticks(ctrl, args.ticks)
        d = write_firmware_project(ctrl, args.target, out, ticks, what=MODEL_LOOP_NOTE)
        print(f"wrote firmware project {d} (controller '{cfg.name}', target {args.target}); "
              f"main() replays {args.ticks} ticks: {MODEL_LOOP_NOTE}")
        print(f"build it with: make -C {d}   run it: make -C {d} run")
    else:
        paths = ctrl.write_sources(out)
        print(f"wrote {', '.join(str(p) for p in paths)}")
    if args.host:
        print(f"host library: {ctrl.build_host_library()}")
    rep = ctrl.model.report()
    print(f"model '{ctrl.model.name}': jacobian {cfg.jacobian}, "
          f"{rep.get('weight_bytes', '?')} weight bytes, {rep.get('macs', '?')} MACs per call")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from edgec.mpc.config import load_config
    from edgec.mpc.simulate import format_results, load_reference, simulate

    if args.batch is not None:
        return _simulate_batch(args)
    for flag, given in (("--vary", args.vary), ("--reference-set", args.reference_set),
                        ("--threads", args.threads), ("--device", args.device != "cpu"),
                        ("--noise", args.noise)):
        if given:
            raise EdgecError(f"{flag} is an option of batched simulation: add --batch N")
    if args.reference is None:
        raise EdgecError("simulate: --reference PATH.csv is required (without --batch)")
    output_dir(args.output)
    cfg = load_config(args.config)
    t, ref = load_reference(args.reference, cfg.outputs)
    res = simulate(cfg, args.plant, t, ref, args.output, target=args.target)
    if args.json:
        print(json.dumps({k: res[k] for k in ("mpc", "pid")}, indent=2, sort_keys=True))
        return 0
    where = f"on {args.target} (QEMU)" if args.target else "on the host"
    print(f"closed loop on '{args.plant}', {args.reference}, {cfg.rate_hz:g} Hz "
          f"({cfg.jacobian} Jacobian, controller {where}); wrote {', '.join(res['files'])}")
    print(format_results(res))
    return 0


def _simulate_batch(args: argparse.Namespace) -> int:
    from edgec.mpc.batch import (
        check_batch_args,
        check_batch_plant,
        load_reference_set,
        parse_vary,
        reference_from_rows,
    )
    from edgec.mpc.batch_report import describe, format_summary, simulate_batch
    from edgec.mpc.config import load_config
    from edgec.mpc.simulate import load_reference

    if args.device == "cuda" and args.threads is not None:
        raise EdgecError("--threads is for --device cpu (--device cuda runs one loop per GPU "
                         "thread)")
    if args.target:
        raise EdgecError("--target runs one loop on an emulated board: drop it or --batch")
    if args.reference and args.reference_set:
        raise EdgecError("give --reference or --reference-set, not both")
    check_batch_args(args.batch, args.threads, args.noise)
    vary = parse_vary(args.vary, args.plant)
    cfg = load_config(args.config)
    check_batch_plant(cfg, args.plant)
    refs = None
    if args.reference_set:
        refs = load_reference_set(args.reference_set, cfg)
    elif args.reference:
        t, ref = load_reference(args.reference, cfg.outputs)
        refs = [reference_from_rows(Path(args.reference).name, t, ref, cfg)]
    output_dir(args.output)
    _, summary = simulate_batch(
        cfg, args.plant, args.batch, vary, refs, args.seed, args.threads, args.noise,
        args.output, label="" if args.json else f"{args.batch:,} closed loops",
        device=args.device,
    )
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    print(describe(summary) + f"; wrote {', '.join(summary['files'])}")
    print(format_summary(summary))
    return 0
