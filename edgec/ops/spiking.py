"""Spiking neurons (LIF state updates) and the event-driven dense kernel for spike inputs.

Neuron ops (not ONNX ops; built by the PyTorch front-end: ``edgec.frontend.pytorch.lib_spiking``)
update one neuron per element. State comes in as inputs and leaves as outputs (the front-end pairs
them into ``<name>_step`` state); parameters are constant inputs broadcast to the input's shape
(a scalar becomes a C literal, a per-neuron vector a flash table). Every update is written with the
same float32 operations, in the same order, as the library it comes from, so spike trains match
bit for bit (H(x) is strict: a neuron fires when its membrane is *above* threshold).

* ``SnnLeaky``     snnTorch ``Leaky``: inputs x, mem, beta (clamped), threshold → spk, mem'.
* ``SnnSynaptic``  snnTorch ``Synaptic``: x, syn, mem, alpha, beta, threshold → spk, syn', mem'.
  Both: attrs ``reset`` (subtract | zero | none), ``reset_delay`` (1: the reset R = H(mem - θ)
  is recomputed from the previous membrane, as snnTorch does by default).
* ``NorseLIF``     Norse ``LIFCell``/``LIFRecurrentCell``: x, v, i, c_mem = dt·τ_mem⁻¹,
  c_syn = -dt·τ_syn⁻¹, v_leak, v_th, v_reset[, x_rec] → z, v', i'.
* ``LIF``          ``edgec.nn.LIF`` (also the blimp controllers' neuron): x, mem, syn|'', trace|'',
  beta, threshold, alpha|'', adapt_decay|'', adapt_add|'' → spk, mem'[, syn'][, trace'].
  syn = α·syn + x; mem = β·mem + syn; θ = θ0 + add·trace; s = H(mem - θ); immediate reset
  (subtract: mem - s·θ, zero: mem - s·mem); trace = a·trace + s.
* ``LeakyIntegrator``  x, y, λ, 1-λ → y' = λ·y + (1-λ)·x (the controllers' output neuron).

``EventDense`` (x, W [N, K], bias) computes y = bias + W·x for binary x by adding the weight
columns of the active inputs only: no multiplications, and the work scales with the activity.
W is stored column-major ([K][N]) so each active input adds one contiguous column. It is
inserted by ``edgec.passes.events.use_event_kernels`` for Gemm/MatMul nodes with constant
weights fed by a neuron op's spikes, and by the front-end for recurrent spike products.

Bit-packed spikes: when every consumer of a neuron op's spike output is an ``EventDense``, the pass
sets ``packed=1`` on both. The spike tensor then holds, per row of K spikes, ceil(K/32) 32-bit
words (bit k % 32 of word k / 32), stored in the float arena (the IR tensor is float32 of shape
[..., ceil(K/32)] whose bit patterns are the words; C reads and writes them with memcpy), so the
arena holds K/32 words instead of K floats and the kernel skips 32 silent inputs per word test.
Spikes that are graph outputs or state (Norse's recurrent z) stay float.
"""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, prod, register, unsupported

RESETS = ("subtract", "zero", "none")
#: ops whose output 0 is a binary spike tensor (state outputs follow it)
NEURON_OPS = ("SnnLeaky", "SnnSynaptic", "NorseLIF", "LIF")
F32 = np.float32

CTZ_HELPER = """/* index of the lowest set bit of a non-zero word */
static int edgec_ctz32(uint32_t v)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(v);
#else
    int n = 0;
    while (!(v & 1u)) {
        v >>= 1;
        ++n;
    }
    return n;
#endif
}"""


# --- parameters -------------------------------------------------------------------------------


def _param(node: Node, g: Graph, idx: int, shape: Shape) -> np.ndarray:
    name = node.inputs[idx] if len(node.inputs) > idx else ""
    data = g.const(name)
    if data is None:
        raise unsupported(node, f"parameter input {idx} must be a constant")
    try:
        return np.broadcast_to(np.asarray(data, F32), shape)
    except ValueError:
        raise unsupported(
            node, f"parameter of shape {tuple(data.shape)} does not broadcast to {tuple(shape)}"
        ) from None


