"""passes.fuse_bias_adds: a constant bias added after a Gemm (directly or after other Adds, as
TFLite writes Keras' recurrent cells) becomes the Gemm's C; results checked with onnxruntime."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.helpers import check_model, make_model

RNG = np.random.default_rng(2)


def _f(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_bias_after_gemm_and_after_a_sum_of_gemms() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], transB=1),
        helper.make_node("Add", ["a", "b1"], ["y0"]),
        helper.make_node("Gemm", ["x", "w2"], ["p"]),
        helper.make_node("Gemm", ["h", "u"], ["q"]),
        helper.make_node("Add", ["p", "q"], ["s"]),
        helper.make_node("Add", ["b2", "s"], ["t"]),
        helper.make_node("Tanh", ["t"], ["y1"]),
    ]
    model = make_model(nodes, {"x": (2, 5), "h": (2, 4)}, {"y0": (2, 3), "y1": (2, 4)},
                       {"w": _f(3, 5), "b1": _f(3), "w2": _f(5, 4), "u": _f(4, 4),
                        "b2": _f(1, 4)})
    m = check_model(model)
    ops = [n.op for n in m.graph.nodes]
    assert ops.count("Add") == 1, ops  # only the sum of the two Gemms is left
    assert sum(1 for n in m.graph.nodes if n.op == "Gemm" and len(n.inputs) == 3) == 2


def test_bias_stays_when_the_gemm_output_is_read_elsewhere() -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"]),
        helper.make_node("Add", ["a", "b"], ["y0"]),
        helper.make_node("Relu", ["a"], ["y1"]),
    ]
    model = make_model(nodes, {"x": (2, 5)}, {"y0": (2, 3), "y1": (2, 3)},
                       {"w": _f(5, 3), "b": _f(3)})
    m = check_model(model)
    assert [n.op for n in m.graph.nodes].count("Add") == 1
