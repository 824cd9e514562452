"""C. elegans circuit policies: ``ncps`` CfC / LTC (and their cells) and NCAP swimmer modules.

The ``ncps`` modules become one ``CfC`` / ``LTC`` node each (see :mod:`edgec.ops.circuits`) that
runs the whole sequence: masks stay masks (stored sparsely with ``options={"sparse": "csr"}``,
densely with ``"dense"``, by flash size with ``"auto"``, the default), LTC's positivity
constraints and ``cm·unfolds/Δt`` fold at compile time. ``y, h = cfc(x, h)`` compiles to a model
whose ``run(x, h)`` returns ``(y, h)`` and whose ``reset()``/``step(x)`` carry ``h`` in the C
state (also ``(h, c)`` with ``mixed_memory``).

An NCAP swimmer is any module with the NCAP swimmer interface (``n_joints``,
``oscillator_period``, an integer ``timestep`` counter, ``exc``/``inh`` sign-constraint methods
and an ``nn.ParameterDict`` ``params`` holding ``bneuron_prop``, ``bneuron_osc``, ``muscle_ipsi``,
``muscle_contra`` — shared — or ``bneuron_prop_{i}``, ``muscle_ipsi_{i}``, ``muscle_contra_{i}``
per joint; see ``examples/swimmer_ncap/ncap.py``). The sign constraints are applied at compile
time and the step counter becomes C state (kept modulo the oscillator period, which is all the
circuit reads), so ``reset()`` + ``step(q)`` per tick equals the module called once per tick
after ``module.reset()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.pytorch.lowering import (
    TensorRef,
    TorchLowering,
    module_handler,
    module_matcher,
)
from edgec.frontend.pytorch.nn_modules import linear
from edgec.ops.circuits import BACKBONE_ACTS, csr_bytes, index_ctype, prefer_sparse
from edgec.passes.sparse import SPARSE_MODES  # one definition for lowering and the pass

_IDX_BYTES = {"uint8_t": 1, "int16_t": 2, "int32_t": 4}


def _np(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


#: compile options this module reads (collected by :func:`edgec.api.known_options`)
OPTIONS = {"sparse": "auto | csr | dense: how masked circuit weights are stored"}


def _sparse_mode(lw: TorchLowering) -> str:
    mode = str(lw.options.get("sparse", "auto"))
    if mode not in SPARSE_MODES:
        raise EdgecError(
            f"option sparse={mode!r} is not supported; use one of {', '.join(SPARSE_MODES)}"
        )
    return mode


# --- sequences: inputs, state, outputs --------------------------------------------------------


def _reshape(lw: TorchLowering, t: TensorRef, shape: tuple[int, ...], base: str) -> TensorRef:
    if tuple(lw.shape(t)) == tuple(shape):
        return t
    return lw.add1("Reshape", [t, lw.ints(shape)], base=base)


def _state_arg(
    lw: TorchLowering, v: Any, batch: int, size: int, batched: bool, what: str, base: str
) -> TensorRef | str:
    if v is None:
        return ""
    t = lw.as_tensor(v)
    want = (batch, size) if batched else (size,)
    if tuple(lw.shape(t)) != want:
        raise EdgecError(
            f"{lw.where}: {what} has shape {tuple(lw.shape(t))}; expected {want}"
        )
    return _reshape(lw, t, (batch, size), base)


def _run_sequence(
    lw: TorchLowering,
    m: Any,
    path: str,
    args: tuple,
    kwargs: dict,
    op: str,
    attrs: dict[str, Any],
    state_size: int,
) -> tuple[Any, Any]:
    """Lower ``m(input, hx=None, timespans=None)`` of an ncps CfC/LTC; returns (y, hx)."""
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    timespans = args[2] if len(args) > 2 else kwargs.get("timespans")
    if timespans is not None:
        raise lw.unsupported(
            f"{type(m).__name__} with timespans: supported is timespans=None (Δt = 1); "
            f"cells take a constant float time span"
        )
    if not isinstance(x, TensorRef):
        raise lw.unsupported("the input sequence must be a tensor")
    shape = lw.shape(x)
    if len(shape) not in (2, 3):
        raise lw.unsupported(f"input of shape {shape}: expected (B, L, C) / (L, B, C) or (L, C)")
    batched = len(shape) == 3
    layout = 1 if m.batch_first else 0
    if not batched:
        x = _reshape(lw, x, (1,) + shape if layout else (shape[0], 1, shape[1]), path)
    xs = lw.shape(x)
    batch = xs[0] if layout else xs[1]
    mixed = bool(m.use_mixed)
    if mixed and hx is not None and not isinstance(hx, (tuple, list)):
        raise lw.unsupported("mixed_memory=True needs hx = (h0, c0)")
    if hx is None:
        if not path and not mixed:
            # the compiled model IS this module: carry its state between <name>_step calls by
            # default, as a state input named after forward()'s own argument
            hx = lw.add_state("hx", (batch, state_size) if batched else (state_size,))
        else:
            import warnings

            from edgec.errors import EdgecWarning

            warnings.warn(
                f"{lw.where}: called without hx, so every call starts from a zero state (as in "
                f"torch) and the C model carries no state; pass hx and return the new one to "
                f"carry it between <name>_step calls",
                EdgecWarning, stacklevel=2,
            )
    h_in, c_in = (tuple(hx) if hx is not None else (None, None)) if mixed else (hx, None)
    ins = [x, _state_arg(lw, h_in, batch, state_size, batched, "hx", path)]
    if mixed:
        ins.append(_state_arg(lw, c_in, batch, state_size, batched, "cx", path))
        attrs["lstm"] = {
            "wi": _np(m.lstm.input_map.weight),
            "bi": _np(m.lstm.input_map.bias),
            "wr": _np(m.lstm.recurrent_map.weight),
        }
    else:
        attrs["lstm"] = None
    attrs["layout"] = layout
    attrs["return_sequences"] = int(bool(m.return_sequences))
    outs = lw.add(op, ins, attrs, 3 if mixed else 2, base=path or op.lower())
    y = outs[0]
    if not batched:
        ys = lw.shape(y)
        drop = (0 if layout else 1) if len(ys) == 3 else 0  # the batch dimension
        y = _reshape(lw, y, tuple(d for i, d in enumerate(ys) if i != drop), path)
    states = []
    for src, out in zip([h_in, c_in][: 1 + mixed], outs[1:], strict=True):
        s = out if batched else _reshape(lw, out, (state_size,), path)
        if isinstance(src, TensorRef) and src in lw.g.inputs:
            lw.g.state.append((src, s))  # carried by <name>_step
        states.append(s)
    return y, (tuple(states) if mixed else states[0])


# --- CfC -------------------------------------------------------------------------------------


def _activation_name(mod: Any) -> str:
    name = type(mod).__name__
    if name == "LeCun":
        return "lecun_tanh"
    if name == "GELU" and getattr(mod, "approximate", "none") != "none":
        raise EdgecError(f"CfC backbone GELU(approximate={mod.approximate!r}) is not supported")
    names = {"Tanh": "tanh", "ReLU": "relu", "SiLU": "silu", "GELU": "gelu"}
    if name not in names:
        raise EdgecError(
            f"CfC backbone activation {name} is not supported; supported: "
            + ", ".join(BACKBONE_ACTS)
        )
    return names[name]


def _cfc_cell_parts(cell: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], str, dict]:
    """(backbone layers, backbone activation, the cell's gate weights) of an ncps CfCCell."""
    backbone: list[tuple[np.ndarray, np.ndarray]] = []
    act = "lecun_tanh"
    if cell.backbone_layers > 0:
        for layer in cell.backbone:
            kind = type(layer).__name__
            if kind == "Linear":
                backbone.append((_np(layer.weight), _np(layer.bias)))
            elif kind != "Dropout":
                act = _activation_name(layer)
    mask = cell.sparsity_mask

    def masked(lin: Any) -> np.ndarray:
        w = lin.weight if mask is None else lin.weight * mask
        return _np(w)

    lay: dict[str, Any] = {"units": int(cell.hidden_size)}
    lay["ff1_w"], lay["ff1_b"] = masked(cell.ff1), _np(cell.ff1.bias)
    if cell.mode == "pure":
        lay["w_tau"], lay["A"] = _np(cell.w_tau).reshape(-1), _np(cell.A).reshape(-1)
    else:
        lay["ff2_w"], lay["ff2_b"] = masked(cell.ff2), _np(cell.ff2.bias)
        for key, lin in (("ta", cell.time_a), ("tb", cell.time_b)):
            lay[f"{key}_w"], lay[f"{key}_b"] = _np(lin.weight), _np(lin.bias)
    return backbone, act, lay


def _cfc_attrs(lw: TorchLowering, cell: Any, ts: float) -> dict[str, Any]:
    """Attributes of a CfC node for a CfCCell or a WiredCfCCell."""
    with _no_grad():
        if type(cell).__name__ == "WiredCfCCell":
            parts = [_cfc_cell_parts(c) for c in cell._layers]
            wired = True
        else:
            parts = [_cfc_cell_parts(cell)]
            wired = cell.sparsity_mask is not None
    mode = cell._layers[0].mode if wired and hasattr(cell, "_layers") else cell.mode
    layers = [p[2] for p in parts]
    sparse = False
    if wired:
        masked = [lay[k] for lay in layers for k in ("ff1_w", "ff2_w") if k in lay]
        sparse = prefer_sparse(
            sum(csr_bytes(w) for w in masked), sum(4 * w.size for w in masked), _sparse_mode(lw)
        )
    return {
        "mode": mode,
        "ts": float(ts),
        "backbone": parts[0][0],
        "backbone_act": parts[0][1],
        "layers": layers,
        "wired": int(wired),
        "sparse": int(sparse),
    }


class _no_grad:  # noqa: N801 - used like torch.no_grad, without importing torch at module load
    def __enter__(self) -> None:
        import torch

        self._ctx = torch.no_grad()
        self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


@module_handler("ncps.torch.cfc.CfC")
def _cfc(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    attrs = _cfc_attrs(lw, m.rnn_cell, 1.0)
    y, hx = _run_sequence(lw, m, path, args, kwargs, "CfC", attrs, int(m.state_size))
    if type(m.fc).__name__ == "Linear":
        with _no_grad():
            w, b = _np(m.fc.weight), _np(m.fc.bias)
        y = linear(lw, y, w, b, f"{path}_fc" if path else "fc")
    return y, hx


def _time_span(lw: TorchLowering, ts: Any, what: str) -> float:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return float(ts)
    raise lw.unsupported(f"{what} must be a constant Python number, got {type(ts).__name__}")


def _cell_step(
    lw: TorchLowering, path: str, op: str, attrs: dict[str, Any], x: Any, hx: Any,
    state_size: int,
) -> tuple[TensorRef, TensorRef, Any]:
    """One step of a cell: x (B, C), hx (B, S) → (y (B, O), h (B, S), hx's graph input)."""
    if not isinstance(x, TensorRef) or len(lw.shape(x)) != 2:
        raise lw.unsupported("cells take a batched 2-D input (B, C)")
    batch, feat = lw.shape(x)
    h = _state_arg(lw, hx, batch, state_size, True, "hx", path)
    attrs.update(layout=1, return_sequences=0, lstm=None)
    xs = _reshape(lw, x, (batch, 1, feat), path)
    y, h_out = lw.add(op, [xs, h], attrs, 2, base=path or op.lower())
    if isinstance(hx, TensorRef) and hx in lw.g.inputs:
        lw.g.state.append((hx, h_out))
    return y, h_out, h


@module_handler("ncps.torch.cfc_cell.CfCCell", "ncps.torch.wired_cfc_cell.WiredCfCCell")
def _cfc_cell(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    ts = args[2] if len(args) > 2 else kwargs.get("ts", kwargs.get("timespans", 1.0))
    if hx is None:
        raise lw.unsupported(f"{type(m).__name__} needs its state hx (B, state)")
    attrs = _cfc_attrs(lw, m, _time_span(lw, ts, "the time span ts"))
    size = int(m.state_size if hasattr(m, "state_size") else m.hidden_size)
    y, h, _ = _cell_step(lw, path, "CfC", attrs, x, hx, size)
    return y, h


# --- LTC -------------------------------------------------------------------------------------


def _ltc_attrs(lw: TorchLowering, cell: Any, elapsed: float) -> dict[str, Any]:
    import torch

    pos = cell.make_positive_fn
    with torch.no_grad():
        cm_t = pos(cell.cm) / (elapsed / cell._ode_unfolds)
        gleak = pos(cell.gleak)
        attrs: dict[str, Any] = {
            "unfolds": int(cell._ode_unfolds),
            "eps": float(cell._epsilon),
            "motor": int(cell.motor_size),
            "cm_t": _np(cm_t),
            "cm_gleak": _np(cm_t + gleak),
            "gleak_vleak": _np(gleak * cell.vleak),
            "w": _np(pos(cell.w)),
            "sigma": _np(cell.sigma),
            "mu": _np(cell.mu),
            "erev": _np(cell.erev),
            "mask": _np(cell.sparsity_mask),
            "sensory_w": _np(pos(cell.sensory_w)),
            "sensory_sigma": _np(cell.sensory_sigma),
            "sensory_mu": _np(cell.sensory_mu),
            "sensory_erev": _np(cell.sensory_erev),
            "sensory_mask": _np(cell.sensory_sparsity_mask),
        }
        for key, mapping, name in (("in", cell._input_mapping, "input"),
                                   ("out", cell._output_mapping, "output")):
            affine = mapping in ("affine", "linear")
            attrs[f"{key}_w"] = _np(getattr(cell, f"{name}_w")) if affine else None
            attrs[f"{key}_b"] = _np(getattr(cell, f"{name}_b")) if mapping == "affine" else None
    how = _sparse_mode(lw)
    sparse_bytes = dense_bytes = 0
    for mask in (attrs["mask"], attrs["sensory_mask"]):
        nnz = int(np.count_nonzero(mask))
        sparse_bytes += (16 + _IDX_BYTES[index_ctype(mask.shape[0] - 1)]) * nnz
        sparse_bytes += _IDX_BYTES[index_ctype(nnz)] * (mask.shape[1] + 1)
        dense_bytes += 16 * mask.size
    attrs["sparse"] = int(prefer_sparse(sparse_bytes, dense_bytes, how))
    return attrs


@module_handler("ncps.torch.ltc.LTC")
def _ltc(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    attrs = _ltc_attrs(lw, m.rnn_cell, 1.0)
    return _run_sequence(lw, m, path, args, kwargs, "LTC", attrs, int(m.state_size))


@module_handler("ncps.torch.ltc_cell.LTCCell")
def _ltc_cell(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("states")
    elapsed = args[2] if len(args) > 2 else kwargs.get("elapsed_time", 1.0)
    if hx is None:
        raise lw.unsupported("LTCCell needs its state (B, units)")
    attrs = _ltc_attrs(lw, m, _time_span(lw, elapsed, "elapsed_time"))
    y, h, _ = _cell_step(lw, path, "LTC", attrs, x, hx, int(m.state_size))
    return y, h


# --- NCAP swimmer ----------------------------------------------------------------------------

_NCAP_ATTRS = ("n_joints", "oscillator_period", "timestep", "exc", "inh", "params")


def is_ncap_swimmer(m: Any) -> bool:
    """Does ``m`` follow the NCAP swimmer interface (see the module docstring)?"""
    if not all(hasattr(m, a) for a in _NCAP_ATTRS):
        return False
    keys = set(getattr(m.params, "keys", lambda: ())())
    return "muscle_ipsi" in keys or "muscle_ipsi_0" in keys


@module_matcher(is_ncap_swimmer)
def _ncap(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
    import torch

    if len(args) != 1 or kwargs:
        raise lw.unsupported(
            "NCAP swimmer with control inputs (speed/turn): supported is forward(joint_pos)"
        )
    for flag in ("include_speed_control", "include_turn_control"):
        if getattr(m, flag, False):
            raise lw.unsupported(f"NCAP swimmer with {flag}=True; supported: False")
    q = args[0]
    nj = int(m.n_joints)
    if not isinstance(q, TensorRef) or not lw.shape(q) or lw.shape(q)[-1] != nj:
        raise lw.unsupported(f"joint_pos must be a tensor (..., {nj})")
    params = m.params
    shared = "muscle_ipsi" in params

    def weight(sign: Any, shared_key: str, key: str) -> float:
        w = params[shared_key] if shared else params[key]
        with torch.no_grad():
            return float(sign(w).reshape(-1)[0])

    use_prop = bool(getattr(m, "include_proprioception", True))
    use_osc = bool(getattr(m, "include_head_oscillators", True))
    prop = np.zeros((nj, 2), np.float32)
    if use_prop:
        for i in range(1, nj):
            prop[i, :] = weight(m.exc, "bneuron_prop", f"bneuron_prop_{i}")
    osc = np.zeros(2, np.float32)
    if use_osc:
        osc[:] = weight(m.exc, "bneuron_osc", "bneuron_osc")
    ipsi = np.array([weight(m.exc, "muscle_ipsi", f"muscle_ipsi_{i}") for i in range(nj)],
                    np.float32)
    contra = np.array([weight(m.inh, "muscle_contra", f"muscle_contra_{i}") for i in range(nj)],
                      np.float32)
    period = int(m.oscillator_period)
    scale = float(getattr(m, "angle_scale", 2 * math.pi / (nj + 1)))
    phase = lw.add_state(f"{path or 'ncap'}_phase", (1,))
    torque, nxt = lw.add(
        "NcapSwimmer",
        [q, phase],
        {"n_joints": nj, "period": period, "scale": scale, "prop": prop, "osc": osc,
         "ipsi": ipsi, "contra": contra, "use_prop": int(use_prop), "use_osc": int(use_osc)},
        2,
        base=path or "ncap",
    )
    lw.set_state(phase, nxt)
    return torque
