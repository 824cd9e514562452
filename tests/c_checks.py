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
