"""Run the compiled C and the reference on the same input sets; compare within tolerances.

An output element passes when ``|C - reference| <= atol + rtol * |reference|`` (numpy's
``allclose``): ``atol`` is the floor for values near zero, ``rtol`` scales with the value.

On the host each input set is one independent call (a stateful model's state inputs are fed
with the rest; state the reference keeps inside a torch module starts afresh). On a target the
input sets of a stateful model are one sequence from the initial state, the reference carrying
its state outputs into its state inputs, and the step outputs are compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.backend.c_emit import Port
from edgec.errors import EdgecError
from edgec.mcu.model import CompiledLike
from edgec.verify.reference import Reference, make_reference

TOLERANCE_RULE = "|C - reference| <= atol + rtol * |reference|"
DEFAULT_ATOL = 1e-5


@dataclass
class OutputCheck:
    name: str
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    passed: int = 0
    total: int = 0
    #: an int8 output: compared bit for bit, not within the tolerances
    exact: bool = False
    #: this output's own atol floor: 2 LSB of a dequantized int8 output against onnxruntime
    atol: float | None = None

    @property
    def ok(self) -> bool:
        return self.passed == self.total


@dataclass
class VerifyReport:
    model: str
    where: str
    reference: str
    n_sets: int
    rtol: float
    atol: float
    sequence: bool
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def __bool__(self) -> bool:
        return self.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "where": self.where, "reference": self.reference,
            "input_sets": self.n_sets, "sequence": self.sequence,
            "rtol": self.rtol, "atol": self.atol, "rule": TOLERANCE_RULE,
            "outputs": [
                {"name": o.name, "max_abs_err": o.max_abs_err, "max_rel_err": o.max_rel_err,
                 "within_tol": o.passed, "total": o.total, "pass": o.ok, "exact": o.exact,
                 "atol": self.atol if o.atol is None else o.atol}
                for o in self.outputs
            ],
            "pass": self.ok,
        }

    def format(self, source: str | None = None) -> str:
        from edgec.tables import format_table

        how = "one sequence of" if self.sequence else ""
        head = (
            f"verify {source or self.model}: edgec C ({self.where}) vs {self.reference}, "
            f"{how + ' ' if how else ''}{self.n_sets} input set(s)"
        )
        rows = [
            [o.name + (" (int8, exact)" if o.exact else ""), f"{o.max_abs_err:.3g}",
             f"{o.max_rel_err:.3g}", f"{o.passed}/{o.total}", "PASS" if o.ok else "FAIL"]
            for o in self.outputs
        ]
        table = format_table(
            ["output", "max abs err", "max rel err", "within tol", "result"], rows, align="lrrrl"
        )
        rule = (
            f"an element passes when {TOLERANCE_RULE} (rtol={self.rtol:g}, atol={self.atol:g}): "
            "atol is the floor near zero, rtol scales with the value; 'max rel err' is the "
            "largest |C - reference| / |reference|"
        )
        if any(o.exact for o in self.outputs):
            rule += "; int8 outputs must equal the reference bit for bit"
        lsb = [f"{o.name} atol={o.atol:g}" for o in self.outputs if o.atol is not None]
        if lsb:
            rule += (f"; dequantized int8 outputs: 2 LSB ({', '.join(lsb)}), as edgec rounds "
                     "like TFLite and onnxruntime's int8 kernels may differ by up to 2 LSB")
        return "\n".join([head, table, rule, "PASS" if self.ok else "FAIL"])


def verify_ports(cm: CompiledLike, ref: Reference, target: Any) -> list[Port]:
    """The inputs an input set holds: on the host those the reference takes, on a target those
    ``<name>_step`` takes (all of them for a stateless model)."""
    if target is not None:
        return [p for p in cm.cmodel.inputs if not p.state]
    return [p for p in cm.cmodel.inputs if p.name in ref.inputs]


def random_sets(ports: Sequence[Port], n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` input sets from ``seed``: standard-normal floats, uniform codes for int8 ports,
    uniform indices into the table an int32 port indexes."""
    rng = np.random.default_rng(seed)

    def draw(p: Port) -> np.ndarray:
        if p.np_dtype is np.float32:
            return rng.standard_normal(p.shape).astype(np.float32)
        if p.dtype == "int32":  # indices inside the table they index (TFLite: an error outside)
            return rng.integers(0, p.index_bound or 1, p.shape, dtype=np.int32)
        return rng.integers(-128, 128, p.shape, dtype=np.int8)

    return [{p.name: draw(p) for p in ports} for _ in range(n)]


