"""PyTorch → IR, without an ONNX round trip: the drivers.

* :func:`from_module` traces an ``nn.Module`` with ``torch.fx`` (standard ``torch.nn`` layers and
  recognised library modules stay whole as *leaf* modules, so their structure — state, masks,
  factors — reaches the IR intact) and lowers every FX node;
* :func:`from_exported_program` lowers a ``torch.export`` program (``.pt2`` file) at ATen level.

Both look nodes up in the tables of :mod:`edgec.frontend.pytorch.lowering`, filled by the
handler modules (``nn_modules`` and every ``lib_*``), which are imported on first use.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from typing import Any

from edgec.errors import EdgecError, UnsupportedOpError, ops_hint
from edgec.frontend.pytorch.attr_state import (
    VIEW_OPS,
    StateSpec,
    TraceSnapshot,
    find_state,
    is_inplace,
)
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
    import edgec.frontend.pytorch.nn_math  # noqa: F401  (math and selection handlers)
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
            proxy_buffer_attributes = True  # buffer reads stay in the graph (state, masks)

            def getattr(self, attr: str, attr_val: Any, cache: dict) -> Any:
                # a parameter's shape is static (range(self.A.shape[0]) stays Python)
                self.param_shapes_constant = isinstance(attr_val, torch.nn.Parameter)
                return super().getattr(attr, attr_val, cache)

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


class _StateShape(Exception):
    """A state buffer that ``forward`` broadcasts to a larger shape: lower again with it."""

    def __init__(self, target: str, shape: tuple[int, ...]):
        super().__init__(target)
        self.target, self.shape = target, shape


class _Consts:
    """Torch tensors met while lowering (parameters, buffers, folded values) and where they
    came from, turned into graph constants once each."""

    def __init__(self, lw: TorchLowering):
        self.lw = lw
        self.refs: dict[int, TensorRef] = {}
        self.origin: dict[int, frozenset[str]] = {}
        self.params: dict[str, Any] = {}
        self.keep: list[Any] = []  # keeps ids unique while lowering

    def param(self, name: str, t: Any) -> Any:
        self.params[name] = t
        self.origin[id(t)] = frozenset([name])
        self.keep.append(t)
        return t

    def ref(self, t: Any) -> TensorRef:
        import numpy as np

        ref = self.refs.get(id(t))
        if ref is not None:
            return ref
        a = t.detach().cpu().numpy()
        if t.is_floating_point():
            a = a.astype(np.float32)
        elif t.dtype != _torch().bool:
            a = a.astype(np.int64)
        ref = self.lw.const(a, "param" if id(t) in self.origin else "tensor", a.dtype)
        names = self.origin.get(id(t), frozenset())
        if names and not (len(names) == 1 and self.params.get(next(iter(names))) is t):
            self.lw.folded[ref] = {
                n: self.params[n].detach().cpu().numpy().astype(np.float32) for n in names
            }
        self.refs[id(t)] = ref
        self.keep.append(t)
        return ref

    def to_refs(self, a: Any) -> Any:
        torch = _torch()
        if isinstance(a, torch.Tensor):
            return self.ref(a)
        if isinstance(a, (list, tuple)):
            return type(a)(self.to_refs(x) for x in a)
        if isinstance(a, dict):
            return {k: self.to_refs(v) for k, v in a.items()}
        return a

    def fold(self, fn: Any, args: Any, kwargs: Any, factory: bool = False) -> tuple[bool, Any]:
        """Evaluate ``fn`` with torch when no argument is a run-time tensor (a computation on
        parameters and buffers only, or with ``factory`` a tensor made from Python values
        alone, e.g. an export's ``aten.zeros([1, 2, 5])``): ``(True, value)``, or
        ``(False, None)`` when it cannot."""
        torch = _torch()
        found: list[frozenset[str]] = []

        def conv(a: Any) -> Any:
            if isinstance(a, TensorRef):
                c = self.lw.g.const(a)
                if c is None:
                    raise _RunTime
                t = torch.from_numpy(c.copy())
                found.append(frozenset())
                return t
            if isinstance(a, torch.Tensor):
                found.append(self.origin.get(id(a), frozenset()))
                return a
            if isinstance(a, (list, tuple)):
                return type(a)(conv(x) for x in a)
            if isinstance(a, dict):
                return {k: conv(v) for k, v in a.items()}
            return a

        try:
            targs, tkwargs = conv(args), conv(kwargs)
        except _RunTime:
            return False, None
        if not found and not factory:
            return False, None
        try:
            with torch.no_grad():
                out = fn(*targs, **tkwargs)
        except Exception:
            return False, None
        names = frozenset().union(*found)

        def mark(v: Any) -> None:
            if isinstance(v, torch.Tensor):
                self.origin[id(v)] = names
                self.keep.append(v)
            elif isinstance(v, (list, tuple)):
                for x in v:
                    mark(x)

        mark(out)
        return True, out


class _RunTime(Exception):
    """An argument known only at run time."""


def _module_of(node: Any) -> str:
    """``module 'block.1' (Inner): `` for a node traced inside a submodule's forward."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, cls = list(stack.values())[-1]
    return f"module '{path}' ({getattr(cls, '__name__', cls)}): "


def _call(node: Any) -> Any:
    if node.op == "call_method":
        return lambda obj, *a, **k: getattr(obj, node.target)(*a, **k)
    return node.target


def _state_value(lw: TorchLowering, name: str, cur: TensorRef, args: tuple, kwargs: dict) -> Any:
    """The new value of a buffer changed in place by ``name`` (``copy_``, ``add_``...)."""
    shape = lw.shape(cur)
    if name == "copy_":
        src = lw.as_tensor(args[1])
        if lw.shape(src) == shape:
            return src
        return lw.add1("Expand", [src, lw.ints(shape)])
    if name in ("zero_", "fill_"):
        import numpy as np

        v = 0.0 if name == "zero_" else float(args[1])
        return lw.const(np.full(shape, v, np.float32), "fill")
    h = FUNCTIONS.get(name) or FUNCTIONS.get(name[:-1])
    if h is None:
        raise UnsupportedOpError(f"{lw.where}: in-place '{name}' on a buffer is not supported")
    return h(lw, (cur, *args[1:]), kwargs)


def _write_in_place(lw: TorchLowering, node: Any, first: Any, env: dict[Any, Value]) -> None:
    """``x.relu_()``, ``torch.sigmoid_(x)``, ``nn.ReLU(inplace=True)(x)``: the FX graph keeps
    reading the node ``x`` afterwards, so ``x`` now stands for the written value. A write
    through a view (or into a tensor a view was taken of before the write) would change
    another tensor too: refused."""
    if not hasattr(first, "users") or not isinstance(env.get(first), TensorRef):
        return
    views = [first] if _is_view(first, env) else []
    # views taken before the write alias the old buffer; those taken after read the new value
    earlier = set()
    for n in node.graph.nodes:
        if n is node:
            break
        earlier.add(n)
    views += [u for u in first.users if u in earlier and _is_view(u, env)]
    if views:
        raise UnsupportedOpError(
            f"{lw.where}: in-place '{_canonical(node.target)}' on '{first.name}', which "
            f"shares memory with a view ('{views[0].name}'); edgec does not follow writes "
            f"through views: use the out-of-place op")
    env[first] = env[node]


def _is_view(node: Any, env: dict[Any, Value]) -> bool:
    """Whether the FX node's value shares memory with another tensor: a view op, or an item
    of what split / chunk / unbind returned (an item of a module's tuple output, e.g. an
    nn.GRU's sequence, is a tensor of its own)."""
    if getattr(node, "op", "") not in ("call_function", "call_method"):
        return False
    name = _canonical(node.target)
    if name != "getitem":
        return name in VIEW_OPS
    src = node.args[0] if node.args else None
    return isinstance(env.get(src), TensorRef) or (
        hasattr(src, "users") and _is_view(src, env))


def _lower_fx(
    lw: TorchLowering,
    gm: Any,
    root: Any,
    placeholders: dict[str, Value],
    params: dict[str, Any],
    state: StateSpec | None = None,
    mutable: dict[str, str] | None = None,
    finals: dict[str, Value] | None = None,
) -> Value:
    """Lower the FX graph ``gm``; ``state`` names the buffers of a traced module that are
    carried state, ``mutable`` the placeholders of an export that are (name → buffer); their
    values at the end of the graph go into ``finals``."""
    import numpy as np

    torch = _torch()
    consts = _Consts(lw)
    state = state or StateSpec()
    targets = state.targets
    current: dict[str, TensorRef] = {}  # state target → its value at this point of forward
    state_in: dict[str, TensorRef] = {}
    alias: dict[Any, str] = {}  # FX node → the state buffer it is as a whole
    env: dict[Any, Value] = {}
    result: Value = None
    for node in gm.graph.nodes:
        lw.where = f"{lw.g.source}: {node.op} '{node.name}'"
        if node.op == "placeholder":
            v = placeholders[node.name]
            if isinstance(v, torch.Tensor):  # a lifted parameter / buffer of an export
                consts.param(str(node.name), v)
            if mutable and node.name in mutable:
                alias[node] = mutable[node.name]
                current[mutable[node.name]] = v
            env[node] = v
        elif node.op == "get_attr":
            if node.target in targets:
                if node.target not in state_in:
                    init = state.init[node.target]
                    shape = state.shapes.get(node.target, init.shape)
                    state_in[node.target] = lw.add_state(
                        node.target, shape, np.broadcast_to(init, shape)
                    )
                    current[node.target] = state_in[node.target]
                alias[node] = node.target
                env[node] = current[node.target]
                continue
            obj = params[node.target] if node.target in params else _get_attr(root, node.target)
            if isinstance(obj, torch.Tensor):
                consts.param(str(node.target), obj)
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
            args = consts.to_refs(_map_arg(node.args, env))
            kwargs = consts.to_refs(_map_arg(node.kwargs, env))
            env[node] = h(lw, mod, node.target, args, kwargs)
            if getattr(mod, "inplace", False) is True and node.args:  # nn.ReLU(inplace=True)
                _write_in_place(lw, node, node.args[0], env)
        elif node.op in ("call_function", "call_method"):
            name = _canonical(node.target)
            lw.where = f"{lw.g.source}: {node.op} {name} ('{node.name}')"
            args = _map_arg(node.args, env)
            kwargs = _map_arg(node.kwargs, env)
            first = node.args[0] if node.args else None
            if first in alias and is_inplace(name):  # a buffer changed in place
                target = alias[first]
                kw = {k: v for k, v in kwargs.items() if k not in _IGNORED_KWARGS}
                new = _state_value(lw, name, current[target], consts.to_refs(tuple(args)), kw)
                alias[node] = target
                current[target] = new
                for n in alias:  # every read of the buffer now sees the new value
                    if alias[n] == target:
                        env[n] = new
                continue
            if node.target is operator.getitem and not isinstance(args[0], TensorRef) and not (
                isinstance(args[0], torch.Tensor)
            ):
                env[node] = args[0][args[1]]
                continue
            random = any(r in name for r in _RANDOM)  # a fresh draw per call: never a constant
            ok, value = (False, None) if random else consts.fold(
                _call(node), args, kwargs, factory=name in _FACTORIES)
            if ok:  # parameters and buffers only: evaluated by torch itself
                env[node] = value
                continue
            kwargs = {k: v for k, v in kwargs.items() if k not in _IGNORED_KWARGS}
            h = FUNCTIONS.get(name)
            if h is None:
                raise UnsupportedOpError(
                    f"{lw.g.source}: {_module_of(node)}torch op '{name}' (node '{node.name}') "
                    f"is not supported; {ops_hint('torch')}"
                )
            env[node] = h(lw, consts.to_refs(tuple(args)), consts.to_refs(kwargs))
            if is_inplace(name) and first is not None:
                _write_in_place(lw, node, first, env)
        elif node.op == "output":
            result = consts.to_refs(_map_arg(node.args[0], env))
    for target in sorted(targets):
        if target not in state_in:  # written, never read: nothing to carry
            continue
        new = env[state.rebound[target]] if target in state.rebound else current[target]
        new = lw.as_tensor(consts.to_refs(new))
        have, want = lw.shape(state_in[target]), lw.shape(new)
        if have != want:
            try:
                grown = tuple(np.broadcast_shapes(have, want))
            except ValueError:
                grown = None
            if grown == want and target not in state.shapes:
                raise _StateShape(target, want)
            raise EdgecError(
                f"{lw.g.source}: forward changes the shape of attribute '{target}' from "
                f"{list(have)} to {list(want)}; edgec carries state of one fixed shape"
            )
        lw.set_state(state_in[target], new)
    if finals is not None:
        finals.update(current)
    return result


#: tensors made from Python values alone (shapes are static): evaluated at compile time
_FACTORIES = frozenset({"zeros", "ones", "full", "arange", "eye", "linspace", "scalar_tensor",
                        "tensor", "as_tensor", "empty", "new_zeros", "new_ones", "new_full"})
_RANDOM = ("rand", "normal", "bernoulli", "multinomial", "poisson", "uniform", "exponential")
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
    for t in g.runtime_tensors():  # masks (bool) and indices (int64) live in float buffers
        if g.tensor(t).dtype not in ("float32", "bool", "int64") and g.const(t) is None:
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
    snap = TraceSnapshot(module, cls)
    try:
        with snap:
            tracer = _LeafTracer.make()
            graph = tracer.trace(module)
            gm = torch.fx.GraphModule(tracer.root, graph)
    except EdgecError:
        raise
    except Exception as exc:
        raise EdgecError(
            f"{cls}: torch.fx cannot trace this module ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}{_user_line(exc)}); export it "
            f"with torch.export and compile the .pt2, or to ONNX"
        ) from None
    state = find_state(gm, snap)
    ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(ph) != len(examples):
        raise EdgecError(
            f"{cls}: forward takes {len(ph)} inputs, example_inputs has {len(examples)}"
        )
    for _ in range(len(state.targets) + 1):
        try:
            lw = TorchLowering(name or cls.lower(), f"{cls}", options)
            placeholders = {  # named as forward() names them
                n.name: _example_value(lw, str(n.target).lstrip("*") or n.name, ex)
                for n, ex in zip(ph, examples, strict=True)
            }
            result = _lower_fx(lw, gm, module, placeholders, {}, state)
            return _finish(lw, result)
        except _StateShape as grow:
            state.shapes[grow.target] = grow.shape
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"{exc}{_other_route(module, examples)}") from None
    raise EdgecError(f"{cls}: cannot settle the shapes of the state buffers")  # pragma: no cover


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Silence file descriptors 1 and 2 (C++ code writes there, past sys.stdout/stderr)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, old in ((1, saved[0]), (2, saved[1])):
            os.dup2(old, fd)
            os.close(old)


