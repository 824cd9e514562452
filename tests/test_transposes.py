"""passes.transposes: inverse Transpose pairs cancel, Transposes move through layout-agnostic ops
(elementwise with constants, Concat, Pad, reductions, Softmax) and into a Dense layer's weights;
results checked against onnxruntime."""

from __future__ import annotations

import numpy as np
from onnx import helper

from edgec.passes import optimize
from edgec.passes.transposes import optimize_transposes
from tests.helpers import check_model, make_model

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
RNG = np.random.default_rng(5)


def _count(m, op: str = "Transpose") -> int:
    return sum(n.op == op for n in m.graph.nodes)


def test_inverse_pair_cancels_through_elementwise_and_constants() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=TO_NCHW),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["b", "bias"], ["c"]),  # bias [C, 1, 1] in NCHW
        helper.make_node("Transpose", ["c"], ["d"], perm=TO_NHWC),
        helper.make_node("Mul", ["d", "scale"], ["e"]),  # scale [C] in NHWC
        helper.make_node("Transpose", ["e"], ["f"], perm=TO_NCHW),
        helper.make_node("Sigmoid", ["f"], ["y"]),
    ]
    model = make_model(nodes, {"x": (2, 5, 6, 3)}, {"y": (2, 3, 5, 6)},
                       {"bias": RNG.standard_normal((3, 1, 1)).astype(np.float32),
                        "scale": RNG.standard_normal(3).astype(np.float32)})
    m = check_model(model)
    assert _count(m) == 1  # only the layout change the model asks for


def test_concat_pad_reduce_softmax_remap_axes() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=TO_NHWC),
        helper.make_node("Transpose", ["z"], ["b"], perm=TO_NHWC),
        helper.make_node("Concat", ["a", "b"], ["c"], axis=3),
        helper.make_node("Pad", ["c", "pads"], ["d"]),
        helper.make_node("Softmax", ["d"], ["e"], axis=-1),
        helper.make_node("ReduceMean", ["e", "axes"], ["y"], keepdims=0),
    ]
    model = make_model(nodes, {"x": (1, 2, 4, 5), "z": (1, 3, 4, 5)}, {"y": (1, 5)},
                       {"pads": np.array([0, 1, 0, 0, 0, 2, 1, 0], np.int64),
                        "axes": np.array([1, 3], np.int64)}, opset=18)
    m = check_model(model)
    assert _count(m) == 0  # [N, W] after reducing H and C: no layout change is left


def test_flatten_before_dense_folds_into_weights() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=TO_NHWC),
        helper.make_node("Reshape", ["a", "shape"], ["b"]),
        helper.make_node("Gemm", ["b", "w", "bias"], ["y"], transB=1),
    ]
    model = make_model(nodes, {"x": (2, 3, 4, 5)}, {"y": (2, 7)},
                       {"shape": np.array([2, 60], np.int64),
                        "w": RNG.standard_normal((7, 60)).astype(np.float32),
                        "bias": RNG.standard_normal(7).astype(np.float32)})
    m = check_model(model)
    assert _count(m) == 0


def test_shared_transpose_moves_only_when_it_saves_work() -> None:
    # a is read by an Add (with another NHWC tensor) and by a NCHW consumer: moving it below
    # the Add while keeping it for the Relu branch would copy more, so one Transpose stays
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=TO_NHWC),
        helper.make_node("Add", ["a", "z"], ["y0"]),
        helper.make_node("Relu", ["a"], ["y1"]),
    ]
    model = make_model(nodes, {"x": (1, 2, 3, 4), "z": (1, 3, 4, 2)},
                       {"y0": (1, 3, 4, 2), "y1": (1, 3, 4, 2)})
    m = check_model(model)
    assert _count(m) == 1


def test_pass_is_a_no_op_without_transposes() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    from edgec.frontend.onnx_import import from_model_proto

    g = from_model_proto(make_model(nodes, {"x": (2, 3)}, {"y": (2, 3)}))
    assert optimize_transposes(g) is g
    assert [n.op for n in optimize(g).nodes] == ["Relu"]
