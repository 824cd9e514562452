"""Keras models the way people write them (Conv2DTranspose, UpSampling2D, Resizing,
GlobalMaxPooling, GELU...) and the four MLPerf Tiny reference models, converted by TensorFlow's
TFLiteConverter to float and to full-integer int8 (int8 and float inputs/outputs), compiled by
edgec and checked against the TFLite interpreter's reference kernels: float within the TFLite
tests' tolerance, int8 byte for byte. docs/conformance.md lists the sweep these cases come from.

TensorFlow takes ~9 s to import: the module converts each model once (fixtures).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgec
from edgec.errors import EdgecError
from edgec.mcu.toolchain import have_tool

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RTOL, ATOL = 1e-4, 1e-5  # edgec's float C vs TFLite's reference kernels (tests/test_tflite.py)


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow", reason="the Keras tests need TensorFlow "
                                                    "(pip install 'edgec[tf]')")


def _models(tf: Any) -> dict[str, Callable[[], Any]]:
    keras = tf.keras
    L = keras.layers  # noqa: N806 - Keras' own spelling

    def seq(shape: tuple[int, ...], *layers: Any) -> Any:
        return keras.Sequential([keras.Input(shape), *layers])

    def merges() -> Any:
        a = keras.Input((6, 4))
        b, c = L.Dense(4)(a), L.Dense(4, activation="tanh")(a)
        return keras.Model(a, L.Concatenate()([L.Minimum()([b, c]), L.Maximum()([b, c]),
                                               L.Average()([b, c])]))

    def decoder() -> Any:  # the new int8 builtins in one model (strict C, QEMU)
        a = keras.Input((3, 3, 4))
        x = L.Conv2DTranspose(6, 3, strides=2, padding="same")(a)
        x = L.PReLU(shared_axes=[1, 2])(x)
        x = L.UpSampling2D(2, interpolation="bilinear")(x)
        y = L.Conv2D(6, 1, activation="gelu")(x)
        x = L.Maximum()([x, y])
        x = L.UpSampling2D(2)(x)
        x = L.GlobalMaxPooling2D()(x)
        return keras.Model(a, L.Dense(3)(x))

    def resnet8() -> Any:  # MLPerf Tiny image classification (CIFAR-10), 32x32x3
        a = keras.Input((32, 32, 3))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(a)))
        for filters, stride in ((16, 1), (32, 2), (64, 2)):
            y = L.Conv2D(filters, 3, strides=stride, padding="same")(x)
            y = L.ReLU()(L.BatchNormalization()(y))
            y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
            if stride != 1:
                x = L.Conv2D(filters, 1, strides=stride, padding="same")(x)
            x = L.ReLU()(L.Add()([x, y]))
        x = L.Flatten()(L.AveragePooling2D(8)(x))
        return keras.Model(a, L.Dense(10, activation="softmax")(x))

    def mobilenet() -> Any:  # MLPerf Tiny visual wake words: MobileNetV1 alpha 0.25 (48x48 here)
        a = keras.Input((48, 48, 3))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same",
                                                     use_bias=False)(a)))
        for f, s in ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1),
                     (256, 2), (256, 1)):
            x = L.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False)(x)
            x = L.ReLU()(L.BatchNormalization()(x))
            x = L.ReLU()(L.BatchNormalization()(L.Conv2D(f, 1, use_bias=False)(x)))
        x = L.GlobalAveragePooling2D()(x)
        return keras.Model(a, L.Dense(2, activation="softmax")(x))

    def autoencoder() -> Any:  # MLPerf Tiny anomaly detection: FC 640-128x4-8-128x4-640
        a = keras.Input((640,))
        x = a
        for n in (128, 128, 128, 128, 8, 128, 128, 128, 128):
            x = L.ReLU()(L.BatchNormalization()(L.Dense(n)(x)))
        return keras.Model(a, L.Dense(640)(x))

    def ds_cnn() -> Any:  # MLPerf Tiny keyword spotting: DS-CNN on 49x10 MFCCs
        a = keras.Input((49, 10, 1))
        x = L.Conv2D(64, (10, 4), strides=2, padding="same")(a)
        x = L.Dropout(0.2)(L.ReLU()(L.BatchNormalization()(x)))
        for _ in range(4):
            x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
            x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 1)(x)))
        x = L.Flatten()(L.AveragePooling2D((25, 5))(L.Dropout(0.4)(x)))
        return keras.Model(a, L.Dense(12, activation="softmax")(x))

    return {
        "conv2d_transpose_same": lambda: seq(
            (4, 5, 3), L.Conv2DTranspose(6, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(4, 1)),
        "conv2d_transpose_valid": lambda: seq(
            (4, 4, 3), L.Conv2DTranspose(5, (3, 2), strides=(2, 3), padding="valid")),
        "conv2d_transpose_small_kernel": lambda: seq(
            (3, 3, 2), L.Conv2DTranspose(4, 2, strides=3, padding="same")),
        "conv2d_transpose_nobias": lambda: seq(
            (4, 4, 3), L.Conv2DTranspose(5, 3, strides=1, padding="same", use_bias=False)),
        "upsampling_nearest": lambda: seq((3, 4, 3), L.UpSampling2D((2, 3)), L.Flatten(),
                                          L.Dense(5)),
        "upsampling_bilinear": lambda: seq((4, 5, 3), L.UpSampling2D(2, interpolation="bilinear"),
                                           L.Conv2D(4, 3)),
        "resizing_bilinear": lambda: seq((5, 4, 2), L.Resizing(7, 9, interpolation="bilinear")),
        "resize_align_corners": lambda: seq((5, 4, 2), L.Lambda(
            lambda v: tf.compat.v1.image.resize_bilinear(v, (9, 3), align_corners=True))),
        "nearest_resizing": lambda: seq((5, 4, 3), L.Resizing(7, 9, interpolation="nearest"),
                                        L.Flatten(), L.Dense(3)),
        "nearest_align_corners": lambda: seq((5, 4, 2), L.Lambda(
            lambda v: tf.compat.v1.image.resize_nearest_neighbor(v, (9, 3), align_corners=True))),
        "layernorm": lambda: seq((5, 8), L.Dense(8), L.LayerNormalization(), L.Dense(2)),
        # unroll=True: every step multiplies the state by the same recurrent kernel tensor
        "gru_unrolled": lambda: seq((6, 3), L.GRU(10, unroll=True), L.Dense(2)),
        "lstm_unrolled": lambda: seq((5, 3), L.LSTM(8, unroll=True, return_sequences=True)),
        "simple_rnn_unrolled": lambda: seq((6, 4), L.SimpleRNN(7, unroll=True), L.Dense(2)),
        "conv_8x8x4": lambda: seq((8, 8, 4), L.Conv2D(8, 3)),
        "global_max_pool1d": lambda: seq((10, 3), L.Conv1D(6, 3), L.GlobalMaxPooling1D(),
                                         L.Dense(2)),
        "global_max_pool2d": lambda: seq((6, 6, 3), L.Conv2D(6, 3), L.GlobalMaxPooling2D(),
                                         L.Dense(2)),
        "gelu": lambda: seq((8,), L.Dense(6, activation="gelu"), L.Dense(2)),
        "gelu_tanh": lambda: seq((8,), L.Dense(6), L.Lambda(
            lambda v: keras.activations.gelu(v, approximate=True)), L.Dense(2)),
        "exponential": lambda: seq((8,), L.Dense(6, activation="exponential"), L.Dense(2)),
        "softplus": lambda: seq((8,), L.Dense(6, activation="softplus"), L.Dense(2)),
        "all_codes_gelu": lambda: seq((256,), L.Activation("gelu")),
        "all_codes_exp": lambda: seq((256,), L.Activation("exponential")),
        "all_codes_log": lambda: seq((256,), L.Lambda(lambda v: tf.math.log(tf.nn.relu(v) + 0.05))),
        "prelu_shared": lambda: seq((5, 5, 3), L.Conv2D(4, 3), L.PReLU(shared_axes=[1, 2]),
                                    L.Flatten(), L.Dense(2)),
        "prelu_dense": lambda: seq((8,), L.Dense(6), L.PReLU(), L.Dense(2)),
        "merge_min_max": merges,
        "decoder": decoder,
        "resnet8": resnet8,
        "mobilenet_v1_025": mobilenet,
        "fc_autoencoder": autoencoder,
        "ds_cnn_kws": ds_cnn,
    }


FLOAT_CASES = ["conv2d_transpose_same", "conv2d_transpose_valid", "conv2d_transpose_small_kernel",
               "conv2d_transpose_nobias",
               "upsampling_nearest", "upsampling_bilinear", "resizing_bilinear",
               "resize_align_corners", "nearest_resizing", "nearest_align_corners",
               "gru_unrolled", "lstm_unrolled", "simple_rnn_unrolled"]
INT8_CASES = ["conv2d_transpose_same", "conv2d_transpose_valid", "conv2d_transpose_small_kernel",
              "conv2d_transpose_nobias",
              "upsampling_nearest", "upsampling_bilinear", "resizing_bilinear",
              "resize_align_corners", "nearest_resizing", "nearest_align_corners",
              "global_max_pool1d", "global_max_pool2d", "gelu", "gelu_tanh",
              "exponential", "softplus", "prelu_shared", "prelu_dense", "merge_min_max",
              "layernorm"]
MLPERF_TINY = ["resnet8", "mobilenet_v1_025", "fc_autoencoder", "ds_cnn_kws"]


class Zoo:
    def __init__(self, tf: Any):
        self.tf = tf
        self.factories = _models(tf)
        self.models: dict[str, Any] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}

    def model(self, key: str) -> Any:
        if key not in self.models:
            from edgec.frontend.keras import static_keras_model

            self.tf.keras.utils.set_random_seed(len(key))
            model = self.factories[key]()
            rng = np.random.default_rng(len(key))
            for w in model.weights:  # non-trivial BatchNorm statistics and biases
                if "moving_variance" in w.path:
                    w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
                elif any(k in w.path for k in ("moving_mean", "bias", "beta")):
                    w.assign(rng.uniform(-0.5, 0.5, w.shape).astype(np.float32))
                elif "gamma" in w.path:
                    w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            self.models[key] = static_keras_model(model)
        return self.models[key]

    def tflite(self, key: str, kind: str) -> bytes:
        """kind: 'float', 'int8-io' or 'float-io' (full-integer int8 inside)."""
        if (key, kind) not in self.blobs:
            from edgec.frontend.keras import keras_to_tflite

            model = self.model(key)
            if kind == "float":
                self.blobs[key, kind] = keras_to_tflite(model)
            else:
                from tests.tflite_int8 import convert_int8

                self.blobs[key, kind] = convert_int8(model, n=16, spread=1.5,
                                                     float_io=kind == "float-io")
        return self.blobs[key, kind]


@pytest.fixture(scope="module")
def zoo(tf: Any) -> Zoo:
    return Zoo(tf)


def _feeds(m: edgec.CompiledModel, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(-128, 128, p.shape).astype(np.int8) if np.dtype(p.dtype) == np.int8
            else (1.5 * rng.standard_normal(p.shape)).astype(np.float32)
            for p in m.cmodel.inputs]


def _ops(data: bytes) -> list[str]:
    from edgec.frontend.tflite.reader import read_tflite

    return [op.op for op in read_tflite(data).subgraphs[0].operators]


@pytest.mark.parametrize("key", FLOAT_CASES)
def test_float_layers_match_tflite_and_keras(zoo: Zoo, key: str) -> None:
    from tests.tflite_builder import run_interpreter

    data = zoo.tflite(key, "float")
    m = edgec.compile(data, name=key)
    rng = np.random.default_rng(1)
    for _ in range(2):
        (x,) = _feeds(m, rng)
        got = m.run(x)
        np.testing.assert_allclose(got, run_interpreter(data, [x])[0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got, np.asarray(zoo.model(key)(x)), rtol=1e-4, atol=1e-4)


#: the builtin each int8 case exists for (so a converter change that drops it shows up)
INT8_BUILTIN = {"conv2d_transpose": "TRANSPOSE_CONV", "upsampling_nearest": "TILE",
                "upsampling_bilinear": "RESIZE_BILINEAR", "resiz": "RESIZE_BILINEAR",
                "nearest": "RESIZE_NEAREST_NEIGHBOR",
                "global_max": "REDUCE_MAX", "gelu": "GELU", "exponential": "EXP", "softplus": "LOG",
                "prelu": "PRELU", "merge_min_max": "MAXIMUM", "layernorm": "SQUARED_DIFFERENCE"}


@pytest.mark.parametrize("io", ["int8-io", "float-io"])
@pytest.mark.parametrize("key", INT8_CASES)
def test_int8_layers_are_byte_exact(zoo: Zoo, key: str, io: str) -> None:
    from tests.tflite_builder import run_interpreter

    data = zoo.tflite(key, io)
    builtin = next(v for k, v in INT8_BUILTIN.items() if key.startswith(k))
    assert builtin in _ops(data)
    if key == "merge_min_max":
        assert "MINIMUM" in _ops(data)
    m = edgec.compile(data, name=key)
    rng = np.random.default_rng(2)
    for _ in range(4):
        feeds = _feeds(m, rng)
        got, want = m.run(*feeds), run_interpreter(data, feeds)[0]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("key,builtin", [("all_codes_gelu", "GELU"), ("all_codes_exp", "EXP"),
                                         ("all_codes_log", "LOG")])
def test_int8_activation_tables_on_all_codes(zoo: Zoo, key: str, builtin: str) -> None:
    """GELU, EXP and LOG tables (TFLite's LUTPopulate model) on every int8 code."""
    from tests.tflite_builder import run_interpreter

    data = zoo.tflite(key, "int8-io")
    assert builtin in _ops(data)
    codes = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    got, want = edgec.compile(data, name=key).run(codes), run_interpreter(data, [codes])[0]
    np.testing.assert_array_equal(got, want)


#: MobileNet (the slowest to convert) with int8 ports only; float ports go through the same
#: QUANTIZE/DEQUANTIZE as in every other model
MLPERF_CASES = [(k, io) for k in MLPERF_TINY for io in ("int8-io", "float-io")
                if (k, io) != ("mobilenet_v1_025", "float-io")]


@pytest.mark.parametrize("key,io", MLPERF_CASES)
def test_mlperf_tiny_int8_is_byte_exact(zoo: Zoo, key: str, io: str) -> None:
    from tests.tflite_builder import run_interpreter

    data = zoo.tflite(key, io)
    m = edgec.compile(data, name=key)
    assert not [n.op for n in m.graph.nodes if n.op in ("Conv", "Gemm", "MatMul")]
    rng = np.random.default_rng(3)
    for _ in range(3):
        feeds = _feeds(m, rng)
        got, want = m.run(*feeds), run_interpreter(data, feeds)[0]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_int8_unsupported_builtin_is_a_one_line_error() -> None:
    """What the int8 front-end cannot translate names the builtin and its operator index (an
    int8 ABS; LayerNormalization's SQUARED_DIFFERENCE and RSQRT were the Keras case until
    tests/test_int8_layernorm.py)."""
    from tests.tflite_builder import TflBuilder

    b = TflBuilder()
    x = b.input("x", (1, 4), "int8", quant=(0.1, 0))
    y = b.tensor("y", (1, 4), "int8", quant=(0.1, 0))
    b.op("ABS", [x], [y])
    with pytest.raises(EdgecError, match=r"operator 0 \(ABS\): builtin ABS is not supported on "
                                         r"int8") as exc:
        edgec.compile(b.build([x], [y]))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("key,kind", [("conv2d_transpose_same", "float"),
                                      ("resizing_bilinear", "float"), ("decoder", "float-io")])
def test_strict_c_and_sanitizers(zoo: Zoo, tmp_path: Path, key: str, kind: str) -> None:
    from tests.c_checks import strict_and_sanitized

    m = edgec.compile(zoo.tflite(key, kind), name=key)
    if kind != "float":
        ops = {n.op for n in m.graph.nodes}
        assert {"QPRelu", "QResizeBilinear", "QMaximum", "QMaxPool2D", "Expand"} <= ops, ops
    feeds = _feeds(m, np.random.default_rng(4))
    (got,) = strict_and_sanitized(m, tmp_path, feeds)
    # other optimisation flags: float sums may differ in the last bit (int8 inside: exact)
    np.testing.assert_allclose(got, m.run(*feeds), rtol=1e-5, atol=1e-6)


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_ds_cnn_on_cortex_m4f_equals_the_interpreter(zoo: Zoo, tmp_path: Path) -> None:
    """MLPerf Tiny's DS-CNN, int8 in and out, on an emulated Cortex-M4F (mps2-an386, the DSP
    int8 kernels): byte for byte the TFLite interpreter's reference kernels."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target
    from tests.tflite_builder import run_interpreter

    data = zoo.tflite("ds_cnn_kws", "int8-io")
    m = edgec.compile(data, name="ds_cnn_kws")
    rng = np.random.default_rng(5)
    xs = [_feeds(m, rng)[0] for _ in range(2)]
    res = run_qemu(build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw",
                                  [[x] for x in xs]), timeout_s=180)
    assert len(res.outputs) == len(xs)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        assert got.tobytes() == run_interpreter(data, [x])[0].tobytes()


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_new_int8_builtins_on_cortex_m4f_equal_host_c(zoo: Zoo, tmp_path: Path) -> None:
    """TRANSPOSE_CONV, PRELU, RESIZE_BILINEAR, GELU, MAXIMUM, TILE and REDUCE_MAX in one int8
    model on the emulated Cortex-M4F: bit for bit the host C (which the tests above hold to
    the interpreter)."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target

    m = edgec.compile(zoo.tflite("decoder", "int8-io"), name="decoder")
    rng = np.random.default_rng(6)
    xs = [_feeds(m, rng)[0] for _ in range(2)]
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs])
    res = run_qemu(build, timeout_s=180)
    assert len(res.outputs) == len(xs)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        assert got.tobytes() == m.run(x).tobytes()


def test_int8_conv_builds_warning_free_for_the_m4f(zoo: Zoo, tmp_path: Path) -> None:
    """A plain int8 Conv2D (8x8x4 -> 8, 3x3): arm-none-eabi-gcc -O2 with -Werror once stopped at
    -Waggressive-loop-optimizations inside edgec_widen_s8 (signed k0 + i under constant
    propagation); the DSP build is warning-free."""
    from tests.c_checks import strict_for_m4f

    strict_for_m4f(edgec.compile(zoo.tflite("conv_8x8x4", "int8-io"), name="conv"), tmp_path,
                   "conv")
