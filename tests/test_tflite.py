"""The TFLite front-end: the flatbuffer reader, float and int8 translation checked against the
TFLite interpreter (ai-edge-litert, reference kernels), WHILE loops, bad input.

Single-op models are written directly as flatbuffers (tests/tflite_builder.py, no TensorFlow);
Keras-converted models are in tests/test_keras.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="the TFLite tests need ai-edge-litert "
                    "(pip install 'edgec[tflite]')")

from edgec.errors import EdgecError  # noqa: E402
from edgec.frontend.tflite.reader import read_tflite  # noqa: E402
from tests.tflite_builder import TflBuilder  # noqa: E402


def _fc_model(act: int = 0) -> bytes:
    b = TflBuilder()
    x = b.input("x", (1, 4), signature=(-1, 4))
    w = b.const("w", np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
    bias = b.const("b", np.array([1.0, -1.0, 0.5], np.float32))
    y = b.tensor("y", (1, 3))
    b.op("FULLY_CONNECTED", [x, w, bias], [y], "FullyConnectedOptions",
         fusedActivationFunction=act)
    return b.build([x], [y])


# -- reader ------------------------------------------------------------------------------------

def test_reader_tensors_operators_options() -> None:
    m = read_tflite(_fc_model(act=1))
    sg = m.subgraphs[0]
    assert len(m.subgraphs) == 1 and sg.inputs == [0] and sg.outputs == [3]
    x, w, bias, y = sg.tensors
    assert (x.name, x.type, x.shape, x.signature, x.data) == ("x", "FLOAT32", (1, 4), (-1, 4), None)
    assert x.dynamic_dims == [0]
    assert w.dtype == "float32" and w.data is not None and w.data.shape == (3, 4)
    np.testing.assert_array_equal(w.data, np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
    np.testing.assert_array_equal(bias.data, [1.0, -1.0, 0.5])
    assert y.data is None and y.quant is None
    (op,) = sg.operators
    assert (op.op, op.inputs, op.outputs) == ("FULLY_CONNECTED", [0, 1, 2], [3])
    assert op.builtin_options["fusedActivationFunction"] == 1
    assert op.builtin_options["keepNumDims"] is False


def test_reader_quantization_and_custom_op() -> None:
    b = TflBuilder()
    x = b.input("x", (1, 2, 2, 3), "int8", quant=(0.5, -3))
    w = b.const("w", np.ones((4, 1, 1, 3), np.int8), quant=([0.1, 0.2, 0.3, 0.4], [0] * 4, 0))
    y = b.tensor("y", (1, 2, 2, 4), "int8", quant=(0.25, 7))
    b.op("CUSTOM", [x, w], [y], custom="MyOp")
    sg = read_tflite(b.build([x], [y])).subgraphs[0]
    assert sg.tensors[0].quant is not None
    np.testing.assert_allclose(sg.tensors[0].quant.scale, [0.5])
    assert sg.tensors[0].quant.zero_point.tolist() == [-3]
    wq = sg.tensors[1].quant
    assert wq is not None and wq.axis == 0 and wq.scale.shape == (4,)
    assert sg.tensors[1].data.dtype == np.int8
    assert (sg.operators[0].op, sg.operators[0].custom_code) == ("CUSTOM", "MyOp")


@pytest.mark.parametrize("cut", [0, 7, 40, 200, -30])
def test_reader_truncated_or_corrupt(cut: int) -> None:
    data = _fc_model()
    bad = data[:cut] if cut >= 0 else data[:cut]
    with pytest.raises(EdgecError) as exc:
        read_tflite(bad, source="m.tflite")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("m.tflite: ")


def test_reader_garbage_after_identifier() -> None:
    data = bytearray(_fc_model())
    rng = np.random.default_rng(0)
    for _ in range(20):  # random bytes everywhere but the identifier: never a traceback
        junk = bytearray(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
        junk[4:8] = b"TFL3"
        try:
            read_tflite(bytes(junk), source="junk.tflite")
        except EdgecError as exc:
            assert "\n" not in str(exc)


def test_reader_missing_file(tmp_path) -> None:
    with pytest.raises(EdgecError, match="no such file"):
        read_tflite(tmp_path / "none.tflite")


# -- float builtins vs the TFLite interpreter --------------------------------------------------

import edgec  # noqa: E402
from tests.tflite_builder import run_interpreter  # noqa: E402

#: float32 C vs TFLite's reference kernels (both single precision, different libm/orders)
RTOL, ATOL = 1e-4, 1e-5

RNG = np.random.default_rng(1234)


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def check(data: bytes, feeds: list[np.ndarray], rtol: float = RTOL, atol: float = ATOL,
          **kw: object) -> edgec.CompiledModel:
    """Compile ``data`` with edgec; the C output and the IR interpreter must match TFLite."""
    expected = run_interpreter(data, feeds)
    m = edgec.compile(data, name="t", **kw)  # type: ignore[arg-type]
    got = m.run(*feeds)
    got = got if isinstance(got, list) else [got]
    ref = m.reference(*feeds)
    ref = ref if isinstance(ref, list) else [ref]
    assert len(got) == len(expected)
    for i, (g_, r_, e_) in enumerate(zip(got, ref, expected, strict=True)):
        assert g_.shape == e_.shape, f"output {i}: edgec {g_.shape} vs TFLite {e_.shape}"
        np.testing.assert_allclose(g_, e_, rtol=rtol, atol=atol, err_msg=f"C output {i}")
        np.testing.assert_allclose(r_, e_, rtol=rtol, atol=atol, err_msg=f"IR output {i}")
    return m


def single(opname: str, ins: list[tuple[int, ...] | np.ndarray], out: tuple[int, ...],
           options: str | None = None, n_out: int = 1,
           **fields: object) -> tuple[bytes, list[np.ndarray]]:
    """A one-operator model: tuples are run-time float inputs (random feeds), arrays constants
    (int arrays too), None an absent optional input."""
    b = TflBuilder()
    idx, feeds, graph_ins = [], [], []
    for k, spec in enumerate(ins):
        if spec is None:
            idx.append(-1)
        elif isinstance(spec, tuple):
            t = b.input(f"x{k}", spec)
            idx.append(t)
            graph_ins.append(t)
            feeds.append(_rand(*spec))
        else:
            idx.append(b.const(f"c{k}", spec))
    outs = [b.tensor(f"y{k}", out) for k in range(n_out)]
    b.op(opname, idx, outs, options, **fields)
    return b.build(graph_ins, outs), feeds


@pytest.mark.parametrize("act", [0, 1, 2, 3])
def test_fully_connected_fused_activations(act: int) -> None:
    check(*single("FULLY_CONNECTED", [(3, 10), _rand(7, 10), _rand(7)], (3, 7),
                  "FullyConnectedOptions", fusedActivationFunction=act))


def test_fully_connected_no_bias_flatten_and_keep_dims() -> None:
    check(*single("FULLY_CONNECTED", [(2, 3, 4), _rand(5, 12), None], (2, 5),
                  "FullyConnectedOptions"))
    check(*single("FULLY_CONNECTED", [(2, 3, 4), _rand(5, 4), _rand(5)], (2, 3, 5),
                  "FullyConnectedOptions", keepNumDims=True))


def test_fully_connected_runtime_weights() -> None:
    check(*single("FULLY_CONNECTED", [(2, 6), (4, 6), None], (2, 4), "FullyConnectedOptions"))


def _out_size(size: int, k: int, s: int, d: int, same: bool) -> int:
    return -(-size // s) if same else -(-(size - (k - 1) * d) // s)


CONV_CASES = [  # (H, W, C, O, KH, KW, stride, dilation, SAME, act)
    (9, 9, 3, 4, 3, 3, (1, 1), (1, 1), True, 0),
    (10, 7, 2, 5, 3, 2, (2, 1), (1, 1), True, 1),
    (8, 8, 4, 3, 3, 3, (2, 2), (1, 1), False, 3),
    (11, 9, 3, 6, 3, 3, (1, 1), (2, 2), True, 0),
    (11, 11, 2, 3, 5, 3, (3, 2), (1, 2), False, 2),
    (6, 6, 8, 16, 1, 1, (1, 1), (1, 1), False, 2),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_2d(case: tuple) -> None:
    h, w, c, o, kh, kw, (sh, sw), (dh, dw), same, act = case
    oh, ow = _out_size(h, kh, sh, dh, same), _out_size(w, kw, sw, dw, same)
    check(*single("CONV_2D", [(1, h, w, c), _rand(o, kh, kw, c), _rand(o)], (1, oh, ow, o),
                  "Conv2DOptions", padding=0 if same else 1, strideH=sh, strideW=sw,
                  dilationHFactor=dh, dilationWFactor=dw, fusedActivationFunction=act))


@pytest.mark.parametrize("case", CONV_CASES[:5])
@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_conv_2d(case: tuple, mult: int) -> None:
    h, w, c, _, kh, kw, (sh, sw), (dh, dw), same, act = case
    oh, ow = _out_size(h, kh, sh, dh, same), _out_size(w, kw, sw, dw, same)
    check(*single("DEPTHWISE_CONV_2D", [(1, h, w, c), _rand(1, kh, kw, c * mult),
                                        _rand(c * mult)], (1, oh, ow, c * mult),
                  "DepthwiseConv2DOptions", padding=0 if same else 1, strideH=sh, strideW=sw,
                  depthMultiplier=mult, dilationHFactor=dh, dilationWFactor=dw,
                  fusedActivationFunction=act))


@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("case", [(9, 9, 3, 3, 2, 2, True, 0), (8, 7, 2, 2, 2, 2, False, 1),
                                  (10, 10, 3, 3, 3, 1, True, 3), (5, 6, 2, 5, 1, 1, False, 0)])
def test_pools(op: str, case: tuple) -> None:
    h, w, kh, kw, sh, sw, same, act = case
    oh, ow = _out_size(h, kh, sh, 1, same), _out_size(w, kw, sw, 1, same)
    check(*single(op, [(2, h, w, 3)], (2, oh, ow, 3), "Pool2DOptions",
                  padding=0 if same else 1, strideH=sh, strideW=sw, filterHeight=kh,
                  filterWidth=kw, fusedActivationFunction=act))


@pytest.mark.parametrize("op,options", [("ADD", "AddOptions"), ("SUB", "SubOptions"),
                                        ("MUL", "MulOptions"), ("DIV", "DivOptions")])
@pytest.mark.parametrize("act", [0, 1, 3])
def test_binary_broadcast_fused(op: str, options: str, act: int) -> None:
    check(*single(op, [(2, 3, 4), (1, 4)], (2, 3, 4), options, fusedActivationFunction=act))
    check(*single(op, [(2, 1, 4), _rand(3, 1) + 3.0], (2, 3, 4), options,
                  fusedActivationFunction=act))


@pytest.mark.parametrize("op,options,fields", [
    ("LOGISTIC", None, {}), ("TANH", None, {}), ("RELU", None, {}), ("RELU6", None, {}),
    ("RELU_N1_TO_1", None, {}), ("LEAKY_RELU", "LeakyReluOptions", {"alpha": 0.15}),
    ("HARD_SWISH", None, {}), ("ELU", None, {}), ("EXP", None, {}), ("ABS", None, {}),
    ("NEG", None, {}), ("SQUARE", None, {}), ("GELU", "GeluOptions", {"approximate": False}),
    ("GELU", "GeluOptions", {"approximate": True}),
])
def test_unary(op: str, options: str | None, fields: dict) -> None:
    data, feeds = single(op, [(2, 5, 3)], (2, 5, 3), options, **fields)
    feeds = [f * 4 for f in feeds]  # reach the clamps
    check(data, feeds)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_softmax(beta: float) -> None:
    check(*single("SOFTMAX", [(3, 10)], (3, 10), "SoftmaxOptions", beta=beta))


@pytest.mark.parametrize("op", ["MEAN", "SUM", "REDUCE_MAX"])
@pytest.mark.parametrize("keep", [True, False])
def test_reductions(op: str, keep: bool) -> None:
    out = (2, 1, 1, 3) if keep else (2, 3)
    check(*single(op, [(2, 4, 5, 3), np.array([1, 2], np.int32)], out, "ReducerOptions",
                  keepDims=keep))


def test_concatenation_and_pack_unpack() -> None:
    check(*single("CONCATENATION", [(2, 3, 4), (2, 1, 4), (2, 2, 4)], (2, 6, 4),
                  "ConcatenationOptions", axis=1))
    check(*single("CONCATENATION", [(2, 3), (2, 5)], (2, 8), "ConcatenationOptions", axis=-1))
    check(*single("PACK", [(2, 3), (2, 3)], (2, 2, 3), "PackOptions", valuesCount=2, axis=1))
    check(*single("UNPACK", [(2, 3, 4)], (2, 4), "UnpackOptions", n_out=3, num=3, axis=1))


def test_reshape_squeeze_expand_dims() -> None:
    check(*single("RESHAPE", [(2, 3, 4), np.array([4, -1], np.int32)], (4, 6)))
    check(*single("RESHAPE", [(2, 3, 4)], (6, 4), "ReshapeOptions", newShape=[6, 4]))
    check(*single("SQUEEZE", [(1, 3, 1, 4)], (3, 4), "SqueezeOptions", squeezeDims=[0, 2]))
    check(*single("EXPAND_DIMS", [(3, 4), np.array([1], np.int32)], (3, 1, 4)))


def test_pad_variants() -> None:
    pads = np.array([[0, 0], [1, 2], [2, 0], [0, 1]], np.int32)
    check(*single("PAD", [(1, 3, 4, 2), pads], (1, 6, 6, 3)))
    check(*single("PADV2", [(1, 3, 4, 2), pads, np.array([1.5], np.float32)], (1, 6, 6, 3)))
    check(*single("MIRROR_PAD", [(1, 3, 4, 2), pads], (1, 6, 6, 3), "MirrorPadOptions",
                  mode=0))


@pytest.mark.parametrize("spec", [
    # begin, end, strides, begin_mask, end_mask, shrink, new_axis, ellipsis, out shape
    ([0, 1, 0], [2, 3, 4], [1, 1, 2], 0, 0, 0, 0, 0, (2, 2, 2)),
    ([0, 0, 0], [0, 0, 0], [1, 1, 1], 7, 7, 0, 0, 0, (2, 3, 4)),
    ([-1, 0, 0], [0, 0, 0], [1, 1, 1], 6, 6, 1, 0, 0, (3, 4)),
    ([0, 2, 3], [2, 0, 0], [1, -1, -2], 1, 6, 0, 0, 0, (2, 3, 2)),
    ([0, 1], [0, 2], [1, 1], 0, 0, 2, 0, 1, (2, 3)),
    ([0, 0, 1], [1, 0, 3], [1, 1, 1], 2, 2, 0, 1, 0, (1, 2, 2, 4)),
    ([1, 0, 0], [2, 0, 0], [2, 1, 1], 0, 6, 1, 0, 0, (3, 4)),  # a shrink axis, stride 2
])
def test_strided_slice(spec: tuple) -> None:
    begin, end, strides, bm, em, sh, na, el, out = spec
    check(*single("STRIDED_SLICE", [(2, 3, 4), np.array(begin, np.int32),
                                    np.array(end, np.int32), np.array(strides, np.int32)],
                  out, "StridedSliceOptions", beginMask=bm, endMask=em, shrinkAxisMask=sh,
                  newAxisMask=na, ellipsisMask=el))


@pytest.mark.parametrize("spec", [
    # begin, size (offset=true: end is a size from the start), strides, out shape
    ([0, 1, 0], [2, 2, 4], [1, 1, 2], (2, 2, 2)),
    ([-1, 0, 1], [1, 3, 3], [1, 2, 1], (1, 2, 3)),
    ([1, -2, -4], [1, 2, 3], [1, 1, 1], (1, 2, 3)),
])
def test_strided_slice_with_offset(spec: tuple) -> None:
    """offset=true: stop = start + end, a negative begin counted from the end first (found by
    bench/fuzz_tflite.py: edgec added end to the raw begin)."""
    begin, size, strides, out = spec
    check(*single("STRIDED_SLICE", [(2, 3, 4), np.array(begin, np.int32),
                                    np.array(size, np.int32), np.array(strides, np.int32)],
                  out, "StridedSliceOptions", offset=True))


@pytest.mark.parametrize("spec,why", [
    (([0, 0, 0], [1, 1, 1], [1, 1, -1], 0), "begin 0, size 1, stride -1 on an axis of 4"),
    (([0, 2, 0], [1, 2, 1], [1, 1, 1], 0), "begin 2, size 2, stride 1 on an axis of 3"),
    (([0, 0, 0], [1, 1, -1], [1, 1, 1], 0), "begin 0, size -1, stride 1 on an axis of 4"),
    (([0, 0, 0], [1, 1, 1], [1, 1, 1], 1), "offset=true and a begin/end/ellipsis/new-axis"),
])
def test_strided_slice_with_offset_outside_what_tflite_computes_is_refused(spec: tuple,
                                                                         why: str) -> None:
    """TFLite's kernel reads outside the input for these (garbage or a crash): refused."""
    begin, size, strides, mask = spec
    data, _ = single("STRIDED_SLICE", [(2, 3, 4), np.array(begin, np.int32),
                                       np.array(size, np.int32), np.array(strides, np.int32)],
                     (1, 1, 1), "StridedSliceOptions", offset=True, beginMask=mask)
    with pytest.raises(EdgecError, match=r"operator 0 \(STRIDED_SLICE\): .*" + re.escape(why)):
        edgec.compile(data, name="m")


