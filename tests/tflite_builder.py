"""One-op ``.tflite`` models for the front-end tests: the builder lives in the package
(:mod:`edgec.frontend.tflite.builder`, also the quantizer's .tflite writer); this module adds
the TFLite interpreter run with reference kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgec.frontend.tflite.builder import Subgraph, TflBuilder

__all__ = ["Subgraph", "TflBuilder", "run_interpreter"]


def run_interpreter(model: bytes, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the TFLite interpreter (ai-edge-litert) with its *reference* kernels (the ones TFLite
    Micro also uses), once, on fresh state."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        it = Interpreter(model_content=model,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    except ValueError as exc:  # a few builtins (ELU...) have no reference kernel registered
        if "Didn't find op" not in str(exc):
            raise
        it = Interpreter(model_content=model, experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), feeds, strict=True):
        it.set_tensor(d["index"], np.asarray(x, d["dtype"]).reshape(d["shape"]))
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
