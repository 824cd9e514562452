"""edgec on Ray (edgec[scale]): tune (a known optimum, a failing trial, resume), evolve
(reproducible from its seed) and verify --matrix, on one local Ray of 2 workers per module."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgec.cli import main
from edgec.errors import EdgecError
from edgec.mcu.toolchain import have_tool
from edgec.scale.space import load_space, space_from_dict
from tests.helpers import make_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "soft_actuator_mpc"
CONFIG = EXAMPLES / "msd_exact.toml"  # the analytic MSD model: a 10-step horizon tracks it

# 4 horizons x 2 move weights = 8 trials; a 100-step horizon exceeds the solver's 64 decisions
# (the config cannot be built: 2 failing trials); horizon 10 without move suppression tracks
# the analytic model almost exactly, far ahead of every other point (see the table)
SPACE = """\
["control.horizon"]
values = [1, 10, 100, 2]
["solver.du_weight"]
values = [1e-6, 1.0]
"""
BEST = {"control.horizon": 10, "solver.du_weight": 1e-6}
DURATION = "3"


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tuned(ray_session, tmp_path_factory):
    """One 8-trial grid run through the CLI, shared by the tune tests."""
    d = tmp_path_factory.mktemp("tune")
    space = d / "space.toml"
    space.write_text(SPACE)
    out = d / "out"
    cap = _Capture()
    with cap:
        rc = main(["tune", str(CONFIG), "--plant", "msd", "--space", str(space), "--trials", "8",
                   "--duration", DURATION, "-o", str(out), "--json"])
    return rc, json.loads(cap.text), out, space


class _Capture:
    def __enter__(self) -> None:
        import io

        self._old, sys.stdout = sys.stdout, io.StringIO()

    def __exit__(self, *exc: object) -> None:
        self.text = sys.stdout.getvalue()
        sys.stdout = self._old


def _ledger(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "trials.jsonl").read_text().splitlines()]


def test_tune_finds_the_known_optimum(tuned):
    rc, js, out, _ = tuned
    assert rc == 0
    assert set(js) == {"trials", "best", "best_rmse", "best_config"}
    assert js["trials"] == 8
    assert js["best"] == BEST
    rows = _ledger(out)
    ok = [r for r in rows if r["status"] == "ok"]
    others = sorted(r["objective"] for r in ok if r["params"] != BEST)
    assert js["best_rmse"] < 0.1 * others[0]  # a clear optimum, not a tie
    assert (out / "search.png").stat().st_size > 10_000


def test_tune_failing_trial_is_reported_and_the_rest_run(tuned):
    _, _, out, _ = tuned
    rows = _ledger(out)
    assert len(rows) == 8 and sorted(r["trial"] for r in rows) == list(range(8))
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["params"]["control.horizon"] for r in failed] == [100, 100]
    assert all("at most 64" in r["error"] for r in failed)
    assert sum(r["status"] == "ok" for r in rows) == 6


def test_tune_best_config_builds(tuned, tmp_path):
    _, js, _, _ = tuned
    best = Path(js["best_config"])
    from edgec.mpc.config import load_config

    cfg = load_config(best)
    assert (cfg.horizon, float(cfg.du_weight[0])) == (10, 1e-6)
    assert main(["mpc", "build", str(best), "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "edgec_mpc_config.h").is_file()


def test_tune_resume_continues_without_repeating(tuned, tmp_path):
    """An interrupted run (its ledger holds 5 of 8 trials) resumed: only the 3 missing run."""
    from edgec.scale.tune import run_tune

    _, _, out, space = tuned
    part = tmp_path / "part"
    shutil.copytree(out, part)
    lines = (part / "trials.jsonl").read_text().splitlines()
    kept = [json.loads(ln) for ln in lines if json.loads(ln)["trial"] < 5]
    (part / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    res = run_tune(CONFIG, "msd", space, part, trials=8, resume=True, duration=float(DURATION))
    assert res.ran == 3
    rows = _ledger(part)
    assert len(rows) == 8  # each trial once in the ledger
    assert sorted(r["trial"] for r in rows) == list(range(8))
    assert rows[:5] == kept  # the finished trials were not run again
    assert res.best is not None and res.best["params"] == BEST
    # the same directory without --resume is refused rather than overwritten
    with pytest.raises(EdgecError, match="--resume"):
        run_tune(CONFIG, "msd", space, part, trials=8, duration=float(DURATION))


def test_tune_resume_with_another_space_is_refused(tuned, tmp_path):
    from edgec.scale.tune import run_tune

    _, _, out, _ = tuned
    other = tmp_path / "other.toml"
    other.write_text(SPACE.replace("[1, 10, 100, 2]", "[1, 10]"))
    with pytest.raises(EdgecError, match="space file"):
        run_tune(CONFIG, "msd", other, out, trials=8, resume=True, duration=float(DURATION))


# -- robust tuning: each trial a batch of loops ----------------------------------------------
VARY_K = {"k": (2.0, 6.0)}


def test_batch_trial_scores_what_simulate_batch_measures(capsys, tmp_path):
    """A trial with --batch runs the batched simulator: its RMSE (mean, max) over the loops is
    what `edgec mpc simulate --batch` reports for the same config, plants, seed and path."""
    from edgec.scale.trial import BatchTrial, run_trial
    from edgec.scale.tune import make_job

    space = space_from_dict({"solver.du_weight": {"values": [1e-6]}}, "space")
    assert main(["mpc", "simulate", str(CONFIG), "--plant", "msd", "--batch", "6",
                 "--vary", "k=2:6", "--seed", "3", "--threads", "1", "--json",
                 "-o", str(tmp_path)]) == 0
    want = json.loads(capsys.readouterr().out)["rmse"]
    got = {}
    for how in ("mean", "max"):  # (p95 is a loop's value as simulate's p50/p90/p99)
        job, _ = make_job(CONFIG, "msd", space, batch=BatchTrial(6, VARY_K, 0.0, 3, how))
        res = run_trial(job, {})
        assert res["loops"] == 6 and res["objective"] >= res["rmse"] > 0
        got[how] = res["rmse"]
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
    assert got["max"] == pytest.approx(want["max"], rel=1e-12)
    assert got["max"] > got["mean"]  # the stiffness draws change the tracking


def test_batch_trial_of_one_loop_is_the_single_loop_trial():
    """Loop 0 is the nominal plant without noise: a 1-loop batch trial scores as the one-loop
    trial on the Python plant (to the C plant's rounding)."""
    from edgec.scale.trial import BatchTrial, run_trial
    from edgec.scale.tune import make_job

    space = space_from_dict({"solver.du_weight": {"values": [1e-6]}}, "space")
    one, _ = make_job(CONFIG, "msd", space, duration=float(DURATION))
    batch, _ = make_job(CONFIG, "msd", space, duration=float(DURATION),
                        batch=BatchTrial(1, {}, 0.0, 0, "mean"))
    a, b = run_trial(one, {}), run_trial(batch, {})
    assert b["ticks"] == a["ticks"] and b["fallbacks"] == a["fallbacks"]
    assert b["rmse"] == pytest.approx(a["rmse"], rel=1e-6)


def test_tune_batch_on_ray_ranks_over_the_loops(ray_session, tmp_path, capsys):
    """edgec tune --batch on Ray: every trial row says how many loops it ran and which was
    worst; the known best horizon still wins; a resume with other batch settings is refused."""
    space = tmp_path / "space.toml"
    space.write_text('["control.horizon"]\nvalues = [2, 10]\n')
    out = tmp_path / "out"
    args = ["tune", str(CONFIG), "--plant", "msd", "--space", str(space), "--duration", DURATION,
            "--batch", "4", "--vary", "k=2:6", "--noise", "0.001", "--aggregate", "p95",
            "-o", str(out), "--json"]
    assert main(args) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["best"] == {"control.horizon": 10}
    rows = _ledger(out)
    assert len(rows) == 2 and all(r["loops"] == 4 and 0 <= r["worst_loop"] < 4 for r in rows)
    assert json.loads((out / "tune.json").read_text())["batch"]["aggregate"] == "p95"
    resumed = [a if a != "4" else "5" for a in args if a != "-o" and a != str(out)]
    assert main([*resumed, "--resume", str(out)]) != 0
    assert "--batch/--vary/--noise/--aggregate" in capsys.readouterr().err


def test_batch_trial_resources_and_device():
    """cpu: one CPU; cuda: one CPU and an equal share of the cluster's GPUs; auto: cuda where
    the cluster has GPUs, else cpu; cuda on a cluster without GPUs: one-line error."""
    from edgec.scale.trial import BatchTrial
    from edgec.scale.tune import trial_resources

    b = BatchTrial(4, {}, 0.0, 0, "mean", "auto")
    assert trial_resources(None, 8, 2) == (None, {"cpu": 1})
    assert trial_resources(b, 8, 0) == (BatchTrial(4, {}, 0.0, 0, "mean", "cpu"), {"cpu": 1})
    got, res = trial_resources(b, 8, 2)
    assert got is not None and got.device == "cuda" and res == {"cpu": 1, "gpu": 0.25}
    assert trial_resources(b, 1, 2)[1] == {"cpu": 1, "gpu": 1.0}
    with pytest.raises(EdgecError, match="no GPU"):
        trial_resources(BatchTrial(4, {}, 0.0, 0, "mean", "cuda"), 8, 0)


def test_gpu_batch_trial_from_shipped_sources_equals_the_cpu_trial(monkeypatch):
    """A GPU batch trial builds the GPU simulator from the model shipped as text (C and CUDA
    sources, no graph): the same files as from the compiled model, and, through the host build
    of that .cu (no GPU here), the same trial result as the CPU library bit for bit."""
    import functools

    from edgec.mpc import batch_cuda
    from edgec.mpc.build import Controller, build_controller
    from edgec.mpc.config import load_config
    from edgec.scale.trial import BatchTrial, run_trial
    from edgec.scale.tune import make_job

    space = space_from_dict({"solver.du_weight": {"values": [1e-6]}}, "space")
    cfg = load_config(CONFIG)
    b = BatchTrial(5, VARY_K, 1e-3, 2, "max", "cuda")
    gpu_job, _ = make_job(CONFIG, "msd", space, duration=float(DURATION), batch=b)
    shipped = gpu_job.models[cfg.jacobian]
    assert shipped.cuda_sources is not None
    assert batch_cuda.batch_cuda_files(Controller(cfg, shipped)) == \
        batch_cuda.batch_cuda_files(build_controller(cfg))
    monkeypatch.setattr(batch_cuda, "open_cuda_batch",
                        functools.partial(batch_cuda.open_cuda_batch, host=True))
    cpu_job, _ = make_job(CONFIG, "msd", space, duration=float(DURATION),
                          batch=BatchTrial(5, VARY_K, 1e-3, 2, "max", "cpu"))
    assert cpu_job.models[cfg.jacobian].cuda_sources is None
    a, g = run_trial(cpu_job, {}), run_trial(gpu_job, {})
    assert (a["device"], g["device"]) == ("cpu", "cuda")
    for k in ("rmse", "max_error", "objective", "fallbacks", "ticks", "worst_loop"):
        assert a[k] == g[k], k


@pytest.mark.parametrize("extra, msg", [
    (["--vary", "k=1:2"], "--vary is an option of robust tuning: add --batch N"),
    (["--batch", "0"], "--batch 0: needs at least 1 loop"),
    (["--batch", "2", "--vary", "q=1:2"], "q"),
    (["--device", "cuda"], "--device is an option of robust tuning: add --batch N"),
])
def test_tune_batch_option_errors_are_one_line(extra, msg, tmp_path, capsys):
    pytest.importorskip("ray.tune")
    space = tmp_path / "space.toml"
    space.write_text('["control.horizon"]\nvalues = [10]\n')
    rc = main(["tune", str(CONFIG), "--plant", "msd", "--space", str(space),
               "-o", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and msg in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_evolve_is_reproducible_from_its_seed(ray_session, tmp_path):
    from edgec.scale.evolve import load_spec, run_evolve

    spec = tmp_path / "pid.toml"
    spec.write_text(
        '[evolve]\nfitness = "pid"\nplant = "msd"\nduration = 2.0\npopulation = 8\n'
        "generations = 3\nseed = 5\n"
        "[params]\nkp = {log_uniform = [0.1, 100.0]}\nki = {log_uniform = [0.1, 100.0]}\n"
        "kd = [0.0, 5.0]\n"
    )
    s = load_spec(spec)
    a = run_evolve(s)
    b = run_evolve(s)
    serial = run_evolve(s, use_ray=False)
    assert a.best == b.best == serial.best and a.history == serial.history
    assert a.history[-1] <= a.history[0] and np.isfinite(a.best_cost)
    s.seed = 6
    assert run_evolve(s, use_ray=False).history != a.history


def test_space_file_errors():
    with pytest.raises(EdgecError, match="dotted path"):
        space_from_dict({"horizon": {"values": [1]}})
    with pytest.raises(EdgecError, match="only keys of"):
        space_from_dict({"model.file": {"values": ["x.onnx"]}})
    with pytest.raises(EdgecError, match="0 < lo < hi"):
        space_from_dict({"solver.du_weight": {"log_uniform": [0, 1]}})
    s = space_from_dict({"solver.damping": {"uniform": [0.1, 1.0]},
                         "control.horizon": {"uniform": [2, 9]}})
    with pytest.raises(EdgecError, match="--search grid"):
        s.grid()
    pts = s.random(5, seed=1)
    assert pts == s.random(5, seed=1)
    assert all(isinstance(p["control.horizon"], int) for p in pts)


def test_space_file_example_from_the_issue(tmp_path):
    p = tmp_path / "space.toml"
    p.write_text('["solver.du_weight"]\nlog_uniform = [1e-7, 1e-4]\n'
                 '["control.horizon"]\nvalues = [5, 10]\n')
    s = load_space(p)
    assert s.keys == ["solver.du_weight", "control.horizon"] and not s.is_grid


def test_missing_ray_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    rc = main(["tune", str(CONFIG), "--plant", "msd", "--space", str(tmp_path / "s.toml"),
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "pip install 'edgec[scale]'" in err


# -- verify --matrix -------------------------------------------------------------------------
def _write_models(d: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    relu = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        {"x": [1, 8]}, {"y": [1, 6]}, {"w": w1}, name="mlp")
    tanh = make_model([helper.make_node("Tanh", ["x"], ["y"])], {"x": [1, 16]}, {"y": [1, 16]},
                      name="tanh")
    add = make_model(
        [helper.make_node("Add", ["x", "b"], ["y"])], {"x": [1, 4]}, {"y": [1, 4]},
        {"b": rng.standard_normal((1, 4)).astype(np.float32)}, name="add")
    for name, m in (("mlp", relu), ("tanh", tanh), ("add", add)):
        onnx.save(m, str(d / f"{name}.onnx"))


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm")
def test_verify_matrix_3_models_x_2_targets(ray_session, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    _write_models(models)
    rc = main(["verify", "--matrix", str(models), "--targets", "cortex-m0,cortex-m4f",
               "--n", "2", "--json"])
    js = json.loads(capsys.readouterr().out)
    assert rc == 0 and js["pass"]
    pairs = {(p["model"], p["target"]) for p in js["pairs"]}
    assert pairs == {(f"{m}.onnx", t) for m in ("add", "mlp", "tanh")
                     for t in ("cortex-m0", "cortex-m4f")}
    assert all(p["pass"] and p["error"] is None for p in js["pairs"])


def test_verify_matrix_reports_a_failing_pair(ray_session, tmp_path, capsys):
    """A file that is no model fails its pairs with a one-line reason; the table still prints."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.onnx").write_bytes(b"not an onnx file")
    rc = main(["verify", "--matrix", str(models), "--targets", "cortex-m4f"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "broken.onnx" in out and "FAIL" in out and "0/1 pairs pass" in out


def test_verify_matrix_error_names_the_model_not_the_scratch_dir():
    from edgec.scale.matrix import ShippedFile, verify_pair

    row = verify_pair(ShippedFile("broken.onnx", b"not an onnx file"), "cortex-m4f", 1, 0,
                      1e-4, None)
    assert not row["pass"] and row["error"].startswith("broken.onnx: not a valid ONNX file")
    assert "edgec-matrix-" not in row["error"]


def test_verify_needs_a_model_or_a_matrix(capsys):
    assert main(["verify"]) == 2
    assert "--matrix" in capsys.readouterr().err


def test_blimp_evolution_on_ray_matches_one_process(ray_session):
    """The blimp example's evolution with each generation split over the Ray workers (the
    example's module travels by value) gives exactly the single-process result."""
    sys.path.insert(0, str(EXAMPLES.parent / "blimp_snn"))
    import blimp_snn

    flights, pd, _ = blimp_snn.fly_pid(
        blimp_snn.training_reference(300, np.random.default_rng(1)))
    target = blimp_snn.leaky(pd, blimp_snn.FAST.lam)
    one = blimp_snn.evolve(flights, target, blimp_snn.FAST, 2, 8)
    on_ray = blimp_snn.evolve(flights, target, blimp_snn.FAST, 2, 8, ray_session)
    np.testing.assert_array_equal(one[0], on_ray[0])
    np.testing.assert_array_equal(one[1], on_ray[1])
    assert one[2] == on_ray[2]


def test_evolve_cli_python_fitness_finds_the_minimum(ray_session, tmp_path, capsys):
    """A user's fitness file reaches the workers by content; the minimum of a quadratic."""
    (tmp_path / "quad.py").write_text(
        "def cost(p):\n    return (p['x'] - 0.3) ** 2 + (p['y'] + 1.0) ** 2\n")
    spec = tmp_path / "spec.toml"
    spec.write_text('[evolve]\nfitness = "quad.py:cost"\npopulation = 8\ngenerations = 25\n'
                    "seed = 1\n[params]\nx = [-2.0, 2.0]\ny = [-2.0, 2.0]\n")
    assert main(["evolve", str(spec), "--json", "-o", str(tmp_path / "o")]) == 0
    js = json.loads(capsys.readouterr().out)
    assert abs(js["best"]["x"] - 0.3) < 0.05 and abs(js["best"]["y"] + 1.0) < 0.05
    assert js["evaluations"] == 200 and len(js["history"]) == 25
    assert json.loads((tmp_path / "o" / "best.json").read_text())["best"] == js["best"]
    assert (tmp_path / "o" / "history.png").is_file()


def test_evolve_mpc_fitness_runs_the_compiled_controller(ray_session, tmp_path):
    from edgec.scale.evolve import load_spec, run_evolve

    spec = tmp_path / "mpc.toml"
    spec.write_text(f'[evolve]\nfitness = "mpc"\nconfig = "{CONFIG}"\nplant = "msd"\n'
                    "duration = 1.0\npopulation = 4\ngenerations = 2\n"
                    '[params]\n"solver.du_weight" = {log_uniform = [1e-7, 1.0]}\n')
    res = run_evolve(load_spec(spec))
    assert 1e-7 <= res.best["solver.du_weight"] <= 1.0
    assert 0 < res.best_cost < 1.0  # a closed-loop tracking RMSE (m), not a failure penalty


def test_evolve_spec_errors(tmp_path):
    from edgec.scale.evolve import load_spec

    spec = tmp_path / "bad.toml"
    spec.write_text('[evolve]\nfitness = "pid"\n[params]\ngain = [0.0, 1.0]\n')
    with pytest.raises(EdgecError, match="kp, ki, kd"):
        load_spec(spec)
    spec.write_text('[evolve]\nfitness = "pid"\n[params]\nkp = [1.0, 0.0]\n')
    with pytest.raises(EdgecError, match="lo < hi"):
        load_spec(spec)
