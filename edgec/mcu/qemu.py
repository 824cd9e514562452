"""Running firmware on a target's emulated board (QEMU with semihosting) and reading back the
outputs it printed, bit-exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.backend.c_emit import Port
from edgec.errors import EdgecError, ToolchainError
from edgec.mcu.project import FirmwareBuild
from edgec.mcu.targets import Target
from edgec.mcu.toolchain import find_tool

#: QEMU's exit status when the firmware faulted (edgec_fault)
FAULT_EXIT = 70
_RESULT_LINE = re.compile(r"^y (\d+) (\d+):((?: [0-9a-f]{8}| [0-9a-f]{2})*)\s*$", re.M)


@dataclass
class QemuResult:
    stdout: str
    returncode: int
    #: per input vector, the printed outputs (reshaped to their ports' shapes)
    outputs: list[list[np.ndarray]]
    stderr: str = ""


def parse_outputs(text: str, ports: Sequence[Port], n_vectors: int) -> list[list[np.ndarray]]:
    """The outputs main() printed: per vector, one array per port (bit-exact): floats as
    8-hex-digit bit patterns, int8 codes as 2-hex-digit bytes."""
    got: dict[tuple[int, int], np.ndarray] = {}
    for m in _RESULT_LINE.finditer(text):
        key = (int(m.group(1)), int(m.group(2)))
        words = m.group(3).split()
        int8 = key[1] < len(ports) and ports[key[1]].dtype == "int8"
        if any(len(w) != (2 if int8 else 8) for w in words):
            continue
        if int8:
            got[key] = np.array([int(w, 16) for w in words], np.uint8).view(np.int8)
        else:
            got[key] = np.array([int(w, 16) for w in words], np.uint32).view(np.float32)
    out: list[list[np.ndarray]] = []
    for i in range(n_vectors):
        row = []
        for k, p in enumerate(ports):
            v = got.get((i, k))
            if v is None or v.size != p.size:
                raise ToolchainError(
                    f"firmware output incomplete: no valid line for vector {i}, output "
                    f"'{p.name}' (the board printed {len(got)} of {n_vectors * len(ports)})"
                )
            row.append(v.reshape(p.shape).copy())
        out.append(row)
    return out


def qemu_command(target: Target, elf: Path | None = None) -> list[str]:
    if not target.qemu_machine:
        raise EdgecError(
            f"target {target.name} has no emulator; use a QEMU target (cortex-m0, cortex-m3, "
            "cortex-m4f, cortex-m7, cortex-m33) or flash a board (edgec flash --probe ...)"
        )
    cmd = [find_tool("qemu-system-arm"), "-M", target.qemu_machine, "-nographic",
           "-semihosting-config", "enable=on,target=native"]
    if elf is not None:
        cmd += ["-kernel", str(elf)]
    return cmd


def _plugin_args(plugin_args: Sequence[str] | None) -> list[str]:
    if not plugin_args:
        return []
    if plugin_args[0].startswith("-"):  # already QEMU options
        return list(plugin_args)
    return ["-plugin", ",".join(plugin_args), "-d", "plugin"]


def communicate(
    proc: subprocess.Popen[str], timeout_s: float, what: str
) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise ToolchainError(
            f"{what} did not finish within {timeout_s:g} s (the firmware hung or faulted?)"
        ) from None


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def check_exit(returncode: int, text: str, what: str) -> None:
    if returncode == FAULT_EXIT and "edgec: fault" in text:
        fault = text[text.index("edgec: fault") :].splitlines()[0]
        raise ToolchainError(f"{what}: the firmware stopped with '{fault}'")
    if returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise ToolchainError(f"{what}: the firmware exited with status {returncode} ({tail})")


def run_qemu(
    build: FirmwareBuild, timeout_s: float = 60, plugin_args: list[str] | None = None
) -> QemuResult:
    """Run ``build`` on its target's QEMU board; returns what it printed and the outputs.

    ``plugin_args``: ``[library, "arg=value", ...]`` loads a TCG plugin
    (``-plugin library,arg=value,... -d plugin``); a list starting with an option
    (``["-plugin", ...]``) is passed to QEMU as is. The firmware must exit with status 0.
    """
    cmd = qemu_command(build.target, build.elf) + _plugin_args(plugin_args)
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    what = f"{build.name} on {build.target.name} (QEMU {build.target.qemu_machine})"
    stdout, stderr = communicate(proc, timeout_s, what)
    check_exit(proc.returncode, stdout + stderr, what)
    outputs = parse_outputs(stdout + "\n" + stderr, build.outputs, build.n_vectors)
    return QemuResult(stdout=stdout, returncode=proc.returncode, outputs=outputs, stderr=stderr)
