"""Liquid-state machines: ``edgec.nn.lsm.Reservoir`` and ``edgec.nn.lsm.LSMClassifier``.

The reservoir becomes one ``LsmReservoir`` node that carries the generator's parameters (seed,
sizes, densities, scales), never its weights; option ``lsm`` (``regen``, ``ram`` or ``flash``,
default ``flash``) picks how the C gets its synapses (see :mod:`edgec.ops.lsm`).

* ``Reservoir`` (``x [T, n_in]`` or ``[n_in]``) compiles to a stateful model: ``mem`` and the
  last spikes are carried by ``<name>_step``; ``reset`` puts the neurons at rest, like
  ``Reservoir.reset()``.
* ``LSMClassifier`` (``x [T, n_in]``) runs the window from rest, takes the firing rates and lowers
  the readout (``nn.Linear`` or an ``nn.Sequential`` of supported modules) with the standard rules.
"""

from __future__ import annotations

from typing import Any

from edgec.errors import EdgecError
from edgec.frontend.pytorch.lowering import (
    TensorRef,
    TorchLowering,
    find_module_handler,
    module_handler,
    qualname,
)
from edgec.ops.lsm import LSM_MODES

#: compile options this module reads (collected by :func:`edgec.api.known_options`)
OPTIONS = {"lsm": "flash | ram | regen: where a reservoir's random weights live"}


def lsm_mode(lw: TorchLowering) -> str:
    mode = str(lw.options.get("lsm", "flash")).lower()
    if mode not in LSM_MODES:
        raise EdgecError(f"option lsm={mode!r}: expected one of {', '.join(LSM_MODES)}")
    return mode


def _window(lw: TorchLowering, res: Any, args: tuple, kwargs: dict) -> tuple[TensorRef, bool]:
    """The input as ``[T, n_in]`` (and whether it was one tick ``[n_in]``)."""
    if len(args) != 1 or kwargs or not isinstance(args[0], TensorRef):
        raise lw.unsupported("a reservoir takes one input tensor x [T, n_in]")
    x = args[0]
    shape = lw.shape(x)
    if shape == (res.n_in,):
        return lw.add1("Reshape", [x, lw.ints([1, res.n_in])], base="lsm_x"), True
    if len(shape) != 2 or shape[1] != res.n_in:
        raise lw.unsupported(
            f"input {list(shape)}: supported [T, {res.n_in}] (one window, time first) or "
            f"[{res.n_in}] (one tick); run batches one window at a time"
        )
    return x, False


def _node_inputs(lw: TorchLowering, res: Any, x: str, state: list[str], base: str) -> list[str]:
    ins = [x, *state]
    if res.has_bias:
        while len(ins) < 3:
            ins.append("")
        ins.append(lw.const(res.bias.detach().cpu().numpy(), f"{base}_bias"))
    return ins


def _attrs(res: Any, mode: str, output: str) -> dict[str, Any]:
    attrs = res.spec.attrs()
    attrs.update({"mode": mode, "output": output})
    return attrs


@module_handler("edgec.nn.lsm.Reservoir")
def _reservoir(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    mode = lsm_mode(lw)
    x, one_tick = _window(lw, m, args, kwargs)
    base = path or "reservoir"
    mem = lw.add_state(f"{base}_mem", (m.n_res,))
    spk = lw.add_state(f"{base}_spk", (m.n_res,))
    spikes, mem_next, spk_next = lw.add(
        "LsmReservoir", _node_inputs(lw, m, x, [mem, spk], base), _attrs(m, mode, "spikes"), 3,
        base=base,
    )
    lw.set_state(mem, mem_next)
    lw.set_state(spk, spk_next)
    if one_tick:
        return lw.add1("Reshape", [spikes, lw.ints([m.n_res])], base=f"{base}_spikes")
    return spikes


def _lower_readout(lw: TorchLowering, mod: Any, path: str, v: TensorRef) -> TensorRef:
    children = list(mod.named_children()) if type(mod).__name__ == "Sequential" else []
    if children and find_module_handler(mod) is None:
        for name, child in children:
            v = _lower_readout(lw, child, f"{path}.{name}", v)
        return v
    h = find_module_handler(mod)
    if h is None:
        raise lw.unsupported(
            f"readout module '{path}' ({qualname(type(mod))}) is not supported; use nn.Linear "
            f"or an nn.Sequential of supported modules (Linear, ReLU, Tanh, ...)"
        )
    return h(lw, mod, path, (v,), {})


@module_handler("edgec.nn.lsm.LSMClassifier")
def _classifier(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    mode = lsm_mode(lw)
    res = m.reservoir
    x, one_tick = _window(lw, res, args, kwargs)
    if one_tick:
        raise lw.unsupported("LSMClassifier needs a window x [T, n_in]")
    base = f"{path}.reservoir" if path else "reservoir"
    rate = lw.add(
        "LsmReservoir", _node_inputs(lw, res, x, [], base), _attrs(res, mode, "rate"), 1,
        base=base,
    )[0]
    return _lower_readout(lw, m.readout, f"{path}.readout" if path else "readout", rate)
