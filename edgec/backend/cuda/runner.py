"""ctypes runners over the builds of a generated CUDA library: the device build (a GPU, data
copied in and out, or torch CUDA tensors passed through) and the host build (the same
per-sample code on the CPU). Both take whole batches: ``arrays[i]`` is ``[batch, size]``."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from edgec.backend.cuda.emit import CudaSources
from edgec.errors import EdgecError

_PP = ctypes.POINTER(ctypes.c_void_p)


def glue_source(src: CudaSources, device: bool) -> str:
    """C entry points with a fixed signature (pointer arrays) over ``<name>_run``/``_step``,
    and, for the device build, the few CUDA runtime calls the runner needs."""
    n = src.name
    plain_in = [i for i, p in enumerate(src.inputs) if not p.state]
    plain_out = [i for i, p in enumerate(src.outputs) if not p.state]
    run_args = [f"(const {p.ctype} *)in[{i}]" for i, p in enumerate(src.inputs)]
    run_args += [f"({p.ctype} *)out[{i}]" for i, p in enumerate(src.outputs)]
    step_args = [f"(const {src.inputs[i].ctype} *)in[{k}]" for k, i in enumerate(plain_in)]
    step_args += [f"({src.outputs[i].ctype} *)out[{k}]" for k, i in enumerate(plain_out)]
    lines = [f'#include "{n}.h"', "", 'extern "C" {', ""]
    sep = ", " if run_args else ""
    ssep = ", " if step_args else ""
    st = f"({n}_state_t *)state"
    if not device:
        lines += [
            "int edgec_glue_run(int batch, void **in, void **out, void *ws)",
            f"{{\n    (void)in;\n    (void)out;\n    return {n}_run_host(batch{sep}"
            f"{', '.join(run_args)}, ws);\n}}",
        ]
        if src.state:
            lines += [
                "int edgec_glue_reset(int batch, void *state)",
                f"{{\n    {n}_reset_host(batch, {st});\n    return 0;\n}}",
                "int edgec_glue_step(int batch, void *state, void **in, void **out, void *ws)",
                f"{{\n    (void)in;\n    (void)out;\n    return {n}_step_host(batch, {st}{ssep}"
                f"{', '.join(step_args)}, ws);\n}}",
            ]
    else:
        sync = "    if (e == cudaSuccess) {\n        e = cudaDeviceSynchronize();\n    }\n"
        lines += [
            "const char *edgec_glue_error(int code)",
            "{\n    return cudaGetErrorString((cudaError_t)code);\n}",
            "int edgec_glue_malloc(void **p, size_t nbytes)",
            "{\n    return (int)cudaMalloc(p, nbytes);\n}",
            "int edgec_glue_free(void *p)",
            "{\n    return (int)cudaFree(p);\n}",
            "int edgec_glue_copy(void *dst, const void *src, size_t nbytes, int to_device)",
            "{\n    return (int)cudaMemcpy(dst, src, nbytes, to_device ? cudaMemcpyHostToDevice "
            ": cudaMemcpyDeviceToHost);\n}",
            "int edgec_glue_run(int batch, void **in, void **out, void *ws)",
            f"{{\n    (void)in;\n    (void)out;\n    cudaError_t e = {n}_run(batch{sep}"
            f"{', '.join(run_args)}, ws, 0);\n{sync}    return (int)e;\n}}",
        ]
        if src.state:
            lines += [
                "int edgec_glue_reset(int batch, void *state)",
                f"{{\n    cudaError_t e = {n}_reset(batch, {st}, 0);\n{sync}    return (int)e;\n}}",
                "int edgec_glue_step(int batch, void *state, void **in, void **out, void *ws)",
                f"{{\n    (void)in;\n    (void)out;\n    cudaError_t e = {n}_step(batch, {st}{ssep}"
                f"{', '.join(step_args)}, ws, 0);\n{sync}    return (int)e;\n}}",
            ]
    if src.weights_file is not None:
        lines += ["int edgec_glue_weights_check(void)",
                  f"{{\n    return {n}_weights_check();\n}}"]
        if device:
            lines += ["int edgec_glue_init(void)", f"{{\n    return (int){n}_init();\n}}"]
    lines += ["", '}  /* extern "C" */', ""]
    return "\n".join(lines)


#: what ``<name>_weights_check()`` returns, by code
_BLOB_FAULTS = {1: "its size is not the one edgec wrote", 2: "its header does not match the "
                "model", 3: "its CRC-32 does not match (the file changed after edgec wrote it)"}


def check_weights(src: CudaSources, lib: ctypes.CDLL) -> None:
    """Strategy layers: the weight blob linked into ``lib`` is the one edgec wrote for this
    model; a one-line error otherwise (before any run reads it)."""
    if src.weights_file is None:
        return
    code = int(lib.edgec_glue_weights_check())
    if code:
        why = _BLOB_FAULTS.get(code, f"check code {code}")
        raise EdgecError(f"{src.name}: the weights linked from {src.weights_file} are not "
                         f"this model's: {why}; write the sources again (edgec compile) and "
                         "rebuild")


def _ptrs(ptrs: list[int]) -> Any:
    return (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)


class HostRunner:
    """The host build: numpy arrays in and out, the samples one after another on the CPU."""

    device = "cpu"

    def __init__(self, src: CudaSources, lib: Path):
        self.src = src
        self.lib = ctypes.CDLL(str(lib))
        check_weights(src, self.lib)
        self.lib.edgec_glue_run.argtypes = [ctypes.c_int, _PP, _PP, ctypes.c_void_p]
        if src.state:
            self.lib.edgec_glue_reset.argtypes = [ctypes.c_int, ctypes.c_void_p]
            self.lib.edgec_glue_step.argtypes = [ctypes.c_int, ctypes.c_void_p, _PP, _PP,
                                                 ctypes.c_void_p]

    def _workspace(self, batch: int) -> np.ndarray:
        return np.zeros(max(1, batch * self.src.workspace_per_sample // 4), np.float32)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{self.src.name}_{what}_host returned {rc}")

    def run(self, batch: int, ins: list[np.ndarray], outs: list[np.ndarray]) -> None:
        ws = self._workspace(batch)
        rc = self.lib.edgec_glue_run(batch, _ptrs([a.ctypes.data for a in ins]),
                                     _ptrs([a.ctypes.data for a in outs]), ws.ctypes.data)
        self._check(rc, "run")

    def new_state(self, batch: int) -> np.ndarray:
        state = np.zeros((batch, self.src.state_floats), np.float32)
        self._check(self.lib.edgec_glue_reset(batch, state.ctypes.data), "reset")
        return state

    def step(self, batch: int, state: np.ndarray, ins: list[np.ndarray],
             outs: list[np.ndarray]) -> None:
        ws = self._workspace(batch)
        rc = self.lib.edgec_glue_step(batch, state.ctypes.data,
                                      _ptrs([a.ctypes.data for a in ins]),
                                      _ptrs([a.ctypes.data for a in outs]), ws.ctypes.data)
        self._check(rc, "step")

    @staticmethod
    def read_state(state: Any) -> np.ndarray:
        return np.array(state, np.float32)


class DeviceBuffer:
    """A cudaMalloc'd buffer, freed with its owner."""

    def __init__(self, runner: DeviceRunner, nbytes: int):
        self.runner = runner
        self.nbytes = nbytes
        p = ctypes.c_void_p()
        runner.check(runner.lib.edgec_glue_malloc(ctypes.byref(p), max(nbytes, 4)), "cudaMalloc")
        self.ptr = int(p.value or 0)

    def __del__(self) -> None:
        if getattr(self, "ptr", 0):
            self.runner.lib.edgec_glue_free(ctypes.c_void_p(self.ptr))
            self.ptr = 0


