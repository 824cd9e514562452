"""Firmware on emulated Cortex-M boards: targets, build, run on QEMU against onnxruntime, size
checks, the written Makefile/CMake project, GDB loading (flash --probe qemu) and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.cli import main
from edgec.errors import EdgecError, ModelTooBigError, ToolchainError
from edgec.mcu.elf import memory_use
from edgec.mcu.flash import flash_qemu
from edgec.mcu.project import FirmwareBuild, build_firmware, step_ports
from edgec.mcu.qemu import parse_outputs, run_qemu
from edgec.mcu.targets import DEFAULT_TARGET, list_targets, load_target
from edgec.mcu.toolchain import find_tool, have_tool
from tests.helpers import ATOL, RTOL, make_model, ort_run

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
        reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
    ),
]

QEMU_TARGETS = ("cortex-m4f", "cortex-m0", "cortex-m3", "cortex-m7", "cortex-m33")


# -- models ----------------------------------------------------------------------------------
def tanh_mlp(n_in: int = 4, hidden: int = 64, n_out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """The soft-actuator shape: 4 → 64 → 64 → 3 with tanh."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1),
        helper.make_node("Tanh", ["h1"], ["t1"]),
        helper.make_node("Gemm", ["t1", "w2", "b2"], ["h2"], transB=1),
        helper.make_node("Tanh", ["h2"], ["t2"]),
        helper.make_node("Gemm", ["t2", "w3", "b3"], ["y"], transB=1),
    ]
    inits = {
        "w1": rng.uniform(-1, 1, (hidden, n_in)).astype(np.float32),
        "b1": rng.uniform(-0.5, 0.5, hidden).astype(np.float32),
        "w2": rng.uniform(-0.3, 0.3, (hidden, hidden)).astype(np.float32),
        "b2": rng.uniform(-0.5, 0.5, hidden).astype(np.float32),
        "w3": rng.uniform(-0.5, 0.5, (n_out, hidden)).astype(np.float32),
        "b3": rng.uniform(-0.5, 0.5, n_out).astype(np.float32),
    }
    return make_model(nodes, {"x": (1, n_in)}, {"y": (1, n_out)}, inits, name="mlp")


def gru_step_model(n_in: int = 3, hidden: int = 8, n_out: int = 2) -> onnx.ModelProto:
    """One GRU time step (state h0 → Y_h carried by _step) and a linear head on its output."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=hidden),
        helper.make_node("Reshape", ["Y", "shape"], ["yflat"]),
        helper.make_node("Gemm", ["yflat", "w", "b"], ["y"], transB=1),
    ]
    inits = {
        "W": rng.uniform(-0.8, 0.8, (1, 3 * hidden, n_in)).astype(np.float32),
        "R": rng.uniform(-0.8, 0.8, (1, 3 * hidden, hidden)).astype(np.float32),
        "B": rng.uniform(-0.5, 0.5, (1, 6 * hidden)).astype(np.float32),
        "shape": np.array([1, hidden], np.int64),
        "w": rng.uniform(-0.8, 0.8, (n_out, hidden)).astype(np.float32),
        "b": rng.uniform(-0.5, 0.5, n_out).astype(np.float32),
    }
    return make_model(
        nodes,
        {"x": (1, 1, n_in), "h0": (1, 1, hidden)},
        {"y": (1, n_out), "Y_h": (1, 1, hidden)},
        inits,
        name="gru",
    )


def lstm_step_model(n_in: int = 3, hidden: int = 7, n_out: int = 2) -> onnx.ModelProto:
    """One LSTM time step (h0 → Y_h and c0 → Y_c carried by _step) and a linear head."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node(
            "LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=hidden
        ),
        helper.make_node("Reshape", ["Y", "shape"], ["yflat"]),
        helper.make_node("Gemm", ["yflat", "w", "b"], ["y"], transB=1),
    ]
    inits = {
        "W": rng.uniform(-0.8, 0.8, (1, 4 * hidden, n_in)).astype(np.float32),
        "R": rng.uniform(-0.8, 0.8, (1, 4 * hidden, hidden)).astype(np.float32),
        "B": rng.uniform(-0.5, 0.5, (1, 8 * hidden)).astype(np.float32),
        "shape": np.array([1, hidden], np.int64),
        "w": rng.uniform(-0.8, 0.8, (n_out, hidden)).astype(np.float32),
        "b": rng.uniform(-0.5, 0.5, n_out).astype(np.float32),
    }
    return make_model(
        nodes,
        {"x": (1, 1, n_in), "h0": (1, 1, hidden), "c0": (1, 1, hidden)},
        {"y": (1, n_out), "Y_h": (1, 1, hidden), "Y_c": (1, 1, hidden)},
        inits,
        name="lstm",
    )


