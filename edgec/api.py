"""The Python API: ``m = edgec.compile("model.onnx")``; ``m.run(x)``; ``m.write(dir)``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgec.backend.c_emit import CModel, emit_c
from edgec.backend.cuda.model import CudaModel
from edgec.backend.host import HostLibrary, build_shared
from edgec.errors import EdgecError
from edgec.frontend.python_factory import load_python_factory, python_needs_function
from edgec.ir import Graph
from edgec.ops.interpret import interpret
from edgec.passes import optimize


class CompiledModel:
    """A model compiled to C: run it on the host, write its sources, read its report."""

    def __init__(self, graph: Graph, cmodel: CModel, source_graph: Graph, source: Any = None):
        self.graph = graph
        self.cmodel = cmodel
        self.source_graph = source_graph
        #: what was compiled (a path, an ONNX ModelProto, a torch module with its example
        #: inputs...): :meth:`verify` runs it in its own framework as the reference
        self.source = source
        self._lib: HostLibrary | None = None
        #: for ``compile(..., quantize="int8")``: the accuracy change vs the float model on the
        #: calibration sets (``print(m.quant_report.format())``)
        self.quant_report: Any = None

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

    @property
    def port_macros(self) -> tuple[str, ...]:
        """The C macro stems of the inputs then the outputs (``<NAME>_<PORT>_SIZE``)."""
        return tuple(p.C for p in self.cmodel.inputs + self.cmodel.outputs)

    def report(self) -> dict[str, Any]:
        return dict(self.cmodel.report)

    # -- sources --------------------------------------------------------------------------
    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        try:
            return self.cmodel.write(directory)
        except OSError as exc:
            raise EdgecError(
                f"{directory}: cannot write the sources there ({exc.strerror or exc})"
            ) from None

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
            return self._by_name(kwargs, names)
        if len(args) == 1 and isinstance(args[0], Mapping):
            return self._by_name(args[0], names)
        return list(args)

    def _by_name(self, given: Mapping[str, Any], names: list[str]) -> list:
        missing = [n for n in names if n not in given]
        if missing:
            raise ValueError(
                f"{self.name}: missing input(s) {', '.join(missing)}; given "
                f"{', '.join(map(str, given)) or 'none'}; the inputs are {', '.join(names)}"
            )
        return [given[n] for n in names]

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the C model on the host. One output → an array; several → a list.

        A stateful model's state inputs may be left out: they take their initial values
        (zero unless the model defines one), so ``run(x)`` is one call from a fresh state."""
        values = self._run_values(args, kwargs)
        self._check_sizes(values, self.cmodel.inputs)
        outs = self.lib.run(*values)
        return outs[0] if len(outs) == 1 else outs

    def _run_values(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list:
        """The values of every input; a stateful model's state inputs, when left out, take
        their initial values."""
        names = self.input_names
        given = len(kwargs) if kwargs else (
            len(args[0]) if len(args) == 1 and isinstance(args[0], Mapping) else len(args)
        )
        if self.is_stateful and given == len(names) - len(self.cmodel.state):
            plain = [p.name for p in self.cmodel.inputs if not p.state]
            feeds = dict(zip(plain, self._feeds(args, kwargs, plain), strict=True))
            feeds |= self.initial_state()
            return [feeds[n] for n in names]
        return self._feeds(args, kwargs, names)

    def initial_state(self) -> dict[str, np.ndarray]:
        """The state inputs' initial values (what ``reset()`` sets), by input name."""
        init = self.graph.state_init
        return {
            p.name: np.asarray(init[p.name], np.float32).reshape(p.shape)
            if p.name in init else np.zeros(p.shape, np.float32)
            for p in self.cmodel.inputs if p.state
        }

    def _check_sizes(self, values: Sequence[Any], ports: Sequence[Any]) -> None:
        if len(values) != len(ports):
            return  # the runner says how many it expects
        for v, p in zip(values, ports, strict=True):
            a = np.asarray(v)
            if a.size == p.size or p.size == 0:
                continue
            hint = ""
            if a.size % p.size == 0 and a.size > p.size:
                n = a.size // p.size
                hint = (
                    f"; the C model takes one input set per call: loop over the {n} sets "
                    f"(x[i] for i in range({n})), or compile for a batch of {n} (input_shapes, "
                    f"or example inputs with that batch)"
                )
            raise ValueError(
                f"{self.name}: input '{p.name}' expects shape {tuple(p.shape)} ({p.size} "
                f"values), got shape {a.shape} ({a.size} values){hint}"
            )

    def reset(self) -> None:
        self.lib.reset()

    def step(self, *args: Any, **kwargs: Any) -> Any:
        """One step of a stateful model; the state stays inside (see :meth:`state`)."""
        ports = [p for p in self.cmodel.inputs if not p.state]
        values = self._feeds(args, kwargs, [p.name for p in ports])
        self._check_sizes(values, ports)
        outs = self.lib.step(*values)
        return outs[0] if len(outs) == 1 else outs

    def state(self) -> dict[str, np.ndarray]:
        return self.lib.state()

    # -- targets --------------------------------------------------------------------------
    def build(
        self,
        target: Any = None,
        output: str | os.PathLike[str] = "edgec-firmware",
        inputs: Sequence[Mapping[str, Any]] | None = None,
        repeat: int = 1,
    ) -> Any:
        """Write and build a firmware project for a Cortex-M ``target`` (a name from
        ``edgec targets``, a ``.toml`` path or a Target) in ``output``: ELF, BIN, HEX (and a
        UF2 where the board boots from one). ``inputs``: input sets main() runs (dicts by
        input name; a stateful model's non-state inputs, one sequence). Returns the
        :class:`edgec.mcu.project.FirmwareBuild`."""
        from edgec.mcu.project import build_firmware, step_ports

        tgt = _target(target)
        vectors = None
        if inputs is not None:
            ports, _ = step_ports(self)
            vectors = [[np.asarray(s[p.name], np.float32) for p in ports] for s in inputs]
        return build_firmware(self, tgt, output, vectors, repeat=repeat)

    def verify(
        self,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        n: int = 20,
        seed: int = 0,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        target: Any = None,
    ) -> Any:
        """Compare the C with the source model run by its own framework (onnxruntime for ONNX,
        torch for torch modules and ``.pt2``): on the host, or on ``target``'s emulated board.
        Returns a :class:`edgec.verify.compare.VerifyReport` (true when every output is within
        ``atol + rtol * |reference|``; ``print(report.format())`` shows the table)."""
        from edgec.verify.compare import verify

        return verify(self, self.source, inputs=inputs, n=n, seed=seed, rtol=rtol, atol=atol,
                      target=None if target is None else _target(target))

    def profile(
        self, target: Any = None, repeat: int = 2, per_layer: bool = False,
        output: str | os.PathLike[str] | None = None,
    ) -> Any:
        """Exact instructions per inference on ``target``'s emulated core (a board: on its
        core's emulated twin), estimated cycles and time at the target's clock, flash and RAM
        (``per_layer``: the same per node). Returns a :class:`edgec.mcu.profile.ProfileReport`."""
        from edgec.mcu.profile import profile

        return profile(self, _target(target), out_dir=output, repeat=repeat, per_layer=per_layer)

    def reference(self, *args: Any, **kwargs: Any) -> Any:
        """Run edgec's numpy interpreter on the optimised IR (no C involved)."""
        feeds = dict(zip(self.input_names, self._run_values(args, kwargs), strict=True))
        res = interpret(self.graph, feeds)
        outs = [res[o] for o in self.output_names]
        return outs[0] if len(outs) == 1 else outs


def _target(target: Any) -> Any:
    from edgec.mcu.targets import Target, load_target

    return target if isinstance(target, Target) else load_target(target)


#: what ``edgec.compile(..., target=...)`` emits: C99 (the default) or CUDA
TARGETS = ("c", "cuda")


def _check_target(target: str | None) -> None:
    if target is not None and target not in TARGETS:
        raise EdgecError(
            f"target={target!r}: edgec.compile emits {' or '.join(map(repr, TARGETS))} "
            "(Cortex-M boards: m.build(target=...) on the C model)"
        )


def compile_graph(
    g: Graph,
    name: str | None = None,
    state: Sequence[tuple[str, str]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> CompiledModel:
    """Optimise and emit ``g``; ``options`` (merged over ``g.options``) steer the passes."""
    opt, source_graph = _optimized(g, state, options)
    return CompiledModel(opt, emit_c(opt, name), source_graph)


def compile_graph_cuda(
    g: Graph,
    name: str | None = None,
    state: Sequence[tuple[str, str]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> CudaModel:
    """Optimise ``g`` like :func:`compile_graph` and emit CUDA sources (docs/cuda.md);
    ``options["cuda"]`` picks the strategy."""
    from edgec.backend.cuda.emit import emit_cuda

    opt, source_graph = _optimized(g, state, options)
    strategy = opt.options.get("cuda")
    precision = opt.options.get("precision")
    return CudaModel(opt, emit_cuda(opt, name, None if strategy is None else str(strategy),
                                    None if precision is None else str(precision)),
                     source_graph)


def _optimized(
    g: Graph,
    state: Sequence[tuple[str, str]] | None,
    options: Mapping[str, Any] | None,
) -> tuple[Graph, Graph]:
    """(the optimised graph, the graph as given) with ``options`` and ``state`` applied."""
    check_options(options)
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
        for k, (s_in, s_out) in enumerate(state):
            for a, b in state[:k]:
                if s_in == a or s_out == b:
                    raise EdgecError(
                        f"state pairs {a}:{b} and {s_in}:{s_out}: each graph input and output "
                        f"can be in one state pair only")
        g.state = [tuple(p) for p in state]  # type: ignore[misc]
    return optimize(g), source_graph


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

    check_options(options)
    _check_input_shapes(input_shapes)
    opts = dict(options or {})
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        if text.endswith(".py") and ":" not in Path(text).name:
            raise EdgecError(python_needs_function(Path(text)))
        if ".py:" in text:
            module, examples = load_python_factory(text)
            from edgec.frontend.pytorch.importer import from_module

            stem = Path(text.split(":", 1)[0]).stem
            return from_module(module, examples, name or stem, opts)
        if text.endswith(".pt2"):
            from edgec.frontend.pytorch.importer import load_pt2

            return load_pt2(text, name, opts)
        if text.lower().endswith(".tflite"):
            from edgec.frontend.tflite.importer import load_tflite

            return load_tflite(text, input_shapes, name=name)
        from edgec.frontend.keras import is_keras_source, load_keras

        if is_keras_source(text):
            return load_keras(text, input_shapes, name=name)
        if Path(text).is_dir():
            raise EdgecError(
                f"{text}: a directory, not a model (a Keras SavedModel directory holds "
                f"saved_model.pb); give a .onnx, .tflite, .pt2, .keras or .h5 file or FILE.py:FN"
            )
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

        return from_exported_program(model, name or "model", name or "<ExportedProgram>", opts)
    if _is_torch_module(model):
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


def _is_torch_module(model: Any) -> bool:
    """A ``torch.nn.Module`` (told by its interface, so torch need not be imported)."""
    return hasattr(model, "forward") and hasattr(model, "named_modules")


def _check_input_shapes(shapes: Mapping[str, Sequence[int]] | None) -> None:
    for k, dims in (shapes or {}).items():
        try:
            ok = len(dims) > 0 and all(int(d) == d and int(d) >= 1 for d in dims)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise EdgecError(
                f"input_shapes['{k}'] = {tuple(dims) if hasattr(dims, '__iter__') else dims}: "
                f"every dimension must be a positive integer"
            )


def known_options() -> dict[str, str]:
    """Every compile option edgec reads: key → what it does. Collected from the ``OPTIONS``
    tables of the ops, passes and front-end modules that read them."""
    import importlib
    import pkgutil

    import edgec.backend
    import edgec.frontend
    import edgec.ops
    import edgec.passes

    found: dict[str, str] = {}
    for pkg in (edgec.ops, edgec.passes, edgec.frontend, edgec.backend):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            try:
                mod = importlib.import_module(info.name)
            except ImportError:  # a front-end whose framework is not installed
                continue
            for k, v in getattr(mod, "OPTIONS", {}).items():
                found.setdefault(k, v)
    return dict(sorted(found.items()))


def check_options(options: Mapping[str, Any] | None) -> None:
    """An unknown option key (a typo) is an error listing the known keys."""
    if not options:
        return
    known = known_options()
    unknown = [k for k in options if k not in known]
    if unknown:
        import difflib

        close = [m for k in unknown for m in difflib.get_close_matches(k, known, 1)]
        raise EdgecError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + f"; known options: {', '.join(known)}"
        )


def compile(  # noqa: A001 - the natural name
    model: str | os.PathLike[str] | Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str | None = None,
    state: Sequence[tuple[str, str]] | None = None,
    example_inputs: Any = None,
    options: Mapping[str, Any] | None = None,
    quantize: str | None = None,
    calibration: Any = None,
    calibration_method: str = "minmax",
    target: str | None = None,
) -> CompiledModel | CudaModel:
    """Compile a model to C: an ONNX file or ``onnx.ModelProto``, a ``.tflite`` file or its
    bytes, a Keras model (``.keras``/``.h5``, a SavedModel directory, or the object; needs
    ``edgec[tf]``), a ``torch.export`` program (``.pt2``), ``file.py:function``, or a
    ``torch.nn.Module`` with ``example_inputs``. ``target="cuda"``: CUDA sources instead, a
    :class:`edgec.backend.cuda.model.CudaModel` that runs batches on a GPU (docs/cuda.md).

    ``options`` steer structure-aware lowering of library modules, e.g. ``{"phm": "factored"}``,
    ``{"lsm": "regen"}``, ``{"target": "cortex-m4f"}``; ``{"sparse": "auto" | "csr" | "dense"}``
    also picks how constant Gemm/MatMul weights with zeros are stored (any front-end).

    ``quantize="int8"`` quantizes a float model first (docs/int8.md): ``calibration`` gives
    input sets (an .npz path keyed by input name, a dict of arrays with a leading set axis, or
    a list of input sets), ``calibration_method`` "minmax" or "percentile"; ops without an int8
    kernel stay float. ``m.quant_report`` then holds the accuracy change vs float.
    """
    _check_target(target)
    if input_shapes is not None and not isinstance(input_shapes, Mapping):
        if example_inputs is None and _is_torch_module(model):
            # edgec.compile(module, (x,)): example inputs where torch.onnx.export takes them
            example_inputs, input_shapes = input_shapes, None
        else:
            raise EdgecError(
                f"edgec.compile: input_shapes is a {type(input_shapes).__name__}; give a dict "
                f"input name -> shape, e.g. {{'x': (1, 3, 32, 32)}} (a torch module's example "
                f"tensors go in example_inputs=)")
    g = load_graph(model, input_shapes, name, example_inputs, options)
    report = None
    if quantize is not None:
        if quantize != "int8":
            raise EdgecError(f"quantize={quantize!r}: edgec quantizes to 'int8'")
        from edgec.quantize import quantize_graph

        q = quantize_graph(g, calibration, method=calibration_method)
        g, report = q.qdq, q.report
    elif calibration is not None:
        raise EdgecError("calibration= is used with quantize='int8'")
    source = model if example_inputs is None else (model, example_inputs)
    if target == "cuda":
        cu = compile_graph_cuda(g, name=name, state=state, options=options)
        cu.source = source
        return cu
    cm = compile_graph(g, name=name, state=state, options=options)
    cm.quant_report = report
    cm.source = source
    return cm
