"""Smoke test of the host benchmark (bench/): one small model, few repeats, no speed asserts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from bench import host
from bench.models import BENCH_MODELS, build_all, torch_param_count
from edgec.ops import REGISTRY

#: mlp_tanh is 4 → 64 → 64 → 3: one multiply-accumulate per weight
MLP_TANH_MACS = 4 * 64 + 64 * 64 + 64 * 3


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-models")


@pytest.fixture(scope="module")
def mlp_tanh_row(cache_dir: Path) -> host.BenchRow:
    rows, skipped = host.run_bench(["mlp_tanh"], repeat=3, cache_dir=cache_dir,
                                   batch_seconds=0.001)
    assert skipped == []
    assert [r.model for r in rows] == ["mlp_tanh"]
    return rows[0]


def test_mlp_tanh_values_are_sane(mlp_tanh_row: host.BenchRow) -> None:
    r = mlp_tanh_row
    assert r.params == torch_param_count(BENCH_MODELS["mlp_tanh"])
    assert r.weight_bytes == 4 * r.params
    assert r.arena_bytes >= r.arena_lower_bound_bytes > 0
    assert r.macs == MLP_TANH_MACS
    for t in (r.compile_s, r.ctypes_s, r.c_loop_s, r.ort_s):
        assert 0 < t < 60
    assert 0 <= r.max_abs_err < 1e-4


def test_text_table_has_the_columns(mlp_tanh_row: host.BenchRow) -> None:
    lines = host.format_results([mlp_tanh_row], []).splitlines()
    header = lines[0].split("  ")
    assert [h.strip() for h in header if h.strip()] == list(host.HEADERS)
    assert set(lines[1]) <= {"-", " "}
    row = lines[2]
    assert row.startswith("mlp_tanh ")
    assert f"{MLP_TANH_MACS:,}" in row.split()
    assert any(ln.startswith("machine: ") for ln in lines)


def test_markdown_table_has_the_columns(mlp_tanh_row: host.BenchRow) -> None:
    lines = host.format_results([mlp_tanh_row], [host.Skipped("gru", "no GRU")], markdown=True)
    md = lines.splitlines()
    assert md[0] == "| " + " | ".join(host.HEADERS) + " |"
    assert md[1].count("|") == len(host.HEADERS) + 1
    cells = [c.strip() for c in md[2].strip("|").split("|")]
    assert len(cells) == len(host.HEADERS)
    assert cells[0] == "mlp_tanh"
    assert cells[1] == f"{mlp_tanh_row.params:,}"
    assert all(float(c.replace(",", "")) > 0 for c in cells[1:-1])
    assert "- skipped gru: no GRU" in md


def test_missing_op_skips_the_model(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(REGISTRY, "Tanh")
    rows, skipped = host.run_bench(["mlp_tanh"], repeat=1, cache_dir=cache_dir,
                                   batch_seconds=0.001)
    assert rows == []
    assert [s.model for s in skipped] == ["mlp_tanh"]
    assert "Tanh" in skipped[0].reason


def test_missing_ops_ignores_constant_nodes() -> None:
    nodes = [
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", 1, [1], [1.0])),
        helper.make_node("Add", ["x", "c"], ["a"]),
        helper.make_node("NoSuchOp", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    assert host.missing_ops(helper.make_model(graph)) == ["NoSuchOp"]


def test_models_build_deterministically(cache_dir: Path, tmp_path: Path) -> None:
    first = build_all(["mlp_tanh"], cache_dir)["mlp_tanh"]
    again = build_all(["mlp_tanh"], tmp_path)["mlp_tanh"]
    assert first.name == again.name
    assert first.read_bytes() == again.read_bytes()


def test_fixed_inputs_are_fixed() -> None:
    spec = BENCH_MODELS["lstm"]
    a, b = spec.feeds(), spec.feeds()
    assert list(a) == ["x", "h0", "c0"]
    for k in a:
        assert a[k].shape == spec.inputs[k] and a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])


def test_cli_rejects_unknown_models(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        host.main(["--models", "mlp_tanh,nope"])
    assert exc.value.code == 2
    assert "unknown model(s) nope" in capsys.readouterr().err


def test_markdown_table_alignment_and_cells() -> None:
    """edgec.tables.markdown_table (every bench's --markdown): the header, one alignment mark
    per column ('r' right-aligned), the cells as given."""
    from edgec.tables import markdown_table

    md = markdown_table(["model", "instr", "goal"], [["a", "1,234", "met"]], "lrl").splitlines()
    assert md == ["| model | instr | goal |", "|---|---:|---|", "| a | 1,234 | met |"]
    assert markdown_table(["x", "y"], [])[len("| x | y |\n"):] == "|---|---|"
