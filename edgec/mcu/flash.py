"""Loading firmware onto boards: pyOCD, OpenOCD, or QEMU's GDB server through gdb-multiarch."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from edgec.errors import EdgecError, ToolchainError
from edgec.mcu.elf import check_load_addresses
from edgec.mcu.qemu import QemuProcess, QemuResult, check_exit, kill, qemu_command
from edgec.mcu.targets import Target
from edgec.mcu.toolchain import find_tool


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flash_qemu(elf: str | os.PathLike[str], target: Target, timeout_s: float = 60) -> QemuResult:
    """Load ``elf`` into the target's QEMU board through GDB (gdb-multiarch's ``load`` over
    QEMU's GDB server, the path a debug probe takes), run it and return what it printed."""
    elf = Path(elf)
    if not elf.is_file():
        raise EdgecError(f"{elf}: no such file")
    check_load_addresses(elf, target)
    qemu_command(target)  # a target without an emulator stops here, before QEMU or GDB start
    gdb = find_tool("gdb-multiarch")
    port = _free_port()
    qemu_cmd = qemu_command(target) + ["-S", "-gdb", f"tcp:127.0.0.1:{port}"]
    vectors = f"0x{target.flash_origin:08x}"
    gdb_cmd = [
        gdb, "-nx", "-batch",
        "-ex", "set pagination off", "-ex", "set confirm off",
        "-ex", "set tcp connect-timeout 20",
        "-ex", f"target remote 127.0.0.1:{port}",
        "-ex", "load",
        # QEMU reset the core before the image was there: take SP and PC from its vector table
        "-ex", f"set $sp = *(unsigned int *){vectors}",
        "-ex", f"set $pc = *(unsigned int *)({vectors} + 4)",
        "-ex", "continue",
        str(elf),
    ]
    what = f"{elf.name} on {target.name} (QEMU {target.qemu_machine}, loaded by gdb)"
    gdb_proc: subprocess.Popen[str] | None = None
    with QemuProcess(qemu_cmd) as qemu:
        try:
            gdb_proc = subprocess.Popen(
                gdb_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, start_new_session=True,
            )
            stdout, stderr = qemu.wait(timeout_s, what)
            try:
                gdb_out, gdb_err = gdb_proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                kill(gdb_proc)
                gdb_out = gdb_err = ""
        finally:
            if gdb_proc is not None:
                kill(gdb_proc)
    returncode = qemu.proc.returncode
    gdb_text = gdb_out + gdb_err
    if "Loading section" not in gdb_text:
        lines = [ln for ln in gdb_text.strip().splitlines() if ln.strip()] or ["(no output)"]
        raise ToolchainError(f"{what}: gdb did not load the image: {lines[-1].strip()}")
    check_exit(returncode, stdout + stderr, what)
    return QemuResult(stdout=stdout, returncode=returncode, outputs=[], stderr=stderr)


def flash_pyocd(elf: str | os.PathLike[str], target: Target) -> str:
    """Program ``elf`` into a board through pyOCD's Python API, then reset it."""
    if not target.pyocd_target:
        raise EdgecError(f"target {target.name} has no pyOCD target name (pyocd_target)")
    check_load_addresses(elf, target)
    try:
        from pyocd.core.helpers import ConnectHelper  # type: ignore[import-not-found]
        from pyocd.flash.file_programmer import FileProgrammer  # type: ignore[import-not-found]
    except ImportError:
        raise ToolchainError("pyocd not found: pip install pyocd") from None
    session = ConnectHelper.session_with_chosen_probe(
        target_override=target.pyocd_target, blocking=False, auto_open=True
    )
    if session is None:
        raise ToolchainError("pyocd: no debug probe connected")
    with session:
        FileProgrammer(session).program(str(elf), file_format="elf")
        session.board.target.reset()
    return f"flashed {elf} to {target.name} ({target.pyocd_target}) with pyOCD and reset it"


def flash_openocd(
    elf: str | os.PathLike[str], target: Target, timeout_s: float = 120
) -> str:
    """Program ``elf`` with OpenOCD (``program ... verify reset exit``)."""
    if not target.openocd_config:
        raise EdgecError(f"target {target.name} has no OpenOCD configuration (openocd_config)")
    check_load_addresses(elf, target)
    openocd = find_tool("openocd")
    cmd = [openocd]
    for cfg in target.openocd_config:
        cmd += ["-f", cfg]
    cmd += ["-c", f"program {Path(elf).as_posix()} verify reset exit"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"openocd did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "Error" in ln]
        raise ToolchainError(
            "openocd failed: " + (lines[0].strip() if lines else f"exit status {proc.returncode}")
        )
    return f"flashed {elf} to {target.name} with OpenOCD and reset it"
