"""Search spaces for ``edgec tune``: a TOML file naming config keys by their dotted path.

```toml
["solver.du_weight"]
log_uniform = [1e-7, 1e-4]        # lo > 0; sampled uniformly in log space
["control.horizon"]
values = [5, 10]                  # a grid (any TOML values)
["solver.damping"]
uniform = [1e-4, 1e-2]

[objective]                       # optional: the penalties added to the tracking RMSE
fallback_weight = 1.0             # objective = rmse * (1 + fallback_weight * fallbacks / ticks
limit_weight = 1.0                #                      + limit_weight * limit_hits / ticks)
```

Keys may come from the config's ``[limits]``, ``[solver]`` and ``[control]`` sections (the
forward model and its mapping are fixed by the config). Integer keys (``control.horizon``,
``solver.max_iterations``) sampled from a range are rounded to integers.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TUNABLE_SECTIONS = ("limits", "solver", "control")
INTEGER_KEYS = frozenset({"control.horizon", "solver.max_iterations"})
KINDS = ("values", "uniform", "log_uniform")
OBJECTIVE_KEYS = ("fallback_weight", "limit_weight")


@dataclass(frozen=True)
class Param:
    key: str  # "section.name"
    kind: str  # values | uniform | log_uniform
    values: tuple[Any, ...] = ()
    lo: float = 0.0
    hi: float = 0.0

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "values":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "uniform":
            v = float(rng.uniform(self.lo, self.hi))
        else:
            v = float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))
        return self.cast(v)

    def cast(self, v: Any) -> Any:
        if self.key in INTEGER_KEYS and isinstance(v, float):
            return int(round(v))
        return v


@dataclass(frozen=True)
class Space:
    source: str
    params: tuple[Param, ...]
    fallback_weight: float = 1.0
    limit_weight: float = 1.0
    text: str = field(default="", compare=False)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def is_grid(self) -> bool:
        return all(p.kind == "values" for p in self.params)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination, the last key varying fastest."""
        if not self.is_grid:
            ranged = [p.key for p in self.params if p.kind != "values"]
            raise EdgecError(
                f"{self.source}: --search grid needs values = [...] for every key; "
                f"{', '.join(ranged)} {'is a range' if len(ranged) == 1 else 'are ranges'} "
                f"(use --search random or optuna)"
            )
        combos = itertools.product(*(p.values for p in self.params))
        return [dict(zip(self.keys, c, strict=True)) for c in combos]

    def random(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` points drawn from a generator seeded with ``seed`` (the same list every time,
        so a resumed run knows which points it has already tried)."""
        rng = np.random.default_rng(seed)
        return [{p.key: p.sample(rng) for p in self.params} for _ in range(n)]


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def space_from_dict(data: Mapping[str, Any], source: str = "<space>", text: str = "") -> Space:
    params: list[Param] = []
    weights = {k: 1.0 for k in OBJECTIVE_KEYS}
    for key, spec in data.items():
        if key == "objective":
            if not isinstance(spec, Mapping):
                raise EdgecError(f"{source}: [objective] must be a table")
            for k, v in spec.items():
                if k not in OBJECTIVE_KEYS:
                    raise EdgecError(
                        f"{source}: [objective] unknown key {k} "
                        f"(known: {', '.join(OBJECTIVE_KEYS)})"
                    )
                if not _number(v) or v < 0:
                    raise EdgecError(f"{source}: [objective] {k} must be a number >= 0, got {v!r}")
                weights[k] = float(v)
            continue
        section, dot, name = key.partition(".")
        if not dot or not name:
            raise EdgecError(
                f"{source}: [{key}]: name a config key by its dotted path, e.g. "
                f"[\"solver.du_weight\"] (or [objective] for the penalty weights)"
            )
        if section not in TUNABLE_SECTIONS:
            raise EdgecError(
                f"{source}: [\"{key}\"]: only keys of [{'], ['.join(TUNABLE_SECTIONS)}] can be "
                f"tuned (the model and its mapping are fixed by the config)"
            )
        if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise EdgecError(
                f"{source}: [\"{key}\"] needs exactly one of values = [...], uniform = [lo, hi] "
                f"or log_uniform = [lo, hi]"
            )
        kind, val = next(iter(spec.items()))
        if kind == "values":
            if not isinstance(val, list) or not val:
                raise EdgecError(f"{source}: [\"{key}\"] values must be a non-empty list")
            params.append(Param(key, kind, tuple(val)))
            continue
        if not isinstance(val, list) or len(val) != 2 or not all(_number(v) for v in val):
            raise EdgecError(f"{source}: [\"{key}\"] {kind} must be [lo, hi], got {val!r}")
        lo, hi = float(val[0]), float(val[1])
        if not lo < hi or (kind == "log_uniform" and lo <= 0):
            need = "0 < lo < hi" if kind == "log_uniform" else "lo < hi"
            raise EdgecError(f"{source}: [\"{key}\"] {kind} = {val}: needs {need}")
        params.append(Param(key, kind, (), lo, hi))
    if not params:
        raise EdgecError(f"{source}: the space names no config keys (e.g. [\"solver.du_weight\"])")
    return Space(source, tuple(params), weights["fallback_weight"], weights["limit_weight"], text)


def load_space(path: str | Path) -> Space:
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such space file")
    text = p.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgecError(f"{p}: not valid TOML ({exc})") from None
    return space_from_dict(data, str(p), text)


def apply_params(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw config (TOML tables) with ``params`` ("section.key" → value) set."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    for key, value in params.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise EdgecError(f"cannot write the non-finite number {f} to TOML")
        return repr(f)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise EdgecError(f"cannot write {type(v).__name__} {v!r} to TOML")


def dump_toml(data: Mapping[str, Any], header: str = "") -> str:
    """Plain values first, then one ``[section]`` per table (the MPC config's shape)."""
    lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    for k, v in data.items():
        if not isinstance(v, Mapping):
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"
