"""QBatchMatMul (int8 MatMul of two run-time operands) on an emulated Cortex-M4F:
``python -m bench.int8_batch_matmul [--markdown]``.

Attention-sized products (4 heads of 16 x 16 scores with head size 16: Q·Kᵀ with ``adj_y``, as
TFLite writes it, and scores·V, b read by columns after a transposed copy) and one 64 x 64 x 64
product, each built for ``cortex-m4f`` as shipped (the DSP path, SMLAD) and with
``-DEDGEC_NO_DSP`` (the generic C of the M0/M3 and the host), measured with
:func:`edgec.mcu.profile.profile`: exact instructions per inference (QEMU plugin) and cycles
estimated from the Cortex-M4 TRM timing table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from edgec.api import compile_graph
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.mcu.profile import profile
from edgec.mcu.targets import load_target
from edgec.ops.interpret import infer_shapes
from edgec.tables import format_table, markdown_table

TARGET = "cortex-m4f"

#: name -> (a shape, b shape, attributes)
CASES: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "Q·Kᵀ 4x16x16 (adj_y)": ((4, 16, 16), (4, 16, 16), {"adj_y": 1}),
    "scores·V 4x16x16": ((4, 16, 16), (4, 16, 16), {}),
    "64x64 · 64x64": ((64, 64), (64, 64), {}),
}
HEADERS = ("product", "MACs", "instr", "instr/MAC", "MAC/cycle", "generic instr/MAC",
           "generic MAC/cycle")


def graph(a: tuple[int, ...], b: tuple[int, ...], attrs: dict[str, Any]) -> Graph:
    g = Graph("bmm")
    g.tensors["a"] = Tensor("a", a, "int8", quant=Quant.per_tensor(0.05, -7))
    g.tensors["b"] = Tensor("b", b, "int8", quant=Quant.per_tensor(0.03, 11))
    g.tensors["y"] = Tensor("y", (), "int8", quant=Quant.per_tensor(0.1, 3))
    g.inputs, g.outputs = ["a", "b"], ["y"]
    g.nodes.append(Node("QBatchMatMul", "mm", ["a", "b"], ["y"], dict(attrs)))
    infer_shapes(g)
    return g


def measure() -> list[list[str]]:
    target = load_target(TARGET)
    rows = []
    for name, (a, b, attrs) in CASES.items():
        cm = compile_graph(graph(a, b, attrs))
        dsp = profile(cm, target, repeat=1, timeout_s=600)
        gen = profile(cm, target, repeat=1, timeout_s=600, extra_cflags=["-DEDGEC_NO_DSP"])
        rows.append([name, f"{dsp.macs:,}", f"{dsp.instructions_per_inference:,}",
                     f"{dsp.instructions_per_mac:.2f}", f"{dsp.macs_per_cycle:.3f}",
                     f"{gen.instructions_per_mac:.2f}", f"{gen.macs_per_cycle:.3f}"])
        print(f"measured {name}", file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = ap.parse_args(argv)
    rows = measure()
    if args.markdown:
        print(markdown_table(HEADERS, rows))
    else:
        print(format_table(HEADERS, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
