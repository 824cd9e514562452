"""Helpers every command group shares: the model arguments, compiling from them, options,
state pairs and input files. Imports no other ``edgec.cli`` module."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgec.api import CompiledModel
from edgec.api import compile as compile_model
from edgec.errors import EdgecError
from edgec.frontend.onnx_import import parse_input_shapes


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="model: .onnx (weights may sit in a .onnx.data file next to it), .tflite, "
        ".keras/.h5 or a SavedModel directory (needs edgec[tf]), .pt2, or file.py:function",
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


def parse_state(specs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    if not specs:
        return None
    pairs = []
    for s in specs:
        a, sep, b = s.partition(":")
        if not sep or not a or not b:
            raise EdgecError(f"--state '{s}': expected IN:OUT (graph input and graph output names)")
        pairs.append((a, b))
    return pairs


def compile_from_args(args: argparse.Namespace) -> CompiledModel:
    """Compile the model the command's model arguments name."""
    return compile_model(
        args.model,
        input_shapes=parse_input_shapes(args.input_shape),
        name=args.name,
        state=parse_state(args.state),
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


def load_inputs(path: str, names: list[str]) -> dict[str, np.ndarray]:
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
