"""Keras recurrent layers quantized by edgec (int8 loops) on an emulated Cortex-M4F:
``python -m bench.int8_rnn [--markdown]``.

SimpleRNN, GRU and LSTM with 20 units on a 50 x 6 sequence, then Dense(2), batch 1, not
unrolled (TensorFlow writes a WHILE loop; edgec a C ``for`` loop). Each model is compiled by
edgec twice, float and ``quantize="int8"`` (64 calibration sets, standard normal), and profiled
with :func:`edgec.mcu.profile.profile`: exact instructions per inference (QEMU plugin), cycles
estimated from the Cortex-M4 TRM table, flash (weights and whole firmware) and arena bytes; the
int8 error is the largest |int8 − float| over the calibration sets, relative to the float
outputs' range. A per-layer build of the int8 GRU gives what its input Quantize and output
Dequantize cost per element, which prices the alternative design (the state float at the Scan
boundary, quantized at the body's entry and dequantized at its exit: H of each per state per
step).
Needs TensorFlow (``edgec[tf]``), arm-none-eabi-gcc and qemu-system-arm.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

import edgec
from edgec.mcu.profile import profile
from edgec.mcu.targets import load_target
from edgec.tables import format_table, markdown_table

TARGET = "cortex-m4f"
STEPS, FEAT, UNITS = 50, 6, 20
LAYERS = ("SimpleRNN", "GRU", "LSTM")
HEADERS = ["model", "kind", "instructions", "est. cycles", "weights B", "flash B", "arena B",
           "int8 speed-up", "max |int8 - float| / range"]


def keras_model(kind: str) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential([tf.keras.Input((STEPS, FEAT), batch_size=1),
                                getattr(tf.keras.layers, kind)(UNITS),
                                tf.keras.layers.Dense(2)])


def calibration() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 1, STEPS, FEAT)).astype(np.float32)


def measure(kinds: Sequence[str] = LAYERS) -> tuple[list[list[str]], list[str]]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    target = load_target(TARGET)
    cal = calibration()
    rows: list[list[str]] = []
    notes: list[str] = []
    for kind in kinds:
        model = keras_model(kind)
        name = f"{kind.lower()}{UNITS}"
        fm = edgec.compile(model, name=f"{name}_float")
        qm = edgec.compile(model, quantize="int8", calibration=cal, name=f"{name}_int8")
        want = np.concatenate([fm.run(x) for x in cal])
        got = np.concatenate([qm.run(x) for x in cal])
        rel = float(np.abs(got - want).max() / (want.max() - want.min()))
        reps = {"float": profile(fm, target, repeat=1, timeout_s=600),
                "int8": profile(qm, target, repeat=1, timeout_s=600)}
        for label, r in reps.items():
            cm = fm if label == "float" else qm
            speed = (f"{reps['float'].estimated_cycles / r.estimated_cycles:.2f}x"
                     if label == "int8" else "-")
            rows.append([f"{kind}({UNITS}) {STEPS}x{FEAT}", label,
                         f"{r.instructions_per_inference:,}", f"{r.estimated_cycles:,}",
                         f"{r.size.weights:,}", f"{r.size.flash_total:,}",
                         f"{cm.cmodel.report['arena_bytes']:,}", speed,
                         f"{100 * rel:.2f}%" if label == "int8" else "-"])
        if kind == "GRU":
            layered = profile(qm, target, repeat=1, timeout_s=600, per_layer=True)
            nodes = {n.name: n for n in qm.graph.nodes}
            cost = {}
            for op in ("Quantize", "Dequantize"):
                lp = next((x for x in layered.layers if x.op == op), None)
                if lp is not None and lp.node in nodes:
                    size = int(np.prod(qm.graph.shape(nodes[lp.node].outputs[0])))
                    cost[op] = lp.instructions / size
            if len(cost) == 2:
                extra = UNITS * STEPS * (cost["Quantize"] + cost["Dequantize"])
                share = 100 * extra / reps["int8"].instructions_per_inference
                notes.append(f"GRU int8: Quantize {cost['Quantize']:.1f}, Dequantize "
                             f"{cost['Dequantize']:.1f} instructions per element (the model's "
                             f"input and output); a float state at the loop boundary would add "
                             f"about {extra:,.0f} instructions per inference ({UNITS} x {STEPS} "
                             f"of each) = {share:.1f}% of the int8 model")
    return rows, notes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.int8_rnn", description=__doc__)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--models", default=",".join(LAYERS),
                    help="comma-separated Keras layers (default: all)")
    args = ap.parse_args(argv)
    rows, notes = measure([k for k in args.models.split(",") if k])
    if args.markdown:
        print(markdown_table(HEADERS, rows))
    else:
        print(format_table(HEADERS, rows))
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
