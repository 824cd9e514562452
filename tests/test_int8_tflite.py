"""int8 ops against the TFLite interpreter: tiny Keras models converted to full-integer int8,
run by ai-edge-litert with its reference kernels (BUILTIN_REF); the edgec graph is built by
hand from the interpreter's weights and quantization; edgec's numpy reference and its generated
C (host build) must equal TFLite's int8 outputs byte for byte on every random input.

The default resolver (XNNPACK-backed optimized kernels) is compared too: it agrees with the
reference kernels on some ops only (see DEFAULT_AGREES), which docs/int8.md records. TFLite
Micro (the tflite-micro wheel) rounds differently in FULLY_CONNECTED: the ``int8_rounding=
"double"`` option matches it (test_tflite_micro_cnn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason="TensorFlow (pip install 'edgec[tf]') converts the Keras test models"
)
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs the TFLite reference")

from edgec.api import CompiledModel, compile_graph  # noqa: E402
from edgec.ir import Graph  # noqa: E402
from edgec.ops.int8 import lut  # noqa: E402
from edgec.ops.interpret import interpret  # noqa: E402
from tests.tflite_int8 import (  # noqa: E402
    DEFAULT,
    REF,
    Lite,
    build_graph,
    convert_int8,
    pads_2d,
)

L = tf.keras.layers
N_RANDOM = 150


def _one(shape: tuple[int, ...], *layers: Any) -> tf.keras.Model:
    x = inp = tf.keras.Input(shape, batch_size=1)
    for layer in layers:
        x = layer(x)
    return tf.keras.Model(inp, x)


def _two(shape_a: tuple[int, ...], shape_b: tuple[int, ...], fn: Callable) -> tf.keras.Model:
    a, b = tf.keras.Input(shape_a, batch_size=1), tf.keras.Input(shape_b, batch_size=1)
    return tf.keras.Model([a, b], fn(a, b))


def _randomized(model: tf.keras.Model, seed: int) -> tf.keras.Model:
    """Random weights and biases (Keras initialises biases to zero, which TFLite drops)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(np.float32)
                               for w in ws])
    return model


def _same(hw: tuple[int, int], k: int, s: int, d: int = 1) -> list[int]:
    return pads_2d("same", hw, (k, k), (s, s), (d, d))


