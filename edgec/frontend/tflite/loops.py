"""WHILE with a static trip count → Scan (a C ``for`` loop over the body's kernels).

The converter writes a Keras SimpleRNN/GRU/LSTM as ``WHILE(counters..., states..., sequence)``:
the condition compares integer counters with constants, the body GATHERs step ``t`` of the
sequence, updates the states and (for ``return_sequences``) writes step ``t`` of an output list
with ``CONCATENATION(SLICE(list, 0, t), element, SLICE(list, t + 1, end))``. Here:

1. The integer part of the loop (counters, the condition, indices) is evaluated at compile time,
   iteration by iteration, which gives the trip count and the value of every integer tensor of
   the body in every iteration. A condition that depends on run-time data is refused.
2. Each carried value is classified: an integer *counter* (known in every iteration; its final
   value is a constant), a *scan input* (carried unchanged and read only as ``GATHER(x, t)``
   with ``t`` = the iteration, forwards or backwards), a *scan output* (the list-write pattern
   above, writing every row once), or a *state* (everything else).
3. The body is translated once into an IR graph with the ordinary translation table: per-step
   reads become the body's scan-input slices, list writes its scan outputs, integer tensors that
   are the same in every iteration become constants. A body operator that reads an integer that
   changes from one iteration to the next in any other way is refused with its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.tflite.context import Ctx, _unique_names, add_constants, translate_ops
from edgec.frontend.tflite.reader import TflOperator, TflSubgraph
from edgec.ir import Graph, Quant, Tensor

#: iterations the compile-time evaluation follows before it gives up
MAX_TRIPS = 100_000
_INT_TYPES = ("INT32", "INT64", "INT16", "INT8", "UINT8", "BOOL")

Arrays = list[np.ndarray]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., Arrays]:
    return lambda xs, op, sg: [np.asarray(fn(xs[0], xs[1]))]


def _reshape(xs: Arrays, op: TflOperator, sg: TflSubgraph) -> Arrays:
    shape = (xs[1].reshape(-1).tolist() if len(xs) > 1 else
             op.builtin_options.get("newShape") or list(sg.tensors[op.outputs[0]].shape))
    return [xs[0].reshape([int(d) for d in shape])]


def _slice(xs: Arrays, op: TflOperator, sg: TflSubgraph) -> Arrays:
    x, begin, size = xs[0], xs[1].reshape(-1), xs[2].reshape(-1)
    idx = tuple(slice(int(b), None if s == -1 else int(b + s)) for b, s in zip(begin, size,
                                                                               strict=True))
    return [x[idx]]


#: integer/bool operators the compile-time evaluation of loop counters understands
_INT_EVAL: dict[str, Callable[[Arrays, TflOperator, TflSubgraph], Arrays]] = {
    "ADD": _binary(np.add),
    "SUB": _binary(np.subtract),
    "MUL": _binary(np.multiply),
    "FLOOR_DIV": _binary(np.floor_divide),
    "FLOOR_MOD": _binary(np.mod),
    "MINIMUM": _binary(np.minimum),
    "MAXIMUM": _binary(np.maximum),
    "LESS": _binary(np.less),
    "LESS_EQUAL": _binary(np.less_equal),
    "GREATER": _binary(np.greater),
    "GREATER_EQUAL": _binary(np.greater_equal),
    "EQUAL": _binary(np.equal),
    "NOT_EQUAL": _binary(np.not_equal),
    "LOGICAL_AND": _binary(np.logical_and),
    "LOGICAL_OR": _binary(np.logical_or),
    "LOGICAL_NOT": lambda xs, op, sg: [np.logical_not(xs[0])],
    "RESHAPE": _reshape,
    "SQUEEZE": lambda xs, op, sg: [xs[0].reshape(sg.tensors[op.outputs[0]].shape)],
    "EXPAND_DIMS": lambda xs, op, sg: [np.expand_dims(xs[0], int(xs[1].reshape(-1)[0]))],
    "CONCATENATION": lambda xs, op, sg: [
        np.concatenate(xs, int(op.builtin_options.get("axis", 0)))
    ],
    "PACK": lambda xs, op, sg: [np.stack(xs, int(op.builtin_options.get("axis", 0) or 0))],
    "SLICE": _slice,
    "CAST": lambda xs, op, sg: [xs[0].astype(sg.tensors[op.outputs[0]].dtype or "int32")],
}


def _evaluate(sg: TflSubgraph, known: dict[int, np.ndarray], src: str) -> None:
    """Evaluate every integer operator whose inputs are known (in place in ``known``); an
    operator numpy cannot evaluate (wrong arity, shapes that do not fit) is a one-line error."""
    for op in sg.operators:
        fn = _INT_EVAL.get(op.op)
        if fn is None or any(sg.tensors[k].type not in _INT_TYPES for k in op.outputs):
            continue
        ins = []
        for k in op.inputs:
            if k < 0:
                continue
            v = known.get(k, sg.tensors[k].data)
            if v is None or sg.tensors[k].type not in _INT_TYPES:
                break
            ins.append(np.asarray(v))
        else:
            try:
                outs = fn(ins, op, sg)
            except (IndexError, ValueError, TypeError, ArithmeticError) as exc:
                raise EdgecError(
                    f"{src}: subgraph {sg.index} operator {op.index} ({op.op}): its integer "
                    f"inputs do not evaluate at compile time ({type(exc).__name__}: {exc})"
                ) from None
            for k, v in zip(op.outputs, outs, strict=False):
                known[k] = np.asarray(v)


@dataclass
class _Loop:
    cx: Ctx
    op: TflOperator
    cond: TflSubgraph
    body: TflSubgraph
    counters: dict[int, np.ndarray]  # carried index → initial value
    history: list[dict[int, np.ndarray]] = field(default_factory=list)
    final: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def trips(self) -> int:
        return len(self.history)

    def where(self, sg: TflSubgraph, op: TflOperator) -> str:
        return f"operator {op.index} ({op.op}) of subgraph {sg.index}"

    def unroll(self) -> None:
        vals = dict(self.counters)
        while True:
            known = {self.cond.inputs[i]: v for i, v in vals.items()}
            _evaluate(self.cond, known, self.cx.model.source)
            c = known.get(self.cond.outputs[0])
            if c is None:
                raise self.cx.fail(
                    f"the loop condition (subgraph {self.cond.index}) depends on values known "
                    f"only at run time; edgec compiles WHILE loops with a static trip count"
                )
            if not bool(np.asarray(c).reshape(-1)[0]):
                break
            if self.trips >= MAX_TRIPS:
                raise self.cx.fail(f"the loop runs more than {MAX_TRIPS} iterations")
            known = {self.body.inputs[i]: v for i, v in vals.items()}
            _evaluate(self.body, known, self.cx.model.source)
            self.history.append(known)
            nxt = {}
            for i in vals:
                v = known.get(self.body.outputs[i])
                if v is None:
                    raise self.cx.fail(f"the next value of loop counter {i} is not known at "
                                       f"compile time")
                nxt[i] = v
            vals = nxt
        self.final = vals

    def varying(self, k: int) -> bool:
        """Body tensor ``k`` is an integer whose value changes between iterations."""
        if k not in self.history[0]:
            return False
        first = self.history[0][k]
        return any(k not in h or not np.array_equal(h[k], first) for h in self.history[1:])

    def position(self, k: int) -> bool | None:
        """For a varying scalar ``k``: False if it is the iteration t, True if trips-1-t."""
        vals = [int(np.asarray(h[k]).reshape(-1)[0]) if np.asarray(h[k]).size == 1 else None
                for h in self.history]
        if vals == list(range(self.trips)):
            return False
        if vals == list(range(self.trips - 1, -1, -1)):
            return True
        return None


def _consumers(sg: TflSubgraph) -> dict[int, list[TflOperator]]:
    out: dict[int, list[TflOperator]] = {}
    for op in sg.operators:
        for k in op.inputs:
            if k >= 0:
                out.setdefault(k, []).append(op)
    return out


def _producers(sg: TflSubgraph) -> dict[int, TflOperator]:
    return {k: op for op in sg.operators for k in op.outputs}


def _list_write(loop: _Loop, i: int, seq_len: int) -> tuple[TflOperator, int, bool] | None:
    """The CONCATENATION that writes one row per iteration into carried list ``i``: returns
    (concat, element tensor, reverse) when every row is written exactly once."""
    body = loop.body
    b_in, b_out = body.inputs[i], body.outputs[i]
    cat = _producers(body).get(b_out)
    if cat is None or cat.op != "CONCATENATION" or int(cat.builtin_options.get("axis", 0) or 0):
        return None
    producers, consumers = _producers(body), _consumers(body)
    slices, elems = [], []
    for k in cat.inputs:
        p = producers.get(k)
        if p is not None and p.op == "SLICE" and p.inputs[0] == b_in:
            slices.append((k, p))
        else:
            elems.append(k)
    if len(elems) != 1 or len(slices) != 2 or body.tensors[elems[0]].shape[:1] != (1,):
        return None
    if any(op is not cat for k, _ in slices for op in consumers.get(k, [])):
        return None
    if any(op.op != "SLICE" or op not in [p for _, p in slices]
           for op in consumers.get(b_in, [])):
        return None  # the list's old rows are read: a state, not an output
    (k_head, head), (k_tail, tail) = slices
    if cat.inputs.index(k_head) > cat.inputs.index(elems[0]):
        (k_head, head), (k_tail, tail) = (k_tail, tail), (k_head, head)
    rows = []
    for h in loop.history:
        hb, hs, tb, ts = (h.get(k, body.tensors[k].data) for k in (*head.inputs[1:3],
                                                                   *tail.inputs[1:3]))
        if any(v is None for v in (hb, hs, tb, ts)):
            return None
        hb, hs, tb, ts = (np.asarray(v).reshape(-1) for v in (hb, hs, tb, ts))
        p = int(hs[0])
        ok = (not hb.any() and all(s == -1 for s in hs[1:]) and int(tb[0]) == p + 1
              and not tb[1:].any() and int(ts[0]) in (-1, seq_len - p - 1)
              and all(s == -1 for s in ts[1:]))
        if not ok:
            return None
        rows.append(p)
    if rows == list(range(seq_len)) and loop.trips == seq_len:
        return cat, elems[0], False
    if rows == list(range(seq_len - 1, -1, -1)) and loop.trips == seq_len:
        return cat, elems[0], True
    return None


def _quant(cx: Ctx, sg: TflSubgraph, k: int) -> Quant | None:
    """The IR quantization of body tensor ``k`` when it is int8 at run time."""
    t = sg.tensors[k]
    return cx.quant_of(t) if t.type == "INT8" else None


def translate_while(cx: Ctx, op: TflOperator) -> None:
    model = cx.model
    ci, bi = int(cx.opts.get("condSubgraphIndex", -1)), int(cx.opts.get("bodySubgraphIndex", -1))
    if not (0 < ci < len(model.subgraphs) and 0 < bi < len(model.subgraphs)):
        raise cx.fail(f"condition/body subgraph index {ci}/{bi} out of range")
    cond, body = model.subgraphs[ci], model.subgraphs[bi]
    n = len(op.inputs)
    if not (len(cond.inputs) == len(body.inputs) == len(body.outputs) == len(op.outputs) == n):
        raise cx.fail("WHILE, its condition and its body disagree on the number of values")
    counters: dict[int, np.ndarray] = {}
    for i in range(n):
        t = body.tensors[body.inputs[i]]
        if t.type in _INT_TYPES and t.type != "INT8":
            val = cx.const(cx.x(i))
            if val is None:
                raise cx.fail(f"carried integer {i} ('{cx.x(i)}') is computed at run time; "
                              f"only counters with compile-time values are supported")
            counters[i] = np.asarray(val)
    loop = _Loop(cx, op, cond, body, counters)
    loop.unroll()
    if loop.trips == 0:
        for i in range(n):
            if i in counters:
                cx.set_const(cx.y(i), counters[i])
            else:
                cx.alias(cx.y(i), cx.x(i))
        return
    _build_scan(cx, loop)


def _build_scan(cx: Ctx, loop: _Loop) -> None:
    body, n = loop.body, len(loop.op.inputs)
    consumers = _consumers(body)
    states: list[int] = []
    scan_in: list[tuple[int, list[TflOperator], bool]] = []  # (carried, GATHERs, reverse)
    scan_out: list[tuple[int, TflOperator, int, bool]] = []  # (carried, concat, element, rev)
    for i in range(n):
        if i in loop.counters:
            continue
        b_in, b_out = body.inputs[i], body.outputs[i]
        seq_len = cx.shape(cx.x(i))[0] if cx.shape(cx.x(i)) else 0
        users = consumers.get(b_in, [])
        gathers = [u for u in users if u.op == "GATHER" and u.inputs[0] == b_in
                   and loop.varying(u.inputs[1])]
        if b_out == b_in and gathers and len(gathers) == len(users):
            dirs = {loop.position(g.inputs[1]) for g in gathers}
            if (len(dirs) != 1 or None in dirs or seq_len != loop.trips
                    or any(int(g.builtin_options.get("axis", 0) or 0) for g in gathers)):
                raise cx.fail(
                    f"the loop body reads carried value {i} at an index that is not the "
                    f"iteration number (forwards or backwards over all {seq_len} rows)"
                )
            scan_in.append((i, gathers, dirs.pop()))  # type: ignore[arg-type]
            continue
        write = _list_write(loop, i, seq_len)
        if write is not None:
            scan_out.append((i, *write))
            continue
        states.append(i)
    skip = {id(g) for _, gs, _ in scan_in for g in gs}
    for _, cat, _, _ in scan_out:
        skip.add(id(cat))
        skip.update(id(p) for p in body.operators if p.op == "SLICE" and p.outputs[0]
                    in cat.inputs)
    evaluated = set().union(*(h.keys() for h in loop.history))

    bg = Graph(f"{cx.g.name}_while{loop.op.index}", opset=cx.g.opset, source=cx.g.source)
    bnames = _unique_names(body)
    bcx = cx.child(body, bg, bnames)
    add_constants(bcx)
    for k in evaluated:  # integers that are the same in every iteration are constants
        if not loop.varying(k) and body.tensors[k].data is None:
            bcx.set_const(bnames[k], loop.history[0][k])
    for i in states:  # int8 values keep the body's quantization (edgec's quantized loops)
        name = bnames[body.inputs[i]]
        bg.tensors[name] = Tensor(name, cx.shape(cx.x(i)), cx.dtype(cx.x(i)),
                                  quant=_quant(cx, body, body.inputs[i]))
        bg.inputs.append(name)
    for i, gathers, _ in scan_in:
        name = bnames[gathers[0].outputs[0]]
        bg.tensors[name] = Tensor(name, cx.shape(cx.x(i))[1:], cx.dtype(cx.x(i)),
                                  quant=_quant(cx, body, gathers[0].outputs[0]))
        bg.inputs.append(name)
    ops = []
    for o in body.operators:
        if id(o) in skip or (o.outputs and all(k in evaluated for k in o.outputs)):
            continue
        bad = [k for k in o.inputs if k >= 0 and loop.varying(k)]
        if bad:
            raise cx.fail(
                f"the loop body's {loop.where(body, o)} reads '{body.tensors[bad[0]].name}', an "
                f"integer that changes every iteration; edgec supports per-step reads "
                f"(GATHER at the iteration) and writes (TensorList rows) of sequences only"
            )
        ops.append(o)
    translate_ops(bcx, ops)
    for _, gathers, _ in scan_in:  # further reads of the same step are that slice too
        for g in gathers[1:]:
            bcx.op = g
            bcx.alias(bnames[g.outputs[0]], bnames[gathers[0].outputs[0]])
    bcx.op = None
    for i in states:
        bg.outputs.append(bnames[body.outputs[i]])
    for i, _, elem, _ in scan_out:
        row = tuple(cx.shape(cx.x(i))[1:])
        bg.outputs.append(bcx.add("Reshape", [bnames[elem], bcx.add_const(
            "row_shape", np.asarray(row, np.int64))]))
    for o in bg.outputs:
        if o not in bg.tensors:
            raise cx.fail(f"the loop body does not compute '{o}'")

    attrs: dict[str, Any] = {
        "body": bg,
        "num_scan_inputs": len(scan_in),
        "scan_input_directions": [int(r) for _, _, r in scan_in],
        "scan_output_directions": [int(r) for *_, r in scan_out],
    }
    if not scan_in:
        attrs["_trips"] = loop.trips
    cx.add_multi("Scan", [cx.x(i) for i in states] + [cx.x(i) for i, _, _ in scan_in],
                 [cx.y(i) for i in states] + [cx.y(i) for i, *_ in scan_out], **attrs)
    for i, v in loop.final.items():
        cx.set_const(cx.y(i), v)
    for i, _, _ in scan_in:
        cx.alias(cx.y(i), cx.x(i))
