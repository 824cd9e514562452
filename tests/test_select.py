"""ArgMax, ArgMin and TopK: C and the numpy reference against onnxruntime (ONNX) and torch
(torch front-end); ties, NaN, axes, keepdims/select_last_index, largest/sorted; int64 indices
travel as exact float values; strict C."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgec
from edgec.errors import EdgecError
from tests.c_checks import strict_and_sanitized
from tests.helpers import ort_run


def _model(nodes: list, shape: tuple[int, ...], outs: dict[str, int], k: int | None = None,
           opset: int = 17) -> onnx.ModelProto:
    inits = [] if k is None else [numpy_helper.from_array(np.array([k], np.int64), "k")]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(n, t, None) for n, t in outs.items()], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _check(model: onnx.ModelProto, x: np.ndarray) -> edgec.CompiledModel:
    """C bit for bit, and the numpy reference value for value (int64 indices), vs onnxruntime."""
    expected = ort_run(model, {"x": x})
    m = edgec.compile(model)
    got, ref = m.run(x=x), m.reference(x=x)
    got = got if isinstance(got, list) else [got]
    ref = ref if isinstance(ref, list) else [ref]
    for g_, r_, e_ in zip(got, ref, expected, strict=True):
        assert r_.dtype == e_.dtype
        np.testing.assert_array_equal(r_, e_)
        assert g_.shape == e_.shape
        np.testing.assert_array_equal(g_, e_.astype(np.float32))
    return m


SHAPES = [(9,), (3, 5), (2, 3, 4), (2, 1, 3, 5)]


def _ties(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Small integers: many ties along every axis."""
    return np.random.default_rng(seed).integers(-2, 3, shape).astype(np.float32)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_vs_onnxruntime(op: str, shape: tuple[int, ...], keepdims: int, last: int) -> None:
    x = _ties(shape, len(shape))
    for axis in range(-len(shape), len(shape)):
        node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims,
                                select_last_index=last)
        _check(_model([node], shape, {"y": TensorProto.INT64}), x)


@pytest.mark.parametrize("opset", [11, 13])
def test_argmax_default_axis_and_older_opsets(opset: int) -> None:
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    m = _check(_model([helper.make_node("ArgMax", ["x"], ["y"])], (4, 3),
                      {"y": TensorProto.INT64}, opset=opset), x)
    assert m.graph.shape("y") == (1, 3)  # axis 0, keepdims 1


def test_argmax_nan_never_wins() -> None:
    x = np.array([[1.0, np.nan, 3.0, np.nan, 3.0, -1.0], [np.nan, -1, 2, 2, np.nan, 0]],
                 np.float32)
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            node = helper.make_node(op, ["x"], ["y"], axis=1, select_last_index=last)
            _check(_model([node], x.shape, {"y": TensorProto.INT64}), x)


def _topk(shape: tuple[int, ...], k: int, opset: int = 17, **attrs: int) -> onnx.ModelProto:
    outs = {"v": TensorProto.FLOAT, "i": TensorProto.INT64}
    if opset < 10:
        node = helper.make_node("TopK", ["x"], ["v", "i"], k=k, **attrs)
        return _model([node], shape, outs, opset=opset)
    return _model([helper.make_node("TopK", ["x", "k"], ["v", "i"], **attrs)], shape, outs, k,
                  opset)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("largest", [0, 1])
def test_topk_vs_onnxruntime(shape: tuple[int, ...], largest: int) -> None:
    x = _ties(shape, 3)
    for axis in range(-len(shape), len(shape)):
        for k in sorted({1, min(2, shape[axis]), shape[axis]}):
            _check(_topk(shape, k, axis=axis, largest=largest), x)


def test_topk_nan_ranks_highest_and_opset9_attribute() -> None:
    x = np.array([[1.0, np.nan, 3.0, np.nan, 3.0, -1.0, 0.0, -0.0]], np.float32)
    for largest in (0, 1):
        _check(_topk(x.shape, 4, axis=1, largest=largest), x)
    _check(_topk((3, 6), 2, opset=9, axis=1), _ties((3, 6)))


