"""The generated C of an int8 model (every int8 op, int8 and float ports) compiles warning-free
under strict flags on the host and for Cortex-M (with and without the DSP extension), and runs
clean under AddressSanitizer + UndefinedBehaviorSanitizer with outputs equal to the numpy
reference, with the static arena and with a caller-supplied one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.api import CompiledModel, compile_graph
from edgec.ops.interpret import interpret
from tests.c_checks import sanitized_run
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


@pytest.mark.parametrize("arena", ["static", "caller"])
def test_sanitizers(model: tuple[CompiledModel, Path], tmp_path: Path, arena: str) -> None:
    m, _ = model
    rng = np.random.default_rng(21)
    samples = [random_feeds(m.graph, rng) for _ in range(8)]
    for feeds, got in zip(samples, sanitized_run(m, tmp_path, samples, arena == "caller"),
                          strict=True):
        want = interpret(m.graph, feeds)
        for name, val in got.items():
            assert np.array_equal(val, want[name]), name
