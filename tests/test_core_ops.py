"""Elementwise, activation and dense ops against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.helpers import check_model, make_model

SHAPES = [(1,), (3,), (7,), (17,), (2, 3, 7), (1, 17, 3)]

UNARY = [
    ("Relu", {}),
    ("LeakyRelu", {"alpha": 0.2}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}),
    ("Elu", {"alpha": 0.7}),
    ("Selu", {}),
    ("Softplus", {}),
    ("Exp", {}),
    ("Neg", {}),
    ("Abs", {}),
]


@pytest.mark.parametrize("op,attrs", UNARY, ids=[u[0] for u in UNARY])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary(op: str, attrs: dict, shape: tuple[int, ...]) -> None:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    check_model(make_model([node], {"x": shape}, ["y"]))


@pytest.mark.parametrize("op", ["Log", "Sqrt"])
def test_unary_positive(op: str) -> None:
    model = make_model([helper.make_node(op, ["x"], ["y"])], {"x": (3, 17)}, ["y"])
    x = np.random.default_rng(1).uniform(0.1, 5, (3, 17)).astype(np.float32)
    check_model(model, {"x": x})


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_clip_inputs(opset: int) -> None:
    lo, hi = np.array(-0.5, np.float32), np.array(0.7, np.float32)
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    check_model(make_model([node], {"x": (2, 7)}, ["y"], {"lo": lo, "hi": hi}, opset=opset))


def test_clip_attrs_opset6() -> None:
    node = helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25)
    check_model(make_model([node], {"x": (17,)}, ["y"], opset=6))


@pytest.mark.parametrize("exp", [2.0, 3.0, 0.5, -1.0, 1.7])
def test_pow_const(exp: float) -> None:
    node = helper.make_node("Pow", ["x", "e"], ["y"])
    x = np.random.default_rng(2).uniform(0.2, 3, (3, 7)).astype(np.float32)
    check_model(
        make_model([node], {"x": (3, 7)}, ["y"], {"e": np.array(exp, np.float32)}), {"x": x}
    )


BCAST = [
    ((3, 7), (3, 7)),
    ((3, 7), (7,)),
    ((3, 7), (3, 1)),
    ((2, 3, 7), (1, 3, 1)),
    ((1,), (17,)),
    ((2, 1, 7), (3, 1)),
    ((17,), ()),
]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", BCAST, ids=str)
def test_binary_broadcast(op: str, sa: tuple, sb: tuple) -> None:
    node = helper.make_node(op, ["a", "b"], ["y"])
    rng = np.random.default_rng(3)
    feeds = {
        "a": rng.uniform(-2, 2, sa).astype(np.float32),
        "b": rng.uniform(0.5, 2, sb).astype(np.float32),
    }
    check_model(make_model([node], {"a": sa, "b": sb}, ["y"]), feeds)


@pytest.mark.parametrize("op", ["Add", "Mul"])
def test_binary_const_operand(op: str) -> None:
    node = helper.make_node(op, ["a", "c"], ["y"])
    c = np.random.default_rng(4).standard_normal((1, 17)).astype(np.float32)
    check_model(make_model([node], {"a": (3, 17)}, ["y"], {"c": c}))


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1), (7,)])
def test_prelu(slope_shape: tuple) -> None:
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    s = np.random.default_rng(5).uniform(0, 0.5, slope_shape).astype(np.float32)
    check_model(make_model([node], {"x": (2, 3, 5, 7)}, ["y"], {"s": s}))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 4, 64), (3, 7, 17), (2, 17, 3), (5, 64, 64)])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_dense(m: int, k: int, n: int, trans_b: int) -> None:
    rng = np.random.default_rng(6)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal((n,)).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=trans_b, alpha=0.5, beta=2.0)
    check_model(make_model([node], {"a": (m, k)}, ["y"], {"b": b, "c": c}))


def test_gemm_runtime_b_transa_full_c() -> None:
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1, alpha=1.5, beta=0.5)
    check_model(make_model([node], {"a": (7, 3), "b": (7, 5), "c": (3, 5)}, ["y"]))


def test_gemm_no_bias_fused_relu() -> None:
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Gemm", ["a", "b"], ["t"], transB=1),
        helper.make_node("Relu", ["t"], ["y"]),
    ]
    m = check_model(
        make_model(
            nodes, {"a": (2, 17)}, ["y"], {"b": rng.standard_normal((7, 17)).astype(np.float32)}
        )
    )
    assert len(m.graph.nodes) == 1 and m.graph.nodes[0].attrs["_act"][0] == "Relu"


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 7), (7, 5)),
        ((2, 3, 7), (7, 5)),
        ((7,), (7, 3)),
        ((2, 3, 7), (2, 7, 4)),
        ((2, 1, 3, 7), (5, 7, 2)),
        ((3, 7), (7,)),
    ],
    ids=str,
)
def test_matmul_runtime(sa: tuple, sb: tuple) -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    check_model(make_model([node], {"a": sa, "b": sb}, ["y"]))


@pytest.mark.parametrize("sa", [(1, 17), (4, 3, 17), (17,)], ids=str)
def test_matmul_const_weights(sa: tuple) -> None:
    w = np.random.default_rng(8).standard_normal((17, 7)).astype(np.float32)
    node = helper.make_node("MatMul", ["a", "w"], ["y"])
    check_model(make_model([node], {"a": sa}, ["y"], {"w": w}))


@pytest.mark.parametrize("op", ["Gelu", "Mish", "Celu"])
def test_newer_activations(op: str) -> None:
    opset = 20 if op == "Gelu" else 18
    check_model(make_model([helper.make_node(op, ["x"], ["y"])], {"x": (3, 17)}, ["y"],
                           opset=opset))


def test_gelu_tanh() -> None:
    node = helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")
    check_model(make_model([node], {"x": (2, 7)}, ["y"], opset=20))


@pytest.mark.parametrize("op", ["Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual"])
def test_runtime_compare_where(op: str) -> None:
    """Comparisons on run-time data feed Where (as in exported softplus thresholds)."""
    nodes = [helper.make_node(op, ["a", "b"], ["c"]),
             helper.make_node("Where", ["c", "a", "b"], ["y"]),
             helper.make_node("Not", ["c"], ["nc"]),
             helper.make_node("Where", ["nc", "a", "z"], ["y2"])]
    rng = np.random.default_rng(9)
    a = rng.integers(-2, 3, (3, 7)).astype(np.float32)
    b = rng.integers(-2, 3, (7,)).astype(np.float32)
    model = make_model(nodes, {"a": (3, 7), "b": (7,)}, ["y", "y2"],
                       {"z": np.array(0.5, np.float32)})
    check_model(model, {"a": a, "b": b})


def test_castlike_folds_constant() -> None:
    nodes = [helper.make_node("CastLike", ["c", "x"], ["cc"]),
             helper.make_node("Mul", ["x", "cc"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 3)}, ["y"], {"c": np.array(2.0, np.float32)},
                               opset=19))
    assert [n.op for n in m.graph.nodes] == ["Mul"]


def test_clip_min_greater_than_max_gives_max() -> None:
    lo, hi = np.array(0.5, np.float32), np.array(-0.5, np.float32)
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    check_model(make_model([node], {"x": (17,)}, ["y"], {"lo": lo, "hi": hi}, opset=13))
