"""``open_batch``: the batched simulator's library for a device, above both builds (cpu:
:mod:`edgec.mpc.batch`, cuda: :mod:`edgec.mpc.batch_cuda`, which builds on the first)."""

from __future__ import annotations

from typing import Any

from edgec.errors import EdgecError
from edgec.mpc.batch import DEVICES, BatchLibrary, build_batch_library, check_batch_plant
from edgec.mpc.build import Controller
from edgec.mpc.config import MpcConfig


def open_batch(cfg: MpcConfig, plant_name: str, ctrl: Controller | None = None,
               module: Any = None, device: str = "cpu") -> BatchLibrary:
    """The batch library of the controller on ``device`` (cpu: the host library; cuda: the
    nvcc build, after checking that a GPU is visible)."""
    from edgec.mpc.build import build_controller

    if device not in DEVICES:
        raise EdgecError(f"--device {device}: the batched simulator runs on {', '.join(DEVICES)}")
    plant = check_batch_plant(cfg, plant_name)
    if device == "cuda":
        from edgec.mpc.batch_cuda import open_cuda_batch

        return open_cuda_batch(cfg, plant, ctrl, module)
    ctrl = ctrl if ctrl is not None else build_controller(cfg, module)
    return BatchLibrary(cfg, plant, build_batch_library(ctrl))
