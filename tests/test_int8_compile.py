"""The generated C of an int8 model (every int8 op, int8 and float ports) compiles warning-free
under strict flags on the host and for Cortex-M (with and without the DSP extension), and runs
clean under AddressSanitizer + UndefinedBehaviorSanitizer with outputs equal to the numpy
reference, with the static arena and with a caller-supplied one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.api import CompiledModel, compile_graph
from edgec.ops.interpret import interpret
from tests.int8_graphs import kitchen_sink, random_feeds

STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
ARM_GCC = shutil.which("arm-none-eabi-gcc")
CORES = {
    "cortex-m4f": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m0": ("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[CompiledModel, Path]:
    m = compile_graph(kitchen_sink(3))
    d = tmp_path_factory.mktemp("int8src")
    m.write(d)
    return m, d


def _cc(compiler: str, args: list[str], cwd: Path) -> None:
    proc = subprocess.run([compiler, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{compiler} {' '.join(args)}:\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("extra", [(), ("-O2",), ("-O2", "-DKITCHEN_NO_STATIC_ARENA")])
def test_host_strict(model: tuple[CompiledModel, Path], extra: tuple[str, ...]) -> None:
    m, d = model
    _cc("gcc", [*STRICT, *extra, "-c", f"{m.name}.c", "-o", f"host{len(extra)}.o"], d)


@pytest.mark.skipif(ARM_GCC is None, reason="arm-none-eabi-gcc not on PATH "
                                            "(apt-get install gcc-arm-none-eabi)")
@pytest.mark.parametrize("core", list(CORES))
def test_cortex_m_strict(model: tuple[CompiledModel, Path], core: str) -> None:
    m, d = model
    assert ARM_GCC is not None
    _cc(ARM_GCC, [*CORES[core], *STRICT, "-O2", "-c", f"{m.name}.c", "-o", f"{core}.o"], d)


def _driver(m: CompiledModel) -> str:
    """Reads N samples of every input, runs the model on each, writes the outputs; every
    buffer malloc'd at its exact size (ASan sees overruns), a caller arena pre-filled with
    0xff bytes (a read before write would show in the outputs)."""
    cm, macro = m.cmodel, m.name.upper()
    lines = ["#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
             f'#include "{cm.name}.h"', "", "int main(int argc, char **argv)", "{",
             "    long n, s;", "    int rc = 0;", "    FILE *fin, *fout;"]
    for p in cm.inputs + cm.outputs:
        lines.append(f"    {p.ctype} *{p.c} = ({p.ctype} *)malloc({macro}_{p.C}_SIZE * "
                     f"sizeof({p.ctype}));")
        lines.append(f"    if (!{p.c}) return 5;")
    lines += [f"#ifdef {macro}_NO_STATIC_ARENA",
              f"    float *arena = (float *)malloc({macro}_ARENA_BYTES);",
              "    if (!arena) return 5;", "#endif",
              "    if (argc != 4) return 2;", "    n = strtol(argv[3], NULL, 10);",
              '    fin = fopen(argv[1], "rb");', '    fout = fopen(argv[2], "wb");',
              "    if (!fin || !fout) return 3;", "    for (s = 0; s < n && rc == 0; ++s) {"]
    for p in cm.inputs:
        lines.append(f"        if (fread({p.c}, sizeof({p.ctype}), {macro}_{p.C}_SIZE, fin) != "
                     f"{macro}_{p.C}_SIZE) return 4;")
    for p in cm.outputs:
        lines.append(f"        memset({p.c}, 0xff, {macro}_{p.C}_SIZE * sizeof({p.ctype}));")
    args = ", ".join(p.c for p in cm.inputs + cm.outputs)
    lines += [f"#ifdef {macro}_NO_STATIC_ARENA",
              f"        memset(arena, 0xff, {macro}_ARENA_BYTES);",
              f"        rc = {cm.name}_run_arena(arena, {args});", "#else",
              f"        rc = {cm.name}_run({args});", "#endif"]
    for p in cm.outputs:
        lines.append(f"        if (fwrite({p.c}, sizeof({p.ctype}), {macro}_{p.C}_SIZE, fout) "
                     f"!= {macro}_{p.C}_SIZE) return 6;")
    lines += ["    }", "    fclose(fin);", "    fclose(fout);"]
    lines += [f"    free({p.c});" for p in cm.inputs + cm.outputs]
    lines += [f"#ifdef {macro}_NO_STATIC_ARENA", "    free(arena);", "#endif",
              "    return rc;", "}", ""]
    return "\n".join(lines)


@pytest.mark.parametrize("arena", ["static", "caller"])
def test_sanitizers(model: tuple[CompiledModel, Path], tmp_path: Path, arena: str) -> None:
    m, d = model
    cm = m.cmodel
    for f in (f"{cm.name}.h", f"{cm.name}.c"):
        shutil.copy(d / f, tmp_path / f)
    (tmp_path / "driver.c").write_text(_driver(m))
    defines = [f"-D{m.name.upper()}_NO_STATIC_ARENA"] if arena == "caller" else []
    _cc("gcc", [*STRICT, "-O1", *SANITIZE, *defines, "driver.c", f"{cm.name}.c", "-lm",
                "-o", "driver"], tmp_path)
    rng = np.random.default_rng(21)
    samples = [random_feeds(m.graph, rng) for _ in range(8)]
    with open(tmp_path / "in.bin", "wb") as fh:
        for feeds in samples:
            for p in cm.inputs:
                fh.write(np.ascontiguousarray(feeds[p.name], p.np_dtype).tobytes())
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run(["./driver", "in.bin", "out.bin", str(len(samples))], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, f"driver exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    assert "runtime error" not in proc.stderr, proc.stderr[-4000:]
    raw = (tmp_path / "out.bin").read_bytes()
    off = 0
    for feeds in samples:
        want = interpret(m.graph, feeds)
        for p in cm.outputs:
            n = p.size * np.dtype(p.np_dtype).itemsize
            got = np.frombuffer(raw[off : off + n], p.np_dtype).reshape(p.shape)
            off += n
            assert np.array_equal(got, want[p.name]), p.name
    assert off == len(raw)