@pytest.mark.parametrize("strides,why", [
    ([-1, 1, 1], "a STRIDED_SLICE shrink axis with a negative stride"),
    ([1, -(2**31), 1], "a STRIDED_SLICE stride of INT32_MIN"),
])
def test_strided_slice_strides_tflite_reads_outside_the_input_for_are_refused(
        strides: list, why: str) -> None:
    """Found by bench/fuzz_tflite.py: the interpreter returns memory outside the input."""
    data, _ = single("STRIDED_SLICE", [(2, 3, 4), np.array([1, 0, 0], np.int32),
                                       np.array([2, 0, 0], np.int32),
                                       np.array(strides, np.int32)],
                     (3, 4), "StridedSliceOptions", endMask=6, shrinkAxisMask=1)
    with pytest.raises(EdgecError, match=r"operator 0 \(STRIDED_SLICE\): " + re.escape(why)):
        edgec.compile(data, name="m")


def test_unpack_num_must_match_the_axis() -> None:
    """TFLite rejects it; edgec ignored num (found by bench/fuzz_tflite.py)."""
    data, _ = single("UNPACK", [(2, 3, 4)], (2, 4), "UnpackOptions", n_out=3, num=2, axis=1)
    with pytest.raises(EdgecError, match=r"operator 0 \(UNPACK\): UNPACK num 2 with 3 outputs "
                                         r"does not match axis 1 of size 3"):
        edgec.compile(data, name="m")


