"""Post-training int8 quantization of float models (``edgec quantize``,
``edgec.compile(..., quantize="int8", calibration=...)``).

calibrate.py (input sets, ranges from the numpy interpreter), insert.py (the float graph's QDQ
form: per-channel symmetric weights, per-tensor asymmetric activations), report.py (accuracy
against the float model), onnx_writer.py and tflite_writer.py (the quantized model as a file;
tflite_float.py writes a mixed-precision graph's float ops as float32 builtins, tflite_loops.py
an int8 loop as WHILE). Loop bodies (Scan) are quantized too: ranges over every iteration, the
Scan carrying int8 codes (docs/int8.md, "int8 loops").
The QDQ graph is lowered to the int8 ops by ``passes.qdq.lower_qdq`` like any quantized ONNX
model.

May import: ``edgec.ir``, ``edgec.errors``, ``edgec.ops``, ``edgec.passes``,
``edgec.frontend`` (the TFLite schema module).
"""

from __future__ import annotations

from typing import Any

from edgec.ir import Graph
from edgec.passes import fold_batchnorm, fold_constants, optimize, remove_identities
from edgec.quantize.calibrate import calibration_sets, collect_ranges
from edgec.quantize.insert import insert_qdq
from edgec.quantize.report import QuantizedModel, accuracy_report


def quantize_graph(g: Graph, calibration: Any, method: str = "minmax",
                   percentile: float = 99.99, per_channel: bool = True) -> QuantizedModel:
    """Quantize float graph ``g`` with ``calibration`` input sets (a .npz path, a dict of
    arrays, or a list of input sets): its QDQ form, the lowered int8 graph, and the accuracy
    report on the calibration sets."""
    sets = calibration_sets(calibration, g)
    for p in (fold_constants, remove_identities, fold_batchnorm):
        g = p(g)
    ranges = collect_ranges(g, sets, method, percentile)
    qdq = insert_qdq(g, ranges, per_channel)
    lowered = optimize(qdq)
    return QuantizedModel(g, qdq, lowered, accuracy_report(g, lowered, sets, method))


__all__ = ["QuantizedModel", "quantize_graph"]
