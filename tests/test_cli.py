"""The edgec command line: compile/verify/inspect, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgec.cli import main
from tests.helpers import make_model


def _mlp(path: Path, batch: int | str = 1) -> Path:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "w2", "b2"], ["y"], transB=1),
    ]
    inits = {
        "w1": rng.standard_normal((16, 4)).astype(np.float32),
        "b1": rng.standard_normal(16).astype(np.float32),
        "w2": rng.standard_normal((3, 16)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }
    model = make_model(nodes, {"x": (1, 4)}, {"y": (1, 3)}, inits)
    if batch != 1:
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = str(batch)
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = str(batch)
    onnx.save(model, path)
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgec.cli", *args], capture_output=True, text=True, timeout=300
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgec: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_compile_writes_sources_and_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    assert main(["compile", str(model), "-o", str(tmp_path / "out"), "--name", "net"]) == 0
    assert (tmp_path / "out" / "net.h").is_file() and (tmp_path / "out" / "net.c").is_file()
    out = capsys.readouterr().out
    assert "weights (flash)" in out and "activation arena" in out and "MACs" in out
    assert (
        "int net_run(const float *EDGEC_RESTRICT in_x, float *EDGEC_RESTRICT out_y);"
        in (tmp_path / "out" / "net.h").read_text()
    )


def test_compile_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    model = _mlp(tmp_path / "mlp.onnx")
    assert main(["compile", str(model), "-o", str(tmp_path / "o"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["params"] == 16 * 4 + 16 + 3 * 16 + 3
    assert rep["weight_bytes"] == 4 * rep["params"]
    assert rep["macs"] == 16 * 4 + 3 * 16


def test_verify_pass_and_inputs_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    assert main(["verify", str(model), "--n", "5"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "5/5" in out
    np.savez(
        tmp_path / "x.npz", x=np.random.default_rng(1).standard_normal((7, 1, 4)).astype(np.float32)
    )
    assert main(["verify", str(model), "--inputs", str(tmp_path / "x.npz")]) == 0
    assert "7/7" in capsys.readouterr().out


def test_verify_fails_on_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from edgec.api import CompiledModel

    model = _mlp(tmp_path / "mlp.onnx")
    real_run = CompiledModel.run
    monkeypatch.setattr(CompiledModel, "run", lambda self, *a, **k: real_run(self, *a, **k) + 1e-3)
    assert main(["verify", str(model), "--n", "3"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_inspect_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "Gemm+Tanh" in out and "arena offset" in out and "output" in out


def test_help_and_version() -> None:
    proc = _run_cli("--help")
    assert proc.returncode == 0 and "compile" in proc.stdout and "verify" in proc.stdout
    proc = _run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("edgec ")


# -- bad input: one line on stderr, exit status 2, no traceback ------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _assert_one_line_error(
        _run_cli("compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path)),
        "nope.onnx",
        "no such file",
    )


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf\xff\xfe" * 10)
    _assert_one_line_error(
        _run_cli("compile", str(bad), "-o", str(tmp_path)), "garbage.onnx", "not a valid ONNX file"
    )


def test_truncated_file(tmp_path: Path) -> None:
    good = _mlp(tmp_path / "mlp.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _assert_one_line_error(_run_cli("verify", str(cut)), "cut.onnx")


def test_unsupported_op(tmp_path: Path) -> None:
    node = helper.make_node("Det", ["x"], ["y"], name="the_det")
    model = make_model([node], {"x": (3, 3)}, {"y": ()}, opset=17)
    onnx.save(model, tmp_path / "det.onnx")
    proc = _run_cli("compile", str(tmp_path / "det.onnx"), "-o", str(tmp_path))
    _assert_one_line_error(
        proc, "det.onnx", "the_det", "Det", "opset 17", "edgec ops", "docs/ops.md"
    )
    # short: no dump of every op (and none of edgec's internal ones)
    assert len(proc.stderr) < 300 and "ActGrad" not in proc.stderr and "Gemm" not in proc.stderr


def test_internal_op_in_an_onnx_file_is_unsupported(tmp_path: Path) -> None:
    node = helper.make_node("ActGrad", ["x"], ["y"], name="ag", kind="tanh")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "ag.onnx")
    _assert_one_line_error(
        _run_cli("compile", str(tmp_path / "ag.onnx"), "-o", str(tmp_path)), "ag", "ActGrad",
        "edgec ops",
    )


def test_custom_domain_op(tmp_path: Path) -> None:
    node = helper.make_node("FusedGemm", ["x"], ["y"], name="fg", domain="com.microsoft")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, tmp_path / "ms.onnx")
    _assert_one_line_error(_run_cli("inspect", str(tmp_path / "ms.onnx")), "fg", "FusedGemm")


def test_dynamic_shape_needs_input_shape(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "dyn.onnx", batch="batch")
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path / "o")),
        "dyn.onnx",
        "'x'",
        "dynamic",
        "--input-shape x:1x4",
    )
    proc = _run_cli("compile", str(model), "-o", str(tmp_path / "o"), "--input-shape", "x:2x4")
    assert proc.returncode == 0, proc.stderr
    assert "[2, 4]" in (tmp_path / "o" / "dyn.h").read_text()


def test_bad_input_shape_option(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "dyn.onnx", batch="batch")
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path), "--input-shape", "x:2x5"),
        "does not match",
    )
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path), "--input-shape", "y:2x4"),
        "unknown input",
    )
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path), "--input-shape", "x:2xq"), "integers"
    )


def test_non_float_input(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [4])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "int.onnx"
    )
    _assert_one_line_error(
        _run_cli("compile", str(tmp_path / "int.onnx"), "-o", str(tmp_path)),
        "int.onnx",
        "'x'",
        "INT64",
        "float32",
    )


def test_bad_state_option(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path), "--state", "x:nope"), "state pair"
    )


def test_zero_size_input(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make_model([node], {"x": (0, 3)}, {"y": (0, 3)})
    onnx.save(model, tmp_path / "empty.onnx")
    _assert_one_line_error(_run_cli("compile", str(tmp_path / "empty.onnx"), "-o", str(tmp_path)),
                           "'x'", "zero-size")


def test_internal_error_is_one_short_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    """An edgec bug whose message holds a whole object's repr (a graph: thousands of
    characters) still prints one short line and exits 3; EDGEC_DEBUG=1 raises it."""
    import edgec.cli.model as model_cli

    def boom(args: object) -> int:
        raise TypeError("x" * 5000 + "\nsecond line")

    monkeypatch.setattr(model_cli, "cmd_compile", boom)
    monkeypatch.delenv("EDGEC_DEBUG", raising=False)
    assert main(["compile", "whatever.onnx", "-o", "out"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 450 and "second line" not in err
    assert err.startswith("edgec: internal error: TypeError: xxx") and "EDGEC_DEBUG=1" in err
    monkeypatch.setenv("EDGEC_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["compile", "whatever.onnx", "-o", "out"])
