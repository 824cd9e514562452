"""C. elegans circuit policies: sparse (masked) dense layers, CfC and LTC sequences, NCAP swimmers.

* ``SparseLinear`` — ``y = act(x Wᵀ + b)`` with a constant, mostly-zero ``W [N, K]`` (a wiring
  mask folded in). Only the non-zeros are stored, row by row (CSR: row starts, column indices in
  the narrowest integer type, values), so flash is proportional to the non-zeros. Other families
  reuse :func:`csr_matvec` / :func:`use_sparse`.
* ``CfC`` — an ``ncps`` closed-form continuous-time network over a whole sequence: optional
  ``mixed_memory`` LSTM cell, the backbone (Linear + activation layers), then one cell per wiring
  layer (one layer when fully connected; inter → command → motor for NCP wirings, the masks on
  ``ff1``/``ff2`` only); modes ``default``, ``no_gate`` and ``pure``.
* ``LTC`` — an ``ncps`` liquid time-constant network: input mapping, sensory synapses once per
  step, ``ode_unfolds`` fused-solver unfolds over the recurrent synapses, output mapping.
  softplus/identity of ``w``, ``cm``, ``g_leak`` and ``cm·unfolds/Δt`` are folded at compile time;
  with ``sparse`` the synapses are stored per post-synaptic neuron (pre index + σ, μ, w, E).
* ``NcapSwimmer`` — the NCAP swimmer circuit (per joint: dorsal/ventral B-neurons driven by the
  previous joint's proprioception or, at the head, the oscillator; muscles; torque = m_d − m_v)
  with the sign constraints already folded; the oscillator phase is a state input/output.

Weights of the sequence ops live in node attributes (numpy arrays, float32). Recurrent state
(``h``, mixed-memory ``c``) comes in as optional inputs 1, 2 and leaves as outputs 1, 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, prod, register, unsupported
from edgec.ops.gemm import dense_layer

# -- sparse (CSR) storage ---------------------------------------------------------------------


def index_ctype(max_value: int) -> str:
    """The narrowest C integer type the back-end emits that holds ``0..max_value``."""
    if max_value <= 255:
        return "uint8_t"
    if max_value <= 32767:
        return "int16_t"
    return "int32_t"


_CTYPE_BYTES = {"uint8_t": 1, "int16_t": 2, "int32_t": 4}


def csr_tables(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row starts [N+1], column indices [nnz], values [nnz]) of the non-zeros of ``W [N, K]``."""
    w32 = np.asarray(w, np.float32)
    rows, cols = np.nonzero(w32)
    starts = np.zeros(w32.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w32.shape[0]), out=starts[1:])
    return starts, cols.astype(np.int64), w32[rows, cols]


def csr_bytes(w: np.ndarray) -> int:
    """Flash bytes of ``W`` stored as CSR (values + column indices + row starts)."""
    n, k = (int(d) for d in np.shape(w))
    nnz = int(np.count_nonzero(w))
    return (
        4 * nnz
        + _CTYPE_BYTES[index_ctype(max(k - 1, 0))] * nnz
        + _CTYPE_BYTES[index_ctype(nnz)] * (n + 1)
    )


def prefer_sparse(sparse_bytes: int, dense_bytes: int, mode: str) -> bool:
    """Store masked weights sparsely? ``mode``: ``csr`` (always), ``dense`` (never), ``auto``:
    when the sparse tables take at most 2/3 of the dense flash (density ≲ 0.5 with byte indices);
    denser masks save little flash and the indexed loads cost more time than the skipped MACs
    (bench/family_circuits.py: a CfC AutoNCP at density 0.75 runs 0.8x as fast sparse)."""
    if mode == "csr":
        return True
    if mode == "dense":
        return False
    return 3 * sparse_bytes <= 2 * dense_bytes


def use_sparse(w: np.ndarray, mode: str) -> bool:
    """:func:`prefer_sparse` for one matrix ``W`` stored as CSR."""
    return prefer_sparse(csr_bytes(w), 4 * int(np.size(w)), mode)


def csr_matvec(
    ctx: EmitContext,
    base: str,
    w: np.ndarray,
    x: str,
    out: str,
    bias: str | None = None,
    finish: Any = None,
) -> str:
    """C for ``out[n] = finish(bias[n] + sum over the non-zeros W[n][k] of W[n][k] * x[k])``.

    ``finish`` maps the accumulator's C expression (default: unchanged)."""
    starts, cols, vals = csr_tables(w)
    n, k = (int(d) for d in w.shape)
    if not len(vals):  # no synapse at all: the bias alone
        init = f"{bias}[n]" if bias else "0.0f"
        expr = finish(init) if finish else init
        return f"for (int n = 0; n < {n}; ++n) {out}[n] = {expr};\n"
    name = ctx.node.name
    start_sym = ctx.const_array(f"{name}_{base}_rows", starts, index_ctype(len(vals)))
    col_sym = ctx.const_array(f"{name}_{base}_cols", cols, index_ctype(max(k - 1, 0)))
    val_sym = ctx.const_array(f"{name}_{base}_vals", vals)
    init = f"{bias}[n]" if bias else "0.0f"
    return (
        f"for (int n = 0; n < {n}; ++n) {{\n"
        f"    float acc = {init};\n"
        f"    for (int p = {start_sym}[n]; p < {start_sym}[n + 1]; ++p)\n"
        f"        acc += {val_sym}[p] * {x}[{col_sym}[p]];\n"
        f"    {out}[n] = {finish('acc') if finish else 'acc'};\n"
        f"}}\n"
    )


def masked_stats(w: np.ndarray, sparse: bool) -> dict[str, int]:
    """Report counters of one masked matrix (summed into ``report()["structure"]``)."""
    dense = 4 * int(np.size(w))
    return {
        "masked_entries": int(np.size(w)),
        "masked_nnz": int(np.count_nonzero(w)),
        "masked_flash_bytes": csr_bytes(w) if sparse else dense,
        "masked_dense_flash_bytes": dense,
    }


