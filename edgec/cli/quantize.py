"""``edgec quantize``: a float model → an int8 model file (QDQ .onnx or .tflite)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edgec.cli.common import model_help
from edgec.errors import EdgecError

Handler = Callable[[argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    p = sub.add_parser(
        "quantize",
        help="quantize a float model to int8 (.onnx QDQ or .tflite) from calibration data",
        description="Post-training int8 quantization: per-channel symmetric int8 weights, "
        "per-tensor asymmetric int8 activations from their ranges over the calibration sets, "
        "int32 biases, TFLite's fixed-point arithmetic. Writes a QDQ .onnx (onnxruntime runs "
        "it) or a .tflite (the TFLite interpreter runs it to the same bytes as edgec's C), and "
        "prints the accuracy change vs the float model on the calibration sets. Ops without "
        "an int8 kernel stay float (listed); in a .tflite they are float builtins between "
        "DEQUANTIZE and QUANTIZE (one without a TFLite builtin, e.g. GRU: write .onnx).",
    )
    p.add_argument("model", metavar="MODEL", help=model_help())
    p.add_argument("--calibration", required=True, metavar="DATA.npz",
                   help=".npz keyed by input name (.npy for a one-input model): per input an "
                   "array of its shape with a leading axis N for N sets")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the int8 model: FILE.onnx (QDQ) or FILE.tflite")
    p.add_argument("--method", choices=("minmax", "percentile"), default="minmax",
                   help="activation ranges: min/max over the sets, or percentiles")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="with --method percentile: ranges from the (100-P)th to the Pth "
                   "percentile")
    p.add_argument("--per-tensor", action="store_true",
                   help="one scale per weight tensor instead of one per output channel")
    p.add_argument("--input-shape", action="append", metavar="NAME:D1xD2x...",
                   help="static shape for an input with dynamic dimensions (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return {"quantize": cmd_quantize}


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgec.api import load_graph
    from edgec.frontend.onnx_import import parse_input_shapes
    from edgec.quantize import quantize_graph

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".onnx", ".tflite"):
        raise EdgecError(f"-o {out}: write the int8 model as .onnx (QDQ) or .tflite")
    if not out.parent.is_dir():
        raise EdgecError(f"-o {out}: directory {out.parent} does not exist")
    g = load_graph(args.model, parse_input_shapes(args.input_shape))
    q = quantize_graph(g, args.calibration, method=args.method, percentile=args.percentile,
                       per_channel=not args.per_tensor)
    if suffix == ".onnx":
        from edgec.quantize.onnx_writer import to_onnx

        data = to_onnx(q.qdq).SerializeToString()
    else:
        from edgec.quantize.tflite_writer import to_tflite

        data = to_tflite(q.lowered)
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise EdgecError(f"-o {out}: cannot write it ({exc.strerror or exc})") from None
    if args.json:
        print(json.dumps({"output": str(out), **q.report.as_dict()}, indent=2))
    else:
        print(q.report.format())
        print(f"wrote {out} ({len(data)} bytes)")
    return 0
