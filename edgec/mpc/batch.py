"""Batched closed-loop simulation on the host: N independent loops of the generated controller
and a C plant (``firmware/plants``), split over POSIX threads, in one shared library.

Loop i runs the controller (firmware/mpc/edgec_mpc.c + the compiled forward model, its own
``edgec_mpc_t``) against the plant with its own parameters, actuator delay, reference and
measurement-noise seed; everything a loop does is in ``edgec_loop_run`` (firmware/plants/
edgec_loop.c), which also runs one loop per GPU thread (``--device cuda``:
:mod:`edgec.mpc.batch_cuda`, the same draws, references and reports).

- Loop 0 is the nominal loop: the plant's nominal parameters, no delay, the first reference and
  no noise. It is the single-loop ``edgec simulate`` of the same controller and reference.
- ``--vary NAME=LO:HI`` draws parameter NAME of loops 1..N-1 uniformly from [LO, HI]
  (``delay``: an integer number of ticks from LO..HI). Each parameter has its own random stream
  seeded by (seed, parameter), and loop i takes draw i of it, so loop i gets the same plant
  whatever N and whichever other parameters vary.
- References: one for all loops, or a set assigned round-robin (loop i: reference i mod R).

The varied parameters (names, units, valid ranges) are :data:`PLANT_PARAMS`; their nominal
values are the defaults of the Python plants (:mod:`edgec.mpc.plants`), which the C plants
reproduce to rounding (tests/test_batch_sim.py).
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec._package import data_path
from edgec.backend.host import build_cached_library
from edgec.errors import EdgecError
from edgec.mpc.build import CONFIG_HEADER, HOST_FLAGS, RUNTIME_FILES, Controller, runtime_dir
from edgec.mpc.config import MpcConfig
from edgec.mpc.plants import PLANTS, Plant, make_plant

PLANT_FILES = ("edgec_plants.h", "edgec_plants.c", "edgec_loop.h", "edgec_loop.c",
               "edgec_batch_host.c")
PLANT_KIND = {"msd": 0, "soft-actuator": 1}  # EDGEC_PLANT_* in edgec_plants.h
MAX_PARAMS = 8  # EDGEC_PLANT_MAX_PARAMS
DEVICES = ("cpu", "cuda")
MAX_DELAY = 32  # EDGEC_LOOP_MAX_DELAY
#: what a loop scores, in the order of edgec_loop_result_t
RESULT_FIELDS = ("rmse", "max_error", "ticks", "fallbacks", "u_limit", "rate_limit",
                 "no_converge", "mean_iterations", "mean_evaluations")
RESULT_DTYPE = np.dtype([(f, np.float64) for f in RESULT_FIELDS])


@dataclass(frozen=True)
class PlantParam:
    """One parameter a batch may vary: its name (the Python plant's field), unit, meaning and
    the values it may take (``positive``: > 0; ``non_negative``: >= 0; else any real)."""

    name: str
    unit: str
    what: str
    domain: str = "non_negative"

    def check(self, lo: float, hi: float, spec: str) -> None:
        if self.name == "delay":
            if lo != int(lo) or hi != int(hi) or not 0 <= lo <= hi <= MAX_DELAY:
                raise EdgecError(f"--vary '{spec}': delay is a whole number of ticks in "
                                 f"0..{MAX_DELAY} (e.g. delay=0:3)")
        if self.domain == "positive" and lo <= 0:
            raise EdgecError(f"--vary '{spec}': {self.name} ({self.what}) must be > 0")
        if self.domain == "non_negative" and lo < 0:
            raise EdgecError(f"--vary '{spec}': {self.name} ({self.what}) must be >= 0")


_DELAY = PlantParam("delay", "ticks", "actuator delay (whole control ticks)")
#: the parameters of each plant, in the order the C plant takes them (edgec_plants.h), then delay
PLANT_PARAMS: dict[str, tuple[PlantParam, ...]] = {
    "msd": (
        PlantParam("m", "kg", "mass", "positive"),
        PlantParam("c", "N s/m", "damping"),
        PlantParam("k", "N/m", "stiffness"),
        _DELAY,
    ),
    "soft-actuator": (
        PlantParam("inertia", "kg m^2", "inertia of the finger", "positive"),
        PlantParam("damping", "N m s", "damping (friction) of the silicone"),
        PlantParam("k1", "N m/rad", "linear bending stiffness"),
        PlantParam("k3", "N m/rad^3", "cubic stiffening"),
        PlantParam("k_cc", "m", "stiffening by co-contraction"),
        PlantParam("f_max", "N", "largest tendon tension"),
        PlantParam("radius", "m", "tendon moment arm"),
        PlantParam("mgl", "N m", "gravity torque at 0 rad", "any"),
        _DELAY,
    ),
}


def nominal(plant_name: str) -> dict[str, float]:
    """The nominal parameters: the Python plant's defaults (delay 0)."""
    cls = PLANTS[plant_name]
    out = {p.name: float(getattr(cls, p.name)) for p in PLANT_PARAMS[plant_name][:-1]}
    out["delay"] = 0.0
    return out


def parse_vary(items: Sequence[str], plant_name: str) -> dict[str, tuple[float, float]]:
    """``NAME=LO:HI`` strings -> {name: (lo, hi)}; one-line errors naming the valid names."""
    params = {p.name: p for p in PLANT_PARAMS[plant_name]}
    valid = ", ".join(f"{p.name} ({p.unit})" for p in params.values())
    out: dict[str, tuple[float, float]] = {}
    for spec in items:
        name, eq, rng = spec.partition("=")
        name = name.strip()
        if not eq or name not in params:
            what = f"unknown parameter '{name}'" if eq else "expected NAME=LO:HI"
            raise EdgecError(f"--vary '{spec}': {what}; plant '{plant_name}' has: {valid}")
        lo_s, colon, hi_s = rng.partition(":")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            lo = hi = math.nan
        if not colon or not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise EdgecError(f"--vary '{spec}': expected {name}=LO:HI with finite numbers "
                             f"LO <= HI (e.g. {name}=0.5:2)")
        if name in out:
            raise EdgecError(f"--vary '{spec}': {name} is varied twice")
        params[name].check(lo, hi, spec)
        out[name] = (lo, hi)
    return out


@dataclass
class Draws:
    """Per-loop plant parameters, delays, noise levels and seeds of a batch."""

    params: np.ndarray  # (n, MAX_PARAMS) float64, in the C plant's order
    delay: np.ndarray  # (n,) int32
    noise: np.ndarray  # (n,) float64: measurement noise std
    seed: np.ndarray  # (n,) uint64: noise seeds

    def loop_params(self, plant_name: str, i: int) -> dict[str, float]:
        names = [p.name for p in PLANT_PARAMS[plant_name][:-1]]
        out = {n: float(v) for n, v in zip(names, self.params[i], strict=False)}
        out["delay"] = float(self.delay[i])
        return out


def check_batch_args(n: int, threads: int | None, noise: float) -> None:
    if n < 1:
        raise EdgecError(f"--batch {n}: needs at least 1 loop")
    if threads is not None and threads < 1:
        raise EdgecError(f"--threads {threads}: needs at least 1 thread")
    if not (math.isfinite(noise) and noise >= 0):
        raise EdgecError(f"--noise {noise}: the noise level must be finite and >= 0")


def draw(plant_name: str, n: int, vary: dict[str, tuple[float, float]], seed: int,
         noise: float = 0.0) -> Draws:
    """The batch's loops: loop 0 nominal and noise-free, loops 1.. drawn (see the module doc)."""
    check_batch_args(n, None, noise)
    names = [p.name for p in PLANT_PARAMS[plant_name]]
    nom = nominal(plant_name)
    params = np.zeros((n, MAX_PARAMS), np.float64)
    delay = np.zeros(n, np.int32)
    for j, name in enumerate(names):
        col = np.full(n, nom[name])
        if name in vary:
            lo, hi = vary[name]
            rng = np.random.default_rng([seed, j])
            if name == "delay":
                col = rng.integers(int(lo), int(hi) + 1, size=n).astype(np.float64)
            else:
                col = rng.uniform(lo, hi, size=n)
            col[0] = nom[name]
        if name == "delay":
            delay = col.astype(np.int32)
        else:
            params[:, j] = col
    seeds = np.random.default_rng([seed, 1000]).integers(0, 2**63, size=n, dtype=np.uint64)
    noise_col = np.full(n, float(noise))
    noise_col[0] = 0.0
    return Draws(params, delay, noise_col, seeds)


# -- the shared library ---------------------------------------------------------------------
_DP = ctypes.POINTER(ctypes.c_double)
_IP = ctypes.POINTER(ctypes.c_int)


class _Spec(ctypes.Structure):
    """edgec_loop_spec_t (firmware/plants/edgec_loop.h)."""

    _fields_ = [
        ("plant", ctypes.c_int),
        ("substeps", ctypes.c_int),
        ("dt", ctypes.c_double),
        ("u_min", _DP),
        ("u_max", _DP),
        ("params", _DP),
        ("delay", _IP),
        ("ref_index", _IP),
        ("seed", ctypes.POINTER(ctypes.c_ulonglong)),
        ("noise", _DP),
        ("refs", _DP),
        ("ref_first", _IP),
        ("ref_rows", _IP),
    ]


def plant_sources() -> dict[str, str]:
    d = data_path("firmware/plants/edgec_loop.c").parent
    return {f: (d / f).read_text() for f in PLANT_FILES}


def build_batch_library(ctrl: Controller) -> Path:
    """The controller (compiled as its single-loop host library is: the same flags) + the C
    plants + the loop + the thread driver, one shared library cached by content hash."""
    files = {
        f"{ctrl.model.name}.h": ctrl.model.c_header,
        f"{ctrl.model.name}.c": ctrl.model.c_source,
        CONFIG_HEADER: ctrl.header,
        **{f: (runtime_dir() / f).read_text() for f in RUNTIME_FILES},
        **plant_sources(),
    }
    sources = [*ctrl.c_sources(), "edgec_plants.c", "edgec_loop.c", "edgec_batch_host.c"]
    return build_cached_library(
        f"batch-{ctrl.cfg.name}", files, sources, (*HOST_FLAGS, "-pthread"),
        f"the batched simulator of '{ctrl.cfg.name}'",
    )


@dataclass
class Reference:
    name: str
    rows: np.ndarray  # (ticks + 1, ny) at the control rate; tick k targets rows[k + 1]


@dataclass
class BatchLibrary:
    """The batch library loaded, with one batch's inputs kept alive for the C side. This is the
    host library (``device`` cpu: loops over POSIX threads); :class:`edgec.mpc.batch_cuda.
    CudaBatchLibrary` runs the same loops on a GPU through the hooks ``_bind``, ``_loaded``,
    ``_run_slice`` and ``_trace_loop``."""

    cfg: MpcConfig
    plant: Plant
    path: Path
    lib: Any = None
    _keep: list[Any] = field(default_factory=list)
    device = "cpu"

    def __post_init__(self) -> None:
        self.lib = ctypes.CDLL(str(self.path))
        layout = (ctypes.c_long * 8)()
        self.lib.edgec_batch_layout(layout)
        want = (ctypes.sizeof(_Spec), RESULT_DTYPE.itemsize, 3 + 2 * self.cfg.commands,
                MAX_DELAY, self.cfg.commands, self.cfg.outputs, MAX_PARAMS,
                int(self.cfg.horizon_mode))
        if tuple(layout) != want:  # pragma: no cover - the C and this file disagree
            raise EdgecError(f"batch library {self.path.name}: layout {tuple(layout)} is not "
                             f"the expected {want}: edgec installation is inconsistent")
        self._bind()
        self.spec: _Spec | None = None
        self.n = 0
        self.refs: list[Reference] = []
        self.ref_index = np.zeros(0, np.int32)

    def _bind(self) -> None:
        self.lib.edgec_batch_run.argtypes = [ctypes.POINTER(_Spec), ctypes.c_int, ctypes.c_int,
                                             ctypes.c_int, ctypes.c_void_p]
        self.lib.edgec_batch_run.restype = ctypes.c_int
        self.lib.edgec_batch_trace.argtypes = [ctypes.POINTER(_Spec), ctypes.c_int,
                                               ctypes.c_void_p, _DP]
        self.lib.edgec_batch_trace.restype = ctypes.c_int
        self.lib.edgec_batch_plant_rollout.argtypes = [
            ctypes.c_int, _DP, _DP, _DP, ctypes.c_double, ctypes.c_int, ctypes.c_int, _DP, _DP]
        self.lib.edgec_batch_plant_rollout.restype = None

    def _arr(self, a: np.ndarray, dtype: Any, ctype: Any) -> Any:
        a = np.ascontiguousarray(a, dtype)
        self._keep.append(a)
        return a.ctypes.data_as(ctypes.POINTER(ctype))

    def load(self, draws: Draws, refs: Sequence[Reference]) -> None:
        """Sets the batch up: per-loop draws, references round-robin."""
        n = len(draws.delay)
        self._keep = []
        self.refs = list(refs)
        self.ref_index = (np.arange(n) % len(refs)).astype(np.int32)
        rows = np.array([len(r.rows) for r in refs], np.int32)
        first = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int32)
        stacked = np.concatenate([r.rows.reshape(len(r.rows), -1) for r in refs], axis=0)
        c_double, c_int = ctypes.c_double, ctypes.c_int
        self.spec = _Spec(
            PLANT_KIND[self.plant.name], self.plant.substeps, self.cfg.dt,
            self._arr(np.array(self.plant.u_min), np.float64, c_double),
            self._arr(np.array(self.plant.u_max), np.float64, c_double),
            self._arr(draws.params, np.float64, c_double),
            self._arr(draws.delay, np.int32, c_int),
            self._arr(self.ref_index, np.int32, c_int),
            self._arr(draws.seed, np.uint64, ctypes.c_ulonglong),
            self._arr(draws.noise, np.float64, c_double),
            self._arr(stacked, np.float64, c_double),
            self._arr(first, np.int32, c_int),
            self._arr(rows, np.int32, c_int),
        )
        self.n = n
        self._loaded(len(refs), int(rows.sum()))

    def _loaded(self, n_refs: int, n_rows: int) -> None:
        """The batch is set up (the host library reads the spec where it lies)."""

    def ticks(self, i: int) -> int:
        return len(self.refs[int(self.ref_index[i])].rows) - 1

    def slice_size(self, threads: int) -> int:
        """Loops per call of the library (a progress bar advances between calls)."""
        return max(64 * threads, -(-self.n // 50))

    def run(self, threads: int, label: str = "") -> np.ndarray:
        """Every loop's result (structured array, :data:`RESULT_DTYPE`); ``label``: a progress
        bar with it on stderr (a terminal only)."""
        from edgec.tables import progress

        assert self.spec is not None
        out = np.zeros(self.n, RESULT_DTYPE)
        step = self.slice_size(threads)
        chunks = [(a, min(step, self.n - a)) for a in range(0, self.n, step)]
        for first, count in progress(chunks, label) if label else chunks:
            self._check(self._run_slice(first, count, threads, out))
        return out

    def _run_slice(self, first: int, count: int, threads: int, out: np.ndarray) -> int:
        return int(self.lib.edgec_batch_run(ctypes.byref(self.spec), first, count, threads,
                                            out.ctypes.data))

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise EdgecError("the batched simulator ran out of memory")

    def trace(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Loop i again, alone, recording: (its result, rows (ticks, 3 + 2 NU) of y, applied
        command, controller command, flags, iterations)."""
        assert self.spec is not None
        res = np.zeros(1, RESULT_DTYPE)
        tr = np.zeros((self.ticks(i), 3 + 2 * self.cfg.commands), np.float64)
        self._check(self._trace_loop(i, res, tr))
        return res[0], tr

    def _trace_loop(self, i: int, res: np.ndarray, tr: np.ndarray) -> int:
        return int(self.lib.edgec_batch_trace(ctypes.byref(self.spec), i, res.ctypes.data,
                                              tr.ctypes.data_as(_DP)))

    def plant_rollout(self, params: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The C plant alone from rest under commands u (k, nu): states (k + 1, 2)."""
        u = np.ascontiguousarray(u, np.float64).reshape(len(u), -1)
        p = np.zeros(MAX_PARAMS)
        p[: len(params)] = params
        x = np.zeros((len(u) + 1, 2))
        lo = np.array(self.plant.u_min, np.float64)
        hi = np.array(self.plant.u_max, np.float64)
        self.lib.edgec_batch_plant_rollout(
            PLANT_KIND[self.plant.name], p.ctypes.data_as(_DP), lo.ctypes.data_as(_DP),
            hi.ctypes.data_as(_DP), self.plant.dt, self.plant.substeps, len(u),
            u.ctypes.data_as(_DP), x.ctypes.data_as(_DP))
        return x


def check_batch_plant(cfg: MpcConfig, plant_name: str) -> Plant:
    """The plant, after the checks the single-loop simulator makes plus the batch's own."""
    from edgec.mpc.simulate import _check_plant

    plant = make_plant(plant_name, cfg.dt)
    _check_plant(cfg, plant)
    if cfg.outputs != 1 or cfg.sensors != 0:
        raise EdgecError(
            f"{cfg.source}: the batched simulator tracks the plant's one measured output "
            f"without extra sensors (the config has {cfg.outputs} output(s), "
            f"{cfg.sensors} sensor(s))"
        )
    return plant


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class BatchRun:
    """A finished batch: what ran and what each loop scored."""

    plant_name: str
    draws: Draws
    vary: dict[str, tuple[float, float]]
    seed: int
    threads: int
    results: np.ndarray
    seconds: float
    library: BatchLibrary

    @property
    def loop_ticks(self) -> int:
        return int(self.results["ticks"].sum())


def run_batch(lib: BatchLibrary, n: int, vary: dict[str, tuple[float, float]],
              refs: Sequence[Reference], seed: int = 0, threads: int | None = None,
              noise: float = 0.0, label: str = "") -> BatchRun:
    if not refs:
        raise EdgecError("the batch needs at least one reference")
    check_batch_args(n, threads, noise)
    threads = default_threads() if threads is None else threads
    draws = draw(lib.plant.name, n, vary, seed, noise)
    lib.load(draws, refs)
    t0 = time.perf_counter()
    results = lib.run(threads, label)
    secs = time.perf_counter() - t0
    return BatchRun(lib.plant.name, draws, vary, seed, threads, results, secs, lib)


# -- references -----------------------------------------------------------------------------
def reference_from_rows(name: str, t: np.ndarray, ref: np.ndarray, cfg: MpcConfig) -> Reference:
    from edgec.mpc.simulate import resample

    rows = resample(t, ref, cfg.dt)
    if len(rows) < 2:
        raise EdgecError(f"{name}: the reference is shorter than one control tick")
    return Reference(name, rows)


def _load_npz(path: Path, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.load(path)
        keys = set(data.files)
        t = np.asarray(data["t"], np.float64) if "t" in keys else None
        ref = np.asarray(data["ref"], np.float64) if "ref" in keys else None
    except (OSError, ValueError) as exc:
        raise EdgecError(f"{path}: cannot read the reference npz ({exc})") from None
    if t is None or ref is None:
        raise EdgecError(f"{path}: a reference npz holds arrays 't' (times) and 'ref' "
                         f"(values), it has {sorted(keys)}")
    ref = ref.reshape(len(ref), -1) if ref.ndim else ref.reshape(1, 1)
    if t.ndim != 1 or len(t) != len(ref) or ref.shape[1] != n_outputs or len(t) < 2:
        raise EdgecError(f"{path}: expected 't' of T >= 2 times and 'ref' of shape (T,) or "
                         f"(T, {n_outputs}), got {t.shape} and {ref.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(ref)) and np.all(np.diff(t) > 0)):
        raise EdgecError(f"{path}: times must increase and every value must be finite")
    return t, ref


def load_reference_set(directory: str | Path, cfg: MpcConfig) -> list[Reference]:
    """Every ``*.csv`` (the single-loop format) and ``*.npz`` (arrays ``t`` and ``ref``) in the
    directory, in name order."""
    from edgec.mpc.simulate import load_reference

    d = Path(directory)
    if not d.is_dir():
        raise EdgecError(f"--reference-set {d}: not a directory")
    files = sorted(p for p in d.iterdir() if p.suffix in (".csv", ".npz") and p.is_file())
    if not files:
        raise EdgecError(f"--reference-set {d}: no .csv or .npz references in it")
    out = []
    for p in files:
        t, ref = (_load_npz(p, cfg.outputs) if p.suffix == ".npz"
                  else load_reference(p, cfg.outputs))
        out.append(reference_from_rows(p.name, t, ref, cfg))
    return out
