"""PyTorch → IR, without an ONNX round trip: the drivers.

* :func:`from_module` traces an ``nn.Module`` with ``torch.fx`` (standard ``torch.nn`` layers and
  recognised library modules stay whole as *leaf* modules, so their structure — state, masks,
  factors — reaches the IR intact) and lowers every FX node;
* :func:`from_exported_program` lowers a ``torch.export`` program (``.pt2`` file) at ATen level.

Both look nodes up in the tables of :mod:`edgec.frontend.pytorch.lowering`, filled by the
handler modules (``nn_modules`` and every ``lib_*``), which are imported on first use.
"""

from __future__ import annotations

import operator
from typing import Any

from edgec.errors import EdgecError, UnsupportedOpError, ops_hint
from edgec.frontend.pytorch.lowering import (
    FUNCTIONS,
    TensorRef,
    TorchLowering,
    Value,
    find_module_handler,
    qualname,
)
from edgec.ir import Graph

# --- FX / export driving ------------------------------------------------------------------------


def _torch():
    try:
        import torch
        import torch.fx
    except ImportError:  # pragma: no cover
        raise EdgecError(
            "compiling PyTorch modules needs torch: pip install torch==2.13.0"
        ) from None
    return torch


def _ensure_handlers() -> None:
    """Import the standard handlers and every library-family module ``lib_*.py``."""
    import importlib
    import pkgutil

    import edgec.frontend.pytorch as package
    import edgec.frontend.pytorch.nn_modules  # noqa: F401  (registers the standard handlers)

    for mod in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        if mod.startswith("lib_"):
            importlib.import_module(f"{package.__name__}.{mod}")


def _canonical(target: Any) -> str:
    if isinstance(target, str):
        return target
    schema = getattr(target, "_schema", None)
    if schema is not None:  # an ATen OpOverload / OpOverloadPacket
        return schema.name.split("::", 1)[-1]
    name = getattr(target, "__name__", None) or str(target)
    return name.lstrip("_") if name.startswith("__") and name.endswith("__") else name


class _LeafTracer:  # created lazily so importing edgec does not import torch
    @staticmethod
    def make():
        torch = _torch()

        class Tracer(torch.fx.Tracer):
            def is_leaf_module(self, m: Any, qualified_name: str) -> bool:
                if find_module_handler(m) is not None:
                    return True
                return super().is_leaf_module(m, qualified_name)

        return Tracer()


def _map_arg(a: Any, env: dict) -> Any:
    torch = _torch()
    if isinstance(a, torch.fx.Node):
        return env[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_map_arg(x, env) for x in a)
    if isinstance(a, dict):
        return {k: _map_arg(v, env) for k, v in a.items()}
    return a


def _lower_fx(
    lw: TorchLowering, gm: Any, root: Any, placeholders: dict[str, Value], params: dict[str, Any]
) -> Value:
    torch = _torch()
    env: dict[Any, Value] = {}
    result: Value = None
    for node in gm.graph.nodes:
        lw.where = f"{lw.g.source}: {node.op} '{node.name}'"
        if node.op == "placeholder":
            env[node] = placeholders[node.name]
        elif node.op == "get_attr":
            obj = params[node.target] if node.target in params else _get_attr(root, node.target)
            env[node] = obj
        elif node.op == "call_module":
            mod = root.get_submodule(node.target)
            h = find_module_handler(mod)
            lw.where = f"{lw.g.source}: module '{node.target}' ({type(mod).__name__})"
            if h is None:
                raise UnsupportedOpError(
                    f"{lw.where}: module {qualname(type(mod))} is not supported; "
                    f"{ops_hint('torch')}"
                )
            args = _map_arg(node.args, env)
            kwargs = _map_arg(node.kwargs, env)
            env[node] = h(lw, mod, node.target, args, kwargs)
        elif node.op in ("call_function", "call_method"):
            name = _canonical(node.target)
            lw.where = f"{lw.g.source}: {node.op} {name} ('{node.name}')"
            args = _map_arg(node.args, env)
            kwargs = _map_arg(node.kwargs, env)
            kwargs = {k: v for k, v in kwargs.items() if k not in _IGNORED_KWARGS}
            if node.target is operator.getitem and not isinstance(args[0], TensorRef):
                env[node] = args[0][args[1]]
                continue
            h = FUNCTIONS.get(name)
            if h is None:
                raise UnsupportedOpError(
                    f"{lw.where}: torch op '{name}' is not supported; {ops_hint('torch')}"
                )
            env[node] = h(lw, tuple(args), kwargs)
        elif node.op == "output":
            result = _map_arg(node.args[0], env)
    del torch
    return result


