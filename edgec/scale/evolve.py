"""``edgec evolve SPEC``: population-based evolution of controller parameters on Ray.

The optimiser is a separable CMA-ES-like (mu/mu_w, lambda) evolution strategy (rank-mu update of
per-parameter variances, cumulative step-size adaptation) working in the unit box of the
parameters (log-scaled where asked). Every generation's candidates are drawn on the driver from
one seeded generator and evaluated in contiguous slices as Ray tasks; results come back in
order, so the same seed gives the same best parameters whatever the number of workers.

```toml
[evolve]
fitness = "pid"              # "pid": PID gains on a plant; "mpc": keys of an MPC config, the
                             # compiled controller in closed loop; "file.py:fn": fn(params) -> cost
plant = "msd"                # pid / mpc: the plant (msd | soft-actuator)
config = "msd_exact.toml"    # mpc: the controller config (relative to the spec)
duration = 10.0              # seconds of the plant's default reference path (pid / mpc)
population = 16
generations = 20
seed = 0
sigma = 0.3                  # initial step size, a fraction of each parameter's range

[params]                     # name = [lo, hi], or name = {log_uniform = [lo, hi]}
kp = [0.0, 20.0]             # the search starts at the box centre; candidates are clipped to it
ki = {log_uniform = [0.1, 100.0]}
```
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FITNESS_KINDS = ("pid", "mpc")
PID_KEYS = ("kp", "ki", "kd", "t_filter")
BatchFitness = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Bound:
    name: str
    lo: float
    hi: float
    log: bool = False

    def value(self, unit: float) -> float:
        u = min(max(unit, 0.0), 1.0)
        if self.log:
            return math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        return self.lo + u * (self.hi - self.lo)


@dataclass
class EvolveSpec:
    source: str
    fitness: str
    bounds: list[Bound]
    base_dir: Path
    plant: str = "msd"
    config: str | None = None
    duration: float = 10.0
    population: int = 16
    generations: int = 20
    seed: int = 0
    sigma: float = 0.3


@dataclass
class EvolveResult:
    best: dict[str, float]
    best_cost: float
    history: list[float]  # the best cost of each generation
    evaluations: int
    spec: EvolveSpec | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"best": self.best, "best_cost": self.best_cost, "history": self.history,
                "evaluations": self.evaluations}


def _num(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def load_spec(path: str | Path) -> EvolveSpec:
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such evolution spec")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise EdgecError(f"{p}: not valid TOML ({exc})") from None
    src = str(p)
    ev = data.get("evolve")
    params = data.get("params")
    extra = sorted(set(data) - {"evolve", "params"})
    if extra or not isinstance(ev, Mapping) or not isinstance(params, Mapping) or not params:
        raise EdgecError(f"{src}: expected the tables [evolve] and [params] (name = [lo, hi])")
    known = {"fitness", "plant", "config", "duration", "population", "generations", "seed",
             "sigma"}
    unknown = sorted(set(ev) - known)
    if unknown:
        raise EdgecError(f"{src}: [evolve] unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    fitness = ev.get("fitness")
    if not isinstance(fitness, str) or (fitness not in FITNESS_KINDS and ":" not in fitness):
        raise EdgecError(f"{src}: [evolve] fitness must be \"pid\", \"mpc\" or "
                         f"\"file.py:function\", got {fitness!r}")
    bounds = []
    for name, b in params.items():
        log = isinstance(b, Mapping) and list(b) == ["log_uniform"]
        rng = b["log_uniform"] if log else b
        if not isinstance(rng, list) or len(rng) != 2 or not all(_num(v) for v in rng) or not (
            rng[0] < rng[1] and (not log or rng[0] > 0)
        ):
            raise EdgecError(f"{src}: [params] {name} must be [lo, hi] with lo < hi, or "
                             f"{{log_uniform = [lo, hi]}} with 0 < lo < hi; got {b!r}")
        bounds.append(Bound(name, float(rng[0]), float(rng[1]), log))
    spec = EvolveSpec(src, fitness, bounds, p.resolve().parent)
    spec.plant = str(ev.get("plant", "msd"))
    spec.config = ev.get("config")
    for key, lo in (("population", 4), ("generations", 1)):
        v = ev.get(key, getattr(spec, key))
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise EdgecError(f"{src}: [evolve] {key} must be an integer >= {lo}, got {v!r}")
        setattr(spec, key, v)
    seed = ev.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EdgecError(f"{src}: [evolve] seed must be an integer >= 0, got {seed!r}")
    spec.seed = seed
    for key in ("duration", "sigma"):
        v = ev.get(key, getattr(spec, key))
        if not _num(v) or v <= 0:
            raise EdgecError(f"{src}: [evolve] {key} must be a positive number, got {v!r}")
        setattr(spec, key, float(v))
    if fitness == "pid":
        bad = [b.name for b in bounds if b.name not in PID_KEYS]
        if bad:
            raise EdgecError(f"{src}: fitness \"pid\" evolves {', '.join(PID_KEYS)}; "
                             f"unknown: {', '.join(bad)}")
    if fitness == "mpc" and not isinstance(spec.config, str):
        raise EdgecError(f"{src}: fitness \"mpc\" needs [evolve] config = \"controller.toml\"")
    return spec


# -- fitness functions (built where the task runs; they travel by value) --------------------
@dataclass(frozen=True)
class PidFitness:
    plant: str
    ref: np.ndarray  # the reference for y(t+1), one row per tick
    dt: float

    def __call__(self, params: Mapping[str, float]) -> float:
        from edgec.mpc.pid import imc_pid, run_pid
        from edgec.mpc.plants import make_plant

        plant = make_plant(self.plant, self.dt)
        pid = imc_pid(plant, 8 * self.dt, du_max=math.inf)
        for k, v in params.items():
            setattr(pid, k, float(v))
        ys, _ = run_pid(pid, plant, self.ref)
        err = ys[:, 0] - self.ref[:, 0]
        return float(np.sqrt(np.mean(err**2))) if np.all(np.isfinite(err)) else math.inf


@dataclass(frozen=True)
class MpcFitness:
    job: Any  # edgec.scale.trial.TrialJob

    def __call__(self, params: Mapping[str, float]) -> float:
        from edgec.scale.trial import safe_trial

        return float(safe_trial(self.job, params)["objective"])


@dataclass(frozen=True)
class FileFitness:
    path: str
    attr: str
    text: str  # the module's source: it reaches workers by content

    def __call__(self, params: Mapping[str, float]) -> float:
        fn = _module_attr(self.path, self.attr, self.text)
        return float(fn(dict(params)))


_MODULES: dict[tuple[str, str], Any] = {}


def _module_attr(path: str, attr: str, text: str) -> Any:
    key = (path, text)
    if key not in _MODULES:
        mod = type(sys)(f"edgec_evolve_{abs(hash(key)):x}")
        mod.__file__ = path
        exec(compile(text, path, "exec"), mod.__dict__)  # noqa: S102 - the user's own fitness
        _MODULES[key] = mod
    mod = _MODULES[key]
    if not hasattr(mod, attr):
        raise EdgecError(f"{path}: no function '{attr}'")
    return getattr(mod, attr)


def make_fitness(spec: EvolveSpec) -> Callable[[Mapping[str, float]], float]:
    from edgec.mpc.simulate import default_reference, resample

    if spec.fitness in FITNESS_KINDS:
        if spec.fitness == "pid":
            dt = 0.01
            rows = default_reference(spec.plant, spec.duration, dt)
            ref = resample(rows[:, 0], rows[:, 1:], dt)
            return PidFitness(spec.plant, ref[1:], dt)
        from edgec.scale.space import Param, Space
        from edgec.scale.tune import make_job

        assert spec.config is not None
        cfg_path = spec.base_dir / spec.config
        space = Space(spec.source, tuple(Param(b.name, "uniform", (), b.lo, b.hi)
                                         for b in spec.bounds))
        job, _ = make_job(cfg_path, spec.plant, space, duration=spec.duration)
        return MpcFitness(job)
    file, _, attr = spec.fitness.rpartition(":")
    path = Path(file) if Path(file).is_absolute() else spec.base_dir / file
    if not path.is_file():
        raise EdgecError(f"{spec.source}: fitness file {path} not found")
    _module_attr(str(path), attr, path.read_text())  # fail here, not on a worker
    return FileFitness(str(path), attr, path.read_text())


# -- the strategy ---------------------------------------------------------------------------
def _evaluate_slice(fitness: Callable[[Mapping[str, float]], float], bounds: list[Bound],
                    units: np.ndarray) -> np.ndarray:
    out = np.empty(len(units))
    for i, u in enumerate(units):
        try:
            c = fitness({b.name: b.value(float(x)) for b, x in zip(bounds, u, strict=True)})
        except EdgecError:
            c = math.inf
        out[i] = c if math.isfinite(c) else 1e18
    return out


def sep_es(
    evaluate: BatchFitness, n: int, population: int, generations: int, seed: int,
    sigma: float, mean: np.ndarray | None = None,
    on_generation: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, float, list[float]]:
    """Minimises ``evaluate`` (a batch of unit-box points → costs) from ``mean`` (default: the
    box centre). Returns the best point, its cost and the best cost of each generation."""
    rng = np.random.default_rng(seed)
    m = np.full(n, 0.5) if mean is None else np.asarray(mean, np.float64).copy()
    diag = np.ones(n)
    mu = population // 2
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mu_eff = 1.0 / float((w**2).sum())
    c_s = (mu_eff + 2) / (n + mu_eff + 5)
    d_s = 1 + c_s + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1)
    c_mu = min(1.0, (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff)) * (n + 2) / 3
    chi = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
    p_s = np.zeros(n)
    best_x, best_c, history = m.copy(), math.inf, []
    for g in range(generations):
        z = rng.standard_normal((population, n))
        cand = np.clip(m + sigma * np.sqrt(diag) * z, 0.0, 1.0)
        cost = np.asarray(evaluate(cand), np.float64)
        order = np.argsort(cost, kind="stable")
        if cost[order[0]] < best_c:
            best_c, best_x = float(cost[order[0]]), cand[order[0]].copy()
        history.append(float(cost[order[0]]))
        if on_generation is not None:
            on_generation(g, best_c)
        zs = z[order[:mu]]
        m = np.clip(m + sigma * np.sqrt(diag) * (w @ zs), 0.0, 1.0)
        p_s = (1 - c_s) * p_s + math.sqrt(c_s * (2 - c_s) * mu_eff) * (w @ zs)
        sigma *= math.exp((c_s / d_s) * (float(np.linalg.norm(p_s)) / chi - 1))
        diag = (1 - c_mu) * diag + c_mu * diag * (w @ zs**2)
    return best_x, best_c, history


def ray_evaluator(
    ray: Any, fitness: Callable[[Mapping[str, float]], float], bounds: list[Bound], slices: int
) -> BatchFitness:
    """A batch evaluator that splits each generation into ``slices`` contiguous Ray tasks."""
    remote = ray.remote(num_cpus=1)(_evaluate_slice)
    f_ref = ray.put(fitness)

    def evaluate(units: np.ndarray) -> np.ndarray:
        parts = np.array_split(units, min(slices, len(units)))
        return np.concatenate(ray.get([remote.remote(f_ref, bounds, p) for p in parts]))

    return evaluate


def _call_batch(fn: Callable[..., Any], batch: np.ndarray, **shared: Any) -> Any:
    return fn(batch, **shared)


def ray_batch(
    ray: Any, fn: Callable[..., Any], slices: int, **shared: Any
) -> Callable[[np.ndarray], Any]:
    """``fn(batch, **shared)`` (an array, or a tuple of arrays, with one row per candidate) as
    an evaluator that splits each batch into ``slices`` contiguous Ray tasks and joins the rows
    in order: the same results as one call, so a seeded search stays reproducible. ``shared``
    objects go to Ray's object store once; ``fn``'s module travels by value (user code need not
    be installed on the workers)."""
    mod = sys.modules.get(fn.__module__)
    if mod is not None and fn.__module__ != "__main__" and not fn.__module__.startswith("edgec"):
        ray.cloudpickle.register_pickle_by_value(mod)
    remote = ray.remote(num_cpus=1)(_call_batch)
    refs = {k: ray.put(v) for k, v in shared.items()}

    def evaluate(batch: np.ndarray) -> Any:
        parts = np.array_split(batch, min(slices, len(batch)))
        outs = ray.get([remote.remote(fn, p, **refs) for p in parts])
        if isinstance(outs[0], tuple):
            return tuple(np.concatenate(col) for col in zip(*outs, strict=True))
        return np.concatenate(outs)

    return evaluate


def run_evolve(
    spec: EvolveSpec, address: str | None = None, workers: int | None = None,
    on_generation: Callable[[int, float], None] | None = None, use_ray: bool = True,
) -> EvolveResult:
    fitness = make_fitness(spec)
    n = len(spec.bounds)
    if not use_ray:
        def serial(units: np.ndarray) -> np.ndarray:
            return _evaluate_slice(fitness, spec.bounds, units)

        x, c, hist = sep_es(serial, n, spec.population, spec.generations, spec.seed,
                            spec.sigma, on_generation=on_generation)
    else:
        from edgec.scale.session import cluster_cpus, start

        ray, started = start(address, workers)
        try:
            ev = ray_evaluator(ray, fitness, spec.bounds, cluster_cpus(ray))
            x, c, hist = sep_es(ev, n, spec.population, spec.generations, spec.seed,
                                spec.sigma, on_generation=on_generation)
        finally:
            if started:
                ray.shutdown()
    best = {b.name: b.value(float(u)) for b, u in zip(spec.bounds, x, strict=True)}
    return EvolveResult(best, c, hist, spec.population * spec.generations, spec)
