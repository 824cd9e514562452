#!/usr/bin/env python3
"""MISRA C:2012 report of edgec's C (cppcheck and its MISRA addon, Debian's ``cppcheck``).

Two scopes, each measured in findings per 1,000 lines:

- ``generated``: the C that edgec writes for the test models (tests/models.py, one model per
  op family; weight-table rows are not counted as lines);
- ``firmware``: firmware/ as it ships to a board (startup, I/O, markers, board UARTs, the MPC
  runtime with the configuration of a one-step and of a horizon controller). The QEMU plugin
  under firmware/qemu_plugin/ is a host tool, not firmware, and is left out.

Findings of the rules recorded in docs/misra.md (scripts/misra.toml ``[deviations]``) are
counted apart. Every rule has a ceiling per scope (``[ceilings]``, 0 when absent); the check
fails when a rule goes over its ceiling or when the findings outside the deviations exceed
``goal_per_kloc`` per 1,000 lines.

    scripts/misra.sh            # report and check (exit 1 on a ceiling exceeded)
    scripts/misra.py --json     # the counts as JSON
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts" / "misra.toml"
#: one configuration analysed: GCC, 32-bit Arm with the FPU (the DSP kernels' assembly
#: included), as the firmware is built
DEFINES = ("-D__GNUC__=12", "-D__arm__", "-D__ARM_ARCH_PROFILE=77", "-D__ARM_FP=4",
           "-D__ARM_FEATURE_FMA=1")
FIRMWARE_COMMON = ("startup.c", "edgec_io.c", "edgec_marks.c")
#: each board's output is its own program with the common files (they define the same
#: functions); analysed as a board build is compiled, without semihosting
FIRMWARE_BOARDS = ("boards/stm32f4_usart2.c", "boards/stm32h7_usart3.c", "boards/nrf_uart0.c",
                   "boards/rp2040_uart0.c")
_TABLE_ROW = re.compile(r"^\s+[-+0-9.eEfx, ]+,?$")
_FINDING = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):misra-c2012-(?P<rule>[\d.]+)$")


@dataclass
class Scope:
    name: str
    lines: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    where: dict[str, Counter[str]] = field(default_factory=dict)  # rule -> file -> count

    def add(self, rule: str, file: str) -> None:
        self.findings[rule] += 1
        self.where.setdefault(rule, Counter())[Path(file).name] += 1


def cppcheck() -> str | None:
    return shutil.which("cppcheck")


def count_lines(path: Path) -> int:
    """Lines of a C file, weight-table rows (numbers and commas only) not counted."""
    return sum(1 for ln in path.read_text().splitlines() if not _TABLE_ROW.match(ln))


def run_cppcheck(sources: list[Path], include: list[Path], scope: Scope,
                 defines: tuple[str, ...] = (), only: set[str] | None = None) -> None:
    """One cppcheck run (one program: its files share one namespace) added to ``scope``."""
    exe = cppcheck()
    if exe is None:
        raise RuntimeError("cppcheck not found: apt-get install cppcheck")
    with tempfile.TemporaryDirectory(prefix="edgec-misra-") as build:
        cmd = [exe, "--addon=misra", "--std=c99", "--quiet", "--platform=unix32",
               f"--cppcheck-build-dir={build}", "--suppress=missingIncludeSystem",
               "--template={file}:{line}:{id}", *DEFINES, *defines,
               *[f"-I{d}" for d in include], *map(str, sources)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    for ln in proc.stderr.splitlines():
        m = _FINDING.match(ln.strip())
        if m and (only is None or Path(m["file"]).name in only):
            scope.add(m["rule"], m["file"])


# -- what is analysed ------------------------------------------------------------------------
def _test_models() -> list[tuple[str, object, tuple[int, ...]]]:
    from tests import models

    return [
        ("mlp", models.TanhMLP, (1, 4)),
        ("activations", models.ActivationMix, (3, 6)),
        ("cnn1d", models.CNN1d, (1, 3, 37)),
        ("dscnn2d", models.DSCNN2d, (1, 3, 17, 17)),
        ("pool2d", models.PoolNet2d, (1, 2, 12, 12)),
        ("attention", models.AttentionPool, (1, 7, 8)),
        ("gru", models.GRUNet, (1, 9, 3)),
        ("lstm", models.LSTMNet, (1, 9, 3)),
    ]


def write_generated(out: Path) -> list[Path]:
    """The test models' generated C, one directory each; returns the directories."""
    import torch

    import edgec
    from tests import models

    dirs = []
    for key, factory, shape in _test_models():
        net = models.build(factory)
        x = [torch.from_numpy(models.random_inputs([shape])[0])]
        path = models.export(net, x, out / f"{key}.onnx", "legacy", optimize=key != "dscnn2d")
        m = edgec.compile(path, name=f"misra_{key}")
        d = out / key
        m.write(d)
        dirs.append(d)
    return dirs


