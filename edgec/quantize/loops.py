"""What the quantized-model writers say about int8 loops (docs/int8.md, "int8 loops")."""

from __future__ import annotations

from edgec.errors import EdgecError
from edgec.ir import Graph


def refuse_loops(g: Graph, kind: str) -> None:
    """A quantized loop (a Scan: Keras SimpleRNN/GRU/LSTM) has no file form yet: one line."""
    for n in g.nodes:
        if n.op == "Scan":
            raise EdgecError(f"{g.source or g.name}: node '{n.name}' (Scan) is a loop; edgec "
                             f"cannot write a quantized loop as {kind}: compile the float "
                             f"model with edgec.compile(model, quantize='int8', "
                             f"calibration=...) instead")
