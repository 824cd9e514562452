"""bench/cuda.py's harness: the CPU mode (edgec's host build of the .cu vs torch on the CPU) runs
and agrees with torch; without a GPU the CUDA mode stops in one line."""

from __future__ import annotations

import re

import pytest

from bench import cuda as bench_cuda
from edgec.backend.cuda.build import gpu_count

pytest.importorskip("torch")


def test_cpu_mode_table_rows_agree_with_torch(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cuda.main(["--device", "cpu", "--batches", "1,8", "--repeat", "1",
                            "--models", "mlp_mpc,gru_policy"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [ln.split() for ln in out if ln.startswith(("mlp_mpc", "gru_policy"))]
    assert [(r[0], r[1]) for r in rows] == [("mlp_mpc", "1"), ("mlp_mpc", "8"),
                                           ("gru_policy", "1"), ("gru_policy", "8")]
    assert all(float(r[-1]) < 1e-5 for r in rows)  # max abs err vs torch
    assert all(r[4] == "-" and r[5] == "-" for r in rows)  # no CUDA graph / compile column


def test_unknown_model_and_bad_batches_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cuda.main(["--device", "cpu", "--models", "resnet"]) == 2
    assert bench_cuda.main(["--device", "cpu", "--batches", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown resnet" in err[0] and "positive" in err[1]


@pytest.mark.skipif(gpu_count()[0] > 0, reason="a GPU is visible: the bench runs there")
def test_cuda_mode_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cuda.main(["--batches", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"bench\.cuda: (no CUDA GPU visible|nvcc not found)", err[0])


def test_torch_compile_column(capsys: pytest.CaptureFixture[str]) -> None:
    """--torch-compile adds torch.compile's time (inductor on the CPU here); without it the
    column is "-"; a budget the first compilation exceeds leaves the model's cells "-"."""
    assert bench_cuda.main(["--device", "cpu", "--batches", "4", "--repeat", "2",
                            "--models", "mlp_mpc", "--torch-compile", "600"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("mlp_mpc")]
    assert len(rows) == 1 and float(rows[0][5]) > 0.0  # a time in ms
    assert bench_cuda.main(["--device", "cpu", "--batches", "4,8", "--repeat", "1",
                            "--models", "mlp_mpc", "--torch-compile", "0"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("mlp_mpc")]
    assert [r[5] for r in rows] == ["-", "-"]
