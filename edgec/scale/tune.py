"""``edgec tune``: a search over an MPC config's parameters on Ray Tune.

Each trial runs the compiled controller in closed loop on the host C (:mod:`edgec.scale.trial`),
or with ``--batch N`` N loops of the batched simulator over drawn plant variations;
the objective is the tracking RMSE with fallbacks and limit hits as penalties. Searchers: the
grid of ``values`` lists, seeded random sampling, or Optuna's TPE through Ray Tune (``optuna``).

The results directory holds ``tune.json`` (the job), ``trials.jsonl`` (one line per finished
trial, appended as trials finish, so an interrupted run keeps what it did), ``best.toml`` (the
best config, which ``edgec mpc build`` takes), ``search.png`` and the table. ``--resume DIR``
reads them back and runs only the trials not yet in ``trials.jsonl``: grid and random points are
planned from the space and the seed, so a resumed run picks up the same list where it stopped;
Optuna is given the finished trials as its history.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.mpc.build import compile_forward_model
from edgec.mpc.config import MpcConfig, load_config
from edgec.mpc.plants import make_plant
from edgec.mpc.simulate import default_reference, load_reference
from edgec.scale.session import cluster_cpus, require_tune, start
from edgec.scale.space import Space, apply_params, dump_toml, load_space
from edgec.scale.trial import (
    AGGREGATES,
    BATCH_DEVICES,
    DIVERGED,
    BatchTrial,
    ShippedModel,
    TrialJob,
    trainable,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SEARCHES = ("grid", "random", "optuna")
DEFAULT_TRIALS = 20
LEDGER = "trials.jsonl"
JOB = "tune.json"
BEST = "best.toml"
PLOT = "search.png"


@dataclass
class TuneResult:
    out_dir: Path
    trials: list[dict[str, Any]]  # every finished trial, by index
    ran: int  # trials run by this invocation
    best: dict[str, Any] | None
    best_config: Path | None
    space: Space
    search: str
    files: list[Path]
    #: wall time of this invocation's trials on Ray (the search, without Ray's start-up)
    fit_seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.trials if r["status"] != "ok"]

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": len(self.trials),
            "best": self.best["params"] if self.best else None,
            "best_rmse": self.best["rmse"] if self.best else None,
            "best_config": str(self.best_config) if self.best_config else None,
        }


# -- the job and its results directory ------------------------------------------------------
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _job_record(
    config_path: Path, space: Space, plant: str, search: str, seed: int, reference: str | None,
    duration: float | None, batch: BatchTrial | None = None,
) -> dict[str, Any]:
    return {
        "config": str(config_path.resolve()), "config_sha": _sha(config_path.read_text()),
        "space_sha": _sha(space.text), "plant": plant, "search": search, "seed": seed,
        "reference": str(Path(reference).resolve()) if reference else None,
        "duration": duration, "batch": batch.record() if batch is not None else None,
    }


def _check_resume(out: Path, job: dict[str, Any]) -> None:
    path = out / JOB
    if not path.is_file():
        raise EdgecError(f"--resume {out}: no {JOB} there (not an edgec tune results directory)")
    old = json.loads(path.read_text())
    names = {"config_sha": "config", "space_sha": "space file", "plant": "--plant",
             "search": "--search", "seed": "--seed", "reference": "--reference",
             "duration": "--duration", "batch": "--batch/--vary/--noise/--aggregate"}
    diff = [names[k] for k in names if old.get(k) != job.get(k)]
    if diff:
        raise EdgecError(
            f"--resume {out}: that run used a different {', '.join(diff)}; resume it with the "
            f"same arguments, or start a new results directory"
        )


def read_ledger(out: Path) -> list[dict[str, Any]]:
    path = out / LEDGER
    rows: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
            rows[int(row["trial"])] = row
    return [rows[i] for i in sorted(rows)]


def _append(out: Path, row: Mapping[str, Any]) -> None:
    with (out / LEDGER).open("a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# -- the trials' inputs ---------------------------------------------------------------------
def _reference(
    plant: str, cfg: MpcConfig, path: str | None, duration: float | None
) -> tuple[np.ndarray, np.ndarray]:
    if path:
        t, ref = load_reference(path, cfg.outputs)
    else:
        rows = default_reference(plant)
        t, ref = rows[:, 0], rows[:, 1:]
    if duration is not None:
        if duration <= 0:
            raise EdgecError(f"--duration must be positive (got {duration:g})")
        keep = t <= t[0] + duration + 1e-9
        t, ref = t[keep], ref[keep]
    return t, ref


def _ship_models(cfg: MpcConfig, space: Space, cuda: bool = False) -> dict[str, ShippedModel]:
    """The forward model compiled once per Jacobian kind the trials can ask for, as C text
    (``cuda``: also as CUDA per-sample code, for batch trials on GPUs)."""
    kinds = {cfg.jacobian}
    for p in space.params:
        if p.key == "solver.jacobian":
            kinds |= {v for v in p.values if v in ("exact", "fd")}
    out = {}
    for kind in sorted(kinds):
        cm = compile_forward_model(replace(cfg, jacobian=kind))
        cu = None
        if cuda:
            from edgec.backend.cuda.emit import emit_cuda

            cu = emit_cuda(cm.graph, f"{cm.name}_cu")
        out[kind] = ShippedModel(cm.name, cm.c_header, cm.c_source, cm.port_macros, cu)
    return out


def check_batch_trial(cfg: MpcConfig, plant: str, batch: BatchTrial) -> None:
    """The batch settings, checked on the driver (one line each) before any trial runs."""
    from edgec.mpc.batch import check_batch_args, check_batch_plant

    check_batch_args(batch.n, None, batch.noise)
    check_batch_plant(cfg, plant)
    if batch.aggregate not in AGGREGATES:
        raise EdgecError(f"--aggregate {batch.aggregate}: choose one of {', '.join(AGGREGATES)}")
    if batch.device not in BATCH_DEVICES:
        raise EdgecError(f"--device {batch.device}: choose one of {', '.join(BATCH_DEVICES)}")


def trial_resources(batch: BatchTrial | None, cpus: int, gpus: float
                    ) -> tuple[BatchTrial | None, dict[str, float]]:
    """Each trial's Ray resources, and the batch with its device resolved. cpu: one CPU; cuda:
    one CPU and an equal share of the cluster's ``gpus`` among the ``cpus`` concurrent trials
    (Ray shows a task only the GPUs it asked for); auto: cuda when the cluster has a GPU."""
    if batch is None or batch.device == "cpu":
        return batch, {"cpu": 1}
    if gpus <= 0:
        if batch.device == "cuda":
            raise EdgecError("--device cuda: the Ray cluster has no GPU; use --device cpu, or "
                             "auto to take GPUs where a cluster has them")
        return replace(batch, device="cpu"), {"cpu": 1}
    return replace(batch, device="cuda"), {"cpu": 1, "gpu": min(1.0, gpus / max(1, cpus))}


def make_job(
    config_path: str | Path, plant: str, space: Space, reference: str | None = None,
    duration: float | None = None, repeats: int = 1, batch: BatchTrial | None = None,
) -> tuple[TrialJob, MpcConfig]:
    cfg = load_config(config_path)
    raw = tomllib.loads(Path(config_path).read_text())
    from edgec.mpc.simulate import _check_plant

    _check_plant(cfg, make_plant(plant, cfg.dt))
    if batch is not None:
        check_batch_trial(cfg, plant, batch)
    t, ref = _reference(plant, cfg, reference, duration)
    job = TrialJob(
        config=raw, source=str(config_path), plant=plant, t=t, ref=ref,
        models=_ship_models(cfg, space, cuda=batch is not None and batch.device != "cpu"),
        fallback_weight=space.fallback_weight,
        limit_weight=space.limit_weight, repeats=repeats, base_dir=str(cfg.base_dir),
        keys=tuple(space.keys), batch=batch,
    )
    return job, cfg


# -- running it on Ray Tune -----------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stdout(quiet: bool) -> Iterator[None]:
    """Ray Tune prints status lines; with --json stdout carries one JSON object only."""
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _tune_space(space: Space, tune: Any) -> dict[str, Any]:
    out = {}
    for i, p in enumerate(space.params):
        if p.kind == "values":
            out[f"p{i}"] = tune.choice(list(p.values))
        elif p.kind == "uniform":
            out[f"p{i}"] = tune.uniform(p.lo, p.hi)
        else:
            out[f"p{i}"] = tune.loguniform(p.lo, p.hi)
    return out


def _row(index: int, params: Mapping[str, Any], res: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": index, "params": dict(params), "status": res["status"]}
    if res["status"] == "ok":
        for k in ("rmse", "max_error", "mean_iterations", "fallbacks", "limit_hits", "ticks",
                  "objective", "seconds", "cpu_seconds", "started"):
            row[k] = res[k]
        for k in ("loops", "worst_loop", "device"):  # batch trials
            if k in res:
                row[k] = res[k]
    else:
        row["error"] = res.get("error", "the trial failed")
    return row


def run_tune(
    config_path: str | Path,
    plant: str,
    space_path: str | Path,
    out_dir: str | Path,
    trials: int | None = None,
    search: str | None = None,
    address: str | None = None,
    resume: bool = False,
    seed: int = 0,
    reference: str | None = None,
    duration: float | None = None,
    workers: int | None = None,
    quiet: bool = False,
    repeats: int = 1,
    batch: BatchTrial | None = None,
) -> TuneResult:
    tune = require_tune()
    config_path = Path(config_path)
    space = load_space(space_path)
    if search is None:
        search = "grid" if space.is_grid else "optuna"
    if search not in SEARCHES:
        raise EdgecError(f"--search {search}: choose one of {', '.join(SEARCHES)}")
    if trials is not None and trials < 1:
        raise EdgecError(f"--trials must be at least 1 (got {trials})")
    if search == "optuna":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            raise EdgecError("--search optuna needs optuna: pip install 'edgec[scale]'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = _job_record(config_path, space, plant, search, seed, reference, duration, batch)
    if resume:
        _check_resume(out, record)
    elif (out / LEDGER).is_file() and read_ledger(out):
        raise EdgecError(
            f"-o {out} already holds a tuning run: continue it with --resume {out}, or choose "
            f"another directory"
        )
    else:
        (out / LEDGER).unlink(missing_ok=True)
    done = read_ledger(out)
    if search == "grid":
        grid = space.grid()
        plan = grid[: trials or len(grid)]
    elif search == "random":
        plan = space.random(trials or DEFAULT_TRIALS, seed)
    else:
        plan = []
    n_total = len(plan) if plan else (trials or DEFAULT_TRIALS)
    done_ids = {r["trial"] for r in done}
    job, cfg = make_job(config_path, plant, space, reference, duration, repeats, batch)
    (out / JOB).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    ran = 0
    fit_seconds = 0.0
    todo = [i for i in range(len(plan)) if i not in done_ids] if plan else []
    n_new = len(todo) if plan else max(0, n_total - len(done))
    if n_new:
        ray, started = start(address, workers)
        try:
            cpus = cluster_cpus(ray)
            resolved, resources = trial_resources(
                batch, cpus, float(ray.cluster_resources().get("GPU", 0)))
            job = replace(job, batch=resolved)
            t0 = time.perf_counter()
            with _quiet_stdout(quiet):
                ran = _fit(tune, job, space, out, plan, todo, done, n_new, search, seed,
                           cpus, resources, client=(address or "").startswith("ray://"))
            fit_seconds = time.perf_counter() - t0
        finally:
            if started:
                ray.shutdown()
    rows = read_ledger(out)
    ok = [r for r in rows if r["status"] == "ok" and r["objective"] < DIVERGED]
    best = min(ok, key=lambda r: (r["objective"], r["trial"])) if ok else None
    files = [out / JOB, out / LEDGER]
    best_path = None
    if best is not None:
        best_path = write_best_config(out / BEST, config_path, cfg, best, space)
        files.append(best_path)
    plot_search(out / PLOT, rows, space, search)
    files.append(out / PLOT)
    return TuneResult(out, rows, ran, best, best_path, space, search, files, fit_seconds)


def _fit(
    tune: Any, job: TrialJob, space: Space, out: Path, plan: list[dict[str, Any]],
    todo: list[int], done: list[dict[str, Any]], n_new: int, search: str, seed: int, cpus: int,
    resources: dict[str, float], client: bool = False,
) -> int:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose=0 then prints nothing
    next_index = [max((r["trial"] for r in done), default=-1) + 1]
    seen: dict[str, int] = {}
    recorded: set[str] = set()

    def index(trial_id: str, config: Mapping[str, Any]) -> int:
        point = config.get("point")
        if point is not None:
            return int(point["trial"])
        if trial_id not in seen:
            seen[trial_id] = next_index[0]
            next_index[0] += 1
        return seen[trial_id]

    def record(trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any] | None,
               error: str = "the Ray worker running it failed (see Ray's logs)") -> None:
        if trial_id in recorded:
            return
        recorded.add(trial_id)
        if result is not None and "params_json" in result:
            _append(out, _row(index(trial_id, config), json.loads(result["params_json"]),
                              result))
            return
        point = config.get("point")
        params = point["params"] if point is not None else {
            job.keys[int(k[1:])]: v for k, v in config.items() if k.startswith("p")
        }
        _append(out, _row(index(trial_id, config), params,
                          {"status": "failed", "error": error}))

    class Ledger(tune.Callback):  # type: ignore[misc,name-defined]
        """Appends each trial to trials.jsonl as it finishes (an interruption keeps them)."""

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            record(trial.trial_id, trial.config, result)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            record(trial.trial_id, trial.config, None)

    search_alg = None
    if plan:
        param_space: dict[str, Any] = {
            "point": tune.grid_search([{"trial": i, "params": plan[i]} for i in todo])
        }
        num_samples = 1
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        param_space = _tune_space(space, tune)
        prior = [{f"p{j}": r["params"][k] for j, k in enumerate(space.keys)} for r in done]
        search_alg = OptunaSearch(
            metric="objective", mode="min", seed=seed,
            points_to_evaluate=prior or None,
            evaluated_rewards=[float(r.get("objective", DIVERGED)) for r in done] or None,
        )
        num_samples = n_new
    # through Ray Client (ray://) Tune's driver loop, and so its callbacks, run on the cluster:
    # the ledger is then written here from the results once the search ends
    callbacks = [] if client else [Ledger()]
    with tempfile.TemporaryDirectory(prefix="edgec-tune-") as tmp:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, job=job), resources),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=num_samples, search_alg=search_alg, metric="objective",
                mode="min", max_concurrent_trials=cpus, reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=tmp, name="edgec-tune", verbose=0, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        grid = tuner.fit()
        for r in grid:
            tid = str(r.metrics.get("trial_id", "")) if r.metrics else ""
            if not tid:
                tid = f"errored-{len(recorded)}"
            err = (str(r.error).splitlines() or ["the trial failed"])[-1] if r.error else ""
            record(tid, r.config or {}, r.metrics if not r.error else None,
                   err or "the trial failed")
    return len(recorded)


# -- outputs --------------------------------------------------------------------------------
def _portable_model(raw: dict[str, Any], base_dir: Path) -> None:
    """Model references made absolute, so the best config works from the results directory."""
    model = raw.get("model", {})
    f = model.get("file")
    if isinstance(f, str) and not Path(f).is_absolute():
        model["file"] = str((base_dir / f).resolve())
    mod = model.get("module")
    if isinstance(mod, str) and ":" in mod:
        name, _, attr = mod.partition(":")
        if not name.endswith(".py"):
            local = base_dir.joinpath(*name.split(".")).with_suffix(".py")
            if local.is_file():
                model["module"] = f"{local.resolve()}:{attr}"


def write_best_config(
    path: Path, config_path: Path, cfg: MpcConfig, best: Mapping[str, Any], space: Space
) -> Path:
    raw = apply_params(tomllib.loads(config_path.read_text()), best["params"])
    raw.setdefault("name", cfg.name)
    _portable_model(raw, cfg.base_dir)
    header = (
        f"The best of the trials of 'edgec tune {config_path}' over {space.source}:\n"
        f"trial {best['trial']}, tracking RMSE {best['rmse']:.6g}, objective "
        f"{best['objective']:.6g} ({best['fallbacks']} fallbacks, {best['limit_hits']} limit "
        f"hits in {best['ticks']} ticks). Tuned: "
        + ", ".join(f"{k} = {v!r}" for k, v in best["params"].items())
    )
    path.write_text(dump_toml(raw, header))
    load_config(path)  # what `edgec mpc build` will read: it must load
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_trials(res: TuneResult) -> str:
    from edgec.tables import format_table

    keys = res.space.keys
    headers = ["trial", *keys, "RMSE", "fallbacks", "limit hits", "objective", "status"]
    rows = []
    for r in res.trials:
        vals = [_fmt(r["params"].get(k, "")) for k in keys]
        if r["status"] == "ok":
            rmse = "diverged" if r["rmse"] is None else _fmt(r["rmse"])
            obj = "-" if r["objective"] >= DIVERGED else _fmt(r["objective"])
            stat = "best" if res.best is not None and r["trial"] == res.best["trial"] else "ok"
            rows.append([str(r["trial"]), *vals, rmse, str(r["fallbacks"]),
                         str(r["limit_hits"]), obj, stat])
        else:
            rows.append([str(r["trial"]), *vals, "-", "-", "-", "-", "failed"])
    text = format_table(headers, rows, align="r" + "r" * len(keys) + "rrrrl")
    for r in res.failed:
        text += f"\ntrial {r['trial']} failed: {r['error']}"
    return text


def plot_search(path: Path, rows: list[dict[str, Any]], space: Space, search: str) -> None:
    """The objective of each trial in order with the best so far, and one panel per tuned key
    (objective against the key's value); failed trials are red crosses at the top."""
    from edgec.mpc.simulate import pyplot

    plt = pyplot()

    keys = space.keys
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.2 * (1 + len(keys)), 3.8),
                             squeeze=False)
    ok = [r for r in rows if r["status"] == "ok" and r["objective"] < DIVERGED]
    bad = [r for r in rows if r not in ok]
    vals = [r["objective"] for r in ok]
    top = max(vals) * 1.5 if vals else 1.0
    ax = axes[0][0]
    if ok:
        ax.plot([r["trial"] for r in ok], vals, "o", color="C0", label="trial")
        best, xs, ys = math.inf, [], []
        for r in sorted(ok, key=lambda r: r["trial"]):
            best = min(best, r["objective"])
            xs.append(r["trial"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    if bad:
        ax.plot([r["trial"] for r in bad], [top] * len(bad), "x", color="C3",
                label="failed / diverged")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (penalised RMSE)")
    ax.set_title(f"{search} search, {len(rows)} trials")
    for i, (k, p) in enumerate(zip(keys, space.params, strict=True)):
        a = axes[0][i + 1]
        xs_ok = [r["params"][k] for r in ok]
        categorical = p.kind == "values" and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in p.values
        )
        if categorical:
            labels = [str(v) for v in p.values]
            a.set_xticks(range(len(labels)), labels)
            xs_ok = [labels.index(str(v)) for v in xs_ok]
        a.plot(xs_ok, vals, "o", color="C0")
        if bad:
            xb = [r["params"].get(k) for r in bad]
            if categorical:
                xb = [labels.index(str(v)) if str(v) in labels else 0 for v in xb]
            a.plot(xb, [top] * len(bad), "x", color="C3")
        if p.kind == "log_uniform" or (
            p.kind == "values" and not categorical
            and min(p.values) > 0 and max(p.values) / min(p.values) > 100
        ):
            a.set_xscale("log")
        a.set_xlabel(k)
    for a in axes[0]:
        if vals and min(vals) > 0 and top / min(vals) > 100:
            a.set_yscale("log")
        a.grid(True, lw=0.4, alpha=0.5)
    if ok or bad:
        axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
