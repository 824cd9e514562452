"""passes/sparse.py: Gemm / MatMul with constant, mostly-zero weights → SparseLinear (CSR).

Every model is checked against onnxruntime (C and IR interpreter, tests/helpers.check_model);
the report's structure counters give the density and the flash saved."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

import edgec
from edgec.cli import main
from edgec.errors import EdgecError
from edgec.ops.circuits import csr_bytes, sparse_summary
from tests import models
from tests.helpers import check_model, make_model, ort_run

STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
CORTEX_M4F = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
ARM_GCC = shutil.which("arm-none-eabi-gcc")


def _masked(shape: tuple[int, int], density: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = rng.random(shape) < density
    return (rng.standard_normal(shape) * keep).astype(np.float32)


def _ops(m: edgec.CompiledModel) -> list[str]:
    return [n.op for n in m.graph.nodes]


def _gemm_model(
    m: int, k: int, n: int, density: float, trans_b: int = 1, alpha: float = 1.0,
    beta: float = 1.0, bias: tuple[int, ...] | None = (-1,), relu: bool = False, seed: int = 0,
) -> tuple[onnx.ModelProto, np.ndarray]:
    """x [m, k] → Gemm (masked B) [→ Relu]; ``bias`` is C's shape (-1 = n), None: no C."""
    w_nk = _masked((n, k), density, seed)
    inits = {"w": w_nk if trans_b else np.ascontiguousarray(w_nk.T)}
    ins = ["x", "w"]
    if bias is not None:
        c_shape = tuple(n if d == -1 else d for d in bias)
        inits["c"] = np.random.default_rng(seed + 1).standard_normal(c_shape).astype(np.float32)
        ins.append("c")
    out = "h" if relu else "y"
    nodes = [helper.make_node("Gemm", ins, [out], transB=trans_b, alpha=alpha, beta=beta)]
    if relu:
        nodes.append(helper.make_node("Relu", ["h"], ["y"]))
    return make_model(nodes, {"x": (m, k)}, {"y": (m, n)}, inits), w_nk


# -- Gemm -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "k", "n"), [(1, 17, 7), (3, 256, 64), (7, 300, 33)])
@pytest.mark.parametrize("relu", [False, True])
def test_masked_gemm_becomes_sparse(m: int, k: int, n: int, relu: bool) -> None:
    """10 % density: SparseLinear, activation fused, weights ≈ 5 B per non-zero, far below dense."""
    model, w = _gemm_model(m, k, n, 0.1, relu=relu)
    cm = check_model(model)
    assert _ops(cm) == ["SparseLinear"]
    if relu:
        assert cm.graph.nodes[0].attrs["_act"][0] == "Relu"
    rep = cm.report()
    nnz = int(np.count_nonzero(w))
    assert rep["structure"]["masked_nnz"] == nnz
    summary = sparse_summary(rep)
    assert summary["density"] == pytest.approx(nnz / (n * k))
    assert summary["flash_saved_bytes"] == 4 * n * k - csr_bytes(w) > 0
    assert rep["weight_bytes"] == csr_bytes(w) + 4 * n  # CSR tables + bias
    assert rep["weight_bytes"] < 0.4 * 4 * n * k
    assert rep["macs"] == m * nnz


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -2.0)])
@pytest.mark.parametrize("bias", [None, (-1,), (1, -1), (1,)], ids=["noC", "C_n", "C_1n", "C_1"])
def test_gemm_attributes(trans_b: int, alpha: float, beta: float, bias: tuple | None) -> None:
    model, _ = _gemm_model(3, 40, 9, 0.15, trans_b, alpha, beta, bias, seed=3)
    cm = check_model(model)
    assert _ops(cm) == ["SparseLinear"]
    assert len(cm.graph.nodes[0].inputs) == (2 if bias is None else 3)


def test_gemm_full_c_matrix_and_trans_a_stay_dense() -> None:
    """A per-element C and transA are not dense layers: the Gemm kernel keeps them."""
    model, _ = _gemm_model(4, 30, 5, 0.1, bias=(4, -1))
    assert _ops(check_model(model)) == ["Gemm"]
    w = _masked((30, 5), 0.1)
    ta = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)],
                    {"x": (30, 4)}, {"y": (4, 5)}, {"w": w})
    assert _ops(check_model(ta)) == ["Gemm"]


# -- MatMul -----------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape", [(17,), (1, 17), (2, 3, 17), (2, 1, 3, 17)])
@pytest.mark.parametrize("relu", [False, True])
def test_masked_matmul_keeps_leading_dims(x_shape: tuple[int, ...], relu: bool) -> None:
    w = _masked((17, 7), 0.1, seed=5)
    out_shape = x_shape[:-1] + (7,)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h" if relu else "y"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["h"], ["y"]))
    cm = check_model(make_model(nodes, {"x": x_shape}, {"y": out_shape}, {"w": w}))
    assert _ops(cm) == ["SparseLinear"]
    assert cm.graph.shape(cm.output_names[0]) == out_shape


def test_matmul_runtime_or_batched_weights_stay() -> None:
    """Only a constant 2-D right-hand side is a weight matrix."""
    w3 = np.stack([_masked((6, 4), 0.1, s) for s in range(2)])
    batched = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                         {"x": (2, 3, 6)}, {"y": (2, 3, 4)}, {"w": w3})
    assert _ops(check_model(batched)) == ["MatMul"]
    runtime = make_model([helper.make_node("MatMul", ["x", "b"], ["y"])],
                         {"x": (3, 6), "b": (6, 4)}, {"y": (3, 4)})
    assert _ops(check_model(runtime)) == ["MatMul"]


# -- the size rule and the option ------------------------------------------------------------


