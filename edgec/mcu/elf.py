"""Reading the ELF files the firmware build produces (ELF32 little-endian, via pyelftools):
sections, symbols and loadable segments, the flash/RAM a firmware occupies on a target, and
whether an ELF loads where a target has memory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgec.errors import EdgecError
from edgec.mcu.targets import Target

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_SYMTAB, SHT_NOBITS = 2, 8
_STT = {"STT_NOTYPE": "NOTYPE", "STT_OBJECT": "OBJECT", "STT_FUNC": "FUNC",
        "STT_SECTION": "SECTION", "STT_FILE": "FILE"}
_SHT = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4,
        "SHT_NOBITS": 8}


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
class ElfSegment:
    """A loadable (PT_LOAD) segment: where it runs (vaddr) and where it is loaded (paddr)."""

    vaddr: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfInfo:
    sections: list[ElfSection]
    symbols: list[ElfSymbol]
    segments: list[ElfSegment] = field(default_factory=list)
    entry: int = 0


def read_elf(path: str | os.PathLike[str]) -> ElfInfo:
    """Sections, symbols and loadable segments of a 32-bit little-endian (Arm) ELF file, read
    with pyelftools."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    p = Path(path)
    try:
        with p.open("rb") as f:
            elf = ELFFile(f)
            if elf.elfclass != 32 or not elf.little_endian:
                raise EdgecError(f"{path}: not a 32-bit little-endian ELF file")
            sections = [
                ElfSection(sec.name, _SHT.get(sec["sh_type"], -1), int(sec["sh_flags"]),
                           int(sec["sh_addr"]), int(sec["sh_size"]))
                for sec in elf.iter_sections()
            ]
            names = [sec.name for sec in elf.iter_sections()]
            symbols: list[ElfSymbol] = []
            for sec in elf.iter_sections():
                if not isinstance(sec, SymbolTableSection) or sec["sh_type"] != "SHT_SYMTAB":
                    continue
                for k, sym in enumerate(sec.iter_symbols()):
                    if k == 0:
                        continue
                    shndx = sym["st_shndx"]
                    where = names[shndx] if isinstance(shndx, int) and 0 < shndx < len(names) \
                        else ""
                    symbols.append(ElfSymbol(
                        sym.name, int(sym["st_value"]), int(sym["st_size"]),
                        _STT.get(sym["st_info"]["type"], "?"), where,
                    ))
            segments = [
                ElfSegment(int(seg["p_vaddr"]), int(seg["p_paddr"]), int(seg["p_filesz"]),
                           int(seg["p_memsz"]))
                for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"
            ]
            entry = int(elf.header["e_entry"])
    except (ELFError, OSError, ValueError) as exc:
        raise EdgecError(f"{path}: not a 32-bit little-endian ELF file ({exc})") from None
    return ElfInfo(sections, symbols, segments, entry)


def check_load_addresses(elf: str | os.PathLike[str], target: Target) -> None:
    """Every loadable segment's contents lie in the target's flash (or RAM): an ELF linked for
    another board is refused before anything is loaded."""
    info = read_elf(elf)
    f_lo, f_hi = target.flash_origin, target.flash_origin + target.flash_size
    r_lo, r_hi = target.ram_origin, target.ram_origin + target.ram_size
    for seg in info.segments:
        if seg.filesz == 0:
            continue
        lo, hi = seg.paddr, seg.paddr + seg.filesz
        if not (f_lo <= lo and hi <= f_hi) and not (r_lo <= lo and hi <= r_hi):
            raise EdgecError(
                f"{elf}: it loads {seg.filesz} bytes at 0x{lo:08x}, outside {target.name}'s "
                f"flash (0x{f_lo:08x}-0x{f_hi - 1:08x}) and RAM (0x{r_lo:08x}-0x{r_hi - 1:08x}): "
                f"it was built for another target (edgec build --target {target.name})"
            )


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