@pytest.mark.parametrize("axis", [3, -4])
def test_split_axis_out_of_range_is_refused(axis: int) -> None:
    """TFLite rejects it; edgec used to wrap it into range (found by bench/fuzz_tflite.py)."""
    data, _ = single("SPLIT", [np.array(axis, np.int32), (2, 6, 3)], (2, 2, 3), "SplitOptions",
                     n_out=3, numSplits=3)
    with pytest.raises(EdgecError, match=rf"operator 0 \(SPLIT\): axis {axis} is out of range "
                                         r"for a 3-D tensor"):
        edgec.compile(data, name="m")


def test_slice_transpose_gather_split() -> None:
    check(*single("SLICE", [(3, 4, 5), np.array([1, 0, 2], np.int32),
                            np.array([2, -1, 3], np.int32)], (2, 4, 3)))
    check(*single("TRANSPOSE", [(2, 3, 4), np.array([2, 0, 1], np.int32)], (4, 2, 3)))
    check(*single("GATHER", [(5, 3), np.array([4, 0, 2], np.int32)], (3, 3), "GatherOptions",
                  axis=0))
    check(*single("SPLIT", [np.array(1, np.int32), (2, 6)], (2, 2), "SplitOptions", n_out=3,
                  numSplits=3))
    check(*single("SPLIT_V", [(2, 6), np.array([1, 3, 2], np.int32), np.array(1, np.int32)],
                  (2, 1), "SplitVOptions", n_out=3, numSplits=3))


def test_batch_matmul_adjoint() -> None:
    check(*single("BATCH_MATMUL", [(2, 3, 4), (2, 5, 4)], (2, 3, 5), "BatchMatMulOptions",
                  adjY=True))


def lstm_model(cifg: bool = False, peep: bool = False, time_major: bool = False, act: int = 4,
               batch: int = 2, steps: int = 5, n_in: int = 3,
               hidden: int = 4) -> tuple[bytes, np.ndarray]:
    """UNIDIRECTIONAL_SEQUENCE_LSTM with variable (carried) state, as the converter writes it."""
    b = TflBuilder()
    xs = (steps, batch, n_in) if time_major else (batch, steps, n_in)
    x = b.input("x", xs)

    def c(name: str, *shape: int) -> int:
        return b.const(name, _rand(*shape, scale=0.5))

    h = hidden
    ins = [x, -1 if cifg else c("wi", h, n_in), c("wf", h, n_in), c("wc", h, n_in),
           c("wo", h, n_in), -1 if cifg else c("ri", h, h), c("rf", h, h), c("rc", h, h),
           c("ro", h, h), c("pi", h) if peep and not cifg else -1, c("pf", h) if peep else -1,
           c("po", h) if peep else -1, -1 if cifg else c("bi", h), c("bf", h), c("bc", h),
           c("bo", h), -1, -1, b.tensor("h", (batch, h), variable=True),
           b.tensor("c", (batch, h), variable=True), -1, -1, -1, -1]
    y = b.tensor("y", (*xs[:2], h))
    b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y], "UnidirectionalSequenceLSTMOptions",
         fusedActivationFunction=act, timeMajor=time_major)
    return b.build([x], [y]), _rand(*xs)


@pytest.mark.parametrize("kw", [{}, {"cifg": True}, {"peep": True}, {"time_major": True},
                                {"cifg": True, "peep": True}, {"act": 1}])
