"""Damaged .tflite files: one-line errors, never a crash (bench.fuzz_model_bytes.py), and the
structural checks the reader and the translation make, each on a file patched to break it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import edgec
from bench.fuzz_model_bytes import classify, run
from edgec.errors import EdgecError
from edgec.frontend.tflite.reader import schema
from tests.test_tflite import _fc_model, q_layer, rnn_while_model


def _int8_conv() -> bytes:
    data, _ = q_layer("CONV_2D", (1, 6, 6, 3), (4, 3, 3, 3), (1, 4, 4, 4), "Conv2DOptions",
                      padding=1, strideH=1, strideW=1, dilationHFactor=1, dilationWFactor=1)
    return data


def _patched(data: bytes, fix: Callable[[Any], None]) -> bytes:
    """``data`` read into the schema's object API, changed by ``fix`` and written again."""
    import flatbuffers

    S = schema()
    m = S.ModelT.InitFromPackedBuf(data, 0)
    fix(m)
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def _refused(data: bytes, pattern: str) -> str:
    with pytest.raises(EdgecError, match=pattern) as exc:
        edgec.compile(data, name="m")
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def _tensor(m: Any, name: str) -> Any:
    (t,) = [t for t in m.subgraphs[0].tensors if t.name.decode() == name]
    return t


def test_the_patched_models_compile_unchanged() -> None:
    for data in (_int8_conv(), rnn_while_model()[0]):
        assert classify(_patched(data, lambda m: None))[0] == "ok"


def test_scale_and_zero_point_counts_must_match() -> None:
    def fix(m: Any) -> None:
        _tensor(m, "w").quantization.zeroPoint = np.zeros(1, np.int64)

    _refused(_patched(_int8_conv(), fix), r"tensor 1 'w': quantization has 4 scale\(s\) but 1 "
                                          r"zero point\(s\)")


def test_per_channel_scales_must_cover_the_axis() -> None:
    def fix(m: Any) -> None:
        q = _tensor(m, "w").quantization
        q.scale, q.zeroPoint = q.scale[:3], q.zeroPoint[:3]

    _refused(_patched(_int8_conv(), fix), "3 per-channel scales along axis 0, which has 4")

    def bad_axis(m: Any) -> None:
        _tensor(m, "w").quantization.quantizedDimension = 7

    _refused(_patched(_int8_conv(), bad_axis), "axis 7 of a 4-D tensor")


@pytest.mark.parametrize("value", [np.nan, np.inf, -0.5])
def test_scales_must_be_finite_and_non_negative(value: float) -> None:
    def fix(m: Any) -> None:
        _tensor(m, "y").quantization.scale = np.array([value], np.float32)

    _refused(_patched(_int8_conv(), fix), "quantization scale .* is not a finite non-negative")


def test_subgraph_input_index_in_range() -> None:
    def fix(m: Any) -> None:
        m.subgraphs[0].inputs = np.array([-1], np.int32)

    _refused(_patched(_int8_conv(), fix), r"subgraph 0: input/output tensor index -1 out of range")


def test_an_operator_reading_an_undefined_tensor_is_named() -> None:
    def fix(m: Any) -> None:  # the FULLY_CONNECTED reads the tensor the recurrent one writes
        body = m.subgraphs[2]
        fcs = [op for op in body.operators if len(op.inputs) == 3]
        ins = np.array(fcs[0].inputs)
        ins[0] = fcs[1].outputs[0]
        fcs[0].inputs = ins

    msg = _refused(_patched(rnn_while_model()[0], fix),
                   r"subgraph 2 operator \d+ \(FULLY_CONNECTED\): reads tensor \d+ 'r', which is "
                   r"no input, constant or earlier operator's output")
    assert msg.startswith("<tflite>: ")


def test_a_required_input_that_is_absent() -> None:
    def fix(m: Any) -> None:
        op = m.subgraphs[0].operators[0]
        ins = np.array(op.inputs)
        ins[0] = -1  # the input
        op.inputs = ins

    _refused(_patched(_int8_conv(), fix), r"operator 0 \(CONV_2D\): a required input is absent")


def test_a_loop_condition_operator_with_missing_inputs() -> None:
    def fix(m: Any) -> None:
        less = m.subgraphs[1].operators[0]
        less.inputs = less.inputs[:1]

    _refused(_patched(rnn_while_model()[0], fix),
             r"subgraph 1 operator 0 \(LESS\): its integer inputs do not evaluate at compile "
             r"time \(IndexError")