_IGNORED_KWARGS = {"memory_format", "layout", "device", "pin_memory", "dtype"}


def _get_attr(root: Any, target: str) -> Any:
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _flatten_outputs(v: Value) -> list[Value]:
    if isinstance(v, (list, tuple)):
        out: list[Value] = []
        for x in v:
            out.extend(_flatten_outputs(x))
        return out
    return [v]


#: edgec ops of spiking neurons: output 0 is the spike train, the others membrane/currents
_NEURON_OPS = {"SnnLeaky", "SnnSynaptic", "NorseLIF", "LIF"}


def _finish(lw: TorchLowering, result: Value) -> Graph:
    g = lw.g
    state_outs = list(g.outputs)
    state_of = {s_out: s_in for s_in, s_out in g.state}
    outs: list[str] = []
    copies: dict[str, str] = {}  # a result that copies a state output → that state's input
    copied: dict[str, str] = {}  # such a result → the state output it copies
    for v in _flatten_outputs(result):
        t = lw.as_tensor(v)
        if t in outs or t in g.inputs or g.const(t) is not None or t in state_outs:
            src = t
            t = lw.add1("Identity", [t], base="output")
            if src in state_outs and src in state_of:
                copies[t] = state_of[src]
                copied[t] = src
        outs.append(t)
    # spiking layers that return both their spikes and their membrane: spk, mem
    producers = g.producers()

    def neuron_output(t: str) -> int | None:
        node = producers.get(copied.get(t, t))
        if node is None or node.op not in _NEURON_OPS:
            return None
        return node.outputs.index(copied.get(t, t))

    spikes = [t for t in outs if t not in state_of and neuron_output(t) == 0]
    membranes = [t for t in outs if t not in state_of and (neuron_output(t) or 0) > 0]
    # readable C parameter names, from the module's own names: <state>_next for a new state
    # (a result that is one, e.g. ncps CfC's h, too), <state>_out for a result that copies one
    # (snnTorch output=True's mem), spk and mem for a spiking layer's spikes and membrane when
    # the module returns both, y (or y0, y1, ...) for the other results
    renamed: dict[str, str] = {}
    plain = []
    for t in outs:
        if spikes and membranes and (t in spikes or t in membranes):
            renamed[t] = "spk" if t in spikes else "mem"
        elif t in state_of:
            renamed[t] = f"{state_of[t]}_next"
        elif t in copies:
            renamed[t] = f"{copies[t]}_out"
        else:
            plain.append(t)
    names = ["y"] if len(plain) == 1 else [f"y{i}" for i in range(len(plain))]
    renamed.update(zip(plain, names, strict=True))
    for s_in, s_out in g.state:
        renamed.setdefault(s_out, f"{s_in}_next")
    done: dict[str, str] = {}
    for old, new in renamed.items():
        if old in g.inputs or old not in g.tensors:
            continue
        if new in g.tensors:
            new = g.fresh_name(new)  # two results named after one state: z_out, z_out_1
        g.rename(old, new)
        done[old] = new
    outs = [done.get(t, t) for t in outs]
    state_outs = [done.get(t, t) for t in state_outs]
    g.outputs = outs + state_outs
    g.state_init = dict(lw.state_init)
    for t in g.runtime_tensors():  # run-time masks (bool) live in float buffers
        if g.tensor(t).dtype not in ("float32", "bool") and g.const(t) is None:
            raise EdgecError(
                f"{g.source}: tensor '{t}' is {g.tensor(t).dtype} at run time; "
                f"edgec compiles float32 models"
            )
    return g


def _forward_params(module: Any) -> list[str]:
    """Names of ``module.forward``'s positional parameters (for readable C input names)."""
    import inspect

    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _example_list(example_inputs: Any) -> list[Any]:
    torch = _torch()
    if isinstance(example_inputs, torch.Tensor):
        return [example_inputs]
    return list(example_inputs)