def verify(
    cm: Any,
    source: Any = None,
    inputs: Sequence[Mapping[str, np.ndarray]] | None = None,
    n: int = 20,
    seed: int = 0,
    rtol: float = 1e-4,
    atol: float | None = None,
    target: Any = None,
    reference: Reference | None = None,
    timeout_s: float = 300.0,
) -> VerifyReport:
    """Compare ``cm`` (a compiled model) with its ``source`` run by its own framework.

    ``inputs``: input sets (dicts by input name, see :func:`verify_ports`); default ``n``
    standard-normal sets from ``seed``. ``target``: a target name or :class:`Target` to run the
    C on (its emulated board, or its core's emulated twin), else the host. ``atol``: default
    1e-5, and 2 LSB for an output dequantized from int8 when the reference is onnxruntime."""
    given_atol = atol is not None
    atol = DEFAULT_ATOL if atol is None else atol
    if inputs is None and n < 1:
        raise EdgecError(f"verify needs at least one input set (n={n})")
    if rtol < 0 or atol < 0:
        raise EdgecError(f"tolerances must be >= 0 (rtol={rtol:g}, atol={atol:g})")
    ref = reference or make_reference(cm, source)
    tgt = None
    if target is not None:
        from edgec.mcu.targets import Target, load_target

        tgt = target if isinstance(target, Target) else load_target(str(target))
    ports = verify_ports(cm, ref, tgt)
    sets = [dict(s) for s in inputs] if inputs is not None else random_sets(ports, n, seed)
    if not sets:
        raise EdgecError("verify needs at least one input set")
    for k, s in enumerate(sets):
        missing = [p.name for p in ports if p.name not in s]
        if missing:
            raise EdgecError(f"input set {k}: missing {', '.join(missing)}")
    names = cm.output_names
    checks = {o: OutputCheck(o) for o in ref.outputs}
    if not given_atol and ref.label == "onnxruntime":
        for o, scale in dequantized_outputs(cm).items():
            if o in checks:
                checks[o].atol = max(atol, 2.0 * scale)
    sequence = tgt is not None and cm.is_stateful
    if tgt is None:
        from edgec.tables import progress

        init = cm.initial_state()
        for feeds in progress(sets, "verify"):
            full = {p.name: feeds.get(p.name, init.get(p.name)) for p in cm.cmodel.inputs}
            got = cm.run(**full)
            got = got if isinstance(got, list) else [got]
            exp = ref(feeds, fresh=True)
            _compare(checks, dict(zip(names, got, strict=True)), ref.outputs, exp, rtol, atol)
        where = "host"
    else:
        from edgec.mcu.run import run_on_target
        from edgec.mcu.targets import emulated_twin
        from edgec.tables import status

        twin = emulated_twin(tgt)
        where = f"{tgt.name}, QEMU" + (
            f" on its twin {twin.name}" if twin is not None and twin is not tgt else ""
        )
        step_out = [p.name for p in cm.cmodel.outputs if not p.state]
        vectors = [[s[p.name] for p in ports] for s in sets]
        with status(f"running {len(sets)} input set(s) on {where}"):
            boards = run_on_target(cm, tgt, vectors, timeout_s=timeout_s)
        state = cm.initial_state()
        pairs = list(cm.cmodel.state)
        for k, (feeds, board) in enumerate(zip(sets, boards, strict=True)):
            fresh = not sequence or k == 0
            full = dict(feeds) | {s: v for s, v in state.items() if s in ref.inputs}
            exp = ref(full, fresh=fresh)
            by_name = dict(zip(ref.outputs, exp, strict=True))
            for s_in, s_out in pairs:
                if s_out in by_name:
                    state[s_in] = np.asarray(by_name[s_out], np.float32).reshape(
                        state[s_in].shape
                    )
            got = dict(zip(step_out, board, strict=True))
            outs = [o for o in ref.outputs if o in got]
            for o in list(checks):
                if o not in got:
                    del checks[o]
            _compare(checks, got, outs, [by_name[o] for o in outs], rtol, atol)
    return VerifyReport(
        model=cm.name, where=where, reference=ref.label, n_sets=len(sets), rtol=rtol, atol=atol,
        sequence=sequence, outputs=list(checks.values()),
    )


def _compare(
    checks: dict[str, OutputCheck], got: Mapping[str, np.ndarray], names: Sequence[str],
    expected: Sequence[np.ndarray], rtol: float, atol: float,
) -> None:
    for o, e_ in zip(names, expected, strict=True):
        if o not in checks:
            continue
        exact = np.asarray(got[o]).dtype.kind in "iu"  # int8 outputs must be bit-exact
        g_ = np.asarray(got[o], np.float32)
        e_ = np.asarray(e_, np.float32).reshape(g_.shape)
        diff = np.abs(g_.astype(np.float64) - e_)
        c = checks[o]
        c.exact = c.exact or exact
        c.max_abs_err = max(c.max_abs_err, float(np.nan_to_num(diff, nan=np.inf).max(initial=0)))
        rel = diff / np.maximum(np.abs(e_), 1e-30)
        c.max_rel_err = max(c.max_rel_err, float(np.nan_to_num(rel, nan=np.inf).max(initial=0)))
        c.total += 1
        tol = atol if c.atol is None else c.atol
        if np.array_equal(g_, e_) if exact else np.allclose(g_, e_, rtol=rtol, atol=tol,
                                                             equal_nan=True):
            c.passed += 1


def dequantized_outputs(cm: Any) -> dict[str, float]:
    """Outputs computed as ``scale * (q - zero_point)`` from an int8 tensor: name -> scale."""
    g = getattr(cm, "graph", None)
    if g is None:
        return {}
    made = g.producers()
    out = {}
    for o in g.outputs:
        node = made.get(o)
        q = g.quant(node.inputs[0]) if node is not None and node.op == "Dequantize" else None
        if q is not None and q.size == 1:
            out[o] = float(q.scalar()[0])
    return out
