"""The batched closed-loop simulator on a GPU (``edgec simulate --batch N --device cuda``,
edgec/mpc/batch_cuda.py): the generated ``edgec_batch.cu`` builds with nvcc for sm_90 and sm_87
with warnings as errors and no allocation in device code; the same file compiled as host C++
(launches emulated by a loop over the thread indices) equals the CPU library bit for bit; the
sources are deterministic; the errors without a GPU or nvcc are one line.

On a GPU (skipped elsewhere, not run yet): ``--device cuda`` vs ``--device cpu`` and loop 0 vs
the single-loop simulator. Their tolerances allow for the CUDA math library (cos, log, pow)
differing from glibc's in the last bits, which can flip a float32 rounding of a measurement:
RMSE to 1e-3 relative, loop 0's output to 1e-5 (m or rad).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.backend.cuda.build import NVCC_FLAGS
from edgec.cli import main as cli_main
from edgec.errors import EdgecError
from edgec.mpc.batch import BatchLibrary, check_batch_plant, run_batch
from edgec.mpc.batch_cuda import (
    BATCH_CU,
    NVCC_BATCH_FLAGS,
    batch_cuda_files,
    build_batch_cuda,
    open_cuda_batch,
)
from edgec.mpc.batch_open import open_batch
from edgec.mpc.batch_report import describe, summarize
from edgec.mpc.build import build_controller
from edgec.mpc.config import load_config
from edgec.mpc.plants import make_plant
from edgec.mpc.simulate import run_mpc
from tests.cuda_env import GPUS, NVCC, needs_gpu, needs_nvcc
from tests.test_batch_sim import CONFIGS, EXAMPLE, _ref

VARY = {
    "msd": {"m": (0.8, 1.2), "k": (3.0, 5.0), "delay": (0, 2)},
    "soft-actuator": {"k1": (0.064, 0.096), "damping": (0.016, 0.024), "delay": (0, 2)},
}


@pytest.fixture(scope="module")
def controllers() -> dict[str, Any]:
    """The controllers of tests/test_batch_sim.py: msd (exact ZOH model, horizon mode) and the
    soft actuator (learned NARX MLP, one-step mode)."""
    return {plant: build_controller(load_config(EXAMPLE / name))
            for plant, name in CONFIGS.items()}


def _write(ctrl: Any, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in batch_cuda_files(ctrl).items():
        (d / name).write_text(text)
    return d / BATCH_CU


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_90", "sm_87"])
@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_nvcc_builds_the_batch_unit(controllers: dict, plant: str, arch: str,
                                    tmp_path: Path) -> None:
    """nvcc -Werror all-warnings (edgec's flags, -fmad=false) compiles edgec_batch.cu, and its
    device code calls no allocator (the PTX has no malloc)."""
    cu = _write(controllers[plant], tmp_path)
    base = [str(NVCC), *NVCC_FLAGS, *NVCC_BATCH_FLAGS, f"-arch={arch}", "-I", str(tmp_path)]
    obj = subprocess.run([*base, "-c", str(cu), "-o", str(tmp_path / "b.o")],
                         capture_output=True, text=True, timeout=300)
    assert obj.returncode == 0, obj.stderr[-3000:]
    ptx = subprocess.run([*base, "-ptx", str(cu), "-o", str(tmp_path / "b.ptx")],
                         capture_output=True, text=True, timeout=300)
    assert ptx.returncode == 0, ptx.stderr[-3000:]
    text = (tmp_path / "b.ptx").read_text()
    assert ".entry" in text and "edgec_batch_kernel" in text
    assert not re.search(r"\b(malloc|free)\b", text)


@needs_nvcc
def test_gpu_library_links_with_the_api(controllers: dict) -> None:
    """The cached nvcc shared library (sm_90) exports the host API that CudaBatchLibrary binds."""
    lib = build_batch_cuda(controllers["msd"], arch="sm_90")
    syms = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                          text=True).stdout
    for name in ("edgec_batch_device_open", "edgec_batch_device_run", "edgec_batch_device_trace",
                 "edgec_batch_device_close", "edgec_batch_error", "edgec_batch_layout"):
        assert f" {name}\n" in syms, name


@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_host_build_is_strict_cxx(controllers: dict, plant: str, tmp_path: Path) -> None:
    """The host build of edgec_batch.cu is warning-free C++ (-Wall -Wextra -Werror -pedantic)."""
    cu = _write(controllers[plant], tmp_path)
    proc = subprocess.run(["g++", "-x", "c++", "-std=c++14", "-O2", "-Wall", "-Wextra", "-Werror",
                           "-pedantic", "-DEDGEC_HOST_BUILD", "-I", str(tmp_path), "-c", str(cu),
                           "-o", str(tmp_path / "h.o")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _host_pair(ctrl: Any, plant: str) -> tuple[BatchLibrary, BatchLibrary]:
    cpu = open_batch(ctrl.cfg, plant, ctrl)
    emu = open_cuda_batch(ctrl.cfg, check_batch_plant(ctrl.cfg, plant), ctrl, host=True)
    return cpu, emu


@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_host_emulation_equals_cpu_bit_for_bit(controllers: dict, plant: str) -> None:
    """The same edgec_batch.cu built as host C++ (a launch: a loop over thread indices; host
    memory for device memory) gives the CPU library's results bit for bit: 16 loops with varied
    plants and delays and measurement noise, in two slices, and a traced loop."""
    ctrl = controllers[plant]
    cpu, emu = _host_pair(ctrl, plant)
    ref = _ref(plant, ctrl.cfg, 1.5)
    want = run_batch(cpu, 16, VARY[plant], [ref], seed=7, threads=2, noise=1e-3).results
    emu.slice_size = lambda threads: 5  # type: ignore[method-assign]
    got = run_batch(emu, 16, VARY[plant], [ref], seed=7, noise=1e-3).results
    assert got.tobytes() == want.tobytes()
    assert len(set(want["rmse"].tolist())) == 16  # the loops differ
    for i in (0, 11):
        (r_cpu, t_cpu), (r_emu, t_emu) = cpu.trace(i), emu.trace(i)
        assert r_emu.tobytes() == r_cpu.tobytes() and t_emu.tobytes() == t_cpu.tobytes()


def test_report_of_a_cuda_batch(controllers: dict) -> None:
    """The CPU simulator's report serves the GPU library: device cuda, no host thread count."""
    ctrl = controllers["msd"]
    _, emu = _host_pair(ctrl, "msd")
    run = run_batch(emu, 4, VARY["msd"], [_ref("msd", ctrl.cfg, 0.5)], seed=1)
    s = summarize(run)
    assert s["device"] == "cuda" and s["threads"] is None and s["loop_ticks"] == 4 * 50
    assert "(device cuda, one GPU thread per loop)" in describe(s)
    # a slice past the batch is refused by the library, reported as one line
    with pytest.raises(EdgecError, match=r"CUDA error 1 \(invalid argument\)") as err:
        emu._check(emu._run_slice(3, 2, 1, np.zeros(5, run.results.dtype)))
    assert "\n" not in str(err.value)
    with pytest.raises(EdgecError, match="CPU library"):
        emu.plant_rollout(np.ones(3), np.zeros((2, 1)))


def test_sources_are_deterministic(controllers: dict) -> None:
    """Two builds of the controller give byte-identical GPU sources."""
    again = build_controller(controllers["soft-actuator"].cfg)
    a, b = batch_cuda_files(controllers["soft-actuator"]), batch_cuda_files(again)
    assert a == b and BATCH_CU in a


@pytest.mark.skipif(GPUS > 0, reason="a GPU is visible")
def test_cli_without_gpu_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = cli_main(["simulate", str(EXAMPLE / "msd_exact.toml"), "--plant", "msd", "--batch", "4",
                   "--device", "cuda", "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert "no CUDA GPU visible" in err and "--device cpu" in err and "Traceback" not in err


@pytest.mark.skipif(GPUS > 0, reason="a GPU is visible")
def test_bench_device_cuda_without_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.batch_sim import main

    assert main(["--device", "cuda", "--sizes", "2", "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA GPU visible") and len(err.splitlines()) == 1


def test_no_nvcc_is_one_line(controllers: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NVCC", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("edgec.backend.cuda.build.DEFAULT_CUDA_HOMES", ())
    monkeypatch.setattr("edgec.mpc.batch_cuda.require_gpu", lambda hint: None)
    ctrl = controllers["msd"]
    with pytest.raises(EdgecError, match="nvcc not found") as err:
        open_cuda_batch(ctrl.cfg, check_batch_plant(ctrl.cfg, "msd"), ctrl)
    assert "\n" not in str(err.value) and "--device cpu" in str(err.value)


# -- on a GPU (not run yet: no GPU where this was written) --------------------------------------
@needs_gpu
@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_gpu_equals_cpu_within_tolerance(controllers: dict, plant: str) -> None:
    ctrl = controllers[plant]
    cpu = open_batch(ctrl.cfg, plant, ctrl)
    gpu = open_batch(ctrl.cfg, plant, ctrl, device="cuda")
    ref = _ref(plant, ctrl.cfg, 2.0)
    want = run_batch(cpu, 300, VARY[plant], [ref], seed=3, noise=1e-3).results
    got = run_batch(gpu, 300, VARY[plant], [ref], seed=3, noise=1e-3).results
    np.testing.assert_array_equal(got["ticks"], want["ticks"])
    np.testing.assert_allclose(got["rmse"], want["rmse"], rtol=1e-3)
    np.testing.assert_allclose(got["mean_iterations"], want["mean_iterations"], atol=0.05)


@needs_gpu
@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_gpu_loop0_equals_single_loop(controllers: dict, plant: str) -> None:
    ctrl = controllers[plant]
    cfg = ctrl.cfg
    gpu = open_batch(cfg, plant, ctrl, device="cuda")
    ref = _ref(plant, cfg, 5.0)
    run = run_batch(gpu, 3, {"delay": (1, 2)}, [ref], seed=1, noise=1e-3)
    res0, tr = gpu.trace(0)
    single = run_mpc(cfg, ctrl.host(), make_plant(plant, cfg.dt), ref.rows)
    m = single.metrics(ref.rows[1:])
    np.testing.assert_allclose(tr[:, 0], single.y[:, 0], rtol=0, atol=1e-5)
    for r in (res0, run.results[0]):
        assert r["rmse"] == pytest.approx(m["rmse"], rel=1e-3)
        assert r["fallbacks"] == m["fallbacks"]


@needs_gpu
def test_gpu_cli_batch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = cli_main(["simulate", str(EXAMPLE / "msd_exact.toml"), "--plant", "msd", "--batch", "64",
                   "--vary", "k=3:5", "--device", "cuda", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "(device cuda, one GPU thread per loop)" in out
    assert (tmp_path / "batch.csv").is_file() and (tmp_path / "batch.png").is_file()