# name -> (model factory, per-op attributes, expected TFLite ops, default resolver agrees)
CASES: dict[str, tuple[Callable[[], tf.keras.Model], list[dict[str, Any]], list[str]]] = {
    "dense_relu": (lambda: _randomized(_one((13,), L.Dense(7, activation="relu")), 1),
                   [{"act": "RELU"}], ["FULLY_CONNECTED"]),
    "dense_wide": (lambda: _randomized(_one((70,), L.Dense(33)), 2), [{}], ["FULLY_CONNECTED"]),
    "conv_same_s2_relu": (
        lambda: _randomized(_one((9, 8, 3), L.Conv2D(4, 3, strides=2, padding="same",
                                                     activation="relu")), 3),
        [{"act": "RELU", "strides": [2, 2], "pads": _same((9, 8), 3, 2)}], ["CONV_2D"]),
    "conv_valid_dil2_relu6": (
        lambda: _randomized(_one((11, 10, 5), L.Conv2D(6, (3, 2), dilation_rate=2,
                                                       activation="relu6")), 4),
        [{"act": "RELU6", "dilations": [2, 2]}], ["CONV_2D"]),
    "conv_1x1": (lambda: _randomized(_one((5, 7, 8), L.Conv2D(5, 1)), 5), [{}], ["CONV_2D"]),
    "conv_groups": (lambda: _randomized(_one((6, 6, 4), L.Conv2D(6, 3, groups=2,
                                                                  padding="same")), 6),
                    [{"pads": _same((6, 6), 3, 1)}], ["CONV_2D"]),
    "depthwise_m2_dil2_relu6": (
        lambda: _randomized(_one((9, 8, 3), L.DepthwiseConv2D(3, depth_multiplier=2,
                                                              padding="same", dilation_rate=2,
                                                              activation="relu6")), 7),
        [{"act": "RELU6", "depth_multiplier": 2, "dilations": [2, 2],
          "pads": _same((9, 8), 3, 1, 2)}], ["DEPTHWISE_CONV_2D"]),
    "depthwise_s2_valid": (
        lambda: _randomized(_one((10, 9, 4), L.DepthwiseConv2D((3, 2), strides=2)), 8),
        [{"strides": [2, 2]}], ["DEPTHWISE_CONV_2D"]),
    "maxpool_same_s2": (lambda: _one((9, 8, 3), L.MaxPooling2D(3, strides=2, padding="same")),
                        [{"kernel": [3, 3], "strides": [2, 2], "pads": _same((9, 8), 3, 2)}],
                        ["MAX_POOL_2D"]),
    "avgpool_same_s2": (lambda: _one((9, 8, 3), L.AveragePooling2D(3, strides=2,
                                                                   padding="same")),
                        [{"kernel": [3, 3], "strides": [2, 2], "pads": _same((9, 8), 3, 2)}],
                        ["AVERAGE_POOL_2D"]),
    "avgpool_valid": (lambda: _one((7, 6, 5), L.AveragePooling2D((2, 3))),
                      [{"kernel": [2, 3], "strides": [2, 3]}], ["AVERAGE_POOL_2D"]),
    "add": (lambda: _two((5, 6), (5, 6), lambda a, b: L.Add()([a, b])), [{}], ["ADD"]),
    "add_broadcast": (lambda: _two((5, 6), (1, 6), lambda a, b: L.Lambda(
        lambda t: t[0] + t[1])([a, b])), [{}], ["ADD"]),
    "sub": (lambda: _two((4, 7), (4, 7), lambda a, b: L.Subtract()([a, b])), [{}], ["SUB"]),
    "mul": (lambda: _two((5, 6), (5, 6), lambda a, b: L.Multiply()([a, b])), [{}], ["MUL"]),
    "mul_broadcast": (lambda: _two((5, 6), (1, 6), lambda a, b: L.Lambda(
        lambda t: t[0] * t[1])([a, b])), [{}], ["MUL"]),
    "mul_const_concat": (lambda: _one((5, 6), L.Lambda(lambda t: tf.concat([t, 5.0 * t], -1))),
                         [{}, {"axis": 2}], ["MUL", "CONCATENATION"]),
    "concat": (lambda: _two((5, 6), (5, 3), lambda a, b: L.Concatenate()([a, b])),
               [{"axis": 2}], ["CONCATENATION"]),
    "concat_axis1": (lambda: _two((2, 4, 3), (5, 4, 3), lambda a, b: L.Concatenate(axis=1)(
        [a, b])), [{"axis": 1}], ["CONCATENATION"]),
    "softmax": (lambda: _one((10,), L.Softmax()), [{}], ["SOFTMAX"]),
    "softmax_rows": (lambda: _one((3, 17), L.Softmax()), [{}], ["SOFTMAX"]),
    "mean_hw": (lambda: _one((5, 6, 7), L.GlobalAveragePooling2D()), [{"keepdims": 0}],
                ["MEAN"]),
    "mean_hw_keepdims": (lambda: _one((5, 6, 7), L.GlobalAveragePooling2D(keepdims=True)),
                         [{"keepdims": 1}], ["MEAN"]),
    "mean_axis1": (lambda: _one((5, 6), L.Lambda(lambda t: tf.reduce_mean(t, axis=1))),
                   [{"keepdims": 0}], ["MEAN"]),
}

#: cases on which the default resolver (optimized kernels) gives the reference's bytes
DEFAULT_AGREES = {"dense_relu", "dense_wide", "maxpool_same_s2", "avgpool_same_s2",
                  "avgpool_valid", "add", "add_broadcast", "sub", "concat", "concat_axis1",
                  "softmax", "softmax_rows", "mul_const_concat", "mean_axis1"}