def test_unidirectional_sequence_lstm_carries_state_like_tflite(kw: dict) -> None:
    """TFLite keeps the LSTM's variable state from one invoke to the next: edgec's ``_step``
    carries it the same way (and ``reset`` starts from zero like a fresh interpreter)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data, x = lstm_model(**kw)
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i0, o0 = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    m = edgec.compile(data, name="lstm")
    assert m.is_stateful and m.graph.state == [("h", "h_next"), ("c", "c_next")]
    m.reset()
    for step in range(3):
        xi = x * (step + 1)
        it.set_tensor(i0, xi)
        it.invoke()
        np.testing.assert_allclose(m.step(xi), it.get_tensor(o0), rtol=RTOL, atol=ATOL,
                                   err_msg=f"invoke {step}")


# -- WHILE → Scan ------------------------------------------------------------------------------

def _cond(b: TflBuilder, trips: int, n_float: int) -> tuple[list[int], list[int]]:
    """cond(i, floats...): i < trips."""
    sg = b.subgraph("cond")
    i = sg.tensor("i", (), "int32")
    fl = [sg.tensor(f"f{k}", (1, 4)) for k in range(n_float)]
    lim = sg.const("limit", np.array(trips, np.int32))
    out = sg.tensor("less", (), "bool")
    sg.op("LESS", [i, lim], [out])
    return [i, *fl], [out]


def rnn_while_model(steps: int = 6, reverse: bool = False, sequences: bool = False,
                    use_counter: bool = False, float_cond: bool = False) -> tuple[bytes, list]:
    """A SimpleRNN the way the converter writes it: WHILE(i, h, [ys,] xs) with
    h = tanh(x[t] W + h U + b), and optionally ys[t] = h (the TensorList write pattern)."""
    b = TflBuilder()
    x = b.input("x", (steps, 1, 3))
    zero = b.const("zero", np.array(0, np.int32))
    h0 = b.const("h0", np.zeros((1, 4), np.float32))
    carried_main = [zero, h0]
    if sequences:
        carried_main.append(b.const("ys0", np.zeros((steps, 1, 4), np.float32)))
    carried_main.append(x)
    outs = [b.tensor("i_out", (), "int32"), b.tensor("h_out", (1, 4))]
    if sequences:
        outs.append(b.tensor("ys_out", (steps, 1, 4)))
    outs.append(b.tensor("x_out", (steps, 1, 3)))
    # condition
    cond = b.subgraph("cond")
    ci = [cond.tensor("i", (), "int32"), cond.tensor("h", (1, 4))]
    if sequences:
        ci.append(cond.tensor("ys", (steps, 1, 4)))
    ci.append(cond.tensor("x", (steps, 1, 3)))
    less = cond.tensor("less", (), "bool")
    if float_cond:  # depends on run-time data: refused
        s = cond.tensor("s", ())
        cond.op("SUM", [ci[1], cond.const("ax", np.array([0, 1], np.int32))], [s],
                "ReducerOptions", keepDims=False)
        cond.op("LESS", [s, cond.const("lim", np.array(3.0, np.float32))], [less])
    else:
        cond.op("LESS", [ci[0], cond.const("limit", np.array(steps, np.int32))], [less])
    # body
    body = b.subgraph("body")
    bi = [body.tensor("i", (), "int32"), body.tensor("h", (1, 4))]
    if sequences:
        bi.append(body.tensor("ys", (steps, 1, 4)))
    bi.append(body.tensor("x", (steps, 1, 3)))
    i, h, xs = bi[0], bi[1], bi[-1]
    one = body.const("one", np.array(1, np.int32))
    i1 = body.tensor("i1", (), "int32")
    body.op("ADD", [i, one], [i1], "AddOptions")
    idx = i
    if reverse:
        idx = body.tensor("ridx", (), "int32")
        body.op("SUB", [body.const("last", np.array(steps - 1, np.int32)), i], [idx],
                "SubOptions")
    xt = body.tensor("xt", (1, 3))
    body.op("GATHER", [xs, idx], [xt], "GatherOptions", axis=0)
    a = body.tensor("a", (1, 4))
    body.op("FULLY_CONNECTED", [xt, body.const("W", _rand(4, 3)), body.const("bias", _rand(4))],
            [a], "FullyConnectedOptions")
    r = body.tensor("r", (1, 4))
    body.op("FULLY_CONNECTED", [h, body.const("U", _rand(4, 4, scale=0.5)), -1], [r],
            "FullyConnectedOptions")
    pre = body.tensor("pre", (1, 4))
    body.op("ADD", [a, r], [pre], "AddOptions")
    if use_counter:  # the counter feeds float arithmetic: refused
        fi = body.tensor("fi", ())
        body.op("CAST", [i], [fi])
        pre2 = body.tensor("pre2", (1, 4))
        body.op("MUL", [pre, fi], [pre2], "MulOptions")
        pre = pre2
    hn = body.tensor("hn", (1, 4))
    body.op("TANH", [pre], [hn])
    b_outs = [i1, hn]
    if sequences:  # ys = concat(ys[:i], hn[None], ys[i+1:])
        ys = bi[2]
        i_v = body.tensor("i_v", (1,), "int32")
        body.op("RESHAPE", [i, body.const("s1", np.array([1], np.int32))], [i_v])
        size = body.tensor("size", (3,), "int32")
        body.op("CONCATENATION", [i_v, body.const("m1", np.array([-1, -1], np.int32))], [size],
                "ConcatenationOptions", axis=0)
        head = body.tensor("head", (1, 1, 4), signature=(-1, 1, 4))
        body.op("SLICE", [ys, body.const("z3", np.zeros(3, np.int32)), size], [head])
        i1_v = body.tensor("i1_v", (1,), "int32")
        body.op("RESHAPE", [i1, body.const("s1b", np.array([1], np.int32))], [i1_v])
        start = body.tensor("start", (3,), "int32")
        body.op("CONCATENATION", [i1_v, body.const("z2", np.zeros(2, np.int32))], [start],
                "ConcatenationOptions", axis=0)
        tail = body.tensor("tail", (1, 1, 4), signature=(-1, 1, 4))
        body.op("SLICE", [ys, start, body.const("m3", np.full(3, -1, np.int32))], [tail])
        row = body.tensor("row", (1, 1, 4))
        body.op("RESHAPE", [hn, body.const("rs", np.array([1, 1, 4], np.int32))], [row])
        ys_n = body.tensor("ys_n", (steps, 1, 4))
        body.op("CONCATENATION", [head, row, tail], [ys_n], "ConcatenationOptions", axis=0)
        b_outs.append(ys_n)
    b_outs.append(xs)
    b.op("WHILE", [*carried_main], outs, "WhileOptions", condSubgraphIndex=1,
         bodySubgraphIndex=2)
    result = outs[2] if sequences else outs[1]
    data = b.build([x], [result], io=[(ci, [less]), (bi, b_outs)])
    return data, [_rand(steps, 1, 3)]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("sequences", [False, True])
def test_while_rnn_is_a_loop(reverse: bool, sequences: bool) -> None:
    data, feeds = rnn_while_model(reverse=reverse, sequences=sequences)
    m = check(data, feeds)
    (scan,) = [n for n in m.graph.nodes if n.op == "Scan"]
    assert scan.attrs["num_scan_inputs"] == 1
    assert scan.attrs["scan_input_directions"] == [int(reverse)]
    assert len(scan.attrs["body"].outputs) == (2 if sequences else 1)
    src = m.c_source
    assert "for (int it0 = 0; it0 < 6; ++it0) {" in src
    assert src.count("node") < 40  # the body is emitted once, not unrolled
    assert m.report()["macs"] == 6 * (12 + 16)


def test_while_refuses_dynamic_trip_count_and_counter_arithmetic() -> None:
    data, _ = rnn_while_model(float_cond=True)
    with pytest.raises(EdgecError, match=r"operator 0 \(WHILE\): the loop condition .* static"):
        edgec.compile(data)
    data, _ = rnn_while_model(use_counter=True)
    with pytest.raises(EdgecError, match=r"operator \d+ \(CAST\) of subgraph 2 reads 'i'"):
        edgec.compile(data)


def nested_while_model() -> tuple[bytes, list]:
    """for i in 0..3: (for j in 0..2: h = tanh(h W + x[i])) — a loop inside a loop body, and
    inner loops without a sequence input (a fixed number of iterations)."""
    b = TflBuilder()
    x = b.input("x", (3, 1, 4))
    zero = b.const("zero", np.array(0, np.int32))
    h0 = b.const("h0", np.full((1, 4), 0.1, np.float32))
    outs = [b.tensor("i_o", (), "int32"), b.tensor("h_o", (1, 4)), b.tensor("x_o", (3, 1, 4))]
    b.op("WHILE", [zero, h0, x], outs, "WhileOptions", condSubgraphIndex=1, bodySubgraphIndex=2)

    def cond(limit: int, shapes: list[tuple[int, ...]]) -> tuple[list[int], list[int]]:
        sg = b.subgraph(f"cond{limit}")
        ins = [sg.tensor("i", (), "int32")] + [sg.tensor(f"v{k}", s) for k, s in
                                               enumerate(shapes)]
        out = sg.tensor("less", (), "bool")
        sg.op("LESS", [ins[0], sg.const("lim", np.array(limit, np.int32))], [out])
        return ins, [out]

    outer_cond = cond(3, [(1, 4), (3, 1, 4)])
    body = b.subgraph("outer_body")
    i, h, xs = (body.tensor("i", (), "int32"), body.tensor("h", (1, 4)),
                body.tensor("xs", (3, 1, 4)))
    i1 = body.tensor("i1", (), "int32")
    body.op("ADD", [i, body.const("one", np.array(1, np.int32))], [i1], "AddOptions")
    xt = body.tensor("xt", (1, 4))
    body.op("GATHER", [xs, i], [xt], "GatherOptions", axis=0)
    inner_outs = [body.tensor("j_o", (), "int32"), body.tensor("h_in", (1, 4)),
                  body.tensor("xt_o", (1, 4))]
    body.op("WHILE", [body.const("zero", np.array(0, np.int32)), h, xt], inner_outs,
            "WhileOptions", condSubgraphIndex=3, bodySubgraphIndex=4)
    inner_cond = cond(2, [(1, 4), (1, 4)])
    inner = b.subgraph("inner_body")
    j, hh, xx = inner.tensor("j", (), "int32"), inner.tensor("h", (1, 4)), inner.tensor("x",
                                                                                       (1, 4))
    j1 = inner.tensor("j1", (), "int32")
    inner.op("ADD", [j, inner.const("one", np.array(1, np.int32))], [j1], "AddOptions")
    a = inner.tensor("a", (1, 4))
    inner.op("FULLY_CONNECTED", [hh, inner.const("W", _rand(4, 4, scale=0.6)), -1], [a],
             "FullyConnectedOptions")
    s = inner.tensor("s", (1, 4))
    inner.op("ADD", [a, xx], [s], "AddOptions")
    hn = inner.tensor("hn", (1, 4))
    inner.op("TANH", [s], [hn])
    data = b.build([x], [outs[1]], io=[outer_cond, ([i, h, xs], [i1, inner_outs[1], xs]),
                                       inner_cond, ([j, hh, xx], [j1, hn, xx])])
    return data, [_rand(3, 1, 4)]


def test_nested_while_loops(tmp_path) -> None:
    from tests.c_checks import strict_and_sanitized

    data, feeds = nested_while_model()
    m = check(data, feeds)
    src = m.c_source
    assert "for (int it0 = 0; it0 < 3; ++it0) {" in src
    assert "for (int it1 = 0; it1 < 2; ++it1) {" in src
    assert m.report()["macs"] == 3 * 2 * 16
    got = strict_and_sanitized(m, tmp_path, feeds)
    np.testing.assert_allclose(got[0], run_interpreter(data, feeds)[0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("sequences", [False, True])
def test_while_c_is_strict_and_sanitizer_clean(tmp_path, sequences: bool) -> None:
    from tests.c_checks import strict_and_sanitized

    data, feeds = rnn_while_model(sequences=sequences, reverse=sequences)
    m = edgec.compile(data, name="rnn")
    got = strict_and_sanitized(m, tmp_path, feeds)
    np.testing.assert_allclose(got[0], run_interpreter(data, feeds)[0], rtol=RTOL, atol=ATOL)


def test_nhwc_cnn_keeps_only_the_input_transpose() -> None:
    """CONV → MAX_POOL → CONV(+RELU) → ADD(residual) → MEAN → FULLY_CONNECTED: the NHWC↔NCHW
    Transposes around every layer cancel; the one at the input stays (and the final mean needs
    no layout change)."""
    b = TflBuilder()
    x = b.input("x", (1, 10, 10, 3))
    c1 = b.tensor("c1", (1, 10, 10, 8))
    b.op("CONV_2D", [x, b.const("w1", _rand(8, 3, 3, 3)), b.const("b1", _rand(8))], [c1],
         "Conv2DOptions", padding=0, strideH=1, strideW=1, fusedActivationFunction=1)
    p1 = b.tensor("p1", (1, 5, 5, 8))
    b.op("MAX_POOL_2D", [c1], [p1], "Pool2DOptions", padding=1, strideH=2, strideW=2,
         filterHeight=2, filterWidth=2)
    c2 = b.tensor("c2", (1, 5, 5, 8))
    b.op("CONV_2D", [p1, b.const("w2", _rand(8, 3, 3, 8, scale=0.3)), b.const("b2", _rand(8))],
         [c2], "Conv2DOptions", padding=0, strideH=1, strideW=1, fusedActivationFunction=3)
    s = b.tensor("s", (1, 5, 5, 8))
    b.op("ADD", [c2, p1], [s], "AddOptions", fusedActivationFunction=1)
    mean = b.tensor("mean", (1, 8))
    b.op("MEAN", [s, b.const("axes", np.array([1, 2], np.int32))], [mean], "ReducerOptions",
         keepDims=False)
    y = b.tensor("y", (1, 4))
    b.op("FULLY_CONNECTED", [mean, b.const("wf", _rand(4, 8)), b.const("bf", _rand(4))], [y],
         "FullyConnectedOptions")
    m = check(b.build([x], [y]), [_rand(1, 10, 10, 3)])
    ops = [n.op for n in m.graph.nodes]
    assert ops.count("Transpose") == 1 and ops[0] == "Transpose", ops


# -- the CLI -----------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(edgec.__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "edgec.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_compile_inspect_verify(tmp_path: Path) -> None:
    data, _ = rnn_while_model(sequences=True)
    path = tmp_path / "rnn.tflite"
    path.write_bytes(data)
    proc = _cli("compile", str(path), "-o", str(tmp_path / "gen"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gen" / "rnn.c").is_file()
    proc = _cli("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "ScanBegin" in proc.stdout and "loop x6" in proc.stdout
    proc = _cli("verify", str(path), "--n", "3")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "vs the TFLite interpreter" in proc.stdout and proc.stdout.rstrip().endswith("PASS")


def test_cli_bad_files_exit_2_with_one_line(tmp_path: Path) -> None:
    good = _fc_model()
    cases = {
        "truncated.tflite": good[: len(good) // 2],
        "garbage.tflite": b"\x00" * 64,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        proc = _cli("compile", str(tmp_path / name), "-o", str(tmp_path / "gen"))
        assert proc.returncode == 2, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgec: error: "), proc.stderr
        assert name in lines[0]


# -- bad input ---------------------------------------------------------------------------------

def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unsupported_builtin_names_op_index_subgraph_and_the_supported_ones() -> None:
    b = TflBuilder()
    x = b.input("x", (1, 4))
    r = b.tensor("r", (1, 4))
    b.op("RELU", [x], [r])
    y = b.tensor("y", (1, 4))
    b.op("CUMSUM", [r, b.const("ax", np.array(1, np.int32))], [y], "CumsumOptions")
    with pytest.raises(EdgecError) as exc:
        edgec.compile(b.build([x], [y]))
    msg = _one_line(exc)
    assert "subgraph 0 operator 1 (CUMSUM): builtin CUMSUM is not supported" in msg
    assert "FULLY_CONNECTED" in msg and "CONV_2D" in msg and "WHILE" in msg


def test_custom_op_is_named() -> None:
    b = TflBuilder()
    x = b.input("x", (1, 4))
    y = b.tensor("y", (1, 4))
    b.op("CUSTOM", [x], [y], custom="TFLite_Detection_PostProcess")
    with pytest.raises(EdgecError) as exc:
        edgec.compile(b.build([x], [y]))
    msg = _one_line(exc)
    assert "operator 0 (CUSTOM): custom op 'TFLite_Detection_PostProcess'" in msg
    assert "supported builtins: ABS" in msg


@pytest.mark.parametrize("dtype,what", [("int16", "int16"), ("uint8", "uint8"),
                                        ("float16", "float16")])
def test_other_quantized_types_are_refused(dtype: str, what: str) -> None:
    b = TflBuilder()
    x = b.input("x", (1, 4), dtype, quant=None if dtype == "float16" else (0.1, 0))
    y = b.tensor("y", (1, 4), dtype, quant=None if dtype == "float16" else (0.1, 0))
    b.op("RELU", [x], [y])
    with pytest.raises(EdgecError) as exc:
        edgec.compile(b.build([x], [y]))
    msg = _one_line(exc)
    assert f"is {what}" in msg and "edgec compiles float32 and int8 TFLite models" in msg


def test_float16_weights_are_refused() -> None:
    b = TflBuilder()
    x = b.input("x", (1, 4))
    w16 = b.const("w16", _rand(3, 4).astype(np.float16))
    w = b.tensor("w", (3, 4))
    b.op("DEQUANTIZE", [w16], [w])
    y = b.tensor("y", (1, 3))
    b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions")
    with pytest.raises(EdgecError, match=r"tensor 1 'w16' .* is float16"):
        edgec.compile(b.build([x], [y]))


def test_dynamic_dimensions_need_input_shape() -> None:
    b = TflBuilder()
    x = b.input("x", (1, 1, 3), signature=(-1, -1, 3))
    y = b.tensor("y", (1, 1, 3), signature=(-1, -1, 3))
    b.op("RELU", [x], [y])
    data = b.build([x], [y])
    with pytest.raises(EdgecError, match=r"input 'x' has dynamic shape \[\?, \?, 3\]; give it "
                                         r"a static one with --input-shape x:1x1x3"):
        edgec.compile(data)
    m = edgec.compile(data, input_shapes={"x": (2, 5, 3)})
    assert m.cmodel.inputs[0].shape == (2, 5, 3)
    with pytest.raises(EdgecError, match="does not match the model's shape"):
        edgec.compile(data, input_shapes={"x": (2, 5, 4)})
    with pytest.raises(EdgecError, match="unknown input"):
        edgec.compile(data, input_shapes={"nope": (1, 2, 3)})


def test_dynamic_batch_runs_at_the_stored_size() -> None:
    m = check(_fc_model(), [_rand(1, 4)])  # signature (-1, 4), stored shape (1, 4)
    assert m.cmodel.inputs[0].shape == (1, 4)


def test_emitted_c_is_deterministic() -> None:
    data, _ = rnn_while_model(sequences=True, reverse=True)
    a, b = edgec.compile(data, name="d"), edgec.compile(data, name="d")
    assert a.c_source == b.c_source and a.c_header == b.c_header


# -- int8 --------------------------------------------------------------------------------------

def _codes(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)


def check_int8(data: bytes, make_feeds: list, n: int = 4, **kw: object) -> edgec.CompiledModel:
    """edgec's C and IR interpreter equal the TFLite interpreter byte for byte."""
    m = edgec.compile(data, name="q", **kw)  # type: ignore[arg-type]
    for k in range(n):
        feeds = [f(k) for f in make_feeds]
        expected = run_interpreter(data, feeds)
        got = m.run(*feeds)
        got = got if isinstance(got, list) else [got]
        ref = m.reference(*feeds)
        ref = ref if isinstance(ref, list) else [ref]
        for g_, r_, e_ in zip(got, ref, expected, strict=True):
            assert g_.dtype == e_.dtype and g_.shape == e_.shape
            np.testing.assert_array_equal(g_, e_, err_msg=f"C, input set {k}")
            np.testing.assert_array_equal(r_, e_, err_msg=f"IR, input set {k}")
    return m


