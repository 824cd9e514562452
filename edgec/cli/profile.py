"""``edgec profile MODEL --target T [--json]``: instructions, estimated cycles, flash and RAM."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from edgec.cli.common import add_model_args, compile_from_args, output_dir
from edgec.mcu.profile import ProfileReport

Handler = Callable[[argparse.Namespace], int]

DEFAULT_TARGET = "cortex-m4f"


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "profile",
        help="exact instructions per inference on an emulated Cortex-M, estimated cycles, "
        "flash and RAM",
        description="Build the model's firmware for the target, run it on QEMU with edgec's "
        "instruction-counting plugin and report the instructions executed per inference "
        "(exact: the same ELF gives the same count on every run), estimated cycles from the "
        "core's instruction timing table, MACs per cycle, and the flash (code / weights / other) "
        "and RAM (arena / state / stack / other) the firmware occupies.",
    )
    add_model_args(p)
    p.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        metavar="T",
        help="target (edgec targets); a board without an emulator is counted on its core's "
        "emulated twin, time at the board's clock, flash and RAM from the board's build",
    )
    p.add_argument(
        "--repeat", type=int, default=2, help="inferences measured (the report gives the mean)"
    )
    p.add_argument("-o", "--output", metavar="DIR", help="keep the firmware project in DIR")
    p.add_argument(
        "--per-layer", action="store_true",
        help="also count each node: instructions, estimated cycles, MACs and bytes per kernel "
        "(a second build with each kernel call bracketed by the counting markers)",
    )
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    return {"profile": cmd_profile}


def cmd_profile(args: argparse.Namespace) -> int:
    from edgec.errors import EdgecError
    from edgec.mcu.profile import profile

    if args.repeat < 1:
        raise EdgecError(f"--repeat must be at least 1 (got {args.repeat})")
    if str(args.model).endswith(".toml"):  # an MPC controller config: per control tick
        return profile_mpc(args)
    from edgec.tables import status

    if args.output:
        output_dir(args.output)
    m = compile_from_args(args)
    with status(f"building and counting {m.name} on {args.target}"):
        rep = profile(m, args.target, out_dir=args.output, repeat=args.repeat,
                      per_layer=args.per_layer)
    if args.json:
        print(json.dumps(rep.to_json() | {"source": args.model}, indent=2, sort_keys=True))
        return 0
    from edgec.mcu.targets import load_target

    note = weights_note(m.report(), rep, load_target(args.target).has_dsp)
    print(format_profile(rep, args.model, note))
    return 0


def weights_note(report: dict[str, Any], rep: ProfileReport, dsp: bool) -> str | None:
    """A note when the ELF holds other model table bytes than the compile report counts for
    the target's build path (``dsp``: the core has the DSP extension; int8 models:
    ``weight_bytes_dsp`` or ``weight_bytes_generic``): fewer when the compiler folded tables
    whose every read it could resolve into code."""
    path = "dsp" if dsp else "generic"
    counted = int(report.get(f"weight_bytes_{path}", report.get("weight_bytes", 0)))
    if rep.size.weights == counted:
        return None
    why = (" (the compiler folded tables whose reads it resolved into code)"
           if rep.size.weights < counted else "")
    return (f"weights: the ELF holds {_b(rep.size.weights)}, the compile report counts "
            f"{_b(counted)} for this core's build ({'DSP' if dsp else 'generic'} int8 "
            f"kernels){why}")


def _b(n: int) -> str:
    return f"{n:,} B"


def format_profile(rep: ProfileReport, source: str, note: str | None = None) -> str:
    from edgec.tables import format_duration, format_table

    fl, ram = rep.size.flash_json(), rep.size.ram_json()
    rows: list[tuple[str, Any]] = [
        ("instructions / inference", f"{rep.instructions_per_inference:,}" + _spread(rep)),
        ("instructions / MAC", f"{rep.instructions_per_mac:.2f}" if rep.macs else "-"),
        (
            "estimated cycles",
            f"{rep.estimated_cycles:,} ({format_duration(rep.estimated_time_us * 1e-6)} at "
            f"{rep.target}'s {rep.clock_hz / 1e6:g} MHz)",
        ),
        ("MACs / inference", f"{rep.macs:,}"),
        ("MACs / cycle", f"{rep.macs_per_cycle:.3f}" if rep.macs else "-"),
        (
            "flash",
            f"{_b(fl['total'])} = code {_b(fl['code'])} + weights {_b(fl['weights'])} + "
            f"other {_b(fl['other'])}; {fl['percent']:.2f} % of {_b(fl['available'])}",
        ),
        (
            "RAM",
            f"{_b(ram['total'])} = arena {_b(ram['arena'])} + state {_b(ram['state'])} + "
            f"stack {_b(ram['stack'])} + other {_b(ram['other'])}; "
            f"{ram['percent']:.2f} % of {_b(ram['available'])}",
        ),
    ]
    where = f"its emulated twin {rep.emulated_on}" if rep.emulated_on else "QEMU"
    head = (
        f"profile {source} on {rep.target} ({rep.core}), counted on {where}, "
        f"{rep.inferences} inference(s) measured"
    )
    notes = [
        f"cycles: {rep.cycle_source}; zero wait states, best case",
        "stack: deepest call chain " + " > ".join(rep.size.stack_chain) + " (-fstack-usage)"
        if rep.size.stack_chain
        else "stack: no -fstack-usage data",
        "other RAM: C library data, I/O buffers, heap reserve and the unused stack reserve "
        f"({_b(rep.size.stack_reserved)} reserved for the stack)",
    ]
    if rep.size.stack_unknown:
        notes.append("stack: no frame size for " + ", ".join(rep.size.stack_unknown))
    if note:
        notes.append(note)
    parts = [head, format_table(["", ""], rows, align="ll"), *notes]
    if rep.layers:
        total = rep.instructions_per_inference or 1
        layer_rows = [
            [la.index, la.node, la.op, f"{la.instructions:,.0f}",
             f"{100 * la.instructions / total:.1f} %", f"{la.estimated_cycles:,}",
             f"{la.macs:,}", f"{la.instructions / la.macs:.2f}" if la.macs else "-",
             f"{la.weight_bytes:,}", f"{la.activation_bytes:,}"]
            for la in rep.layers
        ]
        layer_rows.append(["", "(between kernels)", "", f"{rep.layer_overhead:,.0f}",
                           f"{100 * rep.layer_overhead / total:.1f} %", "", "", "", "", ""])
        parts += ["", "per layer (instructions exact, cycles estimated):", format_table(
            ["#", "node", "op", "instructions", "share", "est. cycles", "MACs", "instr/MAC",
             "weight B", "activation B"], layer_rows, align="rllrrrrrrr",
        )]
    return "\n".join(parts)


def _spread(rep: ProfileReport) -> str:
    if rep.instructions_min == rep.instructions_max:
        return ""
    return f" (min {rep.instructions_min:,}, max {rep.instructions_max:,})"


def profile_mpc(args: argparse.Namespace) -> int:
    """`edgec profile CONFIG.toml`: the MPC firmware's instructions per control tick."""
    from edgec.mpc.build import build_controller
    from edgec.mpc.config import load_config
    from edgec.mpc.target import format_mpc_profile, profile_controller

    if args.output:
        output_dir(args.output)
    cfg = load_config(args.model)
    rep = profile_controller(build_controller(cfg), args.target, out_dir=args.output)
    if args.json:
        print(json.dumps(rep.to_json() | {"source": args.model}, indent=2, sort_keys=True))
        return 0
    print(format_mpc_profile(rep, args.model))
    return 0