def _other_route(module: Any, examples: list[Any]) -> str:
    """Where a module the traced route cannot lower can go instead, tried here: its
    ``torch.export`` program (as exported, then decomposed to core ATen), then ONNX."""
    import copy
    import io
    import logging
    import warnings

    torch = _torch()
    saved = copy.deepcopy(module.state_dict(keep_vars=False))
    log = logging.getLogger("torch")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ep = torch.export.export(module, tuple(examples))
            except Exception:
                ep = None
            if ep is not None:  # (decomposed to core ATen when needed)
                try:
                    from_exported_program(ep)
                except Exception:
                    pass
                else:
                    return ("; the torch.export route lowers it: edgec.compile("
                            "torch.export.export(model, example_inputs)) (or torch.export.save "
                            "it and compile the .pt2)")
            try:
                import onnx

                from edgec.frontend.onnx_import import from_model_proto

                buf = io.BytesIO()
                with _quiet_output():  # the exporter prints its IR on failure
                    torch.onnx.export(module, tuple(examples), buf, dynamo=False)
                from_model_proto(onnx.load_from_string(buf.getvalue()))
            except Exception:
                return "; the torch.export and ONNX routes do not lower it either"
            return ("; the ONNX route lowers it: torch.onnx.export(model, example_inputs, "
                    "'model.onnx', dynamo=False), then compile model.onnx")
    finally:
        log.setLevel(level)
        module.load_state_dict(saved)