ACTIVATIONS: dict[str, tuple[Callable[[], Any], str, Callable]] = {
    "logistic": (lambda: L.Activation("sigmoid"), "LOGISTIC",
                 lambda qi, qo: lut.logistic_lut(qi, qo)),
    "tanh": (lambda: L.Activation("tanh"), "TANH", lambda qi, qo: lut.tanh_lut(qi, qo)),
    "relu": (lambda: L.ReLU(), "RELU", lambda qi, qo: lut.relu_lut(qi, qo, 0.0, None)),
    "relu6": (lambda: L.ReLU(6.0), "RELU6", lambda qi, qo: lut.relu_lut(qi, qo, 0.0, 6.0)),
    "leaky_relu_0.2": (lambda: L.LeakyReLU(0.2), "LEAKY_RELU",
                       lambda qi, qo: lut.leaky_relu_lut(qi, qo, 0.2)),
    "leaky_relu_0.01": (lambda: L.LeakyReLU(0.01), "LEAKY_RELU",
                        lambda qi, qo: lut.leaky_relu_lut(qi, qo, 0.01)),
    "hard_swish": (lambda: L.Activation("hard_swish"), "HARD_SWISH",
                   lambda qi, qo: lut.hard_swish_lut(qi, qo)),
}


@pytest.fixture(scope="module")
def blobs() -> Callable[[str], bytes]:
    """Converted models, built on first use and shared by the module's tests."""
    cache: dict[str, bytes] = {}

    def get(key: str, factory: Callable[[], tf.keras.Model], **kw: Any) -> bytes:
        if key not in cache:
            cache[key] = convert_int8(factory(), **kw)
        return cache[key]

    return get


def _compare(lite: Lite, g: Graph, m: CompiledModel, n: int, seed: int,
             other: Lite | None = None) -> int:
    """Runs ``n`` random int8 inputs; numpy and C must equal the reference exactly. Returns how
    many inputs ``other`` (another resolver) disagreed on."""
    rng = np.random.default_rng(seed)
    disagree = 0
    for _ in range(n):
        xs = lite.random_inputs(rng)
        want = lite.run(xs)
        ref = interpret(g, dict(zip(g.inputs, xs, strict=True)))
        got_c = m.run(*xs)
        got_c = [got_c] if len(want) == 1 else got_c
        for w, r, c, name in zip(want, [ref[o] for o in g.outputs], got_c, g.outputs,
                                 strict=True):
            assert r.dtype == w.dtype and np.array_equal(r, w), (
                f"numpy reference != TFLite on '{name}': {np.count_nonzero(r != w)} values")
            assert c.dtype == w.dtype and np.array_equal(c, w), (
                f"C != TFLite on '{name}': {np.count_nonzero(c != w)} values")
        if other is not None:
            disagree += any(not np.array_equal(a, b) for a, b in zip(other.run(xs), want,
                                                                     strict=True))
    return disagree


@pytest.mark.parametrize("case", list(CASES))
def test_op_bit_exact(blobs: Callable, case: str) -> None:
    factory, attrs, ops = CASES[case]
    blob = blobs(case, factory)
    ref = Lite(blob, REF)
    assert ref.op_names() == ops
    g = build_graph(ref, attrs, name=case.replace(".", "_"))
    m = compile_graph(g)
    disagree = _compare(ref, g, m, N_RANDOM, seed=len(case), other=Lite(blob, DEFAULT))
    if case in DEFAULT_AGREES:
        assert disagree == 0, f"the default resolver now differs from the reference on {case}"
    else:
        assert disagree > 0, f"the default resolver now agrees on {case}: update DEFAULT_AGREES"


