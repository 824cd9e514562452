"""The blimp example's fitness for a whole population in compiled code: on the GPU when one is
present, else on the CPU (the same ``population.cu`` built as host C++, candidates split over
threads).

``PopulationFitness(inputs, target, spec, device)`` is a drop-in for ``blimp_snn.fitness``: it
returns each candidate's least-squares readout and imitation MSE. The compiled code
accumulates the readout's normal equations per candidate (see population.cu); the readout is
solved here in double, as ``blimp_snn.fit_readout`` does, and the MSE follows from the same
sums (wᵀAw − 2wᵀb + yᵀy) / T without the features ever leaving the device.

Builds go through edgec's CUDA build helpers (nvcc with warnings as errors and ``-fmad=false``;
the host build with ``-ffp-contract=off``), cached by content like every edgec build.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgec.backend.cuda.build import (
    HOST_CXXFLAGS,
    build_device_library,
    find_nvcc,
    gpu_count,
    require_gpu,
)
from edgec.backend.host import build_cached_library
from edgec.errors import EdgecError

SOURCE = Path(__file__).with_name("population.cu")
RIDGE = 1e-3  # as blimp_snn.fit_readout
CPU_HINT = "the population runs on the CPU with --device cpu"


class _Config(ctypes.Structure):
    _fields_ = [("steps", ctypes.c_int), ("adaptive", ctypes.c_int), ("lam", ctypes.c_float)]


def build(device: str, arch: str = "native") -> Path:
    """population.cu as a shared library: nvcc for the GPU (``cuda``) or the host C++ build
    (``cpu``); cached by content."""
    files = {SOURCE.name: SOURCE.read_text()}
    if device == "cpu":
        return build_cached_library("blimp-population-host", files, [SOURCE.name],
                                    HOST_CXXFLAGS, "the blimp population evaluator (host)")
    return build_device_library("blimp-population-cuda", files, [SOURCE.name], ("-fmad=false",),
                                arch, "the blimp population evaluator (GPU)")


def pick_device(device: str) -> str:
    """``auto`` → ``cuda`` where a GPU and nvcc are present, else ``cpu``; ``cuda`` without
    them is a one-line error saying what is missing."""
    if device == "auto":
        try:
            find_nvcc(CPU_HINT)
        except EdgecError:
            return "cpu"
        return "cuda" if gpu_count()[0] > 0 else "cpu"
    if device == "cuda":
        require_gpu(CPU_HINT)
        find_nvcc(CPU_HINT)
    elif device != "cpu":
        raise EdgecError(f"device '{device}': use cpu, cuda or auto")
    return device


def _ptr(a: np.ndarray | None) -> Any:
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


class PopulationFitness:
    """``blimp_snn.fitness`` for whole populations in compiled code (``device`` cpu or cuda)."""

    def __init__(self, inputs: np.ndarray, target: np.ndarray, spec: Any, device: str = "auto",
                 threads: int | None = None):
        import blimp_snn as bs  # the example's module (its directory is on sys.path)

        self.bs, self.spec = bs, spec
        self.device = pick_device(device)
        self.lib = ctypes.CDLL(str(build(self.device)))
        n_enc, n_hid = ctypes.c_int(), ctypes.c_int()
        self.lib.blimp_pop_sizes(ctypes.byref(n_enc), ctypes.byref(n_hid))
        if (n_enc.value, n_hid.value) != (bs.N_ENC, bs.N_HID):
            raise EdgecError(f"population.cu is built for {n_enc.value} encoding and "
                             f"{n_hid.value} hidden neurons, the example has {bs.N_ENC} and "
                             f"{bs.N_HID}")
        self.routed = np.ascontiguousarray(inputs[:, bs.encoder_sources(spec)], np.float32)
        self.target = np.ascontiguousarray(target, np.float64)
        steps = self.target.size
        self.one = 1 - float(spec.lam) ** np.arange(1, steps + 1, dtype=np.float64)
        self.cfg = _Config(steps, int(spec.adaptive), float(np.float32(spec.lam)))
        self.threads = threads or os.cpu_count() or 1

    def sums(self, cand: np.ndarray, features: bool = False
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Per candidate: XᵀX [P, H+1, H+1], Xᵀy [P, H+1], yᵀy [P] and (``features``) the
        features [P, T, H] — the arrays ``blimp_snn.fit_readout`` builds from."""
        bs = self.bs
        w_enc, b_enc, w_hid, b_hid = (np.ascontiguousarray(a, np.float32)
                                      for a in bs.unpack(cand))
        pop, steps, nx = cand.shape[0], self.target.size, bs.N_HID + 1
        xtx = np.empty((pop, nx, nx))
        xty = np.empty((pop, nx))
        yty = np.empty(pop)
        feats = np.empty((pop, steps, bs.N_HID), np.float32) if features else None
        arrays = [self.routed, self.target, self.one, w_enc, b_enc, w_hid, b_hid, xtx, xty, yty,
                  feats]
        if self.device == "cuda":
            rc = self.lib.blimp_pop_eval_device(self.cfg, pop, *map(_ptr, arrays))
            if rc != 0:
                self.lib.blimp_pop_error.restype = ctypes.c_char_p
                why = (self.lib.blimp_pop_error(rc) or b"error").decode()
                raise EdgecError(f"the population evaluation on the GPU failed: CUDA error "
                                 f"{rc} ({why})")
        else:
            ptrs = list(map(_ptr, arrays))
            chunk = -(-pop // self.threads)
            ranges = [(a, min(chunk, pop - a)) for a in range(0, pop, chunk)]
            with ThreadPoolExecutor(len(ranges)) as ex:  # ctypes releases the GIL in the call
                list(ex.map(lambda r: self.lib.blimp_pop_eval_host(self.cfg, r[0], r[1], *ptrs),
                            ranges))
        return xtx, xty, yty, feats

    def __call__(self, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's readout [P, H+1] and imitation MSE [P], as blimp_snn.fitness."""
        xtx, xty, yty, _ = self.sums(cand)
        reg = xtx + RIDGE * np.eye(xtx.shape[1])
        w = np.linalg.solve(reg, xty[..., None])[..., 0]
        sse = np.einsum("pi,pij,pj->p", w, xtx, w) - 2 * np.einsum("pi,pi->p", w, xty) + yty
        return w, np.maximum(sse, 0.0) / self.target.size
