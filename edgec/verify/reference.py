"""The source model in its own framework, mapped onto the compiled model's ports.

A :class:`Reference` takes some of the C model's inputs by name (``inputs``) and returns some of
its outputs in order (``outputs``): onnxruntime takes and gives them all; a torch module takes
its ``forward`` arguments (and a state the C carries under one of its keyword names, e.g. an
ncps ``CfC``'s ``hx``) and gives its results; state a torch module keeps inside itself
(snnTorch ``init_hidden``, NCAP's step counter) lives on in the module between calls of one
sequence and starts afresh (a copy of the module as compiled) when ``fresh`` is set.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.mcu.model import CompiledLike


class Reference:
    #: what runs it, for reports ("onnxruntime", "torch")
    label: str = ""
    inputs: list[str]
    outputs: list[str]

    def __call__(self, feeds: Mapping[str, np.ndarray], fresh: bool = True) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeReference(Reference):
    label = "onnxruntime"

    def __init__(self, model: Any, cm: CompiledLike, source: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgecError("verifying an ONNX model needs onnxruntime: pip install onnxruntime")\
                from None
        so = ort.SessionOptions()
        so.log_severity_level = 3
        data = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
        try:
            self.sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EdgecError(
                f"{source}: onnxruntime cannot load it: {(str(exc).splitlines() or [''])[0]}"
            ) from None
        names = {i.name for i in self.sess.get_inputs()}
        self.inputs = [n for n in _input_names(cm) if n in names]
        outs = {o.name for o in self.sess.get_outputs()}
        self.outputs = [n for n in cm.output_names if n in outs]

    def __call__(self, feeds: Mapping[str, np.ndarray], fresh: bool = True) -> list[np.ndarray]:
        res = self.sess.run(self.outputs, {k: np.asarray(feeds[k], np.float32)
                                           for k in self.inputs})
        return [np.asarray(r, np.float32) for r in res]


class TfliteRuntimeReference(Reference):
    """The TFLite interpreter with its reference kernels (what int8 models are bit-exact to);
    a Keras model is converted the way edgec converts it. Variables the interpreter keeps
    (an LSTM's state) are edgec state: ``<var>`` in, ``<var>_next`` out."""

    label = "the TFLite interpreter (reference kernels)"

    def __init__(self, source: str, cm: CompiledLike):
        from edgec.frontend.tflite.reference import reference_for

        self.session = reference_for(source)
        known = set(self.session.inputs) | set(self.session.variables)
        self.inputs = [n for n in _input_names(cm) if n in known]
        self.outputs = [
            n for n in cm.output_names
            if n in self.session.outputs
            or (n.endswith("_next") and n[:-5] in self.session.variables)
        ]

    def __call__(self, feeds: Mapping[str, np.ndarray], fresh: bool = True) -> list[np.ndarray]:
        return self.session.run(self.outputs, {k: feeds[k] for k in self.inputs})


class TorchReference(Reference):
    label = "torch"

    def __init__(self, module: Any, examples: Any, cm: CompiledLike, program: bool = False):
        import torch
        from torch.utils import _pytree as pytree

        self.torch = torch
        self.program = program
        self.module0 = module
        self.module: Any = None
        if isinstance(examples, torch.Tensor):
            examples = (examples,)
        flat, self.spec = pytree.tree_flatten(tuple(examples))
        self.flat = list(flat)
        self.slots = [i for i, v in enumerate(flat) if isinstance(v, torch.Tensor)]
        names = _input_names(cm)
        self.inputs = names[: len(self.slots)]
        params = _forward_params(module)
        state_in = [p.name for p in cm.cmodel.inputs if p.state]
        #: state the C carries that the module takes as a keyword argument (ncps CfC's hx)
        self.kw_state = {n: n for n in state_in if n not in self.inputs and n in params}
        self.inputs += list(self.kw_state)
        n_out = len(self._call({n: np.zeros(_shape(cm, n), np.float32) for n in self.inputs},
                               True))
        self.outputs = cm.output_names[:n_out]

    def _call(self, feeds: Mapping[str, np.ndarray], fresh: bool) -> list[np.ndarray]:
        torch = self.torch
        from torch.utils import _pytree as pytree

        if fresh or self.module is None:
            self.module = self.module0.module() if self.program else copy.deepcopy(self.module0)
            if not self.program:
                self.module.eval()
        flat = list(self.flat)
        for slot, name in zip(self.slots, self.inputs, strict=False):
            flat[slot] = torch.from_numpy(np.array(feeds[name], np.float32)).reshape(
                tuple(self.flat[slot].shape)
            )
        args = pytree.tree_unflatten(flat, self.spec)
        kwargs = {k: torch.from_numpy(np.array(feeds[n], np.float32)) for n, k in
                  self.kw_state.items()}
        with torch.no_grad():
            out = self.module(*args, **kwargs)
        leaves, _ = pytree.tree_flatten(out)
        return [
            leaf.detach().cpu().numpy().astype(np.float32)
            for leaf in leaves if isinstance(leaf, torch.Tensor)
        ]

    def __call__(self, feeds: Mapping[str, np.ndarray], fresh: bool = True) -> list[np.ndarray]:
        return self._call(feeds, fresh)


def _input_names(cm: CompiledLike) -> list[str]:
    return [p.name for p in cm.cmodel.inputs]


def _shape(cm: CompiledLike, name: str) -> tuple[int, ...]:
    return tuple(next(p.shape for p in cm.cmodel.inputs if p.name == name))


def _forward_params(module: Any) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return []


def make_reference(cm: CompiledLike, source: Any) -> Reference:
    """The reference for ``source`` (what ``edgec.compile`` was given)."""
    if source is None:
        raise EdgecError(
            f"{cm.name}: compiled from an IR graph: there is no source model to verify against"
        )
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if ".py:" in text:
            from edgec.frontend.python_factory import load_python_factory

            module, examples = load_python_factory(text)
            return TorchReference(module, examples, cm)
        if text.endswith(".pt2"):
            ep = _load_program(text)
            return TorchReference(ep, _program_examples(ep), cm, program=True)
        from edgec.frontend.keras import is_keras_source

        if text.lower().endswith(".tflite") or is_keras_source(text):
            return TfliteRuntimeReference(text, cm)
        return OnnxRuntimeReference(source, cm, text)
    kind = type(source).__name__
    if kind == "ModelProto":
        return OnnxRuntimeReference(source, cm, "<ModelProto>")
    if kind == "ExportedProgram":
        return TorchReference(source, _program_examples(source), cm, program=True)
    if isinstance(source, tuple) and len(source) == 2 and hasattr(source[0], "forward"):
        return TorchReference(source[0], source[1], cm)
    raise EdgecError(f"{cm.name}: no reference runtime for a {kind} source")


def _load_program(path: str) -> Any:
    import torch

    try:
        return torch.export.load(str(Path(path)))
    except Exception as exc:
        raise EdgecError(f"{path}: torch cannot load it: {exc}") from None


def _program_examples(ep: Any) -> tuple:
    """Placeholder tensors for an ExportedProgram's user inputs (shapes from the program)."""
    import torch

    lifted: set[str] = set()
    sig = ep.graph_signature
    for attr in ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants"):
        lifted.update((getattr(sig, attr, {}) or {}).keys())
    out = []
    for node in ep.graph_module.graph.nodes:
        if node.op == "placeholder" and node.name not in lifted:
            val = node.meta.get("val")
            out.append(torch.zeros(tuple(int(d) for d in val.shape), dtype=torch.float32))
    return tuple(out)