def _user_line(exc: BaseException) -> str:
    """`` at file:line `code` ``: the last line of the model's own code the error went
    through (not torch's)."""
    import linecache
    import os

    import torch

    torch_dir = os.path.dirname(torch.__file__)
    found = ""
    tb = exc.__traceback__
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename
        if not fname.startswith(torch_dir) and not fname.startswith(os.path.dirname(__file__)):
            code = linecache.getline(fname, tb.tb_lineno).strip()
            if code:
                found = f" at {os.path.basename(fname)}:{tb.tb_lineno} `{code}`"
        tb = tb.tb_next
    return found


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


def from_exported_program(
    ep: Any, name: str = "model", source: str = "model.pt2", options: dict[str, Any] | None = None
) -> Graph:
    """Lower a ``torch.export.ExportedProgram`` (ATen level). A program with an op edgec has
    no rule for (an export keeps ``aten.gru``, ``aten.lstm``, ``aten.pad``... whole) is
    decomposed to core ATen and lowered again; the first error stands if that fails too."""
    try:
        return _lower_exported(ep, name, source, options)
    except UnsupportedOpError as exc:
        first = exc
    try:
        decomposed = ep.run_decompositions()
    except Exception:
        raise first from None
    try:
        return _lower_exported(decomposed, name, source, options)
    except EdgecError:
        raise first from None


