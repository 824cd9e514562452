"""One closed-loop trial, where a Ray worker runs it.

The forward model is compiled once, on the driver; its generated C travels to the workers as
text (:class:`ShippedModel`) with the raw config. Each trial applies its parameters to the
config, writes the controller's config header, builds the host library from that C where the
trial runs (cached by content hash: trials that differ only in runtime knobs share the model's
code, and identical configs share the library) and runs it in closed loop on the Python plant.
No path of the driver's machine is needed by a worker.

With a :class:`BatchTrial` (``edgec tune --batch N``) a trial instead runs N loops of the batched
simulator (:mod:`edgec.mpc.batch`: the controller and a C plant, loop 0 nominal, loops 1.. with
drawn plant parameters and noise) on one thread, and its objective aggregates the loops'
objectives (mean, 95th percentile or worst): a search for the config that is best over the
plant's variations, not on its nominal model only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from edgec.errors import EdgecError
from edgec.mpc.build import Controller
from edgec.mpc.config import config_from_dict
from edgec.mpc.plants import make_plant
from edgec.mpc.reference import FLAG_FALLBACK, FLAG_RATE_LIMIT, FLAG_U_LIMIT
from edgec.mpc.simulate import resample, run_mpc
from edgec.scale.space import INTEGER_KEYS, apply_params

#: objective of a trial whose loop diverged (a finite number searchers can rank)
DIVERGED = 1e9
#: how a batch trial's objective combines its loops' objectives
AGGREGATES = ("mean", "p95", "max")
#: where a batch trial's loops run: cpu, cuda (each trial holds a share of a GPU), auto (cuda
#: when the Ray cluster has GPUs)
BATCH_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class BatchTrial:
    """Each trial runs ``n`` loops of the batched simulator (see the module doc)."""

    n: int
    vary: dict[str, tuple[float, float]]  # plant parameter -> (lo, hi) for loops 1..
    noise: float = 0.0
    seed: int = 0  # of the draws: every trial sees the same plants
    aggregate: str = "mean"
    device: str = "cpu"  # cpu or cuda once the driver has resolved "auto" (trial_resources)

    def record(self) -> dict[str, Any]:
        """What a resumed run must match."""
        return {"n": self.n, "vary": {k: list(v) for k, v in sorted(self.vary.items())},
                "noise": self.noise, "seed": self.seed, "aggregate": self.aggregate}


@dataclass(frozen=True)
class ShippedModel:
    """A compiled forward model as its generated C (what :class:`Controller` needs of it)."""

    name: str
    c_header: str
    c_source: str
    port_macros: tuple[str, ...]  # input then output macro stems (the config's size checks)
    #: the same model as CUDA per-sample code (edgec.backend.cuda.emit.CudaSources), for batch
    #: trials on a GPU; None when the trials run on CPUs only
    cuda_sources: Any = None


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs, by value."""

    config: dict[str, Any]  # the raw TOML tables
    source: str  # the config's name, for messages
    plant: str
    t: np.ndarray  # the reference: times
    ref: np.ndarray  # and values, one column per output
    models: dict[str, ShippedModel]  # jacobian kind -> its compiled forward model
    fallback_weight: float = 1.0
    limit_weight: float = 1.0
    #: repeat the closed loop this many times (bench/scale.py's longer trials); metrics of the last
    repeats: int = 1
    base_dir: str = field(default=".")
    #: the space's keys in order: a searcher's suggestion names them p0, p1, ...
    keys: tuple[str, ...] = ()
    #: run each trial as a batch of loops (``edgec tune --batch N``); None: one loop
    batch: BatchTrial | None = None


def objective(metrics: Mapping[str, Any], fallback_weight: float, limit_weight: float) -> float:
    rmse = metrics["rmse"]
    if rmse is None or not math.isfinite(rmse):
        return DIVERGED
    ticks = max(1, int(metrics["ticks"]))
    return float(rmse) * (
        1.0 + fallback_weight * metrics["fallbacks"] / ticks
        + limit_weight * metrics["limit_hits"] / ticks
    )


def _single_loop(job: TrialJob, cfg: Any, ctrl: Controller) -> dict[str, Any]:
    """One closed loop on the Python plant (the host library of the controller)."""
    host = ctrl.host()
    plant = make_plant(job.plant, cfg.dt)
    ref = resample(job.t, job.ref, cfg.dt)
    if len(ref) < 2:
        raise EdgecError(f"{job.source}: the reference is shorter than one control tick")
    for _ in range(max(1, job.repeats)):
        loop = run_mpc(cfg, host, plant, ref)
    target = ref[1:]
    m = loop.metrics(target)
    out: dict[str, Any] = {
        "rmse": m["rmse"] if math.isfinite(m["rmse"]) else None,
        "max_error": m["max_error"] if math.isfinite(m["max_error"]) else None,
        "mean_iterations": m["mean_iterations"],
        "fallbacks": int(np.count_nonzero(loop.flags & FLAG_FALLBACK)),
        "limit_hits": int(np.count_nonzero(loop.flags & (FLAG_U_LIMIT | FLAG_RATE_LIMIT))),
        "ticks": len(target),
    }
    out["objective"] = objective(out, job.fallback_weight, job.limit_weight)
    return out


