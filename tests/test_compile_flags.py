"""The generated C compiles under strict flags (host and Cortex-M4), stays correct with FMA
contraction, and is clean under AddressSanitizer + UndefinedBehaviorSanitizer.

The models (tests/models.py, legacy exporter; BatchNorm left in the CNN for edgec to fold) cover
every op kind edgec compiles: dense, elementwise and activations, Conv 1-D/2-D/depthwise,
pooling, shape ops, Softmax, reductions, GRU and LSTM.
"""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgec
from edgec.backend.host import HostLibrary, build_shared
from tests import models
from tests.helpers import ort_run

STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
CORTEX_M4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
ARM_GCC = shutil.which("arm-none-eabi-gcc")
needs_arm_gcc = pytest.mark.skipif(
    ARM_GCC is None, reason="arm-none-eabi-gcc not on PATH (apt-get install gcc-arm-none-eabi)"
)

ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (models.TanhMLP, (1, 4)),
    "activations": (models.ActivationMix, (3, 6)),
    "cnn1d": (models.CNN1d, (1, 3, 37)),
    "dscnn2d": (models.DSCNN2d, (1, 3, 17, 17)),
    "pool2d": (models.PoolNet2d, (1, 2, 12, 12)),
    "attention": (models.AttentionPool, (1, 7, 8)),
    "gru": (models.GRUNet, (1, 9, 3)),
    "lstm": (models.LSTMNet, (1, 9, 3)),
}
IDS = list(ZOO)
_object_ids = itertools.count()


@dataclass
class Compiled:
    m: edgec.CompiledModel
    proto: onnx.ModelProto
    src_dir: Path  # holds <name>.h and <name>.c

    @property
    def c_file(self) -> Path:
        return self.src_dir / f"{self.m.name}.c"

    @property
    def macro(self) -> str:
        return self.m.name.upper()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Compiled]:
    """Exports and compiles a zoo model on first use (so one missing op fails one model)."""
    root = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Compiled] = {}

    def get(key: str) -> Compiled:
        if key not in cache:
            factory, shape = ZOO[key]
            model = models.build(factory)
            example = [torch.from_numpy(x) for x in models.random_inputs([shape])]
            path = models.export(model, example, root / f"{key}.onnx", "legacy",
                                 optimize=key != "dscnn2d")
            m = edgec.compile(path, name=f"zoo_{key}")
            src_dir = root / key
            m.write(src_dir)
            cache[key] = Compiled(m, onnx.load(str(path)), src_dir)
        return cache[key]

    return get


