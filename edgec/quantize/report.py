"""How much int8 quantization changes a model's outputs on the calibration sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgec.ir import Graph
from edgec.ops.interpret import interpret
from edgec.passes.qdq import float_islands


@dataclass
class OutputError:
    name: str
    max_abs: float
    mean_abs: float
    #: share of sets whose argmax over the last axis agrees (outputs with >= 2 classes)
    top1: float | None


@dataclass
class QuantizeReport:
    sets: int
    method: str
    outputs: list[OutputError]
    #: nodes left in float between Dequantize and Quantize (no int8 kernel)
    float_ops: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"accuracy vs float on {self.sets} calibration set(s) ({self.method} ranges):"]
        for o in self.outputs:
            top = "" if o.top1 is None else f", top-1 agreement {100 * o.top1:.1f}%"
            lines.append(f"  {o.name}: max |error| {o.max_abs:.4g}, mean |error| "
                         f"{o.mean_abs:.4g}{top}")
        lines.append("  float ops (no int8 kernel): "
                     + (", ".join(self.float_ops) if self.float_ops else "none"))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"sets": self.sets, "method": self.method, "float_ops": self.float_ops,
                "outputs": [vars(o) for o in self.outputs]}


@dataclass
class QuantizedModel:
    float_graph: Graph
    qdq: Graph
    lowered: Graph
    report: QuantizeReport


def accuracy_report(float_graph: Graph, lowered: Graph,
                    sets: Sequence[Mapping[str, np.ndarray]], method: str) -> QuantizeReport:
    errs: dict[str, list[np.ndarray]] = {o: [] for o in float_graph.outputs}
    agree: dict[str, list[bool]] = {o: [] for o in float_graph.outputs}
    for feeds in sets:
        ref = interpret(float_graph, feeds)
        got = interpret(lowered, {k: v for k, v in feeds.items() if k in lowered.inputs})
        for o in float_graph.outputs:
            r = np.asarray(ref[o], np.float32)
            q = np.asarray(got[o], np.float32)
            if got[o].dtype == np.int8:
                quant = lowered.quant(o)
                assert quant is not None
                s, zp = quant.scalar()
                q = np.float32(s) * (got[o].astype(np.float32) - zp)
            errs[o].append(np.abs(q - r).reshape(-1))
            if r.ndim and r.shape[-1] >= 2:
                agree[o].extend((r.reshape(-1, r.shape[-1]).argmax(-1)
                                 == q.reshape(-1, r.shape[-1]).argmax(-1)).tolist())
    outs = []
    for o in float_graph.outputs:
        e = np.concatenate(errs[o])
        outs.append(OutputError(o, float(e.max()), float(e.mean()),
                                float(np.mean(agree[o])) if agree[o] else None))
    return QuantizeReport(len(sets), method, outs, float_islands(lowered))
