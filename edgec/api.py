"""The Python API: ``m = edgec.compile("model.onnx")``; ``m.run(x)``; ``m.write(dir)``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgec.backend.c_emit import CModel, emit_c
from edgec.backend.host import HostLibrary, build_shared
from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops.interpret import interpret
from edgec.passes import optimize


class CompiledModel:
    """A model compiled to C: run it on the host, write its sources, read its report."""

    def __init__(self, graph: Graph, cmodel: CModel, source_graph: Graph):
        self.graph = graph
        self.cmodel = cmodel
        self.source_graph = source_graph
        self._lib: HostLibrary | None = None

    # -- facts ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.cmodel.name

    @property
    def input_names(self) -> list[str]:
        return [p.name for p in self.cmodel.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.name for p in self.cmodel.outputs]

    @property
    def is_stateful(self) -> bool:
        return bool(self.cmodel.state)

    def report(self) -> dict[str, Any]:
        return dict(self.cmodel.report)

    # -- sources --------------------------------------------------------------------------
    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        return self.cmodel.write(directory)

    @property
    def c_source(self) -> str:
        return self.cmodel.source

    @property
    def c_header(self) -> str:
        return self.cmodel.header

    # -- host execution -------------------------------------------------------------------
    @property
    def lib(self) -> HostLibrary:
        if self._lib is None:
            self._lib = HostLibrary(self.cmodel, build_shared(self.cmodel))
            if self.is_stateful:
                self._lib.reset()
        return self._lib

    def _feeds(self, args: Sequence[Any], kwargs: Mapping[str, Any], names: list[str]) -> list:
        if kwargs:
            if args:
                raise ValueError("pass inputs either positionally or by name, not both")
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise ValueError(f"missing inputs: {missing}")
            return [kwargs[n] for n in names]
        if len(args) == 1 and isinstance(args[0], Mapping):
            return [args[0][n] for n in names]
        return list(args)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the C model on the host. One output → an array; several → a list."""
        outs = self.lib.run(*self._feeds(args, kwargs, self.input_names))
        return outs[0] if len(outs) == 1 else outs

    def reset(self) -> None:
        self.lib.reset()

    def step(self, *args: Any, **kwargs: Any) -> Any:
        """One step of a stateful model; the state stays inside (see :meth:`state`)."""
        names = [p.name for p in self.cmodel.inputs if not p.state]
        outs = self.lib.step(*self._feeds(args, kwargs, names))
        return outs[0] if len(outs) == 1 else outs

    def state(self) -> dict[str, np.ndarray]:
        return self.lib.state()

    def reference(self, *args: Any, **kwargs: Any) -> Any:
        """Run edgec's numpy interpreter on the optimised IR (no C involved)."""
        feeds = dict(
            zip(self.input_names, self._feeds(args, kwargs, self.input_names), strict=True)
        )
        res = interpret(self.graph, feeds)
        outs = [res[o] for o in self.output_names]
        return outs[0] if len(outs) == 1 else outs