def _cc(compiler: str, args: list[str], cwd: Path) -> None:
    proc = subprocess.run([compiler, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{compiler} {' '.join(args)} failed:\n{proc.stderr[-4000:]}"


def _compile_object(c: Compiled, compiler: str, flags: tuple[str, ...],
                    defines: tuple[str, ...] = ()) -> None:
    out = c.src_dir / f"{c.m.name}-{next(_object_ids)}.o"
    _cc(compiler, [*flags, *defines, "-c", str(c.c_file), "-o", str(out)], c.src_dir)
    assert out.stat().st_size > 0


@pytest.mark.parametrize("key", IDS)
def test_host_strict(zoo: Callable[[str], Compiled], key: str) -> None:
    c = zoo(key)
    _compile_object(c, "gcc", STRICT)
    _compile_object(c, "gcc", (*STRICT, "-O2"), (f"-D{c.macro}_NO_STATIC_ARENA",))


@needs_arm_gcc
@pytest.mark.parametrize("key", IDS)
def test_cortex_m4_strict(zoo: Callable[[str], Compiled], key: str) -> None:
    assert ARM_GCC is not None
    c = zoo(key)
    _compile_object(c, ARM_GCC, (*CORTEX_M4, *STRICT, "-O2"))


def _host_fma_flags() -> tuple[str, ...]:
    """-mfma where the host CPU has FMA, so contraction really changes the arithmetic."""
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            has_fma = " fma " in Path("/proc/cpuinfo").read_text()
        except OSError:
            has_fma = False
        return ("-mfma",) if has_fma else ()
    return ()


@pytest.mark.parametrize("key", IDS)
def test_fp_contract_fast(zoo: Callable[[str], Compiled], key: str) -> None:
    """Fused multiply-adds change rounding, not results beyond tolerance; still warning-free."""
    c = zoo(key)
    _compile_object(c, "gcc", (*STRICT, "-O2", "-ffp-contract=fast"))
    if ARM_GCC is not None:
        _compile_object(c, ARM_GCC, (*CORTEX_M4, *STRICT, "-O2", "-ffp-contract=fast"))
    lib = HostLibrary(c.m.cmodel, build_shared(
        c.m.cmodel, ("-Werror", "-ffp-contract=fast", *_host_fma_flags())))
    feeds = _sample_feeds(c, seed=7)[0]
    got = lib.run(*[feeds[n] for n in c.m.input_names])[0]
    expected = ort_run(c.proto, feeds)[0]
    np.testing.assert_allclose(got, expected, rtol=models.ORT_RTOL, atol=models.ORT_ATOL)


# -- sanitizers -----------------------------------------------------------------------------

def _sample_feeds(c: Compiled, seed: int, count: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{p.name: rng.standard_normal(p.shape).astype(np.float32) for p in c.m.cmodel.inputs}
            for _ in range(count)]


def _driver_source(c: Compiled) -> str:
    """A host program: reads N samples of every input from a file, runs the model on each,
    writes the outputs. Every buffer is malloc'd at its exact size so ASan sees any overrun;
    the caller-supplied arena (with -D<NAME>_NO_STATIC_ARENA) is filled with NaNs first, so a
    read of memory the model did not write first shows up in the outputs."""
    cm, macro = c.m.cmodel, c.macro
    ins, outs = cm.inputs, cm.outputs
    lines = [
        "#include <stdio.h>",
        "#include <stdlib.h>",
        "#include <string.h>",
        f'#include "{cm.name}.h"',
        "",
        "static float *alloc_floats(size_t n)",
        "{",
        "    float *p = (float *)malloc(n * sizeof(float));",
        "    if (!p) exit(5);",
        "    return p;",
        "}",
        "",
        "int main(int argc, char **argv)",
        "{",
        "    long n, s;",
        "    int rc = 0;",
        "    FILE *fin, *fout;",
    ]
    for p in ins:
        lines.append(f"    float *{p.c} = alloc_floats({macro}_{p.C}_SIZE);")
    for p in outs:
        lines.append(f"    float *{p.c} = alloc_floats({macro}_{p.C}_SIZE);")
    lines += [
        f"#ifdef {macro}_NO_STATIC_ARENA",
        f"    const size_t arena_bytes = {macro}_ARENA_BYTES > 0 ? {macro}_ARENA_BYTES : 1;",
        "    float *arena = (float *)malloc(arena_bytes);",
        "    if (!arena) return 5;",
        "#endif",
        "    if (argc != 4) return 2;",
        "    n = strtol(argv[3], NULL, 10);",
        '    fin = fopen(argv[1], "rb");',
        '    fout = fopen(argv[2], "wb");',
        "    if (!fin || !fout) return 3;",
        "    for (s = 0; s < n && rc == 0; ++s) {",
    ]
    for p in ins:
        lines.append(
            f"        if (fread({p.c}, sizeof(float), {macro}_{p.C}_SIZE, fin) != "
            f"{macro}_{p.C}_SIZE) return 4;"
        )
    for p in outs:
        lines.append(f"        memset({p.c}, 0xff, {macro}_{p.C}_SIZE * sizeof(float));")
    args = ", ".join([p.c for p in ins] + [p.c for p in outs])
    lines += [
        f"#ifdef {macro}_NO_STATIC_ARENA",
        "        memset(arena, 0xff, arena_bytes); /* all NaN */",
        f"        rc = {cm.name}_run_arena(arena, {args});",
        "#else",
        f"        rc = {cm.name}_run({args});",
        "#endif",
    ]
    for p in outs:
        lines.append(
            f"        if (fwrite({p.c}, sizeof(float), {macro}_{p.C}_SIZE, fout) != "
            f"{macro}_{p.C}_SIZE) return 6;"
        )
    lines += ["    }", "    fclose(fin);", "    fclose(fout);"]
    for p in ins + outs:
        lines.append(f"    free({p.c});")
    lines += [f"#ifdef {macro}_NO_STATIC_ARENA", "    free(arena);", "#endif",
              "    return rc;", "}", ""]
    return "\n".join(lines)


@pytest.mark.parametrize("arena", ["static", "caller"])
@pytest.mark.parametrize("key", IDS)
def test_sanitizers(zoo: Callable[[str], Compiled], tmp_path: Path, key: str, arena: str) -> None:
    c = zoo(key)
    cm = c.m.cmodel
    assert not cm.state, "the driver below runs stateless models only"
    for f in (f"{cm.name}.h", f"{cm.name}.c"):
        shutil.copy(c.src_dir / f, tmp_path / f)
    (tmp_path / "driver.c").write_text(_driver_source(c))
    defines = [f"-D{c.macro}_NO_STATIC_ARENA"] if arena == "caller" else []
    _cc("gcc", [*STRICT, "-O1", *SANITIZE, *defines, "driver.c", f"{cm.name}.c", "-lm",
                "-o", "driver"], tmp_path)

    samples = _sample_feeds(c, seed=11, count=3)
    with open(tmp_path / "in.bin", "wb") as fh:
        for feeds in samples:
            for p in cm.inputs:
                fh.write(np.ascontiguousarray(feeds[p.name], np.float32).tobytes())
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run(["./driver", "in.bin", "out.bin", str(len(samples))], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, f"driver exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    assert "runtime error" not in proc.stderr, proc.stderr[-4000:]

    raw = np.fromfile(tmp_path / "out.bin", np.float32)
    per_sample = sum(p.size for p in cm.outputs)
    assert raw.size == per_sample * len(samples)
    for k, feeds in enumerate(samples):
        expected = ort_run(c.proto, feeds)
        off = k * per_sample
        for p, e in zip(cm.outputs, expected, strict=True):
            got = raw[off : off + p.size].reshape(p.shape)
            off += p.size
            np.testing.assert_allclose(got, e, rtol=models.ORT_RTOL, atol=models.ORT_ATOL,
                                       err_msg=f"sample {k}, output {p.name}")
