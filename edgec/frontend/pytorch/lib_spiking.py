"""Spiking neurons from snnTorch, Norse and ``edgec.nn``, lowered to edgec's neuron ops.

The library modules are recognised by class (none is imported unless a model uses it) and become
one neuron op each (see ``edgec.ops.spiking``), with their parameters as constants (learnable ones
too) and their state carried by ``<name>_step``:

* snnTorch ``Leaky`` / ``Synaptic``: called without ``mem`` (``init_hidden=True``, or the module
  keeping ``self.mem`` between calls) the membrane is state, zero after ``reset``; called with
  ``mem`` (and ``syn``) as tensors, those are inputs and ``run(x, mem)`` returns ``(spk, mem)``.
* Norse ``LIFCell`` / ``LIFRecurrentCell``: called with ``state=None`` the state is carried
  (v starts at ``v_leak``, as Norse's fallback state); called with a state tuple it is an input
  and the new state an output. Norse ``LIF`` (a whole sequence) is unrolled over its time axis.
* ``edgec.nn.LIF`` and ``edgec.nn.LeakyIntegrator``: state inside the module, carried.

Compile option ``spikes``: ``"packed"`` (default: layers fed by spikes are event-driven and the
spikes they read are bit-packed), ``"event"`` (event-driven, float spikes) or ``"dense"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.pytorch.lowering import TensorRef, TorchLowering, module_handler
from edgec.frontend.pytorch.nn_modules import linear

SPIKE_MODES = ("packed", "event", "dense")
#: Norse threshold methods whose forward pass is the Heaviside step
NORSE_METHODS = ("super", "heaviside", "tanh", "triangle", "circ", "heavi_erfc")


def _f32(lw: TorchLowering, v: Any, what: str) -> np.ndarray:
    import torch

    t = torch.as_tensor(v).detach().cpu()
    if t.dim() > 0 and t.dtype != torch.float32:
        raise lw.unsupported(f"{what} is {t.dtype}; edgec compiles float32 parameters")
    return t.to(torch.float32).numpy()


#: compile options this module reads (collected by :func:`edgec.api.known_options`)
OPTIONS = {"spikes": "packed | event | dense: how spike-fed layers read their inputs"}


def _mode(lw: TorchLowering) -> str:
    mode = str(lw.options.get("spikes", "packed"))
    if mode not in SPIKE_MODES:
        raise EdgecError(f"option spikes='{mode}': expected one of {', '.join(SPIKE_MODES)}")
    return mode


def _base(path: str, m: Any) -> str:
    """A C-friendly name from the module's path (``lif1``, ``net_lif``); a path that is a
    Sequential index takes the class name first (``leaky1`` rather than ``1``)."""
    cls = type(m).__name__.lower()
    p = path.replace(".", "_")
    if not p:
        return cls
    return f"{cls}{p}" if p[0].isdigit() else p


def _state(
    lw: TorchLowering, given: Any, x: TensorRef, shape: tuple[int, ...], what: str, base: str,
    init: np.ndarray | None = None, zero_if_mismatch: bool = False,
) -> tuple[TensorRef, bool]:
    """(state tensor, carried?): a new carried state when ``given`` is None, else the input."""
    if given is None:
        full = None if init is None else np.broadcast_to(init, shape).astype(np.float32)
        return lw.add_state(f"{base}_{what}", shape, full), True
    if isinstance(given, TensorRef):
        if lw.shape(given) != shape:
            raise EdgecError(
                f"{lw.where}: state '{what}' has shape {tuple(lw.shape(given))}, "
                f"expected {tuple(shape)} (the shape of the input)"
            )
        return given, False
    arr = _f32(lw, given, what)
    if arr.shape != shape:
        if not zero_if_mismatch:
            raise EdgecError(
                f"{lw.where}: state '{what}' has shape {arr.shape}, expected {tuple(shape)}"
            )
        arr = np.zeros(shape, np.float32)  # snnTorch restarts from zero on a shape mismatch
    return lw.const(arr, f"{base}_{what}0"), False


def _heaviside(fn: Any) -> bool:
    """True when ``fn``'s forward pass is H(x) = [x > 0]."""
    import torch

    probe = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 1.0, 3.0])
    try:
        with torch.no_grad():
            out = fn(probe)
    except Exception:
        return False
    return isinstance(out, torch.Tensor) and torch.equal(out.float(), (probe > 0).float())


