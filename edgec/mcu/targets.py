"""Cortex-M targets: core, compiler flags, memory map and probes, one TOML file per target.

Descriptions live in the top-level ``targets/`` directory (``targets/<name>.toml``); a path to a
``.toml`` file is accepted as a target name too, for boards edgec does not ship.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec._package import data_path
from edgec.errors import EdgecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_TARGET = "cortex-m4f"

_REQUIRED = (
    "core", "cpu_flags", "flash_origin", "flash_size", "ram_origin", "ram_size", "clock_hz"
)


#: cores whose architecture has the DSP extension (Armv7E-M; Armv8-M Mainline with it by default)
DSP_CORES = frozenset({"cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p", "cortex-m55",
                       "cortex-m85"})


@dataclass(frozen=True)
class Target:
    name: str
    core: str
    cpu_flags: list[str]
    flash_origin: int
    flash_size: int
    ram_origin: int
    ram_size: int
    clock_hz: int
    qemu_machine: str | None = None
    pyocd_target: str | None = None
    description: str = ""
    #: OpenOCD ``-f`` configuration files (interface, then target)
    openocd_config: list[str] = field(default_factory=list)
    #: RAM kept for the main stack and for newlib's heap (stdio buffers); part of the RAM check
    stack_bytes: int = 4096
    heap_bytes: int = 2048
    #: a board without an emulator: the emulated target with its core and FPU that profiles and
    #: runs its code (instructions are the same; time is reported at this board's clock)
    twin: str | None = None
    #: a board's own output: a source in firmware/boards/ defining edgec_io_init()/edgec_putc()
    #: (UART with the minimal clock setup it needs); firmware for the board uses it by default
    board_io: str | None = None
    #: what ``board_io`` does, for the build output (pins, baud rate, clock)
    io_note: str = ""
    #: a boot stage the board needs in front of the vector table ("rp2040-boot2")
    boot: str | None = None

    @property
    def has_fpu(self) -> bool:
        return any(f in ("-mfloat-abi=hard", "-mfloat-abi=softfp") for f in self.cpu_flags)

    @property
    def has_dsp(self) -> bool:
        """Whether the core has the DSP extension (``__ARM_FEATURE_DSP``): its optimized builds
        take the int8 kernels' ``EDGEC_S8_DSP`` path (the report's ``weight_bytes_dsp``)."""
        if any("+nodsp" in f for f in self.cpu_flags):
            return False
        return self.core in DSP_CORES

    @property
    def float_abi(self) -> str:
        for f in self.cpu_flags:
            if f.startswith("-mfloat-abi="):
                return f.split("=", 1)[1]
        return "soft"


def targets_dir() -> Path:
    return data_path("targets/cortex-m4f.toml").parent


def _from_file(path: Path, name: str) -> Target:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EdgecError(f"{path}: cannot read target description ({exc})") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EdgecError(f"{path}: target description lacks {', '.join(missing)}")
    known = set(Target.__dataclass_fields__) - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EdgecError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if not isinstance(data["cpu_flags"], list) or not all(
        isinstance(f, str) for f in data["cpu_flags"]
    ):
        raise EdgecError(f"{path}: cpu_flags must be a list of strings")
    data["openocd_config"] = list(data.get("openocd_config", []))
    return Target(name=name, **data)


def load_target(name: str | None = None) -> Target:
    """The target called ``name`` (``targets/<name>.toml``) or described by a ``.toml`` path."""
    name = name or DEFAULT_TARGET
    if name.endswith(".toml"):
        p = Path(name)
        if not p.is_file():
            raise EdgecError(f"{p}: no such target description")
        return _from_file(p, p.stem)
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(t.name for t in list_targets())
        hint = (" (CUDA is a code generation target: edgec compile --target cuda, "
                "edgec verify --cuda cpu|gpu; docs/cuda.md)" if name.lower() == "cuda" else "")
        raise EdgecError(f"unknown target '{name}'; known targets: {known}{hint}")
    return _from_file(path, name)


def emulated_twin(target: Target) -> Target | None:
    """The emulated target that runs ``target``'s code: itself when it has an emulator, its
    ``twin``, or else an emulated target with the same core and floating-point flags."""
    if target.qemu_machine:
        return target
    if target.twin:
        return load_target(target.twin)
    fp = [f for f in target.cpu_flags if f.startswith(("-mfloat-abi=", "-mfpu="))]
    for t in list_targets():
        if t.qemu_machine and t.core == target.core and fp == [
            f for f in t.cpu_flags if f.startswith(("-mfloat-abi=", "-mfpu="))
        ]:
            return t
    return None


def list_targets() -> list[Target]:
    return [_from_file(p, p.stem) for p in sorted(targets_dir().glob("*.toml"))]
