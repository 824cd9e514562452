"""Builds of the generated CUDA library: nvcc (device code, a shared library for a GPU) and the
host C++ build of the same file (the per-sample code on the CPU), both cached by content; the
checks that say what is missing (nvcc, a GPU)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edgec.backend.cuda.emit import CudaSources
from edgec.backend.host import build_cached_library, cache_dir, content_key, write_files
from edgec.errors import EdgecError, ToolchainError

#: flags of the host build: the generated .cu compiled as C++ by the host C compiler driver;
#: no FMA contraction, like the C back-end's host build
HOST_CXXFLAGS = ("-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-ffp-contract=off",
                 "-DEDGEC_HOST_BUILD",
                 "-x", "c++", "-std=c++14")
#: warnings are errors in every nvcc build edgec runs
NVCC_FLAGS = ("-O3", "-std=c++14", "-Werror", "all-warnings")
#: strategy layers: CUTLASS 4.x needs C++17; its headers are system headers (-isystem), so
#: CUTLASS's own warnings do not trip -Werror all-warnings of the generated code
LAYERS_NVCC_FLAGS = ("-O3", "-std=c++17", "-Werror", "all-warnings")
CPU_HINT = ("the host build of the same code runs without one: m.run(..., device='cpu'), "
            "edgec verify --cuda cpu")


#: where the CUDA toolkit usually is when nvcc is not on PATH
DEFAULT_CUDA_HOMES: tuple[str, ...] = ("/usr/local/cuda",)


def find_nvcc(hint: str = CPU_HINT) -> str:
    """nvcc: ``$NVCC``, else on PATH, else ``$CUDA_HOME/bin/nvcc`` (or ``$CUDA_PATH``), else
    under :data:`DEFAULT_CUDA_HOMES`; a one-line error if none (ending with ``hint``)."""
    env = os.environ.get("NVCC")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env
        raise ToolchainError(f"NVCC={env}: not an executable file")
    found = shutil.which("nvcc")
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), *DEFAULT_CUDA_HOMES]
    for home in homes:
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    looked = ["PATH", "$NVCC", "$CUDA_HOME/bin", *(f"{h}/bin" for h in DEFAULT_CUDA_HOMES)]
    raise ToolchainError(
        f"nvcc not found (looked in {', '.join(looked)}): install the CUDA "
        f"toolkit to build target cuda models for a GPU; {hint}"
    )


def gpu_count() -> tuple[int, str]:
    """(number of CUDA devices the NVIDIA driver sees, why none when 0)."""
    try:
        drv = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    rc = drv.cuInit(0)
    if rc != 0:
        name = ctypes.c_char_p()
        drv.cuGetErrorName(rc, ctypes.byref(name))
        return 0, f"the NVIDIA driver reports {(name.value or b'error').decode()} ({rc})"
    n = ctypes.c_int(0)
    if drv.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value == 0:
        return 0, "the NVIDIA driver sees no CUDA device"
    return n.value, ""


def require_gpu(hint: str = CPU_HINT) -> None:
    n, why = gpu_count()
    if n == 0:
        raise EdgecError(f"no CUDA GPU visible: {why}; {hint}")


def _cuda_cache() -> Path:
    p = cache_dir().parent / "cuda"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _run_nvcc(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr + proc.stdout).strip().splitlines() or ["(no output)"]
        raise ToolchainError(
            f"nvcc failed on {what}: " + next((ln for ln in lines if "error" in ln), lines[0])
        )
    return proc.stdout + proc.stderr


def nvcc_compile(src: CudaSources, arch: str, out_dir: Path, extra: tuple[str, ...] = ()) -> Path:
    """Compile ``<name>.cu`` to an object for ``arch`` (e.g. ``sm_90``) with warnings as errors
    (the check that the sources build with plain nvcc)."""
    return _nvcc_object(src, arch, out_dir, extra)[0]


def nvcc_flags(src: CudaSources) -> tuple[str, ...]:
    """The nvcc flags of ``src``: warnings as errors; -fmad=false where results must round like
    the reference; strategy layers: C++17 and the CUTLASS headers (edgec[cuda])."""
    if src.strategy == "layers":
        from edgec.backend.cuda.layers import cutlass_include

        return (*LAYERS_NVCC_FLAGS, "-isystem", str(cutlass_include()))
    return (*NVCC_FLAGS, *(("-fmad=false",) if src.exact_fp else ()))


def _nvcc_object(src: CudaSources, arch: str, out_dir: Path,
                 extra: tuple[str, ...]) -> tuple[Path, str]:
    """(the object, nvcc's output)."""
    nvcc = find_nvcc()
    src.write(out_dir)
    obj = out_dir / f"{src.name}.{arch}.o"
    text = _run_nvcc([nvcc, *nvcc_flags(src), *extra, f"-arch={arch}", "-I", str(out_dir),
                      "-c", str(out_dir / f"{src.name}.cu"), "-o", str(obj)],
                     f"'{src.name}.cu' ({arch})")
    return obj, text


def _check_blob(src: CudaSources) -> None:
    if src.strategy == "layers" and not src.weights_blob:
        raise EdgecError(f"{src.name}: the weight blob {src.name}_weights.bin is missing (the "
                         f"{src.name}.cu of strategy layers links it): compile the model again")


def build_device(src: CudaSources, glue: str, arch: str = "native") -> Path:
    """The model and its glue as a shared library for the GPU (nvcc), cached by content."""
    _check_blob(src)
    files = {**src.files(), "glue.cu": glue}
    return build_device_library(src.name, files, [f"{src.name}.cu", "glue.cu"], (), arch,
                                f"'{src.name}.cu'", base=nvcc_flags(src))


def build_device_library(name: str, files: Mapping[str, str | bytes], sources: list[str],
                         extra: tuple[str, ...], arch: str, what: str,
                         base: tuple[str, ...] = NVCC_FLAGS) -> Path:
    """``files`` (name → text, or bytes such as a weight blob, which the assembler finds
    through ``-I`` like a header; ``sources`` the .cu among them) built by nvcc into a shared
    library for ``arch``, warnings as errors (``base`` flags), cached by content and flags."""
    nvcc = find_nvcc()
    flags = (*base, *extra, f"-arch={arch}", "-shared", "-Xcompiler", "-fPIC")
    key = content_key([nvcc, *flags, *sources], files)
    lib = _cuda_cache() / f"{name}-{key}.so"
    if lib.is_file():
        return lib
    with tempfile.TemporaryDirectory(prefix="edgec-cuda-") as tmp:
        write_files(Path(tmp), files)
        out = Path(tmp) / "lib.so"
        _run_nvcc([nvcc, *flags, "-I", tmp, "-o", str(out),
                   *[str(Path(tmp) / s) for s in sources]], what)
        tmp_lib = lib.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_lib)
        os.replace(tmp_lib, lib)
    return lib


