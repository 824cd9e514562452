"""State a traced ``forward`` keeps in its module's buffers and tensor attributes.

A hand-written LIF reservoir or filter keeps its membrane in ``register_buffer("v", ...)`` or a
plain tensor attribute and updates it in ``forward``: ``self.v = v``, ``self.v.copy_(v)``,
``self.v.mul_(beta).add_(x)``. Traced as is, ``torch.fx`` would read the buffer once and bake
its first value into the graph. :class:`TraceSnapshot` makes such reads visible and undoes
whatever the trace wrote into the module; :func:`find_state` then names the targets that become
the compiled model's carried state (its initial value is the attribute's value before tracing):

* a buffer / tensor attribute that ``forward`` reads and rebinds (``self.v = expr``);
* a buffer / tensor attribute changed in place as a whole (``self.v.copy_(x)``, ``add_``...).

Mutations that cannot be carried are refused with an error naming the attribute: in-place
writes through a view (``self.v[0] = x``, ``self.v[:, 1].add_(x)``), a tensor assigned to an
attribute that held none before (``self.v = None`` ... ``self.v = zeros``), Python numbers
changed by ``forward`` (``self.count += 1``) and non-float state.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.errors import EdgecError

#: ops that return a view of their first argument (writes through them alias the buffer)
VIEW_OPS = {
    "getitem", "view", "reshape", "select", "slice", "narrow", "t", "transpose", "permute",
    "squeeze", "unsqueeze", "expand", "flatten", "unflatten", "view_as", "expand_as", "as_strided",
    "diagonal", "unbind", "split", "chunk", "T", "mT", "swapaxes", "movedim",
}
_SCALARS = (bool, int, float)


def is_inplace(name: str) -> bool:
    """``add_``, ``copy_``...: a Tensor method or ATen op that writes its first argument."""
    return name.endswith("_") and not name.startswith("_") and name not in ("requires_grad_",)


@dataclass
class StateSpec:
    """The mutable targets found in a traced module."""

    #: get_attr target → its value before tracing (float32)
    init: dict[str, np.ndarray] = field(default_factory=dict)
    #: target → FX node whose value ``forward`` assigns to it (``self.v = expr``)
    rebound: dict[str, Any] = field(default_factory=dict)
    #: targets changed in place as a whole
    inplace: set[str] = field(default_factory=set)
    #: target → state shape, when the written value broadcasts the buffer to a larger shape
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def targets(self) -> set[str]:
        return set(self.rebound) | self.inplace


class TraceSnapshot:
    """Around ``torch.fx`` tracing: tensor attributes become (non-persistent) buffers so that
    the tracer proxies their reads; afterwards every buffer, attribute and number is restored,
    and :meth:`rebound` says which ones ``forward`` assigned."""

    def __init__(self, module: Any, source: str):
        self.module = module
        self.source = source
        self.buffers: list[tuple[Any, str, str, Any]] = []  # (module, path, name, value)
        self.promoted: list[tuple[Any, str]] = []
        self.scalars: list[tuple[Any, str, str, Any]] = []
        self.attrs: list[tuple[Any, str, str, Any]] = []  # other __dict__ entries: None...
        self.assigned: dict[str, Any] = {}  # target → fx node assigned during tracing
        self.errors: list[str] = []

    def __enter__(self) -> TraceSnapshot:
        import torch

        for path, sub in self.module.named_modules():
            d = vars(sub)
            for name, val in list(d.items()):
                if name.startswith("_") or name == "training":
                    continue
                if isinstance(val, torch.Tensor) and not isinstance(val, torch.nn.Parameter):
                    del d[name]
                    sub._buffers[name] = val
                    sub._non_persistent_buffers_set.add(name)
                    self.promoted.append((sub, name))
                elif isinstance(val, _SCALARS):
                    self.scalars.append((sub, path, name, val))
                elif val is None:
                    self.attrs.append((sub, path, name, val))
            for name, val in list(sub._buffers.items()):
                self.buffers.append((sub, path, name, val))
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        fx_proxy = torch.fx.Proxy
        for sub, path, name, val in self.buffers:
            now = sub._buffers.get(name)
            if isinstance(now, fx_proxy):
                self.assigned[_target(path, name)] = now.node
            sub._buffers[name] = val
        for sub, name in self.promoted:
            val = sub._buffers.pop(name)
            sub._non_persistent_buffers_set.discard(name)
            vars(sub)[name] = val
        for sub, path, name, val in self.scalars:
            now = vars(sub).get(name)
            if now is not val and now != val:
                self.errors.append(
                    f"forward changes attribute '{_target(path, name)}' ({type(val).__name__} "
                    f"{val!r} → {now!r}); edgec carries state only in float tensors: keep it "
                    f"in a buffer (register_buffer)"
                )
            vars(sub)[name] = val
        for sub, path, name, val in self.attrs:
            now = vars(sub).get(name)
            if now is not val:
                self.errors.append(
                    f"forward assigns attribute '{_target(path, name)}', which holds None "
                    f"before the first call; initialise it as a tensor buffer "
                    f"(register_buffer('{name}', torch.zeros(...))) so its state can be carried"
                )
                vars(sub)[name] = val
        for path, sub in self.module.named_modules():  # new attributes forward created
            for name, val in list(vars(sub).items()):
                if isinstance(val, fx_proxy):
                    self.errors.append(
                        f"forward assigns a tensor to attribute '{_target(path, name)}', which "
                        f"does not exist before the first call; initialise it as a buffer "
                        f"(register_buffer) so its state can be carried"
                    )
                    del vars(sub)[name]

    def initial(self, target: str) -> Any:
        for _sub, path, name, val in self.buffers:
            if _target(path, name) == target:
                return val
        return None


def _target(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _canon(node: Any) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    if t is operator.getitem:
        return "getitem"
    if t is operator.setitem:
        return "setitem"
    schema = getattr(t, "_schema", None)
    if schema is not None:
        return schema.name.split("::", 1)[-1]
    return getattr(t, "__name__", str(t))


def find_state(gm: Any, snap: TraceSnapshot) -> StateSpec:
    """The buffers / tensor attributes of a traced graph that are carried state."""
    if snap.errors:
        raise EdgecError(f"{snap.source}: {snap.errors[0]}")
    spec = StateSpec()
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    alias: dict[Any, str] = {}  # FX node → the whole buffer it is (get_attr, in-place results)
    view_of: dict[Any, str] = {}  # FX node → the buffer it is a view of
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            alias[n] = n.target
            continue
        if n.op not in ("call_method", "call_function"):
            continue
        name = _canon(n)
        first = n.args[0] if n.args else None
        if name in VIEW_OPS and (first in alias or first in view_of):
            view_of[n] = alias.get(first) or view_of[first]
            continue
        if name == "setitem" and (first in alias or first in view_of):
            target = alias.get(first) or view_of[first]
            raise EdgecError(
                f"{snap.source}: forward writes into part of attribute '{target}' "
                f"(indexed assignment '{n.name}'); edgec carries whole buffers only: compute the "
                f"new value and assign it (self.{target.rsplit('.', 1)[-1]} = ...)"
            )
        if is_inplace(name):
            if first in view_of:
                raise EdgecError(
                    f"{snap.source}: forward changes part of attribute '{view_of[first]}' in "
                    f"place ({name} in '{n.name}'); edgec carries whole buffers only: compute "
                    f"the new value and assign it"
                )
            if first in alias:
                spec.inplace.add(alias[first])
                alias[n] = alias[first]
    for target, node in snap.assigned.items():
        if target in read:
            spec.rebound[target] = node
    for target in spec.targets:
        val = snap.initial(target)
        if val is None:  # a parameter: weights are constants in the compiled model
            raise EdgecError(
                f"{snap.source}: forward changes parameter '{target}'; edgec compiles "
                f"parameters as constants: keep changing values in a buffer (register_buffer)"
            )
        if not val.is_floating_point():
            raise EdgecError(
                f"{snap.source}: forward updates attribute '{target}' ({val.dtype}); edgec "
                f"carries float32 state only"
            )
        spec.init[target] = val.detach().cpu().numpy().astype(np.float32)
    return spec
