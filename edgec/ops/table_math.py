"""Where edgec's table tanh and sigmoid switch form (their C and tables:
:mod:`edgec.backend.c_math`), shared with the kernels that inline the same evaluation
(:mod:`edgec.ops.rnn_cell_asm`): per function, the float bits where its eight intervals per
binade start, and the bits where its table ends (|x| at or past it is the constant). The rows
are sign-split: row 2k + (x < 0) of 24 bytes, {c, c4, c3, c2, c1, c0}."""

from __future__ import annotations

TABLE_BITS: dict[str, tuple[int, int]] = {
    "tanh": (0x3D800000, 0x41800000),
    "sigmoid": (0x3E000000, 0x42000000),
}
