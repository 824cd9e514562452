"""Firmware projects for Cortex-M targets: write, build (ELF/BIN/HEX), check the fit, run on QEMU.

``build_firmware(cm, target, out_dir, inputs)`` writes a self-contained project (the model's C,
``firmware/`` startup code, linker script, a generated ``main.c`` holding the input vectors, a
Makefile and a CMakeLists.txt) and builds it with the Arm GNU toolchain using the same flags the
Makefile holds. ``run_qemu(build)`` runs the ELF on the target's emulated board and reads the
printed outputs back bit-exactly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgec import __version__
from edgec.api import CompiledModel
from edgec.backend.c_emit import Port, template_dir
from edgec.errors import EdgecError, ModelTooBigError, ToolchainError
from edgec.ops.base import c_float
from edgec.targets import Target
from edgec.toolchain import find_tool

#: firmware sources copied from firmware/ into every project
FIRMWARE_SOURCES = ("startup.c", "edgec_io.c", "edgec_marks.c")
FIRMWARE_HEADERS = ("edgec_io.h", "edgec_marks.h")
CMAKE_TOOLCHAIN_FILE = "arm-none-eabi.cmake"
LINKER_SCRIPT = "cortexm.ld"

#: compiler flags for every target (the target adds -mcpu/-mfpu/-mfloat-abi); FPU targets add
#: -ffp-contract=fast so multiply-adds become VFMA (see firmware/README.md)
BASE_CFLAGS = (
    "-O2", "-g", "-std=c99", "-Wall", "-Wextra",
    "-ffunction-sections", "-fdata-sections", "-fstack-usage",
)
LDFLAGS = ("-nostartfiles", "-Wl,--gc-sections")
SPECS_SEMIHOSTING = ("--specs=nano.specs", "--specs=rdimon.specs")
SPECS_PLAIN = ("--specs=nano.specs", "--specs=nosys.specs")
LDLIBS = ("-lm",)

#: QEMU's exit status when the firmware faulted (edgec_fault)
FAULT_EXIT = 70
_RESULT_LINE = re.compile(r"^y (\d+) (\d+):((?: [0-9a-f]{8})*)\s*$", re.M)
_SHF_ALLOC = 0x2
_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def firmware_dir() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / "share" / "firmware", here.parent / "firmware"):
        if (cand / "startup.c").is_file():
            return cand
    raise EdgecError("edgec installation is broken: firmware/ not found")


def cflags_for(target: Target) -> list[str]:
    return [*BASE_CFLAGS, *(["-ffp-contract=fast"] if target.has_fpu else [])]


@dataclass
class FirmwareBuild:
    project_dir: Path
    elf: Path
    bin: Path
    hex: Path
    map: Path
    target: Target
    name: str
    #: the ports main() prints, in order (a stateful model's step outputs)
    outputs: list[Port]
    n_vectors: int
    repeat: int
    stateful: bool
    build_dir: Path
    stack_usage_files: list[Path] = field(default_factory=list)
    #: bytes of flash (.text, .rodata, .data's initial values, ...) and of RAM (.data, .bss and
    #: the heap/stack reserve) the ELF occupies
    flash_used: int = 0
    ram_used: int = 0
    #: compiler warnings (one per line), empty for clean code
    warnings: list[str] = field(default_factory=list)


@dataclass
class QemuResult:
    stdout: str
    returncode: int
    #: per input vector, the printed outputs (reshaped to their ports' shapes)
    outputs: list[list[np.ndarray]]
    stderr: str = ""


# -- project ---------------------------------------------------------------------------------
def _jinja_env():  # noqa: ANN202 - jinja2 type
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def _rows(values: np.ndarray) -> str:
    items = [c_float(v) for v in values.reshape(-1).tolist()]
    return ",\n".join(
        "        " + ", ".join(items[i : i + 8]) for i in range(0, len(items), 8)
    )


def step_ports(cm: CompiledModel) -> tuple[list[Port], list[Port]]:
    """The inputs and outputs main() feeds and prints: all of them, or a stateful model's
    non-state ones (those of ``<name>_step``)."""
    ins = [p for p in cm.cmodel.inputs if not p.state]
    outs = [p for p in cm.cmodel.outputs if not p.state]
    return ins, outs


def _default_inputs(ports: list[Port]) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.standard_normal(p.shape).astype(np.float32) for p in ports]]


def render_main(
    cm: CompiledModel, inputs: list[list[np.ndarray]] | None, repeat: int = 1
) -> str:
    in_ports, out_ports = step_ports(cm)
    vectors = inputs if inputs is not None else _default_inputs(in_ports)
    if not vectors:
        raise EdgecError("firmware: at least one input vector is needed")
    for k, vec in enumerate(vectors):
        if len(vec) != len(in_ports):
            raise EdgecError(
                f"input vector {k}: {len(vec)} array(s) given, the model takes "
                f"{len(in_ports)} ({', '.join(p.name for p in in_ports)})"
            )
        for arr, p in zip(vec, in_ports, strict=True):
            if np.asarray(arr).size != p.size:
                raise EdgecError(
                    f"input vector {k}: '{p.name}' has {np.asarray(arr).size} values, "
                    f"the model expects {p.size} {p.shape_str}"
                )
    if repeat < 1:
        raise EdgecError(f"repeat must be at least 1 (got {repeat})")
    name = cm.name
    stateful = cm.is_stateful
    ins = [
        {
            "name": p.name, "c": p.c, "size": p.size, "shape_str": p.shape_str,
            "rows": [_rows(np.asarray(vec[i], np.float32)) for vec in vectors],
        }
        for i, p in enumerate(in_ports)
    ]
    outs = [{"name": p.name, "c": p.c, "size": p.size, "shape_str": p.shape_str}
            for p in out_ports]
    args = [f"{p.c}_data[i]" for p in in_ports] + [p.c for p in out_ports]
    if stateful:
        call = f"{name}_step(&state{''.join(', ' + a for a in args)})"
    else:
        call = f"{name}_run({', '.join(args)})"
    return _jinja_env().get_template("firmware_main.c.j2").render(
        version=__version__, name=name, n_samples=len(vectors), repeat=repeat,
        stateful=stateful, inputs=ins, outputs=outs, call=call,
    )


def linker_script(target: Target) -> str:
    text = (firmware_dir() / f"{LINKER_SCRIPT}.in").read_text()
    values = {
        "FLASH_ORIGIN": f"0x{target.flash_origin:08X}",
        "FLASH_SIZE": str(target.flash_size),
        "RAM_ORIGIN": f"0x{target.ram_origin:08X}",
        "RAM_SIZE": str(target.ram_size),
        "STACK_BYTES": str(target.stack_bytes),
        "HEAP_BYTES": str(target.heap_bytes),
    }
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    return text


def write_project(
    cm: CompiledModel,
    target: Target,
    out_dir: str | os.PathLike[str],
    inputs: list[list[np.ndarray]] | None = None,
    repeat: int = 1,
) -> tuple[Path, list[str]]:
    """Write the firmware project; returns its directory and its C sources (build order)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    cm.write(d)
    fw = firmware_dir()
    for f in (*FIRMWARE_SOURCES, *FIRMWARE_HEADERS, CMAKE_TOOLCHAIN_FILE):
        shutil.copyfile(fw / f, d / f)
    (d / LINKER_SCRIPT).write_text(linker_script(target))
    (d / "main.c").write_text(render_main(cm, inputs, repeat))
    sources = ["main.c", f"{cm.name}.c", *FIRMWARE_SOURCES]
    env = _jinja_env()
    ctx = {
        "version": __version__, "name": cm.name, "target": target, "sources": sources,
        "cpu_flags": target.cpu_flags, "cflags": cflags_for(target),
        "ldflags": list(LDFLAGS), "ldlibs": list(LDLIBS),
        "specs_semihosting": list(SPECS_SEMIHOSTING), "specs_plain": list(SPECS_PLAIN),
        "linker_script": LINKER_SCRIPT,
    }
    (d / "Makefile").write_text(env.get_template("Makefile.j2").render(**ctx))
    (d / "CMakeLists.txt").write_text(env.get_template("CMakeLists.txt.j2").render(**ctx))
    return d, sources