# --- snnTorch ------------------------------------------------------------------------------------


def _check_snntorch(lw: TorchLowering, m: Any) -> None:
    name = type(m).__name__
    ok = "supported: inhibition=False, state_quant=False, graded_spikes_factor=1, Heaviside spikes"
    if getattr(m, "inhibition", False):
        raise lw.unsupported(f"snntorch.{name} with inhibition=True ({ok})")
    if getattr(m, "state_quant", False):
        raise lw.unsupported(f"snntorch.{name} with state_quant ({ok})")
    gsf = getattr(m, "graded_spikes_factor", None)
    if gsf is not None and not np.all(_f32(lw, gsf, "graded_spikes_factor") == 1.0):
        raise lw.unsupported(f"snntorch.{name} with graded_spikes_factor != 1 ({ok})")
    if not _heaviside(m.spike_grad):
        raise lw.unsupported(f"snntorch.{name} with a spike function that is not H(x > 0) ({ok})")


def _snn_reset(m: Any) -> str:
    return {0: "subtract", 1: "zero", 2: "none"}[int(m.reset_mechanism_val)]


def _snn_attrs(lw: TorchLowering, m: Any) -> dict[str, Any]:
    return {
        "reset": _snn_reset(m),
        "reset_delay": int(bool(getattr(m, "reset_delay", True))),
        "events": _mode(lw),
    }


def _clamped(lw: TorchLowering, v: Any, what: str) -> np.ndarray:
    import torch

    return _f32(lw, torch.as_tensor(v).detach().clamp(0, 1), what)


