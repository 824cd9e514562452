"""Batched closed-loop simulation (``edgec simulate --batch N --device cpu``): the C plants vs the
Python plants, loop 0 vs the single-loop simulator, thread independence, reproducible draws,
the delay line, reference sets, noise, errors, the CLI's outputs and a strict, sanitized build.

Tolerances: the C plant matches the Python plant to 1e-12 relative (both are float64 RK4 with the
same evaluation order; measured: identical on x86-64 glibc). Loop 0 matches the single-loop
simulator's outputs to 1e-6 (m or rad), its commands to 1e-5 of the command range and its RMSE
to 1e-6 relative (measured: identical here; the slack covers a libm whose cos differs from
numpy's by an ulp, which can flip one float32 rounding of a measurement).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.cli import main as cli_main
from edgec.errors import EdgecError
from edgec.mpc.batch import (
    MAX_DELAY,
    PLANT_FILES,
    PLANT_PARAMS,
    BatchLibrary,
    Reference,
    draw,
    nominal,
    parse_vary,
    plant_sources,
    reference_from_rows,
    run_batch,
)
from edgec.mpc.batch_open import open_batch
from edgec.mpc.build import build_controller
from edgec.mpc.config import load_config
from edgec.mpc.plants import PLANTS, make_plant
from edgec.mpc.simulate import default_reference, run_mpc
from tests.c_checks import SANITIZE, STRICT

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mpc"
CONFIGS = {"msd": "msd_exact.toml", "soft-actuator": "soft_actuator.toml"}


@pytest.fixture(scope="module")
def setups() -> dict[str, tuple[Any, BatchLibrary]]:
    """Per plant: the example controller (msd: the exact ZOH model, horizon mode; soft actuator:
    the learned NARX MLP, one-step mode) and its batch library."""
    out = {}
    for plant, name in CONFIGS.items():
        cfg = load_config(EXAMPLE / name)
        ctrl = build_controller(cfg)
        out[plant] = (ctrl, open_batch(cfg, plant, ctrl))
    return out


def _ref(plant: str, cfg: Any, seconds: float) -> Reference:
    rows = default_reference(plant, seconds)
    return reference_from_rows("default", rows[:, 0], rows[:, 1:], cfg)


@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_c_plant_matches_python_plant(setups: dict, plant: str) -> None:
    _, lib = setups[plant]
    rng = np.random.default_rng(3)
    cls = PLANTS[plant]
    names = [p.name for p in PLANT_PARAMS[plant][:-1]]
    lo, hi = np.array(cls.u_min), np.array(cls.u_max)
    # commands beyond the actuator's range too: both clip
    u = rng.uniform(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), size=(300, len(lo)))
    for scale in (1.0, 0.7, 1.3):
        params = {n: v * scale for n, v in nominal(plant).items() if n != "delay"}
        py = cls(dt=0.01, **params)
        py.reset()
        xs = [py.x.copy()]
        for uk in u:
            py.step(uk)
            xs.append(py.x.copy())
        c = lib.plant_rollout(np.array([params[n] for n in names]), u)
        np.testing.assert_allclose(c, np.array(xs), rtol=1e-12, atol=1e-12)
        assert np.ptp(c[:, 0]) > 1e-3  # the commands moved it


@pytest.mark.parametrize("plant", sorted(CONFIGS))
def test_loop0_equals_single_loop(setups: dict, plant: str) -> None:
    ctrl, lib = setups[plant]
    cfg = ctrl.cfg
    ref = _ref(plant, cfg, 5.0)
    run = run_batch(lib, 3, {"delay": (1, 2)}, [ref], seed=1, threads=1, noise=1e-3)
    res0, tr = lib.trace(0)
    single = run_mpc(cfg, ctrl.host(), make_plant(plant, cfg.dt), ref.rows)
    m = single.metrics(ref.rows[1:])
    nu = cfg.commands
    np.testing.assert_allclose(tr[:, 0], single.y[:, 0], rtol=0, atol=1e-6)
    span = float(np.max(cfg.u_max - cfg.u_min))
    np.testing.assert_allclose(tr[:, 1 + nu: 1 + 2 * nu], single.u, rtol=0, atol=1e-5 * span)
    np.testing.assert_allclose(tr[:, 1: 1 + nu], single.u, rtol=0, atol=1e-5 * span)  # delay 0
    for r in (res0, run.results[0]):
        assert r["rmse"] == pytest.approx(m["rmse"], rel=1e-6)
        assert r["max_error"] == pytest.approx(m["max_error"], rel=1e-6)
        assert r["mean_iterations"] == pytest.approx(m["mean_iterations"], abs=0.01)
        assert r["fallbacks"] == m["fallbacks"]
    # the delayed, noisy loops are different loops
    assert run.results["rmse"][1] != run.results["rmse"][0]


def test_results_independent_of_threads(setups: dict) -> None:
    ctrl, lib = setups["msd"]
    ref = _ref("msd", ctrl.cfg, 2.0)
    vary = {"m": (0.8, 1.2), "c": (0.3, 1.5), "k": (2.0, 6.0), "delay": (0, 2)}
    runs = [run_batch(lib, 37, vary, [ref], seed=5, threads=t, noise=1e-3).results
            for t in (1, 2, 3)]
    assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()
    assert len(set(runs[0]["rmse"].tolist())) > 30  # the loops differ


def test_vary_draws_reproducible_from_seed() -> None:
    vary = parse_vary(["k=3:5", "c=0.5:1", "delay=0:3"], "msd")
    a, b = draw("msd", 50, vary, seed=11), draw("msd", 50, vary, seed=11)
    c = draw("msd", 50, vary, seed=12)
    for field in ("params", "delay", "seed", "noise"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.params, c.params) and not np.array_equal(a.seed, c.seed)
    nom = nominal("msd")
    assert a.loop_params("msd", 0) == nom  # loop 0 is the nominal plant
    k, cc, m = a.params[1:, 2], a.params[1:, 1], a.params[1:, 0]
    assert np.all((k >= 3) & (k <= 5)) and np.all((cc >= 0.5) & (cc <= 1.0))
    assert np.all(m == nom["m"])  # not varied
    assert set(a.delay[1:].tolist()) == {0, 1, 2, 3}
    # loop i's plant does not depend on N nor on which other parameters vary
    small = draw("msd", 7, vary, seed=11)
    assert np.array_equal(small.params, a.params[:7]) and np.array_equal(small.delay, a.delay[:7])
    only_k = draw("msd", 50, {"k": vary["k"]}, seed=11)
    assert np.array_equal(only_k.params[:, 2], a.params[:, 2])


@pytest.mark.parametrize("spec, expect", [
    ("stiffness=1:2", "unknown parameter 'stiffness'; plant 'msd' has: m (kg), c (N s/m), "
                      "k (N/m), delay (ticks)"),
    ("k", "expected NAME=LO:HI; plant 'msd' has: m (kg)"),
    ("k=5:3", "expected k=LO:HI with finite numbers LO <= HI"),
    ("k=a:3", "expected k=LO:HI"),
    ("k=1:inf", "expected k=LO:HI"),
    ("m=0:2", "m (mass) must be > 0"),
    ("c=-1:2", "c (damping) must be >= 0"),
    ("delay=0.5:2", "delay is a whole number of ticks in 0..32"),
    (f"delay=0:{MAX_DELAY + 1}", "delay is a whole number of ticks"),
])
def test_bad_vary_is_one_line_error(spec: str, expect: str) -> None:
    with pytest.raises(EdgecError) as err:
        parse_vary([spec], "msd")
    msg = str(err.value)
    assert expect in msg and "\n" not in msg and msg.startswith(f"--vary '{spec}'")


def test_bad_batch_options_exit_2_before_building(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    base = ["simulate", str(EXAMPLE / "soft_actuator.toml"), "--plant", "soft-actuator",
            "-o", str(tmp_path)]
    cases = [
        (["--batch", "4", "--vary", "k=1:2"], "plant 'soft-actuator' has: inertia (kg m^2), "
         "damping (N m s), k1 (N m/rad), k3 (N m/rad^3), k_cc (m), f_max (N), radius (m), "
         "mgl (N m), delay (ticks)"),
        (["--batch", "4", "--device", "cuda", "--threads", "2"], "--threads is for --device "
         "cpu"),
        (["--batch", "0"], "--batch 0: needs at least 1 loop"),
        (["--batch", "2", "--threads", "0"], "--threads 0: needs at least 1 thread"),
        (["--batch", "2", "--noise", "-1"], "--noise -1.0"),
        (["--vary", "k1=1:2", "--reference", "x.csv"], "--vary is an option of batched "
         "simulation: add --batch N"),
        ([], "--reference PATH.csv is required (without --batch)"),
        (["--batch", "2", "--reference-set", str(tmp_path / "none")], "not a directory"),
    ]
    for extra, expect in cases:
        assert cli_main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert expect in err and len(err.splitlines()) == 1, (extra, err)


def test_delay_line_and_noise(setups: dict) -> None:
    ctrl, lib = setups["soft-actuator"]
    ref = _ref("soft-actuator", ctrl.cfg, 1.0)
    run_batch(lib, 3, {"delay": (3, 3)}, [ref], seed=2, threads=1, noise=0.0)
    _, tr = lib.trace(1)
    nu = ctrl.cfg.commands
    applied, command = tr[:, 1: 1 + nu], tr[:, 1 + nu: 1 + 2 * nu]
    assert np.all(applied[:3] == 0.0)  # the rest input until the first command arrives
    np.testing.assert_array_equal(applied[3:], command[:-3])
    quiet = run_batch(lib, 4, {}, [ref], seed=2, threads=1, noise=0.0).results
    noisy = run_batch(lib, 4, {}, [ref], seed=2, threads=1, noise=2e-3).results
    assert noisy[0].tobytes() == quiet[0].tobytes()  # loop 0 is noise-free
    assert np.all(noisy["rmse"][1:] > quiet["rmse"][1:])
    assert len(set(noisy["rmse"][1:].tolist())) == 3  # own seed per loop


def test_reference_set_round_robin(setups: dict, tmp_path: Path) -> None:
    ctrl, lib = setups["msd"]
    rows = default_reference("msd", 3.0)
    d = tmp_path / "refs"
    d.mkdir()
    (d / "a.csv").write_text("t,x\n" + "\n".join(f"{a:.6g},{b:.6g}" for a, b in rows) + "\n")
    short = rows[rows[:, 0] <= 1.5]
    np.savez(d / "b.npz", t=short[:, 0], ref=0.5 * short[:, 1])
    (d / "notes.txt").write_text("ignored")
    from edgec.mpc.batch import load_reference_set

    refs = load_reference_set(d, ctrl.cfg)
    assert [r.name for r in refs] == ["a.csv", "b.npz"]
    res = run_batch(lib, 4, {}, refs, threads=2).results
    assert res["ticks"].tolist() == [300, 150, 300, 150]
    assert res[2].tobytes() == res[0].tobytes()  # same reference, nominal: the same loop
    assert res[1]["rmse"] != res[0]["rmse"]
    (d / "c.npz").write_bytes(b"not an npz")
    with pytest.raises(EdgecError, match="c.npz: cannot read"):
        load_reference_set(d, ctrl.cfg)


def test_cli_batch_outputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ref = tmp_path / "path.csv"
    rows = default_reference("msd", 2.0)
    ref.write_text("t,x\n" + "\n".join(f"{a:.6g},{b:.6g}" for a, b in rows) + "\n")
    base = ["simulate", str(EXAMPLE / "msd_exact.toml"), "--plant", "msd", "--reference",
            str(ref), "--batch", "12", "--vary", "k=2:6", "--vary", "delay=0:4", "--seed", "4",
            "--threads", "2"]
    assert cli_main([*base, "--json", "-o", str(tmp_path / "j")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["loops"] == 12 and s["loop_ticks"] == 12 * 200 and s["threads"] == 2
    assert s["vary"] == {"k": [2.0, 6.0], "delay": [0.0, 4.0]}
    assert set(s["rmse"]) == {"p50", "p90", "p99", "max", "mean"}
    assert s["rmse"]["p50"] <= s["rmse"]["p90"] <= s["rmse"]["p99"] <= s["rmse"]["max"]
    assert len(s["worst"]) == 5 and s["worst"][0]["rmse"] == s["rmse"]["max"]
    assert s["nominal"]["loop"] == 0 and s["nominal"]["params"]["k"] == nominal("msd")["k"]
    assert {"fallbacks", "u_limit", "rate_limit", "no_converge"} <= set(s)
    assert (tmp_path / "j" / "batch.png").stat().st_size > 10_000
    lines = (tmp_path / "j" / "batch.csv").read_text().splitlines()
    assert lines[0].startswith("loop,m,c,k,delay,noise,reference,rmse,max_error") and \
        len(lines) == 13
    assert cli_main([*base, "-o", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "12 closed loops of 'msd_exact_ctrl' on 'msd'" in out
    assert "worst loops:" in out and "k (N/m)" in out and "nominal (loop 0)" in out


def test_loop_sources_strict_and_sanitized(setups: dict, tmp_path: Path) -> None:
    """The plant + loop + thread driver build with -Wall -Wextra -Werror -std=c99 -pedantic and
    run 2 threads x 3 loops (varied plant, delays, noise) clean under ASan/UBSan."""
    ctrl, lib = setups["soft-actuator"]
    ctrl.write_sources(tmp_path)
    for name, text in plant_sources().items():
        (tmp_path / name).write_text(text)
    assert set(PLANT_FILES) <= {p.name for p in tmp_path.iterdir()}
    (tmp_path / "main.c").write_text("""
