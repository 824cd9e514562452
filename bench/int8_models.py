"""The int8 bench models (``bench/int8_memory.py``, ``bench/int8.py``): small Keras models
converted to float or full-integer int8 TFLite.

Each builder returns an uncompiled ``tf.keras.Model`` with random (seeded) weights; ``tflite``
converts it, int8 with a seeded random representative set (int8 inputs and outputs). Importing
this module imports TensorFlow (about 9 s).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import numpy as np
import tensorflow as tf

L = tf.keras.layers


def _ds_cnn() -> tf.keras.Model:
    """A DS-CNN keyword spotter (MLPerf Tiny's shape, 64 channels): 49×10 MFCC input."""
    a = tf.keras.Input((49, 10, 1), batch_size=1)
    x = L.Conv2D(64, (10, 4), strides=2, padding="same", activation="relu")(a)
    for _ in range(4):
        x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = L.Conv2D(64, 1, activation="relu")(x)
    x = L.AveragePooling2D((25, 5))(x)
    x = L.Flatten()(x)
    x = L.Dense(12)(x)
    x = L.Softmax()(x)
    return tf.keras.Model(a, x)


def _cnn1d() -> tf.keras.Model:
    """A 1-D CNN on a 128-step, 6-channel signal (an IMU window)."""
    a = tf.keras.Input((128, 6), batch_size=1)
    x = L.Conv1D(16, 5, padding="same", activation="relu")(a)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(32, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(32, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(8)(x)
    return tf.keras.Model(a, x)


def _mlp() -> tf.keras.Model:
    """An MLP 64→128→128→64."""
    a = tf.keras.Input((64,), batch_size=1)
    x = L.Dense(128, activation="relu")(a)
    x = L.Dense(128, activation="relu")(x)
    x = L.Dense(64)(x)
    return tf.keras.Model(a, x)


def _mbnet_early() -> tf.keras.Model:
    """A MobileNet-like CNN on a 64×64 grey image whose peak memory sits in the first,
    full-resolution layers (3×3 conv to 8 channels at 64×64), as in MCUNet's models."""
    a = tf.keras.Input((64, 64, 1), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(a)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2D(16, 1, activation="relu")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2D(32, 1, activation="relu")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2D(64, 1, activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(10)(x)
    return tf.keras.Model(a, x)


def _lstm(unroll: bool = False) -> tf.keras.Model:
    """An LSTM(32) over 16 steps of 8 features, then Dense(4). ``unroll=True`` (the same
    weights): the converter writes the 16 steps out as FULLY_CONNECTED, ADD, MUL, LOGISTIC,
    TANH and SPLIT, which full-integer int8 conversion handles; on the fused
    UNIDIRECTIONAL_SEQUENCE_LSTM, TensorFlow 2.21's int8 converter crashes (SIGSEGV)."""
    a = tf.keras.Input((16, 8), batch_size=1)
    x = L.LSTM(32, unroll=unroll)(a)
    x = L.Dense(4)(x)
    return tf.keras.Model(a, x)


#: the int8 memory bench models (``bench/int8_memory.py``)
MODELS: dict[str, Callable[[], tf.keras.Model]] = {
    "ds_cnn": _ds_cnn,
    "cnn1d": _cnn1d,
    "mlp": _mlp,
    "mbnet_early": _mbnet_early,
}
_BUILDERS: dict[str, Callable[..., tf.keras.Model]] = {**MODELS, "lstm": _lstm}


def keras_model(name: str, seed: int = 0, **kw: bool) -> tf.keras.Model:
    """The named model with seeded random weights (biases too, so no tensor is all zero);
    ``kw``: builder options (``unroll`` for the LSTM)."""
    tf.keras.utils.set_random_seed(seed)
    model = _BUILDERS[name](**kw)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype)
                               for w in ws])
    return model


def tflite(model: tf.keras.Model, seed: int = 0, n: int = 32, int8: bool = True) -> bytes:
    """Full-integer int8 TFLite (int8 input and output) with a random representative set, or
    float32 TFLite (``int8=False``)."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(int(d) for d in t.shape) for t in model.inputs]

    def rep():  # noqa: ANN202 - generator for the converter
        for _ in range(n):
            yield [rng.standard_normal(s).astype(np.float32) for s in shapes]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints its SavedModel
        return conv.convert()
