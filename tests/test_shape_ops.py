"""Data-movement and shape ops against onnxruntime, and the folding of exported shape chains."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgec
from edgec.backend.host import build_shared
from edgec.errors import EdgecError, UnsupportedOpError
from tests.helpers import check_model, make_model

I64 = np.int64
INT64_MAX = np.iinfo(np.int64).max


def i64(*v: int) -> np.ndarray:
    return np.array(v, I64)


def ops_of(m: edgec.CompiledModel) -> list[str]:
    return [n.op for n in m.graph.nodes]


# -- views ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [
    ((2, 3, 7), (6, 7)), ((2, 3, 7), (-1,)), ((2, 3, 7), (0, -1)), ((17,), (1, 17, 1)),
    ((1, 3, 1, 7), (0, 0, -1)), ((7, 3), (-1, 0)), ((1,), ()),
], ids=str)
@pytest.mark.parametrize("opset", [7, 13])
def test_reshape(shape: tuple, target: tuple, opset: int) -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    check_model(make_model([node], {"x": shape}, ["y"], {"s": i64(*target)}, opset=opset))


def test_reshape_allowzero() -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
    m = check_model(make_model([node], {"x": (3, 7)}, ["y"], {"s": i64(7, -1)}, opset=14))
    assert m.graph.shape("y") == (7, 3)
    bad = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
    with pytest.raises(EdgecError, match="cannot reshape"):
        edgec.compile(make_model([bad], {"x": (3, 7)}, ["y"], {"s": i64(0, 21)}, opset=14))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis: int) -> None:
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis)
    check_model(make_model([node], {"x": (2, 3, 1, 7)}, ["y"], opset=13))


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [0], [2, -1], [-4]], ids=str)
def test_squeeze(opset: int, axes: list | None) -> None:
    shape = (1, 3, 1, 1)
    if axes is None:
        node = helper.make_node("Squeeze", ["x"], ["y"])
        inits = {}
    elif opset < 13:
        node = helper.make_node("Squeeze", ["x"], ["y"], axes=axes)
        inits = {}
    else:
        node = helper.make_node("Squeeze", ["x", "a"], ["y"])
        inits = {"a": i64(*axes)}
    check_model(make_model([node], {"x": shape}, ["y"], inits, opset=opset))


@pytest.mark.parametrize("opset", [11, 13, 21])
@pytest.mark.parametrize("shape,axes", [((3, 7), [0]), ((3, 7), [-1, 1]), ((17,), [0, 2, 3]),
                                        ((), [0])], ids=str)
def test_unsqueeze(opset: int, shape: tuple, axes: list) -> None:
    if opset < 13:
        node, inits = helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes), {}
    else:
        node, inits = helper.make_node("Unsqueeze", ["x", "a"], ["y"]), {"a": i64(*axes)}
    # a Relu first so the view reads an arena tensor
    nodes = [helper.make_node("Relu", ["x"], ["r"]), node]
    nodes[1].input[0] = "r"
    check_model(make_model(nodes, {"x": shape}, ["y"], inits, opset=opset))


def test_squeeze_non_unit_axis_is_an_error() -> None:
    node = helper.make_node("Squeeze", ["x", "a"], ["y"])
    model = make_model([node], {"x": (3, 7)}, ["y"], {"a": i64(0)}, opset=13)
    with pytest.raises(EdgecError, match="cannot squeeze axis 0"):
        edgec.compile(model)


@pytest.mark.parametrize("op", ["Identity", "Dropout"])
def test_identity_between_input_and_output(op: str) -> None:
    outs = ["y", "mask"] if op == "Dropout" else ["y"]  # an unused mask is dropped
    m = check_model(make_model([helper.make_node(op, ["x"], outs)], {"x": (3, 7)}, ["y"]))
    assert "memcpy" in m.c_source


@pytest.mark.parametrize("opset", [7, 11, 13])
def test_dropout_unused_mask(opset: int) -> None:
    if opset >= 12:
        node = helper.make_node("Dropout", ["r", "ratio", "train"], ["d", "mask"])
        inits = {"ratio": np.array(0.5, np.float32), "train": np.array(False)}
    else:
        node = helper.make_node("Dropout", ["r"], ["d", "mask"], ratio=0.3)
        inits = {}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), node, helper.make_node("Neg", ["d"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 17)}, ["y"], inits, opset=opset))
    assert ops_of(m) == ["Relu", "Neg"]


def test_dropout_used_mask_is_unsupported() -> None:
    node = helper.make_node("Dropout", ["x"], ["y", "mask"])
    cast = helper.make_node("Cast", ["mask"], ["z"], to=TensorProto.FLOAT)
    model = make_model([node, cast], {"x": (3,)}, ["y", "z"], opset=11)
    with pytest.raises(UnsupportedOpError, match="mask output is supported only when unused"):
        edgec.compile(model)


def test_dropout_training_mode_is_unsupported() -> None:
    node = helper.make_node("Dropout", ["x", "", "t"], ["y"])
    model = make_model([node], {"x": (3,)}, ["y"], {"t": np.array(True)}, opset=13)
    with pytest.raises(UnsupportedOpError, match="training mode"):
        edgec.compile(model)


def test_reshape_between_arena_tensors_emits_no_code() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "s"], ["v"]),
             helper.make_node("Sigmoid", ["v"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 3, 7)}, ["y"], {"s": i64(6, 7)}))
    assert ops_of(m) == ["Relu", "Reshape", "Sigmoid"]
    assert "Reshape 'Reshape_1': view of its input, no code" in m.c_source.replace("\"", "'")
    assert "_reshape(" not in m.c_source and "memcpy" not in m.c_source


def test_view_as_graph_output_is_copied() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Flatten", ["r"], ["y"], axis=2),
             helper.make_node("Neg", ["r"], ["z"])]
    m = check_model(make_model(nodes, {"x": (2, 3, 7)}, ["y", "z"]))
    assert "memcpy" in m.c_source


# -- Transpose, Concat, Split ---------------------------------------------------------------------

@pytest.mark.parametrize("shape,perm", [
    ((3, 7), None), ((3, 7), [1, 0]), ((2, 3, 7), [0, 2, 1]), ((2, 3, 7), [2, 0, 1]),
    ((2, 3, 5, 7), [0, 2, 3, 1]), ((2, 3, 5, 7), [0, 3, 1, 2]), ((1, 17, 1, 3), [3, 1, 0, 2]),
    ((2, 3, 5, 7), [0, 1, 3, 2]), ((7,), [0]),
], ids=str)
def test_transpose(shape: tuple, perm: list | None) -> None:
    attrs = {} if perm is None else {"perm": perm}
    check_model(make_model([helper.make_node("Transpose", ["x"], ["y"], **attrs)],
                           {"x": shape}, ["y"]))


@pytest.mark.parametrize("shapes,axis", [
    ([(3, 7), (3, 7)], 0), ([(3, 7), (3, 1), (3, 17)], 1), ([(2, 1, 7), (2, 3, 7)], -2),
    ([(2, 3, 7), (2, 3, 1)], -1), ([(1,), (17,)], 0),
], ids=str)
def test_concat(shapes: list, axis: int) -> None:
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Concat", names, ["y"], axis=axis)
    check_model(make_model([node], dict(zip(names, shapes, strict=True)), ["y"], opset=13))


def test_concat_with_constant_and_repeated_input() -> None:
    c = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    node = helper.make_node("Concat", ["x", "c", "x"], ["y"], axis=1)
    check_model(make_model([node], {"x": (2, 3)}, ["y"], {"c": c}))


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("shape,axis,split", [
    ((6, 7), 0, None), ((3, 17), 1, [10, 7]), ((2, 9, 3), -2, [1, 3, 5]), ((3, 7), 1, [7]),
], ids=str)
def test_split(opset: int, shape: tuple, axis: int, split: list | None) -> None:
    n_out = len(split) if split else 3 if shape[axis] % 3 == 0 else 2
    outs = [f"y{i}" for i in range(n_out)]
    inits: dict = {}
    attrs: dict = {"axis": axis}
    ins = ["x"]
    if split is not None and opset < 13:
        attrs["split"] = split
    elif split is not None:
        ins.append("s")
        inits["s"] = i64(*split)
    elif opset >= 18:
        attrs["num_outputs"] = n_out
    check_model(make_model([helper.make_node("Split", ins, outs, **attrs)], {"x": shape}, outs,
                           inits, opset=opset))


@pytest.mark.parametrize("dim,n", [(7, 3), (17, 4), (3, 3), (5, 2)])
def test_split_num_outputs_uneven(dim: int, n: int) -> None:
    outs = [f"y{i}" for i in range(n)]
    node = helper.make_node("Split", ["x"], outs, axis=1, num_outputs=n)
    check_model(make_model([node], {"x": (2, dim)}, outs, opset=18))


# -- Slice ----------------------------------------------------------------------------------------

SLICES = [
    # starts, ends, axes, steps
    ([1], [3], [0], [1]),
    ([0, 2], [INT64_MAX, -1], [0, 1], [1, 1]),
    ([-1], [-INT64_MAX], [1], [-1]),
    ([5], [-100], [1], [-2]),
    ([0, 1], [3, 100], [-1, -2], [2, 3]),
    ([100], [200], [2], [1]),
    ([2, 6, 0], [0, 0, 3], [0, 1, 2], [-1, -3, 1]),
    ([-3], [INT64_MAX], [2], [1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES, ids=str)
@pytest.mark.parametrize("opset", [10, 13])
def test_slice_inputs(starts: list, ends: list, axes: list, steps: list, opset: int) -> None:
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    inits = {"st": i64(*starts), "en": i64(*ends), "ax": i64(*axes), "sp": i64(*steps)}
    check_model(make_model([node], {"x": (3, 17, 7)}, ["y"], inits, opset=opset))


def test_slice_default_axes_and_steps() -> None:
    node = helper.make_node("Slice", ["x", "st", "en"], ["y"])
    check_model(make_model([node], {"x": (5, 7)}, ["y"], {"st": i64(1, -4), "en": i64(4, 7)}))


@pytest.mark.parametrize("attrs", [
    {"starts": [1], "ends": [3]}, {"starts": [0, -3], "ends": [INT64_MAX, 100], "axes": [0, 2]},
    {"starts": [2], "ends": [-1], "axes": [-1]},
], ids=str)
def test_slice_attrs_opset9(attrs: dict) -> None:
    node = helper.make_node("Slice", ["x"], ["y"], **attrs)
    check_model(make_model([node], {"x": (3, 7, 5)}, ["y"], opset=9))


# -- Gather ---------------------------------------------------------------------------------------

GATHERS = [
    ((5, 7), 0, np.array(3)), ((5, 7), 1, np.array([0, 6, 2, 2])), ((5, 7), -1, np.array(-1)),
    ((2, 3, 7), 1, np.array([[2, 0], [1, -3]])), ((2, 3, 7), 2, np.array([1, 3, 5])),
    ((17,), 0, np.array([16, -17, 3])), ((2, 3, 7), 0, np.array([1])),
    ((2, 3, 7), 2, np.array([6, 4, 2, 0])),
]


@pytest.mark.parametrize("shape,axis,idx", GATHERS, ids=str)
def test_gather_runtime_data(shape: tuple, axis: int, idx: np.ndarray) -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)
    m = check_model(make_model([node], {"x": shape}, ["y"], {"i": idx.astype(I64)}))
    assert ops_of(m) == ["Gather"]


def test_gather_int32_indices_and_out_of_range() -> None:
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
    check_model(make_model([node], {"x": (3, 7)}, ["y"], {"i": np.array([5, 1], np.int32)}))
    with pytest.raises(EdgecError, match="index 7 is out of range"):
        edgec.compile(make_model([node], {"x": (3, 7)}, ["y"], {"i": i64(7)}))


def test_gather_of_constants_folds() -> None:
    table = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["t", "i"], ["g"], axis=0),
             helper.make_node("Add", ["x", "g"], ["y"])]
    m = check_model(make_model(nodes, {"x": (2, 3)}, ["y"], {"t": table, "i": i64(4, 1)}))
    assert ops_of(m) == ["Add"]


# -- Pad ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [7, 11, 18])
@pytest.mark.parametrize("shape,pads", [
    ((3, 7), [1, 2, 2, 1]), ((2, 3, 7), [0, 0, 3, 0, 1, 2]),
    ((1, 2, 5, 5), [0, 0, 1, 1, 0, 0, 1, 1]), ((17,), [0, 3]),
], ids=str)
def test_pad(mode: str, opset: int, shape: tuple, pads: list) -> None:
    if opset < 11:
        node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=pads, value=1.5)
        inits: dict = {}
    else:
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
        inits = {"p": i64(*pads), "v": np.array(-0.75, np.float32)}
    check_model(make_model([node], {"x": shape}, ["y"], inits, opset=opset))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_axes_opset19(mode: str) -> None:
    node = helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode=mode)
    inits = {"p": i64(2, 1, 1, 3), "a": i64(-1, 1)}
    check_model(make_model([node], {"x": (2, 5, 7)}, ["y"], inits, opset=19))


def test_pad_negative_constant() -> None:
    node = helper.make_node("Pad", ["x", "p"], ["y"])
    check_model(make_model([node], {"x": (5, 7)}, ["y"], {"p": i64(-1, 2, 1, -3)}, opset=13))


# -- Expand, Cast ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [
    ((3, 1), (2, 3, 7)), ((1,), (17,)), ((2, 1, 7), (3, 1)), ((3, 7), (1, 1)), ((), (3, 1)),
], ids=str)
def test_expand(shape: tuple, target: tuple) -> None:
    node = helper.make_node("Expand", ["x", "s"], ["y"])
    check_model(make_model([node], {"x": shape}, ["y"], {"s": i64(*target)}, opset=13))


SPECIAL = np.array([0.0, -0.0, 1.0, 65504.0, 65519.0, 65520.0, 70000.0, -1e9, 3.0e-5, 6.1e-5,
                    5.96e-8, 2.9e-8, 3.0e-8, -1.0e-8, 0.1, 1.0009765625, 1.00048828125,
                    1.00146484375, 2047.5, 2049.0, -np.inf, np.inf, 1.0 / 3.0, 12345.678],
                   np.float32)


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
                                TensorProto.FLOAT])
def test_cast_float_roundtrip(to: int) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=to),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    rng = np.random.default_rng(2)
    x = np.concatenate([SPECIAL, rng.standard_normal(40).astype(np.float32) * 100])
    x = x.reshape(1, -1)
    check_model(make_model(nodes, {"x": x.shape}, ["y"], opset=13), {"x": x}, rtol=0, atol=0)


def test_cast_runtime_int_is_unsupported() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.INT32),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    with pytest.raises(UnsupportedOpError, match="run-time Cast to INT32"):
        edgec.compile(make_model(nodes, {"x": (3,)}, ["y"], opset=13))


# -- shape computations that fold -----------------------------------------------------------------

@pytest.mark.parametrize("opset", [11, 13])
def test_legacy_reshape_chain_folds(opset: int) -> None:
    """x.view(x.size(0), -1) as the TorchScript exporter writes it."""
    unsqueeze = (helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]) if opset < 13
                 else helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]))
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        unsqueeze,
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["v"]),
        helper.make_node("Sigmoid", ["v"], ["y"]),
    ]
    inits = {"zero": np.array(0, I64), "ax0": i64(0), "minus1": i64(-1)}
    m = check_model(make_model(nodes, {"x": (3, 2, 7)}, ["y"], inits, opset=opset))
    assert ops_of(m) == ["Relu", "Reshape", "Sigmoid"]
    assert m.graph.shape("y") == (3, 14)
    assert "view of its input, no code" in m.c_source


def test_legacy_expand_as_chain_folds() -> None:
    """expand_as: Shape → ConstantOfShape → Mul → Equal → Where → Expand, plus Shape(start=1)."""
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Shape", ["x"], ["tail"], start=1),
        helper.make_node("Shape", ["tail"], ["rank1"]),
        helper.make_node("ConstantOfShape", ["rank1"], ["ones"], value=one),
        helper.make_node("Mul", ["ones", "minus1"], ["neg"]),
        helper.make_node("Slice", ["shp", "s0", "s1"], ["want"]),
        helper.make_node("Equal", ["want", "neg"], ["is_neg"]),
        helper.make_node("Where", ["is_neg", "ones2", "want"], ["target"]),
        helper.make_node("Expand", ["b", "target"], ["e"]),
        helper.make_node("Mul", ["x", "e"], ["y"]),
    ]
    inits = {"minus1": i64(-1), "s0": i64(1), "s1": i64(3), "ones2": i64(1, 1),
             "b": np.random.default_rng(3).standard_normal((1, 7)).astype(np.float32)}
    nodes[-2].input[1] = "target"
    model = make_model(nodes, {"x": (2, 3, 7)}, ["y"], inits, opset=15)
    m = check_model(model)
    assert ops_of(m) == ["Mul"]


def test_size_folds() -> None:
    nodes = [helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["x", "f"], ["y"])]
    m = check_model(make_model(nodes, {"x": (3, 7)}, ["y"], opset=13))
    assert ops_of(m) == ["Div"]


def test_range_floor_cast_fold() -> None:
    """Range of float scalars, Floor, and integer casts fold into one constant."""
    nodes = [
        helper.make_node("Range", ["a", "b", "d"], ["r"]),
        helper.make_node("Floor", ["r"], ["f"]),
        helper.make_node("Cast", ["f"], ["i"], to=TensorProto.INT64),
        helper.make_node("Cast", ["i"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    inits = {"a": np.array(0.5, np.float32), "b": np.array(4.2, np.float32),
             "d": np.array(0.7, np.float32)}
    m = check_model(make_model(nodes, {"x": (2, 6)}, ["y"], inits, opset=13))
    assert ops_of(m) == ["Add"]


def test_int_range_min_max_mod_fold() -> None:
    nodes = [
        helper.make_node("Range", ["a", "b", "d"], ["r"]),
        helper.make_node("Max", ["r", "lo"], ["r1"]),
        helper.make_node("Min", ["r1", "hi"], ["r2"]),
        helper.make_node("Mod", ["r2", "three"], ["r3"]),
        helper.make_node("Cast", ["r3"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "c"], ["y"]),
    ]
    inits = {"a": np.array(9, I64), "b": np.array(-4, I64), "d": np.array(-2, I64),
             "lo": np.array(-1, I64), "hi": np.array(7, I64), "three": np.array(3, I64)}
    m = check_model(make_model(nodes, {"x": (7,)}, ["y"], inits, opset=13))
    assert ops_of(m) == ["Mul"]


@pytest.mark.parametrize("op", ["Floor", "Ceil"])
def test_rounding_runtime(op: str) -> None:
    check_model(make_model([helper.make_node(op, ["x"], ["y"])], {"x": (3, 17)}, ["y"]))


@pytest.mark.parametrize("op", ["Min", "Max"])
def test_min_max_runtime(op: str) -> None:
    node = helper.make_node(op, ["a", "b", "c"], ["y"])
    check_model(make_model([node], {"a": (3, 7), "b": (7,), "c": (3, 1)}, ["y"], opset=13))


def test_where_constant_condition_runtime() -> None:
    cond = np.random.default_rng(4).uniform(size=(3, 1, 7)) > 0.5
    node = helper.make_node("Where", ["c", "a", "b"], ["y"])
    check_model(make_model([node], {"a": (3, 2, 7), "b": (7,)}, ["y"], {"c": cond}))


def test_runtime_comparison_feeds_where() -> None:
    """A comparison on run-time data (0/1 floats in C) drives Where (see edgec/ops/logic.py)."""
    nodes = [helper.make_node("Less", ["x", "z"], ["l"]),
             helper.make_node("Where", ["l", "x", "z"], ["y"])]
    model = make_model(nodes, {"x": (3,)}, ["y"], {"z": np.zeros(3, np.float32)})
    check_model(model)


# -- generated C quality --------------------------------------------------------------------------

def test_strict_c99_build() -> None:
    """A chain of the C-emitting ops compiles warning-free under -Werror -pedantic."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["t", "st", "en", "ax", "sp"], ["s"]),
        helper.make_node("Pad", ["s", "p"], ["p1"], mode="reflect"),
        helper.make_node("Pad", ["p1", "p", "v"], ["p2"]),
        helper.make_node("Gather", ["p2", "gi"], ["g"], axis=1),
        helper.make_node("Concat", ["g", "g"], ["c"], axis=2),
        helper.make_node("Split", ["c"], ["c0", "c1"], axis=2, num_outputs=2),
        helper.make_node("Expand", ["c0", "es"], ["e"]),
        helper.make_node("Cast", ["e"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["y0"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["c1"], ["b"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Floor", ["bf"], ["y1"]),
        helper.make_node("Where", ["cond", "y1", "e"], ["y2"]),
    ]
    inits = {"st": i64(1), "en": i64(-1), "ax": i64(1), "sp": i64(1),
             "p": i64(0, 1, 2, 0, 1, 1), "v": np.array(0.5, np.float32),
             "gi": i64(3, 0, 1), "es": i64(3, 1, 1, 1),
             "cond": np.random.default_rng(5).uniform(size=13) > 0.5}
    model = make_model(nodes, {"x": (2, 7, 5)}, ["y0", "y1", "y2"], inits, opset=18)
    m = check_model(model)
    build_shared(m.cmodel, ("-Werror", "-pedantic", "-Wshadow", "-Wconversion"))


def test_shape_start_end_folds_to_constant_output() -> None:
    """Shape(start, end) of opset 15 folds; a constant graph output is copied from flash."""
    node = helper.make_node("Shape", ["x"], ["s"], start=-2, end=-1)
    cast = helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)
    model = make_model([node, cast], {"x": (2, 3, 7)}, {"y": (1,)}, opset=15)
    onnx.checker.check_model(model)
    m = check_model(model)
    np.testing.assert_array_equal(m.run(x=np.zeros((2, 3, 7), np.float32)), [3.0])