#include <stdio.h>
#include "edgec_loop.h"
int edgec_batch_run(const edgec_loop_spec_t *, int, int, int, edgec_loop_result_t *);
int main(void)
{
    static const double u_min[2] = {0.0, 0.0}, u_max[2] = {1.0, 1.0};
    static const double nominal[8] = {2e-5, 0.02, 0.08, 0.05, 0.002, 8.0, 0.012, 0.0098};
    double params[3 * EDGEC_PLANT_MAX_PARAMS] = {0};
    static const int delay[3] = {0, 2, 5}, ref_index[3] = {0, 0, 0};
    static const unsigned long long seed[3] = {1, 2, 3};
    static const double noise[3] = {0.0, 1e-3, 1e-3};
    double refs[101];
    static const int first[1] = {0}, rows[1] = {101};
    edgec_loop_spec_t s;
    edgec_loop_result_t res[3];
    int i, j;
    for (i = 0; i < 101; ++i) refs[i] = -0.12 + 0.002 * i;
    for (i = 0; i < 3; ++i)
        for (j = 0; j < 8; ++j)
            params[i * EDGEC_PLANT_MAX_PARAMS + j] = nominal[j] * (1.0 + 0.1 * i);
    s.plant = EDGEC_PLANT_SOFT_ACTUATOR; s.substeps = 10; s.dt = 0.01;
    s.u_min = u_min; s.u_max = u_max; s.params = params; s.delay = delay;
    s.ref_index = ref_index; s.seed = seed; s.noise = noise; s.refs = refs;
    s.ref_first = first; s.ref_rows = rows;
    if (edgec_batch_run(&s, 0, 3, 2, res) != 0) return 3;
    for (i = 0; i < 3; ++i) printf("%.9g %g\\n", res[i].rmse, res[i].ticks);
    return 0;
}
""")
    srcs = [*ctrl.c_sources(), "edgec_plants.c", "edgec_loop.c", "edgec_batch_host.c"]
    strict = subprocess.run(["gcc", *STRICT, "-O2", "-c", *srcs], cwd=tmp_path,
                            capture_output=True, text=True)
    assert strict.returncode == 0, strict.stderr[-3000:]
    build = subprocess.run(["gcc", "-std=c99", "-O1", *SANITIZE, "-pthread", "-I.", "main.c",
                            *srcs, "-lm", "-o", "loops"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    proc = subprocess.run(["./loops"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={"ASAN_OPTIONS": "detect_leaks=1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    vals = [line.split() for line in proc.stdout.splitlines()]
    assert [v[1] for v in vals] == ["100"] * 3
    assert all(0 < float(v[0]) < 0.2 for v in vals)


def test_bench_batch_sim_smoke(setups: dict) -> None:
    """bench/batch_sim.py end to end on tiny sizes (no speed asserted)."""
    from bench.batch_sim import measure

    res = measure("msd_exact.toml", "msd", 0.2, [1, 3], [1, 2])
    assert [(r["loops"], r["threads"]) for r in res["rows"]] == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert res["ticks_per_loop"] == 20
    assert all(r["loop_ticks"] == 20 * r["loops"] and r["loop_ticks_per_s"] > 0
               for r in res["rows"])


def _nvcc() -> str | None:
    import shutil

    return shutil.which("nvcc") or next(
        (str(p) for p in [Path("/usr/local/cuda/bin/nvcc")] if p.is_file()), None)


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed (CUDA toolkit)")
def test_plants_compile_as_cuda_device_code(tmp_path: Path) -> None:
    """With EDGEC_LOOP_FN = __host__ __device__ the C plants are device code as they stand (a
    kernel steps one plant per thread); compile only, no GPU needed."""
    for name, text in plant_sources().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "k.cu").write_text("""
#define EDGEC_LOOP_FN __host__ __device__
#include "edgec_plants.c"
__global__ void roll(const double *params, double *out, int n)
{
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    const double lo[2] = {0.0, 0.0};
    const double hi[2] = {1.0, 1.0};
    const double u[2] = {0.5, 0.2};
    edgec_plant_t pl;
    if (i >= n) return;
    edgec_plant_init(&pl, EDGEC_PLANT_SOFT_ACTUATOR, params + EDGEC_PLANT_MAX_PARAMS * i, lo,
                     hi, 0.01, 10);
    for (int k = 0; k < 100; ++k) edgec_plant_step(&pl, u);
    out[i] = edgec_plant_output(&pl);
}
""")
    proc = subprocess.run([str(_nvcc()), "-arch=sm_90", "-Werror", "all-warnings", "-I.", "-c",
                           "k.cu", "-o", "k.o"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
