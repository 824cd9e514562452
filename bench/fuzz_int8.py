"""Seeded differential fuzzer of the int8 kernels: random int8 layers on the emulated Cortex-M.

Each case is one random layer (QConv2D, QDepthwiseConv2D, QFullyConnected, QBatchMatMul and
QAdd/QSub/QMul with broadcasting: the ops whose Cortex-M4/M7/M33 builds take the DSP kernels,
most of them assembly) with its own geometry, quantization, clamp and weights, built in edgec's
IR; each batch draws the compile options that change the kernels (``int8_rounding``,
``int8_kernels``, ``patches``). A batch puts several cases side by side in one model (each with
its own input and output), so one firmware build and one QEMU run check them all, and a batch
with several fully connected layers takes the model-wide assembly quads.

Every batch's C must build warning-free on the host (gcc -Wall -Wextra -Werror -std=c99
-pedantic) and for each board (the firmware build fails on a warning); three random input sets
then run on each target's emulated board, on the host (the generic C) and on the host under
ASan + UBSan (every buffer malloc'd at its size, the caller's arena), and each output is
compared byte for byte with edgec's numpy reference (``edgec.ops.interpret``: TFLite's
reference kernels, checked against the TFLite interpreter in tests/test_int8_*.py). A case
that edgec refuses with an EdgecError counts as ``refused`` (its message is kept), a batch too
big for a board's memory as ``too_big_<board>``; anything else counts against edgec.

    python -m bench.fuzz_int8 --cases 400 --seed 0                # M4F (DSP) and the host
    python -m bench.fuzz_int8 --cases 200 --targets cortex-m4f,cortex-m33,cortex-m7

Outcome counts go to stdout as JSON; ``--failures FILE`` keeps every bad case's description.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError, ModelTooBigError
from edgec.ir import Graph, Quant
from tests.int8_graphs import Builder, random_feeds

#: outcomes that break edgec's promise (bit-exact outputs or a clear error)
BAD = ("mismatch", "internal_error", "board_error", "warnings", "sanitizer")
OPS = ("QConv2D", "QDepthwiseConv2D", "QFullyConnected", "QBatchMatMul", "QAdd", "QSub", "QMul")
#: how often each op is drawn
WEIGHTS = (0.38, 0.22, 0.18, 0.08, 0.06, 0.04, 0.04)
CHANNELS = (1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 24, 32, 40, 64)


@dataclass
class Case:
    """One random layer: its op, attributes and the shapes it was built with."""
    op: str
    desc: dict[str, Any]
    output: str = ""


@dataclass
class Outcome:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)


def _quant(rng: np.random.Generator, lo: float, hi: float) -> Quant:
    """Per-tensor, log-uniform scale in [lo, hi], zero point anywhere in int8."""
    return Quant.per_tensor(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                            int(rng.integers(-128, 128)))


def _weights(b: Builder, shape: tuple[int, ...], axis: int, per_channel: bool) -> str:
    """int8 weights, sometimes narrow (small codes) or with all-zero channels."""
    rng = b.rng
    span = int(rng.choice([127, 127, 40, 3]))
    w = rng.integers(-span, span + 1, shape).astype(np.int8)
    if rng.random() < 0.1:  # a dead channel
        idx = [slice(None)] * len(shape)
        idx[axis] = int(rng.integers(shape[axis]))
        w[tuple(idx)] = 0
    n = shape[axis] if per_channel else 1
    scales = np.exp(rng.uniform(np.log(2e-4), np.log(5e-2), n)).astype(np.float32)
    q = Quant(scales, np.zeros(n, np.int32), axis if per_channel else None)
    b.count += 1
    return b.g.add_const(f"w{b.count}", w, q)


def _bias(b: Builder, n: int, x: str, w: str) -> str:
    q_x, q_w = b.g.quant(x), b.g.quant(w)
    assert q_x is not None and q_w is not None
    scales = (np.float32(q_x.scale[0]) * q_w.scale).astype(np.float32)
    scales = np.repeat(scales, n) if scales.size == 1 else scales
    span = int(b.rng.choice([0, 300, 5000, 200000]))
    bias = b.rng.integers(-span, span + 1, n).astype(np.int32)
    b.count += 1
    return b.g.add_const(f"b{b.count}", bias, Quant(scales, np.zeros(n, np.int32), 0))


def _clamp(rng: np.random.Generator, zp_y: int) -> dict[str, int]:
    """No clamp, a ReLU-like clamp at the zero point, or random bounds."""
    r = rng.random()
    if r < 0.5:
        return {}
    if r < 0.75:
        return {"act_min": max(-128, zp_y), "act_max": 127}
    lo = int(rng.integers(-128, 127))
    return {"act_min": lo, "act_max": int(rng.integers(lo + 1, 128))}


def _window(rng: np.random.Generator, h: int, w: int) -> dict[str, Any] | None:
    """Kernel, strides, dilations and pads giving at least one output pixel, or None."""
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    sh, sw = (int(v) for v in rng.choice([1, 1, 1, 2, 3], 2))
    dh, dw = (int(v) for v in rng.choice([1, 1, 1, 1, 2], 2))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if rng.random() < 0.5:  # "same"-like padding, else random
        pads = [(eh - 1) // 2, (ew - 1) // 2, eh - 1 - (eh - 1) // 2, ew - 1 - (ew - 1) // 2]
    else:
        pads = [int(rng.integers(0, eh)), int(rng.integers(0, ew)),
                int(rng.integers(0, eh)), int(rng.integers(0, ew))]
    oh = (h + pads[0] + pads[2] - eh) // sh + 1
    ow = (w + pads[1] + pads[3] - ew) // sw + 1
    if oh < 1 or ow < 1:
        return None
    return {"k": (kh, kw), "strides": [sh, sw], "dilations": [dh, dw], "pads": pads}


def add_case(b: Builder, op: str, idx: int) -> Case | None:
    """Add one random layer of type ``op`` on a new input; None if the draw has no output."""
    rng = b.rng
    x = f"x{idx}"
    q_x = _quant(rng, 0.003, 0.3)
    if op in ("QAdd", "QSub", "QMul"):
        return _elementwise(b, op, x, q_x)
    if op == "QBatchMatMul":
        return _batch_matmul(b, x, q_x)
    if op == "QFullyConnected":
        batch = int(rng.choice([1, 1, 1, 2, 3]))
        k = int(rng.choice([int(rng.integers(1, 20)), int(rng.integers(20, 320))]))
        o = int(rng.choice([int(rng.integers(1, 9)), int(rng.integers(9, 100))]))
        b.input(x, (batch, k), quant=q_x)
        w = _weights(b, (o, k), 0, bool(rng.random() < 0.7))
        q_y = _quant(rng, 0.01, 2.0)
        out = b.op(op, [x, w, _bias(b, o, x, w)], quant=q_y,
                   **_clamp(rng, int(q_y.zero_point[0])))
        return Case(op, {"x": [batch, k], "o": o}, out)
    h, wd = int(rng.integers(1, 13)), int(rng.integers(1, 13))
    c = int(rng.choice(CHANNELS))
    win = _window(rng, h, wd)
    if win is None:
        return None
    kh, kw = win.pop("k")
    b.input(x, (1, h, wd, c), quant=q_x)
    q_y = _quant(rng, 0.01, 2.0)
    attrs = dict(win, **_clamp(rng, int(q_y.zero_point[0])))
    if op == "QConv2D":
        o = int(rng.choice(CHANNELS))
        groups = 1
        if rng.random() < 0.2:
            groups = int(rng.choice([g for g in (2, 3, 4) if c % g == 0 and o % g == 0] or [1]))
            o = o if o % groups == 0 else groups
        w = _weights(b, (o, kh, kw, c // groups), 0, bool(rng.random() < 0.8))
    else:
        m = int(rng.choice([1, 1, 1, 2, 3]))
        o = c * m
        w = _weights(b, (1, kh, kw, o), 3, bool(rng.random() < 0.8))
        attrs["depth_multiplier"] = m
    out = b.op(op, [x, w, _bias(b, o, x, w)], quant=q_y, **attrs)
    return Case(op, {"x": [1, h, wd, c], "w": list(b.g.shape(w)), **attrs}, out)


def _elementwise(b: Builder, op: str, x: str, q_x: Quant) -> Case:
    """QAdd/QSub/QMul of an input and a second input or a constant, shapes broadcasting."""
    rng = b.rng
    shape = tuple(int(v) for v in rng.integers(1, 7, int(rng.integers(1, 5))))
    other = tuple(d if rng.random() < 0.6 else 1 for d in shape)[int(rng.integers(0, 2)):]
    b.input(x, shape, quant=q_x)
    if rng.random() < 0.5:
        y = b.input(f"{x}b", other or (1,), quant=_quant(rng, 0.003, 0.3))
    else:
        y = b.const_int8(other or (1,), _quant(rng, 0.003, 0.3))
    ins = [x, y] if rng.random() < 0.5 else [y, x]
    q_y = _quant(rng, 0.005, 1.0)
    out = b.op(op, ins, quant=q_y, **_clamp(rng, int(q_y.zero_point[0])))
    return Case(op, {"a": list(b.g.shape(ins[0])), "b": list(b.g.shape(ins[1]))}, out)


def _batch_matmul(b: Builder, x: str, q_x: Quant) -> Case:
    """QBatchMatMul of two inputs, batch dimensions broadcasting, adj_x/adj_y drawn."""
    rng = b.rng
    m, k, n = (int(v) for v in rng.integers(1, 24, 3))
    batch = [int(v) for v in rng.integers(1, 4, int(rng.integers(0, 3)))]
    adj_x, adj_y = int(rng.random() < 0.3), int(rng.random() < 0.3)
    bb = [d if rng.random() < 0.7 else 1 for d in batch]
    b.input(x, (*batch, *((k, m) if adj_x else (m, k))), quant=q_x)
    y = b.input(f"{x}b", (*bb, *((n, k) if adj_y else (k, n))), quant=_quant(rng, 0.003, 0.3))
    q_y = _quant(rng, 0.05, 4.0)
    out = b.op("QBatchMatMul", [x, y], quant=q_y, adj_x=adj_x, adj_y=adj_y)
    return Case("QBatchMatMul", {"a": list(b.g.shape(x)), "b": list(b.g.shape(y)),
                                 "adj_x": adj_x, "adj_y": adj_y}, out)


def make_batch(seed: int, size: int, rounding: str) -> tuple[Graph, list[Case]]:
    """``size`` random layers side by side in one model, with drawn kernel options."""
    opt_rng = np.random.default_rng([seed, 1])
    options = {"int8_rounding": rounding,
               "int8_kernels": str(opt_rng.choice(["shared", "shared", "specialized"])),
               "patches": str(opt_rng.choice(["off", "auto"]))}
    b = Builder(f"fuzz{seed}", seed, options)
    cases: list[Case] = []
    i = 0
    while len(cases) < size:
        op = str(b.rng.choice(OPS, p=WEIGHTS))
        case = add_case(b, op, i)
        i += 1
        if case is not None:
            cases.append(case)
    return b.finish([c.output for c in cases]), cases


def _compare(g: Graph, cases: list[Case], feeds: list[dict[str, np.ndarray]],
             got: list[list[np.ndarray]], where: str, out: Outcome, seed: int) -> None:
    from edgec.ops.interpret import interpret

    bad: set[int] = set()
    for f, outs in zip(feeds, got, strict=True):
        want = interpret(g, f)
        for i, (case, arr) in enumerate(zip(cases, outs, strict=True)):
            ref = want[case.output]
            if not np.array_equal(np.asarray(arr).reshape(ref.shape), ref):
                bad.add(i)
    for i, case in enumerate(cases):
        if i in bad:
            out.counts["mismatch"] += 1
            out.failures.append({"seed": seed, "index": i, "where": where, "op": case.op,
                                 **case.desc})
        else:
            out.counts[f"ok_{where}"] += 1


def _strict_host_build(cm: Any, work: Path) -> str:
    """Compile the model's C on the host with -Wall -Wextra -Werror -std=c99 -pedantic; what
    gcc said when it failed, else an empty string."""
    import subprocess

    work.mkdir(parents=True, exist_ok=True)
    cm.write(work)
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                           "-c", f"{cm.name}.c", "-o", "strict.o"], cwd=work,
                          capture_output=True, text=True)
    return "" if proc.returncode == 0 else proc.stderr[-300:]


def run_batch(seed: int, size: int, targets: Sequence[str], out: Outcome, work: Path,
              sanitize: bool = True) -> None:
    """Build, run and compare one batch; outcomes into ``out``; ``sanitize``: also run the
    host C built with ASan + UBSan."""
    from edgec.api import compile_graph
    from tests.c_checks import sanitized_run
    from tests.int8_graphs import run_board

    rounding = "double" if seed % 3 else "tflite"
    try:
        g, cases = make_batch(seed, size, rounding)
        cm = compile_graph(g)
    except EdgecError as e:  # a refused layer refuses its batch: try its layers alone
        if size > 1:
            for j in range(size):
                run_batch(seed * 1000 + j + 1, 1, targets, out, work, sanitize)
            return
        out.counts["refused"] += 1
        out.refusals[str(e).split(":")[-1].strip()[:120]] += 1
        return
    except Exception as e:  # noqa: BLE001 - counted, kept with its seed
        out.counts["internal_error"] += 1
        out.failures.append({"seed": seed, "where": "compile", "error": repr(e)[:300]})
        return
    strict = _strict_host_build(cm, work / f"{seed}_host")
    if strict:
        out.counts["warnings"] += len(cases)
        out.failures.append({"seed": seed, "where": "host gcc -Werror", "error": strict})
    rng = np.random.default_rng(seed)
    feeds = [random_feeds(cm.graph, rng) for _ in range(3)]
    host = [cm.run(f) for f in feeds]  # one output: an array, several: a list
    _compare(g, cases, feeds, [[h] if len(cases) == 1 else h for h in host], "host", out, seed)
    if sanitize:
        try:
            san = sanitized_run(cm, work / f"{seed}_asan", feeds)
        except AssertionError as e:  # a sanitizer report or a failed build
            out.counts["sanitizer"] += len(cases)
            out.failures.append({"seed": seed, "where": "host ASan/UBSan", "error": str(e)[-300:]})
        else:
            _compare(g, cases, feeds, [[o[c.output] for c in cases] for o in san], "asan", out,
                     seed)
    for t in targets:
        try:
            feeds_b, _, got, _ = run_board(cm, t, work / f"{seed}_{t}", seed=seed)
        except ModelTooBigError:  # the batch does not fit the board (the M0's 16 KB RAM)
            out.counts[f"too_big_{t}"] += len(cases)
            continue
        except Exception as e:  # noqa: BLE001 - a build or board failure is a finding
            out.counts["board_error"] += len(cases)
            out.failures.append({"seed": seed, "where": t, "error": repr(e)[:300]})
            continue
        _compare(g, cases, feeds_b, got, t, out, seed)


def fuzz(cases: int, seed: int, targets: Sequence[str], batch: int = 8,
         progress: bool = False, sanitize: bool = True) -> Outcome:
    out = Outcome()
    with tempfile.TemporaryDirectory(prefix="edgec_fuzz8_") as tmp:
        for i in range((cases + batch - 1) // batch):
            run_batch(seed + i, batch, targets, out, Path(tmp), sanitize)
            if progress:
                print(f"batch {i + 1}: {dict(out.counts)}", file=sys.stderr, flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200, help="random layers (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8, help="layers per firmware (default 8)")
    ap.add_argument("--targets", default="cortex-m4f",
                    help="comma-separated boards (default cortex-m4f); '' for the host only")
    ap.add_argument("--failures", type=Path, help="write the bad cases here (JSON)")
    ap.add_argument("--no-sanitize", action="store_true",
                    help="skip the host run under ASan + UBSan")
    ns = ap.parse_args(argv)
    t0 = time.time()
    targets = [t for t in ns.targets.split(",") if t]
    out = fuzz(ns.cases, ns.seed, targets, ns.batch, progress=True, sanitize=not ns.no_sanitize)
    report = {"cases": ns.cases, "seed": ns.seed, "targets": targets,
              "seconds": round(time.time() - t0), "outcomes": dict(sorted(out.counts.items())),
              "refusals": dict(out.refusals.most_common())}
    print(json.dumps(report, indent=1))
    if ns.failures:
        ns.failures.write_text(json.dumps(out.failures, indent=1))
    bad = sum(out.counts[k] for k in BAD)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