def _weights(rng: np.random.Generator, shape: tuple[int, ...], axis: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights and their scales."""
    w = rng.integers(-127, 128, shape).astype(np.int8)
    scales = rng.uniform(0.002, 0.02, shape[axis]).astype(np.float32)
    return w, scales


def q_layer(op: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...] | None,
            out_shape: tuple[int, ...], options: str, w_axis: int = 0, per_channel: bool = True,
            bias: bool = True, seed: int = 0, **fields: object) -> tuple[bytes, list]:
    """One int8 FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D / pool with TFLite's quantization
    conventions (symmetric weights, int32 bias at input × weight scale)."""
    rng = np.random.default_rng(seed)
    b = TflBuilder()
    s_in, zp_in = 0.04, -5
    x = b.input("x", x_shape, "int8", quant=(s_in, zp_in))
    ins = [x]
    if w_shape is not None:
        w, ws = _weights(rng, w_shape, w_axis)
        if not per_channel:
            ws = ws[:1]
        n_out = w_shape[w_axis]
        ins.append(b.const("w", w, quant=(ws, np.zeros(ws.size, np.int64), w_axis)))
        if bias:
            bs = (s_in * ws.astype(np.float64)).astype(np.float32)
            bs = np.broadcast_to(bs, (n_out,)) if bs.size == 1 else bs
            bq = rng.integers(-3000, 3000, n_out).astype(np.int32)
            ins.append(b.const("b", bq, quant=(bs if bs.size > 1 else bs[:1],
                                               np.zeros(bs.size if bs.size > 1 else 1,
                                                        np.int64), 0)))
        else:
            ins.append(-1)
        s_out, zp_out = 0.08, 3
    else:
        s_out, zp_out = s_in, zp_in  # pools keep the quantization
    y = b.tensor("y", out_shape, "int8", quant=(s_out, zp_out))
    b.op(op, ins, [y], options, **fields)
    return b.build([x], [y]), [lambda k, s=x_shape: _codes(*s, seed=k)]


@pytest.mark.parametrize("act", [0, 1, 3])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_fully_connected(act: int, per_channel: bool) -> None:
    check_int8(*q_layer("FULLY_CONNECTED", (3, 20), (7, 20), (3, 7), "FullyConnectedOptions",
                        per_channel=per_channel, fusedActivationFunction=act))
    check_int8(*q_layer("FULLY_CONNECTED", (2, 3, 8), (5, 8), (2, 3, 5),
                        "FullyConnectedOptions", bias=False, keepNumDims=True,
                        fusedActivationFunction=act))


@pytest.mark.parametrize("case", CONV_CASES[:5])
def test_int8_conv_2d(case: tuple) -> None:
    h, w, c, o, kh, kw, (sh, sw), (dh, dw), same, act = case
    oh, ow = _out_size(h, kh, sh, dh, same), _out_size(w, kw, sw, dw, same)
    check_int8(*q_layer("CONV_2D", (1, h, w, c), (o, kh, kw, c), (1, oh, ow, o),
                        "Conv2DOptions", padding=0 if same else 1, strideH=sh, strideW=sw,
                        dilationHFactor=dh, dilationWFactor=dw, fusedActivationFunction=act))


@pytest.mark.parametrize("case", CONV_CASES[:4])
@pytest.mark.parametrize("mult", [1, 2])
def test_int8_depthwise_conv_2d(case: tuple, mult: int) -> None:
    h, w, c, _, kh, kw, (sh, sw), (dh, dw), same, act = case
    oh, ow = _out_size(h, kh, sh, dh, same), _out_size(w, kw, sw, dw, same)
    check_int8(*q_layer("DEPTHWISE_CONV_2D", (1, h, w, c), (1, kh, kw, c * mult),
                        (1, oh, ow, c * mult), "DepthwiseConv2DOptions", w_axis=3,
                        padding=0 if same else 1, strideH=sh, strideW=sw, depthMultiplier=mult,
                        dilationHFactor=dh, dilationWFactor=dw, fusedActivationFunction=act))


@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("case", [(9, 9, 3, 3, 2, 2, True, 0), (8, 7, 2, 2, 2, 2, False, 1),
                                  (10, 10, 3, 3, 3, 1, True, 3)])
def test_int8_pools(op: str, case: tuple) -> None:
    h, w, kh, kw, sh, sw, same, act = case
    oh, ow = _out_size(h, kh, sh, 1, same), _out_size(w, kw, sw, 1, same)
    check_int8(*q_layer(op, (2, h, w, 3), None, (2, oh, ow, 3), "Pool2DOptions",
                        padding=0 if same else 1, strideH=sh, strideW=sw, filterHeight=kh,
                        filterWidth=kw, fusedActivationFunction=act))


def _q_graph(build: Callable[[TflBuilder], tuple[list[int], list[int]]]) -> bytes:
    b = TflBuilder()
    ins, outs = build(b)
    return b.build(ins, outs)


@pytest.mark.parametrize("op,options", [("ADD", "AddOptions"), ("SUB", "SubOptions"),
                                        ("MUL", "MulOptions")])
@pytest.mark.parametrize("act", [0, 1])
def test_int8_elementwise_broadcast(op: str, options: str, act: int) -> None:
    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        x0 = b.input("a", (2, 3, 4), "int8", quant=(0.05, -10))
        x1 = b.input("b", (1, 4), "int8", quant=(0.03, 7))
        y = b.tensor("y", (2, 3, 4), "int8", quant=(0.07, 2))
        b.op(op, [x0, x1], [y], options, fusedActivationFunction=act)
        return [x0, x1], [y]

    check_int8(_q_graph(build), [lambda k: _codes(2, 3, 4, seed=k),
                                 lambda k: _codes(1, 4, seed=k + 50)])


def test_int8_concat_mean_softmax_reshape_pad_transpose_slice() -> None:
    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        q = (0.05, -4)
        x0 = b.input("a", (1, 4, 4, 3), "int8", quant=q)
        x1 = b.input("b", (1, 4, 4, 2), "int8", quant=q)
        cat = b.tensor("cat", (1, 4, 4, 5), "int8", quant=q)
        b.op("CONCATENATION", [x0, x1], [cat], "ConcatenationOptions", axis=3)
        padded = b.tensor("padded", (1, 6, 5, 5), "int8", quant=q)
        b.op("PAD", [cat, b.const("pads", np.array([[0, 0], [1, 1], [0, 1], [0, 0]],
                                                    np.int32))], [padded])
        tr = b.tensor("tr", (1, 5, 6, 5), "int8", quant=q)
        b.op("TRANSPOSE", [padded, b.const("perm", np.array([0, 3, 1, 2], np.int32))], [tr])
        sl = b.tensor("sl", (1, 5, 3, 5), "int8", quant=q)
        b.op("STRIDED_SLICE", [tr, b.const("b0", np.array([0, 0, 0, 0], np.int32)),
                               b.const("e0", np.array([1, 5, 6, 5], np.int32)),
                               b.const("s0", np.array([1, 1, 2, 1], np.int32))], [sl],
             "StridedSliceOptions")
        mean = b.tensor("mean", (1, 5), "int8", quant=(0.02, 1))
        b.op("MEAN", [sl, b.const("axes", np.array([2, 3], np.int32))], [mean],
             "ReducerOptions", keepDims=False)
        flat = b.tensor("flat", (5,), "int8", quant=(0.02, 1))
        b.op("RESHAPE", [mean, b.const("shape", np.array([5], np.int32))], [flat])
        sm = b.tensor("sm", (1, 5), "int8", quant=(1 / 256, -128))
        b.op("SOFTMAX", [mean], [sm], "SoftmaxOptions", beta=1.0)
        return [x0, x1], [sm, flat]

    check_int8(_q_graph(build), [lambda k: _codes(1, 4, 4, 3, seed=k),
                                 lambda k: _codes(1, 4, 4, 2, seed=k + 9)])


@pytest.mark.parametrize("q_out", [(0.05, 9), (0.07, -128)], ids=["zp", "scale-and-zp"])
def test_int8_pad_fills_with_the_output_zero_point(q_out: tuple) -> None:
    """TFLite's int8 PAD copies the codes and fills with the *output's* zero point; an output
    quantized unlike the input reinterprets the codes (found by bench/fuzz_tflite.py)."""
    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        x = b.input("x", (1, 3, 3, 2), "int8", quant=(0.05, -4))
        y = b.tensor("y", (1, 5, 4, 2), "int8", quant=q_out)
        b.op("PAD", [x, b.const("pads", np.array([[0, 0], [1, 1], [0, 1], [0, 0]],
                                                  np.int32))], [y])
        z = b.tensor("z", (1, 5, 4, 2), "int8", quant=(0.03, 2))
        b.op("ADD", [y, y], [z], "AddOptions")  # reads y with its own quantization
        return [x], [z, y]

    check_int8(_q_graph(build), [lambda k: _codes(1, 3, 3, 2, seed=k)])


LUT_CASES = [  # op, options, fields, output quantization
    ("LOGISTIC", None, {}, (1 / 256, -128)),
    ("TANH", None, {}, (1 / 128, 0)),
    ("RELU", None, {}, (0.03, -128)),
    ("RELU6", None, {}, (0.025, -128)),
    ("RELU_N1_TO_1", None, {}, (0.01, 0)),
    ("LEAKY_RELU", "LeakyReluOptions", {"alpha": 0.1}, (0.05, 20)),
    ("HARD_SWISH", None, {}, (0.04, -90)),
]


@pytest.mark.parametrize("case", LUT_CASES, ids=[c[0] for c in LUT_CASES])
def test_int8_activation_tables_on_all_256_codes(case: tuple) -> None:
    op, options, fields, q_out = case

    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        x = b.input("x", (2, 128), "int8", quant=(0.06, 3))
        y = b.tensor("y", (2, 128), "int8", quant=q_out)
        b.op(op, [x], [y], options, **fields)
        return [x], [y]

    every = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)
    m = check_int8(_q_graph(build), [lambda k: np.roll(every, k)], n=1)
    assert [n.op for n in m.graph.nodes] == ["QLut"]


def test_int8_model_with_float_inputs_and_outputs() -> None:
    """QUANTIZE → FULLY_CONNECTED → QUANTIZE (int8 → int8) → DEQUANTIZE: float ports."""
    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        rng = np.random.default_rng(3)
        x = b.input("x", (2, 6))
        xq = b.tensor("xq", (2, 6), "int8", quant=(0.03, -2))
        b.op("QUANTIZE", [x], [xq])
        w, ws = _weights(rng, (4, 6), 0)
        wq = b.const("w", w, quant=(ws, np.zeros(4, np.int64), 0))
        bq = b.const("b", rng.integers(-500, 500, 4).astype(np.int32),
                     quant=((0.03 * ws).astype(np.float32), np.zeros(4, np.int64), 0))
        h = b.tensor("h", (2, 4), "int8", quant=(0.05, 1))
        b.op("FULLY_CONNECTED", [xq, wq, bq], [h], "FullyConnectedOptions")
        h2 = b.tensor("h2", (2, 4), "int8", quant=(0.11, -7))
        b.op("QUANTIZE", [h], [h2])
        y = b.tensor("y", (2, 4))
        b.op("DEQUANTIZE", [h2], [y])
        return [x], [y]

    m = check_int8(_q_graph(build), [lambda k: _rand(2, 6) * 2])
    assert [p.dtype for p in m.cmodel.inputs + m.cmodel.outputs] == ["float32", "float32"]
    assert [n.op for n in m.graph.nodes] == ["Quantize", "QFullyConnected", "Requantize",
                                             "Dequantize"]


def test_int8_ports_say_their_quantization() -> None:
    data, _ = q_layer("FULLY_CONNECTED", (1, 8), (3, 8), (1, 3), "FullyConnectedOptions")
    m = edgec.compile(data, name="q")
    assert [p.dtype for p in m.cmodel.inputs + m.cmodel.outputs] == ["int8", "int8"]
    import re

    assert re.search(r"#define Q_IN_X_ZERO_POINT \(?-5\)?\n", m.c_header)
    assert re.search(r"#define Q_OUT_Y_SCALE 0\.08f", m.c_header)
    assert ("int q_run(const int8_t *EDGEC_RESTRICT in_x, int8_t *EDGEC_RESTRICT out_y);"
            in m.c_header)


def test_int8_hybrid_and_fused_tanh_are_refused() -> None:
    def hybrid(b: TflBuilder) -> tuple[list[int], list[int]]:
        x = b.input("x", (1, 4))
        w = b.const("w", _codes(3, 4), quant=(0.01, 0))
        y = b.tensor("y", (1, 3))
        b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions")
        return [x], [y]

    with pytest.raises(EdgecError, match="dynamic-range quantization"):
        edgec.compile(_q_graph(hybrid))
    data, _ = q_layer("CONV_2D", (1, 4, 4, 2), (3, 1, 1, 2), (1, 4, 4, 3), "Conv2DOptions",
                      padding=1, strideH=1, strideW=1, fusedActivationFunction=4)
    with pytest.raises(EdgecError, match=r"operator 0 \(CONV_2D\): fused activation 4 is not "
                                         r"supported on int8"):
        edgec.compile(data)


def test_int8_c_is_strict_and_sanitizer_clean(tmp_path: Path) -> None:
    """Byte arena, int8 kernels: strict warnings and ASan/UBSan (through float ports)."""
    from tests.c_checks import strict_and_sanitized

    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        rng = np.random.default_rng(4)
        x = b.input("x", (1, 6, 6, 2))
        xq = b.tensor("xq", (1, 6, 6, 2), "int8", quant=(0.03, -2))
        b.op("QUANTIZE", [x], [xq])
        w, ws = _weights(rng, (4, 3, 3, 2), 0)
        c = b.tensor("c", (1, 3, 3, 4), "int8", quant=(0.05, -128))
        b.op("CONV_2D", [xq, b.const("w", w, quant=(ws, np.zeros(4, np.int64), 0)),
                         b.const("b", rng.integers(-99, 99, 4).astype(np.int32),
                                 quant=((0.03 * ws).astype(np.float32), np.zeros(4), 0))],
             [c], "Conv2DOptions", padding=0, strideH=2, strideW=2, fusedActivationFunction=1)
        y = b.tensor("y", (1, 3, 3, 4))
        b.op("DEQUANTIZE", [c], [y])
        return [x], [y]

    data = _q_graph(build)
    m = check_int8(data, [lambda k: _rand(1, 6, 6, 2) * 2], n=2)
    feeds = [_rand(1, 6, 6, 2) * 2]
    (got,) = strict_and_sanitized(m, tmp_path, feeds)
    np.testing.assert_array_equal(got, run_interpreter(data, feeds)[0])


def test_cli_verify_int8_model_bit_exact(tmp_path: Path) -> None:
    """`edgec verify` on an int8 .tflite draws int8 codes, compares bit for bit, takes int8
    codes from --inputs and refuses float data for an int8 port."""
    data, _ = q_layer("CONV_2D", (1, 6, 6, 3), (4, 3, 3, 3), (1, 6, 6, 4), "Conv2DOptions",
                      padding=0, strideH=1, strideW=1, fusedActivationFunction=1)
    path = tmp_path / "q.tflite"
    path.write_bytes(data)
    proc = _cli("verify", str(path), "--n", "4", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rep = json.loads(proc.stdout)
    assert rep["pass"] and all(o["exact"] and o["max_abs_err"] == 0 for o in rep["outputs"])
    assert "TFLite interpreter" in rep["reference"]
    codes = np.random.default_rng(3).integers(-128, 128, (5, 1, 6, 6, 3)).astype(np.int8)
    np.savez(tmp_path / "codes.npz", **{rep_in: codes for rep_in in ["x"]})
    proc = _cli("verify", str(path), "--inputs", str(tmp_path / "codes.npz"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "(int8, exact)" in proc.stdout and "5/5" in proc.stdout
    np.savez(tmp_path / "floats.npz", x=codes.astype(np.float32) * 0.04)
    proc = _cli("verify", str(path), "--inputs", str(tmp_path / "floats.npz"))
    assert proc.returncode == 2 and "int8 port" in proc.stderr and "codes" in proc.stderr


def _add_sub_at(op: str, ratio: float) -> tuple[bytes, float]:
    """An int8 ADD/SUB whose output rescale ``2·max(s1, s2) / (2^20·s_out)`` is about ``ratio``
    (input scales 1 and 1/3), and the rescale as TFLite's Prepare computes it."""
    from edgec.ops.int8.arith import add_rescales

    s_out = float(np.float32(2.0 / ((1 << 20) * ratio)))

    def build(b: TflBuilder) -> tuple[list[int], list[int]]:
        x0 = b.input("a", (1, 8), "int8", quant=(1.0, 3))
        x1 = b.input("b", (1, 8), "int8", quant=(1.0 / 3.0, -3))
        y = b.tensor("y", (1, 8), "int8", quant=(s_out, -2))
        b.op(op, [x0, x1], [y], f"{op.capitalize()}Options")
        return [x0, x1], [y]

    return _q_graph(build), add_rescales(1.0, float(np.float32(1 / 3)), s_out)[2]


@pytest.mark.parametrize("op", ["ADD", "SUB"])
def test_int8_add_sub_just_below_the_rescale_bound_is_bit_exact(op: str) -> None:
    """An output rescale of 0.999 (the output's step is 2^-19 of the inputs': every sum but the
    ones that cancel saturates) compiles and equals the interpreter; ordinary scales are
    test_int8_elementwise_broadcast."""
    data, ratio = _add_sub_at(op, 0.999)
    assert 0.99 < ratio < 1.0
    # a - 3(b + 3) ... codes whose reals cancel: b = 3 (a - 3) - 3 for ADD's -b, SUB's +b
    a = np.arange(-3, 5, dtype=np.int8).reshape(1, 8)
    cancel = (np.int16(-3) * (a.astype(np.int16) - 3) - 3 if op == "ADD"
              else np.int16(3) * (a.astype(np.int16) - 3) - 3).astype(np.int8)
    check_int8(data, [lambda k: a if k < 2 else _codes(1, 8, seed=k),
                      lambda k: cancel if k == 0 else _codes(1, 8, seed=k + 50)])


@pytest.mark.parametrize("op", ["ADD", "SUB"])
@pytest.mark.parametrize("target", [1.0, 1.001, 50.0])
def test_int8_add_sub_with_a_rescale_of_one_or_more_is_refused(op: str, target: float,
                                                               tmp_path: Path) -> None:
    """TFLite requires the output rescale below 1 (QuantizeMultiplierSmallerThanOneExp): its
    ADD aborts the interpreter in Prepare, its SUB returns wrong codes (x - x converted by
    TFLiteConverter gives code 1 for every 0). One line naming the file, the operator and the
    op; CLI exit 2."""
    data, ratio = _add_sub_at(op, target)
    assert ratio >= 1.0
    path = tmp_path / "tiny_out.tflite"
    path.write_bytes(data)
    with pytest.raises(EdgecError) as exc:
        edgec.compile(str(path))
    msg = _one_line(exc)
    assert f"tiny_out.tflite: subgraph 0 operator 0 ({op}): the output rescale" in msg
    assert f"int8 {op} is supported where it is below 1" in msg
    if target == 50.0:
        proc = _cli("compile", str(path), "-o", str(tmp_path / "gen"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgec: error: ") and op in lines[0]
