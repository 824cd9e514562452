"""The generated C of every int8 op equals its numpy reference byte for byte (host build) on
random data, over odd shapes, strides, pads, dilations, groups, depth multipliers, per-channel
and per-tensor weights, broadcasting, and both rounding modes. (The numpy references are
checked against the TFLite interpreter in test_int8_tflite.py.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgec.api import compile_graph
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.interpret import interpret
from tests.int8_graphs import Builder, kitchen_sink, random_feeds

MODES = ("tflite", "double")


def _check(g: Graph, n: int = 12, seed: int = 0) -> None:
    m = compile_graph(g)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        feeds = random_feeds(g, rng)
        ref = interpret(g, feeds)
        got = m.run(*[feeds[i] for i in m.input_names])
        got = [got] if len(m.output_names) == 1 else got
        for name, c in zip(m.output_names, got, strict=True):
            assert c.dtype == ref[name].dtype
            assert np.array_equal(c, ref[name]), (
                f"{g.name}: C != numpy on '{name}' ({np.count_nonzero(c != ref[name])} values)")


# (N, H, W, C, O, KH, KW, strides, dilations, pads, groups, per_channel)
CONVS = [
    (1, 7, 6, 3, 5, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1], 1, True),
    (2, 9, 7, 4, 6, 3, 2, [2, 3], [1, 1], [0, 2, 1, 0], 1, False),
    (1, 11, 10, 2, 3, 3, 3, [1, 2], [2, 3], [2, 3, 2, 3], 1, True),
    (1, 5, 7, 8, 7, 1, 1, [1, 1], [1, 1], [0, 0, 0, 0], 1, True),  # 1x1: no patch
    (1, 6, 6, 8, 4, 1, 1, [2, 2], [1, 1], [0, 0, 0, 0], 1, False),
    (1, 6, 5, 6, 9, 2, 3, [1, 1], [1, 1], [1, 0, 0, 2], 3, True),  # grouped
    (1, 4, 4, 3, 2, 2, 2, [1, 1], [1, 1], [3, 3, 3, 3], 1, True),  # windows in the padding
    (1, 1, 9, 5, 4, 1, 3, [1, 2], [1, 1], [0, 1, 0, 1], 1, True),  # 1-D as 2-D
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONVS, ids=[f"conv{i}" for i in range(len(CONVS))])
def test_qconv2d(cfg: tuple, mode: str) -> None:
    n, h, w, c, o, kh, kw, st, dl, pads, groups, pc = cfg
    b = Builder(f"qconv_{mode}", seed=sum(cfg[:7]), options={"int8_rounding": mode})
    x = b.input("x", (n, h, w, c))
    wt = b.weights((o, kh, kw, c // groups), 0 if pc else None)
    y = b.op("QConv2D", [x, wt, b.bias(o, x, wt)], strides=st, dilations=dl, pads=pads,
             act_min=-100, act_max=120)
    _check(b.finish([y]))


# (N, H, W, C, mult, KH, KW, strides, dilations, pads, per_channel, bias)
DEPTHWISE = [
    (1, 7, 6, 3, 1, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1], True, True),
    (2, 9, 8, 2, 3, 3, 2, [2, 1], [1, 2], [1, 0, 2, 1], True, True),
    (1, 6, 5, 4, 2, 5, 5, [1, 1], [1, 1], [2, 2, 2, 2], False, False),
    (1, 8, 8, 5, 1, 3, 3, [2, 2], [1, 1], [0, 0, 0, 0], True, True),  # no padding
    (1, 3, 3, 2, 1, 3, 3, [1, 1], [2, 2], [4, 4, 4, 4], True, True),  # windows in the padding
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", DEPTHWISE, ids=[f"dw{i}" for i in range(len(DEPTHWISE))])
def test_qdepthwise(cfg: tuple, mode: str) -> None:
    n, h, w, c, mult, kh, kw, st, dl, pads, pc, bias = cfg
    b = Builder(f"qdw_{mode}", seed=h * w + c, options={"int8_rounding": mode})
    x = b.input("x", (n, h, w, c))
    wt = b.weights((1, kh, kw, c * mult), 3 if pc else None)
    ins = [x, wt, b.bias(c * mult, x, wt)] if bias else [x, wt]
    y = b.op("QDepthwiseConv2D", ins, strides=st, dilations=dl, pads=pads,
             depth_multiplier=mult)
    _check(b.finish([y]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,m,per_channel,bias", [
    ((1, 13), 7, True, True), ((3, 5, 17), 4, False, True), ((2, 64), 33, True, False),
    ((1, 1), 1, False, False)])
def test_qfully_connected(shape: tuple, m: int, per_channel: bool, bias: bool,
                          mode: str) -> None:
    b = Builder(f"qfc_{mode}", seed=m, options={"int8_rounding": mode})
    x = b.input("x", shape)
    wt = b.weights((m, shape[-1]), 0 if per_channel else None)
    ins = [x, wt, b.bias(m, x, wt)] if bias else [x, wt]
    _check(b.finish([b.op("QFullyConnected", ins, act_min=-50, act_max=127)]))


@pytest.mark.parametrize("op", ["QMaxPool2D", "QAveragePool2D"])
@pytest.mark.parametrize("shape,kernel,strides,pads", [
    ((1, 7, 6, 3), [3, 3], [2, 2], [1, 1, 1, 1]), ((2, 5, 9, 2), [2, 4], [1, 3], [0, 2, 1, 1]),
    ((1, 4, 4, 5), [4, 4], [4, 4], [0, 0, 0, 0]), ((1, 3, 3, 1), [2, 2], [1, 1], [2, 2, 2, 2])])
def test_qpool(op: str, shape: tuple, kernel: list, strides: list, pads: list) -> None:
    b = Builder("qpool", seed=sum(shape))
    x = b.input("x", shape)
    y = b.op(op, [x], b.g.quant(x), kernel=kernel, strides=strides, pads=pads, act_min=-90,
             act_max=100)
    _check(b.finish([y]))


@pytest.mark.parametrize("op", ["QAdd", "QSub", "QMul"])
@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)),
                                   ((1, 5), (4, 1)), ((3,), ())])
def test_qbinary(op: str, sa: tuple, sb: tuple) -> None:
    b = Builder("qbin", seed=len(sa) + len(sb))
    x = b.input("a", sa, quant=b.quant(0.01, 0.5))
    y = b.input("b", sb, quant=b.quant(0.01, 0.5))
    _check(b.finish([b.op(op, [x, y], act_min=-120, act_max=110)]), n=20)


def test_qbinary_constant_operand() -> None:
    b = Builder("qbinc", seed=3)
    x = b.input("a", (4, 6))
    _check(b.finish([b.op("QMul", [x, b.const_int8((6,))]),
                     b.op("QAdd", [b.const_int8((4, 1)), x])]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_qconcat_requantizes(axis: int) -> None:
    b = Builder("qcat", seed=axis + 5)
    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    xs = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
    same = b.op("Identity", [xs[1]], b.g.quant(xs[1]))  # quantized like the output
    y = b.op("QConcat", [xs[0], same, xs[2]], b.g.quant(xs[1]), axis=axis)
    g = b.finish([y])
    _check(g)
    assert "edgec_requant_s8" in compile_graph(g).c_source


@pytest.mark.parametrize("shape,axes,keepdims", [
    ((1, 5, 6, 7), [1, 2], 0), ((1, 5, 6, 7), [1, 2], 1), ((3, 4, 5), [0, 2], 0),
    ((2, 9), [1], 1), ((4, 3), [0, 1], 0), ((1, 300, 2), [1], 0)])
def test_qmean(shape: tuple, axes: list, keepdims: int) -> None:
    b = Builder("qmean", seed=len(shape) + keepdims)
    x = b.input("x", shape)
    _check(b.finish([b.op("QMean", [x], axes=axes, keepdims=keepdims)]))


@pytest.mark.parametrize("shape,scale,beta", [((1, 10), 0.05, 1.0), ((3, 17), 0.2, 1.0),
                                               ((2, 2, 5), 0.01, 2.0), ((1, 300), 0.1, 0.5),
                                               ((1, 4), 2.0, 1.0)])
def test_qsoftmax(shape: tuple, scale: float, beta: float) -> None:
    b = Builder("qsoftmax", seed=shape[-1])
    x = b.input("x", shape, quant=Quant.per_tensor(scale, 3))
    y = b.op("QSoftmax", [x], Quant.per_tensor(1.0 / 256, -128), beta=beta)
    _check(b.finish([y]), n=30)


def test_qlut_and_quantize() -> None:
    b = Builder("qlut", seed=1)
    x = b.input("x", (5, 7))
    f = b.input("f", (2, 9), "float32")
    table = b.rng.integers(-128, 128, 256).astype(np.int8)
    q = b.op("Quantize", [f])
    _check(b.finish([b.op("QLut", [x], table=table), b.op("Dequantize", [b.op("Requantize", [q])],
                                                          None, dtype="float32")]))


def test_quantize_special_values() -> None:
    """Halves round away from zero; NaN and -inf give -128, +inf 127 (as TFLite on x86)."""
    b = Builder("qspecial", seed=0)
    f = b.input("f", (1, 9), "float32")
    g = b.finish([b.op("Quantize", [f], Quant.per_tensor(0.5, 3))])
    x = np.array([[0.25, -0.25, 0.75, -0.75, np.nan, np.inf, -np.inf, 1e30, -1e30]], np.float32)
    want = np.array([[4, 2, 5, 1, -128, 127, -128, 127, -128]], np.int8)
    assert np.array_equal(interpret(g, {"f": x})[g.outputs[0]], want)
    assert np.array_equal(compile_graph(g).run(x), want)


def test_int8_data_movement() -> None:
    """Reshape/Transpose/Slice/Pad/Concat/Split/Gather/Identity/Expand move int8 codes as they
    are; int8 Pad fills the zero point; their outputs inherit the input's quantization."""
    b = Builder("qmove", seed=2)
    q = Quant.per_tensor(0.05, -7)
    x = b.input("x", (2, 3, 4), quant=q)
    const = b.g.add_const
    t = b.op("Transpose", [x], None, perm=[2, 0, 1])
    s = b.op("Slice", [t, const("s", np.array([1], np.int64)), const("e", np.array([4], np.int64)),
                       const("a", np.array([0], np.int64))], None)
    p = b.op("Pad", [s, const("p", np.array([0, 1, 0, 1, 0, 2], np.int64))], None,
             mode="constant")
    r = b.op("Reshape", [p, const("sh", np.array([3, -1], np.int64))], None)
    cat = b.op("Concat", [r, r], None, axis=0)
    gat = b.op("Gather", [cat, const("i", np.array([5, 0, 2], np.int64))], None, axis=0)
    ex = b.op("Expand", [b.op("Identity", [gat], None), const("x", np.array([2, 3, 20],
                                                                             np.int64))], None)
    b.g.tensors["sp0"] = Tensor("sp0", (), "int8")
    b.g.tensors["sp1"] = Tensor("sp1", (), "int8")
    b.g.nodes.append(Node("Split", "split", [ex, const("sp", np.array([1, 2], np.int64))],
                          ["sp0", "sp1"], {"axis": 1}))
    g = b.finish(["sp1", p, "sp0"])
    for name in (t, s, p, r, cat, gat, ex, "sp0", "sp1"):
        assert g.quant(name) is not None and g.quant(name).same_as(q), name
    feeds = {"x": b.rng.integers(-128, 128, (2, 3, 4)).astype(np.int8)}
    padded = interpret(g, feeds)[p]
    assert (padded[:, 0, :] == -7).all() and (padded[:, :, -2:] == -7).all()
    _check(g)


def test_kitchen_sink_both_modes() -> None:
    for mode in MODES:
        _check(kitchen_sink(0, {"int8_rounding": mode}), n=20, seed=4)


def test_rounding_modes_differ_in_fully_connected() -> None:
    """"tflite" rounds QFullyConnected once (edgec_mbqm_single), "double" twice; everything
    else uses TFLite's double-rounding MultiplyByQuantizedMultiplier in both modes."""
    srcs: dict[str, Any] = {}
    for mode in MODES:
        srcs[mode] = compile_graph(kitchen_sink(0, {"int8_rounding": mode})).c_source
    assert "edgec_mbqm_single" in srcs["tflite"]
    assert "edgec_mbqm_single" not in srcs["double"]
    assert "edgec_mbqm(" in srcs["tflite"] and "edgec_mbqm(" in srcs["double"]
