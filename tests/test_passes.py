"""Optimisation passes, each checked with the IR interpreter before and after."""

from __future__ import annotations

import numpy as np
from onnx import helper

import edgec
from edgec.frontend.onnx_import import from_model_proto
from edgec.ops.interpret import interpret
from edgec.passes import eliminate_dead_nodes, fold_batchnorm, fold_constants, fuse_activations
from tests.helpers import check_model, make_model, random_feeds


def _same(g0, g1, feeds) -> None:
    a, b = interpret(g0, feeds), interpret(g1, feeds)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_constant_subgraph_folds() -> None:
    nodes = [
        helper.make_node("Mul", ["c1", "c2"], ["c3"]),
        helper.make_node("Exp", ["c3"], ["c4"]),
        helper.make_node("Add", ["x", "c4"], ["y"]),
    ]
    consts = {"c1": np.full((4,), 0.5, np.float32), "c2": np.arange(4, dtype=np.float32)}
    model = make_model(nodes, {"x": (4,)}, ["y"], consts)
    g = from_model_proto(model)
    g2 = fold_constants(g)
    assert [n.op for n in g2.nodes] == ["Add"]
    _same(g, g2, random_feeds(model))
    check_model(model)


def test_gemm_batchnorm_fold() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "s", "bb", "mu", "var"], ["y"], epsilon=1e-3),
    ]
    consts = {
        "w": rng.standard_normal((5, 7)).astype(np.float32),
        "b": rng.standard_normal(5).astype(np.float32),
        "s": rng.uniform(0.5, 2, 5).astype(np.float32),
        "bb": rng.standard_normal(5).astype(np.float32),
        "mu": rng.standard_normal(5).astype(np.float32),
        "var": rng.uniform(0.5, 2, 5).astype(np.float32),
    }
    model = make_model(nodes, {"x": (3, 7)}, ["y"], consts)
    g = from_model_proto(model)
    g2 = fold_batchnorm(g)
    assert [n.op for n in g2.nodes] == ["Gemm"]
    _same(g, g2, random_feeds(model))


def test_activation_fusion_and_not_when_shared() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((7, 5)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Sigmoid", ["h"], ["y"]),
    ]
    model = make_model(nodes, {"x": (2, 7)}, ["y"], {"w": w})
    g = from_model_proto(model)
    g2 = fuse_activations(g)
    assert len(g2.nodes) == 1 and g2.nodes[0].attrs["_act"][0] == "Sigmoid"
    _same(g, g2, random_feeds(model))
    # h is also a graph output: no fusion
    model2 = make_model(nodes, {"x": (2, 7)}, ["y", "h"], {"w": w})
    g3 = fuse_activations(from_model_proto(model2))
    assert len(g3.nodes) == 2


def test_dead_nodes_removed() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Tanh", ["x"], ["unused"])]
    model = make_model(nodes, {"x": (3,)}, ["y"])
    g = eliminate_dead_nodes(from_model_proto(model))
    assert [n.op for n in g.nodes] == ["Relu"]
    m = edgec.compile(model)
    assert "tanhf" not in m.c_source


def test_layout_preserving_moves_become_views() -> None:
    """Transpose of unit dims and Gather along a unit axis are free (Reshape views, no code)."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Reshape", ["a", "s"], ["b"]),
        helper.make_node("Transpose", ["b"], ["c"], perm=[1, 0, 2]),
        helper.make_node("Gather", ["c", "i0"], ["d"], axis=0),
        helper.make_node("MatMul", ["d", "w"], ["y"]),
    ]
    consts = {"w": w, "s": np.array([1, 1, 8], np.int64), "i0": np.array(0, np.int64)}
    model = make_model(nodes, {"x": (1, 8)}, ["y"], consts)
    m = check_model(model)
    ops = [n.op for n in m.graph.nodes]
    assert ops == ["MatMul", "Reshape", "Reshape", "Reshape", "MatMul"]
    assert "memcpy" not in m.c_source.split("kernels, one per node")[1].split("_run_arena")[0]
