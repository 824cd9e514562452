"""A compiled model's outputs on a target: build the firmware with the input vectors embedded,
run it on the target's emulated board and read the outputs back bit-exactly."""

from __future__ import annotations

import tempfile

import numpy as np

from edgec.errors import EdgecError
from edgec.mcu.model import CompiledLike
from edgec.mcu.targets import Target, emulated_twin


def run_on_target(
    cm: CompiledLike, target: Target, vectors: list[list[np.ndarray]], timeout_s: float = 120
) -> list[list[np.ndarray]]:
    """Build ``cm``'s firmware with ``vectors`` embedded (per vector, one array per input main()
    feeds), run it on QEMU, return its outputs (per vector, one array per printed output).

    A board without an emulator runs on its core's emulated twin (same core and FPU; the
    board's memory map is checked by building for the board first)."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu

    run_target = target
    with tempfile.TemporaryDirectory(prefix="edgec-fw-") as tmp:
        if not target.qemu_machine:
            twin = emulated_twin(target)
            if twin is None:
                raise EdgecError(
                    f"target {target.name} has no emulator and no emulated twin for its core "
                    f"{target.core}: flash the board (edgec flash)"
                )
            build_firmware(cm, target, f"{tmp}/board", vectors)  # the fit on the real board
            run_target = twin
        build = build_firmware(cm, run_target, f"{tmp}/run", vectors)
        return run_qemu(build, timeout_s=timeout_s).outputs