def big_gemm(n_in: int, n_out: int) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)]
    inits = {"w": rng.uniform(-1, 1, (n_out, n_in)).astype(np.float32)}
    return make_model(nodes, {"x": (1, n_in)}, {"y": (1, n_out)}, inits, name="big")


def _torch_model(tmp_path: Path, factory_name: str, shape: Sequence[int]) -> Path:
    pytest.importorskip("torch")
    from tests import models

    net = models.build(getattr(models, factory_name))
    x = models.random_inputs([shape])[0]
    import torch

    return models.export(net, [torch.from_numpy(x)], tmp_path / f"{factory_name}.onnx", "legacy")


# -- helpers ---------------------------------------------------------------------------------
def _vectors(model: onnx.ModelProto, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input
    }
    return [
        {k: rng.uniform(-2, 2, s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)
    ]


def _build(m: edgec.CompiledModel, target: str, out: Path, vectors: list) -> FirmwareBuild:
    b = build_firmware(m, load_target(target), out, vectors)
    assert b.warnings == [], b.warnings
    assert b.elf.is_file() and b.bin.stat().st_size > 0 and b.hex.is_file()
    return b


def check_stateless_on_target(
    model: onnx.ModelProto, target: str, tmp_path: Path, n: int = 3
) -> FirmwareBuild:
    m = edgec.compile(model)
    feeds = _vectors(model, n)
    b = _build(m, target, tmp_path / target, [[f[k] for k in m.input_names] for f in feeds])
    res = run_qemu(b, timeout_s=30)
    assert res.returncode == 0 and "EDGEC-END ok" in res.stdout
    assert len(res.outputs) == n
    for f, got in zip(feeds, res.outputs, strict=True):
        exp = ort_run(model, f)
        assert len(got) == len(exp)
        for g, e in zip(got, exp, strict=True):
            assert np.abs(e).max() > 1e-3, "degenerate test: output ~0"
            np.testing.assert_allclose(g, e.reshape(g.shape), rtol=RTOL, atol=ATOL)
    return b


def check_sequence_on_target(model: onnx.ModelProto, target: str, tmp_path: Path) -> None:
    """Steps through a sequence on the board; onnxruntime carries the state by hand."""
    m = edgec.compile(model)
    assert m.is_stateful
    in_ports, out_ports = step_ports(m)
    steps = _vectors(model, 6, seed=3)
    b = _build(m, target, tmp_path / target, [[s[p.name] for p in in_ports] for s in steps])
    res = run_qemu(b, timeout_s=30)
    state = {a: np.zeros_like(steps[0][a]) for a, _ in m.cmodel.state}
    outs = [o.name for o in model.graph.output]
    for s, got in zip(steps, res.outputs, strict=True):
        exp = dict(zip(outs, ort_run(model, {**s, **state}), strict=True))
        for a, b_ in m.cmodel.state:
            state[a] = exp[b_]
        for p, g in zip(out_ports, got, strict=True):
            np.testing.assert_allclose(g, exp[p.name].reshape(g.shape), rtol=RTOL, atol=ATOL)
    # the state really evolves: the outputs differ from step to step
    assert not np.allclose(res.outputs[0][0], res.outputs[-1][0])


# -- targets and toolchain -------------------------------------------------------------------
def test_targets_are_described() -> None:
    targets = {t.name: t for t in list_targets()}
    for name in (*QEMU_TARGETS, "stm32f446re", "nrf52840", "stm32h743", "rp2040"):
        assert name in targets
    assert load_target(None).name == DEFAULT_TARGET == "cortex-m4f"
    m0, m33 = targets["cortex-m0"], targets["cortex-m33"]
    assert not m0.has_fpu and m0.qemu_machine == "microbit"
    assert (m0.flash_size, m0.ram_size) == (256 * 1024, 16 * 1024)
    assert (m33.flash_origin, m33.ram_origin) == (0x10000000, 0x38000000)
    assert targets["cortex-m4f"].has_fpu and "-mfpu=fpv4-sp-d16" in targets["cortex-m4f"].cpu_flags
    assert targets["rp2040"].qemu_machine is None and targets["rp2040"].core == "cortex-m0plus"
    assert targets["stm32f446re"].clock_hz == 180_000_000
    with pytest.raises(EdgecError, match="unknown target 'm99'.*cortex-m4f"):
        load_target("m99")
    with pytest.raises(EdgecError, match=r"unknown target 'cuda'.*edgec compile --target cuda"):
        load_target("cuda")  # edgec build/run/profile --target cuda point to where CUDA lives


def test_targets_command_lists_all(capsys: pytest.CaptureFixture) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for t in list_targets():
        assert t.name in out
    assert "mps2-an386" in out and "(default)" in out
    assert main(["targets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {t["name"] for t in listed} == {t.name for t in list_targets()}


def test_missing_tool_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainError) as exc:
        find_tool("arm-none-eabi-gcc")
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi" in str(exc.value)
    with pytest.raises(ToolchainError, match="apt-get install gdb-multiarch"):
        find_tool("gdb-multiarch")


# -- models on the boards --------------------------------------------------------------------
@pytest.mark.parametrize("target", QEMU_TARGETS)
def test_mlp_on_target(target: str, tmp_path: Path) -> None:
    b = check_stateless_on_target(tanh_mlp(), target, tmp_path)
    assert b.stack_usage_files, "-fstack-usage wrote no .su files"


@pytest.mark.parametrize("target", QEMU_TARGETS)
def test_gru_sequence_on_target(target: str, tmp_path: Path) -> None:
    check_sequence_on_target(gru_step_model(), target, tmp_path)


def test_lstm_sequence_on_m4f(tmp_path: Path) -> None:
    check_sequence_on_target(lstm_step_model(), "cortex-m4f", tmp_path)


def test_odd_sized_mlp_on_m4f(tmp_path: Path) -> None:
    check_stateless_on_target(tanh_mlp(7, 17, 1, seed=5), "cortex-m4f", tmp_path, n=2)


def test_cnn1d_on_m4f(tmp_path: Path) -> None:
    path = _torch_model(tmp_path, "CNN1d", (1, 3, 37))
    check_stateless_on_target(onnx.load(str(path)), "cortex-m4f", tmp_path, n=2)


def test_cnn2d_batchnorm_depthwise_on_m4f(tmp_path: Path) -> None:
    path = _torch_model(tmp_path, "DSCNN2d", (1, 3, 15, 17))
    check_stateless_on_target(onnx.load(str(path)), "cortex-m4f", tmp_path, n=2)


def test_outputs_are_bit_exact(tmp_path: Path) -> None:
    """Special values pass through the board and back unchanged (hex bit patterns)."""
    special = np.array(
        [[0.0, -0.0, 1e-45, -3.4028235e38, np.inf, -np.inf, 1.0 / 3.0, np.pi]], np.float32
    )
    model = make_model([helper.make_node("Relu", ["x"], ["r"]),
                        helper.make_node("Add", ["x", "r"], ["y"])], {"x": (1, 8)}, {"y": (1, 8)})
    m = edgec.compile(model)
    b = _build(m, "cortex-m4f", tmp_path / "fw", [[special]])
    got = run_qemu(b).outputs[0][0]
    expected = m.run(special)  # the same C on the host (IEEE single precision both)
    assert got.tobytes() == expected.tobytes()


def test_parse_outputs_round_trips_bits() -> None:
    m = edgec.compile(tanh_mlp())
    _, ports = step_ports(m)
    vals = np.array([[np.nan, -0.0, 1.5]], np.float32)
    words = " ".join(f"{w:08x}" for w in vals.view(np.uint32).ravel())
    got = parse_outputs(f"noise\ny 0 0: {words}\nEDGEC-END ok\n", ports, 1)
    assert got[0][0].tobytes() == vals.tobytes()
    with pytest.raises(ToolchainError, match="incomplete"):
        parse_outputs("y 0 0: 00000000\n", ports, 1)


# -- fit ---------------------------------------------------------------------------------------
def test_too_big_for_flash(tmp_path: Path) -> None:
    # 300 KB of weights, cortex-m0 has 256 KB of flash
    m = edgec.compile(big_gemm(300, 256), name="big")
    target = load_target("cortex-m0")
    with pytest.raises(ModelTooBigError) as exc:
        build_firmware(m, target, tmp_path / "fw")
    msg = str(exc.value)
    assert "\n" not in msg
    head = "model big needs "
    assert msg.startswith(head) and " bytes of flash, target cortex-m0 has 262144 (over by " in msg
    needed = int(msg[len(head):].split()[0])
    over = int(msg.rsplit("over by ", 1)[1].rstrip(")"))
    assert needed - 262144 == over and needed > 300 * 256 * 4
    # the same model fits the M4F board, and the numbers agree with the section headers
    b = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw4")
    assert memory_use(b.elf, b.target) == (b.flash_used, b.ram_used)
    assert b.flash_used > 300 * 256 * 4


def test_too_big_for_ram(tmp_path: Path) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (1, 4096)}, {"y": (1, 4096)})
    with pytest.raises(ModelTooBigError, match=r"needs \d+ bytes of RAM.*has 16384 \(over by"):
        build_firmware(edgec.compile(model), load_target("cortex-m0"), tmp_path / "fw")


