"""Calibration: the input sets, and the range of every float tensor over them.

Input sets follow the rule every edgec command uses for inputs: per input name an array of the
input's shape (one set), with a leading axis N (N sets), or for an input whose first dimension is
1, (N, ...) without the 1. Sources: a ``.npz`` path keyed by input name (``.npy`` for a
one-input model), a mapping name → array, a sequence of such mappings (one per set), or for a
one-input model one array (numpy or torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops.interpret import observe_runs, run_node

RULE = ("per input an array of its shape (one set) or with a leading axis N (N sets); a batch-1 "
        "input also takes (N, ...) without the 1")


def _load(source: Any, names: list[str]) -> tuple[str, dict[str, np.ndarray]]:
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise EdgecError(f"--calibration {p}: no such file")
        try:
            data = np.load(p)
        except ValueError:  # numpy's message for a non-numpy file offers allow_pickle
            raise EdgecError(f"--calibration {p}: not a .npy or .npz file (numpy.save / "
                             f"numpy.savez)") from None
        except Exception as exc:
            raise EdgecError(f"--calibration {p}: cannot read it as .npz/.npy ({exc})") from None
        if isinstance(data, np.ndarray):
            if len(names) != 1:
                raise EdgecError(f"{p}: a .npy holds one array; the model has inputs "
                                 f"{', '.join(names)}: use an .npz keyed by input name")
            return str(p), {names[0]: data}
        missing = [n for n in names if n not in data.files]
        if missing:
            raise EdgecError(f"{p}: calibration lacks input(s) {', '.join(missing)}; it holds "
                             f"{', '.join(data.files) or 'nothing'}")
        return str(p), {n: data[n] for n in names}
    if isinstance(source, Mapping):
        missing = [n for n in names if n not in source]
        if missing:
            raise EdgecError(f"calibration lacks input(s) {', '.join(missing)}")
        return "calibration", {n: np.asarray(source[n]) for n in names}
    if isinstance(source, np.ndarray) or type(source).__name__ in ("Tensor", "EagerTensor"):
        # one array for a one-input model, as a .npy file gives it
        if len(names) != 1:
            raise EdgecError(f"calibration: one array for a model with inputs "
                             f"{', '.join(names)}: give a dict keyed by input name")
        return "calibration", {names[0]: np.asarray(source)}
    if isinstance(source, Sequence) and source and not isinstance(source, (str, bytes)):
        sets = [s if isinstance(s, Mapping) else {names[0]: s} for s in source]
        stacked = {}
        for n in names:
            if any(n not in s for s in sets):
                raise EdgecError(f"calibration: a set lacks input '{n}'")
            arrs = [np.asarray(s[n]) for s in sets]
            if len({a.shape for a in arrs}) != 1:
                raise EdgecError(f"calibration: the sets give input '{n}' different shapes")
            stacked[n] = np.stack(arrs)
        return "calibration", stacked
    raise EdgecError(f"calibration: expected an .npz path, a dict of arrays, a list of input "
                     f"sets or (one-input model) an array, got {type(source).__name__}")


def calibration_sets(source: Any, g: Graph) -> list[dict[str, np.ndarray]]:
    """The calibration input sets for graph ``g`` (one-line errors for missing data and wrong
    shapes)."""
    if source is None:
        raise EdgecError("int8 quantization needs calibration data: input sets that exercise "
                         "the model (--calibration data.npz, or calibration=...)")
    names = [i for i in g.inputs if i not in {s for s, _ in g.state}]
    where, raw = _load(source, names)
    arrays: dict[str, np.ndarray] = {}
    for n in names:
        v, shape = np.asarray(raw[n], np.float32), g.shape(n)
        if v.shape == shape:
            v = v[None]
        elif v.ndim == len(shape) + 1 and v.shape[1:] == shape:
            pass
        elif shape and shape[0] == 1 and v.ndim == len(shape) and v.shape[1:] == shape[1:]:
            v = v[:, None]
        else:
            raise EdgecError(f"{where}: input '{n}' has shape {v.shape}; the model expects "
                             f"{shape} ({RULE})")
        arrays[n] = v
    counts = sorted({v.shape[0] for v in arrays.values()})
    if len(counts) != 1 or counts[0] == 0:
        raise EdgecError(f"{where}: the inputs hold different or zero numbers of sets {counts}")
    zeros = {a: np.zeros(g.shape(a), np.float32) for a, _ in g.state}
    return [{**zeros, **{k: v[i] for k, v in arrays.items()}} for i in range(counts[0])]


@dataclass
class Ranges:
    """Per float tensor: min and max over the calibration sets (or the given percentiles);
    ``bodies``: the same for the body of each Scan node (by node name), over every iteration
    of every set."""

    lo: dict[str, float]
    hi: dict[str, float]
    bodies: dict[str, Ranges] = field(default_factory=dict)


def run_all(g: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor's value on one input set (the numpy interpreter, keeping intermediates)."""
    values: dict[str, np.ndarray] = {t.name: t.data for t in g.tensors.values()
                                     if t.data is not None}
    for name in g.inputs:
        values[name] = np.asarray(feeds[name], g.tensor(name).dtype).reshape(g.shape(name))
    for node in g.nodes:
        for name, val in zip(node.outputs, run_node(node, g, values), strict=False):
            if name:
                values[name] = np.asarray(val)
    return values


