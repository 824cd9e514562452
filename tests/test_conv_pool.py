"""Conv, ConvTranspose, MaxPool/AveragePool, global pools and BatchNormalization against
onnxruntime (generated C and the numpy IR interpreter), their MAC counts, activation fusion and
BatchNorm folding, unsupported combinations, and strict-flag / sanitizer builds of their C."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.errors import UnsupportedOpError
from tests.helpers import check_model, make_model, ort_run

RNG = np.random.default_rng(1234)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.4).astype(np.float32)


def _conv_model(
    op: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    bias: bool = True,
    opset: int = 17,
    **attrs: Any,
) -> onnx.ModelProto:
    inits = {"w": _w(*w_shape)}
    names = ["x", "w"]
    if bias:
        oc = w_shape[0] if op == "Conv" else w_shape[1] * int(attrs.get("group", 1))
        inits["b"] = _w(oc)
        names.append("b")
    node = helper.make_node(op, names, ["y"], **attrs)
    return make_model([node], {"x": x_shape}, ["y"], inits, opset=opset)


def _ort_macs(op: str, model: onnx.ModelProto) -> int:
    """True MACs, counted by onnxruntime: all-ones input and weights, no bias, summed output."""
    ones = onnx.ModelProto()
    ones.CopyFrom(model)
    node = ones.graph.node[0]
    del node.input[2:]
    for init in list(ones.graph.initializer):
        if init.name == "b":
            ones.graph.initializer.remove(init)
        else:
            arr = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(np.ones_like(arr), init.name))
    shape = [d.dim_value for d in ones.graph.input[0].type.tensor_type.shape.dim]
    return int(round(float(ort_run(ones, {"x": np.ones(shape, np.float32)})[0].sum())))


# -- Conv -------------------------------------------------------------------------------------

CONV2D = [
    # (x shape, w shape, attributes)
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    ((1, 3, 7, 7), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 3, 7, 7), (4, 3, 3, 3), {}),
    ((2, 7, 3, 17), (17, 7, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 3, 17, 7), (7, 3, 2, 3), {"pads": [0, 1, 2, 0], "strides": [3, 1]}),
    ((1, 3, 9, 11), (3, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    ((1, 4, 7, 7), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((1, 8, 7, 3), (8, 2, 1, 3), {"group": 4, "strides": [1, 2], "pads": [0, 1, 0, 1]}),
    ((1, 17, 7, 7), (17, 1, 3, 3), {"group": 17, "pads": [1, 1, 1, 1]}),
    ((1, 7, 17, 17), (7, 1, 5, 5), {"group": 7, "pads": [2, 2, 2, 2], "strides": [2, 2]}),
    ((1, 3, 7, 7), (6, 1, 3, 3), {"group": 3, "pads": [1, 0, 1, 0]}),  # channel multiplier 2
    ((1, 17, 3, 7), (7, 17, 1, 1), {}),  # pointwise
    ((2, 3, 7, 7), (17, 3, 1, 1), {"strides": [2, 2]}),
    ((1, 3, 3, 3), (4, 3, 5, 5), {"pads": [2, 2, 2, 2]}),  # kernel larger than the input
    ((1, 2, 3, 17), (3, 2, 3, 7), {"pads": [3, 3, 3, 3], "dilations": [1, 2]}),
    ((1, 3, 7, 17), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER"}),
    ((1, 3, 7, 17), (5, 3, 4, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    ((1, 3, 7, 17), (5, 3, 4, 2), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((1, 3, 8, 8), (5, 3, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 3, 7, 17), (5, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 3, 7, 17), (5, 3, 2, 4), {"auto_pad": "SAME_UPPER"}),  # onnxruntime: no dilated SAME
    ((1, 3, 7, 7), (4, 3, 3, 3), {"auto_pad": "NOTSET", "pads": [1, 1, 1, 1]}),
    ((1, 3, 7, 7), (4, 3, 3, 3), {"kernel_shape": [3, 3], "pads": [1, 2, 1, 0]}),
]


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("xs,ws,attrs", CONV2D, ids=[str(i) for i in range(len(CONV2D))])
def test_conv2d(xs: tuple, ws: tuple, attrs: dict, bias: bool, opset: int) -> None:
    model = _conv_model("Conv", xs, ws, bias, opset, **attrs)
    m = check_model(model)
    assert [n.op for n in m.graph.nodes] == ["Conv"]


CONV1D = [
    ((1, 1, 1), (1, 1, 1), {}),
    ((1, 3, 17), (7, 3, 3), {"pads": [1, 1]}),
    ((2, 7, 17), (3, 7, 5), {"pads": [2, 1], "strides": [2]}),
    ((1, 3, 17), (17, 3, 3), {"dilations": [3], "pads": [3, 3]}),
    ((1, 4, 7), (6, 2, 3), {"group": 2}),
    ((1, 17, 7), (17, 1, 3), {"group": 17, "pads": [1, 1]}),
    ((1, 17, 1), (3, 17, 1), {}),
    ((1, 3, 17), (5, 3, 4), {"auto_pad": "SAME_UPPER", "strides": [3]}),
    ((1, 3, 17), (5, 3, 4), {"auto_pad": "SAME_LOWER", "strides": [3]}),
    ((1, 3, 17), (5, 3, 4), {"auto_pad": "VALID", "strides": [3]}),
    ((1, 3, 3), (2, 3, 7), {"pads": [3, 3]}),
]


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("xs,ws,attrs", CONV1D, ids=[str(i) for i in range(len(CONV1D))])
def test_conv1d(xs: tuple, ws: tuple, attrs: dict, bias: bool, opset: int) -> None:
    check_model(_conv_model("Conv", xs, ws, bias, opset, **attrs))


@pytest.mark.parametrize(
    "xs,ws,attrs",
    [CONV2D[1], CONV2D[3], CONV2D[5], CONV2D[9], CONV2D[13], CONV2D[17], CONV1D[3], CONV1D[7]],
    ids=str,
)
def test_conv_macs_are_true_multiply_accumulates(xs: tuple, ws: tuple, attrs: dict) -> None:
    model = _conv_model("Conv", xs, ws, **attrs)
    m = edgec.compile(model)
    assert m.report()["macs"] == _ort_macs("Conv", model)


def test_conv_runtime_weights_and_bias() -> None:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 0, 1, 2], group=3)
    model = make_model([node], {"x": (2, 6, 5, 7), "w": (9, 2, 3, 3), "b": (9,)}, ["y"])
    check_model(model)


@pytest.mark.parametrize(
    "act,attrs",
    [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {}), ("HardSwish", {})],
)
def test_conv_fuses_activation(act: str, attrs: dict) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["t"], pads=[1, 1, 1, 1]),
        helper.make_node(act, ["t"], ["y"], **attrs),
    ]
    model = make_model(nodes, {"x": (1, 3, 7, 7)}, ["y"], {"w": _w(5, 3, 3, 3), "b": _w(5)})
    m = check_model(model)
    assert len(m.graph.nodes) == 1 and m.graph.nodes[0].attrs["_act"][0] == act


def test_conv_clip_fuses_opset11() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["t"], group=3, pads=[1, 1]),
        helper.make_node("Clip", ["t", "lo", "hi"], ["y"]),
    ]
    inits = {"w": _w(3, 1, 3), "lo": np.array(0, np.float32), "hi": np.array(0.5, np.float32)}
    m = check_model(make_model(nodes, {"x": (1, 3, 17)}, ["y"], inits, opset=11))
    assert len(m.graph.nodes) == 1


def _bn_inits(c: int, prefix: str = "") -> dict[str, np.ndarray]:
    return {
        f"{prefix}s": RNG.uniform(0.5, 2, c).astype(np.float32),
        f"{prefix}bb": RNG.standard_normal(c).astype(np.float32),
        f"{prefix}mu": RNG.standard_normal(c).astype(np.float32),
        f"{prefix}var": RNG.uniform(0.2, 2, c).astype(np.float32),
    }


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "xs,ws,attrs",
    [
        ((1, 3, 7, 7), (17, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
        ((2, 7, 17), (7, 1, 3), {"group": 7, "strides": [2]}),
    ],
    ids=["2d", "depthwise1d"],
)
def test_conv_batchnorm_relu_is_one_node(xs: tuple, ws: tuple, attrs: dict, bias: bool) -> None:
    oc = ws[0]
    names = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [
        helper.make_node("Conv", names, ["c"], **attrs),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["n"], epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    inits = {"w": _w(*ws), **_bn_inits(oc)}
    if bias:
        inits["b"] = _w(oc)
    m = check_model(make_model(nodes, {"x": xs}, ["y"], inits))
    assert len(m.graph.nodes) == 1
    assert m.graph.nodes[0].op == "Conv" and m.graph.nodes[0].attrs["_act"][0] == "Relu"


# -- ConvTranspose --------------------------------------------------------------------------------

CONVT = [
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    ((1, 3, 5, 5), (3, 5, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 3, 7, 3), (3, 4, 3, 2), {"strides": [2, 3]}),
    (
        (2, 4, 3, 5),
        (4, 3, 2, 3),
        {"group": 2, "strides": [2, 3], "dilations": [2, 1], "pads": [1, 0, 0, 2]},
    ),
    ((1, 7, 3, 3), (7, 1, 3, 3), {"group": 7, "strides": [2, 2], "output_padding": [1, 1]}),
    (
        (1, 3, 3, 7),
        (3, 17, 3, 3),
        {"strides": [3, 2], "output_padding": [2, 1], "pads": [1, 2, 0, 1]},
    ),
    ((1, 2, 3, 5), (2, 5, 3, 3), {"output_shape": [6, 9], "strides": [2, 2]}),
    (
        (1, 2, 3, 5),
        (2, 5, 3, 3),
        {
            "output_shape": [6, 10],
            "strides": [2, 2],
            "output_padding": [1, 1],
            "auto_pad": "SAME_UPPER",
        },
    ),
    (
        (1, 2, 3, 5),
        (2, 5, 3, 3),
        {"output_shape": [5, 8], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ),
    ((1, 2, 3, 5), (2, 5, 3, 3), {"output_shape": [2, 3], "strides": [2, 2]}),
    ((1, 4, 3, 5), (4, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 4, 3, 5), (4, 2, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 4, 3, 5), (4, 2, 4, 3), {"auto_pad": "SAME_UPPER", "strides": [1, 1]}),
    ((1, 4, 3, 5), (4, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 1]}),
    ((1, 3, 7, 7), (3, 3, 5, 5), {"pads": [2, 2, 2, 2]}),  # stride 1: a padded Conv's adjoint
    ((1, 3, 3, 3), (3, 2, 3, 3), {"dilations": [2, 2], "strides": [2, 2], "pads": [1, 0, 1, 0]}),
]

CONVT1D = [
    ((1, 3, 7), (3, 2, 3), {"strides": [2], "output_padding": [1]}),
    ((2, 17, 3), (17, 1, 4), {"group": 17, "strides": [3], "pads": [1, 2]}),
    ((1, 3, 17), (3, 7, 5), {"strides": [2], "dilations": [2], "pads": [2, 2]}),
    ((1, 3, 7), (3, 4, 3), {"output_shape": [12], "strides": [2]}),
    ((1, 3, 7), (3, 4, 3), {"auto_pad": "SAME_UPPER", "strides": [2]}),
    ((1, 3, 7), (3, 4, 3), {"auto_pad": "SAME_LOWER", "strides": [2]}),
]


@pytest.mark.parametrize("opset", [11, 18])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "xs,ws,attrs", CONVT + CONVT1D, ids=[str(i) for i in range(len(CONVT) + len(CONVT1D))]
)
def test_conv_transpose(xs: tuple, ws: tuple, attrs: dict, bias: bool, opset: int) -> None:
    check_model(_conv_model("ConvTranspose", xs, ws, bias, opset, **attrs))


@pytest.mark.parametrize(
    "xs,ws,attrs", [CONVT[1], CONVT[3], CONVT[5], CONVT[9], CONVT1D[1]], ids=str
)
def test_conv_transpose_macs(xs: tuple, ws: tuple, attrs: dict) -> None:
    model = _conv_model("ConvTranspose", xs, ws, **attrs)
    assert edgec.compile(model).report()["macs"] == _ort_macs("ConvTranspose", model)


def test_conv_transpose_fuses_activation() -> None:
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2]),
        helper.make_node("Relu", ["t"], ["y"]),
    ]
    inits = {"w": _w(3, 5, 3, 3), "b": _w(5)}
    m = check_model(make_model(nodes, {"x": (1, 3, 4, 4)}, ["y"], inits))
    assert len(m.graph.nodes) == 1


# -- pooling ------------------------------------------------------------------------------------

POOL2D = [
    ((1, 1, 1, 1), {"kernel_shape": [1, 1]}),
    ((1, 3, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 7, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 7, 17, 3), {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1]}),
    ((1, 3, 17, 17), {"kernel_shape": [5, 3], "strides": [3, 2], "pads": [2, 1, 1, 0]}),
    ((1, 3, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    (
        (1, 3, 8, 7),
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),
    (
        (1, 3, 5, 5),
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),  # the last window would start in the end padding
    ((1, 3, 7, 17), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    ((1, 3, 7, 17), {"kernel_shape": [2, 4], "auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    (
        (1, 3, 7, 17),
        {"kernel_shape": [2, 4], "auto_pad": "SAME_UPPER", "strides": [2, 3], "ceil_mode": 1},
    ),
    ((1, 3, 7, 17), {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 2]}),
    (
        (1, 3, 7, 17),
        {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 2], "ceil_mode": 1},
    ),
    ((1, 3, 3, 3), {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]}),
]

DILATED2D = [
    ((1, 3, 9, 11), {"kernel_shape": [3, 2], "dilations": [2, 3]}),
    (
        (1, 3, 9, 11),
        {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 1, 2, 1], "strides": [2, 1]},
    ),
    (
        (1, 3, 9, 11),
        {
            "kernel_shape": [2, 2],
            "dilations": [2, 2],
            "pads": [1, 1, 1, 1],
            "strides": [2, 2],
            "ceil_mode": 1,
        },
    ),
    ((1, 3, 9, 11), {"kernel_shape": [3, 2], "dilations": [2, 3], "auto_pad": "SAME_UPPER"}),
]

POOL1D = [
    ((1, 3, 17), {"kernel_shape": [3], "strides": [2]}),
    ((2, 7, 17), {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "ceil_mode": 1}),
    ((1, 17, 7), {"kernel_shape": [7]}),
    ((1, 3, 17), {"kernel_shape": [4], "auto_pad": "SAME_LOWER", "strides": [3]}),
    ((1, 3, 6), {"kernel_shape": [3], "strides": [2], "ceil_mode": 1}),
]

DILATED1D = [
    (
        (1, 3, 17),
        {"kernel_shape": [3], "dilations": [2], "pads": [1, 2], "strides": [2], "ceil_mode": 1},
    ),
    ((1, 3, 6), {"kernel_shape": [2], "dilations": [2], "pads": [1, 1]}),
]


def _pool_check(op: str, xs: tuple, attrs: dict, opset: int) -> edgec.CompiledModel:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    return check_model(make_model([node], {"x": xs}, ["y"], opset=opset))


@pytest.mark.parametrize("opset", [11, 19])
@pytest.mark.parametrize(
    "xs,attrs", POOL2D + POOL1D, ids=[str(i) for i in range(len(POOL2D) + len(POOL1D))]
)
def test_maxpool(xs: tuple, attrs: dict, opset: int) -> None:
    _pool_check("MaxPool", xs, attrs, opset)


@pytest.mark.parametrize("opset", [11, 19])
@pytest.mark.parametrize(
    "xs,attrs", DILATED2D + DILATED1D, ids=[str(i) for i in range(len(DILATED2D) + len(DILATED1D))]
)
def test_maxpool_dilations(xs: tuple, attrs: dict, opset: int) -> None:
    _pool_check("MaxPool", xs, attrs, opset)


@pytest.mark.parametrize("opset", [11, 19])
@pytest.mark.parametrize("include_pad", [0, 1], ids=["exclude_pad", "include_pad"])
@pytest.mark.parametrize(
    "xs,attrs", POOL2D + POOL1D, ids=[str(i) for i in range(len(POOL2D) + len(POOL1D))]
)
def test_averagepool(xs: tuple, attrs: dict, include_pad: int, opset: int) -> None:
    _pool_check("AveragePool", xs, {**attrs, "count_include_pad": include_pad}, opset)


@pytest.mark.parametrize("include_pad", [0, 1], ids=["exclude_pad", "include_pad"])
@pytest.mark.parametrize(
    "xs,attrs", DILATED2D + DILATED1D, ids=[str(i) for i in range(len(DILATED2D) + len(DILATED1D))]
)
def test_averagepool_dilations_opset19(xs: tuple, attrs: dict, include_pad: int) -> None:
    _pool_check("AveragePool", xs, {**attrs, "count_include_pad": include_pad}, 19)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_opset7(op: str) -> None:
    _pool_check(op, (1, 3, 7, 7), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 7)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_macs(op: str) -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    m = edgec.compile(
        make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": (2, 3, 7, 7)}, ["y"])
    )
    # valid taps per axis: rows/cols 0..3 start at -1, 1, 3, 5: 2 + 3 + 3 + 2 = 10
    assert m.report()["macs"] == 2 * 3 * 10 * 10


def test_pool_fuses_activation() -> None:
    nodes = [
        helper.make_node("AveragePool", ["x"], ["t"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
        helper.make_node("Tanh", ["t"], ["y"]),
    ]
    m = check_model(make_model(nodes, {"x": (1, 3, 7, 7)}, ["y"]))
    assert len(m.graph.nodes) == 1


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize(
    "xs", [(1, 1, 1), (1, 3, 17), (2, 7, 3, 3), (1, 17, 1, 1), (2, 3, 3, 1, 7)], ids=str
)
def test_global_pool(op: str, xs: tuple) -> None:
    check_model(make_model([helper.make_node(op, ["x"], ["y"])], {"x": xs}, ["y"]))


def test_conv_relu_global_pool_chain() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p"], ["y"]),
    ]
    inits = {"w": _w(17, 3, 3, 3), "b": _w(17)}
    m = check_model(make_model(nodes, {"x": (1, 3, 17, 17)}, ["y"], inits))
    assert [n.op for n in m.graph.nodes] == ["Conv", "MaxPool", "GlobalAveragePool"]


# -- BatchNormalization ------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [7, 9, 15])
@pytest.mark.parametrize("xs", [(1, 17), (2, 3), (2, 3, 7), (1, 7, 3, 3), (2, 1, 3, 1, 2)], ids=str)
def test_batchnorm_standalone(xs: tuple, opset: int) -> None:
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "bb", "mu", "var"], ["y"], epsilon=1e-3
    )
    m = check_model(make_model([node], {"x": xs}, ["y"], _bn_inits(xs[1]), opset=opset))
    assert [n.op for n in m.graph.nodes] == ["BatchNormalization"]


def test_batchnorm_spatial0_opset7() -> None:
    node = helper.make_node("BatchNormalization", ["x", "s", "bb", "mu", "var"], ["y"], spatial=0)
    inits = {k: v.reshape(3, 4) for k, v in _bn_inits(12).items()}
    check_model(make_model([node], {"x": (2, 3, 4)}, ["y"], inits, opset=7))


def test_batchnorm_after_pool_fuses_relu() -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2]),
        helper.make_node("BatchNormalization", ["p", "s", "bb", "mu", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    m = check_model(make_model(nodes, {"x": (1, 7, 5, 5)}, ["y"], _bn_inits(7)))
    assert [n.op for n in m.graph.nodes] == ["MaxPool", "BatchNormalization"]
    assert m.graph.nodes[1].attrs["_act"][0] == "Relu"


# -- unsupported combinations ------------------------------------------------------------------


def _unsupported(model: onnx.ModelProto, match: str) -> None:
    with pytest.raises(UnsupportedOpError, match=match):
        edgec.compile(model)


def test_batchnorm_training_mode_unsupported() -> None:
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "bb", "mu", "var"], ["y"], training_mode=1
    )
    _unsupported(
        make_model([node], {"x": (2, 3, 4)}, ["y"], _bn_inits(3), opset=15), "training_mode"
    )


def test_batchnorm_runtime_statistics_unsupported() -> None:
    node = helper.make_node("BatchNormalization", ["x", "s", "bb", "mu", "var"], ["y"])
    inits = _bn_inits(3)
    del inits["var"]
    _unsupported(make_model([node], {"x": (2, 3, 4), "var": (3,)}, ["y"], inits), "constants")


def test_maxpool_indices_unsupported() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])
    _unsupported(make_model([node], {"x": (1, 3, 4, 4)}, ["y", "i"]), "Indices")


def test_averagepool_dilations_before_opset19_unsupported() -> None:
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2], dilations=[2])
    _unsupported(make_model([node], {"x": (1, 3, 9)}, ["y"], opset=18), "opset 19")


@pytest.mark.parametrize("op", ["Conv", "MaxPool"])
def test_3d_unsupported(op: str) -> None:
    if op == "Conv":
        model = _conv_model("Conv", (1, 2, 3, 3, 3), (2, 2, 1, 1, 1))
    else:
        node = helper.make_node(op, ["x"], ["y"], kernel_shape=[1, 1, 1])
        model = make_model([node], {"x": (1, 2, 3, 3, 3)}, ["y"])
    _unsupported(model, "1-D and 2-D")


def test_conv_transpose_runtime_weights_unsupported() -> None:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"])
    _unsupported(make_model([node], {"x": (1, 3, 4), "w": (3, 2, 3)}, ["y"]), "constant weights")


def test_conv_bad_group_unsupported() -> None:
    _unsupported(_conv_model("Conv", (1, 4, 5, 5), (4, 3, 3, 3), group=2), "group=2")


# -- generated C: strict flags, Cortex-M4, sanitizers ---------------------------------------------

STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
CORTEX_M4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")


def _zoo_2d() -> onnx.ModelProto:
    """Every kernel variant of this module in one 2-D model (BatchNorm after a pool stays)."""
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 0, 2, 1], strides=[2, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node(
            "Conv", ["r0", "w1"], ["c1"], group=5, pads=[1, 1, 1, 1], dilations=[1, 2]
        ),
        helper.make_node(
            "MaxPool",
            ["c1"],
            ["p0"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
        ),
        helper.make_node("BatchNormalization", ["p0", "s", "bb", "mu", "var"], ["n0"]),
        helper.make_node(
            "ConvTranspose",
            ["n0", "w2", "b2"],
            ["t0"],
            strides=[2, 2],
            pads=[1, 0, 0, 1],
            output_padding=[1, 1],
        ),
        helper.make_node(
            "AveragePool",
            ["t0"],
            ["p1"],
            kernel_shape=[3, 2],
            strides=[1, 2],
            pads=[1, 1, 1, 0],
            count_include_pad=1,
            ceil_mode=1,
        ),
        helper.make_node("Conv", ["p1", "w3", "b3"], ["c3"], auto_pad="SAME_LOWER"),
        helper.make_node("GlobalMaxPool", ["c3"], ["y"]),
    ]
    inits = {
        "w0": _w(5, 3, 3, 3),
        "b0": _w(5),
        "w1": _w(5, 1, 3, 3),
        **_bn_inits(5),
        "w2": _w(5, 3, 3, 3),
        "b2": _w(3),
        "w3": _w(17, 3, 1, 1),
        "b3": _w(17),
    }
    return make_model(nodes, {"x": (1, 3, 9, 8)}, ["y"], inits, opset=19)


def _zoo_1d() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[2, 1], strides=[2]),
        helper.make_node(
            "AveragePool", ["c0"], ["p0"], kernel_shape=[2], dilations=[2], pads=[1, 1], ceil_mode=1
        ),
        helper.make_node("ConvTranspose", ["p0", "w1"], ["t0"], strides=[3], group=7),
        helper.make_node("MaxPool", ["t0"], ["p1"], kernel_shape=[3], auto_pad="SAME_UPPER"),
        helper.make_node("GlobalAveragePool", ["p1"], ["y"]),
    ]
    inits = {"w0": _w(7, 3, 4), "w1": _w(7, 2, 3)}
    return make_model(nodes, {"x": (2, 3, 17)}, ["y"], inits, opset=19)


ZOO = {"zoo2d": _zoo_2d, "zoo1d": _zoo_1d}

_DRIVER = """#include <stdio.h>
#include <stdlib.h>
#include "{name}.h"
int main(void)
{{
    float *x = (float *)malloc(sizeof(float) * {nin});
    float *y = (float *)malloc(sizeof(float) * {nout});
    FILE *f = fopen("in.bin", "rb");
    if (!x || !y || !f || fread(x, sizeof(float), {nin}, f) != {nin}) return 3;
    fclose(f);
    if ({name}_run(x, y) != 0) return 4;
    f = fopen("out.bin", "wb");
    if (!f || fwrite(y, sizeof(float), {nout}, f) != {nout}) return 5;
    fclose(f);
    free(x);
    free(y);
    return 0;
}}
"""


@pytest.mark.parametrize("key", list(ZOO))
def test_generated_c_strict_and_sanitized(key: str, tmp_path: Path) -> None:
    model = ZOO[key]()
    m = check_model(model)
    cm = m.cmodel
    assert {
        "Conv",
        "ConvTranspose",
        "GlobalAveragePool" if key == "zoo1d" else "GlobalMaxPool",
    } <= {n.op for n in m.graph.nodes}
    m.write(tmp_path)
    (inp,), (out,) = cm.inputs, cm.outputs
    (tmp_path / "driver.c").write_text(_DRIVER.format(name=cm.name, nin=inp.size, nout=out.size))
    x = RNG.standard_normal(inp.shape).astype(np.float32)
    x.tofile(tmp_path / "in.bin")
    cc = ["gcc", *STRICT, "-O1", *SANITIZE, "driver.c", f"{cm.name}.c", "-lm", "-o", "driver"]
    proc = subprocess.run(cc, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run(
        ["./driver"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr[-4000:]
    got = np.fromfile(tmp_path / "out.bin", np.float32).reshape(out.shape)
    np.testing.assert_allclose(got, ort_run(model, {inp.name: x})[0], rtol=1e-4, atol=1e-5)
    arm = shutil.which("arm-none-eabi-gcc")
    if arm is not None:
        args = [arm, *CORTEX_M4, *STRICT, "-O2", "-c", f"{cm.name}.c", "-o", "m4.o"]
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