def from_module(
    module: Any, example_inputs: Any, name: str | None = None, options: dict[str, Any] | None = None
) -> Graph:
    """Lower ``module(*example_inputs)``; tensors in ``example_inputs`` fix the input shapes."""
    torch = _torch()
    _ensure_handlers()
    examples = _example_list(example_inputs)
    cls = type(module).__name__
    lw = TorchLowering(name or cls.lower(), f"{cls}", options)
    module = module.eval()
    h = find_module_handler(module)
    placeholders: dict[str, Value] = {}
    if h is not None:  # the whole module is one recognised library module
        params = _forward_params(module)
        args = []
        for i, ex in enumerate(examples):
            pname = params[i] if i < len(params) else (f"x{i}" if i else "x")
            args.append(_example_value(lw, pname, ex))
        lw.where = f"{cls}: module '' ({cls})"
        result = h(lw, module, "", tuple(args), {})
        return _finish(lw, result)
    try:
        tracer = _LeafTracer.make()
        graph = tracer.trace(module)
        gm = torch.fx.GraphModule(tracer.root, graph)
    except Exception as exc:
        raise EdgecError(
            f"{cls}: torch.fx cannot trace this module ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); export it with "
            f"torch.export and compile the .pt2, or to ONNX"
        ) from None
    ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(ph) != len(examples):
        raise EdgecError(
            f"{cls}: forward takes {len(ph)} inputs, example_inputs has {len(examples)}"
        )
    for n, ex in zip(ph, examples, strict=True):  # named as forward() names them
        placeholders[n.name] = _example_value(lw, str(n.target).lstrip("*") or n.name, ex)
    result = _lower_fx(lw, gm, module, placeholders, {})
    return _finish(lw, result)


def _example_value(lw: TorchLowering, name: str, ex: Any) -> Value:
    torch = _torch()
    if isinstance(ex, torch.Tensor):
        if not ex.is_floating_point():
            raise EdgecError(
                f"{lw.g.source}: input '{name}' is {ex.dtype}; edgec compiles float32 models"
            )
        return lw.input(name, tuple(ex.shape))
    if isinstance(ex, (tuple, list)):
        items = [_example_value(lw, f"{name}_{i}", e) for i, e in enumerate(ex)]
        return type(ex)(*items) if hasattr(ex, "_fields") else type(ex)(items)  # NamedTuple
    if ex is None or isinstance(ex, (int, float, bool)):
        return ex
    raise EdgecError(
        f"{lw.g.source}: example input '{name}' is a {type(ex).__name__}; pass tensors"
    )


def from_exported_program(ep: Any, name: str = "model", source: str = "model.pt2") -> Graph:
    """Lower a ``torch.export.ExportedProgram`` (ATen level)."""
    _ensure_handlers()
    lw = TorchLowering(name, source)
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    params: dict[str, Any] = {}
    placeholders: dict[str, Value] = {}
    lifted = {}
    lifted.update(getattr(sig, "inputs_to_parameters", {}) or {})
    lifted.update(getattr(sig, "inputs_to_buffers", {}) or {})
    lifted.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    for node in ep.graph_module.graph.nodes:
        if node.op != "placeholder":
            continue
        if node.name in lifted:
            placeholders[node.name] = lw.as_tensor(state[lifted[node.name]])
            continue
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise EdgecError(f"{source}: input '{node.name}' has no tensor example in the program")
        shape = []
        for d in val.shape:
            try:
                shape.append(int(d))
            except TypeError:
                raise EdgecError(
                    f"{source}: input '{node.name}' has a dynamic dimension ({d}); "
                    f"export with static shapes"
                ) from None
        if not val.is_floating_point():
            raise EdgecError(
                f"{source}: input '{node.name}' is {val.dtype}; edgec compiles float32"
            )
        placeholders[node.name] = lw.input(node.name, shape)
    result = _lower_fx(lw, ep.graph_module, ep.graph_module, placeholders, params)
    if isinstance(result, (list, tuple)):
        n_user = len(getattr(sig, "user_outputs", result))
        result = tuple(result)[-n_user:] if n_user else result
    return _finish(lw, result)


class _KeepErrors:
    """A logging handler that keeps the exceptions of the records it sees."""

    level = 0

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def handle(self, record: Any) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])
        return True


def load_pt2(path: str, name: str | None = None) -> Graph:
    from pathlib import Path

    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise EdgecError(f"{p}: no such file")
    import logging
    import zipfile

    if not zipfile.is_zipfile(p):
        raise EdgecError(
            f"{p}: not a torch.export program (.pt2): not a zip archive (truncated or corrupt?)"
        )
    _ = torch.export.load  # importing torch.export sets up the logger redirected below
    log = logging.getLogger("torch.export")
    keep = _KeepErrors()
    propagate, handlers = log.propagate, log.handlers
    log.handlers = [keep]  # type: ignore[list-item]
    log.propagate = False  # torch logs its own traceback before raising: keep it to ourselves
    try:
        ep = torch.export.load(str(p))
    except Exception as exc:
        cause = keep.errors[-1] if keep.errors else exc
        text = str(cause).strip().splitlines()
        raise EdgecError(
            f"{p}: not a torch.export program (.pt2): {text[0] if text else type(cause).__name__}"
        ) from None
    finally:
        log.handlers = handlers
        log.propagate = propagate
    return from_exported_program(ep, name or p.stem.lower(), str(p))