class _Seen:
    """The values one graph (the model or a loop body) gave its float tensors so far."""

    def __init__(self, g: Graph, keep: bool):
        self.names = list(g.inputs) + [o for n in g.nodes for o in n.outputs
                                       if o and g.tensor(o).dtype == "float32"
                                       and g.const(o) is None]
        self.keep = keep
        self.parts: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        self.ranges = Ranges({}, {})

    def add(self, values: Mapping[str, np.ndarray]) -> None:
        lo, hi = self.ranges.lo, self.ranges.hi
        for n in self.names:
            if n not in values:
                continue
            v = np.asarray(values[n], np.float32).reshape(-1)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            if self.keep:
                self.parts[n].append(v)
            lo[n] = min(lo.get(n, np.inf), float(v.min()))
            hi[n] = max(hi.get(n, -np.inf), float(v.max()))

    def finish(self, percentile: float) -> None:
        if self.keep:
            for n, parts in self.parts.items():
                if parts:
                    allv = np.concatenate(parts)
                    self.ranges.lo[n] = float(np.percentile(allv, 100.0 - percentile))
                    self.ranges.hi[n] = float(np.percentile(allv, percentile))


def _body_seen(g: Graph, keep: bool, seen: dict[int, _Seen]) -> dict[str, Ranges]:
    """A _Seen per loop body of ``g`` (nested ones too), keyed by the body graph's id; returns
    the Scan node name → body ranges tree."""
    out: dict[str, Ranges] = {}
    for n in g.nodes:
        body = n.attrs.get("body") if n.op == "Scan" else None
        if isinstance(body, Graph):
            s = seen[id(body)] = _Seen(body, keep)
            s.ranges.bodies = _body_seen(body, keep, seen)
            out[n.name] = s.ranges
    return out


def collect_ranges(g: Graph, sets: Sequence[Mapping[str, np.ndarray]], method: str = "minmax",
                   percentile: float = 99.99) -> Ranges:
    """Ranges of the graph inputs and every float node output over ``sets``: ``minmax`` or
    ``percentile`` (the ``100 - p`` and ``p`` percentiles of all values seen). A loop body's
    tensors (``Ranges.bodies``) range over every iteration: the interpreter reports each run
    of a body (``ops.interpret.observe_runs``)."""
    if method not in ("minmax", "percentile"):
        raise EdgecError(f"calibration method '{method}': use minmax or percentile")
    if method == "percentile" and not 50.0 < percentile <= 100.0:
        raise EdgecError(f"calibration percentile {percentile}: must lie in (50, 100]")
    keep = method == "percentile"
    top = _Seen(g, keep)
    seen: dict[int, _Seen] = {}
    top.ranges.bodies = _body_seen(g, keep, seen)

    def observe(graph: Graph, values: Mapping[str, np.ndarray]) -> None:
        s = seen.get(id(graph))
        if s is not None:
            s.add(values)

    with observe_runs(observe):
        for feeds in sets:
            top.add(run_all(g, feeds))
    for s in (top, *seen.values()):
        s.finish(percentile)
    return top.ranges
