"""Firmware sub-commands of the ``edgec`` CLI: targets, build, run, flash (and ``verify
--target``'s on-board half)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.cli.common import (
    INPUTS_RULE,
    add_model_args,
    compile_from_args,
    input_sets,
    output_dir,
)
from edgec.errors import EdgecError
from edgec.mcu.targets import (
    DEFAULT_TARGET,
    Target,
    emulated_twin,
    list_targets,
    load_target,
)

Handler = Callable[[argparse.Namespace], int]


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KB"
    return f"{n} B"


def _target_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--target",
        default=None if required else DEFAULT_TARGET,
        required=required,
        metavar="T",
        help="target name (edgec targets) or a .toml description",
    )


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "targets",
        help="list the Cortex-M targets (cores, memory, emulator, probe names)",
        description="List the targets edgec builds firmware for.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = sub.add_parser(
        "build",
        help="write and build a firmware project (ELF, BIN, HEX) for a Cortex-M target",
        description="Write a self-contained firmware project for the model (its C, startup "
        "code, linker script, a main that runs embedded input vectors and prints the outputs, "
        "a Makefile and a CMakeLists.txt) and build ELF, BIN and HEX. Fails (exit 2) when the "
        "model does not fit the target's flash or RAM.",
    )
    add_model_args(p)
    _target_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="project directory")
    p.add_argument(
        "--inputs",
        metavar="FILE",
        help=".npy (one-input model) or .npz keyed by input name, the vectors to embed: "
        f"{INPUTS_RULE} (default: one random vector)",
    )
    p.add_argument("--repeat", type=int, default=1, help="passes main() makes over the vectors")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser(
        "run",
        help="build the firmware, run it on the target's emulated board (QEMU), print outputs",
        description="Build the model's firmware with the given inputs embedded, run it on QEMU "
        "and print the outputs it computed (read back bit-exactly). A stateful model steps "
        "through the input vectors as one sequence.",
    )
    add_model_args(p)
    _target_arg(p)
    p.add_argument(
        "--inputs",
        required=True,
        metavar="FILE",
        help=".npy (one-input model) or .npz keyed by input name: "
        f"{INPUTS_RULE}; a stateful model steps through them as one sequence",
    )
    p.add_argument("--json", action="store_true", help="print the outputs as JSON")
    p.add_argument("--timeout", type=float, default=120, help="QEMU time limit in seconds")

    p = sub.add_parser(
        "flash",
        help="load a firmware ELF onto a board (pyOCD, OpenOCD) or into QEMU through GDB",
        description="Program an ELF with pyOCD (its Python API) or OpenOCD using the target's "
        "probe settings, or, with --probe qemu, start QEMU with a GDB server, load the ELF "
        "with gdb-multiarch's 'load', run it and print what it printed.",
    )
    p.add_argument("elf", help="firmware ELF (from edgec build: DIR/build/<name>.elf)")
    p.add_argument(
        "--probe", required=True, choices=("pyocd", "openocd", "qemu"),
        help="pyocd: program through pyOCD's Python API (pip install pyocd) with the target's "
        "pyocd_target; openocd: 'program ELF verify reset exit' with the target's "
        "openocd_config; qemu: load the ELF into the target's emulated board through GDB "
        "(gdb-multiarch) and print what it prints",
    )
    _target_arg(p)
    p.add_argument("--timeout", type=float, default=120, help="time limit in seconds")

    return {"targets": cmd_targets, "build": cmd_build, "run": cmd_run, "flash": cmd_flash}


# -- inputs ----------------------------------------------------------------------------------
def vectors_from_file(path: str, cm: Any) -> list[list[np.ndarray]]:
    """Input vectors from a .npy/.npz file for ``cm`` (a CompiledModel), by the rule every
    command shares (:data:`edgec.cli.common.INPUTS_RULE`): per vector, one array per input
    main() feeds (a stateful model's non-state inputs)."""
    from edgec.mcu.project import step_ports

    in_ports, _ = step_ports(cm)
    return [[s[p.name] for p in in_ports] for s in input_sets(path, in_ports)]


# -- commands --------------------------------------------------------------------------------
def cmd_targets(args: argparse.Namespace) -> int:
    from edgec.tables import format_table

    targets = list_targets()
    if args.json:
        print(json.dumps([
            {
                "name": t.name, "core": t.core, "cpu_flags": t.cpu_flags, "has_fpu": t.has_fpu,
                "flash_origin": t.flash_origin, "flash_size": t.flash_size,
                "ram_origin": t.ram_origin, "ram_size": t.ram_size, "clock_hz": t.clock_hz,
                "qemu_machine": t.qemu_machine, "pyocd_target": t.pyocd_target,
                "description": t.description,
            }
            for t in targets
        ], indent=2))
        return 0
    rows = [
        [
            t.name + (" (default)" if t.name == DEFAULT_TARGET else ""),
            t.core,
            t.float_abi + " float" + (f" ({_fpu(t)})" if t.has_fpu else ""),
            _size(t.flash_size),
            _size(t.ram_size),
            f"{t.clock_hz / 1e6:g} MHz",
            t.qemu_machine or "-",
            t.pyocd_target or "-",
        ]
        for t in targets
    ]
    print(format_table(
        ["target", "core", "float", "flash", "RAM", "clock", "QEMU board", "pyOCD target"],
        rows, align="llllllll",
    ))
    return 0


def _fpu(t: Target) -> str:
    return next((f.split("=", 1)[1] for f in t.cpu_flags if f.startswith("-mfpu=")), "fpu")


def cmd_build(args: argparse.Namespace) -> int:
    from edgec.backend.report import weights_cell
    from edgec.mcu.project import build_firmware

    target = load_target(args.target)
    out = output_dir(args.output)
    m = compile_from_args(args)
    vectors = vectors_from_file(args.inputs, m) if args.inputs else None
    b = build_firmware(m, target, out, vectors, repeat=args.repeat)
    rep = m.report()
    path = "dsp" if target.has_dsp else "generic"
    info = {
        "target": target.name,
        "project": str(b.project_dir),
        "elf": str(b.elf), "bin": str(b.bin), "hex": str(b.hex), "map": str(b.map),
        "flash_used": b.flash_used, "flash_size": target.flash_size,
        "ram_used": b.ram_used, "ram_size": target.ram_size,
        "weight_bytes": rep.get(f"weight_bytes_{path}", rep["weight_bytes"]),
        "warnings": b.warnings, "output": b.io_note,
        "uf2": str(b.uf2) if b.uf2 else None,
    }
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"built {m.name} for {target.name} ({target.description}) in {b.project_dir}")
    print(f"  ELF {b.elf}, BIN {b.bin.name}, HEX {b.hex.name}, map {b.map.name}"
          + (f", UF2 {b.uf2.name} (hold BOOTSEL, copy it to the RPI-RP2 drive)" if b.uf2 else ""))
    print(f"  output: {b.io_note}")
    print(f"  flash {b.flash_used} / {target.flash_size} bytes "
          f"({100 * b.flash_used / target.flash_size:.1f} %)")
    print(f"  weights {weights_cell(rep, target.has_dsp)}")
    print(f"  RAM   {b.ram_used} / {target.ram_size} bytes "
          f"({100 * b.ram_used / target.ram_size:.1f} %, with "
          f"{target.heap_bytes} B heap and {target.stack_bytes} B stack reserved)")
    print(f"  rebuild: make -C {b.project_dir}   or   cmake -B build "
          f"-DCMAKE_TOOLCHAIN_FILE=arm-none-eabi.cmake (in the project)")
    if target.qemu_machine:
        print(f"  run: make -C {b.project_dir} run   (QEMU {target.qemu_machine})")
    else:
        print(f"  run: make -C {b.project_dir} flash   then   make -C {b.project_dir} run "
              f"PORT=/dev/ttyACM0   (programs the board, then prints its serial output)")
    for w in b.warnings:
        print(f"  compiler: {w}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgec.mcu.project import step_ports
    from edgec.mcu.run import run_on_target

    target = load_target(args.target)
    m = compile_from_args(args)
    vectors = vectors_from_file(args.inputs, m)
    outs = run_on_target(m, target, vectors, timeout_s=args.timeout)
    _, out_ports = step_ports(m)
    if args.json:
        print(json.dumps({
            "model": m.name, "target": target.name, "stateful": m.is_stateful,
            "outputs": [
                {p.name: o.tolist() for p, o in zip(out_ports, vec, strict=True)}
                for vec in outs
            ],
        }))
        return 0
    how = "steps of one sequence" if m.is_stateful else "input vector(s)"
    twin = emulated_twin(target)
    where = f"QEMU {target.qemu_machine}" if target.qemu_machine else (
        f"QEMU {twin.qemu_machine}, its twin {twin.name}" if twin else "no emulator"
    )
    print(f"{m.name} on {target.name} ({where}): {len(outs)} {how}")
    for i, vec in enumerate(outs):
        for p, o in zip(out_ports, vec, strict=True):
            text = np.array2string(o, precision=7, separator=", ", max_line_width=100)
            print(f"[{i}] {p.name} {p.shape_str}: {text}")
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from edgec.mcu.flash import flash_openocd, flash_pyocd, flash_qemu

    target = load_target(args.target)
    if not Path(args.elf).is_file():
        raise EdgecError(f"{args.elf}: no such file")
    if args.probe == "qemu":
        res = flash_qemu(args.elf, target, timeout_s=args.timeout)
        print(res.stdout, end="" if res.stdout.endswith("\n") else "\n")
        return 0
    if args.probe == "pyocd":
        print(flash_pyocd(args.elf, target))
    else:
        print(flash_openocd(args.elf, target, timeout_s=args.timeout))
    return 0
