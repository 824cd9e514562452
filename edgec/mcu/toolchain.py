"""Find the external tools firmware builds need (Arm GNU toolchain, QEMU, GDB) on PATH.

A missing tool is a one-line :class:`ToolchainError` that says what to install. ``EDGEC_<TOOL>``
environment variables (e.g. ``EDGEC_ARM_NONE_EABI_GCC=/opt/arm/bin/arm-none-eabi-gcc``) override
the PATH lookup.
"""

from __future__ import annotations

import os
import shutil

from edgec.errors import ToolchainError

#: tool → what to install when it is missing
INSTALL_HINTS: dict[str, str] = {
    "arm-none-eabi-gcc": "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
    "arm-none-eabi-objcopy": "apt-get install binutils-arm-none-eabi",
    "arm-none-eabi-size": "apt-get install binutils-arm-none-eabi",
    "arm-none-eabi-nm": "apt-get install binutils-arm-none-eabi",
    "arm-none-eabi-readelf": "apt-get install binutils-arm-none-eabi",
    "qemu-system-arm": "apt-get install qemu-system-arm",
    "gdb-multiarch": "apt-get install gdb-multiarch",
    "openocd": "apt-get install openocd",
    "make": "apt-get install make",
    "cmake": "apt-get install cmake",
}


def _env_name(tool: str) -> str:
    return "EDGEC_" + tool.upper().replace("-", "_")


def find_tool(name: str) -> str:
    """Absolute path of ``name``; raises ToolchainError naming the package to install."""
    override = os.environ.get(_env_name(name))
    if override:
        if shutil.which(override):
            return str(shutil.which(override))
        raise ToolchainError(f"{_env_name(name)}={override}: not an executable")
    path = shutil.which(name)
    if path:
        return path
    hint = INSTALL_HINTS.get(name, f"install {name}")
    raise ToolchainError(f"{name} not found: {hint}")


def have_tool(name: str) -> bool:
    try:
        find_tool(name)
    except ToolchainError:
        return False
    return True