def _lanes(node: Node, g: Graph, idxs: list[int]) -> tuple[int, int]:
    """(rows, cols) of the C loop: parameter tables are indexed by the column."""
    shape = g.shape(node.inputs[0])
    n = prod(shape)
    cols = prod(shape[1:]) if len(shape) >= 2 else n
    for i in idxs:
        if i < len(node.inputs) and node.inputs[i]:
            p = _param(node, g, i, shape).reshape(n // max(cols, 1), cols)
            if not np.all(p == p[:1]):
                return 1, n  # varies along the batch: a full table
    return n // max(cols, 1), cols


class _Params:
    """C expressions of the parameters: a literal when uniform, else ``table[j]``."""

    def __init__(self, node: Node, ctx: EmitContext, cols: int):
        self.node, self.ctx, self.cols = node, ctx, cols
        self.shape = ctx.g.shape(node.inputs[0])

    def __call__(self, idx: int) -> str:
        p = _param(self.node, self.ctx.g, idx, self.shape).reshape(-1)
        if np.all(p == p[0]):
            return c_float(float(p[0]))
        table = np.ascontiguousarray(p[: self.cols])
        return self.ctx.const_array(f"{self.node.name}_p{idx}", table) + "[j]"


# --- packing ------------------------------------------------------------------------------------


def words(k: int) -> int:
    return (k + 31) // 32


def pack_spikes(s: np.ndarray) -> np.ndarray:
    """Binary spikes [..., K] → float32 bit views of uint32 words [..., ceil(K/32)]."""
    s = np.asarray(s)
    k = s.shape[-1]
    bits = (s.reshape(-1, k) > 0).astype(np.uint64)
    pad = words(k) * 32 - k
    bits = np.pad(bits, ((0, 0), (0, pad))).reshape(bits.shape[0], words(k), 32)
    w = (bits << np.arange(32, dtype=np.uint64)).sum(axis=2).astype(np.uint32)
    return w.view(np.float32).reshape(*s.shape[:-1], words(k))


def unpack_spikes(p: np.ndarray, k: int) -> np.ndarray:
    w = np.ascontiguousarray(p, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (w[..., :, None] >> np.arange(32, dtype=np.uint64)) & 1
    return bits.reshape(*p.shape[:-1], -1)[..., :k].astype(np.float32)


def spike_shape(node: Node, shape: Shape) -> Shape:
    if node.attr("packed", 0):
        return tuple(shape[:-1]) + (words(shape[-1]),)
    return tuple(shape)


def can_pack(node: Node, g: Graph) -> bool:
    """Packing needs one row of the C loop to be one row of spikes (rank ≤ 2, per-row tables)."""
    shape = g.shape(node.inputs[0])
    if not shape or len(shape) > 2:
        return False
    return _lanes(node, g, _param_idxs(node))[1] == shape[-1]


def _param_idxs(node: Node) -> list[int]:
    return {
        "SnnLeaky": [2, 3],
        "SnnSynaptic": [3, 4, 5],
        "NorseLIF": [3, 4, 5, 6, 7],
        "LIF": [4, 5, 6, 7, 8],
    }[node.op]


# --- the neuron ops ----------------------------------------------------------------------------


def _check_reset(node: Node) -> str:
    reset = str(node.attr("reset", "subtract"))
    if reset not in RESETS:
        raise unsupported(node, f"reset '{reset}' (supported: {', '.join(RESETS)})")
    return reset


def _h(x: np.ndarray, thr: np.ndarray | F32) -> np.ndarray:
    return (x > thr).astype(F32)


class _Neuron(Op):
    exact_fp = True  # spikes must equal the framework's: thresholds see the same roundings

    #: input indices of the state tensors (same shape as x)
    state_inputs: tuple[int, ...] = ()

    def n_outputs(self, node: Node) -> int:
        return 1 + len(self._present_states(node))

    def _present_states(self, node: Node) -> list[int]:
        return [i for i in self.state_inputs if len(node.inputs) > i and node.inputs[i]]

    def state_inplace(self, node: Node, i_in: int, i_out: int) -> bool:
        # element-wise: element i of every input is read before element i of any output is
        # written, and each new state is written from its own old one
        present = self._present_states(node)
        return i_in in present and i_out == 1 + present.index(i_in)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = g.shape(node.inputs[0])
        rec = node.inputs[8] if node.op == "NorseLIF" and len(node.inputs) > 8 else ""
        if rec and g.shape(rec) != shape:
            raise unsupported(node, f"recurrent input {g.shape(rec)} != {shape}")
        for i in self._present_states(node):
            if g.shape(node.inputs[i]) != shape:
                raise unsupported(
                    node,
                    f"state input {node.inputs[i]} has shape {g.shape(node.inputs[i])}, "
                    f"the input has {shape}",
                )
        _check_reset(node)
        for i in _param_idxs(node):
            if len(node.inputs) > i and node.inputs[i]:
                _param(node, g, i, shape)
        outs = [(spike_shape(node, shape), "float32")]
        outs += [(shape, "float32") for _ in self._present_states(node)]
        return outs

    def macs(self, node: Node, g: Graph) -> int:
        return 4 * prod(g.shape(node.inputs[0]))

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        shape = g.shape(node.inputs[0])
        x = np.asarray(inputs[0], F32)
        p = {
            i: _param(node, g, i, shape)
            for i in _param_idxs(node)
            if len(node.inputs) > i and node.inputs[i]
        }
        spk, states = self.update(node, x, inputs, p)
        if node.attr("packed", 0):
            spk = pack_spikes(spk)
        return [spk.astype(F32, copy=False)] + [s.astype(F32, copy=False) for s in states]

    def update(
        self, node: Node, x: np.ndarray, ins: list[np.ndarray | None], p: dict[int, np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        raise NotImplementedError

    def body(self, node: Node, par: _Params, ins: dict[int, str]) -> tuple[list[str], list[str]]:
        """C statements for element i (parameters by ``par(idx)``), the spike variable ``s`` and
        the expressions of the new states (in output order after the spikes)."""
        raise NotImplementedError

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        shape = g.shape(node.inputs[0])
        rows, cols = _lanes(node, g, _param_idxs(node))
        par = _Params(node, ctx, cols)
        present = [0, *self._present_states(node)]
        ins = {i: ctx.inp(i) for i in present}
        if node.op == "NorseLIF" and len(node.inputs) > 8 and node.inputs[8]:
            ins[8] = ctx.inp(8)
        stmts, new_states = self.body(node, par, ins)
        packed = bool(node.attr("packed", 0))
        lines = [f"for (int rw = 0; rw < {rows}; ++rw) {{"]
        if packed:
            lines.append("    uint32_t word = 0u;")
        lines.append(f"    for (int j = 0; j < {cols}; ++j) {{")
        lines.append(f"        const int i = rw * {cols} + j;")
        lines += ["        " + s for s in stmts]
        if packed:
            k = shape[-1]
            lines += [
                "        word |= (uint32_t)(s > 0.0f) << (j & 31);",
                f"        if ((j & 31) == 31 || j == {k - 1}) {{",
                f"            memcpy(y0 + rw * {words(k)} + (j >> 5), &word, sizeof word);",
                "            word = 0u;",
                "        }",
            ]
        else:
            lines.append("        y0[i] = s;")
        lines += [f"        y{o + 1}[i] = {e};" for o, e in enumerate(new_states)]
        lines += ["    }", "}"]
        return "\n".join(lines) + "\n"


def _delayed_reset_c(reset: str, delay: bool, thr: str) -> list[str]:
    """snnTorch's reset_delay=False: the new spike resets at once (do_reset = s - r)."""
    if delay or reset == "none":
        return []
    if reset == "subtract":
        return [f"m = m - (s - r) * {thr};"]
    return ["m = m - (s - r) * m;"]


def _delayed_reset_ref(reset: str, delay: bool, m: np.ndarray, s: np.ndarray, r: np.ndarray,
                       thr: np.ndarray) -> np.ndarray:
    if delay or reset == "none":
        return m
    d = (s - r).astype(F32)
    return (m - d * (thr if reset == "subtract" else m)).astype(F32)


@register
class SnnLeaky(_Neuron):
    types = ("SnnLeaky",)
    state_inputs = (1,)

    def update(self, node, x, ins, p):  # type: ignore[no-untyped-def]
        reset, delay = _check_reset(node), bool(node.attr("reset_delay", 1))
        mem0 = np.asarray(ins[1], F32)
        beta, thr = p[2], p[3]
        r = _h(mem0, thr)
        if reset == "zero":
            m = beta * ((F32(1) - r) * mem0) + x
        else:
            m = beta * mem0 + x
            if reset == "subtract":
                m = m - r * thr
        s = _h(m, thr)
        m = _delayed_reset_ref(reset, delay, m, s, r, thr)
        return s, [m]

    def body(self, node, par, ins):  # type: ignore[no-untyped-def]
        reset, delay = _check_reset(node), bool(node.attr("reset_delay", 1))
        beta, thr = par(2), par(3)
        st = [f"const float m0 = {ins[1]}[i];", f"const float r = m0 > {thr} ? 1.0f : 0.0f;"]
        if reset == "zero":
            st.append(f"float m = {beta} * ((1.0f - r) * m0) + {ins[0]}[i];")
        else:
            st.append(f"float m = {beta} * m0 + {ins[0]}[i];")
            if reset == "subtract":
                st.append(f"m = m - r * {thr};")
        st.append(f"const float s = m > {thr} ? 1.0f : 0.0f;")
        st += _delayed_reset_c(reset, delay, thr)
        if delay or reset == "none":
            st.append("(void)r;")
        return st, ["m"]


@register
class SnnSynaptic(_Neuron):
    types = ("SnnSynaptic",)
    state_inputs = (1, 2)

    def update(self, node, x, ins, p):  # type: ignore[no-untyped-def]
        reset, delay = _check_reset(node), bool(node.attr("reset_delay", 1))
        syn0, mem0 = np.asarray(ins[1], F32), np.asarray(ins[2], F32)
        alpha, beta, thr = p[3], p[4], p[5]
        r = _h(mem0, thr)
        syn = alpha * syn0 + x
        m = beta * mem0 + syn
        if reset == "subtract":
            m = m - r * thr
        elif reset == "zero":
            m = m - m * r
        s = _h(m, thr)
        m = _delayed_reset_ref(reset, delay, m, s, r, thr)
        return s, [syn, m]

    def body(self, node, par, ins):  # type: ignore[no-untyped-def]
        reset, delay = _check_reset(node), bool(node.attr("reset_delay", 1))
        alpha, beta, thr = par(3), par(4), par(5)
        st = [
            f"const float m0 = {ins[2]}[i];",
            f"const float r = m0 > {thr} ? 1.0f : 0.0f;",
            f"const float syn = {alpha} * {ins[1]}[i] + {ins[0]}[i];",
            f"float m = {beta} * m0 + syn;",
        ]
        if reset == "subtract":
            st.append(f"m = m - r * {thr};")
        elif reset == "zero":
            st.append("m = m - m * r;")
        st.append(f"const float s = m > {thr} ? 1.0f : 0.0f;")
        st += _delayed_reset_c(reset, delay, thr)
        if reset == "none":
            st.append("(void)r;")
        return st, ["syn", "m"]


@register
class NorseLIF(_Neuron):
    """Norse's Euler step (lif_feed_forward_step / lif_step); x_rec (input 8) is the recurrent
    current added after x: i_jump = (i + x) + x_rec."""

    types = ("NorseLIF",)
    state_inputs = (1, 2)

    def update(self, node, x, ins, p):  # type: ignore[no-untyped-def]
        v0, i0 = np.asarray(ins[1], F32), np.asarray(ins[2], F32)
        cm, cs, vl, vth, vr = p[3], p[4], p[5], p[6], p[7]
        i_new = i0 + x
        if len(ins) > 8 and ins[8] is not None:
            i_new = i_new + np.asarray(ins[8], F32)
        vd = v0 + cm * ((vl - v0) + i_new)
        idec = i_new + cs * i_new
        z = _h(vd, vth)
        v = (F32(1) - z) * vd + z * vr
        return z, [v, idec]

    def body(self, node, par, ins):  # type: ignore[no-untyped-def]
        cm, cs, vl, vth, vr = (par(k) for k in range(3, 8))
        cur = f"{ins[2]}[i] + {ins[0]}[i]"
        st = [f"float in = {cur};"]
        if 8 in ins:
            st.append(f"in = in + {ins[8]}[i];")
        st += [
            f"const float v0 = {ins[1]}[i];",
            f"const float vd = v0 + {cm} * (({vl} - v0) + in);",
            f"const float id = in + {cs} * in;",
            f"const float s = vd > {vth} ? 1.0f : 0.0f;",
        ]
        return st, [f"(1.0f - s) * vd + s * {vr}", "id"]


@register
class LIF(_Neuron):
    types = ("LIF",)
    state_inputs = (1, 2, 3)

    def update(self, node, x, ins, p):  # type: ignore[no-untyped-def]
        reset = _check_reset(node)
        mem0 = np.asarray(ins[1], F32)
        beta, thr = p[4], p[5]
        states: list[np.ndarray] = []
        cur = x
        syn = None
        if ins[2] is not None:
            syn = p[6] * np.asarray(ins[2], F32) + x
            cur = syn
        m = beta * mem0 + cur
        theta = thr
        if ins[3] is not None:
            theta = thr + p[8] * np.asarray(ins[3], F32)
        s = _h(m, theta)
        if reset == "subtract":
            m = m - s * theta
        elif reset == "zero":
            m = m - s * m
        states.append(m)
        if syn is not None:
            states.append(syn)
        if ins[3] is not None:
            states.append(p[7] * np.asarray(ins[3], F32) + s)
        return s, states

    def body(self, node, par, ins):  # type: ignore[no-untyped-def]
        reset = _check_reset(node)
        beta, thr = par(4), par(5)
        st: list[str] = []
        cur = f"{ins[0]}[i]"
        news = ["m"]
        if 2 in ins:
            st.append(f"const float syn = {par(6)} * {ins[2]}[i] + {cur};")
            cur = "syn"
            news.append("syn")
        st.append(f"float m = {beta} * {ins[1]}[i] + {cur};")
        theta = thr
        if 3 in ins:
            st.append(f"const float th = {thr} + {par(8)} * {ins[3]}[i];")
            theta = "th"
            news.append(f"{par(7)} * {ins[3]}[i] + s")
        st.append(f"const float s = m > {theta} ? 1.0f : 0.0f;")
        if reset == "subtract":
            st.append(f"m = m - s * {theta};")
        elif reset == "zero":
            st.append("m = m - s * m;")
        return st, news


@register
class LeakyIntegrator(Op):
    """y' = λ·y + (1-λ)·x, with λ (input 2) and 1-λ (input 3) constant (as torch computed them)."""

    types = ("LeakyIntegrator",)

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        shape = g.shape(node.inputs[0])
        if g.shape(node.inputs[1]) != shape:
            raise unsupported(node, f"state {g.shape(node.inputs[1])} != input {shape}")
        for i in (2, 3):
            _param(node, g, i, shape)
        return [(shape, "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        shape = g.shape(node.inputs[0])
        lam, oml = _param(node, g, 2, shape), _param(node, g, 3, shape)
        y = lam * np.asarray(inputs[1], F32) + oml * np.asarray(inputs[0], F32)
        return [y.astype(F32)]

    def macs(self, node: Node, g: Graph) -> int:
        return 2 * prod(g.shape(node.inputs[0]))

    def emit(self, node: Node, ctx: EmitContext) -> str:
        rows, cols = _lanes(node, ctx.g, [2, 3])
        par = _Params(node, ctx, cols)
        x, y0 = ctx.inp(0), ctx.inp(1)
        return (
            f"for (int rw = 0; rw < {rows}; ++rw) {{\n"
            f"    for (int j = 0; j < {cols}; ++j) {{\n"
            f"        const int i = rw * {cols} + j;\n"
            f"        y0[i] = {par(2)} * {y0}[i] + {par(3)} * {x}[i];\n"
            f"    }}\n"
            f"}}\n"
        )


# --- event-driven dense layer ------------------------------------------------------------------


def _event_dims(node: Node, g: Graph) -> tuple[int, int, int]:
    """(rows M, inputs K, outputs N)."""
    w = g.const(node.inputs[1])
    if w is None or w.ndim != 2:
        raise unsupported(node, "EventDense needs a constant 2-D weight [N, K]")
    n, k = (int(d) for d in w.shape)
    xs = g.shape(node.inputs[0])
    kx = int(node.attr("k", 0)) if node.attr("packed", 0) else (xs[-1] if xs else 1)
    if kx != k or (node.attr("packed", 0) and xs[-1] != words(k)):
        raise unsupported(node, f"spike input {xs} does not match weight {tuple(w.shape)}")
    return prod(xs[:-1]), k, n


@register
class EventDense(Op):
    types = ("EventDense",)
    fusable = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        _, _, n = _event_dims(node, g)
        if len(node.inputs) > 2 and node.inputs[2]:
            b = g.const(node.inputs[2])
            if b is None or b.size != n:
                raise unsupported(node, f"EventDense bias must be a constant of {n} values")
        return [(tuple(g.shape(node.inputs[0])[:-1]) + (n,), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        m, k, n = _event_dims(node, g)
        x = np.asarray(inputs[0], F32)
        if node.attr("packed", 0):
            x = unpack_spikes(x, k)
        w = np.asarray(inputs[1], F32)
        y = x.reshape(m, k) @ w.T
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + np.asarray(inputs[2], F32).reshape(-1)
        return [y.reshape(*g.shape(node.inputs[0])[:-1], n).astype(F32)]

    def macs(self, node: Node, g: Graph) -> int:
        m, k, n = _event_dims(node, g)
        return m * k * n  # additions when every input spikes (no multiplications)

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        m, k, n = _event_dims(node, g)
        w = np.asarray(g.const(node.inputs[1]), F32)
        cols = ctx.const_array(f"{node.name}_wcols", np.ascontiguousarray(w.T))  # [K][N]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2]:
            bias = ctx.const_array(
                f"{node.name}_bias", np.asarray(g.const(node.inputs[2]), F32).reshape(-1)
            )
        x = ctx.inp(0)
        add_col = [
            f"        const float *restrict col = {cols} + k * {n};",
            f"        for (int o = 0; o < {n}; ++o) yr[o] += col[o];",
        ]
        lines = [f"for (int m = 0; m < {m}; ++m) {{", f"    float *restrict yr = y0 + m * {n};"]
        init = f"{bias}[o]" if bias else "0.0f"
        lines.append(f"    for (int o = 0; o < {n}; ++o) yr[o] = {init};")
        if node.attr("packed", 0):
            nw = words(k)
            ctz = ctx.helper("edgec_ctz32", CTZ_HELPER)
            lines += [
                f"    for (int wd = 0; wd < {nw}; ++wd) {{",
                "        uint32_t bits;",
                f"        memcpy(&bits, {x} + m * {nw} + wd, sizeof bits);",
                "        while (bits) {",
                f"            const int k = wd * 32 + {ctz}(bits);",
                "            bits &= bits - 1u;",
            ]
            lines += ["    " + ln for ln in add_col]
            lines += ["        }", "    }"]
        else:
            lines += [
                f"    const float *xr = {x} + m * {k};",
                f"    for (int k = 0; k < {k}; ++k) {{",
                "        if (xr[k] == 0.0f) continue;",
            ]
            lines += add_col
            lines.append("    }")
        if node.attrs.get("_act") is not None:
            lines.append(f"    for (int o = 0; o < {n}; ++o) {{")
            lines.append("        const float v = yr[o];")
            lines.append(f"        yr[o] = {ctx.act('v')};")
            lines.append("    }")
        lines.append("}")
        return "\n".join(lines) + "\n"
