"""UF2 images (the USB Flashing Format of Microsoft's UF2 specification): 512-byte blocks, each
carrying 256 bytes of a flash image with its target address, for boards that boot from a USB
mass-storage drive (RP2040: hold BOOTSEL, copy the .uf2 to RPI-RP2).

Standard library only, so firmware projects carry this file as ``uf2.py`` and their Makefile
runs ``python3 uf2.py build/x.bin build/x.uf2 --base 0x10000000 --family 0xe48bff56``.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

MAGIC_START0 = 0x0A324655  # "UF2\n"
MAGIC_START1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_FAMILY_ID = 0x00002000
PAYLOAD = 256
DATA_FIELD = 476
FAMILY_RP2040 = 0xE48BFF56


def to_uf2(image: bytes, base: int, family: int = FAMILY_RP2040) -> bytes:
    """``image`` (a flash image starting at address ``base``) as UF2 blocks of 256 bytes."""
    if base % PAYLOAD:
        raise ValueError(f"base address 0x{base:08x} is not {PAYLOAD}-byte aligned")
    chunks = [image[i : i + PAYLOAD] for i in range(0, len(image), PAYLOAD)] or [b""]
    out = bytearray()
    for n, chunk in enumerate(chunks):
        data = chunk.ljust(PAYLOAD, b"\0").ljust(DATA_FIELD, b"\0")
        out += struct.pack(
            "<8I", MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID, base + n * PAYLOAD, PAYLOAD, n,
            len(chunks), family,
        )
        out += data + struct.pack("<I", MAGIC_END)
    return bytes(out)


def from_uf2(data: bytes) -> tuple[int, bytes, int]:
    """(base address, flash image, family) of a UF2 file that :func:`to_uf2` writes (checks
    magics, numbering and contiguity)."""
    if len(data) % 512:
        raise ValueError("a UF2 file is a whole number of 512-byte blocks")
    image = bytearray()
    base = family = -1
    total = len(data) // 512
    for n in range(total):
        blk = data[n * 512 : (n + 1) * 512]
        m0, m1, flags, addr, size, no, count, fam = struct.unpack_from("<8I", blk)
        (m_end,) = struct.unpack_from("<I", blk, 508)
        if (m0, m1, m_end) != (MAGIC_START0, MAGIC_START1, MAGIC_END):
            raise ValueError(f"block {n}: bad magic")
        if no != n or count != total or not flags & FLAG_FAMILY_ID or size > DATA_FIELD:
            raise ValueError(f"block {n}: bad header")
        if n == 0:
            base, family = addr, fam
        if addr != base + len(image):
            raise ValueError(f"block {n}: address 0x{addr:08x} is not contiguous")
        image += blk[32 : 32 + size]
    return base, bytes(image), family


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Convert a flash image (.bin) to UF2.")
    ap.add_argument("bin")
    ap.add_argument("uf2")
    ap.add_argument("--base", type=lambda s: int(s, 0), required=True, help="flash address")
    ap.add_argument("--family", type=lambda s: int(s, 0), default=FAMILY_RP2040)
    args = ap.parse_args(argv)
    Path(args.uf2).write_bytes(to_uf2(Path(args.bin).read_bytes(), args.base, args.family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
