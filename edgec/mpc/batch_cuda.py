"""The batched closed-loop simulator on a GPU (``edgec simulate --batch N --device cuda``).

One generated CUDA file (``templates/cuda/batch_sim.cu.j2``) holds the whole loop as device code:
the controller (``firmware/mpc/edgec_mpc.c`` with ``EDGEC_MPC_FN __device__``), its forward model
as the CUDA back-end's per-sample code of the same optimised graph (``<model>_cu.cu`` with
``<MODEL>_CU_SAMPLE_ONLY``), the C plants and ``edgec_loop_run``, one loop per thread, plus a
host API (upload once, run slices, trace one loop). nvcc builds it into a cached shared library
(``-fmad=false``: no fused multiply-adds, so the GPU computes what the CPU library computes up
to the CUDA math library's last bits). The same file compiled as host C++
(``EDGEC_HOST_BUILD``: host memory, a launch is a loop over the thread indices) equals the CPU
library bit for bit (tests/test_batch_sim_cuda.py), which checks the device path's logic
without a GPU.

:class:`CudaBatchLibrary` is :class:`edgec.mpc.batch.BatchLibrary` with its library calls
swapped, so ``run_batch`` and the reports are the CPU simulator's.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgec._package import __version__
from edgec.backend.cuda.build import (
    HOST_CXXFLAGS,
    build_device_library,
    find_nvcc,
    require_gpu,
)
from edgec.backend.cuda.emit import BLOCK, CudaSources, emit_cuda, render_template
from edgec.backend.host import build_cached_library
from edgec.errors import EdgecError
from edgec.mpc.batch import BatchLibrary, _Spec, plant_sources
from edgec.mpc.build import CONFIG_HEADER, RUNTIME_FILES, Controller, runtime_dir
from edgec.mpc.config import MpcConfig
from edgec.mpc.plants import Plant

#: the generated translation unit
BATCH_CU = "edgec_batch.cu"
#: nvcc flags of the GPU library besides edgec's own (warnings as errors, -O3): no FMA
#: contraction, so a loop on the GPU rounds as the CPU library does (see docs/cuda.md)
NVCC_BATCH_FLAGS = ("-fmad=false",)
#: loops per kernel launch (the progress bar advances between launches)
GPU_SLICE = 1 << 16
#: how the one-line errors of a machine without a GPU or nvcc end
CPU_HINT = "the batched simulator runs on the host with --device cpu"


def model_sources(ctrl: Controller) -> CudaSources:
    """The forward model (the controller's optimised graph, Jacobian included) as CUDA sources,
    named ``<model>_cu`` beside the C model that the config header names. A model shipped as
    text (a tuning trial's :class:`edgec.scale.trial.ShippedModel`) brings them along."""
    shipped = getattr(ctrl.model, "cuda_sources", None)
    if shipped is not None:
        return cast(CudaSources, shipped)
    return emit_cuda(ctrl.model.graph, f"{ctrl.model.name}_cu")


def batch_cuda_files(ctrl: Controller) -> dict[str, str]:
    """Every file of the GPU simulator: the generated ``edgec_batch.cu`` and what it includes."""
    cu = model_sources(ctrl)
    main = render_template(
        "batch_sim.cu.j2", file=BATCH_CU, version=__version__, controller=ctrl.cfg.name,
        cu_name=cu.name, CU_NAME=cu.name.upper(), jacobian_exact=ctrl.cfg.jacobian == "exact",
        block=BLOCK,
    )
    return {
        BATCH_CU: main,
        f"{cu.name}.h": cu.header,
        f"{cu.name}.cu": cu.source,
        f"{ctrl.model.name}.h": ctrl.model.c_header,
        CONFIG_HEADER: ctrl.header,
        **{f: (runtime_dir() / f).read_text() for f in RUNTIME_FILES},
        **plant_sources(),
    }


def build_batch_cuda(ctrl: Controller, host: bool = False, arch: str = "native") -> Path:
    """``edgec_batch.cu`` as a shared library: nvcc for the GPU ``arch``, or (``host``) the
    host C++ build of the same file; cached by content."""
    files = batch_cuda_files(ctrl)
    name = f"batch-{ctrl.cfg.name}"
    if host:
        return build_cached_library(f"{name}-cudahost", files, [BATCH_CU], HOST_CXXFLAGS,
                                    f"the host build of the GPU simulator of '{ctrl.cfg.name}'")
    return build_device_library(f"{name}-cuda", files, [BATCH_CU], NVCC_BATCH_FLAGS, arch,
                                f"the GPU simulator of '{ctrl.cfg.name}'")


class CudaBatchLibrary(BatchLibrary):
    """The batch on the GPU library (or its host build): each batch uploaded once at ``load``,
    run in slices of :data:`GPU_SLICE` loops, one loop per GPU thread."""

    device = "cuda"
    handle: Any = None

    def _bind(self) -> None:
        lib = self.lib
        lib.edgec_batch_device_open.argtypes = [ctypes.POINTER(_Spec), ctypes.c_int,
                                                ctypes.c_int, ctypes.c_int,
                                                ctypes.POINTER(ctypes.c_void_p)]
        lib.edgec_batch_device_close.argtypes = [ctypes.c_void_p]
        lib.edgec_batch_device_close.restype = None
        lib.edgec_batch_device_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                               ctypes.c_void_p]
        lib.edgec_batch_device_trace.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                 ctypes.c_void_p, ctypes.c_void_p]
        lib.edgec_batch_error.argtypes = [ctypes.c_int]
        lib.edgec_batch_error.restype = ctypes.c_char_p

    def _check(self, rc: int) -> None:
        if rc != 0:
            why = (self.lib.edgec_batch_error(rc) or b"error").decode()
            raise EdgecError(f"the batched simulator on the GPU failed: CUDA error {rc} ({why})")

    def close(self) -> None:
        """Frees the uploaded batch (device memory)."""
        if self.handle is not None and self.lib is not None:
            self.lib.edgec_batch_device_close(self.handle)
        self.handle = None

    def __del__(self) -> None:
        self.close()

    def _loaded(self, n_refs: int, n_rows: int) -> None:
        self.close()
        handle = ctypes.c_void_p()
        self._check(self.lib.edgec_batch_device_open(ctypes.byref(self.spec), self.n, n_refs,
                                                     n_rows, ctypes.byref(handle)))
        self.handle = handle

    def slice_size(self, threads: int) -> int:
        return GPU_SLICE

    def _run_slice(self, first: int, count: int, threads: int, out: np.ndarray) -> int:
        return int(self.lib.edgec_batch_device_run(self.handle, first, count, out.ctypes.data))

    def _trace_loop(self, i: int, res: np.ndarray, tr: np.ndarray) -> int:
        return int(self.lib.edgec_batch_device_trace(self.handle, i, len(tr), res.ctypes.data,
                                                     tr.ctypes.data))

    def plant_rollout(self, params: np.ndarray, u: np.ndarray) -> np.ndarray:
        raise EdgecError("the plant alone runs in the CPU library (device cpu)")


def open_cuda_batch(cfg: MpcConfig, plant: Plant, ctrl: Controller | None = None,
                    module: Any = None, host: bool = False) -> CudaBatchLibrary:
    """The GPU simulator of the controller (``host``: its host C++ build, no GPU needed).
    Without a GPU, or without nvcc, a one-line EdgecError says what is missing."""
    from edgec.mpc.build import build_controller

    if not host:
        require_gpu(CPU_HINT)
        find_nvcc(CPU_HINT)
    ctrl = ctrl if ctrl is not None else build_controller(cfg, module)
    return CudaBatchLibrary(cfg, plant, build_batch_cuda(ctrl, host=host))