def test_dense_matrix_left_alone() -> None:
    model, _ = _gemm_model(2, 64, 16, 1.0)
    cm = check_model(model)
    assert _ops(cm) == ["Gemm"]
    assert "structure" not in cm.report()
    assert _ops(check_model(model, options={"sparse": "csr"})) == ["Gemm"]  # no zero to skip


def test_auto_follows_size_rule_and_csr_forces() -> None:
    """Density 0.6 (byte indices): CSR would be ~75 % of dense, above auto's 2/3 → dense;
    ``csr`` stores it sparsely anyway, ``dense`` keeps even 10 % density dense."""
    half, _ = _gemm_model(3, 40, 12, 0.6, seed=7)
    assert _ops(check_model(half)) == ["Gemm"]
    forced = check_model(half, options={"sparse": "csr"})
    assert _ops(forced) == ["SparseLinear"]
    sparse, w = _gemm_model(3, 40, 12, 0.1, seed=7)
    off = check_model(sparse, options={"sparse": "dense"})
    assert _ops(off) == ["Gemm"]
    assert off.report()["weight_bytes"] == 4 * w.size + 4 * 12
    assert sparse_summary(off.report())["flash_saved_bytes"] == 0


def test_bad_option_is_one_line_error() -> None:
    model, _ = _gemm_model(1, 8, 4, 0.1)
    with pytest.raises(EdgecError, match="sparse='sometimes'.*auto, csr, dense"):
        edgec.compile(model, options={"sparse": "sometimes"})


def test_cli_option_reaches_the_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, w = _gemm_model(2, 64, 32, 0.1, seed=11)
    path = tmp_path / "masked.onnx"
    onnx.save(model, path)
    reports = {}
    for mode in ("auto", "dense"):
        args = ["compile", str(path), "-o", str(tmp_path / mode), "--json", "--option",
                f"sparse={mode}"]
        assert main(args) == 0
        reports[mode] = json.loads(capsys.readouterr().out)
    assert reports["auto"]["structure"]["masked_nnz"] == np.count_nonzero(w)
    assert "structure" not in reports["dense"]
    assert reports["auto"]["weight_bytes"] < reports["dense"]["weight_bytes"] / 3


# -- a torch model exported with a fixed mask -------------------------------------------------


class MaskedMLP(nn.Module):
    """Linear(32 → 64) with its weight times a fixed 0/1 mask, tanh, Linear(64 → 5)."""

    def __init__(self, density: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 5)
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("mask", (torch.rand(64, 32, generator=gen) < density).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(nn.functional.linear(x, self.fc1.weight * self.mask, self.fc1.bias))
        return self.fc2(h)


@pytest.fixture(scope="module")
def masked_export(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """Legacy exports with the mask folded by the exporter (True) and left as a Mul (False)."""
    root = tmp_path_factory.mktemp("masked")
    model = models.build(MaskedMLP)
    x = torch.randn(3, 32)
    return {opt: models.export(model, [x], root / f"masked_{opt}.onnx", "legacy", optimize=opt)
            for opt in (True, False)}


@pytest.mark.parametrize("folded_by_exporter", [True, False])
def test_torch_masked_linear_via_onnx(masked_export: dict[bool, Path],
                                      folded_by_exporter: bool) -> None:
    proto = onnx.load(str(masked_export[folded_by_exporter]))
    feeds = {"x": np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)}
    cm = check_model(proto, feeds, rtol=models.ORT_RTOL, atol=models.ORT_ATOL)
    ops = _ops(cm)
    assert ops.count("SparseLinear") == 1 and ops[-1] in ("Gemm", "MatMul")  # fc2 stays dense
    summary = sparse_summary(cm.report())
    assert 0.05 < summary["density"] < 0.15
    assert summary["flash_saved_bytes"] > 0.7 * 4 * 64 * 32


def test_masked_model_compiles_strict_host_and_cortex_m4f(
    masked_export: dict[bool, Path], tmp_path: Path
) -> None:
    cm = edgec.compile(masked_export[True], name="masked")
    assert "SparseLinear" in _ops(cm)
    cm.write(tmp_path)
    c_file = str(tmp_path / "masked.c")
    compilers = [("gcc", ())] + ([(ARM_GCC, CORTEX_M4F)] if ARM_GCC else [])
    for cc, target in compilers:
        obj = tmp_path / f"masked-{Path(cc).name}.o"
        proc = subprocess.run([cc, *target, *STRICT, "-O2", "-c", c_file, "-o", str(obj)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    if ARM_GCC is None:
        pytest.skip("arm-none-eabi-gcc not on PATH: host build only")


def test_shared_weight_and_output_names_survive() -> None:
    """One masked matrix used by two MatMuls (one of them a graph output feeding a second op)."""
    w = _masked((12, 12), 0.1, seed=4)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("MatMul", ["a", "w"], ["y"]),
    ]
    model = make_model(nodes, {"x": (2, 12)}, {"a": (2, 12), "y": (2, 12)}, {"w": w})
    cm = check_model(model)
    assert _ops(cm) == ["SparseLinear", "SparseLinear"]
    feeds = {"x": np.ones((2, 12), np.float32)}
    np.testing.assert_allclose(cm.run(feeds)[1], ort_run(model, feeds)[1], rtol=1e-4, atol=1e-5)


def test_cli_summary_reports_density(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`edgec compile` prints the sparse density and the flash saved next to the totals."""
    from onnx import helper as h

    from edgec.cli import main
    from tests.helpers import make_model

    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 32)).astype(np.float32) * (rng.random((64, 32)) < 0.1)
    model = make_model([h.make_node("MatMul", ["x", "w"], ["y"])], {"x": (1, 64)}, ["y"],
                       {"w": w.astype(np.float32)})
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "sparse weights" in out and "saved vs dense" in out
