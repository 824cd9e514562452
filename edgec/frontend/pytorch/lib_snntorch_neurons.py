"""snnTorch's other neurons: ``RLeaky``, ``RSynaptic`` (recurrent: ``all_to_all`` linear or
convolution, or one-to-one ``V``), ``Alpha`` and ``Lapicque``, composed from element-wise ops.

Each update is written with snnTorch's own float32 operations in snnTorch's order (the reset
``R = H(mem - θ)`` of the previous membrane, the state function, then ``spk = H(mem - θ)``;
constants snnTorch derives from its parameters, e.g. Alpha's ``τ_α`` or Lapicque's
``1 / (R C)``, are computed by torch itself), so the spike trains are snnTorch's. As for
``Leaky``: called without state (``init_hidden=True``, or the module keeping it between calls)
the state is carried, zero after ``reset``; called with state tensors, they are inputs and the
new state is returned. ``output=True`` returns the states with the spikes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.pytorch.lib_spiking import (
    _base,
    _check_snntorch,
    _clamped,
    _f32,
    _snn_reset,
    _state,
)
from edgec.frontend.pytorch.lowering import TensorRef, TorchLowering, module_handler
from edgec.frontend.pytorch.nn_modules import conv, linear


class _Ops:
    """Element-wise IR nodes named after the neuron."""

    def __init__(self, lw: TorchLowering, base: str):
        self.lw, self.base = lw, base

    def _op(self, op: str, a: TensorRef, b: TensorRef) -> TensorRef:
        return self.lw.add1(op, [a, b], base=self.base)

    def mul(self, a: TensorRef, b: TensorRef) -> TensorRef:
        return self._op("Mul", a, b)

    def add(self, a: TensorRef, b: TensorRef) -> TensorRef:
        return self._op("Add", a, b)

    def sub(self, a: TensorRef, b: TensorRef) -> TensorRef:
        return self._op("Sub", a, b)

    def const(self, v: Any, what: str) -> TensorRef:
        return self.lw.const(_f32(self.lw, v, what), f"{self.base}_{what}")

    def heaviside(self, mem: TensorRef, thr: TensorRef) -> TensorRef:
        """snnTorch's ``fire`` / ``mem_reset``: H(mem - θ) = [mem - θ > 0] as 0.0 / 1.0."""
        d = self.sub(mem, thr)
        zero = self.lw.const(np.float32(0.0), "zero")
        return self.lw.add1("Cast", [self._op("Greater", d, zero)], {"to": 1}, base=self.base)


def _given(args: tuple, kwargs: dict, names: tuple[str, ...]) -> list[Any]:
    """The state arguments after the input, by position or keyword."""
    return [args[i + 1] if len(args) > i + 1 else kwargs.get(n) for i, n in enumerate(names)]


def _states(
    lw: TorchLowering, m: Any, path: str, x: TensorRef, given: list[Any], names: tuple[str, ...]
) -> tuple[str, list[TensorRef], list[bool]]:
    if m.init_hidden and any(g is not None for g in given):
        raise EdgecError(
            f"{lw.where}: {'/'.join(names)} passed to snntorch.{type(m).__name__} with "
            f"init_hidden=True"
        )
    base, shape = _base(path, m), tuple(lw.shape(x))
    ins, carried = [], []
    for g, n in zip(given, names, strict=True):
        t, c = _state(lw, g, x, shape, n, base, zero_if_mismatch=True)
        ins.append(t)
        carried.append(c)
    return base, ins, carried


def _finish(
    lw: TorchLowering, m: Any, spk: TensorRef, ins: list[TensorRef], outs: list[TensorRef],
    carried: list[bool],
) -> Any:
    for i, o, c in zip(ins, outs, carried, strict=True):
        if c:
            lw.set_state(i, o)
    if m.init_hidden and not m.output:
        return spk
    return (spk, *(o for o in outs if o is not spk))  # a recurrent neuron's spk state is spk


def _recurrent(lw: TorchLowering, m: Any, spk: TensorRef, o: _Ops) -> TensorRef:
    """``self.recurrent(spk)``: a Linear, a Conv2d or RecurrentOneToOne's ``spk * V``."""
    import torch

    rec = m.recurrent
    if isinstance(rec, torch.nn.Linear):
        w = _f32(lw, rec.weight, "recurrent weight")
        b = None if rec.bias is None else _f32(lw, rec.bias, "recurrent bias")
        return linear(lw, spk, w, b, f"{o.base}_recurrent")
    if isinstance(rec, torch.nn.Conv2d):
        w = _f32(lw, rec.weight, "recurrent weight")
        b = None if rec.bias is None else _f32(lw, rec.bias, "recurrent bias")
        return conv(lw, spk, w, b, rec.stride, rec.padding, rec.dilation, rec.groups,
                    f"{o.base}_recurrent")
    if hasattr(rec, "V"):
        return o.mul(spk, o.const(rec.V, "V"))
    raise lw.unsupported(f"recurrent connection {type(rec).__name__}")


