"""What the CUDA tests need from this machine: ``NVCC`` (the nvcc path or None), the number of
visible GPUs and why there is none, and the skip markers built from them (one definition for
every CUDA test module)."""

from __future__ import annotations

import pytest

from edgec.backend.cuda.build import find_nvcc, gpu_count
from edgec.errors import ToolchainError


def _nvcc() -> str | None:
    try:
        return find_nvcc()
    except ToolchainError:
        return None


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit)")
GPUS, NO_GPU_WHY = gpu_count()
needs_gpu = pytest.mark.skipif(GPUS == 0, reason=f"no CUDA GPU visible: {NO_GPU_WHY}")
