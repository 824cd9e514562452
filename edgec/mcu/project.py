"""Firmware projects for Cortex-M targets: write, build (ELF/BIN/HEX), check the fit.

``build_firmware(cm, target, out_dir, inputs)`` writes a self-contained project (the model's C,
``firmware/`` startup code, linker script, a generated ``main.c`` holding the input vectors, a
Makefile and a CMakeLists.txt) and builds it with the Arm GNU toolchain using the same flags the
Makefile holds. :func:`edgec.mcu.qemu.run_qemu` runs the result on the target's emulated board.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgec._package import __version__, data_path
from edgec.backend.c_emit import Port, template_dir
from edgec.errors import EdgecError, ModelTooBigError, ToolchainError
from edgec.mcu.elf import memory_use
from edgec.mcu.model import CompiledLike as CompiledModel
from edgec.mcu.targets import Target
from edgec.mcu.toolchain import find_tool
from edgec.ops.base import c_float

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

_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def firmware_dir() -> Path:
    return data_path("firmware/startup.c").parent


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
    #: the UF2 image (boards that boot from one: RP2040)
    uf2: Path | None = None
    #: how the firmware prints (semihosting, or the board's UART and its clock setup)
    io_note: str = ""


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
    if values.dtype in (np.int8, np.int32):
        items, per = [str(int(v)) for v in values.reshape(-1).tolist()], 16
    else:
        items, per = [c_float(v) for v in values.reshape(-1).tolist()], 8
    return ",\n".join(
        "        " + ", ".join(items[i : i + per]) for i in range(0, len(items), per)
    )


def _port_values(arr: object, p: Port, what: str) -> np.ndarray:
    """An input vector as the port's C type: float32, int8 codes (integers in range), or int32
    indices."""
    a = np.asarray(arr)
    if p.dtype == "int32":
        if a.dtype.kind not in "iub" or (a.size and (a.min() < -(2**31) or a.max() >= 2**31)):
            raise EdgecError(f"{what}: '{p.name}' is an int32 index port; give integers, got "
                             f"{a.dtype}")
        return a.astype(np.int32)
    if p.dtype == "int8":
        if a.dtype.kind not in "iub" or (a.size and (a.min() < -128 or a.max() > 127)):
            raise EdgecError(f"{what}: '{p.name}' is an int8 port; give integer codes in "
                             f"[-128, 127], got {a.dtype}")
        return a.astype(np.int8)
    return a.astype(np.float32)


def step_ports(cm: CompiledModel) -> tuple[list[Port], list[Port]]:
    """The inputs and outputs main() feeds and prints: all of them, or a stateful model's
    non-state ones (those of ``<name>_step``)."""
    ins = [p for p in cm.cmodel.inputs if not p.state]
    outs = [p for p in cm.cmodel.outputs if not p.state]
    return ins, outs


def _default_inputs(ports: list[Port]) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.integers(-128, 128, p.shape).astype(np.int8) if p.dtype == "int8"
             else rng.integers(0, p.index_bound or 1, p.shape).astype(np.int32)
             if p.dtype == "int32" else rng.standard_normal(p.shape).astype(np.float32)
             for p in ports]]


def render_main(
    cm: CompiledModel, inputs: list[list[np.ndarray]] | None, repeat: int = 1,
    marks: bool = True,
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
            "ctype": p.ctype,
            "rows": [_rows(_port_values(vec[i], p, f"input vector {k}"))
                     for k, vec in enumerate(vectors)],
        }
        for i, p in enumerate(in_ports)
    ]
    outs = [{"name": p.name, "c": p.c, "size": p.size, "shape_str": p.shape_str,
             "ctype": p.ctype} for p in out_ports]
    args = [f"{p.c}_data[i]" for p in in_ports] + [p.c for p in out_ports]
    if stateful:
        call = f"{name}_step(&state{''.join(', ' + a for a in args)})"
    else:
        call = f"{name}_run({', '.join(args)})"
    return _jinja_env().get_template("firmware_main.c.j2").render(
        version=__version__, name=name, n_samples=len(vectors), repeat=repeat,
        stateful=stateful, inputs=ins, outputs=outs, call=call, marks=marks,
        quantized=any(p.dtype == "int8" for p in in_ports + out_ports),
    )


#: the RP2040's boot2 at the start of flash: 256 bytes, the vector table right after it
BOOT2_SECTION = """    .boot2 :
    {
        KEEP(*(.boot2))
    } > FLASH
    ASSERT(SIZEOF(.boot2) == 256, "the RP2040 boot2 must be exactly 256 bytes")
