"""The blimp example's population evaluation in compiled code (examples/blimp_snn/population.cu,
issue 11): one candidate per GPU thread, or the host build of the same file on CPU threads.

Without a GPU the host build is what runs: its spike features must equal the numpy
simulation's bit for bit and its fitness agree with ``blimp_snn.fitness``; nvcc must build the
device code warning-free for the H100/H200 (sm_90) and Jetson Orin (sm_87). Where a GPU is
visible, the device build must equal the host build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.backend.cuda.build import gpu_count
from edgec.errors import EdgecError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "blimp_snn"
sys.path.insert(0, str(EXAMPLE))

import blimp_snn as bs  # noqa: E402
import population  # noqa: E402


def _nvcc() -> str | None:
    try:
        from edgec.backend.cuda.build import find_nvcc

        return find_nvcc()
    except EdgecError:
        return None


@pytest.fixture(scope="module")
def problems() -> dict[str, tuple[bs.Spec, np.ndarray, np.ndarray]]:
    flights, pd, _ = bs.fly_pid(bs.training_reference(300, np.random.default_rng(1)))
    sweep = bs.integral_sweep(300, np.random.default_rng(4))
    return {
        "fast": (bs.FAST, flights, bs.leaky(pd, bs.FAST.lam)),
        "steady": (bs.STEADY, sweep, bs.leaky(bs.KI * sweep[:, bs.INT_IDX], bs.STEADY.lam)),
    }


def _candidates(spec: bs.Spec, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean = bs.initial_mean(spec, rng)
    return mean + 0.15 * rng.standard_normal((n, bs.N_PARAMS))


@pytest.mark.parametrize("name", ["fast", "steady"])  # adaptive thresholds / plain
def test_host_build_equals_numpy(problems: dict, name: str) -> None:
    spec, inputs, target = problems[name]
    cand = _candidates(spec, 7, seed=3)  # 7 candidates over 2 threads: uneven ranges
    pf = population.PopulationFitness(inputs, target, spec, device="cpu", threads=2)
    assert pf.device == "cpu"
    xtx, xty, yty, feats = pf.sums(cand, features=True)
    ref = bs.features(cand, inputs, spec)
    assert feats is not None and 0.02 < float(ref.mean()) < 0.5  # the neurons spike
    np.testing.assert_array_equal(feats, ref)  # spike trains and filters bit for bit
    x = np.concatenate([ref, np.broadcast_to(pf.one[None, :, None], ref.shape[:2] + (1,))], 2)
    np.testing.assert_allclose(xtx, np.einsum("pti,ptj->pij", x.astype(np.float64), x),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xty, np.einsum("pti,t->pi", x.astype(np.float64), target),
                               rtol=1e-12, atol=1e-12)
    t64 = target.astype(np.float64)
    np.testing.assert_allclose(yty, np.full(7, np.dot(t64, t64)), rtol=1e-12)
    w0, mse0 = bs.fitness(cand, inputs, target, spec)
    w1, mse1 = pf(cand)
    np.testing.assert_allclose(mse1, mse0, rtol=1e-9)
    np.testing.assert_allclose(w1, w0, rtol=1e-7, atol=1e-9)


def test_evolution_on_the_compiled_population_equals_numpy(problems: dict) -> None:
    """Two generations of 12: the compiled fitness ranks the candidates as numpy does, so the
    evolution takes the same path (same best parameters and readout)."""
    spec, inputs, target = problems["fast"]
    a = bs.evolve(inputs, target, spec, 2, 12)
    b = bs.evolve(inputs, target, spec, 2, 12, device="cpu")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-9)


def test_host_build_is_warning_free(tmp_path: Path) -> None:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++")
    proc = subprocess.run([gxx, "-x", "c++", "-std=c++14", "-DEDGEC_HOST_BUILD", "-O2", "-Wall",
                           "-Wextra", "-Werror", "-pedantic", "-ffp-contract=off", "-c",
                           str(population.SOURCE), "-o", str(tmp_path / "p.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("arch", ["sm_90", "sm_87"])
def test_device_code_builds_with_nvcc(arch: str, tmp_path: Path) -> None:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (CUDA toolkit not installed): the device build is not checked")
    proc = subprocess.run([nvcc, "-O3", "-std=c++14", "-Werror", "all-warnings", "-fmad=false",
                           f"-arch={arch}", "-c", str(population.SOURCE), "-o",
                           str(tmp_path / "p.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_device_choice_without_a_gpu() -> None:
    if gpu_count()[0] > 0:
        pytest.skip("a GPU is visible: the no-GPU path is not taken")
    assert population.pick_device("auto") == "cpu"
    with pytest.raises(EdgecError) as exc:
        population.pick_device("cuda")
    msg = str(exc.value)
    assert "\n" not in msg and "--device cpu" in msg
    with pytest.raises(EdgecError, match="use cpu, cuda or auto"):
        population.pick_device("tpu")


@pytest.mark.skipif(gpu_count()[0] == 0 or _nvcc() is None,
                    reason="no CUDA GPU visible (or no nvcc): the device build is not run")
def test_gpu_equals_host_build(problems: dict) -> None:
    spec, inputs, target = problems["fast"]
    cand = _candidates(spec, 300, seed=5)
    host = population.PopulationFitness(inputs, target, spec, device="cpu").sums(cand, True)
    gpu = population.PopulationFitness(inputs, target, spec, device="cuda").sums(cand, True)
    np.testing.assert_array_equal(gpu[3], host[3])
    for g_, h_ in zip(gpu[:3], host[:3], strict=True):
        np.testing.assert_array_equal(g_, h_)


def test_example_with_a_compiled_population(capsys: pytest.CaptureFixture[str]) -> None:
    """``blimp_snn.py --quick --population 64``: evolves on the compiled population (the CPU
    here), then compiles and flies as usual."""
    table = bs.main(["--quick", "--population", "64"])
    out = capsys.readouterr().out
    device = "CUDA" if gpu_count()[0] > 0 and _nvcc() else "CPU"
    assert f"evaluating 64 candidates per generation on the {device}" in out
    assert "(4 generations x 64)" in out
    assert table["SNN fast + steady (C)"]["rmse"] < 1.5 * table["PID"]["rmse"] + 0.5
