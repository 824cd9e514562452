"""Reductions, Softmax and LogSoftmax against onnxruntime, across opsets and odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import edgec
from edgec.errors import EdgecError
from tests.helpers import check_model, make_model

REDUCE_OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"]

# (input shape, axes or None for "all")
REDUCE_CASES = [
    ((17,), None), ((3, 7), [1]), ((3, 7), [0]), ((2, 3, 7), [-1]), ((2, 3, 7), [0, 2]),
    ((2, 3, 5, 7), [2, 3]), ((2, 3, 5, 7), [1]), ((1, 17, 1, 3), [1, -1]), ((2, 3, 7), None),
]


def reduce_model(op: str, shape: tuple, axes: list | None, keepdims: int, opset: int,
                 **attrs: int):
    axes_as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    if axes is not None and axes_as_input:
        node = helper.make_node(op, ["x", "a"], ["y"], keepdims=keepdims, **attrs)
        return make_model([node], {"x": shape}, ["y"], {"a": np.array(axes, np.int64)},
                          opset=opset)
    extra = {} if axes is None else {"axes": axes}
    node = helper.make_node(op, ["x"], ["y"], keepdims=keepdims, **extra, **attrs)
    return make_model([node], {"x": shape}, ["y"], opset=opset)


def feeds_for(op: str, shape: tuple) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(sum(shape) + len(op))
    if op == "ReduceProd":  # keep products of up to 17 factors near 1
        return {"x": rng.uniform(0.8, 1.25, shape).astype(np.float32)}
    return {"x": rng.uniform(-2, 2, shape).astype(np.float32)}


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("shape,axes", REDUCE_CASES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_attr_axes_opset13(op: str, shape: tuple, axes: list | None, keepdims: int) -> None:
    model = reduce_model(op, shape, axes, keepdims, 13)
    check_model(model, feeds_for(op, shape))


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("shape,axes", [((2, 3, 7), [0, -1]), ((3, 17), [1])], ids=str)
def test_reduce_other_opsets(op: str, opset: int, shape: tuple, axes: list) -> None:
    check_model(reduce_model(op, shape, axes, 1, opset), feeds_for(op, shape))


@pytest.mark.parametrize("op,opset", [("ReduceSum", 13), ("ReduceMean", 18), ("ReduceMax", 18)])
@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_empty_axes(op: str, opset: int, noop: int) -> None:
    node = helper.make_node(op, ["x", "a"], ["y"], keepdims=1, noop_with_empty_axes=noop)
    model = make_model([node], {"x": (3, 7)}, ["y"], {"a": np.zeros(0, np.int64)}, opset=opset)
    m = check_model(model)
    assert m.graph.shape("y") == ((3, 7) if noop else (1, 1))


def test_reduce_no_axes_input_with_noop() -> None:
    node = helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0, noop_with_empty_axes=1)
    m = check_model(make_model([node], {"x": (2, 7)}, ["y"], opset=13))
    assert m.graph.shape("y") == (2, 7)


def test_reduce_runtime_axes_is_unsupported() -> None:
    node = helper.make_node("ReduceSum", ["x", "a"], ["y"])
    model = make_model([node], {"x": (3, 7), "a": (1,)}, ["y"], opset=13)
    with pytest.raises(EdgecError):
        edgec.compile(model)


def test_reduce_bad_axis_is_an_error() -> None:
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2])
    with pytest.raises(EdgecError, match="axis 2 is out of range"):
        edgec.compile(make_model([node], {"x": (3, 7)}, ["y"], opset=13))


def test_reduce_logsumexp_large_values_and_global_pool() -> None:
    """LogSumExp stays finite for large inputs; ReduceMean over H, W is global average pooling."""
    x = np.random.default_rng(3).uniform(80, 120, (2, 3, 7)).astype(np.float32)
    node = helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[1, 2], keepdims=0)
    check_model(make_model([node], {"x": (2, 3, 7)}, ["y"], opset=13), {"x": x})
    gap = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3])
    check_model(make_model([gap], {"x": (1, 8, 5, 7)}, ["y"], opset=13))


def test_reduce_prod_of_shape_folds() -> None:
    """The legacy exporter computes numel as ReduceProd(Shape(x)); it folds to a constant."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ReduceProd", ["s"], ["n"], keepdims=1),
        helper.make_node("Reshape", ["x", "n"], ["y"]),
    ]
    m = check_model(make_model(nodes, {"x": (3, 1, 7)}, ["y"], opset=13))
    assert [n.op for n in m.graph.nodes] == ["Reshape"]
    assert m.graph.shape("y") == (21,)


# -- Softmax / LogSoftmax -------------------------------------------------------------------------

SOFTMAX_CASES = [((17,), None), ((3, 7), None), ((2, 3, 7), None), ((2, 3, 7), 0), ((2, 3, 7), 1),
                 ((2, 3, 7), -2), ((2, 3, 5, 7), 2), ((1, 1, 3), -1), ((3, 1), 1)]


# before opset 13 the axis (default 1) must be below the rank
SOFTMAX_OPSET_CASES = [(o, s, a) for o in (11, 13) for s, a in SOFTMAX_CASES
                       if o >= 13 or (1 if a is None else a) < len(s)]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,shape,axis", SOFTMAX_OPSET_CASES, ids=str)
def test_softmax(op: str, opset: int, shape: tuple, axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    check_model(make_model([node], {"x": shape}, ["y"], opset=opset))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_is_numerically_stable(op: str) -> None:
    x = np.array([[1000.0, 999.0, -1000.0, 1001.0], [-500.0, -501.0, -499.0, -800.0]], np.float32)
    node = helper.make_node(op, ["x"], ["y"], axis=-1)
    m = check_model(make_model([node], {"x": x.shape}, ["y"], opset=13), {"x": x})
    assert np.all(np.isfinite(m.run(x=x)))


def test_softmax_in_place_after_dense_layer() -> None:
    """Softmax writes over its dying input (the planner's in-place path)."""
    w = np.random.default_rng(4).standard_normal((17, 7)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Softmax", ["h"], ["s"], axis=0),
             helper.make_node("Neg", ["s"], ["y"])]
    m = check_model(make_model(nodes, {"x": (3, 17)}, ["y"], {"w": w}, opset=13))
    assert "Softmax 'Softmax_1' -> [3x7], in place" in m.c_source.replace('"', "'")


def test_softmax_opset11_coerces_to_2d() -> None:
    """Before opset 13 axis=1 normalises over all trailing dims together, not one axis."""
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    m = check_model(make_model([node], {"x": (2, 3, 7)}, ["y"], opset=11))
    y = m.run(x=np.random.default_rng(5).standard_normal((2, 3, 7)).astype(np.float32))
    np.testing.assert_allclose(y.sum(axis=(1, 2)), np.ones(2), rtol=1e-5)
