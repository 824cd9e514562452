"""edgec's int8 kernels on an emulated Cortex-M4F: ``python -m bench.int8 [--layers-only]
[--markdown]``.

Single int8 layers of the sizes the issue's goals name (Dense 256x256 and 64x64, Conv 16x16x16 ->
32 3x3, depthwise 3x3 on 32 channels at 16x16), each built twice for ``cortex-m4f``: as shipped
(the DSP kernels, SMLAD/SXTB16) and with ``-DEDGEC_NO_DSP`` (the generic C the M0/M3 and the host
run), measured with :func:`edgec.mcu.profile.profile`: exact instructions per inference (QEMU
plugin) and cycles estimated from the Cortex-M4 TRM timing table. Next to them, CMSIS-NN's
numbers as measured once on the same QEMU board and counted the same way (v7.0.0-43, gcc 12.2
-O2; /work/shared/README.md): reference constants quoted here, not re-measured by this script.
Goals (int8, Dense and Conv): >= 0.6 MACs per estimated cycle and <= 0.75 instructions per MAC.

Then the bench models from Keras (``bench/int8_models.py``: a DS-CNN keyword spotter on 49x10
MFCCs, a 1-D CNN, an MLP 64-128-128-64, an LSTM), each converted by TensorFlow to float and to
int8 TFLite and compiled by edgec for the M4F: MACs, instructions, estimated cycles, MACs per
cycle, the model's own code bytes (its C compiled alone: kernels and run function, no weights,
tables, startup or libc; goal <= 8 KB for the DS-CNN), weights and the whole firmware's flash,
float and int8 side by side. Needs TensorFlow (``edgec[tf]``) for this part.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import edgec
from edgec.api import compile_graph
from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.mcu import project as firmware
from edgec.mcu.profile import ProfileReport, profile
from edgec.mcu.targets import load_target
from edgec.ops.interpret import infer_shapes
from edgec.tables import format_table, markdown_table

TARGET = "cortex-m4f"
GOAL_MAC_PER_CYCLE = 0.6
GOAL_INSTR_PER_MAC = 0.75

#: CMSIS-NN v7.0.0-43 on QEMU mps2-an386, exact instruction counts, cycles from the same M4 TRM
#: table (/work/shared/README.md): (instructions per MAC, MACs per estimated cycle). Reference
#: constants, not measured by this script.
CMSIS_NN: dict[str, tuple[float, float]] = {
    "dense 256x256": (2.07, 0.39),
    "dense 64x64": (2.68, 0.30),
    "conv 16x16x16->32 3x3": (2.14, 0.38),
    "depthwise 3x3 32ch 16x16": (8.07, 0.10),
}


def _quant(rng: np.random.Generator) -> Quant:
    return Quant.per_tensor(float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 21)))


def _layer(name: str, op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], axis: int,
           **attrs: Any) -> Graph:
    """One int8 layer with random per-channel weights, int32 bias and quantization."""
    rng = np.random.default_rng(0)
    g = Graph(name.replace(" ", "_").replace(">", "").replace("-", "_"))
    q_x = _quant(rng)
    g.tensors["x"] = Tensor("x", x_shape, "int8", quant=q_x)
    g.inputs.append("x")
    n = w_shape[axis]
    s_w = rng.uniform(0.002, 0.02, n).astype(np.float32)
    w = g.add_const("w", rng.integers(-127, 128, w_shape).astype(np.int8),
                    Quant(s_w, np.zeros(n, np.int32), axis))
    b = g.add_const("b", rng.integers(-4000, 4000, n).astype(np.int32),
                    Quant((np.float32(q_x.scale[0]) * s_w).astype(np.float32),
                          np.zeros(n, np.int32), 0))
    g.tensors["y"] = Tensor("y", (), "int8", quant=_quant(rng))
    g.nodes.append(Node(op, "layer", ["x", w, b], ["y"], attrs))
    g.outputs.append("y")
    infer_shapes(g)
    return g


LAYERS: dict[str, Callable[[], Graph]] = {
    "dense 256x256": lambda: _layer("dense 256x256", "QFullyConnected", (1, 256), (256, 256), 0),
    "dense 64x64": lambda: _layer("dense 64x64", "QFullyConnected", (1, 64), (64, 64), 0),
    "conv 16x16x16->32 3x3": lambda: _layer(
        "conv 16x16x16->32 3x3", "QConv2D", (1, 16, 16, 16), (32, 3, 3, 16), 0,
        strides=[1, 1], pads=[1, 1, 1, 1]),
    "depthwise 3x3 32ch 16x16": lambda: _layer(
        "depthwise 3x3 32ch 16x16", "QDepthwiseConv2D", (1, 16, 16, 32), (1, 3, 3, 32), 3,
        strides=[1, 1], pads=[1, 1, 1, 1], depth_multiplier=1),
}
#: the layers the goals apply to
GOAL_LAYERS = ("dense 256x256", "dense 64x64", "conv 16x16x16->32 3x3")


@dataclass
class LayerRow:
    name: str
    dsp: ProfileReport
    generic: ProfileReport

    def cells(self) -> list[str]:
        d, gen = self.dsp, self.generic
        ref_ipm, ref_mpc = CMSIS_NN[self.name]
        goal = "-"
        if self.name in GOAL_LAYERS:
            ok_c = d.macs_per_cycle >= GOAL_MAC_PER_CYCLE
            ok_i = d.instructions_per_mac <= GOAL_INSTR_PER_MAC
            goal = (f"MAC/cyc {'met' if ok_c else 'MISSED'}, "
                    f"instr/MAC {'met' if ok_i else 'MISSED'}")
        return [
            self.name, f"{d.macs:,}", f"{d.instructions_per_inference:,}",
            f"{d.instructions_per_mac:.3f}", f"{d.estimated_cycles:,}",
            f"{d.macs_per_cycle:.3f}", f"{gen.instructions_per_mac:.3f}",
            f"{gen.macs_per_cycle:.3f}", f"{ref_ipm:.2f}", f"{ref_mpc:.2f}", goal,
        ]


LAYER_HEADERS = (
    "layer", "MACs", "instr", "instr/MAC", "est. cycles", "MAC/cycle", "generic instr/MAC",
    "generic MAC/cycle", "CMSIS-NN instr/MAC (ref)", "CMSIS-NN MAC/cycle (ref)", "goal",
)  # fmt: skip


def measure_layers(names: Sequence[str]) -> list[LayerRow]:
    target = load_target(TARGET)
    rows = []
    for n in names:
        cm = compile_graph(LAYERS[n]())
        dsp = profile(cm, target, repeat=1, timeout_s=600)
        generic = profile(cm, target, repeat=1, timeout_s=600, extra_cflags=["-DEDGEC_NO_DSP"])
        rows.append(LayerRow(n, dsp, generic))
        print(f"measured {n}", file=sys.stderr)
    return rows


# -- Keras bench models ---------------------------------------------------------------------

#: the Keras bench models (built by bench/int8_models.py)
MODELS = ("ds_cnn", "cnn1d", "mlp", "lstm")
#: how a model's int8 TFLite is made when it is not the plain full-integer conversion
ROUTES = {
    "lstm": "int8 from the same Keras LSTM built with unroll=True (same weights): the converter "
    "writes the 16 steps as FULLY_CONNECTED/ADD/MUL/LOGISTIC/TANH/SPLIT, int8 in edgec; "
    "TensorFlow 2.21's full-integer converter crashes (SIGSEGV) on the fused "
    "UNIDIRECTIONAL_SEQUENCE_LSTM that the float row runs",
}
#: the flash goal for the DS-CNN's model code (weights excluded), bytes
GOAL_DS_CNN_CODE = 8192

MODEL_HEADERS = (
    "model", "type", "MACs", "instr", "instr/MAC", "est. cycles", "MAC/cycle", "model code B",
    "weights B", "flash B", "float instr", "float est. cycles", "int8 speed-up (cycles)",
)  # fmt: skip


def convert_isolated(name: str, int8: bool, out: Path) -> str | None:
    """Build bench model ``name`` (seeded) and convert it in a child process (TensorFlow's
    converter can crash the process); None on success, else what went wrong."""
    import os
    import subprocess

    cmd = [sys.executable, "-m", "bench.int8", "--convert", name, "int8" if int8 else "float",
           str(out)]
    # TensorFlow's converter depends on Python's hash seed here (with some seeds it leaves the
    # unrolled LSTM's first SPLIT in float): fix it for a reproducible table
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == 0 and out.is_file():
        return None
    tail = " ".join(proc.stderr.strip().splitlines()[-1:])
    return f"TensorFlow's converter failed (exit status {proc.returncode}) {tail}".strip()


def _convert_main(name: str, kind: str, out: str) -> int:
    from bench.int8_models import keras_model, tflite

    int8 = kind == "int8"
    model = keras_model(name, unroll=True) if name == "lstm" and int8 else keras_model(name)
    Path(out).write_bytes(tflite(model, int8=int8))
    return 0


def model_code_bytes(cm: Any, target: Any) -> int:
    """Bytes of machine code of the model's own C (its .text sections: kernels, helpers, run
    function; no weights, tables, startup or libc), compiled alone with the firmware's flags."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="edgec-code-") as tmp:
        cm.write(tmp)
        obj = Path(tmp) / "m.o"
        subprocess.run(["arm-none-eabi-gcc", *target.cpu_flags, *firmware.cflags_for(target),
                        "-c", f"{cm.name}.c", "-o", str(obj)], cwd=tmp, check=True,
                       capture_output=True)
        out = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], check=True,
                             capture_output=True, text=True).stdout
    return sum(int(f[1]) for f in (ln.split() for ln in out.splitlines())
               if len(f) >= 2 and f[0].startswith(".text") and f[1].isdigit())