@module_handler("snntorch._neurons.rleaky.RLeaky")
def _rleaky(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    _check_snntorch(lw, m)
    x = lw.as_tensor(args[0])
    names = ("spk", "mem")
    base, (spk, mem), carried = _states(lw, m, path, x, _given(args, kwargs, names), names)
    o = _Ops(lw, base)
    thr, beta = o.const(m.threshold, "threshold"), o.lw.const(
        _clamped(lw, m.beta, "beta"), f"{base}_beta"
    )
    reset = o.heaviside(mem, thr)
    state = o.add(o.add(o.mul(beta, mem), x), _recurrent(lw, m, spk, o))
    mode = _snn_reset(m)
    if mode == "subtract":
        new = o.sub(state, o.mul(reset, thr))
    elif mode == "zero":
        new = o.sub(state, o.mul(reset, state))
    else:
        new = state
    out = o.heaviside(new, thr)
    if not m.reset_delay and mode != "none":
        do_reset = o.sub(out, reset)
        new = o.sub(new, o.mul(do_reset, thr if mode == "subtract" else new))
    return _finish(lw, m, out, [spk, mem], [out, new], carried)


@module_handler("snntorch._neurons.rsynaptic.RSynaptic")
def _rsynaptic(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    _check_snntorch(lw, m)
    if not m.reset_delay:
        raise lw.unsupported(
            "snntorch.RSynaptic with reset_delay=False (snnTorch's own update reads the "
            "call's state arguments there); supported: reset_delay=True"
        )
    x = lw.as_tensor(args[0])
    names = ("spk", "syn", "mem")
    base, (spk, syn, mem), carried = _states(
        lw, m, path, x, _given(args, kwargs, names), names
    )
    o = _Ops(lw, base)
    thr = o.const(m.threshold, "threshold")
    alpha = lw.const(_clamped(lw, m.alpha, "alpha"), f"{base}_alpha")
    beta = lw.const(_clamped(lw, m.beta, "beta"), f"{base}_beta")
    reset = o.heaviside(mem, thr)
    syn_new = o.add(o.add(o.mul(alpha, syn), x), _recurrent(lw, m, spk, o))
    mem_b = o.add(o.mul(beta, mem), syn_new)
    mode = _snn_reset(m)
    if mode == "subtract":
        mem_new = o.sub(mem_b, o.mul(reset, thr))
    elif mode == "zero":
        mem_new = o.sub(mem_b, o.mul(mem_b, reset))
    else:
        mem_new = mem_b
    out = o.heaviside(mem_new, thr)
    return _finish(lw, m, out, [spk, syn, mem], [out, syn_new, mem_new], carried)


@module_handler("snntorch._neurons.alpha.Alpha")
def _alpha(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    import torch

    _check_snntorch(lw, m)
    x = lw.as_tensor(args[0])
    names = ("syn_exc", "syn_inh", "mem")
    base, (exc, inh, mem), carried = _states(
        lw, m, path, x, _given(args, kwargs, names), names
    )
    o = _Ops(lw, base)
    thr = o.const(m.threshold, "threshold")
    with torch.no_grad():
        a, b = m.alpha.clamp(0, 1), m.beta.clamp(0, 1)
        tau = torch.log(a) / (torch.log(b) - torch.log(a)) + 1  # snnTorch's tau_alpha
    alpha, beta, tau_c = o.const(a, "alpha"), o.const(b, "beta"), o.const(tau, "tau_alpha")
    reset = o.heaviside(mem, thr)

    def state() -> tuple[TensorRef, TensorRef, TensorRef]:
        e = o.add(o.mul(alpha, exc), x)
        i = o.sub(o.mul(beta, inh), x)
        return e, i, o.mul(tau_c, o.add(e, i))

    e, i, v = state()
    mode = _snn_reset(m)
    if mode == "subtract":
        e = o.sub(e, o.mul(thr, reset))
        i = o.sub(i, o.mul(o.sub(o.mul(beta, inh), x), reset))
        v = o.sub(v, o.mul(lw.add1("Neg", [inh], base=base), reset))
    elif mode == "zero":
        e2, i2, v2 = state()
        e, i, v = o.sub(e, o.mul(e2, reset)), o.sub(i, o.mul(i2, reset)), o.sub(v, o.mul(v2, reset))
    out = o.heaviside(v, thr)
    return _finish(lw, m, out, [exc, inh, mem], [e, i, v], carried)


@module_handler("snntorch._neurons.lapicque.Lapicque")
def _lapicque(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    import torch

    _check_snntorch(lw, m)
    x = lw.as_tensor(args[0])
    base, (mem,), carried = _states(lw, m, path, x, _given(args, kwargs, ("mem",)), ("mem",))
    o = _Ops(lw, base)
    thr = o.const(m.threshold, "threshold")
    with torch.no_grad():  # snnTorch's constants, computed as its forward computes them
        r, ts = m.R, m.time_step
        k_in = 1 / (m.R * m.C)
        k_mem = 1 - (m.time_step / (m.R * m.C))
    reset = o.heaviside(mem, thr)

    def state() -> TensorRef:
        drive = o.mul(o.mul(o.mul(x, o.const(r, "R")), o.const(k_in, "k_in")), o.const(ts, "dt"))
        return o.add(drive, o.mul(o.const(k_mem, "k_mem"), mem))

    v = state()
    mode = _snn_reset(m)
    if mode == "subtract":
        v = o.sub(v, o.mul(reset, thr))
    elif mode == "zero":
        v = o.sub(v, o.mul(reset, state()))
    out = o.heaviside(v, thr)
    return _finish(lw, m, out, [mem], [v], carried)
