"""Recurrent ops: RNN, GRU and LSTM (ONNX semantics, opsets 7-21).

Weights are constants. At compile time each direction's gates are split into the row blocks the
kernel walks (``W[rows][input]``, ``R[rows][hidden]``, both contiguous) and the two bias halves are
folded into one (``Wb + Rb``) except for GRU's hidden gate with ``linear_before_reset=1``, where the
reset gate multiplies ``R h + Rb`` only. The kernel loops over directions (unrolled: each has its
own weights, activations and time order), batch items and time steps (C loops); the running hidden
and cell state and the gate vectors live in the node's planned scratch buffer.

Supported: direction forward/reverse/bidirectional; layout 0 and 1; optional B, P (LSTM
peepholes), initial_h, initial_c (absent → zeros); ``sequence_lens`` absent or a constant equal
to the full sequence length; activations Sigmoid, Tanh, Relu, Softsign, Softplus; ``clip``;
GRU ``linear_before_reset`` 0/1; LSTM ``input_forget``; every output optional.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, register, require_finite, unsupported
from edgec.ops.gemm import dense_layer
from edgec.ops.rnn_cell_asm import (
    CELL_ASM_DEFINE,
    gru_cell_asm,
    gru_gates_asm,
    gru_update_asm,
    lstm_cell_asm,
)
from edgec.ops.unary import act_c, act_ref

#: gate blocks per op, in ONNX's row order of W/R/B
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTS = {"RNN": ("tanh",), "GRU": ("sigmoid", "tanh"), "LSTM": ("sigmoid", "tanh", "tanh")}
#: input index of the initial cell state and output index of the final one (LSTM only)
STATE_INPUTS = {"RNN": (5,), "GRU": (5,), "LSTM": (5, 6)}


@dataclass(frozen=True)
class RnnAct:
    c: Callable[[str], str]
    ref: Callable[[np.ndarray], np.ndarray]


def _softsign_ref(x: np.ndarray) -> np.ndarray:
    return (x / (np.float32(1) + np.abs(x))).astype(np.float32)


#: activation functions a recurrent node may use (by lower-case ONNX name)
ACTS: dict[str, RnnAct] = {
    # edgec's table sigmoid (backend/c_math.py) instead of libm's expf and a division; within
    # 6e-8 absolute of the logistic function
    "sigmoid": RnnAct(lambda v: f"edgec_sigmoidf({v})", lambda x: act_ref("Sigmoid", {}, x)),
    "tanh": RnnAct(lambda v: act_c("Tanh", {}, v), lambda x: act_ref("Tanh", {}, x)),
    "relu": RnnAct(lambda v: act_c("Relu", {}, v), lambda x: act_ref("Relu", {}, x)),
    "softplus": RnnAct(lambda v: act_c("Softplus", {}, v), lambda x: act_ref("Softplus", {}, x)),
    "softsign": RnnAct(lambda v: f"({v} / (1.0f + fabsf({v})))", _softsign_ref),
}
_ACT_NAMES = ("Sigmoid", "Tanh", "Relu", "Softsign", "Softplus")
_PARAM_ACTS = ("affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu")


@dataclass(frozen=True)
class RnnSpec:
    """Everything about a recurrent node that is fixed at compile time."""

    kind: str
    seq: int
    batch: int
    input_size: int
    hidden: int
    layout: int
    reverse: tuple[bool, ...]  # one entry per direction
    acts: tuple[tuple[str, ...], ...]  # per direction: (f,) / (f, g) / (f, g, h)
    clip: float | None
    linear_before_reset: bool
    input_forget: bool

    @property
    def dirs(self) -> int:
        return len(self.reverse)

    @property
    def gates(self) -> int:
        return GATES[self.kind]

    # C index expressions (t: time step, b: batch item) of each tensor's row start
    def x_offset(self) -> str:
        i, b, sq = self.input_size, self.batch, self.seq
        if self.layout == 0:
            return _affine([("t", b * i), ("b", i)])
        return _affine([("b", sq * i), ("t", i)])

    def y_offset(self, d: int) -> str:
        h, nd, b, sq = self.hidden, self.dirs, self.batch, self.seq
        if self.layout == 0:
            return _affine([("t", nd * b * h), ("b", h)], d * b * h)
        return _affine([("b", sq * nd * h), ("t", nd * h)], d * h)

    def state_offset(self, d: int) -> str:
        h, nd, b = self.hidden, self.dirs, self.batch
        if self.layout == 0:
            return _affine([("b", h)], d * b * h)
        return _affine([("b", nd * h)], d * h)


def _affine(terms: list[tuple[str, int]], const: int = 0) -> str:
    """``var * coef + ... + const`` as C, without zero terms or unit factors."""
    parts = [v if k == 1 else f"{v} * {k}" for v, k in terms if k]
    if const or not parts:
        parts.append(str(const))
    return " + ".join(parts)


_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def _input(node: Node, i: int) -> str:
    return node.inputs[i] if len(node.inputs) > i else ""


def _output(node: Node, i: int) -> str:
    return node.outputs[i] if len(node.outputs) > i else ""


def _parse_acts(node: Node, n_dirs: int) -> tuple[tuple[str, ...], ...]:
    per_dir = len(DEFAULT_ACTS[node.op])
    names = node.attr("activations")
    if names is None:
        return (DEFAULT_ACTS[node.op],) * n_dirs
    names = [str(n) for n in names]
    if len(names) != per_dir * n_dirs:
        raise unsupported(
            node, f"{len(names)} activations given; {node.op} with {n_dirs} direction(s) needs "
            f"{per_dir * n_dirs} ({per_dir} per direction)"
        )
    for name in names:
        key = name.lower()
        if key in _PARAM_ACTS:
            raise unsupported(
                node, f"activation {name} (alpha/beta-parameterised) is not supported; supported "
                f"activations: {', '.join(_ACT_NAMES)}"
            )
        if key not in ACTS:
            raise unsupported(
                node, f"unknown activation {name}; supported: {', '.join(_ACT_NAMES)}"
            )
    keys = tuple(n.lower() for n in names)
    return tuple(keys[d * per_dir : (d + 1) * per_dir] for d in range(n_dirs))


def rnn_spec(node: Node, g: Graph) -> RnnSpec:
    """Validate a recurrent node and collect its compile-time facts."""
    kind = node.op
    n_gates = GATES[kind]
    layout = int(node.attr("layout", 0))
    if layout not in (0, 1):
        raise unsupported(node, f"layout={layout}; supported: 0 and 1")
    x_shape = g.shape(node.inputs[0])
    if len(x_shape) != 3:
        raise unsupported(node, f"X must be 3-D, got shape {x_shape}")
    seq, batch = (x_shape[0], x_shape[1]) if layout == 0 else (x_shape[1], x_shape[0])
    input_size = x_shape[2]
    for idx, what in ((1, "W"), (2, "R")):
        if g.const(_input(node, idx)) is None:
            raise unsupported(node, f"{what} must be a constant (initializer)")
    w_shape, r_shape = g.shape(node.inputs[1]), g.shape(node.inputs[2])
    hidden = int(r_shape[-1]) if len(r_shape) == 3 else -1
    direction = node.attr("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    reverse = _DIRECTIONS.get(direction)
    if reverse is None:
        raise unsupported(node, f"direction '{direction}'; supported: {', '.join(_DIRECTIONS)}")
    n_dirs = len(reverse)
    want_w, want_r = (n_dirs, n_gates * hidden, input_size), (n_dirs, n_gates * hidden, hidden)
    if tuple(w_shape) != want_w or tuple(r_shape) != want_r:
        raise unsupported(node, f"W {w_shape} / R {r_shape} do not match X {x_shape}: expected "
                                f"W {want_w} and R {want_r}")
    require_finite(node, g, (1, 2, 3, 7))
    if int(node.attr("hidden_size", hidden)) != hidden:
        raise unsupported(node, f"hidden_size={node.attr('hidden_size')} but R says {hidden}")
    checks = [(3, "B", (n_dirs, 2 * n_gates * hidden))]
    if kind == "LSTM":
        checks.append((7, "P", (n_dirs, 3 * hidden)))
    for idx, what, shape in checks:
        name = _input(node, idx)
        if name and g.const(name) is None:
            raise unsupported(node, f"{what} must be a constant (initializer)")
        if name and tuple(g.shape(name)) != shape:
            raise unsupported(node, f"{what} has shape {g.shape(name)}, expected {shape}")
    state_shape = (n_dirs, batch, hidden) if layout == 0 else (batch, n_dirs, hidden)
    for idx in STATE_INPUTS[kind]:
        name = _input(node, idx)
        if name and tuple(g.shape(name)) != state_shape:
            raise unsupported(node, f"initial state '{name}' has shape {g.shape(name)}, "
                                    f"expected {state_shape}")
    lens_name = _input(node, 4)
    if lens_name:
        lens = g.const(lens_name)
        if lens is None or lens.size != batch or np.any(np.asarray(lens).reshape(-1) != seq):
            raise unsupported(node, "sequence_lens is supported only when absent or a constant "
                                    f"equal to the full length ({seq}) for every batch item")
    clip = node.attr("clip")
    if kind == "GRU":
        lbr = int(node.attr("linear_before_reset", 0))
        if lbr not in (0, 1):
            raise unsupported(node, f"linear_before_reset={lbr}; supported: 0 and 1")
    return RnnSpec(
        kind=kind, seq=int(seq), batch=int(batch), input_size=int(input_size), hidden=hidden,
        layout=layout, reverse=reverse, acts=_parse_acts(node, n_dirs),
        clip=None if clip is None else float(clip),
        linear_before_reset=bool(node.attr("linear_before_reset", 0)) if kind == "GRU" else False,
        input_forget=bool(node.attr("input_forget", 0)) if kind == "LSTM" else False,
    )


@dataclass
class DirWeights:
    """One direction's constants: W [G*H, I], R [G*H, H], Wb and Rb [G*H], P [3H] or None."""

    w: np.ndarray
    r: np.ndarray
    wb: np.ndarray
    rb: np.ndarray
    p: np.ndarray | None