class DeviceRunner:
    """The device build: numpy arrays are copied to the GPU and back; torch CUDA tensors are
    passed as device pointers (the runner synchronises the device after each call)."""

    device = "cuda"

    def __init__(self, src: CudaSources, lib: Path):
        self.src = src
        self.lib = ctypes.CDLL(str(lib))
        lib_ = self.lib
        lib_.edgec_glue_error.restype = ctypes.c_char_p
        lib_.edgec_glue_error.argtypes = [ctypes.c_int]
        lib_.edgec_glue_malloc.argtypes = [_PP, ctypes.c_size_t]
        lib_.edgec_glue_free.argtypes = [ctypes.c_void_p]
        lib_.edgec_glue_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                         ctypes.c_int]
        lib_.edgec_glue_run.argtypes = [ctypes.c_int, _PP, _PP, ctypes.c_void_p]
        if src.state:
            lib_.edgec_glue_reset.argtypes = [ctypes.c_int, ctypes.c_void_p]
            lib_.edgec_glue_step.argtypes = [ctypes.c_int, ctypes.c_void_p, _PP, _PP,
                                             ctypes.c_void_p]
        check_weights(src, lib_)
        if src.weights_file is not None:
            self.check(lib_.edgec_glue_init(), f"{src.name}_init (the weights to the GPU)")

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            msg = (self.lib.edgec_glue_error(rc) or b"unknown error").decode()
            raise EdgecError(f"{self.src.name}: {what} failed on the GPU: {msg} ({rc})")

    def _to_device(self, a: np.ndarray) -> DeviceBuffer:
        buf = DeviceBuffer(self, a.nbytes)
        self.check(self.lib.edgec_glue_copy(buf.ptr, a.ctypes.data, a.nbytes, 1), "cudaMemcpy")
        return buf

    def _from_device(self, buf: DeviceBuffer, a: np.ndarray) -> None:
        self.check(self.lib.edgec_glue_copy(a.ctypes.data, buf.ptr, a.nbytes, 0), "cudaMemcpy")

    def _call(self, fn: Any, head: list[Any], ins: list[Any], outs: list[Any], what: str) -> None:
        """``ins``/``outs``: numpy arrays (copied) or objects with ``data_ptr()`` (device)."""
        d_in = [x if hasattr(x, "data_ptr") else self._to_device(x) for x in ins]
        d_out = [y if hasattr(y, "data_ptr") else DeviceBuffer(self, y.nbytes) for y in outs]

        def ptr(b: Any) -> int:
            return int(b.data_ptr()) if hasattr(b, "data_ptr") else b.ptr

        batch = int(head[0])
        ws = DeviceBuffer(self, batch * self.src.workspace_per_sample) \
            if self.src.workspace_per_sample else None
        self.check(fn(*head, _ptrs([ptr(b) for b in d_in]), _ptrs([ptr(b) for b in d_out]),
                      ctypes.c_void_p(ws.ptr if ws else None)), what)
        for y, b in zip(outs, d_out, strict=True):
            if not hasattr(y, "data_ptr"):
                self._from_device(b, y)

    def run(self, batch: int, ins: list[Any], outs: list[Any]) -> None:
        self._call(self.lib.edgec_glue_run, [batch], ins, outs, f"{self.src.name}_run")

    def new_state(self, batch: int) -> DeviceBuffer:
        buf = DeviceBuffer(self, 4 * batch * self.src.state_floats)
        self.check(self.lib.edgec_glue_reset(batch, buf.ptr), f"{self.src.name}_reset")
        return buf

    def step(self, batch: int, state: DeviceBuffer, ins: list[Any], outs: list[Any]) -> None:
        self._call(self.lib.edgec_glue_step, [batch, ctypes.c_void_p(state.ptr)], ins, outs,
                   f"{self.src.name}_step")

    def read_state(self, state: DeviceBuffer) -> np.ndarray:
        a = np.zeros(state.nbytes // 4, np.float32)
        self._from_device(state, a)
        return a
