"""Build generated C into a host shared library (cached by content hash) and call it via ctypes."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgec.backend.c_emit import CModel, Port
from edgec.errors import ToolchainError

HOST_CFLAGS = ("-O2", "-std=c99", "-fPIC", "-shared", "-Wall", "-Wextra")
#: added to the host library's flags where the host compiler targets x86-64 and this CPU runs
#: AVX2 and FMA (:func:`host_simd_flags`): the float dense and conv kernels then take their
#: ``EDGEC_AVX2`` path (edgec/ops/gemm.py); ``-DEDGEC_NO_AVX2`` or the environment variable
#: ``EDGEC_NO_AVX2=1`` keeps the plain C
#: (``-mprefer-vector-width=128``: gcc's own 256-bit vectorisation of the plain-C kernels, the
#: recurrent cells' small walks, made them ~25 % slower than without AVX2; the explicit AVX2
#: kernels are intrinsics and keep their 256-bit width)
AVX2_CFLAGS = ("-mavx2", "-mfma", "-mprefer-vector-width=128")

_AVX2_PROBE = """#if !defined(__x86_64__) || !defined(__AVX2__) || !defined(__FMA__)
#error "the compiler does not target x86-64 with AVX2 and FMA"
#endif
int main(void)
{
    __builtin_cpu_init();
    return (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 0 : 1;
}
"""


def cache_dir() -> Path:
    root = os.environ.get("EDGEC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgec"
    )
    p = Path(root) / "host"
    p.mkdir(parents=True, exist_ok=True)
    return p


def host_cc() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise ToolchainError("no host C compiler found: install gcc (apt-get install gcc)")
    return cc


@functools.cache
def _runs_avx2(cc: str) -> bool:
    """Whether ``cc`` builds x86-64 code with ``-mavx2 -mfma`` that this CPU can run (a probe
    compiled and run once per process and compiler)."""
    with tempfile.TemporaryDirectory(prefix="edgec-probe-") as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(_AVX2_PROBE)
        try:
            built = subprocess.run([cc, *AVX2_CFLAGS, "-o", str(exe), str(src)],
                                   capture_output=True, text=True)
            return built.returncode == 0 and subprocess.run([str(exe)]).returncode == 0
        except OSError:
            return False


def host_simd_flags() -> tuple[str, ...]:
    """:data:`AVX2_CFLAGS` where the host compiler and CPU support them and ``EDGEC_NO_AVX2``
    is not set in the environment, else nothing."""
    if os.environ.get("EDGEC_NO_AVX2", "") not in ("", "0"):
        return ()
    return AVX2_CFLAGS if _runs_avx2(host_cc()) else ()


def content_key(parts: list[str], files: Mapping[str, str | bytes]) -> str:
    """A cache key of a command (``parts``) and its input ``files`` (name → text, or bytes
    by their SHA-256)."""
    parts = list(parts)
    for fname in sorted(files):
        data = files[fname]
        parts += [fname, data if isinstance(data, str)
                  else "sha256:" + hashlib.sha256(data).hexdigest()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def write_files(directory: Path, files: Mapping[str, str | bytes]) -> None:
    for fname, data in files.items():
        if isinstance(data, bytes):
            (directory / fname).write_bytes(data)
        else:
            (directory / fname).write_text(data)


def build_cached_library(
    name: str,
    files: Mapping[str, str | bytes],
    sources: list[str],
    flags: tuple[str, ...],
    what: str,
) -> Path:
    """Compile ``files`` (name → text, or bytes: data a source includes, e.g. the CUDA
    target's weight blob; ``sources`` are the .c among them) into a shared library in edgec's
    cache, keyed by the content, the compiler and the flags; reuse it when present."""
    cc = host_cc()
    lib = cache_dir() / f"{name}-{content_key([cc, *flags, *sources], files)}.so"
    if lib.is_file():
        return lib
    with tempfile.TemporaryDirectory(prefix="edgec-") as tmp:
        write_files(Path(tmp), files)
        out = Path(tmp) / "lib.so"
        proc = subprocess.run(
            [cc, *flags, "-I", tmp, "-o", str(out), *[str(Path(tmp) / s) for s in sources], "-lm"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["(no output)"]
            raise ToolchainError(
                f"host C compiler failed on {what}: "
                + next((ln for ln in lines if "error" in ln), lines[0])
            )
        tmp_lib = lib.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_lib)
        os.replace(tmp_lib, lib)
    return lib


def build_shared(cm: CModel, extra_flags: tuple[str, ...] = ()) -> Path:
    """The model's generated C as a host shared library (cached by content hash), with the
    AVX2+FMA kernels where the host runs them (:func:`host_simd_flags`)."""
    files = {f"{cm.name}.h": cm.header, f"{cm.name}.c": cm.source}
    return build_cached_library(
        cm.name,
        files,
        [f"{cm.name}.c"],
        HOST_CFLAGS + host_simd_flags() + tuple(extra_flags),
        f"generated code for '{cm.name}'",
    )


_FP = ctypes.POINTER(ctypes.c_float)
_I8P = ctypes.POINTER(ctypes.c_int8)
_I32P = ctypes.POINTER(ctypes.c_int32)


def _ptr_type(p: Port) -> type:
    return {"int8": _I8P, "int32": _I32P}.get(p.dtype, _FP)


class HostLibrary:
    """ctypes view of a compiled model: ``run`` and, for stateful models, ``reset``/``step``."""

    def __init__(self, cm: CModel, path: Path):
        self.cm = cm
        self.lib = ctypes.CDLL(str(path))
        self._run = getattr(self.lib, f"{cm.name}_run")
        self._run.restype = ctypes.c_int
        self._run.argtypes = [_ptr_type(p) for p in cm.inputs + cm.outputs]
        self.state_buf: ctypes.Array[ctypes.c_char] | None = None
        if cm.state:
            size = sum(8 * p.size for p in cm.inputs if p.state)
            self.state_buf = ctypes.create_string_buffer(max(size, 1))
            self._reset = getattr(self.lib, f"{cm.name}_reset")
            self._reset.argtypes = [ctypes.c_void_p]
            self._reset.restype = None
            self._step = getattr(self.lib, f"{cm.name}_step")
            plain = [p for p in cm.inputs + cm.outputs if not p.state]
            self._step.argtypes = [ctypes.c_void_p] + [_ptr_type(p) for p in plain]
            self._step.restype = ctypes.c_int

    @staticmethod
    def _in(x: np.ndarray, p: Port) -> np.ndarray:
        """An input as the C port expects it: float32, int8 codes for an int8 port (integer
        arrays with values in [-128, 127]; float arrays are refused rather than quantized), or
        int32 integers for an index port (float arrays refused)."""
        raw = np.asarray(x)
        if p.dtype == "int8":
            if raw.dtype.kind not in "iub":
                raise ValueError(
                    f"{p.name}: an int8 port takes int8 codes, got a {raw.dtype} array "
                    f"(quantize first: q = round(x / {p.scale}) + {p.zero_point})"
                )
            if raw.size and (raw.min() < -128 or raw.max() > 127):
                raise ValueError(f"{p.name}: int8 values must lie in [-128, 127]")
        elif p.dtype == "int32":
            if raw.dtype.kind not in "iub":
                raise ValueError(f"{p.name}: an int32 index port takes integers, got a "
                                 f"{raw.dtype} array")
            if raw.size and (raw.min() < -(2**31) or raw.max() > 2**31 - 1):
                raise ValueError(f"{p.name}: int32 values must lie in [-2^31, 2^31)")
        a = np.ascontiguousarray(raw.astype(p.np_dtype, copy=False))
        if a.size != p.size:
            raise ValueError(f"{p.name}: expected {p.size} values, got {a.size} (shape {a.shape})")
        return a

    def _out_arrays(self, out: list[np.ndarray]) -> list[np.ndarray]:
        cm = self.cm
        if len(out) != len(cm.outputs):
            raise ValueError(f"{cm.name}: expected {len(cm.outputs)} output arrays, got {len(out)}")
        for a, p in zip(out, cm.outputs, strict=True):
            if not isinstance(a, np.ndarray) or a.dtype != p.np_dtype or a.size != p.size \
                    or not a.flags.c_contiguous or not a.flags.writeable:
                raise ValueError(
                    f"{p.name}: an output array must be a writable C-contiguous "
                    f"{np.dtype(p.np_dtype).name} array of {p.size} values"
                )
        return list(out)

    @staticmethod
    def _args(arrays: list[np.ndarray], ports: list[Port]) -> list:
        return [a.ctypes.data_as(_ptr_type(p)) for a, p in zip(arrays, ports, strict=True)]

    def run(self, *xs: np.ndarray, out: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """``out``: arrays the outputs are written into (C-contiguous, the ports' dtypes and
        sizes); they may not overlap the inputs or each other, except a state input and its
        output updated in place (what the header allows: ``run(x, h, out=[y, h])``)."""
        cm = self.cm
        if len(xs) != len(cm.inputs):
            raise ValueError(f"{cm.name}: expected {len(cm.inputs)} inputs, got {len(xs)}")
        ins = [self._in(x, p) for x, p in zip(xs, cm.inputs, strict=True)]
        if out is None:
            outs = [np.zeros(p.shape, p.np_dtype) for p in cm.outputs]
        else:
            outs = self._out_arrays(out)
            check_no_overlap(cm, ins, outs)
        rc = self._run(*self._args(ins + outs, cm.inputs + cm.outputs))
        if rc != 0:
            raise RuntimeError(f"{cm.name}_run returned {rc}")
        return outs

    def reset(self) -> None:
        if self.state_buf is None:
            raise ValueError(f"{self.cm.name} has no state: use run()")
        self._reset(self.state_buf)

    def step(self, *xs: np.ndarray) -> list[np.ndarray]:
        if self.state_buf is None:
            raise ValueError(f"{self.cm.name} has no state: use run()")
        plain_in = [p for p in self.cm.inputs if not p.state]
        if len(xs) != len(plain_in):
            raise ValueError(f"{self.cm.name}: step expects {len(plain_in)} inputs, got {len(xs)}")
        ins = [self._in(x, p) for x, p in zip(xs, plain_in, strict=True)]
        plain_out = [p for p in self.cm.outputs if not p.state]
        outs = [np.zeros(p.shape, p.np_dtype) for p in plain_out]
        rc = self._step(self.state_buf, *self._args(ins + outs, plain_in + plain_out))
        if rc != 0:
            raise RuntimeError(f"{self.cm.name}_step returned {rc}")
        return outs

    def state(self) -> dict[str, np.ndarray]:
        """The current state tensors (by state input name)."""
        if self.state_buf is None:
            return {}
        raw = np.frombuffer(self.state_buf.raw, np.float32)
        out, off = {}, 0
        ports = {p.name: p for p in self.cm.inputs}
        for s_in, _ in self.cm.state:
            p = ports[s_in]
            out[p.name] = raw[off : off + p.size].reshape(p.shape).copy()
            off += (1 if p.name in self.cm.state_inplace else 2) * p.size  # [+ _next]
        return out


def check_no_overlap(cm: CModel, ins: list[np.ndarray], outs: list[np.ndarray]) -> None:
    """Refuse buffers the generated C declares restrict and that overlap: any output with an
    input or another output, except a state input and its output updated in place, which may
    be the very same buffer (``<name>_run(x, h, y, h)``)."""
    in_place = {(a, b) for a, b in cm.state if a in cm.state_inplace}
    outputs = list(zip(cm.outputs, outs, strict=True))
    for k, (po, o) in enumerate(outputs):
        others = list(zip(cm.inputs, ins, strict=True)) + outputs[k + 1 :]
        for pi, i in others:
            if not np.shares_memory(o, i):
                continue
            same = o.ctypes.data == i.ctypes.data and o.nbytes == i.nbytes
            if same and (pi.name, po.name) in in_place:
                continue
            raise ValueError(
                f"{cm.name}: buffers of '{pi.name}' and '{po.name}' overlap; the generated C "
                "takes restrict pointers (only a state updated in place may share its buffer: "
                f"{', '.join(f'{a} -> {b}' for a, b in sorted(in_place)) or 'none here'})"
            )
