"""Helpers every command group shares: the model arguments, compiling from them, options,
state pairs, input files and output directories. Imports no other ``edgec.cli`` module."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgec.api import CompiledModel
from edgec.api import compile as compile_model
from edgec.backend.c_emit import Port
from edgec.backend.cuda.model import CudaModel
from edgec.errors import EdgecError
from edgec.frontend.onnx_import import parse_input_shapes

#: the model sources every command accepts (front-ends add theirs here)
MODEL_SOURCES: list[str] = [
    "MODEL.onnx (weights may sit in a .onnx.data file next to it)",
    "MODEL.pt2 (a torch.export program)",
    "FILE.py:FN (FN() returns (torch module, example inputs))",
    "MODEL.tflite (float32 or int8)",
    "MODEL.keras, MODEL.h5 or a SavedModel directory (needs edgec[tf])",
]


def model_help() -> str:
    return "the model: " + "; ".join(MODEL_SOURCES)


def add_model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    """``optional``: MODEL may be absent (``verify --matrix`` names a directory instead)."""
    p.add_argument("model", metavar="MODEL", help=model_help(), nargs="?" if optional else None)
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME:D1xD2x...",
        help="static shape for an input with dynamic dimensions, positive integers "
        "(repeatable)",
    )
    p.add_argument(
        "--name", help="C name prefix of the generated API (default: from the file name)"
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="structure-aware lowering option (repeatable), e.g. phm=factored, lsm=regen, "
        "sparse=csr; an unknown key is an error that lists the known ones",
    )
    p.add_argument(
        "--state",
        action="append",
        metavar="IN:OUT",
        help="carry graph input IN from graph output OUT between <name>_step calls "
        "(repeatable; recurrent state is detected automatically)",
    )


ADDRESS_HELP = (
    "a running Ray cluster: ray://HOST:PORT (Ray client) or 'auto' (this node belongs to the "
    "cluster); default: start Ray on this machine, one worker per core"
)


def add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", metavar="ray://HOST:PORT|auto", help=ADDRESS_HELP)
    p.add_argument("--workers", type=int, metavar="N",
                   help="size of the local Ray (default: this machine's cores)")


def add_tolerance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rtol", type=float, default=1e-4,
        help="relative tolerance: an output element passes when |got - expected| <= "
        "atol + rtol * |expected| (default: %(default)g)",
    )
    p.add_argument(
        "--atol", type=float, default=None,
        help="absolute tolerance, the floor for elements near zero (default: 1e-05; for an "
        "output dequantized from int8 checked against onnxruntime, 2 of its LSB)",
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


def _compile_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "input_shapes": parse_input_shapes(args.input_shape),
        "name": args.name,
        "state": parse_state(args.state),
        "options": parse_options(getattr(args, "option", None)),
    }


def compile_from_args(args: argparse.Namespace) -> CompiledModel:
    """Compile the model the command's model arguments name."""
    m = compile_model(args.model, **_compile_kwargs(args))
    assert isinstance(m, CompiledModel)
    return m


def compile_cuda_from_args(args: argparse.Namespace) -> CudaModel:
    """The same for the CUDA target (``edgec compile --target cuda``)."""
    m = compile_model(args.model, target="cuda", **_compile_kwargs(args))
    assert isinstance(m, CudaModel)
    return m


def parse_options(specs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in specs or []:
        k, sep, v = s.partition("=")
        if not sep or not k:
            raise EdgecError(f"--option '{s}': expected KEY=VALUE (e.g. phm=factored)")
        out[k.strip()] = v.strip()
    return out


def output_dir(path: str | os.PathLike[str]) -> Path:
    """``-o DIR``: create it (and its parents) now, so an unwritable place is a one-line error
    before any work is done."""
    d = Path(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgecError(f"-o {d}: cannot create the output directory ({exc.strerror})") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise EdgecError(f"-o {d}: the output directory is not writable")
    return d


def load_inputs(path: str, names: list[str]) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such file")
    try:
        data = np.load(p)
    except ValueError:  # numpy's message for a file that is not .npy/.npz offers allow_pickle
        raise EdgecError(
            f"{p}: cannot read inputs: not a .npy or .npz file (numpy.save / numpy.savez)"
        ) from None
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


INPUTS_RULE = (
    "an array of the input's shape is one input set; a leading axis N gives N sets; an input "
    "whose first dimension is 1 also takes (N, ...) without the 1"
)


def _port_values(path: str, p: Port, raw: np.ndarray) -> np.ndarray:
    """``raw`` as the port's element type: float32, int8 codes for an int8 port (float data
    for an int8 port is refused: quantize it with the port's scale and zero point first), or
    int32 integers for an index port."""
    a = np.asarray(raw)
    if p.np_dtype is np.float32:
        return a.astype(np.float32)
    if p.dtype == "int32":
        if a.dtype.kind not in "iu" or a.size and (a.min() < -(2**31) or a.max() >= 2**31):
            raise EdgecError(f"{path}: input '{p.name}' is an int32 index port: give integers, "
                             f"got {a.dtype} values")
        return a.astype(np.int32)
    if a.dtype.kind not in "iu" or a.size and (a.min() < -128 or a.max() > 127):
        raise EdgecError(
            f"{path}: input '{p.name}' is an int8 port (scale {p.scale}, zero point "
            f"{p.zero_point}): give int8 codes, got {a.dtype} values"
            + (f" in [{a.min()}, {a.max()}]" if a.size and a.dtype.kind in "iu" else "")
        )
    return a.astype(np.int8)


def input_sets(path: str, ports: Sequence[Port]) -> list[dict[str, np.ndarray]]:
    """The input sets in ``path`` (.npy for one input, .npz keyed by input name) for ``ports``,
    by one rule for every command (:data:`INPUTS_RULE`); a stateful model's sets are one
    sequence."""
    raw = load_inputs(path, [p.name for p in ports])
    arrays: dict[str, np.ndarray] = {}
    for p in ports:
        v = _port_values(path, p, raw[p.name])
        shape = tuple(p.shape)
        if v.shape == shape:
            v = v[None]
        elif v.ndim == len(shape) + 1 and v.shape[1:] == shape:
            pass
        elif shape and shape[0] == 1 and v.ndim == len(shape) and v.shape[1:] == shape[1:]:
            v = v[:, None]  # N sets for a batch-1 input, given without the 1
        else:
            raise EdgecError(
                f"{path}: input '{p.name}' has shape {v.shape}; the model expects {shape} "
                f"({INPUTS_RULE})"
            )
        arrays[p.name] = v
    counts = sorted({v.shape[0] for v in arrays.values()})
    if len(counts) != 1:
        raise EdgecError(f"{path}: the inputs hold different numbers of sets {counts}")
    n = counts[0]
    if n == 0:
        raise EdgecError(f"{path}: no input sets (a leading axis of length 0)")
    return [{k: v[i] for k, v in arrays.items()} for i in range(n)]