@module_handler("snntorch._neurons.leaky.Leaky")
def _snn_leaky(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    _check_snntorch(lw, m)
    x = args[0]
    mem = args[1] if len(args) > 1 else kwargs.get("mem")
    if m.init_hidden and mem is not None:
        raise EdgecError(f"{lw.where}: `mem` passed to snntorch.Leaky with init_hidden=True")
    base, shape = _base(path, m), tuple(lw.shape(x))
    mem_in, carried = _state(lw, mem, x, shape, "mem", base, zero_if_mismatch=True)
    ins = [
        x,
        mem_in,
        lw.const(_clamped(lw, m.beta, "beta"), f"{base}_beta"),
        lw.const(_f32(lw, m.threshold, "threshold"), f"{base}_threshold"),
    ]
    spk, mem_out = lw.add("SnnLeaky", ins, _snn_attrs(lw, m), 2, base)
    if carried:
        lw.set_state(mem_in, mem_out)
    if m.init_hidden and not m.output:
        return spk
    return spk, mem_out


@module_handler("snntorch._neurons.synaptic.Synaptic")
def _snn_synaptic(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    _check_snntorch(lw, m)
    x = args[0]
    syn = args[1] if len(args) > 1 else kwargs.get("syn")
    mem = args[2] if len(args) > 2 else kwargs.get("mem")
    if m.init_hidden and (mem is not None or syn is not None):
        raise EdgecError(
            f"{lw.where}: `syn`/`mem` passed to snntorch.Synaptic with init_hidden=True"
        )
    base, shape = _base(path, m), tuple(lw.shape(x))
    syn_in, syn_carried = _state(lw, syn, x, shape, "syn", base, zero_if_mismatch=True)
    mem_in, mem_carried = _state(lw, mem, x, shape, "mem", base, zero_if_mismatch=True)
    ins = [
        x,
        syn_in,
        mem_in,
        lw.const(_clamped(lw, m.alpha, "alpha"), f"{base}_alpha"),
        lw.const(_clamped(lw, m.beta, "beta"), f"{base}_beta"),
        lw.const(_f32(lw, m.threshold, "threshold"), f"{base}_threshold"),
    ]
    spk, syn_out, mem_out = lw.add("SnnSynaptic", ins, _snn_attrs(lw, m), 3, base)
    if syn_carried:
        lw.set_state(syn_in, syn_out)
    if mem_carried:
        lw.set_state(mem_in, mem_out)
    if m.init_hidden and not m.output:
        return spk
    return spk, syn_out, mem_out


# --- Norse ---------------------------------------------------------------------------------------


def _norse_consts(lw: TorchLowering, m: Any, base: str) -> list[TensorRef]:
    import torch

    p = m.p
    if p.method not in NORSE_METHODS:
        raise lw.unsupported(
            f"Norse threshold method '{p.method}' (supported: {', '.join(NORSE_METHODS)})"
        )
    from norse.torch.functional.threshold import threshold

    if not _heaviside(lambda v: threshold(v, p.method, p.alpha)):
        raise lw.unsupported(f"Norse threshold method '{p.method}' is not H(x > 0) forward")
    # the same tensor expressions Norse evaluates, so the constants round identically
    c_mem = m.dt * torch.as_tensor(p.tau_mem_inv)
    c_syn = -m.dt * torch.as_tensor(p.tau_syn_inv)
    vals = [
        ("c_mem", c_mem),
        ("c_syn", c_syn),
        ("v_leak", p.v_leak),
        ("v_th", p.v_th),
        ("v_reset", p.v_reset),
    ]
    return [lw.const(_f32(lw, v, k), f"{base}_{k}") for k, v in vals]


def _norse_state(state: Any, field: str, pos: int) -> Any:
    if state is None:
        return None
    return getattr(state, field) if hasattr(state, field) else state[pos]


def _lif_cell(
    lw: TorchLowering, m: Any, base: str, x: TensorRef, state: Any, shape: tuple[int, ...],
    rec: Any = None,
) -> tuple[TensorRef, TensorRef, TensorRef, list[tuple[TensorRef, str]]]:
    """One Norse step: (z, v', i', carried (state input, field) pairs)."""
    consts = _norse_consts(lw, m, base)
    v_leak = _f32(lw, m.p.v_leak, "v_leak")
    v_in, v_c = _state(lw, _norse_state(state, "v", 0 if rec is None else 1), x, shape, "v",
                       base, init=v_leak)
    i_in, i_c = _state(lw, _norse_state(state, "i", 1 if rec is None else 2), x, shape, "i", base)
    ins = [x, v_in, i_in, *consts] + ([rec] if rec is not None else [])
    z, v_out, i_out = lw.add("NorseLIF", ins, {"events": _mode(lw)}, 3, base)
    carried = [(v_in, "v")] if v_c else []
    carried += [(i_in, "i")] if i_c else []
    return z, v_out, i_out, carried


@module_handler("norse.torch.module.lif.LIFCell")
def _norse_lif_cell(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    from norse.torch.functional.lif import LIFFeedForwardState

    x = args[0]
    state = args[1] if len(args) > 1 else kwargs.get("state")
    shape = tuple(lw.shape(x))
    z, v, i, carried = _lif_cell(lw, m, _base(path, m), x, state, shape)
    for s_in, field in carried:
        lw.set_state(s_in, {"v": v, "i": i}[field])
    return z, LIFFeedForwardState(v=v, i=i)


@module_handler("norse.torch.module.lif.LIFRecurrentCell")
def _norse_lif_rec(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    from norse.torch.functional.lif import LIFState

    x = args[0]
    state = args[1] if len(args) > 1 else kwargs.get("state")
    base = _base(path, m)
    w_in = _f32(lw, m.input_weights, "input_weights")
    w_rec = _f32(lw, m.recurrent_weights, "recurrent_weights")
    shape = tuple(lw.shape(x)[:-1]) + (int(w_in.shape[0]),)
    z_in, z_c = _state(lw, _norse_state(state, "z", 0), x, shape, "z", base)
    cur = linear(lw, x, w_in, None, f"{base}_in")
    if _mode(lw) == "dense":
        rec = linear(lw, z_in, w_rec, None, f"{base}_rec")
    else:  # z is binary: add the recurrent weight columns of the neurons that spiked
        rec = lw.add1("EventDense", [z_in, lw.const(w_rec, f"{base}_rec_w")], base=f"{base}_rec")
    z, v, i, carried = _lif_cell(lw, m, base, cur, state, shape, rec)
    if z_c:
        lw.set_state(z_in, z)
    for s_in, field in carried:
        lw.set_state(s_in, {"v": v, "i": i}[field])
    return z, LIFState(z=z, v=v, i=i)


@module_handler("norse.torch.module.lif.LIF")
def _norse_lif_seq(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    from norse.torch.functional.lif import LIFFeedForwardState

    x = args[0]
    state = args[1] if len(args) > 1 else kwargs.get("state")
    if getattr(m, "record_states", False):
        raise lw.unsupported("Norse LIF with record_states=True (supported: record_states=False)")
    base = _base(path, m)
    full = tuple(lw.shape(x))
    shape = full[1:]
    zs: list[TensorRef] = []
    carried: list[tuple[TensorRef, str]] = []
    for t in range(full[0]):
        xt = lw.add1("Slice", [x, lw.ints([t]), lw.ints([t + 1]), lw.ints([0])], base=base)
        xt = lw.add1("Squeeze", [xt, lw.ints([0])], base=base)
        z, v, i, c = _lif_cell(lw, m, base, xt, state, shape)
        carried = carried or c
        state = LIFFeedForwardState(v=v, i=i)
        zs.append(lw.add1("Unsqueeze", [z, lw.ints([0])], base=base))
    for s_in, field in carried:
        lw.set_state(s_in, getattr(state, field))
    out = zs[0] if len(zs) == 1 else lw.add1("Concat", zs, {"axis": 0}, base=base)
    return out, state


# --- edgec.nn ------------------------------------------------------------------------------------


@module_handler("edgec.nn.lif.LIF")
def _edgec_lif(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0]
    base, shape = _base(path, m), tuple(lw.shape(x))
    if not shape or shape[-1] != m.size:
        raise EdgecError(f"{lw.where}: LIF({m.size}) got an input of shape {shape}")
    mem_in, _ = _state(lw, None, x, shape, "mem", base)
    syn_in = _state(lw, None, x, shape, "syn", base)[0] if m.alpha is not None else None
    adaptive = m.adapt_decay is not None
    tr_in = _state(lw, None, x, shape, "trace", base)[0] if adaptive else None

    def c(v: Any, what: str, clamp: bool = False) -> str:
        if v is None:
            return ""
        return lw.const(_clamped(lw, v, what) if clamp else _f32(lw, v, what), f"{base}_{what}")

    ins = [
        x,
        mem_in,
        syn_in or "",
        tr_in or "",
        c(m.beta, "beta", True),
        c(m.threshold, "threshold"),
        c(m.alpha, "alpha", True),
        c(m.adapt_decay, "adapt_decay"),
        c(m.adapt_add if adaptive else None, "adapt_add"),
    ]
    n_out = 2 + (syn_in is not None) + adaptive
    outs = lw.add("LIF", ins, {"reset": m.reset_mode, "events": _mode(lw)}, n_out, base)
    states = [s for s in (mem_in, syn_in, tr_in) if s is not None]
    for s_in, s_out in zip(states, outs[1:], strict=True):
        lw.set_state(s_in, s_out)
    return outs[0]


@module_handler("edgec.nn.lif.LeakyIntegrator")
def _edgec_leaky_integrator(
    lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict
) -> TensorRef:
    x = args[0]
    base, shape = _base(path, m), tuple(lw.shape(x))
    y_in, _ = _state(lw, None, x, shape, "y", base)
    lam = _f32(lw, m.lam, "lam")
    one_minus = _f32(lw, 1 - m.lam.detach(), "one_minus_lam")  # as torch computes it
    y = lw.add1(
        "LeakyIntegrator",
        [x, y_in, lw.const(lam, f"{base}_lam"), lw.const(one_minus, f"{base}_1mlam")],
        base=base,
    )
    lw.set_state(y_in, y)
    return y
