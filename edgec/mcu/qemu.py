"""Running firmware on a target's emulated board (QEMU with semihosting) and reading back the
outputs it printed, bit-exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def kill(proc: subprocess.Popen[Any]) -> None:
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


class QemuProcess:
    """QEMU started with its output in files, not pipes: its console writes are non-blocking,
    and output that finds a pipe full when the firmware exits is lost (long result lines came
    back cut off under load); a regular file takes every write. A context manager: leaving it
    kills QEMU if it still runs and closes the files."""

    def __init__(self, cmd: list[str]):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.err, start_new_session=True)

    def wait(self, timeout_s: float, what: str) -> tuple[str, str]:
        """(stdout, stderr) once QEMU has exited; a one-line error if it runs past timeout_s."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill(self.proc)
            raise ToolchainError(f"{what} did not finish within {timeout_s:g} s (the firmware "
                                 "hung or faulted?)") from None
        texts = []
        for f in (self.out, self.err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
        return texts[0], texts[1]

    def __enter__(self) -> QemuProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        kill(self.proc)
        self.out.close()
        self.err.close()


def run_qemu(
    build: FirmwareBuild, timeout_s: float = 60, plugin_args: list[str] | None = None
) -> QemuResult:
    """Run ``build`` on its target's QEMU board; returns what it printed and the outputs.

    ``plugin_args``: ``[library, "arg=value", ...]`` loads a TCG plugin
    (``-plugin library,arg=value,... -d plugin``); a list starting with an option
    (``["-plugin", ...]``) is passed to QEMU as is. The firmware must exit with status 0.
    """
    cmd = qemu_command(build.target, build.elf) + _plugin_args(plugin_args)
    what = f"{build.name} on {build.target.name} (QEMU {build.target.qemu_machine})"
    with QemuProcess(cmd) as qemu:
        stdout, stderr = qemu.wait(timeout_s, what)
    proc = qemu.proc
    check_exit(proc.returncode, stdout + stderr, what)
    outputs = parse_outputs(stdout + "\n" + stderr, build.outputs, build.n_vectors)
    return QemuResult(stdout=stdout, returncode=proc.returncode, outputs=outputs, stderr=stderr)
