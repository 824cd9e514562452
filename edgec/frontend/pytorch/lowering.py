"""The lowering core of the PyTorch front-end: :class:`TorchLowering` builds an IR graph node by
node, and the handler tables map modules and functions to lowering rules.

Functions, tensor methods and ATen ops are looked up by their bare name (``relu``, ``linear``,
``view``, ``add``...) in :data:`FUNCTIONS`; modules by qualified class name in :data:`MODULES`
(so optional libraries need not be importable) or by a structural predicate in
:data:`MODULE_MATCHERS`. Handler modules (``nn_modules``, ``lib_*``) register rules with
:func:`module_handler`, :func:`function_handler` and :func:`module_matcher`; they import this
module only, and :mod:`edgec.frontend.pytorch.importer` imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgec.errors import EdgecError, UnsupportedOpError
from edgec.ir import Graph, Node, Tensor
from edgec.ops.interpret import infer_node

Value = Any  # a tensor name (str wrapped in TensorRef), a Python scalar, or a tuple of values
ModuleHandler = Callable[["TorchLowering", Any, str, tuple, dict], Value]
FunctionHandler = Callable[["TorchLowering", tuple, dict], Value]

MODULES: dict[str, ModuleHandler] = {}  # qualified class name → handler
#: (predicate, handler) for user-defined module classes recognised by their structure (e.g. an
#: NCAP swimmer written in the user's own file); consulted after the qualified names
MODULE_MATCHERS: list[tuple[Callable[[Any], bool], ModuleHandler]] = []
FUNCTIONS: dict[str, FunctionHandler] = {}  # bare function / method / ATen name → handler


class TensorRef(str):
    """A run-time or constant tensor of the graph being built (its name)."""


def module_handler(*qualnames: str) -> Callable[[ModuleHandler], ModuleHandler]:
    def deco(fn: ModuleHandler) -> ModuleHandler:
        for q in qualnames:
            MODULES[q] = fn
        return fn

    return deco


def function_handler(*names: str) -> Callable[[FunctionHandler], FunctionHandler]:
    def deco(fn: FunctionHandler) -> FunctionHandler:
        for n in names:
            FUNCTIONS[n] = fn
        return fn

    return deco


def module_matcher(pred: Callable[[Any], bool]) -> Callable[[ModuleHandler], ModuleHandler]:
    def deco(fn: ModuleHandler) -> ModuleHandler:
        MODULE_MATCHERS.append((pred, fn))
        return fn

    return deco


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def find_module_handler(mod: Any) -> ModuleHandler | None:
    for cls in type(mod).__mro__:
        h = MODULES.get(qualname(cls))
        if h is not None:
            return h
    for pred, h in MODULE_MATCHERS:
        if pred(mod):
            return h
    return None


class TorchLowering:
    """Builds an IR graph node by node; shapes are inferred as nodes are added."""

    def __init__(self, name: str, source: str, options: dict[str, Any] | None = None):
        #: compile options that steer structure-aware lowering (e.g. ``phm``, ``lsm``, ``target``)
        self.options: dict[str, Any] = dict(options or {})
        self.g = Graph(name=name, opset=17, source=source)
        self.where = ""  # module path / FX node being lowered, for error messages
        self._count = 0
        self.state_init: dict[str, np.ndarray] = {}
        #: a constant folded from parameters (``W = sum_i kron(A_i, F_i)``, masks, weight norm)
        #: → the parameters it was computed from, by name, so rules can recognise its structure
        self.folded: dict[str, dict[str, np.ndarray]] = {}

    # -- building blocks ------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "t"
        return self.g.fresh_name(base)

    def const(self, data: Any, base: str = "c", dtype: Any = np.float32) -> TensorRef:
        arr = np.asarray(data, dtype=dtype, order="C")
        return TensorRef(self.g.add_const(self.fresh(base), arr))

    def ints(self, values: Sequence[int], base: str = "i") -> TensorRef:
        return self.const(np.asarray(list(values), np.int64), base, np.int64)

    def input(self, name: str, shape: Sequence[int]) -> TensorRef:
        name = self.fresh(name)
        self.g.tensors[name] = Tensor(name, tuple(int(d) for d in shape), "float32")
        self.g.inputs.append(name)
        return TensorRef(name)

    def add(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: dict[str, Any] | None = None,
        n_out: int = 1,
        base: str | None = None,
    ) -> list[TensorRef]:
        self._count += 1
        stem = base or f"{self.where or op}"
        outs = [
            self.fresh(f"{stem}_{op.lower()}" if n_out == 1 else f"{stem}_{op.lower()}{i}")
            for i in range(n_out)
        ]
        for o in outs:  # reserve the names
            self.g.tensors[o] = Tensor(o, (), "float32")
        node = Node(
            op, self.fresh(f"{stem}_{op}_{self._count}"), list(inputs), outs, dict(attrs or {})
        )
        self.g.nodes.append(node)
        try:
            infer_node(self.g, node)
        except EdgecError as exc:
            raise EdgecError(f"{self.where}: {exc}") from None
        return [TensorRef(o) for o in outs]

    def add1(
        self,
        op: str,
        inputs: Sequence[str],
        attrs: dict[str, Any] | None = None,
        base: str | None = None,
    ) -> TensorRef:
        return self.add(op, inputs, attrs, 1, base)[0]

    def shape(self, t: str) -> tuple[int, ...]:
        return self.g.shape(t)

    def as_tensor(self, v: Value, like: str | None = None) -> TensorRef:
        """A Python number or a constant torch tensor → a constant tensor; tensors pass through."""
        if isinstance(v, TensorRef):
            return v
        if isinstance(v, (bool, int, float)):
            return self.const(np.float32(v), "scalar")
        try:
            import torch

            if isinstance(v, torch.Tensor):
                return self.const(v.detach().cpu().numpy().astype(np.float32), "tensor")
        except ImportError:  # pragma: no cover
            pass
        raise self.unsupported(f"cannot use a {type(v).__name__} as a tensor")

    def add_state(
        self, base: str, shape: Sequence[int], init: np.ndarray | None = None
    ) -> TensorRef:
        """A state tensor carried by ``<name>_step``; pair it with :meth:`set_state`."""
        t = self.input(base, shape)
        if init is not None and np.any(init):
            self.state_init[t] = np.asarray(init, np.float32).reshape(tuple(shape))
        return t

    def set_state(self, state_in: str, new_value: str) -> None:
        out = new_value
        if out in self.g.outputs or out in self.g.inputs:
            out = self.add1("Identity", [new_value], base=f"{state_in}_next")
        self.g.outputs.append(out)
        self.g.state.append((state_in, out))

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.where}: {what}")