def compile_graph(
    g: Graph,
    name: str | None = None,
    state: Sequence[tuple[str, str]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> CompiledModel:
    """Optimise and emit ``g``; ``options`` (merged over ``g.options``) steer the passes."""
    source_graph = g
    if options:
        g = g.copy()
        g.options = {**g.options, **options}
    if state:
        g = g.copy()
        for s_in, s_out in state:
            if s_in not in g.inputs or s_out not in g.outputs:
                raise EdgecError(
                    f"state pair {s_in}:{s_out}: '{s_in}' must be a graph input and '{s_out}' a "
                    f"graph output (inputs: {', '.join(g.inputs)}; outputs: {', '.join(g.outputs)})"
                )
            if g.tensor(s_in).size != g.tensor(s_out).size:
                raise EdgecError(
                    f"state pair {s_in}:{s_out}: shapes differ "
                    f"({g.shape(s_in)} vs {g.shape(s_out)})"
                )
        g.state = [tuple(p) for p in state]  # type: ignore[misc]
    opt = optimize(g)
    return CompiledModel(opt, emit_c(opt, name), source_graph)


def load_graph(
    model: str | os.PathLike[str] | Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str | None = None,
    example_inputs: Any = None,
    options: Mapping[str, Any] | None = None,
) -> Graph:
    """Any supported model source → IR: an ONNX file or ModelProto, a ``.tflite`` file (or its
    bytes), a Keras model (``.keras``/``.h5`` file, SavedModel directory, or the model object),
    a ``.pt2`` torch.export program (file or ExportedProgram), an ``nn.Module`` with
    ``example_inputs``, or ``file.py:function`` naming a Python function that returns
    ``(module, example_inputs)``."""
    from edgec.frontend.onnx_import import from_model_proto, load_onnx

    opts = dict(options or {})
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        if ".py:" in text:
            module, examples = _load_python_factory(text)
            from edgec.frontend.pytorch.importer import from_module

            stem = Path(text.split(":", 1)[0]).stem
            return from_module(module, examples, name or stem, opts)
        if text.endswith(".pt2"):
            from edgec.frontend.pytorch.importer import load_pt2

            return load_pt2(text, name)
        if text.lower().endswith(".tflite"):
            from edgec.frontend.tflite.importer import load_tflite

            return load_tflite(text, input_shapes, name=name)
        from edgec.frontend.keras import is_keras_source, load_keras

        if is_keras_source(text):
            return load_keras(text, input_shapes, name=name)
        return load_onnx(model, input_shapes, name=name)
    if isinstance(model, (bytes, bytearray)) and bytes(model[4:8]) == b"TFL3":
        from edgec.frontend.tflite.importer import from_tflite_bytes

        return from_tflite_bytes(bytes(model), input_shapes, name=name)
    kind = type(model).__name__
    if type(model).__module__.startswith(("keras", "tf_keras", "tensorflow")) and hasattr(
        model, "layers"
    ):
        from edgec.frontend.keras import from_keras_model

        return from_keras_model(model, input_shapes, name=name)
    if kind == "ModelProto":
        return from_model_proto(model, input_shapes, source=name or "model", name=name)
    if kind == "ExportedProgram":
        from edgec.frontend.pytorch.importer import from_exported_program

        return from_exported_program(model, name or "model", name or "<ExportedProgram>")
    if hasattr(model, "forward") and hasattr(model, "named_modules"):
        if example_inputs is None:
            raise EdgecError(
                f"edgec.compile: a torch module ({kind}) needs example_inputs=(tensor, ...) "
                f"to fix its input shapes"
            )
        from edgec.frontend.pytorch.importer import from_module

        return from_module(model, example_inputs, name, opts)
    raise EdgecError(
        f"edgec.compile: cannot compile a {kind}; pass an ONNX path or ModelProto, a .pt2 file, "
        f"file.py:function, or a torch.nn.Module with example_inputs"
    )


def _load_python_factory(spec: str) -> tuple[Any, Any]:
    """``models/net.py:make`` → ``make()`` → ``(module, example_inputs)``."""
    import importlib.util

    path_s, _, fn = spec.rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise EdgecError(f"{path}: no such file")
    mod_spec = importlib.util.spec_from_file_location(f"edgec_user_{path.stem}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise EdgecError(f"{path}: cannot import it as Python")
    user = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(user)
    except Exception as exc:
        raise EdgecError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(user, fn, None)
    if not callable(factory):
        raise EdgecError(f"{path}: has no function '{fn}' (expected {spec} → (module, inputs))")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise EdgecError(
            f"{spec}: must return (module, example_inputs), got {type(result).__name__}"
        )
    return result


def compile(  # noqa: A001 - the natural name
    model: str | os.PathLike[str] | Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str | None = None,
    state: Sequence[tuple[str, str]] | None = None,
    example_inputs: Any = None,
    options: Mapping[str, Any] | None = None,
) -> CompiledModel:
    """Compile a model to C: an ONNX file or ``onnx.ModelProto``, a ``.tflite`` file or its
    bytes, a Keras model (``.keras``/``.h5``, a SavedModel directory, or the object; needs
    ``edgec[tf]``), a ``torch.export`` program (``.pt2``), ``file.py:function``, or a
    ``torch.nn.Module`` with ``example_inputs``.

    ``options`` steer structure-aware lowering of library modules, e.g. ``{"phm": "factored"}``,
    ``{"lsm": "regen"}``, ``{"target": "cortex-m4f"}``; ``{"sparse": "auto" | "csr" | "dense"}``
    also picks how constant Gemm/MatMul weights with zeros are stored (any front-end).
    """
    g = load_graph(model, input_shapes, name, example_inputs, options)
    return compile_graph(g, name=name, state=state, options=options)