def sparse_summary(report: dict[str, Any]) -> dict[str, float]:
    """Density and flash saved by sparse storage, from a compiled model's ``report()``."""
    s = report.get("structure", {})
    entries = s.get("masked_entries", 0)
    if not entries:
        return {"density": 1.0, "flash_saved_bytes": 0, "masked_flash_bytes": 0}
    return {
        "density": s["masked_nnz"] / entries,
        "flash_saved_bytes": s["masked_dense_flash_bytes"] - s["masked_flash_bytes"],
        "masked_flash_bytes": s["masked_flash_bytes"],
    }


def _indent(code: str, levels: int = 1) -> str:
    pad = "    " * levels
    return "".join((pad + ln if ln else "") + "\n" for ln in code.rstrip("\n").split("\n"))


def _f32(a: Any) -> np.ndarray:
    return np.asarray(a, np.float32)


# -- SparseLinear -----------------------------------------------------------------------------


@register
class SparseLinear(Op):
    """``y[..., n] = act(b[n] + sum_k x[..., k] W[n, k])`` with a constant sparse ``W [N, K]``
    (input 1) and an optional constant bias (input 2); only the non-zeros reach the C."""

    types = ("SparseLinear",)
    fusable = True

    def _w(self, node: Node, g: Graph) -> np.ndarray:
        w = g.const(node.inputs[1])
        if w is None or w.ndim != 2:
            raise unsupported(node, "the weight must be a constant 2-D matrix [N, K]")
        return w

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        w = self._w(node, g)
        xs = g.shape(node.inputs[0])
        if not xs or xs[-1] != w.shape[1]:
            raise unsupported(node, f"input {xs} does not end in K = {w.shape[1]}")
        if len(node.inputs) > 2 and node.inputs[2]:
            b = g.const(node.inputs[2])
            if b is None or b.size != w.shape[0]:
                raise unsupported(node, f"the bias must be a constant of {w.shape[0]} values")
        return [(tuple(xs[:-1]) + (int(w.shape[0]),), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x, w = inputs[0], inputs[1]
        assert x is not None and w is not None
        y = _f32(x) @ _f32(w).T
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + _f32(inputs[2]).reshape(-1)
        return [y.astype(np.float32)]

    def macs(self, node: Node, g: Graph) -> int:
        w = self._w(node, g)
        return prod(g.shape(node.inputs[0])[:-1]) * int(np.count_nonzero(w))

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        return masked_stats(self._w(node, g), True)

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        w = self._w(node, g)
        n, k = (int(d) for d in w.shape)
        rows = prod(g.shape(node.inputs[0])[:-1])
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            bias = ctx.const_array(f"{node.name}_bias", _f32(g.const(node.inputs[2])).reshape(-1))
        body = csr_matvec(ctx, "w", w, "xr", "yr", bias, ctx.act)
        return (
            f"for (int m = 0; m < {rows}; ++m) {{\n"
            f"    const float *xr = {ctx.inp(0)} + m * {k};\n"
            f"    float *yr = {ctx.out(0)} + m * {n};\n"
            + _indent(body)
            + "}\n"
        )


# -- shared sequence plumbing -----------------------------------------------------------------

#: backbone activations of CfC (ncps names): numpy reference and C expression
_LECUN_A, _LECUN_B = 1.7159, 0.666


def _act_ref(kind: str, x: np.ndarray) -> np.ndarray:
    x = _f32(x)
    if kind == "lecun_tanh":
        return (np.float32(_LECUN_A) * np.tanh(np.float32(_LECUN_B) * x)).astype(np.float32)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "relu":
        return np.maximum(x, np.float32(0))
    if kind == "silu":
        return (x * _sigmoid(x)).astype(np.float32)
    if kind == "gelu":
        from math import erf, sqrt

        verf = np.vectorize(lambda v: erf(v / sqrt(2.0)))
        return (x * 0.5 * (1.0 + verf(x.astype(np.float64)))).astype(np.float32)
    raise ValueError(kind)


def _act_c(kind: str, v: str) -> str:
    return {
        "lecun_tanh": f"({c_float(_LECUN_A)} * tanhf({c_float(_LECUN_B)} * {v}))",
        "tanh": f"tanhf({v})",
        "relu": f"({v} > 0.0f ? {v} : 0.0f)",
        "silu": f"({v} / (1.0f + expf(-{v})))",
        "gelu": f"(0.5f * {v} * (1.0f + erff({v} * 0.70710678118654752f)))",
    }[kind]


BACKBONE_ACTS = ("lecun_tanh", "tanh", "relu", "silu", "gelu")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _sig_c(v: str) -> str:
    return f"(1.0f / (1.0f + expf(-({v}))))"


class SeqSpec:
    """Shapes of a sequence node: x is [T, B, C] (layout 0) or [B, T, C] (layout 1)."""

    def __init__(self, node: Node, g: Graph, state_size: int, out_size: int):
        xs = g.shape(node.inputs[0])
        if len(xs) != 3:
            raise unsupported(node, f"input must be 3-D ([T, B, C] or [B, T, C]), got {xs}")
        self.layout = int(node.attr("layout", 0))
        self.seq, self.batch = (xs[0], xs[1]) if self.layout == 0 else (xs[1], xs[0])
        self.inp = int(xs[2])
        self.state = state_size
        self.out = out_size
        self.return_sequences = bool(node.attr("return_sequences", 1))
        self.mixed = node.attr("lstm") is not None
        for idx in (1, 2)[: 2 if self.mixed else 1]:
            if len(node.inputs) > idx and node.inputs[idx]:
                shape = g.shape(node.inputs[idx])
                if prod(shape) != self.batch * self.state:
                    raise unsupported(
                        node,
                        f"state input {idx} has shape {shape}; expected "
                        f"[{self.batch}, {self.state}]",
                    )

    def y_shape(self) -> Shape:
        if not self.return_sequences:
            return (self.batch, self.out)
        if self.layout == 0:
            return (self.seq, self.batch, self.out)
        return (self.batch, self.seq, self.out)

    def outputs(self) -> list[tuple[Shape, str]]:
        st = (self.batch, self.state)
        outs = [(self.y_shape(), "float32"), (st, "float32")]
        if self.mixed:
            outs.append((st, "float32"))
        return outs

    def x_at(self, x: np.ndarray, t: int) -> np.ndarray:
        return _f32(x[t] if self.layout == 0 else x[:, t])

    def x_offset(self) -> str:
        if self.layout == 0:
            return f"(s * {self.batch} + b) * {self.inp}"
        return f"(b * {self.seq} + s) * {self.inp}"

    def y_offset(self) -> str:
        if not self.return_sequences:
            return f"b * {self.out}"
        if self.layout == 0:
            return f"(s * {self.batch} + b) * {self.out}"
        return f"(b * {self.seq} + s) * {self.out}"

    def stack(self, ys: list[np.ndarray]) -> np.ndarray:
        if not self.return_sequences:
            return _f32(ys[-1])
        return _f32(np.stack(ys, axis=0 if self.layout == 0 else 1))


def _initial(node: Node, inputs: list[np.ndarray | None], idx: int, spec: SeqSpec) -> np.ndarray:
    v = inputs[idx] if len(inputs) > idx else None
    if v is None:
        return np.zeros((spec.batch, spec.state), np.float32)
    return _f32(v).reshape(spec.batch, spec.state).copy()


def _lstm_ref(p: dict[str, np.ndarray], x: np.ndarray, h: np.ndarray, c: np.ndarray):
    z = (x @ p["wi"].T + p["bi"]) + h @ p["wr"].T
    i, ig, fg, og = np.split(_f32(z), 4, axis=1)
    cn = c * _sigmoid(fg + np.float32(1.0)) + np.tanh(i) * _sigmoid(ig)
    return _f32(np.tanh(cn) * _sigmoid(og)), _f32(cn)


def _lstm_c(ctx: EmitContext, p: dict[str, np.ndarray], inp: int, state: int) -> str:
    """One ncps LSTMCell step: reads xt and h, writes h and c (gates in ``gates``)."""
    w = np.concatenate([p["wi"], p["wr"]], axis=1)  # [4S, C + S] over [x; h]
    bias = ctx.const_array(f"{ctx.node.name}_lstm_b", _f32(p["bi"]))
    code = (
        f"for (int k = 0; k < {inp}; ++k) cat[k] = xt[k];\n"
        f"for (int k = 0; k < {state}; ++k) cat[{inp} + k] = h[k];\n"
    )
    code += dense_layer(ctx, "cat", _f32(w), bias, "gates", 1, base="lstm_w")
    s = state
    code += (
        f"for (int j = 0; j < {s}; ++j) {{\n"
        f"    const float gi = {_sig_c(f'gates[{s} + j]')};\n"
        f"    const float gf = {_sig_c(f'gates[{2 * s} + j] + 1.0f')};\n"
        f"    const float go = {_sig_c(f'gates[{3 * s} + j]')};\n"
        f"    const float cn = c[j] * gf + tanhf(gates[j]) * gi;\n"
        f"    c[j] = cn;\n"
        f"    h[j] = tanhf(cn) * go;\n"
        f"}}\n"
    )
    return code


def _state_io(node: Node, ctx: EmitContext, spec: SeqSpec, idx: int, buf: str) -> tuple[str, str]:
    """(load before the time loop, store after it) of state ``idx`` (1 = h, 2 = c)."""
    n = spec.state
    if len(node.inputs) > idx and node.inputs[idx]:
        load = f"for (int j = 0; j < {n}; ++j) {buf}[j] = {ctx.inp(idx)}[b * {n} + j];\n"
    else:
        load = f"for (int j = 0; j < {n}; ++j) {buf}[j] = 0.0f;\n"
    store = ""
    if len(node.outputs) > idx and node.outputs[idx]:
        store = f"for (int j = 0; j < {n}; ++j) {ctx.out(idx)}[b * {n} + j] = {buf}[j];\n"
    return load, store


def _sequence_kernel(
    node: Node, ctx: EmitContext, spec: SeqSpec, header: str, step: str, final: str
) -> str:
    """for each batch item: load state; for each time step: ``step``; ``final``; store state."""
    load_h, store_h = _state_io(node, ctx, spec, 1, "h")
    load = load_h
    store = store_h
    if spec.mixed:
        load_c, store_c = _state_io(node, ctx, spec, 2, "c")
        load += load_c
        store += store_c
    inner = f"const float *const xt = {ctx.inp(0)} + {spec.x_offset()};\n" + step
    per_batch = (
        load
        + f"for (int s = 0; s < {spec.seq}; ++s) {{\n"
        + _indent(inner)
        + "}\n"
        + final
        + store
    )
    return header + f"for (int b = 0; b < {spec.batch}; ++b) {{\n" + _indent(per_batch) + "}\n"


# -- CfC --------------------------------------------------------------------------------------


def _cfc_spec(node: Node, g: Graph) -> SeqSpec:
    layers = node.attrs["layers"]
    state = sum(int(lay["units"]) for lay in layers)
    return SeqSpec(node, g, state, int(layers[-1]["units"]))


def cfc_layer_ref(lay: dict[str, Any], z: np.ndarray, h: np.ndarray, ts: float, mode: str):
    """One ncps CfCCell update from its (backbone) input ``z``; returns the new hidden state."""
    del h
    ff1 = _f32(z @ lay["ff1_w"].T + lay["ff1_b"])
    if mode == "pure":
        a = lay["A"]
        decay = np.exp(-np.float32(ts) * (np.abs(lay["w_tau"]) + np.abs(ff1)))
        return _f32(-a * decay * ff1 + a)
    ff2 = np.tanh(_f32(z @ lay["ff2_w"].T + lay["ff2_b"]))
    ff1 = np.tanh(ff1)
    t_a = _f32(z @ lay["ta_w"].T + lay["ta_b"])
    t_b = _f32(z @ lay["tb_w"].T + lay["tb_b"])
    t_interp = _sigmoid(_f32(t_a * np.float32(ts) + t_b))
    if mode == "no_gate":
        return _f32(ff1 + t_interp * ff2)
    return _f32(ff1 * (np.float32(1.0) - t_interp) + t_interp * ff2)


def _cfc_buffers(node: Node, spec: SeqSpec) -> tuple[int, int, int]:
    """Floats of the concatenated-input, gate and (each of two) backbone scratch buffers."""
    backbone = [int(w.shape[0]) for w, _ in node.attrs["backbone"]]
    cat = max([spec.inp + spec.state, *backbone])
    gates = 4 * max([spec.state, *(int(lay["units"]) for lay in node.attrs["layers"])])
    return cat, gates, max([0, *backbone])


def _sequence_kernel_storing(
    node: Node, ctx: EmitContext, spec: SeqSpec, header: str, step: str, y_expr: str
) -> str:
    """:func:`_sequence_kernel` with y[j] = ``y_expr`` stored every step (return_sequences) or
    after the last one."""
    store_y = (
        f"for (int j = 0; j < {spec.out}; ++j) "
        f"{ctx.out(0)}[{spec.y_offset()} + j] = {y_expr};\n"
    )
    if spec.return_sequences:
        return _sequence_kernel(node, ctx, spec, header, step + store_y, "")
    return _sequence_kernel(node, ctx, spec, header, step, store_y)


def _sequence_ref(
    node: Node,
    inputs: list[np.ndarray | None],
    spec: SeqSpec,
    step: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> list[np.ndarray]:
    """Run a circuit cell over the sequence: ``step(x_t, h) -> (y_t, h')``, after the mixed-memory
    LSTM when there is one. Returns y (stacked per the layout), h_T and, mixed, c_T."""
    x = inputs[0]
    assert x is not None
    h = _initial(node, inputs, 1, spec)
    c = _initial(node, inputs, 2, spec) if spec.mixed else None
    ys: list[np.ndarray] = []
    for t in range(spec.seq):
        xt = spec.x_at(x, t)
        if c is not None:
            h, c = _lstm_ref(node.attrs["lstm"], xt, h, c)
        y, h = step(xt, h)
        ys.append(y)
    return [spec.stack(ys), h, *([c] if c is not None else [])]


@register
class CfC(Op):
    """A whole ncps CfC sequence. Inputs: x, h0 (optional), c0 (optional, mixed memory).
    Outputs: y (the last layer's h per step, or at the last step), h_T, c_T (mixed memory).

    Attributes: ``layout`` (0: [T, B, C], 1: [B, T, C]), ``return_sequences``, ``ts`` (the
    constant time span), ``mode`` (default / no_gate / pure), ``backbone`` (list of (W, b)),
    ``backbone_act``, ``layers`` (per cell layer: units and its ff1/ff2/time_a/time_b weights,
    ff1/ff2 already masked; pure: ff1, w_tau, A), ``lstm`` (mixed memory weights or None),
    ``sparse`` (store the masked ff1/ff2 as CSR)."""

    types = ("CfC",)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        return _cfc_spec(node, g).outputs()

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        spec = _cfc_spec(node, g)
        mode, ts = node.attrs["mode"], float(node.attr("ts", 1.0))
        act = node.attrs["backbone_act"]
        sizes = [int(lay["units"]) for lay in node.attrs["layers"]]

        def step(xt: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            inp, new_h, off = xt, [], 0
            for lay, n in zip(node.attrs["layers"], sizes, strict=True):
                hl = h[:, off : off + n]
                z = np.concatenate([inp, hl], axis=1)
                for w, b in node.attrs["backbone"]:
                    z = _act_ref(act, _f32(z @ w.T + b))
                inp = cfc_layer_ref(lay, z, hl, ts, mode)
                new_h.append(inp)
                off += n
            return inp, _f32(np.concatenate(new_h, axis=1))

        return _sequence_ref(node, inputs, spec, step)

    def macs(self, node: Node, g: Graph) -> int:
        spec = _cfc_spec(node, g)
        per_step = 0
        if spec.mixed:
            per_step += 4 * spec.state * (spec.inp + spec.state)
        for lay in node.attrs["layers"]:
            for w, _ in node.attrs["backbone"]:
                per_step += w.size
            for key in ("ff1_w", "ff2_w"):
                if key in lay:
                    w = lay[key]
                    per_step += int(np.count_nonzero(w)) if node.attr("sparse") else w.size
            for key in ("ta_w", "tb_w"):
                if key in lay:
                    per_step += lay[key].size
        return spec.batch * spec.seq * per_step

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        out: dict[str, int] = {}
        if not node.attr("wired", 0):
            return out
        for lay in node.attrs["layers"]:
            for key in ("ff1_w", "ff2_w"):
                if key in lay:
                    for k, v in masked_stats(lay[key], bool(node.attr("sparse"))).items():
                        out[k] = out.get(k, 0) + v
        return out

    def scratch(self, node: Node, g: Graph) -> int:
        spec = _cfc_spec(node, g)
        cat, gates, bb = _cfc_buffers(node, spec)
        return spec.state * (2 if spec.mixed else 1) + cat + gates + 2 * bb

    def state_inplace(self, node: Node, i_in: int, i_out: int) -> bool:
        # per batch item the kernel loads h0 (c0) into scratch first and stores h_T (c_T) last
        return (i_in, i_out) in ((1, 1), (2, 2))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        spec = _cfc_spec(node, ctx.g)
        layers = node.attrs["layers"]
        cat_n, gates_n, bb_n = _cfc_buffers(node, spec)
        header = f"float *const h = {ctx.scratch()};\n"
        off = spec.state
        if spec.mixed:
            header += f"float *const c = h + {off};\n"
            off += spec.state
        header += f"float *const cat = h + {off};\nfloat *const gates = cat + {cat_n};\n"
        if bb_n:
            header += f"float *const bb0 = gates + {gates_n};\n"
            if len(node.attrs["backbone"]) > 1:  # the layers alternate between two buffers
                header += f"float *const bb1 = bb0 + {bb_n};\n"
        step = _lstm_c(ctx, node.attrs["lstm"], spec.inp, spec.state) if spec.mixed else ""
        src, src_n, off = "xt", spec.inp, 0
        for li, lay in enumerate(layers):
            step += f"/* layer {li}: {lay['units']} units */\n"
            step += self._layer_c(node, ctx, li, lay, src, src_n, f"h + {off}")
            src, src_n = f"(h + {off})", int(lay["units"])
            off += int(lay["units"])
        y_last = f"h + {spec.state - spec.out}"
        return _sequence_kernel_storing(node, ctx, spec, header, step, f"({y_last})[j]")

    def _layer_c(
        self, node: Node, ctx: EmitContext, li: int, lay: dict[str, Any], src: str, src_n: int,
        hl: str,
    ) -> str:
        n = int(lay["units"])
        mode, ts = node.attrs["mode"], c_float(float(node.attr("ts", 1.0)))
        code = (
            f"for (int k = 0; k < {src_n}; ++k) cat[k] = {src}[k];\n"
            f"for (int k = 0; k < {n}; ++k) cat[{src_n} + k] = ({hl})[k];\n"
        )
        z = "cat"
        for bi, (w, b) in enumerate(node.attrs["backbone"]):
            dst = f"bb{bi % 2}"
            bias = ctx.const_array(f"{node.name}_l{li}_bb{bi}_b", _f32(b))
            code += dense_layer(ctx, z, _f32(w), bias, dst, 1, base=f"l{li}_bb{bi}")
            act = _act_c(node.attrs["backbone_act"], "v")
            code += (f"for (int j = 0; j < {w.shape[0]}; ++j) {{ const float v = {dst}[j]; "
                     f"{dst}[j] = {act}; }}\n")
            z = dst
        sparse = bool(node.attr("sparse"))
        masked = ["ff1"] if mode == "pure" else ["ff1", "ff2"]
        dense_keys = [] if mode == "pure" else ["ta", "tb"]
        if not sparse:
            dense_keys = masked + dense_keys
            masked = []
        if dense_keys:  # one dense layer over the stacked gate rows
            w = np.concatenate([lay[f"{k}_w"] for k in dense_keys], axis=0)
            b = np.concatenate([lay[f"{k}_b"] for k in dense_keys], axis=0)
            bias = ctx.const_array(f"{node.name}_l{li}_gate_b", _f32(b))
            dst = f"gates + {len(masked) * n}" if masked else "gates"
            code += dense_layer(ctx, z, _f32(w), bias, dst, 1, base=f"l{li}_gates")
        for mi, key in enumerate(masked):
            bias = ctx.const_array(f"{node.name}_l{li}_{key}_b", _f32(lay[f"{key}_b"]))
            out = f"(gates + {mi * n})" if mi else "gates"
            code += csr_matvec(ctx, f"l{li}_{key}", _f32(lay[f"{key}_w"]), z, out, bias)
        if mode == "pure":
            a = ctx.const_array(f"{node.name}_l{li}_A", _f32(lay["A"]).reshape(-1))
            wt = ctx.const_array(
                f"{node.name}_l{li}_abs_wtau", np.abs(_f32(lay["w_tau"])).reshape(-1)
            )
            body = (
                "const float f1 = gates[j];\n"
                f"const float e = expf(-{ts} * ({wt}[j] + fabsf(f1)));\n"
                f"({hl})[j] = -{a}[j] * e * f1 + {a}[j];\n"
            )
        else:
            body = (
                "const float f1 = tanhf(gates[j]);\n"
                f"const float f2 = tanhf(gates[{n} + j]);\n"
                f"const float ti = {_sig_c(f'gates[{2 * n} + j] * {ts} + gates[{3 * n} + j]')};\n"
            )
            if mode == "no_gate":
                body += f"({hl})[j] = f1 + ti * f2;\n"
            else:
                body += f"({hl})[j] = f1 * (1.0f - ti) + ti * f2;\n"
        return code + f"for (int j = 0; j < {n}; ++j) {{\n" + _indent(body) + "}\n"


# -- LTC --------------------------------------------------------------------------------------


def _ltc_spec(node: Node, g: Graph) -> SeqSpec:
    a = node.attrs
    spec = SeqSpec(node, g, int(a["cm_t"].size), int(a["motor"]))
    if a["sensory_w"].shape != (spec.inp, spec.state):
        raise unsupported(node, f"sensory weights {a['sensory_w'].shape} do not match the input")
    return spec


def ltc_ref_step(a: dict[str, Any], x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ncps LTCCell step (input mapping, ODE unfolds, output mapping), float32 as torch."""
    if a.get("in_w") is not None:
        x = _f32(x * a["in_w"])
    if a.get("in_b") is not None:
        x = _f32(x + a["in_b"])
    s_act = _f32(a["sensory_w"] * _sigmoid(_f32(a["sensory_sigma"] * (x[:, :, None]
                                                                      - a["sensory_mu"]))))
    s_act = _f32(s_act * a["sensory_mask"])
    num_s = _f32(s_act * a["sensory_erev"]).sum(axis=1, dtype=np.float32)
    den_s = s_act.sum(axis=1, dtype=np.float32)
    for _ in range(int(a["unfolds"])):
        w_act = _f32(a["w"] * _sigmoid(_f32(a["sigma"] * (v[:, :, None] - a["mu"]))))
        w_act = _f32(w_act * a["mask"])
        num = _f32(_f32(w_act * a["erev"]).sum(axis=1, dtype=np.float32) + num_s)
        den = _f32(w_act.sum(axis=1, dtype=np.float32) + den_s)
        numerator = _f32(_f32(a["cm_t"] * v + a["gleak_vleak"]) + num)
        denominator = _f32(a["cm_gleak"] + den)
        v = _f32(numerator / _f32(denominator + np.float32(a["eps"])))
    y = v[:, : int(a["motor"])]
    if a.get("out_w") is not None:
        y = _f32(y * a["out_w"])
    if a.get("out_b") is not None:
        y = _f32(y + a["out_b"])
    return y, v


def _synapse_tables(
    mask: np.ndarray, params: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per post-synaptic neuron j: starts [N+1], pre indices [nnz], params [nnz, len(params)]."""
    post, pre = np.nonzero(np.asarray(mask).T != 0)  # sorted by post neuron, then pre
    starts = np.zeros(mask.shape[1] + 1, np.int64)
    np.cumsum(np.bincount(post, minlength=mask.shape[1]), out=starts[1:])
    table = np.stack([_f32(p)[pre, post] for p in params], axis=1)
    return starts, pre.astype(np.int64), table


@register
class LTC(Op):
    """A whole ncps LTC sequence. Inputs: x, h0 (optional), c0 (optional, mixed memory).
    Outputs: y (mapped motor neurons per step, or at the last step), h_T, c_T (mixed memory).

    Attributes: ``layout``, ``return_sequences``, ``unfolds``, ``eps``, ``motor``; folded
    per-neuron ``cm_t`` (cm·unfolds/Δt), ``cm_gleak`` (cm_t + g_leak), ``gleak_vleak``;
    synapse matrices ``w``, ``sigma``, ``mu``, ``erev``, ``mask`` [pre, post] and their
    ``sensory_*`` counterparts [input, post]; ``in_w``/``in_b``/``out_w``/``out_b`` (or None);
    ``lstm``; ``sparse`` (store only the synapses of the masks)."""

    types = ("LTC",)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        return _ltc_spec(node, g).outputs()

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        spec = _ltc_spec(node, g)
        return _sequence_ref(
            node, inputs, spec, lambda xt, v: ltc_ref_step(node.attrs, xt, v)
        )

    def _synapses(self, node: Node) -> tuple[int, int]:
        a = node.attrs
        if node.attr("sparse"):
            return int(np.count_nonzero(a["sensory_mask"])), int(np.count_nonzero(a["mask"]))
        return int(a["sensory_mask"].size), int(a["mask"].size)

    def macs(self, node: Node, g: Graph) -> int:
        spec = _ltc_spec(node, g)
        sens, rec = self._synapses(node)
        per_step = 3 * sens + int(node.attrs["unfolds"]) * (3 * rec + 3 * spec.state)
        if spec.mixed:
            per_step += 4 * spec.state * (spec.inp + spec.state)
        return spec.batch * spec.seq * per_step

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        a, sparse = node.attrs, bool(node.attr("sparse"))
        out: dict[str, int] = {}
        for mask in (a["sensory_mask"], a["mask"]):
            n = int(mask.size)
            nnz = int(np.count_nonzero(mask))
            idx = _CTYPE_BYTES[index_ctype(max(mask.shape[0] - 1, 0))]
            ptr = _CTYPE_BYTES[index_ctype(nnz)] * (mask.shape[1] + 1)
            dense = 16 * n  # sigma, mu, w, E per entry
            parts = {
                "masked_entries": n,
                "masked_nnz": nnz,
                "masked_flash_bytes": (16 + idx) * nnz + ptr if sparse else dense,
                "masked_dense_flash_bytes": dense,
            }
            for k, v in parts.items():
                out[k] = out.get(k, 0) + v
        return out

    def scratch(self, node: Node, g: Graph) -> int:
        spec = _ltc_spec(node, g)
        extra = 0
        if spec.mixed:
            extra = spec.state + (spec.inp + spec.state) + 4 * spec.state  # c, cat, gates
        return 5 * spec.state + spec.inp + extra  # v, v_new, num_s, den_s, (spare), mapped x

    def _synapse_loop(
        self, ctx: EmitContext, base: str, mask: np.ndarray, prm: list[np.ndarray], src: str,
        num: str, den: str,
    ) -> str:
        """num[j] = sum_i w·σ(s(src_i − μ))·E and den[j] = sum_i w·σ(...) over synapses i→j."""
        name = ctx.node.name
        n_post = int(mask.shape[1])
        if not np.any(mask):
            return f"for (int j = 0; j < {n_post}; ++j) {{ {num}[j] = 0.0f; {den}[j] = 0.0f; }}\n"
        if ctx.node.attr("sparse"):
            starts, pre, table = _synapse_tables(mask, prm)
            st = ctx.const_array(f"{name}_{base}_post", starts, index_ctype(len(pre)))
            pi = ctx.const_array(f"{name}_{base}_pre", pre, index_ctype(mask.shape[0] - 1))
            tb = ctx.const_array(f"{name}_{base}_syn", table)
            loop = (
                f"for (int p = {st}[j]; p < {st}[j + 1]; ++p) {{\n"
                f"    const float *q = {tb} + 4 * p;\n"
                f"    const float a = q[2] * {_sig_c(f'q[0] * ({src}[{pi}[p]] - q[1])')};\n"
                f"    sn += a * q[3];\n"
                f"    sd += a;\n"
                f"}}\n"
            )
        else:  # dense: every (i, j), masked-out synapses carry w = 0
            n_pre = int(mask.shape[0])
            table = np.stack([_f32(p).T for p in prm], axis=2)  # [post][pre][4]
            table[..., 2] *= (mask.T != 0)
            tb = ctx.const_array(f"{name}_{base}_syn", np.ascontiguousarray(table))
            loop = (
                f"const float *q = {tb} + j * {4 * n_pre};\n"
                f"for (int i = 0; i < {n_pre}; ++i, q += 4) {{\n"
                f"    const float a = q[2] * {_sig_c(f'q[0] * ({src}[i] - q[1])')};\n"
                f"    sn += a * q[3];\n"
                f"    sd += a;\n"
                f"}}\n"
            )
        return (
            f"for (int j = 0; j < {n_post}; ++j) {{\n"
            f"    float sn = 0.0f, sd = 0.0f;\n"
            + _indent(loop)
            + f"    {num}[j] = sn;\n"
            f"    {den}[j] = sd;\n"
            f"}}\n"
        )

    def state_inplace(self, node: Node, i_in: int, i_out: int) -> bool:
        # per batch item the kernel loads h0 (c0) into scratch first and stores h_T (c_T) last
        return (i_in, i_out) in ((1, 1), (2, 2))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        a = node.attrs
        spec = _ltc_spec(node, ctx.g)
        n, name = spec.state, node.name
        header = (
            f"float *const h = {ctx.scratch()};\n"
            f"float *const vn = h + {n};\n"
            f"float *const num_s = h + {2 * n};\n"
            f"float *const den_s = h + {3 * n};\n"
            f"float *const den_r = h + {4 * n};\n"
            f"float *const xm = h + {5 * n};\n"
        )
        if spec.mixed:
            base = 5 * n + spec.inp
            header += (
                f"float *const c = h + {base};\n"
                f"float *const cat = c + {n};\n"
                f"float *const gates = cat + {spec.inp + n};\n"
            )
        step = _lstm_c(ctx, a["lstm"], spec.inp, n) if spec.mixed else ""
        in_expr = "xt[k]"
        if a.get("in_w") is not None:
            in_expr = f"{in_expr} * {ctx.const_array(f'{name}_in_w', _f32(a['in_w']))}[k]"
        if a.get("in_b") is not None:
            in_expr = f"{in_expr} + {ctx.const_array(f'{name}_in_b', _f32(a['in_b']))}[k]"
        step += f"for (int k = 0; k < {spec.inp}; ++k) xm[k] = {in_expr};\n"
        sens = [a["sensory_sigma"], a["sensory_mu"], a["sensory_w"], a["sensory_erev"]]
        step += self._synapse_loop(ctx, "sens", a["sensory_mask"], sens, "xm", "num_s", "den_s")
        cm_t = ctx.const_array(f"{name}_cm_t", _f32(a["cm_t"]))
        cm_gl = ctx.const_array(f"{name}_cm_gleak", _f32(a["cm_gleak"]))
        gl_vl = ctx.const_array(f"{name}_gleak_vleak", _f32(a["gleak_vleak"]))
        rec = [a["sigma"], a["mu"], a["w"], a["erev"]]
        unfold = self._synapse_loop(ctx, "rec", a["mask"], rec, "h", "vn", "den_r")
        unfold += (
            f"for (int j = 0; j < {n}; ++j) {{\n"
            f"    const float numer = ({cm_t}[j] * h[j] + {gl_vl}[j]) + (vn[j] + num_s[j]);\n"
            f"    const float denom = {cm_gl}[j] + (den_r[j] + den_s[j]);\n"
            f"    vn[j] = numer / (denom + {c_float(float(a['eps']))});\n"
            f"}}\n"
            f"for (int j = 0; j < {n}; ++j) h[j] = vn[j];\n"
        )
        step += (
            f"for (int u = 0; u < {int(a['unfolds'])}; ++u) {{\n" + _indent(unfold) + "}\n"
        )
        y_expr = "h[j]"
        if a.get("out_w") is not None:
            y_expr = f"{y_expr} * {ctx.const_array(f'{name}_out_w', _f32(a['out_w']))}[j]"
        if a.get("out_b") is not None:
            y_expr = f"{y_expr} + {ctx.const_array(f'{name}_out_b', _f32(a['out_b']))}[j]"
        return _sequence_kernel_storing(node, ctx, spec, header, step, y_expr)


# -- NCAP swimmer -----------------------------------------------------------------------------


def _ncap_parts(node: Node) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = node.attrs
    return (
        int(a["n_joints"]),
        int(a["period"]),
        _f32(a["prop"]),  # [J, 2]: dorsal, ventral proprioceptive weights (row 0 unused)
        _f32(a["osc"]),  # [2]: dorsal, ventral oscillator weights
        _f32(a["ipsi"]),  # [J]
        _f32(a["contra"]),  # [J]
    )


@register
class NcapSwimmer(Op):
    """NCAP swimmer circuit, one tick. Inputs: joint angles [..., J], oscillator phase [1]
    (0 ≤ phase < period). Outputs: joint torques [..., J], next phase [1].

    Attributes: ``n_joints``, ``period``, ``scale`` (angles are divided by it), ``prop``
    ([J, 2], sign constraint folded), ``osc`` ([2]), ``ipsi``, ``contra`` ([J]),
    ``use_prop``, ``use_osc``. For each joint i: b_d = q_d[i−1]·prop[i,0] (+ o_d·osc[0] at the
    head), b_v likewise, both clamped to [0, 1]; m_d = clamp(b_d·ipsi[i] + b_v·contra[i]),
    m_v = clamp(b_v·ipsi[i] + b_d·contra[i]); torque = m_d − m_v."""

    types = ("NcapSwimmer",)
    exact_fp = True  # bit-identical torques to PyTorch

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        j = int(node.attrs["n_joints"])
        qs = g.shape(node.inputs[0])
        if not qs or qs[-1] != j:
            raise unsupported(node, f"joint angles {qs} must end in n_joints = {j}")
        if prod(g.shape(node.inputs[1])) != 1:
            raise unsupported(node, "the oscillator phase is a single value")
        return [(qs, "float32"), (g.shape(node.inputs[1]), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        q, phase = inputs[0], inputs[1]
        assert q is not None and phase is not None
        nj, period, prop, osc, ipsi, contra = _ncap_parts(node)
        a = node.attrs
        qn = _f32(_f32(q) / np.float32(a["scale"]))
        qd = np.clip(qn, np.float32(0), np.float32(1))
        qv = -np.clip(qn, np.float32(-1), np.float32(0))
        p = float(np.asarray(phase).reshape(-1)[0])
        o_d = np.float32(1.0 if p < period // 2 else 0.0)
        o_v = np.float32(1.0) - o_d
        torques = []
        for i in range(nj):
            bd = np.zeros(q.shape[:-1], np.float32)
            bv = np.zeros(q.shape[:-1], np.float32)
            if a["use_prop"] and i > 0:
                bd = _f32(bd + qd[..., i - 1] * prop[i, 0])
                bv = _f32(bv + qv[..., i - 1] * prop[i, 1])
            if a["use_osc"] and i == 0:
                bd = _f32(bd + o_d * osc[0])
                bv = _f32(bv + o_v * osc[1])
            bd = np.clip(bd, np.float32(0), np.float32(1))
            bv = np.clip(bv, np.float32(0), np.float32(1))
            md = np.clip(_f32(bd * ipsi[i] + bv * contra[i]), np.float32(0), np.float32(1))
            mv = np.clip(_f32(bv * ipsi[i] + bd * contra[i]), np.float32(0), np.float32(1))
            torques.append(_f32(md - mv))
        nxt = p + 1.0
        nxt = 0.0 if nxt >= period else nxt
        return [
            _f32(np.stack(torques, axis=-1)),
            np.full(g.shape(node.inputs[1]), nxt, np.float32),
        ]

    def macs(self, node: Node, g: Graph) -> int:
        return 6 * prod(g.shape(node.inputs[0]))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        nj, period, prop, osc, ipsi, contra = _ncap_parts(node)
        a = node.attrs
        rows = prod(ctx.g.shape(node.inputs[0])) // nj

        def table(key: str, v: np.ndarray) -> str:
            return ctx.const_array(f"{node.name}_{key}", v)

        def per_joint(key: str, v: np.ndarray, first: int = 0) -> str:
            """A literal when every joint (from ``first`` on) shares the weight, else a table."""
            if len(v) <= first:
                return "0.0f"
            if np.all(v[first:] == v[first]):
                return c_float(float(v[first]))
            return f"{table(key, v)}[i]"

        lo, hi = "0.0f", "1.0f"
        w_pd = per_joint("prop_d", prop[:, 0], 1)
        w_pv = per_joint("prop_v", prop[:, 1], 1)
        w_ip, w_co = per_joint("ipsi", ipsi), per_joint("contra", contra)
        scale = c_float(float(a["scale"]))
        body = (
            "float bd = 0.0f, bv = 0.0f;\n"
        )
        if a["use_prop"]:
            body += (
                "if (i > 0) {\n"
                f"    const float qp = q[i - 1] / {scale};\n"
                f"    const float qd = fminf(fmaxf(qp, {lo}), {hi});\n"
                f"    const float qv = -fminf(fmaxf(qp, -1.0f), 0.0f);\n"
                f"    bd = bd + qd * {w_pd};\n"
                f"    bv = bv + qv * {w_pv};\n"
                "}\n"
            )
        if a["use_osc"]:
            body += (
                "if (i == 0) {\n"
                f"    bd = bd + o_d * {c_float(float(osc[0]))};\n"
                f"    bv = bv + o_v * {c_float(float(osc[1]))};\n"
                "}\n"
            )
        body += (
            f"bd = fminf(fmaxf(bd, {lo}), {hi});\n"
            f"bv = fminf(fmaxf(bv, {lo}), {hi});\n"
            f"const float md = fminf(fmaxf(bd * {w_ip} + bv * {w_co}, {lo}), {hi});\n"
            f"const float mv = fminf(fmaxf(bv * {w_ip} + bd * {w_co}, {lo}), {hi});\n"
            "tq[i] = md - mv;\n"
        )
        phase, nxt = ctx.inp(1), ctx.out(1)
        osc_c = (
            f"const float o_d = phase < {c_float(float(period // 2))} ? 1.0f : 0.0f;\n"
            "const float o_v = 1.0f - o_d;\n"
            if a["use_osc"] else ""
        )
        return (
            f"const float phase = {phase}[0];\n"
            + osc_c
            + f"for (int r = 0; r < {rows}; ++r) {{\n"
            f"    const float *q = {ctx.inp(0)} + r * {nj};\n"
            f"    float *tq = {ctx.out(0)} + r * {nj};\n"
            f"    for (int i = 0; i < {nj}; ++i) {{\n"
            + _indent(body, 2)
            + "    }\n"
            "}\n"
            f"{nxt}[0] = phase + 1.0f >= {c_float(float(period))} ? 0.0f : phase + 1.0f;\n"
        )