def _dir_weights(spec: RnnSpec, values: list[np.ndarray | None], d: int) -> DirWeights:
    rows = spec.gates * spec.hidden
    w, r = values[1], values[2]
    assert w is not None and r is not None
    b = values[3] if len(values) > 3 else None
    p = values[7] if spec.kind == "LSTM" and len(values) > 7 else None
    bias = np.zeros(2 * rows, np.float32) if b is None else np.asarray(b, np.float32)[d]
    return DirWeights(
        w=np.asarray(w, np.float32)[d], r=np.asarray(r, np.float32)[d],
        wb=bias[:rows], rb=bias[rows:],
        p=None if p is None or not np.any(p[d]) else np.asarray(p, np.float32)[d],
    )


def _const_values(node: Node, g: Graph) -> list[np.ndarray | None]:
    return [g.const(_input(node, i)) for i in range(len(node.inputs))]


# -- numpy reference --------------------------------------------------------------------------

def _clip(spec: RnnSpec, v: np.ndarray) -> np.ndarray:
    if spec.clip is None:
        return v
    return np.clip(v, np.float32(-spec.clip), np.float32(spec.clip)).astype(np.float32)


def _ref_direction(
    spec: RnnSpec, dw: DirWeights, acts: tuple[str, ...], x: np.ndarray, h: np.ndarray,
    c: np.ndarray, reverse: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direction over layout-0 X [S, B, I]; returns Y [S, B, H], final h, final c."""
    hs = spec.hidden
    f = ACTS[acts[0]].ref
    ys = np.zeros((spec.seq, spec.batch, hs), np.float32)
    steps = range(spec.seq - 1, -1, -1) if reverse else range(spec.seq)
    for t in steps:
        xw = x[t] @ dw.w.T + dw.wb
        hr = h @ dw.r.T + dw.rb
        if spec.kind == "RNN":
            h = f(_clip(spec, xw + hr))
        elif spec.kind == "GRU":
            g_act = ACTS[acts[1]].ref
            z = f(_clip(spec, xw[:, :hs] + hr[:, :hs]))
            r = f(_clip(spec, xw[:, hs : 2 * hs] + hr[:, hs : 2 * hs]))
            if spec.linear_before_reset:
                pre = xw[:, 2 * hs :] + r * hr[:, 2 * hs :]
            else:
                rh = (r * h) @ dw.r[2 * hs :].T + dw.rb[2 * hs :]
                pre = xw[:, 2 * hs :] + rh
            cand = g_act(_clip(spec, pre))
            h = ((1 - z) * cand + z * h).astype(np.float32)
        else:
            g_act, h_act = ACTS[acts[1]].ref, ACTS[acts[2]].ref
            pre = xw + hr
            p = dw.p if dw.p is not None else np.zeros(3 * hs, np.float32)
            i_g = f(_clip(spec, pre[:, :hs] + p[:hs] * c))
            if spec.input_forget:
                f_g = (1 - i_g).astype(np.float32)
            else:
                f_g = f(_clip(spec, pre[:, 2 * hs : 3 * hs] + p[2 * hs :] * c))
            cand = g_act(_clip(spec, pre[:, 3 * hs :]))
            c = (f_g * c + i_g * cand).astype(np.float32)
            o_g = f(_clip(spec, pre[:, hs : 2 * hs] + p[hs : 2 * hs] * c))
            h = (o_g * h_act(c)).astype(np.float32)
        ys[t] = h
    return ys, h, c


def rnn_reference(node: Node, values: list[np.ndarray | None], spec: RnnSpec) -> list[np.ndarray]:
    x = values[0]
    assert x is not None
    x = np.asarray(x, np.float32)
    if spec.layout == 1:
        x = x.transpose(1, 0, 2)
    shape = (spec.dirs, spec.batch, spec.hidden)

    def initial(idx: int) -> np.ndarray:
        v = values[idx] if len(values) > idx else None
        if v is None:
            return np.zeros(shape, np.float32)
        v = np.asarray(v, np.float32)
        return v.transpose(1, 0, 2) if spec.layout == 1 else v

    h0 = initial(5)
    c0 = initial(6) if spec.kind == "LSTM" else np.zeros(shape, np.float32)
    ys, hs, cs = [], [], []
    for d in range(spec.dirs):
        dw = _dir_weights(spec, values, d)
        y, h, c = _ref_direction(spec, dw, spec.acts[d], x, h0[d], c0[d], spec.reverse[d])
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y_all = np.stack(ys, axis=1)  # [S, D, B, H]
    h_all, c_all = np.stack(hs), np.stack(cs)  # [D, B, H]
    if spec.layout == 1:
        y_all = y_all.transpose(2, 0, 1, 3)
        h_all, c_all = h_all.transpose(1, 0, 2), c_all.transpose(1, 0, 2)
    outs = [y_all, h_all, c_all][: 3 if spec.kind == "LSTM" else 2]
    return [np.ascontiguousarray(o, np.float32) for o in outs]


# -- C emission -------------------------------------------------------------------------------

def matvec(ctx: EmitContext, out: str, bias: str | None, name: str, w: np.ndarray, v: str) -> str:
    """``out[n] = bias[n] + W[n] . v`` for a constant ``W`` [rows, k]: the dense layer's walk
    (:func:`edgec.ops.gemm.dense_layer`: blocks of four rows interleaved at compile time, all
    of them in one call, two blocks a pass on FPU Cortex-M, the last ``rows % 4`` rows in one
    interleaved walk; AVX2 on x86-64 hosts)."""
    return dense_layer(ctx, v, np.asarray(w, np.float32), bias, out, 1, base=name)


def _indent(code: str, levels: int) -> str:
    pad = "    " * levels
    return "".join((pad + ln if ln else "") + "\n" for ln in code.rstrip("\n").split("\n"))


class _Emitter:
    """Writes one recurrent node's kernel."""

    def __init__(self, node: Node, ctx: EmitContext, spec: RnnSpec):
        self.node, self.ctx, self.spec = node, ctx, spec
        self.values = _const_values(node, ctx.g)
        self.k_pad = _k_pad(spec)
        self.layout = _scratch_layout(spec)

    # constants ------------------------------------------------------------------------------
    def table(self, what: str, d: int, data: np.ndarray) -> str:
        return self.ctx.const_array(f"{self.node.name}_{what}{d}", np.ascontiguousarray(data))

    def bias(self, what: str, d: int, data: np.ndarray) -> str | None:
        return self.table(what, d, data) if np.any(data) else None

    def clip(self, v: str) -> str:
        c = self.spec.clip
        if c is None:
            return ""
        lo, hi = c_float(-c), c_float(c)
        return f"{v} = {v} < {lo} ? {lo} : ({v} > {hi} ? {hi} : {v});\n"

    def act(self, key: str, v: str) -> str:
        return ACTS[key].c(v)

    # state ----------------------------------------------------------------------------------
    def load_state(self, idx: int, dst: str, d: int) -> str:
        name = _input(self.node, idx)
        const = self.ctx.g.const(name)
        if not name or (const is not None and not np.any(const)):
            return f"for (int j = 0; j < {self.spec.hidden}; ++j) {dst}[j] = 0.0f;\n"
        src = self.ctx.inp(idx)
        return (f"for (int j = 0; j < {self.spec.hidden}; ++j) "
                f"{dst}[j] = {src}[{self.spec.state_offset(d)} + j];\n")

    def store_state(self, out_idx: int, src: str, d: int) -> str:
        if not _output(self.node, out_idx):
            return ""
        dst = self.ctx.out(out_idx)
        return (f"for (int j = 0; j < {self.spec.hidden}; ++j) "
                f"{dst}[{self.spec.state_offset(d)} + j] = {src}[j];\n")

    # one time step ----------------------------------------------------------------------------
    def step(self, d: int, dw: DirWeights) -> str:
        s = self.spec
        acts = s.acts[d]
        y = (f"{self.ctx.out(0)}[{s.y_offset(d)} + j] = h[j];\n"
             if _output(self.node, 0) else "")
        if s.kind == "RNN":
            code = matvec(self.ctx, "gates", self.bias("b", d, dw.wb + dw.rb),
                          f"wr{d}", _cat(dw.w, dw.r), "xh")
            body = "float a = gates[j];\n" + self.clip("a") + f"h[j] = {self.act(acts[0], 'a')};\n"
            return code + self.loop(body + y)
        if s.kind == "GRU":
            return self.gru_step(d, dw, y)
        return self.lstm_step(d, dw, y)

    def y_row(self, d: int, y: str) -> str | None:
        """The address of direction ``d``'s output row at step t (None without output Y)."""
        return f"&{self.ctx.out(0)}[{self.spec.y_offset(d)}]" if y else None

    def asm_or_c(self, cell: str, loop: str) -> str:
        """The cell update as ``cell`` (assembly) on FPU Cortex-M cores, else ``loop``."""
        self.ctx.helper("EDGEC_CELL_ASM", CELL_ASM_DEFINE)
        return "#ifdef EDGEC_CELL_ASM\n" + cell + "#else\n" + loop + "#endif\n"

    def loop(self, body: str) -> str:
        return f"for (int j = 0; j < {self.spec.hidden}; ++j) {{\n{_indent(body, 1)}}}\n"

    def gru_step(self, d: int, dw: DirWeights, y: str) -> str:
        s = self.spec
        hs = s.hidden
        f, g = s.acts[d][0], s.acts[d][1]
        # FPU Cortex-M: the update loops in assembly (edgec/ops/rnn_cell_asm.py) for the default
        # activations, no clip, and buffers within a VLDR offset of h; then z and r come unit by
        # unit ([z, r] of unit j at 2 j: rows permuted at compile time), on the C path too
        gh_off = 4 * (self.layout["gates"] - s.input_size + 2 * hs)  # bytes from h[j] to gh[j]
        asm = ((f, g) == ("sigmoid", "tanh") and s.clip is None
               and gh_off + 4 * hs <= 1020 and 4 * self.k_pad <= 1020)
        zr = slice(0, 2 * hs)
        hh = slice(2 * hs, 3 * hs)
        perm = (np.arange(2 * hs).reshape(2, hs).T.reshape(-1) if asm
                else np.arange(2 * hs))
        code = matvec(self.ctx, "gates", self.bias("bzr", d, (dw.wb[zr] + dw.rb[zr])[perm]),
                      f"wrzr{d}", _cat(dw.w[zr], dw.r[zr])[perm], "xh")
        zi, ri = ("2 * j", "2 * j + 1") if asm else ("j", f"j + {hs}")
        gate_zr = (f"float z = gates[{zi}];\n" + self.clip("z") + f"float r = gates[{ri}];\n"
                   + self.clip("r"))
        update = f"h[j] = (1.0f - z) * {self.act(g, 'c')} + z * h[j];\n"
        yp = self.y_row(d, y)
        if asm:  # (its define before the candidate walks' helpers in the file)
            self.ctx.helper("EDGEC_CELL_ASM", CELL_ASM_DEFINE)

        def either(cell: str, loop: str) -> str:
            return self.asm_or_c(cell, loop) if asm else loop

        if s.linear_before_reset:
            code += matvec(self.ctx, "gh", self.bias("rbh", d, dw.rb[hh]),
                           f"rh{d}", dw.r[hh], "h")
            code += matvec(self.ctx, "gx", self.bias("wbh", d, dw.wb[hh]),
                           f"wh{d}", dw.w[hh], "xt")
            body = (gate_zr + f"z = {self.act(f, 'z')};\nr = {self.act(f, 'r')};\n"
                    "float c = gx[j] + r * gh[j];\n"
                    + self.clip("c") + update)
            return code + either(gru_cell_asm(hs, "gates", "h", yp, gh_off, gh_off + 4 * hs),
                                 self.loop(body + y))
        # linear_before_reset = 0: the candidate reads (r . h) through Rh
        code += either("(void)rh; /* written at its offset from h */\n"
                       + gru_gates_asm(hs, "gates", "h", 4 * self.k_pad),
                       self.loop(gate_zr + f"gates[{zi}] = {self.act(f, 'z')};\n"
                                 f"rh[j] = {self.act(f, 'r')} * h[j];\n"))
        code += matvec(self.ctx, "gh", self.bias("bh", d, dw.wb[hh] + dw.rb[hh]),
                       f"wrh{d}", _cat(dw.w[hh], dw.r[hh]), "xrh")
        body = (f"const float z = gates[{zi}];\nfloat c = gh[j];\n" + self.clip("c")
                + update)
        return code + either(gru_update_asm(hs, "gates", "h", yp, gh_off), self.loop(body + y))

    def lstm_step(self, d: int, dw: DirWeights, y: str) -> str:
        s = self.spec
        hs = s.hidden
        f, g, h_act = s.acts[d]
        # gates unit by unit: [i, o, f, c] of unit j at 4 j (rows permuted at compile time), so
        # the cell reads a unit's four gates together
        perm = np.arange(4 * hs).reshape(4, hs).T.reshape(-1)
        code = matvec(self.ctx, "gates", self.bias("b", d, (dw.wb + dw.rb)[perm]),
                      f"wr{d}", _cat(dw.w, dw.r)[perm], "xh")
        p = self.table("p", d, dw.p) if dw.p is not None else None

        def peep(k: int, cell: str) -> str:
            return f" + {p}[j + {k * hs}] * {cell}" if p else ""

        body = f"float gi = gates[4 * j]{peep(0, 'c[j]')};\n" + self.clip("gi")
        body += f"gi = {self.act(f, 'gi')};\n"
        if s.input_forget:
            body += "const float gf = 1.0f - gi;\n"
        else:
            body += (f"float gf = gates[4 * j + 2]{peep(2, 'c[j]')};\n" + self.clip("gf")
                     + f"gf = {self.act(f, 'gf')};\n")
        body += ("float gc = gates[4 * j + 3];\n" + self.clip("gc")
                 + f"gc = {self.act(g, 'gc')};\n"
                 "const float cn = gf * c[j] + gi * gc;\n"
                 f"float go = gates[4 * j + 1]{peep(1, 'cn')};\n" + self.clip("go")
                 + f"go = {self.act(f, 'go')};\n"
                 f"c[j] = cn;\nh[j] = go * {self.act(h_act, 'cn')};\n")
        loop = self.loop(body + y)
        if ((f, g, h_act) != ("sigmoid", "tanh", "tanh") or s.clip is not None or p is not None
                or s.input_forget):
            return code + loop
        # FPU Cortex-M: the same update as one assembly loop (edgec/ops/rnn_cell_asm.py)
        cell = lstm_cell_asm(hs, "gates", "h", self.y_row(d, y))  # c follows h in the scratch
        return code + self.asm_or_c(cell, loop)

    # the whole kernel -------------------------------------------------------------------------
    def kernel(self) -> str:
        s = self.spec
        hs, ni = s.hidden, s.input_size
        # [x_t | h] side by side: one walk over [W | R] per row block (x_t copied in per step)
        lines = [f"float *const xh = {self.ctx.scratch()};", f"float *const h = xh + {ni};"]
        if "c" in self.layout:
            lines.append(f"float *const c = xh + {self.layout['c']};")
        if "xrh" in self.layout:  # [x_t | r * h] for the candidate
            lines.append(f"float *const xrh = xh + {self.layout['xrh']};")
            lines.append(f"float *const rh = xrh + {ni};")
        lines.append(f"float *const gates = xh + {self.layout['gates']};")
        if s.kind == "GRU":  # candidate rows; linear_before_reset: gh = R h + Rb, gx = W x + Wb
            lines.append(f"float *const gh = gates + {2 * hs};")
            if s.linear_before_reset:
                lines.append(f"float *const gx = gates + {3 * hs};")
        code = "\n".join(lines) + "\n"
        for d in range(s.dirs):
            dw = _dir_weights(s, self.values, d)
            order = "reverse" if s.reverse[d] else "forward"
            inner = f"const int t = {s.seq - 1} - s;\n" if s.reverse[d] else "const int t = s;\n"
            inner += f"const float *const xt = {self.ctx.inp(0)} + {s.x_offset()};\n"
            inner += f"for (int i = 0; i < {s.input_size}; ++i) xh[i] = xt[i];\n"
            if s.kind == "GRU" and not s.linear_before_reset:
                inner += f"for (int i = 0; i < {s.input_size}; ++i) xrh[i] = xt[i];\n"
            inner += self.step(d, dw)
            per_batch = self.load_state(5, "h", d)
            if s.kind == "LSTM":
                per_batch += self.load_state(6, "c", d)
            per_batch += (f"for (int s = 0; s < {s.seq}; ++s) {{\n{_indent(inner, 1)}}}\n"
                          + self.store_state(1, "h", d))
            if s.kind == "LSTM":
                per_batch += self.store_state(2, "c", d)
            code += (f"/* direction {d}: {order} */\n"
                     f"for (int b = 0; b < {s.batch}; ++b) {{\n{_indent(per_batch, 1)}}}\n")
        return code


def _k_pad(spec: RnnSpec) -> int:
    """Length of the [x_t | h] buffer: input plus hidden size (the walk takes any k)."""
    return spec.input_size + spec.hidden


def _scratch_layout(spec: RnnSpec) -> dict[str, int]:
    """Floats from the scratch's start to its buffers after [x_t | h]: ``c`` (LSTM), ``xrh``
    ([x_t | r * h], GRU with linear_before_reset = 0), ``gates``."""
    off, out = _k_pad(spec), {}
    if spec.kind == "LSTM":
        out["c"] = off
        off += spec.hidden
    if spec.kind == "GRU" and not spec.linear_before_reset:
        out["xrh"] = off
        off += _k_pad(spec)
    out["gates"] = off
    return out


def scratch_floats(spec: RnnSpec) -> int:
    """The scratch: the buffers of :func:`_scratch_layout`, then the gates (the GRU's z, r and
    candidate rows; with linear_before_reset = 1 the candidate's x part apart)."""
    hs = spec.hidden
    gates = {"RNN": hs, "LSTM": 4 * hs}.get(spec.kind, (4 if spec.linear_before_reset else 3) * hs)
    return _scratch_layout(spec)["gates"] + gates


def _cat(w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """[W | R]: the rows' input and recurrent weights side by side (walked over [x_t | h])."""
    return np.concatenate([np.asarray(w, np.float32), np.asarray(r, np.float32)], axis=1)


@register
class Recurrent(Op):
    types = ("RNN", "GRU", "LSTM")

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        s = rnn_spec(node, g)
        if s.layout == 0:
            y: Shape = (s.seq, s.dirs, s.batch, s.hidden)
            st: Shape = (s.dirs, s.batch, s.hidden)
        else:
            y, st = (s.batch, s.seq, s.dirs, s.hidden), (s.batch, s.dirs, s.hidden)
        outs = [(y, "float32"), (st, "float32")]
        if s.kind == "LSTM":
            outs.append((st, "float32"))
        return outs

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        return rnn_reference(node, inputs, rnn_spec(node, g))

    def macs(self, node: Node, g: Graph) -> int:
        s = rnn_spec(node, g)
        return s.dirs * s.batch * s.seq * s.gates * s.hidden * (s.input_size + s.hidden)

    def scratch(self, node: Node, g: Graph) -> int:
        return scratch_floats(rnn_spec(node, g))

    def state_inplace(self, node: Node, i_in: int, i_out: int) -> bool:
        # per direction and batch item the kernel loads initial_h/c into scratch before the
        # sequence and stores Y_h/Y_c after it, at the same offsets
        return (i_in, i_out) in ((5, 1), (6, 2))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        return _Emitter(node, ctx, rnn_spec(node, ctx.g)).kernel()