def test_split_count_must_match_the_outputs() -> None:
    from tests.tflite_builder import TflBuilder

    b = TflBuilder()
    x = b.input("x", (2, 6))
    ys = [b.tensor(f"y{i}", (2, 2)) for i in range(3)]
    b.op("SPLIT", [b.const("axis", np.array(1, np.int32)), x], ys, "SplitOptions", numSplits=3)
    data = b.build([x], ys)
    assert classify(data)[0] == "ok"

    def fix(m: Any) -> None:
        m.subgraphs[0].operators[0].builtinOptions.numSplits = 0

    _refused(_patched(data, fix), r"operator 0 \(SPLIT\): num_splits 0 but 3 outputs")


def test_damaged_copies_are_compiled_or_refused_in_one_line() -> None:
    """200 damaged copies of an int8 conv, a float dense layer and a WHILE RNN with its
    sequence output: no exception but EdgecError, no multi-line message, no NaN arithmetic."""
    models = {"conv_int8": _int8_conv(), "fc_float": _fc_model(),
              "while_rnn": rnn_while_model(sequences=True)[0]}
    rep = run(models, mutations=200, seed=5)
    assert rep.ok, rep.bugs
    assert rep.counts["refused"] > 50 and rep.counts["ok"] > 5, rep.counts


def test_the_fuzzer_reports_a_crash() -> None:
    """classify() tells an internal error from a refusal (what the sweep above relies on)."""
    kind, detail = classify(b"\x00" * 4 + b"TFL3" + b"\x00" * 8)
    assert kind == "refused", detail
    import bench.fuzz_model_bytes as fz

    def boom(path: object, name: str) -> None:
        raise KeyError("x")

    real = fz.edgec.compile
    fz.edgec.compile = boom  # type: ignore[assignment]
    try:
        kind, detail = classify(b"")
    finally:
        fz.edgec.compile = real  # type: ignore[assignment]
    assert kind == "internal" and detail.startswith("KeyError: 'x'")


def test_layer_inputs_of_the_wrong_rank_are_named() -> None:
    def fix(m: Any) -> None:
        _tensor(m, "x").shape = np.array([6, 6, 3], np.int32)

    _refused(_patched(_int8_conv(), fix),
             r"operator 0 \(CONV_2D\): the NHWC input must be 4-D, got shape \[6, 6, 3\]")


def _bad_constant_concat() -> bytes:
    from tests.tflite_builder import TflBuilder

    b = TflBuilder()
    x = b.input("x", (2, 3))
    c = b.const("c", np.zeros((2, 3), np.float32))
    r = b.tensor("r", (2, 3))
    b.op("CONCATENATION", [c, b.const("d", np.zeros((3, 3), np.float32))], [r],
         "ConcatenationOptions", axis=1)
    y = b.tensor("y", (2, 3))
    b.op("ADD", [x, r], [y], "AddOptions")
    return b.build([x], [y])


def test_an_operator_numpy_cannot_fold_is_named_not_a_crash(monkeypatch) -> None:
    """Constants that do not fit together (here a CONCATENATION folded at compile time): the
    translation's numpy error becomes one line naming the operator; EDGEC_DEBUG=1 keeps the
    original exception for the traceback."""
    from edgec.errors import MalformedOperatorError

    monkeypatch.delenv("EDGEC_DEBUG", raising=False)
    with pytest.raises(MalformedOperatorError,
                       match=r"^<tflite>: subgraph 0 operator 0 \(CONCATENATION\): its inputs "
                             r"or options do not fit together \(ValueError: .*please report"):
        edgec.compile(_bad_constant_concat(), name="m")
    monkeypatch.setenv("EDGEC_DEBUG", "1")
    with pytest.raises(ValueError):
        edgec.compile(_bad_constant_concat(), name="m")


def test_pack_inputs_must_agree_in_shape() -> None:
    from tests.tflite_builder import TflBuilder

    b = TflBuilder()
    x = b.input("x", (2, 3))
    y = b.tensor("y", (2, 2, 3))
    b.op("PACK", [x, b.const("c", np.zeros((3,), np.float32))], [y], "PackOptions",
         valuesCount=2, axis=0)
    _refused(b.build([x], [y]), r"operator 0 \(PACK\): PACK inputs differ in shape: "
                                r"\[\[2, 3\], \[3\]\]")


def test_error_messages_stay_one_line_with_control_characters_in_names() -> None:
    """A damaged ONNX file can name a node 'a\\nb': the error escapes it (one line)."""
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="tran\nB\t")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgecError) as exc:
        edgec.compile(model)
    msg = str(exc.value)
    assert "\n" not in msg and "\t" not in msg and r"tran\nB\t" in msg, msg


def test_a_model_without_outputs_is_refused() -> None:
    from tests.tflite_builder import TflBuilder

    b = TflBuilder()
    x = b.input("x", (1, 4))
    y = b.tensor("y", (1, 4))
    b.op("RELU", [x], [y])
    _refused(b.build([x], []), r"^<tflite>: subgraph 0 has no outputs$")