def test_too_big_cli_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "big.onnx"
    onnx.save(big_gemm(300, 256), path)
    rc = main(["build", str(path), "--target", "cortex-m0", "-o", str(tmp_path / "fw")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "bytes of flash, target cortex-m0 has 262144 (over by" in err[0]


# -- the written project, GDB loading ----------------------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_written_makefile_builds_the_same_firmware(tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp())
    vectors = [[f["x"]] for f in _vectors(tanh_mlp(), 2)]
    b = _build(m, "cortex-m0", tmp_path / "fw", vectors)
    reference = run_qemu(b).outputs
    shutil.rmtree(b.build_dir)
    proc = subprocess.run(["make", "-C", str(b.project_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    assert b.elf.is_file() and b.bin.is_file() and b.hex.is_file()
    again = run_qemu(b).outputs
    for r, a in zip(reference, again, strict=True):
        assert r[0].tobytes() == a[0].tobytes()
    nm = subprocess.run([find_tool("arm-none-eabi-nm"), str(b.elf)], capture_output=True,
                        text=True).stdout
    assert " edgec_mark_start" in nm and " edgec_mark_stop" in nm


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_written_cmake_project_builds(tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp())
    b = _build(m, "cortex-m4f", tmp_path / "fw", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    reference = run_qemu(b).outputs
    cm_build = tmp_path / "cmake-build"
    cfg = subprocess.run(
        ["cmake", "-S", str(b.project_dir), "-B", str(cm_build),
         "-DCMAKE_TOOLCHAIN_FILE=arm-none-eabi.cmake"],
        capture_output=True, text=True, cwd=b.project_dir,
    )
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run(["cmake", "--build", str(cm_build)], capture_output=True, text=True)
    assert bld.returncode == 0, bld.stdout + bld.stderr
    elf = cm_build / f"{m.name}.elf"
    assert elf.is_file() and (cm_build / f"{m.name}.bin").is_file()
    b.elf = elf
    assert run_qemu(b).outputs[0][0].tobytes() == reference[0][0].tobytes()


@pytest.mark.skipif(not have_tool("gdb-multiarch"), reason="needs gdb-multiarch")
@pytest.mark.parametrize("target", ["cortex-m4f", "cortex-m0", "cortex-m33"])
def test_flash_probe_qemu_loads_through_gdb(target: str, tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp())
    b = _build(m, target, tmp_path / "fw", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    direct = run_qemu(b)
    loaded = flash_qemu(b.elf, b.target, timeout_s=30)
    assert loaded.returncode == 0
    assert parse_outputs(loaded.stdout, b.outputs, 1)[0][0].tobytes() == (
        direct.outputs[0][0].tobytes()
    )


@pytest.mark.skipif(not have_tool("gdb-multiarch"), reason="needs gdb-multiarch")
def test_flash_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = edgec.compile(tanh_mlp())
    b = _build(m, "cortex-m4f", tmp_path / "fw", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    assert main(["flash", str(b.elf), "--probe", "qemu"]) == 0
    out = capsys.readouterr().out
    assert "EDGEC-BEGIN model" in out and "y 0 0:" in out and "EDGEC-END ok" in out
    board = _build(m, "stm32f446re", tmp_path / "board", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    if not have_tool("openocd"):
        assert main(["flash", str(board.elf), "--probe", "openocd", "--target",
                     "stm32f446re"]) == 2
        assert "openocd not found: apt-get install openocd" in capsys.readouterr().err
    try:
        import pyocd  # noqa: F401
    except ImportError:
        assert main(["flash", str(board.elf), "--probe", "pyocd", "--target",
                     "stm32f446re"]) == 2
        assert "pyocd not found: pip install pyocd" in capsys.readouterr().err
    assert main(["flash", str(tmp_path / "none.elf"), "--probe", "qemu"]) == 2


def test_flash_refuses_an_elf_for_another_target(tmp_path: Path) -> None:
    """An ELF linked for stm32f446re (flash at 0x08000000) loaded into cortex-m4f's QEMU board
    (flash at 0): a one-line error before QEMU or GDB start, not a hang until the timeout."""
    import time

    m = edgec.compile(tanh_mlp())
    board = _build(m, "stm32f446re", tmp_path / "board", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    t0 = time.monotonic()
    with pytest.raises(EdgecError, match="0x08000000, outside cortex-m4f's flash"):
        flash_qemu(board.elf, load_target("cortex-m4f"), timeout_s=60)
    assert time.monotonic() - t0 < 5
    from edgec.mcu.flash import flash_openocd, flash_pyocd

    m4f = _build(m, "cortex-m4f", tmp_path / "m4f", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    for flash in (flash_openocd, flash_pyocd):
        with pytest.raises(EdgecError, match="built for another target"):
            flash(m4f.elf, load_target("stm32f446re"))


# -- CLI run / verify --target ---------------------------------------------------------------------
def test_cli_build_writes_project(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(tanh_mlp(), path)
    out = tmp_path / "proj"
    assert main(["build", str(path), "--target", "cortex-m33", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for f in ("main.c", "mlp.c", "mlp.h", "startup.c", "cortexm.ld", "Makefile",
              "CMakeLists.txt", "arm-none-eabi.cmake"):
        assert (out / f).is_file(), f
    assert Path(info["elf"]).is_file() and info["flash_used"] < info["flash_size"]
    assert "ORIGIN = 0x10000000" in (out / "cortexm.ld").read_text()


def test_cli_run_prints_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tanh_mlp()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    xs = np.stack([f["x"] for f in _vectors(model, 3)])
    np.save(tmp_path / "x.npy", xs)
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npy"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["target"] == "cortex-m4f" and len(res["outputs"]) == 3
    for x, o in zip(xs, res["outputs"], strict=True):
        np.testing.assert_allclose(np.array(o["y"], np.float32), ort_run(model, {"x": x})[0],
                                   rtol=RTOL, atol=ATOL)
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npy"),
                 "--target", "cortex-m0"]) == 0
    text = capsys.readouterr().out
    assert "cortex-m0 (QEMU microbit): 3 input vector(s)" in text and "[2] y [1, 3]:" in text
    # a board without an emulator runs on its core's emulated twin
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npy"),
                 "--target", "stm32f446re"]) == 0
    assert "stm32f446re (QEMU mps2-an386, its twin cortex-m4f)" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["cortex-m4f", "cortex-m0"])
def test_cli_verify_on_target(target: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(tanh_mlp(), path)
    assert main(["verify", str(path), "--target", target, "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert f"edgec C ({target}, QEMU) vs onnxruntime, 4 input set(s)" in out
    assert "4/4" in out and out.strip().endswith("PASS")


def test_cli_verify_on_target_detects_a_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify --target compares what the board computed: perturbed board outputs fail."""
    import edgec.mcu.run as mcu_run

    real = mcu_run.run_on_target

    def perturbed(*args: object, **kw: object) -> list[list[np.ndarray]]:
        outs = real(*args, **kw)  # type: ignore[arg-type]
        return [[o + np.float32(1e-3) for o in vec] for vec in outs]

    monkeypatch.setattr(mcu_run, "run_on_target", perturbed)
    path = tmp_path / "mlp.onnx"
    onnx.save(tanh_mlp(), path)
    assert main(["verify", str(path), "--target", "cortex-m4f", "--n", "3"]) == 1
    out = capsys.readouterr().out
    assert "0/3" in out and out.strip().endswith("FAIL")


def test_cli_verify_stateful_steps_on_target(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "gru.onnx"
    onnx.save(gru_step_model(), path)
    assert main(["verify", str(path), "--target", "cortex-m4f", "--n", "5"]) == 0
    out = capsys.readouterr().out
    assert "5/5" in out and "PASS" in out


def test_build_rejects_wrong_inputs(tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp())
    with pytest.raises(EdgecError, match="'x' has 5 values, the model expects 4"):
        build_firmware(m, load_target("cortex-m4f"), tmp_path, [[np.zeros(5, np.float32)]])
    assert os.path.isdir(tmp_path)


def test_repeat_passes_reset_the_state(tmp_path: Path) -> None:
    """repeat=N runs N passes over the vectors (a stateful model is reset before each): the
    printed outputs of the last pass equal those of a single pass, the marks are called N times
    per vector."""
    m = edgec.compile(gru_step_model(), name="gru")
    in_ports, _ = step_ports(m)
    steps = [[s[p.name] for p in in_ports] for s in _vectors(gru_step_model(), 4)]
    once = run_qemu(_build(m, "cortex-m4f", tmp_path / "once", steps)).outputs
    b3 = build_firmware(m, load_target("cortex-m4f"), tmp_path / "three", steps, repeat=3)
    thrice = run_qemu(b3).outputs
    for a, b in zip(once, thrice, strict=True):
        assert a[0].tobytes() == b[0].tobytes()
    main_c = (b3.project_dir / "main.c").read_text()
    assert "#define EDGEC_REPEAT 3u" in main_c and "gru_reset(&state);" in main_c
    assert main_c.index("edgec_mark_start();") < main_c.index("rc |= gru_step(") < main_c.index(
        "edgec_mark_stop();"
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("target", ["cortex-m4f", "cortex-m0"])
def test_fault_and_hang_are_one_line_errors(target: str, tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp())
    b = _build(m, target, tmp_path / "fw", [[_vectors(tanh_mlp(), 1)[0]["x"]]])
    with pytest.raises(ToolchainError, match="did not finish within 0.001 s"):
        run_qemu(b, timeout_s=0.001)
    # a main that calls into unmapped memory: the HardFault handler reports it
    (b.project_dir / "main.c").write_text(
        "int main(void)\n{\n    void (*bad)(void) = (void (*)(void))0x3FFFFF01u;\n"
        "    bad();\n    return 0;\n}\n"
    )
    proc = subprocess.run(["make", "-C", str(b.project_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ToolchainError, match="stopped with 'edgec: fault: HardFault'"):
        run_qemu(b, timeout_s=20)


def test_long_output_lines_arrive_whole(tmp_path: Path) -> None:
    """Three result lines of 8,192 floats each (~74 KB a line, more than a pipe holds): QEMU's
    console writes are non-blocking, and with its output on pipes lines came back cut off in
    most runs when the firmware exited; on files every run reads every line."""
    n = 8192
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, n]}, {"y": [1, n]},
                       {})
    x = np.random.default_rng(0).standard_normal((3, 1, n)).astype(np.float32)
    b = build_firmware(edgec.compile(model), load_target("cortex-m4f"), tmp_path,
                       inputs=[[v] for v in x])
    for _ in range(4):
        res = run_qemu(b, timeout_s=60)
        for i in range(3):
            np.testing.assert_array_equal(res.outputs[i][0], np.maximum(x[i], 0))