def test_topk_unsorted_holds_the_same_set() -> None:
    x = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    model = _topk(x.shape, 3, axis=1, sorted=0)
    v, i = edgec.compile(model).run(x=x)
    ev, ei = ort_run(model, {"x": x})
    np.testing.assert_array_equal(np.sort(v, axis=1), np.sort(ev, axis=1))
    np.testing.assert_array_equal(np.sort(i, axis=1), np.sort(ei, axis=1))


def test_topk_bad_k_and_runtime_k() -> None:
    with pytest.raises(EdgecError, match="out of range"):
        edgec.compile(_topk((3, 4), 5, axis=1))
    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"])], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgecError, match="constant k"):
        edgec.compile(model)


def test_indices_feed_float_math_and_strict_c(tmp_path: Path) -> None:
    """ArgMax → Cast(FLOAT) → Mul and TopK indices as outputs, compiled strictly."""
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1, keepdims=0),
             helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["af", "two"], ["y"]),
             helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=0)]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("i", TensorProto.INT64, None)],
        [numpy_helper.from_array(np.array([3], np.int64), "k"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = _ties((6, 7), 5)
    m = _check(model, x)
    got = strict_and_sanitized(m, tmp_path, [x])
    for g_, e_ in zip(got, ort_run(model, {"x": x}), strict=True):
        np.testing.assert_array_equal(g_, e_.astype(np.float32))
    header = (tmp_path / f"{m.name}.h").read_text()
    assert "out_i: [3, 7] (21 floats holding int64 indices exactly)" in header


class Select(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v, i = torch.topk(x, 3, dim=-1)
        vs, i_s = x.topk(2, dim=1, largest=False)
        return (torch.argmax(x, dim=-1), x.argmin(dim=1, keepdim=True), torch.argmax(x),
                torch.argmax(x, keepdim=True), v, i, vs, i_s, i.float() * 0.5)


@pytest.mark.parametrize("via", ["fx", "pt2"])
def test_torch_select(via: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6)  # distinct values: torch orders ties its own way
    module = Select().eval()
    expected = [t.numpy() for t in module(x)]
    if via == "pt2":
        torch.export.save(torch.export.export(module, (x,)), str(tmp_path / "m.pt2"))
        m = edgec.compile(str(tmp_path / "m.pt2"))
    else:
        m = edgec.compile(module, example_inputs=(x,))
    got = m.run(x.numpy())
    for g_, e_ in zip(got, expected, strict=True):
        assert g_.shape == e_.shape
        np.testing.assert_array_equal(g_, e_.astype(np.float32))


def test_integer_math_on_runtime_indices_is_refused() -> None:
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1),
             helper.make_node("Div", ["a", "two"], ["y"])]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
        [numpy_helper.from_array(np.array(2, np.int64), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgecError, match=r"int64 indices .*\(Cast them to float first\)") as err:
        edgec.compile(model)
    assert "\n" not in str(err.value)
    # the same graph on constants folds with integer semantics
    nodes[0] = helper.make_node("ArgMax", ["c"], ["a"], axis=1)
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
        [numpy_helper.from_array(np.array(2, np.int64), "two"),
         numpy_helper.from_array(np.eye(3, 4, 3, dtype=np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    np.testing.assert_array_equal(edgec.compile(model).reference(x=np.zeros((3, 4), np.float32)),
                                  [[1], [0], [0]])


def test_onnx_backend_returns_int64_indices() -> None:
    """edgec.onnx_backend gives index outputs back as int64 (the C holds them as floats) and
    binds TopK's k fed as a graph input."""
    from edgec.onnx_backend import EdgecBackend

    graph = helper.make_graph(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], np.float32)
    v, i = EdgecBackend.run_model(model, [x, np.array([2], np.int64)])
    assert i.dtype == np.int64
    np.testing.assert_array_equal(i, [[4, 2], [0, 2]])
    np.testing.assert_array_equal(v, [[5, 4], [9, 6]])
