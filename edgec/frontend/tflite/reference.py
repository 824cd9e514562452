"""The TFLite interpreter as a reference for ``edgec verify``: an onnxruntime-like ``run(names,
feeds)`` over ``ai_edge_litert``'s interpreter with its reference kernels, keyed by the names
edgec gives the model's inputs and outputs (and its variables, which edgec carries as state:
``<var>`` in, ``<var>_next`` out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.tflite.importer import tensor_names
from edgec.frontend.tflite.reader import INSTALL_HINT, read_tflite


class TfliteReference:
    def __init__(self, data: bytes, source: str = "<tflite>"):
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise EdgecError(f"the TFLite reference interpreter is not installed: "
                             f"{INSTALL_HINT}") from None
        model = read_tflite(data, source=source)
        names = tensor_names(model)
        sg = model.subgraphs[0]
        self.inputs = {names[k]: k for k in sg.inputs}
        self.outputs = {names[k]: k for k in sg.outputs}
        self.variables = {names[t.index]: t.index for t in sg.tensors if t.is_variable}
        try:
            self.it = Interpreter(model_content=data,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        except ValueError as exc:
            if "Didn't find op" not in str(exc):
                raise EdgecError(f"{source}: the TFLite interpreter cannot load it: "
                                 f"{str(exc).splitlines()[0]}") from None
            self.it = Interpreter(model_content=data, experimental_op_resolver_type=(
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        self.it.allocate_tensors()

    def run(self, names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        details = {d["index"]: d for d in self.it.get_tensor_details()}
        for name, value in feeds.items():
            k = self.inputs.get(name, self.variables.get(name))
            if k is None:
                raise EdgecError(f"the TFLite model has no input or variable '{name}'")
            d = details[k]
            self.it.set_tensor(k, np.asarray(value, d["dtype"]).reshape(d["shape"]))
        try:
            self.it.invoke()
        except RuntimeError as exc:  # e.g. a token id outside an Embedding's table
            msg = " ".join(str(exc).split())
            raise EdgecError(f"the TFLite interpreter stopped on this input set: {msg} (edgec "
                             f"clamps out-of-range GATHER indices, TFLite refuses them)") from None
        out = []
        for name in names if names is not None else list(self.outputs):
            if name in self.outputs:
                out.append(self.it.get_tensor(self.outputs[name]).copy())
            elif name.endswith("_next") and name[:-5] in self.variables:
                out.append(self.it.get_tensor(self.variables[name[:-5]]).copy())
            else:
                raise EdgecError(f"the TFLite model has no output '{name}'")
        return out


def reference_for(path: str) -> TfliteReference:
    """The reference session of a ``.tflite`` file or a Keras model (converted as edgec does)."""
    from pathlib import Path

    from edgec.frontend.keras import is_keras_source, keras_file_to_tflite

    p = Path(path)
    data = keras_file_to_tflite(p) if is_keras_source(p) else p.read_bytes()
    return TfliteReference(data, source=str(p))
