"""The command line and the Python API as a new user meets them (issue 15): argument checks,
one rule for input files, verify for torch sources, one-line errors, help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgec
from edgec.cli import build_parser, main
from edgec.errors import EdgecError
from tests.test_cli import _assert_one_line_error, _mlp, _run_cli

NET_PY = """
import torch

def make():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return m, (torch.randn(1, 4),)

def broken():
    raise RuntimeError("my own bug")
"""


@pytest.fixture
def net_py(tmp_path: Path) -> Path:
    p = tmp_path / "net.py"
    p.write_text(NET_PY)
    return p


# -- 1. --input-shape ------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["x:-1x4", "x:1x4x", "x:0x4", "x:", "x:1x-4", "x:1xx4"])
def test_malformed_input_shape_is_refused(tmp_path: Path, spec: str) -> None:
    model = _mlp(tmp_path / "dyn.onnx", batch="batch")
    proc = _run_cli("compile", str(model), "-o", str(tmp_path / "o"), "--input-shape", spec)
    _assert_one_line_error(proc, "--input-shape", spec)
    assert not (tmp_path / "o" / "dyn.h").exists()


def test_api_input_shapes_must_be_positive(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "dyn.onnx", batch="batch")
    with pytest.raises(EdgecError, match="positive integer"):
        edgec.compile(str(model), input_shapes={"x": (-1, 4)})


# -- 2. one rule for --inputs ----------------------------------------------------------------
def test_input_sets_rule() -> None:
    from edgec.backend.c_emit import Port
    from edgec.cli.common import input_sets

    ports = [Port("x", "in_x", (1, 4))]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgec-sets-{os.getpid()}.npy"
    try:
        for arr, n in [((1, 4), 1), ((20, 4), 20), ((20, 1, 4), 20)]:
            np.save(tmp, np.zeros(arr, np.float32))
            sets = input_sets(str(tmp), ports)
            assert len(sets) == n and all(s["x"].shape == (1, 4) for s in sets)
        np.save(tmp, np.zeros((20, 5), np.float32))
        with pytest.raises(EdgecError, match="leading axis N"):
            input_sets(str(tmp), ports)
    finally:
        tmp.unlink(missing_ok=True)


# -- 3. verify for torch sources -------------------------------------------------------------
def test_verify_python_factory_against_torch(net_py: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", f"{net_py}:make", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "vs torch" in out and "4/4" in out and "PASS" in out


def test_verify_pt2_against_torch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    torch.export.save(torch.export.export(m, (torch.randn(2, 3),)), tmp_path / "m.pt2")
    assert main(["verify", str(tmp_path / "m.pt2"), "--n", "3", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["reference"] == "torch" and rep["pass"] and rep["outputs"][0]["total"] == 3


def test_verify_torch_detects_a_mismatch(
    net_py: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from edgec.api import CompiledModel

    real_run = CompiledModel.run
    monkeypatch.setattr(CompiledModel, "run", lambda self, *a, **k: real_run(self, *a, **k) + 1e-3)
    assert main(["verify", f"{net_py}:make", "--n", "2"]) == 1
    assert "FAIL" in capsys.readouterr().out


# -- 5. one line, exit 2 ---------------------------------------------------------------------
def test_user_factory_that_raises_is_a_user_error(net_py: Path, tmp_path: Path) -> None:
    _assert_one_line_error(
        _run_cli("compile", f"{net_py}:broken", "-o", str(tmp_path / "o")),
        "broken()", "RuntimeError", "my own bug",
    )


def test_truncated_pt2_is_one_line(tmp_path: Path) -> None:
    import torch

    m = torch.nn.Linear(3, 2)
    good = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(1, 3),)), good)
    data = good.read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    _assert_one_line_error(_run_cli("compile", str(tmp_path / "cut.pt2"), "-o", str(tmp_path)),
                           "cut.pt2", "not a torch.export program")
    bad = bytearray(data)
    bad[200:1200] = b"x" * 1000  # the zip directory survives, a member does not
    (tmp_path / "bad.pt2").write_bytes(bytes(bad))
    _assert_one_line_error(_run_cli("compile", str(tmp_path / "bad.pt2"), "-o", str(tmp_path)),
                           "bad.pt2")


def test_inspect_into_a_closed_pipe(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    proc = subprocess.run(
        f"'{sys.executable}' -m edgec.cli inspect '{model}' | head -c 20",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert "Error" not in proc.stderr and "internal" not in proc.stderr, proc.stderr
    assert len(proc.stdout) == 20


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: use the file-as-parent case")
def test_unwritable_output_dir_permissions(tmp_path: Path) -> None:  # pragma: no cover - non-root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    model = _mlp(tmp_path / "mlp.onnx")
    _assert_one_line_error(_run_cli("compile", str(model), "-o", str(ro / "x")), "-o")


def test_unwritable_output_dir(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    (tmp_path / "file").write_text("not a directory")
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path / "file" / "out")), "-o",
        "cannot create the output directory",
    )
    with pytest.raises(EdgecError, match="cannot write"):
        edgec.compile(str(model)).write(tmp_path / "file" / "out")


# -- 6, 7. --n 0; unknown options ------------------------------------------------------------
@pytest.mark.parametrize("n", ["0", "-3"])
def test_verify_refuses_no_input_sets(tmp_path: Path, n: str) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    _assert_one_line_error(_run_cli("verify", str(model), "--n", n), "--n")


def test_inputs_file_that_is_not_numpy(tmp_path: Path) -> None:
    bad = tmp_path / "x.txt"
    bad.write_text("1 2 3 4\n")
    proc = _run_cli("verify", str(_mlp(tmp_path / "mlp.onnx")), "--inputs", str(bad))
    _assert_one_line_error(proc, "x.txt", "not a .npy or .npz file")
    assert "allow_pickle" not in proc.stderr


def test_a_directory_is_not_a_model(tmp_path: Path) -> None:
    d = tmp_path / "models"
    d.mkdir()
    proc = _run_cli("compile", str(d), "-o", str(tmp_path / "o"))
    _assert_one_line_error(proc, "a directory, not a model", "saved_model.pb")
    assert "no such file" not in proc.stderr


def test_unknown_option_lists_the_known_ones(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    _assert_one_line_error(
        _run_cli("compile", str(model), "-o", str(tmp_path), "--option", "sprase=csr"),
        "'sprase'", "did you mean sparse", "known options:", "phm", "lsm", "spikes",
    )
    with pytest.raises(EdgecError, match="unknown option 'nope'"):
        edgec.compile(str(model), options={"nope": 1})
    edgec.compile(str(model), options={"sparse": "dense"})  # a known one is fine


def test_every_read_option_is_declared() -> None:
    """Each ``options.get("key")`` in edgec is a declared option (so no valid key is refused)."""
    import re

    from edgec.api import known_options

    root = Path(edgec.__file__).parent
    read = set()
    for p in root.rglob("*.py"):
        read |= set(re.findall(r"\.options\.get\(\s*\"(\w+)\"", p.read_text()))
        read |= set(re.findall(r"\.options\[\s*'(\w+)'\s*\]", p.read_text()))
    assert read and read <= set(known_options()), read - set(known_options())


# -- 8. edgec ops ----------------------------------------------------------------------------
def test_ops_lists_each_frontend(capsys: pytest.CaptureFixture) -> None:
    assert main(["ops", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    onnx_ops = {e["name"]: e for e in data["onnx"]}
    assert "Gemm" in onnx_ops and "transB" in onnx_ops["Gemm"]["attributes"]
    assert 13 in onnx_ops["Gemm"]["versions"]
    assert "ActGrad" not in onnx_ops and "EventDense" not in onnx_ops  # internal ops
    torch_names = {e["name"] for e in data["torch"]}
    assert "torch.nn.modules.linear.Linear" in torch_names and "relu" in torch_names
    assert not any(n.startswith("_") for n in torch_names)
    assert main(["ops", "conv", "--frontend", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "ConvTranspose" in out and "Gemm" not in out


def test_unsupported_torch_module_points_to_ops(tmp_path: Path) -> None:
    p = tmp_path / "odd.py"
    p.write_text(
        "import torch\n"
        "class Odd(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.linalg.det(x)\n"
        "def make():\n"
        "    return Odd(), (torch.randn(3, 3),)\n"
    )
    proc = _run_cli("compile", f"{p}:make", "-o", str(tmp_path / "o"))
    _assert_one_line_error(proc, "det", "edgec ops --frontend torch", "docs/ops.md")
    assert len(proc.stderr) < 400


# -- 9. help ---------------------------------------------------------------------------------
def _help(*cmd: str) -> str:
    ap = build_parser()
    node = ap
    for c in cmd:
        sub = next(a for a in node._actions if a.__class__.__name__ == "_SubParsersAction")
        node = sub.choices[c]
    return node.format_help()


def test_help_lists_sources_defaults_and_json() -> None:
    for cmd in ("compile", "verify", "inspect", "build", "run", "profile"):
        text = " ".join(_help(cmd).split())
        assert ".pt2" in text and "FILE.py:FN" in text and ".onnx" in text, cmd
    v = " ".join(_help("verify").split())
    for needle in ("--seed", "seed of the random", "(default: 20)", "--json",
                   "atol + rtol * |reference|", "(default: 0.0001)"):
        assert needle in v, needle
    assert "--json" in _help("inspect")
    flash = " ".join(_help("flash").split())
    assert "pyocd" in flash and "GDB" in flash and "(default: cortex-m4f)" in flash
    for cmd in ("build", "run", "flash", "profile", "verify"):
        text = " ".join(_help(cmd).split())  # each default is stated once
        assert text.count("default: cortex-m4f") + text.count("default cortex-m4f") <= 1, cmd
    mpc = _help("mpc")
    assert "profile" in mpc and "simulate" in mpc and "build" in mpc


def test_python_file_without_function_says_how(net_py: Path, tmp_path: Path) -> None:
    _assert_one_line_error(
        _run_cli("compile", str(net_py), "-o", str(tmp_path / "o")), f"{net_py}:make",
        "returns (torch module, example inputs)",
    )


# -- 13. small things ------------------------------------------------------------------------
def test_run_with_a_batch_gives_the_hint(tmp_path: Path) -> None:
    m = edgec.compile(str(_mlp(tmp_path / "mlp.onnx")))
    with pytest.raises(ValueError, match="loop over the 8 sets"):
        m.run(np.zeros((8, 4), np.float32))


def test_run_by_name_names_the_missing_input(tmp_path: Path) -> None:
    m = edgec.compile(str(_mlp(tmp_path / "mlp.onnx")))
    for call in (lambda: m.run({"y": np.zeros((1, 4), np.float32)}),
                 lambda: m.run(y=np.zeros((1, 4), np.float32))):
        with pytest.raises(ValueError, match="missing input.s. x; given y; the inputs are x"):
            call()


def test_verify_explains_the_tolerances(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(_mlp(tmp_path / "mlp.onnx")), "--n", "2", "--rtol", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "|C - reference| <= atol + rtol * |reference|" in out and "rtol=0.001" in out


def test_durations_read_as_people_write_them() -> None:
    from edgec.tables import format_duration

    assert format_duration(2.5e-6) == "2.5 µs"
    assert format_duration(0.0123) == "12.3 ms"
    assert format_duration(4.0) == "4 s"
    assert format_duration(1834.0) == "30.6 min"


def test_tables_are_plain_text() -> None:
    from edgec.tables import format_table

    text = format_table(["op", "MACs"], [["Gemm", 1234], ["Tanh", 0]])
    lines = text.splitlines()
    assert lines == ["op      MACs", "------------", "Gemm   1,234", "Tanh       0"]
    assert text.isascii() and len({len(ln) for ln in lines}) == 1  # numbers right-aligned


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_progress_and_status_draw_on_a_terminal_only() -> None:
    import io

    from edgec.tables import progress, status

    tty = _Tty()
    assert list(progress([1, 2, 3], "verify", stream=tty)) == [1, 2, 3]  # type: ignore[arg-type]
    assert "verify" in tty.text
    tty = _Tty()
    with status("running on QEMU", stream=tty):  # type: ignore[arg-type]
        pass
    assert "running on QEMU" in tty.text
    plain = io.StringIO()
    assert list(progress([1, 2], "verify", stream=plain)) == [1, 2]
    with status("x", stream=plain):
        pass
    assert plain.getvalue() == ""


@pytest.mark.parametrize("cmd", ["build", "profile", "mpc-build", "simulate"])
def test_every_output_dir_is_checked_first(tmp_path: Path, cmd: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    bad = str(tmp_path / "file" / "out")
    ex = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mpc"
    model = str(_mlp(tmp_path / "mlp.onnx"))
    argv = {
        "build": ["build", model, "-o", bad],
        "profile": ["profile", model, "-o", bad],
        "mpc-build": ["mpc", "build", str(ex / "mlp2.toml"), "-o", bad],
        "simulate": ["simulate", str(ex / "mlp2.toml"), "--plant", "soft-actuator",
                     "--reference", str(ex / "soft_path.csv"), "-o", bad],
    }[cmd]
    _assert_one_line_error(_run_cli(*argv), "-o", "cannot create the output directory")


def test_inspect_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(_mlp(tmp_path / "mlp.onnx")), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert [n["op"] for n in rep["nodes"]] == ["Gemm+Tanh", "Gemm"]
    assert [n["macs"] for n in rep["nodes"]] == [64, 48] and rep["report"]["macs"] == 112


@pytest.mark.parametrize("argv,expect", [
    (["compile"], "edgec compile: error: the following arguments are required: MODEL, -o/--output"),
    (["compile", "m.onnx", "-o", "d", "--target", "gpu"], "invalid choice: 'gpu'"),
    (["frobnicate"], "edgec: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["mpc", "build"], "edgec mpc build: error: the following arguments are required"),
    (["profile", "m.onnx", "--repeat", "two"], "invalid int value: 'two'"),
])
def test_usage_errors_are_one_line(argv: list[str], expect: str,
                                   capsys: pytest.CaptureFixture) -> None:
    """A missing or malformed argument: one line with what is wrong and where help is, exit 2
    (argparse alone prints the whole usage block first)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert expect in err and "--help')" in err, err