# -- build -----------------------------------------------------------------------------------
def _run_tool(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0])
        raise ToolchainError(f"{what} failed: {first.strip()}")
    return proc


def section_sizes(elf: Path) -> list[tuple[str, int, int]]:
    """(name, size, address) of the ELF's allocated sections (SHF_ALLOC), from its section
    headers (the numbers ``arm-none-eabi-size -A`` prints for them)."""
    data = elf.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise ToolchainError(f"{elf}: not a little-endian 32-bit ELF file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    str_off = headers[shstrndx][4]

    def name_at(off: int) -> str:
        end = data.index(b"\0", str_off + off)
        return data[str_off + off : end].decode()

    return [
        (name_at(h[0]), h[5], h[3])
        for h in headers
        if h[2] & _SHF_ALLOC and h[5] > 0
    ]


def memory_use(elf: Path, target: Target) -> tuple[int, int]:
    """(flash bytes, RAM bytes): sections placed in flash plus .data's initial values; sections
    placed in RAM (.data, .bss, the heap and stack reserve)."""
    flash = ram = 0
    f_lo, f_hi = target.flash_origin, target.flash_origin + target.flash_size
    r_lo, r_hi = target.ram_origin, target.ram_origin + target.ram_size
    for name, size, addr in section_sizes(elf):
        if f_lo <= addr < f_hi:
            flash += size
        elif r_lo <= addr <= r_hi:
            ram += size
            if name == ".data":
                flash += size
    return flash, ram


def _too_big(cm_name: str, target: Target, memory: str, needed: int) -> ModelTooBigError:
    have = target.flash_size if memory == "flash" else target.ram_size
    detail = ""
    if memory == "RAM":
        detail = (f" (data, bss, {target.heap_bytes} B heap and {target.stack_bytes} B stack "
                  "reserve)")
    return ModelTooBigError(
        f"model {cm_name} needs {needed} bytes of {memory}{detail}, target {target.name} has "
        f"{have} (over by {needed - have})"
    )


def build_firmware(
    cm: CompiledModel,
    target: Target,
    out_dir: str | os.PathLike[str],
    inputs: list[list[np.ndarray]] | None = None,
    repeat: int = 1,
    extra_cflags: Sequence[str] = (),
) -> FirmwareBuild:
    """Write the firmware project for ``cm`` on ``target`` into ``out_dir`` and build it.

    ``inputs``: the input vectors main() feeds, each a list of arrays in the order of the
    model's inputs (a stateful model's non-state inputs: the vectors are one sequence); default:
    one vector of standard-normal values (seed 0). ``repeat``: how many passes main() makes over
    the vectors (outputs printed after the last). Raises ModelTooBigError when the ELF does not
    fit the target's flash or RAM.
    """
    cc = find_tool("arm-none-eabi-gcc")
    objcopy = find_tool("arm-none-eabi-objcopy")
    out_dir = Path(out_dir).resolve()  # the toolchain runs inside the project directory
    d, sources = write_project(cm, target, out_dir, inputs, repeat)
    bdir = d / "build"
    bdir.mkdir(exist_ok=True)
    cflags = [*target.cpu_flags, *cflags_for(target), "-DEDGEC_SEMIHOSTING=1", *extra_cflags]

    def compile_one(src: str) -> subprocess.CompletedProcess[str]:
        obj = f"build/{Path(src).stem}.o"
        return _run_tool([cc, *cflags, "-c", src, "-o", obj], d, f"arm-none-eabi-gcc ({src})")

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        procs = list(pool.map(compile_one, sources))
    warnings = [ln for p in procs for ln in p.stderr.splitlines() if "warning:" in ln]
    name = cm.name
    elf, bin_, hex_, map_ = (bdir / f"{name}{ext}" for ext in (".elf", ".bin", ".hex", ".map"))
    objs = [f"build/{Path(s).stem}.o" for s in sources]
    link = [cc, *target.cpu_flags, *LDFLAGS, *SPECS_SEMIHOSTING, "-T", LINKER_SCRIPT,
            f"-Wl,-Map={map_.relative_to(d)}", "-o", str(elf.relative_to(d)), *objs, *LDLIBS]
    proc = subprocess.run(link, cwd=d, capture_output=True, text=True)
    if proc.returncode != 0:
        over = {m.group(1): int(m.group(2)) for m in _OVERFLOW.finditer(proc.stderr)}
        if "FLASH" in over:
            raise _too_big(name, target, "flash", target.flash_size + over["FLASH"])
        if "RAM" in over:
            raise _too_big(name, target, "RAM", target.ram_size + over["RAM"])
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        raise ToolchainError(f"linking {elf.name} failed: {lines[-1].strip()}")
    flash, ram = memory_use(elf, target)
    if flash > target.flash_size:
        raise _too_big(name, target, "flash", flash)
    if ram > target.ram_size:
        raise _too_big(name, target, "RAM", ram)
    _run_tool([objcopy, "-O", "binary", str(elf), str(bin_)], d, "objcopy")
    _run_tool([objcopy, "-O", "ihex", str(elf), str(hex_)], d, "objcopy")
    in_ports, out_ports = step_ports(cm)
    n_vectors = len(inputs) if inputs is not None else 1
    return FirmwareBuild(
        project_dir=d, elf=elf, bin=bin_, hex=hex_, map=map_, target=target, name=name,
        outputs=out_ports, n_vectors=n_vectors, repeat=repeat, stateful=cm.is_stateful,
        build_dir=bdir, stack_usage_files=sorted(bdir.glob("*.su")),
        flash_used=flash, ram_used=ram, warnings=warnings,
    )


# -- run -------------------------------------------------------------------------------------
def parse_outputs(text: str, ports: Sequence[Port], n_vectors: int) -> list[list[np.ndarray]]:
    """The outputs main() printed: per vector, one array per port (bit-exact)."""
    got: dict[tuple[int, int], np.ndarray] = {}
    for m in _RESULT_LINE.finditer(text):
        words = m.group(3).split()
        bits = np.array([int(w, 16) for w in words], dtype=np.uint32)
        got[(int(m.group(1)), int(m.group(2)))] = bits.view(np.float32)
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


def _communicate(
    proc: subprocess.Popen[str], timeout_s: float, what: str
) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise ToolchainError(
            f"{what} did not finish within {timeout_s:g} s (the firmware hung or faulted?)"
        ) from None


def _kill(proc: subprocess.Popen[str]) -> None:
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
    stdout, stderr = _communicate(proc, timeout_s, what)
    check_exit(proc.returncode, stdout + stderr, what)
    outputs = parse_outputs(stdout + "\n" + stderr, build.outputs, build.n_vectors)
    return QemuResult(stdout=stdout, returncode=proc.returncode, outputs=outputs, stderr=stderr)


# -- flash -----------------------------------------------------------------------------------
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
    qemu = subprocess.Popen(
        qemu_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    gdb_proc: subprocess.Popen[str] | None = None
    try:
        gdb_proc = subprocess.Popen(
            gdb_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
        stdout, stderr = _communicate(qemu, timeout_s, what)
        try:
            gdb_out, gdb_err = gdb_proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(gdb_proc)
            gdb_out = gdb_err = ""
    finally:
        for p in (gdb_proc, qemu):
            if p is not None:
                _kill(p)
    gdb_text = gdb_out + gdb_err
    if "Loading section" not in gdb_text:
        lines = [ln for ln in gdb_text.strip().splitlines() if ln.strip()] or ["(no output)"]
        raise ToolchainError(f"{what}: gdb did not load the image: {lines[-1].strip()}")
    check_exit(qemu.returncode, stdout + stderr, what)
    return QemuResult(stdout=stdout, returncode=qemu.returncode, outputs=[], stderr=stderr)


def flash_pyocd(elf: str | os.PathLike[str], target: Target) -> str:
    """Program ``elf`` into a board through pyOCD's Python API, then reset it."""
    if not target.pyocd_target:
        raise EdgecError(f"target {target.name} has no pyOCD target name (pyocd_target)")
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
