"""examples/gpu_sweep: the quick run on the CPU (no GPU needed): the sweep's outputs, the nominal
loop tracking, and the ResNet's CUDA code (host build) against torch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "gpu_sweep" / "gpu_sweep.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_sweep", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_sweep"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_quick_sweep_and_resnet_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    mod = _load()
    assert mod.main(["--quick", "--device", "cpu", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "6 closed loops of 'soft_ctrl' on 'soft-actuator' (device cpu" in out
    assert (tmp_path / "batch.csv").is_file() and (tmp_path / "batch.png").stat().st_size > 0
    assert "(within 0.0001)" in out
    summary = mod.sweep(2, "cpu", None, mod.QUICK_SECONDS)
    assert summary["nominal"]["rmse"] < 1e-3  # loop 0: the nominal plant tracks closely
    assert summary["rmse"]["max"] > summary["nominal"]["rmse"]


def test_resnet_cuda_code_matches_torch_in_the_host_build() -> None:
    assert _load().resnet_check("cpu", 3) <= 1e-4