def aggregate(values: np.ndarray, how: str) -> float:
    """mean, p95 (a loop's own value, as simulate --batch's percentiles) or max."""
    if how == "mean":
        return float(np.mean(values))
    if how == "p95":
        return float(np.percentile(values, 95, method="higher"))
    return float(np.max(values))


def _batch_loops(job: TrialJob, cfg: Any, ctrl: Controller, b: BatchTrial) -> dict[str, Any]:
    """N loops of the batched simulator on one thread; per-loop objectives aggregated."""
    from edgec.mpc.batch import (
        BatchLibrary,
        build_batch_library,
        check_batch_plant,
        reference_from_rows,
        run_batch,
    )

    if b.device == "cuda":
        from edgec.mpc.batch_cuda import open_cuda_batch

        lib: BatchLibrary = open_cuda_batch(cfg, check_batch_plant(cfg, job.plant), ctrl)
    else:
        lib = BatchLibrary(cfg, check_batch_plant(cfg, job.plant), build_batch_library(ctrl))
    refs = [reference_from_rows(job.source, job.t, job.ref, cfg)]
    for _ in range(max(1, job.repeats)):
        r = run_batch(lib, b.n, b.vary, refs, b.seed, threads=1, noise=b.noise).results
    per_loop = np.array([
        objective({"rmse": float(x["rmse"]), "ticks": x["ticks"], "fallbacks": x["fallbacks"],
                   "limit_hits": x["u_limit"] + x["rate_limit"]},
                  job.fallback_weight, job.limit_weight)
        for x in r
    ])
    rmse = r["rmse"]
    finite = bool(np.all(np.isfinite(rmse)))
    return {
        "rmse": aggregate(rmse, b.aggregate) if finite else None,
        "max_error": float(np.max(r["max_error"])) if finite else None,
        "mean_iterations": float(np.mean(r["mean_iterations"])),
        "fallbacks": int(r["fallbacks"].sum()),
        "limit_hits": int((r["u_limit"] + r["rate_limit"]).sum()),
        "ticks": int(r["ticks"].sum()),
        "loops": b.n,
        "device": b.device,
        "worst_loop": int(np.argmax(per_loop)),
        "objective": min(DIVERGED, aggregate(per_loop, b.aggregate)),
    }


def run_trial(job: TrialJob, params: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's metrics; raises EdgecError when its config cannot be built."""
    t0, c0, start = time.perf_counter(), time.process_time(), time.time()
    data = apply_params(job.config, params)
    cfg = config_from_dict(data, job.source, job.base_dir)
    model = job.models.get(cfg.jacobian)
    if model is None:  # pragma: no cover - the driver compiles every kind the space names
        raise EdgecError(f"{job.source}: no compiled model for jacobian = {cfg.jacobian!r}")
    ctrl = Controller(cfg, cast(Any, model))
    if job.batch is None:
        out = _single_loop(job, cfg, ctrl)
    else:
        out = _batch_loops(job, cfg, ctrl, job.batch)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["started"] = start  # epoch seconds: when runs overlapped (bench/scale.py)
    return out


def safe_trial(job: TrialJob, params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`run_trial` that turns any failure into a failed result (the search goes on)."""
    try:
        return {"status": "ok", **run_trial(job, params)}
    except EdgecError as exc:
        err = " ".join(str(exc).split())
    except Exception as exc:  # a worker-side bug or crash of the loop: still one result
        err = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    return {"status": "failed", "error": err, "objective": DIVERGED}


def trainable(config: dict[str, Any], job: TrialJob) -> None:
    """The Ray Tune function trainable: one closed-loop run, one report."""
    from ray import tune

    point = config.get("point")
    if point is not None:  # grid / random: the driver planned the points
        params = dict(point["params"])
    else:  # a searcher's suggestion: keys p0, p1, ... in the space's order
        params = {}
        for k, v in config.items():
            key = job.keys[int(k[1:])]
            params[key] = int(round(v)) if key in INTEGER_KEYS and isinstance(v, float) else v
    res = safe_trial(job, params)
    res["params_json"] = json.dumps(params, sort_keys=True)
    tune.report(res)
