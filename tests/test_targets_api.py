"""The Python API reaches the targets (m.build / m.verify / m.profile) and per-layer profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec
from edgec.mcu.toolchain import have_tool
from tests.test_firmware import gru_step_model, tanh_mlp

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
        reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
    ),
]


def test_api_build_verify_profile_on_a_target(tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp(), name="mlp")
    x = np.random.default_rng(3).standard_normal((1, 4)).astype(np.float32)
    b = m.build(target="cortex-m0", output=tmp_path / "fw", inputs=[{"x": x}])
    assert b.elf.is_file() and b.target.name == "cortex-m0" and b.n_vectors == 1
    rep = m.verify(target="cortex-m4f", n=3)
    assert rep.ok and rep.where == "cortex-m4f, QEMU" and rep.reference == "onnxruntime"
    assert rep.outputs[0].total == 3
    prof = m.profile(target="cortex-m4f", repeat=1)
    assert prof.macs == m.report()["macs"] and prof.instructions_per_inference > prof.macs


def test_api_verify_torch_module_on_a_board_twin() -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    m = edgec.compile(net, example_inputs=(torch.randn(1, 4),))
    rep = m.verify(target="stm32f446re", n=2)
    assert rep.ok and rep.reference == "torch" and "twin cortex-m4f" in rep.where


def test_per_layer_profile_adds_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from edgec.cli import main

    onnx.save(tanh_mlp(), tmp_path / "mlp.onnx")
    assert main(["profile", str(tmp_path / "mlp.onnx"), "--per-layer", "--json",
                 "--repeat", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    layers = rep["layers"]
    assert [la["op"] for la in layers] == ["Gemm+Tanh", "Gemm+Tanh", "Gemm"]
    assert [la["macs"] for la in layers] == [4 * 64, 64 * 64, 64 * 3]
    assert layers[1]["weight_bytes"] == 4 * (64 * 64 + 64)
    total = sum(la["instructions"] for la in layers) + rep["layer_overhead_instructions"]
    assert total == pytest.approx(rep["instructions_per_inference"])
    assert abs(rep["layer_overhead_instructions"]) < 100  # call set-up between kernels only
    assert all(la["estimated_cycles"] >= la["instructions"] for la in layers)
    assert main(["profile", str(tmp_path / "mlp.onnx"), "--per-layer", "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    assert "per layer" in text and "(between kernels)" in text and "instr/MAC" in text


def test_per_layer_profile_of_a_stateful_model() -> None:
    m = edgec.compile(gru_step_model(), name="gru")
    prof = m.profile(target="cortex-m4f", repeat=1, per_layer=True)
    # the marked build may schedule a few instructions differently around the markers
    assert [la.op for la in prof.layers] == ["GRU", "Gemm"]
    # (a fixed few dozen instructions, so a floor: the cell got faster with issue 12; 52 with
    # the eight-row walk)
    assert abs(prof.layer_overhead) <= max(0.02 * prof.instructions_per_inference, 64)


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mlp"


def test_one_inputs_rule_for_run_build_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The example's inputs.npz (20 vectors (20, 4) for a (1, 4) input) works everywhere."""
    from edgec.cli import main

    model, inputs = str(EXAMPLE / "model.onnx"), str(EXAMPLE / "inputs.npz")
    assert main(["verify", model, "--inputs", inputs]) == 0
    assert "20/20" in capsys.readouterr().out
    assert main(["run", model, "--inputs", inputs, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["outputs"]) == 20
    assert main(["build", model, "--inputs", inputs, "-o", str(tmp_path / "fw"), "--json"]) == 0
    assert "EDGEC_N_VECTORS 20u" in (tmp_path / "fw" / "main.c").read_text()


def test_cli_verify_torch_sources_on_a_target(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from edgec.cli import main

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    torch.export.save(torch.export.export(net, (torch.randn(1, 3),)), tmp_path / "m.pt2")
    assert main(["verify", str(tmp_path / "m.pt2"), "--target", "cortex-m4f", "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "(cortex-m4f, QEMU) vs torch, 3 input set(s)" in out and "3/3" in out
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(1)\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), "
        "torch.nn.Linear(8, 2))\n"
        "    return m, (torch.randn(1, 4),)\n"
    )
    assert main(["verify", f"{tmp_path / 'net.py'}:make", "--target", "cortex-m0", "--n",
                 "2"]) == 0
    assert "vs torch" in capsys.readouterr().out