"""


def board_io(target: Target) -> bool:
    """Firmware for a real board prints through the board's own output (UART, see
    ``firmware/boards/``) instead of semihosting, which halts a core without a debugger."""
    return bool(target.board_io) and not target.qemu_machine


def linker_script(target: Target) -> str:
    text = (firmware_dir() / f"{LINKER_SCRIPT}.in").read_text()
    text = text.replace("@BOOT_SECTION@\n", BOOT2_SECTION if target.boot == "rp2040-boot2"
                        else "")
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
    marks: bool = True,
) -> tuple[Path, list[str]]:
    """Write the firmware project; returns its directory and its C sources (build order)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    cm.write(d)
    fw = firmware_dir()
    for f in (*FIRMWARE_SOURCES, *FIRMWARE_HEADERS, CMAKE_TOOLCHAIN_FILE):
        shutil.copyfile(fw / f, d / f)
    (d / LINKER_SCRIPT).write_text(linker_script(target))
    (d / "main.c").write_text(render_main(cm, inputs, repeat, marks))
    sources = ["main.c", f"{cm.name}.c", *FIRMWARE_SOURCES]
    if board_io(target):
        assert target.board_io is not None
        shutil.copyfile(fw / "boards" / target.board_io, d / target.board_io)
        sources.append(target.board_io)
    if target.boot == "rp2040-boot2":
        from edgec.mcu.rp2040 import boot2_c, boot2_image

        (d / "boot2.c").write_text(boot2_c(boot2_image()))
        shutil.copyfile(fw / "boards" / "rp2040_boot2.S", d / "rp2040_boot2.S")
        shutil.copyfile(Path(__file__).with_name("uf2.py"), d / "uf2.py")
        sources.append("boot2.c")
    env = _jinja_env()
    ctx = {
        "version": __version__, "name": cm.name, "target": target, "sources": sources,
        "cpu_flags": target.cpu_flags, "cflags": cflags_for(target),
        "ldflags": list(LDFLAGS), "ldlibs": list(LDLIBS),
        "specs_semihosting": list(SPECS_SEMIHOSTING), "specs_plain": list(SPECS_PLAIN),
        "linker_script": LINKER_SCRIPT,
        "semihosting": 0 if board_io(target) else 1, "io_note": io_note(target),
        "uf2": target.boot == "rp2040-boot2",
    }
    (d / "Makefile").write_text(env.get_template("Makefile.j2").render(**ctx))
    (d / "CMakeLists.txt").write_text(env.get_template("CMakeLists.txt.j2").render(**ctx))
    return d, sources


def io_note(target: Target) -> str:
    """How the firmware prints, for the build output."""
    if board_io(target):
        return f"{target.board_io}: {target.io_note}"
    if target.qemu_machine:
        return "Arm semihosting (QEMU prints it; on hardware it needs a debugger attached)"
    return ("Arm semihosting: halts the core without a debugger attached; define your own "
            "edgec_putc() (firmware/edgec_io.h)")


# -- build -----------------------------------------------------------------------------------
def _run_tool(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0])
        raise ToolchainError(f"{what} failed: {first.strip()}")
    return proc


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
    marks: bool = True,
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
    d, sources = write_project(cm, target, out_dir, inputs, repeat, marks)
    bdir = d / "build"
    bdir.mkdir(exist_ok=True)
    semihosting = 0 if board_io(target) else 1
    cflags = [*target.cpu_flags, *cflags_for(target), f"-DEDGEC_SEMIHOSTING={semihosting}",
              *extra_cflags]
    specs = SPECS_SEMIHOSTING if semihosting else SPECS_PLAIN

    def compile_one(src: str) -> subprocess.CompletedProcess[str]:
        obj = f"build/{Path(src).stem}.o"
        return _run_tool([cc, *cflags, "-c", src, "-o", obj], d, f"arm-none-eabi-gcc ({src})")

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        procs = list(pool.map(compile_one, sources))
    warnings = [ln for p in procs for ln in p.stderr.splitlines() if "warning:" in ln]
    name = cm.name
    elf, bin_, hex_, map_ = (bdir / f"{name}{ext}" for ext in (".elf", ".bin", ".hex", ".map"))
    objs = [f"build/{Path(s).stem}.o" for s in sources]
    link = [cc, *target.cpu_flags, *LDFLAGS, *specs, "-T", LINKER_SCRIPT,
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
    uf2 = None
    if target.boot == "rp2040-boot2":
        from edgec.mcu.uf2 import to_uf2

        uf2 = bdir / f"{name}.uf2"
        uf2.write_bytes(to_uf2(bin_.read_bytes(), target.flash_origin))
    in_ports, out_ports = step_ports(cm)
    n_vectors = len(inputs) if inputs is not None else 1
    return FirmwareBuild(
        project_dir=d, elf=elf, bin=bin_, hex=hex_, map=map_, target=target, name=name,
        outputs=out_ports, n_vectors=n_vectors, repeat=repeat, stateful=cm.is_stateful,
        build_dir=bdir, stack_usage_files=sorted(bdir.glob("*.su")),
        flash_used=flash, ram_used=ram, warnings=warnings, uf2=uf2, io_note=io_note(target),
    )
