"""Build a compiled model's C strictly (-Wall -Wextra -Werror -std=c99 -pedantic) and run it
under AddressSanitizer + UndefinedBehaviorSanitizer with every buffer malloc'd at its exact size
(and a caller-supplied arena filled with NaNs, so reads of unwritten memory show)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import edgec

STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")


def _cc(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"gcc {' '.join(args)} failed:\n{proc.stderr[-4000:]}"


def strict_for_m4f(m: edgec.CompiledModel, tmp: Path, name: str) -> None:
    """``m``'s C written to ``tmp`` compiles with arm-none-eabi-gcc -O2 for the Cortex-M4F
    (its DSP kernels) under the strict flags, warning-free (skips without the toolchain)."""
    import pytest

    from edgec.mcu.toolchain import have_tool

    if not have_tool("arm-none-eabi-gcc"):
        pytest.skip("needs arm-none-eabi-gcc (scripts/setup.sh installs it)")
    m.write(tmp)
    proc = subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                           "-mfpu=fpv4-sp-d16", "-O2", *STRICT, "-c", f"{name}.c", "-o",
                           f"{name}.o"], cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _driver(m: edgec.CompiledModel) -> str:
    cm, macro = m.cmodel, m.name.upper()
    ins, outs = cm.inputs, cm.outputs
    lines = ["#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
             f'#include "{cm.name}.h"', "int main(void)", "{",
             f"    float *arena = (float *)malloc({macro}_ARENA_BYTES > 0 ? "
             f"{macro}_ARENA_BYTES : 1);"]
    for p in ins + outs:
        lines.append(f"    float *{p.c} = (float *)malloc(sizeof(float) * {p.size});")
    for p in ins:
        lines.append(f"    if (fread({p.c}, sizeof(float), {p.size}, stdin) != {p.size}) "
                     f"return 4;")
    lines.append(f"    memset(arena, 0xff, {macro}_ARENA_BYTES > 0 ? {macro}_ARENA_BYTES : 1);")
    args = ", ".join([p.c for p in ins] + [p.c for p in outs])
    lines.append(f"    if ({cm.name}_run_arena(arena, {args}) != 0) return 5;")
    for p in outs:
        lines.append(f"    fwrite({p.c}, sizeof(float), {p.size}, stdout);")
    for p in ins + outs:
        lines.append(f"    free({p.c});")
    lines += ["    free(arena);", "    return 0;", "}", ""]
    return "\n".join(lines)


def strict_and_sanitized(m: edgec.CompiledModel, tmp: Path,
                         feeds: Sequence[np.ndarray],
                         cflags: Sequence[str] = ()) -> list[np.ndarray]:
    """Compile strictly (static and caller arena), run under the sanitizers, return outputs.
    ``cflags``: added to both builds (e.g. -mavx2 -mfma)."""
    m.write(tmp)
    c = f"{m.name}.c"
    _cc([*STRICT, *cflags, "-O2", "-c", c, "-o", "strict.o"], tmp)
    (tmp / "driver.c").write_text(_driver(m))
    _cc([*STRICT, *cflags, "-O1", *SANITIZE, f"-D{m.name.upper()}_NO_STATIC_ARENA", "driver.c", c,
         "-lm", "-o", "driver"], tmp)
    data = b"".join(np.ascontiguousarray(f, np.float32).tobytes() for f in feeds)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run(["./driver"], cwd=tmp, input=data, capture_output=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    assert b"runtime error" not in proc.stderr, proc.stderr.decode()[-4000:]
    raw = np.frombuffer(proc.stdout, np.float32)
    outs, off = [], 0
    for p in m.cmodel.outputs:
        outs.append(raw[off:off + p.size].reshape(p.shape))
        off += p.size
    assert off == raw.size
    return outs


def typed_driver(m: edgec.CompiledModel) -> str:
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
              f"    float *arena = (float *)malloc({macro}_ARENA_BYTES > 0 ? "
              f"{macro}_ARENA_BYTES : 1);",  # a model may need no arena
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
              f"        memset(arena, 0xff, {macro}_ARENA_BYTES > 0 ? {macro}_ARENA_BYTES : 1);",
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


def sanitized_run(m: edgec.CompiledModel, tmp: Path, samples: Sequence[dict[str, np.ndarray]],
                  caller_arena: bool = True) -> list[dict[str, np.ndarray]]:
    """Build ``m`` with :func:`typed_driver` strictly under ASan + UBSan (-O1; the caller's
    arena or the static one) and run it on ``samples`` (feeds by input name, any port type);
    the outputs by name, per sample. Fails on a build error, a sanitizer report or an exit
    status other than 0."""
    cm = m.cmodel
    tmp.mkdir(parents=True, exist_ok=True)
    m.write(tmp)
    (tmp / "driver.c").write_text(typed_driver(m))
    defines = [f"-D{m.name.upper()}_NO_STATIC_ARENA"] if caller_arena else []
    _cc([*STRICT, "-O1", *SANITIZE, *defines, "driver.c", f"{cm.name}.c", "-lm", "-o",
         "driver"], tmp)
    with open(tmp / "in.bin", "wb") as fh:
        for feeds in samples:
            for p in cm.inputs:
                fh.write(np.ascontiguousarray(feeds[p.name], p.np_dtype).tobytes())
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run(["./driver", "in.bin", "out.bin", str(len(samples))], cwd=tmp,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"driver exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    assert "runtime error" not in proc.stderr, proc.stderr[-4000:]
    raw = (tmp / "out.bin").read_bytes()
    outs, off = [], 0
    for _ in samples:
        got = {}
        for p in cm.outputs:
            n = p.size * np.dtype(p.np_dtype).itemsize
            got[p.name] = np.frombuffer(raw[off : off + n], p.np_dtype).reshape(p.shape)
            off += n
        outs.append(got)
    assert off == len(raw)
    return outs
