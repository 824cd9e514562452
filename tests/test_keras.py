"""Keras models (in memory, ``.keras``, ``.h5``, SavedModel) through TensorFlow's TFLite converter
and edgec's TFLite front-end: every layer nn4mc supports (Dense, Conv1D/2D, MaxPool1D/2D,
SimpleRNN, GRU, LSTM) and more, checked against the TFLite interpreter (reference kernels) on the
converted model and against Keras itself.

TensorFlow takes ~9 s to import: models are built and converted once per module (fixtures).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgec
from edgec.errors import EdgecError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: edgec's float C vs TFLite's reference kernels on the same converted model
RTOL, ATOL = 1e-4, 1e-5
#: vs Keras itself (TensorFlow's kernels: other summation orders, fused GRU/LSTM math)
KERAS_RTOL, KERAS_ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow", reason="the Keras tests need TensorFlow "
                                                    "(pip install 'edgec[tf]')")


def _models(tf: Any) -> dict[str, Callable[[], Any]]:
    keras = tf.keras
    L = keras.layers  # noqa: N806 - Keras' own spelling

    def seq(shape: tuple[int, ...], *layers: Any) -> Any:
        return keras.Sequential([keras.Input(shape), *layers])

    def functional() -> Any:
        a = keras.Input((8, 8, 4))
        b = L.Conv2D(8, 3, padding="same")(a)
        b = L.LeakyReLU(negative_slope=0.2)(b)
        c = L.Conv2D(8, 1, activation="hard_swish")(a)
        s = L.Add()([b, c])
        s = L.Activation("elu")(s)
        cat = L.Concatenate()([s, a])
        p = L.MaxPool2D(2, strides=2, padding="same")(cat)
        r = L.Reshape((16, 12))(p)
        r = L.Permute((2, 1))(r)
        f = L.Flatten()(r)
        out = L.Dense(6, activation="sigmoid")(f)
        return keras.Model(a, out)

    return {
        "mlp": lambda: seq((12,), L.Dense(32, activation="relu"), L.Dense(16, activation="tanh"),
                           L.Dense(4, activation="softmax")),
        "cnn1d": lambda: seq((24, 3), L.Conv1D(8, 3, activation="relu"), L.MaxPool1D(2),
                             L.Conv1D(8, 3, strides=2, padding="same"), L.Flatten(),
                             L.Dense(3)),
        "cnn2d": lambda: seq((12, 12, 3), L.Conv2D(8, 3, padding="same", activation="relu"),
                             L.MaxPool2D(2), L.Conv2D(16, 3, strides=2),
                             L.BatchNormalization(), L.ReLU(),
                             L.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
                             L.AveragePooling2D(2, padding="same"),
                             L.Conv2D(8, 3, padding="same", dilation_rate=2),
                             L.GlobalAveragePooling2D(), L.Dense(5)),
        "functional": functional,
        "simplernn": lambda: seq((7, 3), L.SimpleRNN(8), L.Dense(2)),
        "gru": lambda: seq((7, 3), L.GRU(8, return_sequences=True), L.GRU(6), L.Dense(2)),
        "lstm": lambda: seq((7, 3), L.LSTM(8, return_sequences=True), L.LSTM(6), L.Dense(2)),
        "rnn_backwards": lambda: seq((6, 4), L.GRU(5, go_backwards=True, return_sequences=True),
                                     L.SimpleRNN(4, go_backwards=True), L.Dense(3)),
    }


class Zoo:
    def __init__(self, tf: Any):
        self.tf = tf
        self.factories = _models(tf)
        self.cache: dict[str, tuple[Any, edgec.CompiledModel]] = {}

    def get(self, key: str) -> tuple[Any, edgec.CompiledModel]:
        if key not in self.cache:
            self.tf.keras.utils.set_random_seed(len(key))
            model = self.factories[key]()
            for w in model.weights:  # non-trivial BatchNorm statistics and biases
                if "moving_variance" in w.path:
                    w.assign(np.random.uniform(0.5, 2.0, w.shape).astype(np.float32))
                elif "moving_mean" in w.path or "bias" in w.path:
                    w.assign(np.random.uniform(-0.5, 0.5, w.shape).astype(np.float32))
            self.cache[key] = (model, edgec.compile(model, name=key))
        return self.cache[key]


@pytest.fixture(scope="module")
def zoo(tf: Any) -> Zoo:
    return Zoo(tf)


def _feeds(m: edgec.CompiledModel, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(np.float32) for p in m.cmodel.inputs]


def _tflite_bytes(model: Any) -> bytes:
    from edgec.frontend.keras import keras_to_tflite, static_keras_model

    return keras_to_tflite(static_keras_model(model))


@pytest.mark.parametrize("key", ["mlp", "cnn1d", "cnn2d", "functional", "simplernn", "gru",
                                 "lstm", "rnn_backwards"])
def test_keras_layers_match_tflite_and_keras(zoo: Zoo, key: str) -> None:
    from tests.tflite_builder import run_interpreter

    model, m = zoo.get(key)
    data = _tflite_bytes(model)
    for seed in range(3):
        (x,) = _feeds(m, seed)
        got = m.run(x)
        np.testing.assert_allclose(got, run_interpreter(data, [x])[0], rtol=RTOL, atol=ATOL,
                                   err_msg="vs TFLite")
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), rtol=KERAS_RTOL,
                                   atol=KERAS_ATOL, err_msg="vs Keras")


@pytest.mark.parametrize("key", ["simplernn", "gru", "lstm", "rnn_backwards"])
def test_recurrent_layers_are_loops(zoo: Zoo, key: str) -> None:
    _, m = zoo.get(key)
    scans = [n for n in m.graph.nodes if n.op == "Scan"]
    assert scans and len(scans) == {"simplernn": 1}.get(key, 2)
    assert "for (int it0 = 0; it0 <" in m.c_source
    steps = m.cmodel.inputs[0].shape[1]
    assert all(n.attrs["body"] is not None for n in scans)
    assert f"it0 < {steps}; ++it0" in m.c_source


def test_cnn_keeps_only_layout_changes_it_needs(zoo: Zoo) -> None:
    _, m = zoo.get("cnn2d")
    ops = [n.op for n in m.graph.nodes]
    assert ops.count("Transpose") == 1 and ops[0] == "Transpose", ops
    assert "BatchNormalization" not in ops


def test_keras_files_and_savedmodel(zoo: Zoo, tmp_path: Path, tf: Any) -> None:
    model, m = zoo.get("cnn1d")
    (x,) = _feeds(m)
    expected = m.run(x)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    model.export(tmp_path / "saved")
    for path in (tmp_path / "m.keras", tmp_path / "m.h5", tmp_path / "saved"):
        got = edgec.compile(path).run(x)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=str(path))


def test_savedmodel_with_dynamic_recurrent_layer_says_what_to_do(zoo: Zoo, tmp_path: Path
                                                                 ) -> None:
    model, _ = zoo.get("simplernn")
    model.export(tmp_path / "rnn_saved")
    with pytest.raises(EdgecError, match=r"save the Keras model as \.keras or \.h5"):
        edgec.compile(tmp_path / "rnn_saved")


def test_dynamic_sequence_length_needs_input_shape(tf: Any) -> None:
    keras = tf.keras
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4)])
    with pytest.raises(EdgecError, match=r"dynamic shape \[\?, \?, 3\].*--input-shape"):
        edgec.compile(model)
    name = model.inputs[0].name
    m = edgec.compile(model, input_shapes={name: (1, 5, 3)})
    x = np.random.default_rng(0).standard_normal((1, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(m.run(x), np.asarray(model(x)), rtol=KERAS_RTOL,
                               atol=KERAS_ATOL)


def test_generated_c_is_deterministic(zoo: Zoo) -> None:
    model, m = zoo.get("gru")
    again = edgec.compile(model, name="gru")
    assert again.c_source == m.c_source and again.c_header == m.c_header


@pytest.mark.parametrize("key", ["gru", "cnn2d", "functional"])
def test_strict_flags_and_sanitizers(zoo: Zoo, tmp_path: Path, key: str) -> None:
    from tests.c_checks import strict_and_sanitized

    model, m = zoo.get(key)
    feeds = _feeds(m, seed=7)
    (got,) = strict_and_sanitized(m, tmp_path, feeds)
    np.testing.assert_allclose(got, m.run(*feeds), rtol=1e-5, atol=1e-6)


def test_missing_tensorflow_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow → ImportError
    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04")
    with pytest.raises(EdgecError, match=r"pip install 'edgec\[tf\]'") as exc:
        edgec.compile(tmp_path / "m.keras")
    assert "\n" not in str(exc.value)


# -- int8 (full-integer quantization with a representative dataset) ---------------------------

def _convert_int8(tf: Any, model: Any, int8_io: bool) -> bytes:
    from edgec.frontend.keras import _quiet, static_keras_model

    fixed = static_keras_model(model)
    shapes = [tuple(int(d) for d in t.shape) for t in fixed.inputs]
    rng = np.random.default_rng(0)

    def rep() -> Any:
        for _ in range(32):
            yield [(1.5 * rng.standard_normal(s)).astype(np.float32) for s in shapes]

    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with _quiet():
        return bytes(conv.convert())


@pytest.mark.parametrize("int8_io", [True, False], ids=["int8-io", "float-io"])
@pytest.mark.parametrize("key", ["mlp", "cnn1d", "cnn2d", "functional"])
def test_int8_keras_models_are_byte_exact(zoo: Zoo, tf: Any, key: str, int8_io: bool) -> None:
    from tests.tflite_builder import run_interpreter

    model, _ = zoo.get(key)
    data = _convert_int8(tf, model, int8_io)
    m = edgec.compile(data, name=f"{key}_q")
    assert not [n.op for n in m.graph.nodes if n.op in ("Conv", "Gemm", "MaxPool")]
    rng = np.random.default_rng(1)
    for _ in range(4):
        if int8_io:
            feeds = [rng.integers(-128, 128, p.shape).astype(np.int8) for p in m.cmodel.inputs]
        else:
            feeds = [(1.5 * rng.standard_normal(p.shape)).astype(np.float32)
                     for p in m.cmodel.inputs]
        got = m.run(*feeds)
        expected = run_interpreter(data, feeds)[0]
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