def build_host(src: CudaSources, glue: str) -> Path:
    """The same ``<name>.cu`` built by the host compiler as C++ (``EDGEC_HOST_BUILD``): the
    per-sample code on the CPU, with the glue, as a shared library (cached by content)."""
    _check_blob(src)
    files = {**src.files(), "glue.cu": glue}
    return build_cached_library(
        f"{src.name}_cudahost", files, [f"{src.name}.cu", "glue.cu"], HOST_CXXFLAGS,
        f"the host build of '{src.name}.cu'",
    )


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_PTXAS_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


def resource_usage(src: CudaSources, arch: str, out_dir: Path) -> dict[str, dict[str, int]]:
    """What ptxas reports for each generated kernel on ``arch`` (no GPU needed): registers per
    thread, stack frame (local memory: the per-thread arena where it is not in registers) and
    spill bytes, by kernel (``run``, ``reset``, ``step``)."""
    _, text = _nvcc_object(src, arch, out_dir, ("--resource-usage",))
    usage: dict[str, dict[str, int]] = {}
    kernel = None
    for line in text.splitlines():
        m = _PTXAS_ENTRY.search(line)
        if m:
            found = re.search(rf"{src.name}_(\w+?)_kernel", m.group(1))
            kernel = found.group(1) if found else None
            continue
        if kernel is None:
            continue
        f = _PTXAS_FRAME.search(line)
        if f:
            usage.setdefault(kernel, {}).update(
                stack_bytes=int(f.group(1)), spill_store_bytes=int(f.group(2)),
                spill_load_bytes=int(f.group(3)))
        r = _PTXAS_REGS.search(line)
        if r:
            usage.setdefault(kernel, {})["registers"] = int(r.group(1))
    return usage
