"""The model commands: ``edgec compile``, ``verify`` and ``inspect``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgec.cli.common import add_model_args, compile_from_args, load_inputs
from edgec.errors import EdgecError

Handler = Callable[[argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "compile",
        help="compile a model to <name>.h / <name>.c",
        description="Compile a model to C99 sources (<name>.h, <name>.c).",
    )
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser(
        "verify",
        help="run the generated C on the host and compare with onnxruntime (TFLite "
        "interpreter for .tflite/Keras models)",
        description="Build the generated C for the host, run it on N inputs and "
        "compare every output with the reference runtime: onnxruntime, or the TFLite "
        "interpreter's reference kernels for .tflite and Keras models. Exit 1 on mismatch.",
    )
    add_model_args(p)
    p.add_argument(
        "--inputs",
        metavar="FILE.npz",
        help="inputs keyed by input name (a leading axis of samples is allowed)",
    )
    p.add_argument("--n", type=int, default=20, help="random input sets when --inputs is absent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument(
        "--target",
        metavar="T",
        help="run on this Cortex-M target's emulated board (QEMU) instead of the host "
        "(edgec targets); a stateful model steps through the input sets as one sequence",
    )

    p = sub.add_parser(
        "inspect",
        help="per-node table: op, shapes, params, MACs, arena offset",
        description="Show the optimised graph node by node, with totals.",
    )
    add_model_args(p)

    return {"compile": cmd_compile, "verify": cmd_verify, "inspect": cmd_inspect}


def cmd_compile(args: argparse.Namespace) -> int:
    from edgec.backend.report import summary_rows
    from edgec.tables import format_table

    t0 = time.perf_counter()
    m = compile_from_args(args)
    paths = m.write(args.output)
    if args.json:
        import json

        rep = m.report() | {"files": [str(p) for p in paths]}
        print(json.dumps(rep, indent=2, sort_keys=True))
        return 0
    dt = time.perf_counter() - t0
    print(f"compiled {args.model} -> {', '.join(str(p) for p in paths)} in {dt:.2f} s")
    print(format_table(["", ""], summary_rows(m.report()), align="ll"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgec.tables import format_table, progress

    m = compile_from_args(args)
    shapes = {p.name: p.shape for p in m.cmodel.inputs}
    if args.inputs:
        raw = load_inputs(args.inputs, m.input_names)
        samples: list[dict[str, np.ndarray]] = []
        counts = set()
        for k, v in raw.items():
            v = np.asarray(v, np.float32)
            shape = tuple(shapes[k])
            if v.shape == shape:
                v = v[None]
            elif v.shape[1:] == shape[1:] and shape and shape[0] == 1:
                v = v[:, None]  # a batch of samples for a batch-1 input
            elif v.shape[1:] != shape:
                raise EdgecError(
                    f"{args.inputs}: input '{k}' has shape {v.shape}; the model "
                    f"expects {shape} (optionally with a leading N axis)"
                )
            counts.add(v.shape[0])
            raw[k] = v
        if len(counts) != 1:
            raise EdgecError(
                f"{args.inputs}: inputs hold different numbers of samples {sorted(counts)}"
            )
        n = counts.pop()
        samples = [{k: v[i] for k, v in raw.items()} for i in range(n)]
    else:
        rng = np.random.default_rng(args.seed)
        samples = [
            {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
            for _ in range(args.n)
        ]
    sess, ref_name = _reference_session(args.model)
    out_names = m.output_names
    where = "host"
    if args.target:
        from edgec.cli.firmware import target_results

        out_names, pairs = target_results(m, samples, sess, args.target)
        where = f"{args.target}, QEMU"
    worst_abs = {o: 0.0 for o in out_names}
    worst_rel = {o: 0.0 for o in out_names}
    bad = {o: 0 for o in out_names}
    for i, feeds in enumerate(progress(samples, "verify")):
        if args.target:
            got, exp = pairs[i]
        else:
            got = m.run(**feeds)
            got = got if isinstance(got, list) else [got]
            exp = sess.run(m.output_names, feeds)
        for o, g_, e_ in zip(out_names, got, exp, strict=True):
            e_ = np.asarray(e_, np.float32).reshape(g_.shape)
            diff = np.abs(g_.astype(np.float64) - e_)
            worst_abs[o] = max(worst_abs[o], float(diff.max(initial=0.0)))
            rel = diff / np.maximum(np.abs(e_), 1e-30)
            worst_rel[o] = max(worst_rel[o], float(rel.max(initial=0.0)))
            if not np.allclose(g_, e_, rtol=args.rtol, atol=args.atol, equal_nan=True):
                bad[o] += 1
    rows = [
        [
            o,
            f"{worst_abs[o]:.3g}",
            f"{worst_rel[o]:.3g}",
            f"{len(samples) - bad[o]}/{len(samples)}",
            "PASS" if bad[o] == 0 else "FAIL",
        ]
        for o in out_names
    ]
    print(
        f"verify {args.model}: edgec C ({where}) vs {ref_name}, {len(samples)} input set(s), "
        f"rtol={args.rtol:g} atol={args.atol:g}"
    )
    print(
        format_table(
            ["output", "max abs err", "max rel err", "within tol", "result"], rows, align="lrrrl"
        )
    )
    ok = not any(bad.values())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _reference_session(model: str) -> tuple[Any, str]:
    """(session with ``run(output_names, feeds)``, its name) for ``verify``."""
    from edgec.frontend.keras import is_keras_source

    if model.lower().endswith(".tflite") or is_keras_source(model):
        from edgec.frontend.tflite.reference import reference_for

        return reference_for(model), "the TFLite interpreter"
    try:
        import onnxruntime as ort
    except ImportError:
        raise EdgecError("verify needs onnxruntime: pip install onnxruntime") from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgecError(f"{model}: onnxruntime cannot load it: {str(exc).splitlines()[0]}"
                         ) from None
    return sess, "onnxruntime"


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.backend.report import node_rows, summary_rows
    from edgec.tables import format_table

    m = compile_from_args(args)
    g = m.graph
    print(f"{args.model}: {len(g.nodes)} nodes after optimisation (opset {g.opset})")
    print(
        format_table(
            ["#", "node", "op", "inputs", "output", "params", "MACs", "arena offset"],
            node_rows(g),
            align="rllllrrr",
        )
    )
    print()
    print(format_table(["total", ""], summary_rows(m.report()), align="ll"))
    if g.state:
        print("state carried by _step: " + ", ".join(f"{a} <- {b}" for a, b in g.state))
    return 0
