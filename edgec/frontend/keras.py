"""Keras models (``.keras``, ``.h5``, a SavedModel directory) → TFLite → IR.

TensorFlow's own converter (``TFLiteConverter``, builtin ops only) turns the model into a
``.tflite`` flatbuffer, which :mod:`edgec.frontend.tflite` translates. Keras models are first
rebuilt on inputs of static shape (batch 1, or ``input_shapes``; a dynamic sequence length must
be given), so recurrent layers become loops with a static trip count; a SavedModel directory is
converted as it is. TensorFlow is the optional extra ``edgec[tf]``; without it the error says
how to install it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError
from edgec.frontend.tflite.importer import from_tflite_bytes
from edgec.ir import Graph

INSTALL_HINT = "pip install 'edgec[tf]'"
SUFFIXES = (".keras", ".h5", ".hdf5")


def is_keras_source(path: str | os.PathLike[str]) -> bool:
    """A ``.keras``/``.h5`` file or a SavedModel directory."""
    p = Path(path)
    if p.suffix.lower() in SUFFIXES:
        return True
    return p.is_dir() and (p / "saved_model.pb").is_file()


def _tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise EdgecError(
            f"Keras models are converted with TensorFlow, which is not installed: {INSTALL_HINT}"
        ) from None
    return tf


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converter's prints and C++ logs (file descriptors 1 and 2)."""
    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:  # no real descriptors (captured streams): leave them alone
        pass
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _first_line(exc: BaseException) -> str:
    """The first error line of a (often very long) converter message, without MLIR locations."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        if "error:" in line:
            msg = line.split("error:", 1)[1]
            if "): " in msg:
                msg = msg.rsplit("): ", 1)[1]
            return msg.strip()[:300]
    return (lines[0][:300] if lines else "") or type(exc).__name__


def static_keras_model(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                       source: str = "<keras model>") -> Any:
    """The same model (shared weights) on inputs of static shape: batch 1 unless
    ``input_shapes`` (keyed by input name) says otherwise. The converter needs static shapes to
    lower recurrent layers to builtin ops."""
    keras = _tensorflow().keras
    given = dict(input_shapes or {})
    inputs, names = [], []
    for k, t in enumerate(model.inputs):
        name = str(getattr(t, "name", "") or f"input_{k}").split(":")[0]
        names.append(name)
        dims = list(t.shape)
        shape = given.pop(name, None)
        if shape is None:
            if any(d is None for d in dims[1:]):
                hint = "x".join("1" if d is None else str(d) for d in dims)
                raise EdgecError(
                    f"{source}: input '{name}' has dynamic shape "
                    f"[{', '.join('?' if d is None else str(d) for d in dims)}]; give it a "
                    f"static one with --input-shape {name}:{hint}"
                )
            shape = [1 if dims[0] is None else dims[0], *dims[1:]]
        inputs.append(keras.Input(batch_shape=tuple(int(d) for d in shape), name=name,
                                  dtype=getattr(t, "dtype", "float32")))
    if given:
        raise EdgecError(f"{source}: --input-shape names unknown input(s) "
                         f"{', '.join(sorted(given))}; inputs are {', '.join(names)}")
    try:
        outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    except Exception as exc:
        raise EdgecError(f"{source}: cannot call the Keras model on inputs of static shape: "
                         f"{_first_line(exc)}") from None
    return keras.Model(inputs, outputs, name=getattr(model, "name", None) or "model")


def keras_to_tflite(model: Any, source: str = "<keras model>") -> bytes:
    """Convert an in-memory Keras model to float32 TFLite (builtin ops only)."""
    tf = _tensorflow()
    try:
        with _quiet():
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            return bytes(conv.convert())
    except Exception as exc:
        raise EdgecError(f"{source}: TensorFlow's TFLite converter failed: "
                         f"{_first_line(exc)}") from None


def load_keras(path: str | os.PathLike[str],
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               name: str | None = None) -> Graph:
    p = Path(path)
    if not p.exists():
        raise EdgecError(f"{p}: no such file or directory")
    if p.is_dir():
        data = keras_file_to_tflite(p)
        return from_tflite_bytes(data, input_shapes, source=str(p), name=name or _stem(p))
    data = keras_file_to_tflite(p, input_shapes)
    return from_tflite_bytes(data, source=str(p), name=name or _stem(p))


def keras_file_to_tflite(p: Path, input_shapes: Mapping[str, Sequence[int]] | None = None
                         ) -> bytes:
    """A ``.keras``/``.h5`` file (converted with static input shapes) or a SavedModel
    directory (converted as it is) → float32 TFLite bytes."""
    """A ``.keras``/``.h5`` file or a SavedModel directory → float32 TFLite bytes."""
    tf = _tensorflow()
    if p.is_dir():
        try:
            with _quiet():
                conv = tf.lite.TFLiteConverter.from_saved_model(str(p))
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                return bytes(conv.convert())
        except Exception as exc:
            hint = ""
            if "TensorList" in str(exc):
                hint = (" (a recurrent layer with a dynamic batch or length: save the Keras "
                        "model as .keras or .h5, which edgec converts with static shapes)")
            raise EdgecError(f"{p}: TensorFlow's TFLite converter failed on the SavedModel: "
                             f"{_first_line(exc)}{hint}") from None
    try:
        with _quiet():
            model = tf.keras.models.load_model(str(p), compile=False)
    except Exception as exc:
        raise EdgecError(f"{p}: Keras cannot load it: {_first_line(exc)}") from None
    return keras_to_tflite(static_keras_model(model, input_shapes, str(p)), source=str(p))


def from_keras_model(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                     name: str | None = None) -> Graph:
    source = f"<keras {type(model).__name__}>"
    data = keras_to_tflite(static_keras_model(model, input_shapes, source), source)
    return from_tflite_bytes(data, source=source,
                             name=name or _ident(getattr(model, "name", "") or "keras_model"))


def _stem(p: Path) -> str:
    return _ident(p.name if p.is_dir() else p.stem)


def _ident(s: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in s).strip("_").lower()
    return out if out and not out[0].isdigit() else "m_" + out
