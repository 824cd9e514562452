"""The ``edgec`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgec import __version__
from edgec.errors import EdgecError

EPILOG = """\
examples:
  edgec compile model.onnx -o build/model          write build/model/<name>.{h,c}
  edgec compile model.onnx -o gen --input-shape x:1x3x32x32 --name net
  edgec verify model.onnx --n 20                   C on the host vs onnxruntime
  edgec inspect model.onnx                         per-node table and totals

The generated C is C99 with no dynamic allocation: add <name>.c to your Makefile/CMake project
(link with -lm) and call <name>_run(), or <name>_reset()/<name>_step() for stateful models.
Exit status: 0 ok, 1 verification mismatch, 2 bad input (model, options), 3 internal error.
"""


#: modules that add sub-commands: each has ``add_parsers(sub, add_model_args) -> {name: handler}``
EXTRA_COMMAND_MODULES: tuple[str, ...] = (
    "edgec.cli_firmware", "edgec.cli_profile", "edgec.cli_mpc"
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", help="model file (.onnx; weights may sit in a .onnx.data file next to it)"
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME:D1xD2x...",
        help="static shape for an input with dynamic dimensions (repeatable)",
    )
    p.add_argument(
        "--name", help="C name prefix of the generated API (default: from the file name)"
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="structure-aware lowering option for library modules (repeatable), e.g. "
        "phm=factored, lsm=regen",
    )
    p.add_argument(
        "--state",
        action="append",
        metavar="IN:OUT",
        help="carry graph input IN from graph output OUT between <name>_step calls "
        "(repeatable; recurrent state is detected automatically)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edgec",
        description="Compile trained neural networks to small, fast, dependency-free C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"edgec {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser(
        "compile",
        help="compile a model to <name>.h / <name>.c",
        description="Compile a model to C99 sources (<name>.h, <name>.c).",
    )
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser(
        "verify",
        help="run the generated C on the host and compare with onnxruntime",
        description="Build the generated C for the host, run it on N inputs and "
        "compare every output with onnxruntime. Exit 1 on mismatch.",
    )
    _add_model_args(p)
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
    _add_model_args(p)

    for mod in EXTRA_COMMAND_MODULES:
        COMMANDS.update(importlib.import_module(mod).add_parsers(sub, _add_model_args))
    return ap


def _parse_state(specs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    if not specs:
        return None
    pairs = []
    for s in specs:
        a, sep, b = s.partition(":")
        if not sep or not a or not b:
            raise EdgecError(f"--state '{s}': expected IN:OUT (graph input and graph output names)")
        pairs.append((a, b))
    return pairs


def _compile(args: argparse.Namespace):
    import edgec
    from edgec.frontend.onnx_import import parse_input_shapes

    return edgec.compile(
        args.model,
        input_shapes=parse_input_shapes(args.input_shape),
        name=args.name,
        state=_parse_state(args.state),
        options=parse_options(getattr(args, "option", None)),
    )


def parse_options(specs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in specs or []:
        k, sep, v = s.partition("=")
        if not sep or not k:
            raise EdgecError(f"--option '{s}': expected KEY=VALUE (e.g. phm=factored)")
        out[k.strip()] = v.strip()
    return out


def cmd_compile(args: argparse.Namespace) -> int:
    from edgec.report import format_table, summary_rows

    t0 = time.perf_counter()
    m = _compile(args)
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


def _load_inputs(path: str, names: list[str]) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such file")
    try:
        data = np.load(p)
    except Exception as exc:
        raise EdgecError(f"{p}: cannot read inputs ({exc})") from None
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise EdgecError(f"{p}: a .npy holds one array; the model has inputs {names}: use .npz")
        return {names[0]: data}
    missing = [n for n in names if n not in data.files]
    if missing:
        raise EdgecError(
            f"{p}: missing input(s) {', '.join(missing)}; it holds {', '.join(data.files)}"
        )
    return {n: data[n] for n in names}


def cmd_verify(args: argparse.Namespace) -> int:
    from edgec.report import format_table, progress

    try:
        import onnxruntime as ort
    except ImportError:
        raise EdgecError("verify needs onnxruntime: pip install onnxruntime") from None
    m = _compile(args)
    shapes = {p.name: p.shape for p in m.cmodel.inputs}
    if args.inputs:
        raw = _load_inputs(args.inputs, m.input_names)
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
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgecError(
            f"{args.model}: onnxruntime cannot load it: {str(exc).splitlines()[0]}"
        ) from None
    out_names = m.output_names
    where = "host"
    if args.target:
        from edgec.cli_firmware import target_results

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
        f"verify {args.model}: edgec C ({where}) vs onnxruntime, {len(samples)} input set(s), "
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


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.report import format_table, node_rows, summary_rows

    m = _compile(args)
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compile": cmd_compile,
    "verify": cmd_verify,
    "inspect": cmd_inspect,
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.cmd:
        ap.print_help()
        return 2
    try:
        return COMMANDS[args.cmd](args)
    except EdgecError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"edgec: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an edgec bug: still one line unless debugging
        if os.environ.get("EDGEC_DEBUG"):
            raise
        print(
            f"edgec: internal error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            " (set EDGEC_DEBUG=1 for the traceback; please report it)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