def write_controllers(out: Path) -> list[Path]:
    """The MPC runtime with the configuration of a one-step and of a horizon controller."""
    import torch
    from torch import nn

    from edgec.mpc.build import build_controller
    from edgec.mpc.config import config_from_dict
    from edgec.mpc.plants import MassSpringDamper, msd_dynamics_module

    torch.manual_seed(0)
    narx = config_from_dict({
        "name": "misra_narx", "model": {"module": "unused:attr"},
        "mapping": {"commands": 2, "outputs": 2, "command_lags": 1, "output_lags": 1,
                    "sensors": 1},
        "limits": {"u_min": -1.0, "u_max": 1.0, "du_max": 0.25},
    })
    dyn = config_from_dict({
        "name": "misra_dyn", "model": {"module": "unused:attr"},
        "mapping": {"kind": "dynamics", "states": 2, "commands": 1, "track": [0]},
        "limits": {"u_min": -20.0, "u_max": 20.0, "du_max": 5.0},
        "control": {"horizon": 4},
    })
    net = nn.Sequential(nn.Linear(narx.model_inputs, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    dirs = []
    for cfg, module in ((narx, net), (dyn, msd_dynamics_module(MassSpringDamper(dt=0.01)))):
        d = out / cfg.name
        build_controller(cfg, module).write_sources(d)
        dirs.append(d)
    return dirs


def measure(work: Path) -> dict[str, Scope]:
    gen, fw = Scope("generated"), Scope("firmware")
    for d in write_generated(work / "generated"):
        sources = sorted(d.glob("*.c"))
        gen.lines += sum(count_lines(p) for p in [*sources, *d.glob("*.h")])
        run_cppcheck(sources, [d], gen)
    firmware = ROOT / "firmware"
    common = [firmware / f for f in FIRMWARE_COMMON]
    boards = [firmware / f for f in FIRMWARE_BOARDS]
    fw.lines += sum(count_lines(p) for p in [*common, *boards, *firmware.glob("*.h")])
    for i, board in enumerate(boards):  # the common files' findings once
        names = {board.name} | ({p.name for p in common} | {"edgec_io.h", "edgec_marks.h"}
                                if i == 0 else set())
        run_cppcheck([*common, board], [firmware], fw, ("-DEDGEC_SEMIHOSTING=0",), names)
    runtime = {"edgec_mpc.c", "edgec_mpc.h"}
    for i, d in enumerate(write_controllers(work / "mpc")):
        if i == 0:  # the runtime's lines once; its findings in both modes
            fw.lines += count_lines(d / "edgec_mpc.c") + count_lines(d / "edgec_mpc.h")
        run_cppcheck([d / "edgec_mpc.c"], [d], fw, (), runtime | {"edgec_mpc_config.h"})
    return {"generated": gen, "firmware": fw}


# -- the check -------------------------------------------------------------------------------
def load_config() -> dict:
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def evaluate(scopes: dict[str, Scope], cfg: dict) -> tuple[dict, list[str]]:
    """Per scope: lines, findings by rule, deviated and other findings, the rate per 1,000
    lines outside the deviations; and the list of failures against the ceilings and goal."""
    report: dict = {}
    failures: list[str] = []
    goal = float(cfg["goal_per_kloc"])
    for name, sc in scopes.items():
        deviated = set(cfg["deviations"].get(name, {}))
        ceilings = {str(k): int(v) for k, v in cfg["ceilings"].get(name, {}).items()}
        other = sum(n for r, n in sc.findings.items() if r not in deviated)
        rate = 1000.0 * other / max(sc.lines, 1)
        report[name] = {
            "lines": sc.lines,
            "findings": sum(sc.findings.values()),
            "deviated": sum(n for r, n in sc.findings.items() if r in deviated),
            "other": other,
            "other_per_kloc": round(rate, 2),
            "total_per_kloc": round(1000.0 * sum(sc.findings.values()) / max(sc.lines, 1), 2),
            "by_rule": dict(sorted(sc.findings.items(), key=_rule_key)),
            "where": {r: dict(c) for r, c in sorted(sc.where.items(), key=_rule_key)},
        }
        for rule, n in sorted(sc.findings.items(), key=_rule_key):
            if n > ceilings.get(rule, 0):
                failures.append(f"{name}: rule {rule}: {n} findings, ceiling "
                                f"{ceilings.get(rule, 0)} ({dict(sc.where[rule])})")
        if rate > goal:
            failures.append(f"{name}: {rate:.1f} findings per 1,000 lines outside the "
                            f"deviations, goal {goal:g}")
    return report, failures


def _rule_key(item: tuple[str, object]) -> tuple[int, ...]:
    return tuple(int(p) for p in item[0].split("."))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    ap.add_argument("--keep", type=Path, help="write the analysed sources here")
    args = ap.parse_args(argv)
    if cppcheck() is None:
        print("misra: cppcheck not found (apt-get install cppcheck)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="edgec-misra-src-") as tmp:
        work = args.keep or Path(tmp)
        report, failures = evaluate(measure(work), load_config())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, r in report.items():
            print(f"{name}: {r['lines']} lines, {r['findings']} findings "
                  f"({r['total_per_kloc']}/kloc), {r['deviated']} under recorded deviations, "
                  f"{r['other']} others = {r['other_per_kloc']} per 1,000 lines")
            print("  by rule: " + ", ".join(f"{k}: {v}" for k, v in r["by_rule"].items()))
    for f in failures:
        print(f"misra: FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
