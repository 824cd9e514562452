"""edgec's output is a pure function of its input: the same model gives byte-identical C in one
process and across processes (with different hash seeds); model names keep symbols apart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgec
from tests import models

ROOT = Path(__file__).resolve().parent.parent
STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")

CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (models.TanhMLP, (1, 4)),
    "activations": (models.ActivationMix, (3, 6)),
    "dscnn2d": (models.DSCNN2d, (1, 3, 17, 17)),
    "attention": (models.AttentionPool, (1, 7, 8)),
    "gru": (models.GRUNet, (1, 9, 3)),
}


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("determinism")
    out = {}
    for key, (factory, shape) in CASES.items():
        example = [torch.from_numpy(x) for x in models.random_inputs([shape])]
        out[key] = models.export(models.build(factory), example, root / f"{key}.onnx", "legacy",
                                 optimize=key != "dscnn2d")
    return out


def _written(m: edgec.CompiledModel, directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in m.write(directory)}


@pytest.mark.parametrize("key", list(CASES))
def test_same_model_twice_in_process(onnx_files: dict[str, Path], tmp_path: Path,
                                     key: str) -> None:
    first = _written(edgec.compile(onnx_files[key]), tmp_path / "a")
    second = _written(edgec.compile(onnx_files[key]), tmp_path / "b")
    assert sorted(first) == [f"{key}.c", f"{key}.h"]
    assert first == second


_CHILD = """
import sys
from pathlib import Path
import edgec
out = Path(sys.argv[1])
for path in sys.argv[2:]:
    edgec.compile(path).write(out)
"""


@pytest.mark.slow
def test_separate_processes_with_different_hash_seeds(onnx_files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    paths = [str(p) for p in onnx_files.values()]
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), *paths], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert len(outputs[0]) == 2 * len(paths)
    assert outputs[0] == outputs[1]
    in_process: dict[str, bytes] = {}
    for path in paths:
        in_process.update(_written(edgec.compile(path), tmp_path / "here"))
    assert in_process == outputs[0]


def _global_symbols(obj: Path) -> set[str]:
    proc = subprocess.run(["nm", "-g", "--defined-only", str(obj)], capture_output=True,
                          text=True, check=True)
    return {line.split()[-1] for line in proc.stdout.splitlines() if line.strip()}


def test_names_give_distinct_symbols(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    """Two copies of one model under different names link into one program and agree."""
    names = ("alpha_net", "beta_net")
    compiled = [edgec.compile(onnx_files["mlp"], name=n) for n in names]
    symbols = []
    for m in compiled:
        m.write(tmp_path)
        obj = tmp_path / f"{m.name}.o"
        subprocess.run(["gcc", *STRICT, "-O2", "-c", f"{m.name}.c", "-o", obj.name],
                       cwd=tmp_path, check=True)
        syms = _global_symbols(obj)
        assert syms, "no global symbols"
        assert all(s.startswith(f"{m.name}_") for s in syms), f"unprefixed symbols: {syms}"
        symbols.append(syms)
    assert symbols[0].isdisjoint(symbols[1])
    assert compiled[0].c_source != compiled[1].c_source

    x = models.random_inputs([(1, 4)], seed=3)[0]
    x.tofile(tmp_path / "x.bin")
    (tmp_path / "main.c").write_text(
        "#include <stdio.h>\n"
        '#include "alpha_net.h"\n#include "beta_net.h"\n'
        "int main(void)\n{\n"
        "    float x[4], ya[3], yb[3];\n"
        '    FILE *f = fopen("x.bin", "rb");\n'
        "    if (!f || fread(x, sizeof(float), 4, f) != 4) return 2;\n"
        "    fclose(f);\n"
        "    alpha_net_run(x, ya);\n    beta_net_run(x, yb);\n"
        '    printf("%.9g %.9g %.9g\\n%.9g %.9g %.9g\\n", ya[0], ya[1], ya[2], '
        "yb[0], yb[1], yb[2]);\n"
        "    return 0;\n}\n"
    )
    subprocess.run(["gcc", *STRICT, "main.c", "alpha_net.o", "beta_net.o", "-lm", "-o", "both"],
                   cwd=tmp_path, check=True)
    proc = subprocess.run(["./both"], cwd=tmp_path, capture_output=True, text=True, check=True)
    rows = [np.array(line.split(), np.float32) for line in proc.stdout.splitlines()]
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_allclose(rows[0], compiled[0].run(x).reshape(-1), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_example_export_is_deterministic(tmp_path: Path) -> None:
    """examples/soft_actuator_mlp/make_model.py writes the same bytes every time."""
    script = ROOT / "examples" / "soft_actuator_mlp" / "make_model.py"
    written = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, str(script), "--out", str(out)], check=True,
                       capture_output=True, timeout=300)
        written.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert sorted(written[0]) == ["inputs.npz", "model.onnx"]
    assert written[0] == written[1]