def _lower_exported(
    ep: Any, name: str, source: str, options: dict[str, Any] | None
) -> Graph:
    _ensure_handlers()
    lw = TorchLowering(name, source, options)
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    params: dict[str, Any] = {}
    placeholders: dict[str, Value] = {}
    lifted = {}
    lifted.update(getattr(sig, "inputs_to_parameters", {}) or {})
    lifted.update(getattr(sig, "inputs_to_buffers", {}) or {})
    lifted.update(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    mutated = set((getattr(sig, "buffers_to_mutate", {}) or {}).values())
    buffer_of = dict(getattr(sig, "inputs_to_buffers", {}) or {})
    in_graph = set()  # buffers changed in place inside the graph (copy_ in a training IR)
    for node in ep.graph_module.graph.nodes:
        first = node.args[0] if node.op == "call_function" and node.args else None
        if getattr(first, "op", "") == "placeholder" and first.name in buffer_of:
            if is_inplace(_canonical(node.target)):
                in_graph.add(buffer_of[first.name])
    mutated |= in_graph
    state_in: dict[str, TensorRef] = {}  # buffer forward updates → its state input
    for node in ep.graph_module.graph.nodes:
        if node.op != "placeholder":
            continue
        if node.name in lifted and lifted[node.name] in mutated:
            buf = state[lifted[node.name]]
            if not buf.is_floating_point():
                raise EdgecError(
                    f"{source}: forward updates buffer '{lifted[node.name]}' ({buf.dtype}); "
                    f"edgec carries float32 state only"
                )
            init = buf.detach().cpu().numpy().astype("float32")
            ref = lw.add_state(lifted[node.name], init.shape, init)
            placeholders[node.name] = state_in[lifted[node.name]] = ref
            continue
        if node.name in lifted:
            placeholders[node.name] = state[lifted[node.name]]
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
    mutable = {n: lifted[n] for n in lifted if lifted[n] in state_in}
    finals: dict[str, Value] = {}
    result = _lower_fx(
        lw, ep.graph_module, ep.graph_module, placeholders, params, None, mutable, finals
    )
    for target in sorted(in_graph):
        _set_buffer_state(lw, source, state_in[target], target, finals[target])
    if isinstance(result, (list, tuple)):
        specs = list(getattr(sig, "output_specs", []) or [])
        if len(specs) == len(result):
            user = []
            for spec, v in zip(specs, result, strict=True):
                target = getattr(spec, "target", None)
                if target in state_in:
                    _set_buffer_state(lw, source, state_in[target], target, v)
                elif getattr(spec.kind, "name", "") == "USER_OUTPUT":
                    user.append(v)
                else:
                    raise EdgecError(
                        f"{source}: the program updates '{target}' ({spec.kind.name}); edgec "
                        f"carries buffers only"
                    )
            result = tuple(user)
        else:
            n_user = len(getattr(sig, "user_outputs", result))
            result = tuple(result)[-n_user:] if n_user else result
    return _finish(lw, result)


def _set_buffer_state(
    lw: TorchLowering, source: str, state_in: TensorRef, target: str, v: Value
) -> None:
    new = lw.as_tensor(v)
    if lw.shape(new) != lw.shape(state_in):
        raise EdgecError(
            f"{source}: forward changes the shape of buffer '{target}' from "
            f"{list(lw.shape(state_in))} to {list(lw.shape(new))}"
        )
    lw.set_state(state_in, new)


class _KeepErrors:
    """A logging handler that keeps the exceptions of the records it sees."""

    level = 0

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def handle(self, record: Any) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])
        return True


def load_pt2(path: str, name: str | None = None, options: dict[str, Any] | None = None) -> Graph:
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
    return from_exported_program(ep, name or p.stem.lower(), str(p), options)