def test_dense_per_tensor_weights() -> None:
    """FULLY_CONNECTED with one weight scale (the float32 product of scales, TFLite's
    GetQuantizedConvolutionMultipler) and a fused RELU6."""
    rng = np.random.default_rng(9)
    model = _randomized(_one((21,), L.Dense(9, activation="relu6")), 9)

    def rep():  # noqa: ANN202
        for _ in range(64):
            yield [(2 * rng.standard_normal((1, 21))).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    ref = Lite(conv.convert(), REF)
    w_quant = ref.quant(int(ref.ops[0]["inputs"][1]))
    assert w_quant is not None and w_quant.size == 1
    g = build_graph(ref, [{"act": "RELU6"}], name="dense_per_tensor")
    _compare(ref, g, compile_graph(g), N_RANDOM, seed=9)


@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_activation_table_all_codes(blobs: Callable, case: str) -> None:
    """Each activation's 256-entry table equals TFLite's output for every input code."""
    layer, op_name, make = ACTIVATIONS[case]
    blob = blobs(case, lambda: _one((256,), layer()), spread=3.0)
    ref = Lite(blob, REF)
    assert ref.op_names() == [op_name]
    q_in, q_out = ref.quant(ref.inputs[0]), ref.quant(ref.outputs[0])
    codes = np.arange(-128, 128, dtype=np.int8)[None]
    want = ref.run([codes])[0][0]
    assert np.array_equal(make(q_in, q_out), want)
    g = build_graph(ref, [{"alpha": np.float32(case.split("_")[-1])}
                          if op_name == "LEAKY_RELU" else {}], name=case.replace(".", "_"))
    assert np.array_equal(compile_graph(g).run(codes)[0], want)


def _cnn() -> tf.keras.Model:
    a = tf.keras.Input((10, 9, 3), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(a)
    x = L.DepthwiseConv2D(3, strides=2, activation="relu6")(x)
    x = L.MaxPooling2D(2, padding="same")(x)
    x = L.Conv2D(6, 1)(x)
    x = L.Flatten()(x)
    x = L.Dense(10)(x)
    x = L.Softmax()(x)
    return _randomized(tf.keras.Model(a, x), 11)


CNN_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "CONV_2D", "RESHAPE",
           "FULLY_CONNECTED", "SOFTMAX"]
CNN_ATTRS = [{"act": "RELU", "pads": _same((10, 9), 3, 1)},
             {"act": "RELU6", "strides": [2, 2]},
             {"kernel": [2, 2], "strides": [2, 2], "pads": _same((4, 4), 2, 2)},
             {}, {}, {}, {}]


def test_cnn_end_to_end(blobs: Callable) -> None:
    """A small CNN (conv, depthwise, pool, 1x1 conv, reshape, dense, softmax): the whole int8
    model bit-exact on the host, its arena a byte plan holding int8 tensors."""
    ref = Lite(blobs("cnn", _cnn), REF)
    assert ref.op_names() == CNN_OPS
    g = build_graph(ref, CNN_ATTRS, name="qcnn")
    m = compile_graph(g)
    _compare(ref, g, m, 60, seed=11)
    report = m.report()
    assert report["arena_bytes"] >= report["arena_lower_bound_bytes"] > 0
    # the two largest activations (10x9x8 int8 each) never need a float's 4 bytes per value
    assert report["arena_bytes"] <= 2 * 10 * 9 * 8 + 200
    assert "int8_t" in m.c_header and "QCNN_IN_T0_SCALE" in m.c_header


def test_float_io_quantize_dequantize() -> None:
    """QUANTIZE (float → int8) at the input and DEQUANTIZE at the output: float ports, outputs
    bit-equal to TFLite's floats."""
    rng = np.random.default_rng(12)
    model = _randomized(_one((8,), L.Dense(5)), 12)

    def rep():  # noqa: ANN202
        for _ in range(64):
            yield [rng.standard_normal((1, 8)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    ref = Lite(conv.convert(), REF)
    assert ref.op_names() == ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"]
    g = build_graph(ref, name="floatio")
    m = compile_graph(g)
    assert "const float *EDGEC_RESTRICT in_" in m.c_header
    for k in range(200):
        x = (3 * rng.standard_normal((1, 8))).astype(np.float32)
        if k == 0:  # halves and out-of-range values round and clamp like TFLite
            s, _ = ref.quant(int(ref.ops[0]["outputs"][0])).scalar()
            x[0, :4] = np.float32(s) * np.float32([0.5, -1.5, 2.5, 1000.0])
        want = ref.run([x])[0]
        assert np.array_equal(interpret(g, {g.inputs[0]: x})[g.outputs[0]], want)
        assert np.array_equal(m.run(x), want)


def test_tflite_micro_cnn(blobs: Callable) -> None:
    """With int8_rounding="double" the same CNN equals TFLite Micro's interpreter (whose
    FULLY_CONNECTED rounds twice); with the default it equals TFLite's."""
    runtime = pytest.importorskip(
        "tflite_micro.python.tflite_micro.runtime", reason="tflite-micro wheel not installed")
    blob = blobs("cnn", _cnn)
    ref = Lite(blob, REF)
    micro = runtime.Interpreter.from_bytes(blob)
    g = build_graph(ref, CNN_ATTRS, name="qcnn_tflm", options={"int8_rounding": "double"})
    m = compile_graph(g)
    rng = np.random.default_rng(13)
    for _ in range(60):
        (x,) = ref.random_inputs(rng)
        micro.set_input(x, 0)
        micro.invoke()
        want = micro.get_output(0)
        assert np.array_equal(interpret(g, {g.inputs[0]: x})[g.outputs[0]], want)
        assert np.array_equal(m.run(x), want)


def test_tflite_micro_fixed_point_tables() -> None:
    """The fixed-point LOGISTIC/TANH tables (reference_integer_ops, as TFLite Micro runs them)
    equal TFLite Micro's outputs on every code."""
    runtime = pytest.importorskip(
        "tflite_micro.python.tflite_micro.runtime", reason="tflite-micro wheel not installed")
    for layer, make in ((L.Activation("sigmoid"), lut.logistic_lut),
                        (L.Activation("tanh"), lut.tanh_lut)):
        blob = convert_int8(_one((256,), layer), spread=3.0)
        ref = Lite(blob, REF)
        micro = runtime.Interpreter.from_bytes(blob)
        micro.set_input(np.arange(-128, 128, dtype=np.int8)[None], 0)
        micro.invoke()
        q_in, q_out = ref.quant(ref.inputs[0]), ref.quant(ref.outputs[0])
        assert np.array_equal(make(q_in, q_out, fixed_point=True),
                              micro.get_output(0)[0])


def test_unrolled_keras_lstm_is_int8(tmp_path: Any) -> None:
    """The int8 LSTM route of bench/int8.py: a Keras LSTM built with ``unroll=True`` converts to
    full-integer int8 (its steps as FULLY_CONNECTED, ADD, MUL, LOGISTIC, TANH, SPLIT, where the
    fused UNIDIRECTIONAL_SEQUENCE_LSTM crashes TF 2.21's converter); edgec lowers every
    arithmetic op to int8 and the C matches the TFLite reference kernels byte for byte. (TF's
    converter is not deterministic across processes here: with some hash seeds it leaves the
    first SPLIT in float between DEQUANTIZE and QUANTIZE; edgec then runs that data movement
    in float, which this test allows.)"""
    import edgec

    model = _randomized(_one((4, 3), tf.keras.layers.LSTM(6, unroll=True)), seed=4)
    path = tmp_path / "lstm_int8.tflite"
    path.write_bytes(convert_int8(model))
    m = edgec.compile(str(path), name="lstm_int8")
    ops = {n.op for n in m.graph.nodes}
    assert {"QFullyConnected", "QAdd", "QMul", "QLut"} <= ops, ops
    float_ops = {n.op for n in m.graph.nodes
                 if any(m.graph.tensors[t].dtype == "float32" for t in n.outputs)}
    assert float_ops <= {"Dequantize", "Split", "Reshape"}, float_ops
    report = m.verify()
    assert all(o.exact and o.passed == o.total for o in report.outputs), report