def measure_models(names: Sequence[str] | None = None) -> tuple[list[list[str]], list[str]]:
    target = load_target(TARGET)
    rows: list[list[str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-int8-") as tmp:
        for name in names or MODELS:
            reps: dict[str, ProfileReport] = {}
            code: dict[str, int] = {}
            for kind in ("float", "int8"):
                path = Path(tmp) / f"{name}_{kind}.tflite"
                err = convert_isolated(name, kind == "int8", path)
                if err is None:
                    try:
                        cm = edgec.compile(str(path), name=f"{name}_{kind}")
                        reps[kind] = profile(cm, target, repeat=1, timeout_s=600)
                        code[kind] = model_code_bytes(cm, target)
                        if kind == "int8":
                            floats = sorted({n.op for n in cm.graph.nodes if any(
                                cm.graph.tensors[t].dtype == "float32" for t in n.outputs)})
                            notes.append(f"{name} int8 ops left in float: "
                                         f"{', '.join(floats) or 'none'}")
                    except EdgecError as exc:
                        err = " ".join(str(exc).split())
                if err is not None:
                    notes.append(f"not compiled: {name} {kind}: {err}")
                print(f"measured {name} {kind}", file=sys.stderr)
            f = reps.get("float")
            for kind, r in reps.items():
                speed = (f"{f.estimated_cycles / r.estimated_cycles:.2f}x"
                         if f is not None and kind == "int8" else "-")
                rows.append([
                    name, kind, f"{r.macs:,}", f"{r.instructions_per_inference:,}",
                    f"{r.instructions_per_mac:.2f}", f"{r.estimated_cycles:,}",
                    f"{r.macs_per_cycle:.3f}", f"{code[kind]:,}", f"{r.size.weights:,}",
                    f"{r.size.flash_total:,}",
                    f"{f.instructions_per_inference:,}" if f else "-",
                    f"{f.estimated_cycles:,}" if f else "-", speed,
                ])
            if name in ROUTES and "int8" in reps:
                notes.append(f"{name} int8 route: {ROUTES[name]}")
            if name == "ds_cnn" and "int8" in code:
                ok = code["int8"] <= GOAL_DS_CNN_CODE
                notes.append(f"ds_cnn int8 model code {code['int8']:,} B: goal <= "
                             f"{GOAL_DS_CNN_CODE:,} B {'met' if ok else 'MISSED'}")
    return rows, notes


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], md: bool) -> str:
    if md:
        return markdown_table(headers, rows, "l" + "r" * (len(headers) - 2) + "l")
    return format_table(headers, rows, align="l" + "r" * (len(headers) - 2) + "l")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.split("\n")[0])
    ap.add_argument("--layers", help=f"comma-separated layers (default: all: {', '.join(LAYERS)})")
    ap.add_argument("--layers-only", action="store_true", help="skip the Keras bench models")
    ap.add_argument("--models", help="comma-separated Keras bench models (default: all)")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--convert", nargs=3, metavar=("MODEL", "KIND", "OUT"),
                    help=argparse.SUPPRESS)  # internal: one conversion in a child process
    ns = ap.parse_args(argv)
    if ns.convert:
        return _convert_main(*ns.convert)
    names = ns.layers.split(",") if ns.layers else list(LAYERS)
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise SystemExit(f"unknown layer(s) {unknown} (known: {', '.join(LAYERS)})")
    rows = measure_layers(names)
    print(_table(LAYER_HEADERS, [r.cells() for r in rows], ns.markdown))
    missed = [r.name for r in rows if r.name in GOAL_LAYERS
              and (r.dsp.macs_per_cycle < GOAL_MAC_PER_CYCLE
                   or r.dsp.instructions_per_mac > GOAL_INSTR_PER_MAC)]
    target = load_target(TARGET)
    print(
        f"\n{TARGET} on QEMU {target.qemu_machine}; {' '.join(firmware.cflags_for(target))}; "
        "instructions exact (QEMU TCG plugin), cycles estimated from the Cortex-M4 TRM table "
        "(zero wait states). generic: the same build with -DEDGEC_NO_DSP. CMSIS-NN columns: "
        "reference constants measured once the same way (v7.0.0-43), not by this script."
    )
    if not ns.layers_only:
        mrows, notes = measure_models(ns.models.split(",") if ns.models else None)
        print()
        print(_table(MODEL_HEADERS, mrows, ns.markdown))
        for n in notes:
            print(n)
        missed += [n for n in notes if "MISSED" in n]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
