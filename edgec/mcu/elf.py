"""Reading the ELF files the firmware build produces (ELF32 little-endian): sections and symbols,
and the flash/RAM a firmware occupies on a target."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edgec.errors import EdgecError
from edgec.mcu.targets import Target

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_SYMTAB, SHT_NOBITS = 2, 8
_STT = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE"}


@dataclass(frozen=True)
class ElfSection:
    name: str
    type: int
    flags: int
    addr: int
    size: int

    @property
    def in_flash(self) -> bool:
        """Occupies flash: allocated with contents (code, constants, .data's initial values)."""
        return bool(self.flags & SHF_ALLOC) and self.type != SHT_NOBITS

    @property
    def in_ram(self) -> bool:
        """Occupies RAM: allocated and writable, or allocated without contents (.bss)."""
        return bool(self.flags & SHF_ALLOC) and (
            bool(self.flags & SHF_WRITE) or self.type == SHT_NOBITS
        )


@dataclass(frozen=True)
class ElfSymbol:
    name: str
    value: int
    size: int
    kind: str
    section: str


@dataclass(frozen=True)
class ElfInfo:
    sections: list[ElfSection]
    symbols: list[ElfSymbol]


def read_elf(path: str | os.PathLike[str]) -> ElfInfo:
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise EdgecError(f"{path}: not a 32-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    raw = [struct.unpack_from("<10I", data, shoff + i * shentsize) for i in range(shnum)]

    def cstr(off: int) -> str:
        end = data.index(b"\0", off)
        return data[off:end].decode("utf-8", "replace")

    str_off = raw[shstrndx][4]
    names = [cstr(str_off + r[0]) for r in raw]
    sections = [ElfSection(names[i], r[1], r[2], r[3], r[5]) for i, r in enumerate(raw)]
    symbols: list[ElfSymbol] = []
    for r in raw:
        if r[1] != SHT_SYMTAB:
            continue
        sym_off, sym_size, link, entsize = r[4], r[5], r[6], r[9] or 16
        strtab = raw[link][4]
        for k in range(1, sym_size // entsize):
            name, value, size, info, _other, shndx = struct.unpack_from(
                "<IIIBBH", data, sym_off + k * entsize
            )
            sec = names[shndx] if 0 < shndx < len(names) else ""
            kind = _STT.get(info & 0xF, "?")
            symbols.append(ElfSymbol(cstr(strtab + name), value, size, kind, sec))
    return ElfInfo(sections, symbols)


def memory_use(elf: str | os.PathLike[str], target: Target) -> tuple[int, int]:
    """(flash bytes, RAM bytes): allocated sections placed in flash plus .data's initial values;
    allocated sections placed in RAM (.data, .bss, the heap and stack reserve) — the numbers
    ``arm-none-eabi-size -A`` prints for them."""
    flash = ram = 0
    f_lo, f_hi = target.flash_origin, target.flash_origin + target.flash_size
    r_lo, r_hi = target.ram_origin, target.ram_origin + target.ram_size
    for sec in read_elf(elf).sections:
        if not sec.flags & SHF_ALLOC or sec.size == 0:
            continue
        if f_lo <= sec.addr < f_hi:
            flash += sec.size
        elif r_lo <= sec.addr <= r_hi:
            ram += sec.size
            if sec.name == ".data":
                flash += sec.size
    return flash, ram
