"""Regressions from the torch / ONNX sweep (docs/conformance.md, "Front-end sweep"): small
models written the way users and exporters write them, each compared with onnxruntime or
torch. One test per bug found; the last tests hold a few representative passing cases that
no other test covered."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.helpers import check_model, make_model

rng = np.random.default_rng(7)


def _w(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def _bn_stats(c: int) -> dict[str, np.ndarray]:
    return {"s": _w(c), "t": _w(c), "mu": _w(c), "var": np.abs(_w(c)) + 0.5}


N = helper.make_node


# -- the C back-end: graph outputs that no node of the model computes into their port -------

def test_output_that_is_a_graph_input_is_copied_from_the_input() -> None:
    """Was: the output port shadowed the input's pointer, so the output was copied onto
    itself (zeros)."""
    m = make_model([N("Relu", ["x"], ["r"])], {"x": [2, 3]}, {"x": [2, 3], "r": [2, 3]})
    check_model(m)


def test_output_named_twice_fills_both_ports() -> None:
    """Was: the kernel wrote only the last port of a tensor listed twice in the outputs (a
    torch model returning ``(y, y)``, exported to ONNX); the first stayed zero."""
    m = make_model([N("Relu", ["x"], ["r"])], {"x": [2, 3]}, {"r": [2, 3]})
    m.graph.output.append(m.graph.output[0])
    check_model(m)


def test_output_that_is_an_input_and_a_view_of_it() -> None:
    m = make_model([N("Concat", ["x"], ["o"], axis=0)], {"x": [2, 3]},
                   {"o": [2, 3], "x": [2, 3]})
    check_model(m)
