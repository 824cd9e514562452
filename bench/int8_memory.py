"""int8 RAM: edgec's arena plus its input and output buffers vs TFLite Micro's smallest working
arena (which holds the input and output tensors too) on the same int8 .tflite models.

Goals (issue 10): ratio <= 0.75 everywhere, <= 0.5 on CNNs whose peak sits in the early
high-resolution layers (edgec runs that stage patch by patch; the halo recompute is reported in
MACs). Flash: the Cortex-M4F firmware's flash (code + int8 weights + startup and I/O), next to the
int8 weight bytes that firmware links (the report's ``weight_bytes_dsp``: the DSP kernels' tables,
not the generic C's). RAM is deterministic, so tests/test_int8_memory.py asserts the ratios.

    python -m bench.int8_memory [--models ds_cnn,mlp] [--no-flash] [--markdown]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import edgec
from bench.tflm import smallest_arena
from edgec.tables import format_table, markdown_table

#: the ratio goal of each bench model (edgec arena + io) / (TFLite Micro arena)
GOALS = {"ds_cnn": 0.75, "cnn1d": 0.75, "mlp": 0.75, "mbnet_early": 0.5}

HEADERS = ["model", "edgec arena + io B", "(no patches)", "TFLM arena B", "ratio", "goal",
           "patch recompute MACs", "MACs", "int8 weights B", "flash B"]


@dataclass
class Row:
    model: str
    arena: int
    io: int
    arena_no_patches: int
    tflm: int
    recompute: int
    macs: int
    weight_bytes: int
    flash: int | None

    @property
    def ours(self) -> int:
        return self.arena + self.io

    @property
    def ratio(self) -> float:
        return self.ours / self.tflm

    def cells(self) -> list[str]:
        return [self.model, f"{self.ours:,} ({self.arena:,} + {self.io:,})",
                f"{self.arena_no_patches + self.io:,}", f"{self.tflm:,}", f"{self.ratio:.2f}",
                f"<= {GOALS.get(self.model, 0.75)}", f"{self.recompute:,}", f"{self.macs:,}",
                f"{self.weight_bytes:,}", "-" if self.flash is None else f"{self.flash:,}"]


def io_bytes(cm: edgec.CompiledModel) -> int:
    g = cm.graph
    return sum(g.tensor(t).nbytes for t in [*g.inputs, *g.outputs])


def firmware_flash(cm: edgec.CompiledModel, target: str = "cortex-m4f") -> int:
    """Flash bytes of the model's firmware for ``target`` (code, weights, startup, I/O)."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.targets import load_target

    with tempfile.TemporaryDirectory() as tmp:
        build = build_firmware(cm, load_target(target), Path(tmp) / "fw")
        return int(build.flash_used)


def m4f_weight_bytes(rep: dict) -> int:
    """The weight bytes the Cortex-M4F firmware links: an int8 model's DSP build path."""
    return int(rep.get("weight_bytes_dsp", rep["weight_bytes"]))


def measure(name: str, blob: bytes, flash: bool = True) -> Row:
    cm = edgec.compile(blob, name=name)
    plain = edgec.compile(blob, name=name, options={"patches": "off"})
    rep = cm.report()
    return Row(name, rep["arena_bytes"], io_bytes(cm), plain.report()["arena_bytes"],
               smallest_arena(blob), rep.get("structure", {}).get("patch_recompute_macs", 0),
               rep["macs"], m4f_weight_bytes(rep), firmware_flash(cm) if flash else None)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.int8_models import MODELS, keras_model, tflite

    ap = argparse.ArgumentParser(prog="python -m bench.int8_memory",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--models", help=f"comma-separated, of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--no-flash", action="store_true", help="skip the firmware builds")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else list(MODELS)
    rows = [measure(n, tflite(keras_model(n)), flash=not args.no_flash) for n in names]
    cells = [r.cells() for r in rows]
    if args.markdown:
        print(markdown_table(HEADERS, cells, "l" + "r" * (len(HEADERS) - 1)))
    else:
        print(format_table(HEADERS, cells))
    return 0 if all(r.ratio <= GOALS.get(r.model, 0.75) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
