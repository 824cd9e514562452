"""The model commands: ``edgec compile``, ``verify`` and ``inspect``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from edgec.cli.common import (
    INPUTS_RULE,
    add_model_args,
    add_ray_args,
    add_tolerance_args,
    compile_cuda_from_args,
    compile_from_args,
    input_sets,
    output_dir,
)
from edgec.errors import EdgecError

Handler = Callable[[argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "compile",
        help="compile a model to <name>.h / <name>.c (or, --target cuda, <name>.cu)",
        description="Compile a model to C99 sources (<name>.h, <name>.c), or with --target "
        "cuda to CUDA sources (<name>.h, <name>.cu; docs/cuda.md).",
    )
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--target", dest="compile_target", choices=("c", "cuda"), default="c",
                   help="c: C99 for MCUs and the host (default); cuda: CUDA C++ for a GPU, "
                   "batch free at run time (--option cuda=fused)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser(
        "verify",
        help="run the generated C and compare it with the source model's own framework",
        description="Build the generated C for the host (or a target's emulated board), run it "
        "on N input sets and compare every output with the source model run by its own "
        "framework: onnxruntime for .onnx, torch for .pt2 and FILE.py:FN, the TFLite "
        "interpreter's reference kernels for .tflite and Keras models. An element passes "
        "when |C - reference| <= atol + rtol * |reference|; int8 outputs must be equal bit "
        "for bit. Exit 1 on mismatch.",
    )
    add_model_args(p, optional=True)
    p.add_argument(
        "--inputs",
        metavar="FILE",
        help=f".npy (one-input model) or .npz keyed by input name: {INPUTS_RULE}",
    )
    p.add_argument("--n", type=int, default=20,
                   help="random input sets (standard normal) when --inputs is absent")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input sets")
    add_tolerance_args(p)
    p.add_argument(
        "--target",
        metavar="T",
        help="run on this Cortex-M target's emulated board (QEMU; a board without one runs on "
        "its core's emulated twin) instead of the host (edgec targets); a stateful model steps "
        "through the input sets as one sequence",
    )
    p.add_argument(
        "--cuda", choices=("gpu", "cpu"),
        help="verify the CUDA target's code instead of the C (docs/cuda.md): on the GPU, or "
        "its host build (the same per-sample code, no GPU needed)",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--matrix", metavar="DIR",
                   help="verify every model file in DIR on every --targets board (QEMU), each "
                   "pair a Ray task, and print a pass/fail table (no MODEL then)")
    p.add_argument("--targets", metavar="T1,T2,...",
                   help="with --matrix: the targets, comma-separated (edgec targets)")
    add_ray_args(p)

    p = sub.add_parser(
        "inspect",
        help="per-node table: op, shapes, params, MACs, arena offset",
        description="Show the optimised graph node by node, with totals.",
    )
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the nodes and totals as JSON")

    return {"compile": cmd_compile, "verify": cmd_verify, "inspect": cmd_inspect}


def cmd_compile(args: argparse.Namespace) -> int:
    from edgec.backend.report import summary_rows
    from edgec.tables import format_duration, format_table

    out = output_dir(args.output)
    t0 = time.perf_counter()
    m = compile_cuda_from_args(args) if args.compile_target == "cuda" else compile_from_args(args)
    paths = m.write(out)
    if args.json:
        rep = m.report() | {"files": [str(p) for p in paths]}
        print(json.dumps(rep, indent=2, sort_keys=True))
        return 0
    dt = time.perf_counter() - t0
    print(f"compiled {args.model} -> {', '.join(str(p) for p in paths)} in "
          f"{format_duration(dt)}")
    if args.compile_target == "cuda":
        from edgec.backend.cuda.emit import summary_rows as cuda_rows

        print(format_table(["", ""], cuda_rows(m.report()), align="ll"))
        return 0
    print(format_table(["", ""], summary_rows(m.report()), align="ll"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgec.mcu.targets import load_target
    from edgec.verify.compare import verify, verify_ports
    from edgec.verify.reference import make_reference

    if args.inputs is None and args.n < 1:
        raise EdgecError(f"--n must be at least 1 (got {args.n})")
    if args.matrix is not None:
        from edgec.cli.scale import cmd_verify_matrix

        if args.target or args.inputs:
            raise EdgecError("edgec verify --matrix: use --targets (a list), not --target or "
                             "--inputs")
        return cmd_verify_matrix(args)
    if args.model is None:
        raise EdgecError("edgec verify: name a MODEL (or --matrix DIR --targets T1,T2)")
    if args.targets or args.address or args.workers:
        raise EdgecError("edgec verify: --targets, --address and --workers go with --matrix DIR")
    if args.cuda:
        if args.target:
            raise EdgecError("edgec verify: --cuda and --target are exclusive (a GPU or its "
                             "host build, or a Cortex-M board)")
        view = compile_cuda_from_args(args).on("cuda" if args.cuda == "gpu" else "cpu")
        ref = make_reference(view, args.model)
        sets = input_sets(args.inputs, verify_ports(view, ref, None)) if args.inputs else None
        rep = verify(view, inputs=sets, n=args.n, seed=args.seed, rtol=args.rtol,
                     atol=args.atol, reference=ref)
        rep.where = view.where
    else:
        target = load_target(args.target) if args.target else None
        m = compile_from_args(args)
        ref = make_reference(m, args.model)
        sets = input_sets(args.inputs, verify_ports(m, ref, target)) if args.inputs else None
        rep = verify(m, inputs=sets, n=args.n, seed=args.seed, rtol=args.rtol, atol=args.atol,
                     target=target, reference=ref)
    if args.json:
        print(json.dumps(rep.to_json() | {"source": args.model}, indent=2, sort_keys=True))
    else:
        print(rep.format(args.model))
    return 0 if rep.ok else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.backend.report import node_rows, summary_rows
    from edgec.tables import format_table

    m = compile_from_args(args)
    g = m.graph
    headers = ["#", "node", "op", "inputs", "output", "params", "MACs", "arena offset"]
    rows = node_rows(g)
    if args.json:
        keys = ["index", "node", "op", "inputs", "output", "params", "macs", "arena_offset"]
        print(json.dumps({
            "model": args.model, "opset": g.opset,
            "nodes": [dict(zip(keys, r, strict=True)) for r in rows],
            "report": m.report(),
            "state": [{"input": a, "output": b} for a, b in g.state],
        }, indent=2, sort_keys=True, default=str))
        return 0
    print(f"{args.model}: {len(g.nodes)} nodes after optimisation (opset {g.opset})")
    print(format_table(headers, rows, align="rllllrrr"))
    print()
    print(format_table(["total", ""], summary_rows(m.report()), align="ll"))
    if g.state:
        print("state carried by _step: " + ", ".join(f"{a} <- {b}" for a, b in g.state))
    return 0
