"""Liquid-state-machine reservoirs from edgec's seeded generator: op ``LsmReservoir``.

The generator (bit-identical in numpy and in the emitted C, so firmware can regenerate weights
instead of storing them) is counter-based: every value is a pure function of
``(seed, stream, index)``, so any weight can be computed on its own, in any order.

* ``mix32(x)``: ``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``
  (uint32 arithmetic, wrapping; a bijection with full avalanche).
* ``key(seed, stream) = mix32(mix32(seed) ^ mix32(stream + 0x632be5ab))``.
* ``draw(key, i) = mix32((i * 0x9e3779b9) ^ key)`` for the 32-bit counter ``i``.
* Streams: 1 input mask, 2 input weights, 3 recurrent mask, 4 recurrent weights, 5 biases.
  Element ``(j, i)`` of a ``rows x cols`` matrix (``j`` the receiving neuron) has counter
  ``i_c = j * cols + i``.
* Mask: the synapse exists iff ``(draw(mask_key, i_c) >> 8) < round(density * 2^24)``; the
  recurrent matrix has no self-connections (``j == i``).
* Integer weight ``k`` from ``u = draw(weight_key, i_c)``: ``gaussian``: the sum of the four bytes
  of ``u`` minus 510 (Irwin-Hall, mean 0, sigma ``sqrt(21845)``, bounded by +-510); ``uniform``:
  ``2 * (u >> 22) - 1023`` (odd integers in [-1023, 1023]).
* Real weight ``w = c * k`` with the float32 constant ``c = scale / sigma`` (gaussian: ``scale`` is
  the standard deviation) or ``scale / 1023`` (uniform: ``w`` in ``[-scale, scale]``).

Integer weights keep the sums exact: ``W x = c * (K x)`` and ``K x`` is exact in float32 when the
inputs are integers (spikes, event counts) with ``sum |k x| < 2^24``, so the C's spike trains equal
PyTorch's whatever order either side adds in. For non-integer inputs the input currents match
within float rounding.

Per step, with ``s`` the previous spikes (floats 0/1) and everything float32 in this order::

    mem = (decay * mem) * (1 - s) + c_in * (K_in x) + c_rec * (K_rec s) + bias
    s = mem > v_th

``LsmReservoir`` inputs: ``x`` ``[T, n_in]`` (a window; ``T = 1`` for one tick), optional initial
``mem`` and ``spk`` ``[n_res]`` (zero when absent), optional ``bias`` ``[n_res]`` (constant).
Outputs: ``spikes`` ``[T, n_res]`` (attribute ``output="spikes"``) or the window's firing rate
``[n_res]`` (``output="rate"``: spike count / T), then optionally the final ``mem`` and ``spk``.
Attribute ``mode``: ``flash`` stores the synapses as constant column lists (row ``int16``, weight
``int16``), ``ram`` generates the same lists into static RAM on the first call, ``regen``
regenerates each needed column on every step (no weight storage at all). Columns are visited
only for non-zero inputs and for neurons that spiked (event-driven).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, register, unsupported

GOLDEN = 0x9E3779B9
STREAM_SALT = 0x632BE5AB
STREAM_IN_MASK, STREAM_IN_WEIGHT, STREAM_REC_MASK, STREAM_REC_WEIGHT, STREAM_BIAS = 1, 2, 3, 4, 5
GAUSS_SIGMA = math.sqrt(4 * (256 * 256 - 1) / 12)
UNIFORM_HALF_RANGE = 1023
DISTRIBUTIONS = ("gaussian", "uniform")
LSM_MODES = ("regen", "ram", "flash")
_M32 = np.uint64(0xFFFFFFFF)


def mix32(x: np.ndarray | int) -> np.ndarray:
    """The 32-bit mixer (uint32 in, uint32 out; numpy wraps the products modulo 2^32)."""
    v = np.asarray(x, dtype=np.uint32).copy()
    v ^= v >> np.uint32(16)
    v = ((v.astype(np.uint64) * np.uint64(0x7FEB352D)) & _M32).astype(np.uint32)
    v ^= v >> np.uint32(15)
    v = ((v.astype(np.uint64) * np.uint64(0x846CA68B)) & _M32).astype(np.uint32)
    v ^= v >> np.uint32(16)
    return v


def stream_key(seed: int, stream: int) -> int:
    s = mix32(np.uint32(seed & 0xFFFFFFFF))
    t = mix32(np.uint32((stream + STREAM_SALT) & 0xFFFFFFFF))
    return int(mix32(s ^ t))


def draw(key: int, counters: np.ndarray) -> np.ndarray:
    """``draw(key, i)`` for an array of counters ``i``."""
    c = np.asarray(counters, dtype=np.uint64)
    scrambled = ((c * np.uint64(GOLDEN)) & _M32).astype(np.uint32)
    return mix32(scrambled ^ np.uint32(key))


def int_weights(u: np.ndarray, dist: str) -> np.ndarray:
    """Integer weights ``k`` from draws ``u`` (int32)."""
    u = np.asarray(u, np.uint32)
    if dist == "gaussian":
        total = (u & 255) + ((u >> 8) & 255) + ((u >> 16) & 255) + (u >> 24)
        return total.astype(np.int32) - 510
    if dist == "uniform":
        return 2 * (u >> 22).astype(np.int32) - UNIFORM_HALF_RANGE
    raise ValueError(f"distribution {dist!r}: expected one of {', '.join(DISTRIBUTIONS)}")


def weight_step(scale: float, dist: str) -> np.float32:
    """The float32 ``c`` with ``w = c * k``."""
    sigma = GAUSS_SIGMA if dist == "gaussian" else float(UNIFORM_HALF_RANGE)
    return np.float32(float(scale) / sigma)


def threshold24(density: float) -> int:
    return int(round(float(density) * (1 << 24)))


def mask_matrix(mask_key: int, rows: int, cols: int, thr24: int, no_diagonal: bool) -> np.ndarray:
    """Which synapses of a ``rows x cols`` matrix exist (bool)."""
    idx = np.arange(rows * cols, dtype=np.uint64)
    keep = (draw(mask_key, idx) >> np.uint32(8)).astype(np.int64) < thr24
    keep = keep.reshape(rows, cols)
    if no_diagonal:
        d = min(rows, cols)
        keep[np.arange(d), np.arange(d)] = False
    return keep


def int_matrix(
    seed: int, mask_stream: int, weight_stream: int, rows: int, cols: int, density: float,
    dist: str, no_diagonal: bool = False,
) -> np.ndarray:
    """The masked integer matrix ``K`` ``[rows, cols]`` (int32) of one stream pair."""
    keep = mask_matrix(
        stream_key(seed, mask_stream), rows, cols, threshold24(density), no_diagonal
    )
    idx = np.arange(rows * cols, dtype=np.uint64)
    k = int_weights(draw(stream_key(seed, weight_stream), idx), dist).reshape(rows, cols)
    return np.where(keep, k, 0).astype(np.int32)


@dataclass(frozen=True)
class ReservoirSpec:
    """Everything that defines a generated reservoir (hashable: generation is cached)."""

    seed: int
    n_in: int
    n_res: int
    density_in: float = 0.1
    density_rec: float = 0.1
    scale_in: float = 1.0
    scale_rec: float = 1.0
    dist: str = "gaussian"
    decay: float = 0.9
    v_th: float = 1.0
    bias_mean: float = 0.0
    bias_scale: float = 0.0

    def validate(self) -> None:
        problems = []
        if not 0 <= self.seed < 2**32:
            problems.append(f"seed={self.seed} (need 0 <= seed < 2^32)")
        if self.n_in < 1 or self.n_res < 1 or self.n_res >= 32768 or self.n_in >= 32768:
            problems.append(f"sizes n_in={self.n_in}, n_res={self.n_res} (need 1..32767)")
        if self.n_res * max(self.n_in, self.n_res) >= 2**32:
            problems.append("more than 2^32 synapses")
        for key in ("density_in", "density_rec"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                problems.append(f"{key}={v} (need 0..1)")
        if self.dist not in DISTRIBUTIONS:
            problems.append(f"dist={self.dist!r} (need {' or '.join(DISTRIBUTIONS)})")
        for key in ("scale_in", "scale_rec", "decay", "v_th", "bias_mean", "bias_scale"):
            if not math.isfinite(getattr(self, key)):
                problems.append(f"{key} is not finite")
        if problems:
            raise ValueError("bad reservoir: " + "; ".join(problems))

    @property
    def c_in(self) -> np.float32:
        return weight_step(self.scale_in, self.dist)

    @property
    def c_rec(self) -> np.float32:
        return weight_step(self.scale_rec, self.dist)

    def attrs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @staticmethod
    def from_attrs(node: Node) -> ReservoirSpec:
        fields = ReservoirSpec.__dataclass_fields__
        missing = [k for k in ("seed", "n_in", "n_res") if k not in node.attrs]
        if missing:
            raise unsupported(node, f"missing attribute(s) {', '.join(missing)}")
        kw: dict[str, Any] = {}
        for k, f in fields.items():
            if k in node.attrs:
                v = node.attrs[k]
                kw[k] = str(v) if f.type == "str" else (int(v) if f.type == "int" else float(v))
        spec = ReservoirSpec(**kw)
        try:
            spec.validate()
        except ValueError as exc:
            raise unsupported(node, str(exc)) from None
        return spec


@functools.lru_cache(maxsize=16)
def generate(spec: ReservoirSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K_in [n_res, n_in], K_rec [n_res, n_res], bias [n_res])``: integer matrices (int32,
    read-only) and the float32 bias ``bias_mean + c_b * k_b`` (gaussian ``k_b``)."""
    spec.validate()
    k_in = int_matrix(
        spec.seed, STREAM_IN_MASK, STREAM_IN_WEIGHT, spec.n_res, spec.n_in, spec.density_in,
        spec.dist,
    )
    k_rec = int_matrix(
        spec.seed, STREAM_REC_MASK, STREAM_REC_WEIGHT, spec.n_res, spec.n_res, spec.density_rec,
        spec.dist, no_diagonal=True,
    )
    kb = int_weights(draw(stream_key(spec.seed, STREAM_BIAS), np.arange(spec.n_res)), "gaussian")
    c_b = weight_step(spec.bias_scale, "gaussian")
    bias = (np.float32(spec.bias_mean) + c_b * kb.astype(np.float32)).astype(np.float32)
    for arr in (k_in, k_rec, bias):
        arr.setflags(write=False)
    return k_in, k_rec, bias


def run_reservoir(
    spec: ReservoirSpec, x: np.ndarray, mem: np.ndarray, spk: np.ndarray, bias: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy reference over a window ``x [T, n_in]``: (spikes [T, n_res], mem, spk)."""
    k_in, k_rec, _ = generate(spec)
    kin32, krec32 = k_in.astype(np.float32), k_rec.astype(np.float32)
    decay, v_th = np.float32(spec.decay), np.float32(spec.v_th)
    c_in, c_rec = spec.c_in, spec.c_rec
    mem = np.asarray(mem, np.float32).reshape(-1).copy()
    spk = np.asarray(spk, np.float32).reshape(-1).copy()
    x2 = np.asarray(x, np.float32).reshape(-1, spec.n_in)
    out = np.zeros((x2.shape[0], spec.n_res), np.float32)
    for t in range(x2.shape[0]):
        in_sum = (kin32 @ x2[t]).astype(np.float32)
        rec_sum = (krec32 @ spk).astype(np.float32)
        m = (decay * mem) * (np.float32(1) - spk)
        m = m + c_in * in_sum
        m = m + c_rec * rec_sum
        if bias is not None:
            m = m + bias
        mem = m.astype(np.float32)
        spk = (mem > v_th).astype(np.float32)
        out[t] = spk
    return out, mem, spk


# --- the C generator ---------------------------------------------------------------------------

C_MIX = """static uint32_t edgec_lsm_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}"""

C_DRAW = """/* edgec's counter-based generator: draw(key, i) = mix32((i * 0x9e3779b9) ^ key) */
static uint32_t edgec_lsm_draw(uint32_t key, uint32_t i)
{
    return edgec_lsm_mix32((i * 0x9e3779b9U) ^ key);
}"""

C_WEIGHT = {
    "gaussian": """static int32_t edgec_lsm_k_gaussian(uint32_t u)
{
    return (int32_t)((u & 255U) + ((u >> 8) & 255U) + ((u >> 16) & 255U) + (u >> 24)) - 510;
}""",
    "uniform": """static int32_t edgec_lsm_k_uniform(uint32_t u)
{
    return 2 * (int32_t)(u >> 22) - 1023;
}""",
}


C_KEY = """static uint32_t edgec_lsm_key(uint32_t seed, uint32_t stream)
{
    return edgec_lsm_mix32(edgec_lsm_mix32(seed) ^ edgec_lsm_mix32(stream + 0x632be5abU));
}"""


#: GCC contracts ``a + b * c`` into one FMA across statements with -ffp-contract=fast (edgec's
#: firmware flags on FPU targets); the membrane update must round like PyTorch, so it is compiled
#: without contraction (clang contracts within one expression only, and the pragma stops that).
C_NO_CONTRACT = """#if defined(__GNUC__) && !defined(__clang__)
#define EDGEC_LSM_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define EDGEC_LSM_NO_CONTRACT
#endif"""


def generator_c_source() -> str:
    """The whole generator as standalone C99 (``#include <stdint.h>`` first): mix32, key, draw
    and both weight transforms. Generated models embed only the parts they use, with the stream
    keys folded to constants."""
    parts = [C_MIX, C_KEY, C_DRAW, C_WEIGHT["gaussian"], C_WEIGHT["uniform"]]
    return "\n\n".join(parts) + "\n"


def c_generator_helpers(ctx: EmitContext, dist: str) -> tuple[str, str]:
    """Emit the generator's C helpers; returns (draw function, weight function) names."""
    ctx.helper("edgec_lsm_mix32", C_MIX)
    draw_fn = ctx.helper("edgec_lsm_draw", C_DRAW)
    return draw_fn, ctx.helper(f"edgec_lsm_k_{dist}", C_WEIGHT[dist])


@dataclass(frozen=True)
class Synapses:
    """One generated matrix as C sees it (column lists, i.e. per presynaptic input)."""

    rows: int
    cols: int
    mask_key: int
    weight_key: int
    thr24: int
    no_diagonal: bool
    k: np.ndarray  # [rows, cols] int32

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.k_mask))

    @property
    def k_mask(self) -> np.ndarray:
        """Which synapses exist (a zero weight may exist too: keep the mask, not k != 0)."""
        return _mask(self)

    def csc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(column pointers [cols + 1], row indices, integer weights) in column order."""
        mask = self.k_mask
        ptr = np.zeros(self.cols + 1, np.int64)
        ptr[1:] = np.cumsum(mask.sum(axis=0))
        rows_t, cols_t = np.nonzero(mask.T)  # column-major walk: (col, row)
        return ptr, cols_t.astype(np.int64), self.k[cols_t, rows_t].astype(np.int64)


def _mask(s: Synapses) -> np.ndarray:
    return mask_matrix(s.mask_key, s.rows, s.cols, s.thr24, s.no_diagonal)


def synapses(spec: ReservoirSpec) -> tuple[Synapses, Synapses]:
    k_in, k_rec, _ = generate(spec)
    return (
        Synapses(
            spec.n_res, spec.n_in, stream_key(spec.seed, STREAM_IN_MASK),
            stream_key(spec.seed, STREAM_IN_WEIGHT), threshold24(spec.density_in), False, k_in,
        ),
        Synapses(
            spec.n_res, spec.n_res, stream_key(spec.seed, STREAM_REC_MASK),
            stream_key(spec.seed, STREAM_REC_WEIGHT), threshold24(spec.density_rec), True, k_rec,
        ),
    )


def _skip_c(syn: Synapses, draw_fn: str) -> str:
    """C statements that ``continue`` past row ``j`` of column ``ci`` when it has no synapse."""
    code = "if (j == ci) continue;\n" if syn.no_diagonal else ""
    if syn.thr24 < 1 << 24:
        code += f"if (({draw_fn}({syn.mask_key}U, cnt) >> 8) >= {syn.thr24}U) continue;\n"
    return code


def _column_c(
    ctx: EmitContext, spec: ReservoirSpec, syn: Synapses, tag: str, mode: str, acc: str, val: str
) -> tuple[str, str]:
    """(one-time setup call, per-column code): the per-column code adds column ``ci``'s
    synapses times ``val`` into ``acc`` (``val == "1"``: spikes, integer weights only)."""
    name = ctx.node.name
    term = "(float)kv" if val == "1" else f"(float)kv * {val}"
    if syn.nnz == 0:  # nothing to add (density 0, or a 1x1 recurrent matrix)
        return "", ""
    if mode in ("regen", "ram"):
        draw_fn, k_fn = c_generator_helpers(ctx, spec.dist)
        kexpr = f"{k_fn}({draw_fn}({syn.weight_key}U, cnt))"
        skip = _skip_c(syn, draw_fn)
    if mode == "regen":
        inner = skip + f"{{\n    const int32_t kv = {kexpr};\n    {acc}[j] += {term};\n}}\n"
        code = (
            f"{{\n    uint32_t cnt = (uint32_t)ci;\n"
            f"    for (int j = 0; j < {syn.rows}; ++j, cnt += {syn.cols}U) {{\n"
            + "".join(f"        {ln}\n" for ln in inner.rstrip().split("\n"))
            + "    }\n}\n"
        )
        return "", code
    ptr, rows, ks = syn.csc()
    if mode == "flash":
        p_sym = ctx.const_array(f"{name}_{tag}_ptr", ptr, "int32_t")
        r_sym = ctx.const_array(f"{name}_{tag}_row", rows if rows.size else np.zeros(1), "int16_t")
        k_sym = ctx.const_array(f"{name}_{tag}_k", ks if ks.size else np.zeros(1), "int16_t")
        setup = ""
    else:  # ram: static tables generated on the first call
        base = "".join(c if c.isalnum() else "_" for c in f"{name}_{tag}")
        p_sym, r_sym, k_sym = f"{base}_ptr", f"{base}_row", f"{base}_k"
        nnz = max(1, int(ptr[-1]))
        fill = skip + (
            f"{r_sym}[nz] = (int16_t)j;\n{k_sym}[nz] = (int16_t){kexpr};\n++nz;\n"
        )
        gen = (
            f"/* '{name}' {tag} synapses ({int(ptr[-1])}), generated into RAM on first use */\n"
            f"static int32_t {p_sym}[{syn.cols + 1}];\n"
            f"static int16_t {r_sym}[{nnz}];\n"
            f"static int16_t {k_sym}[{nnz}];\n"
            f"static void {base}_generate(void)\n"
            f"{{\n"
            f"    int32_t nz = 0;\n"
            f"    for (int ci = 0; ci < {syn.cols}; ++ci) {{\n"
            f"        uint32_t cnt = (uint32_t)ci;\n"
            f"        {p_sym}[ci] = nz;\n"
            f"        for (int j = 0; j < {syn.rows}; ++j, cnt += {syn.cols}U) {{\n"
            + "".join(f"            {ln}\n" for ln in fill.rstrip().split("\n"))
            + f"        }}\n"
            f"    }}\n"
            f"    {p_sym}[{syn.cols}] = nz;\n"
            f"}}"
        )
        ctx.helper(f"{base}_generate", gen)
        setup = f"{base}_generate();"
    code = (
        f"for (int32_t e = {p_sym}[ci]; e < {p_sym}[ci + 1]; ++e) {{\n"
        f"    const int32_t kv = {k_sym}[e];\n"
        f"    {acc}[{r_sym}[e]] += {term};\n"
        f"}}\n"
    )
    return setup, code


def _spec(node: Node) -> ReservoirSpec:
    return ReservoirSpec.from_attrs(node)


def _mode(node: Node) -> str:
    mode = str(node.attr("mode", "flash"))
    if mode not in LSM_MODES:
        raise unsupported(node, f"mode={mode!r}; supported: {', '.join(LSM_MODES)}")
    return mode


def _has(node: Node, i: int) -> bool:
    return len(node.inputs) > i and bool(node.inputs[i])


@register
class LsmReservoir(Op):
    types = ("LsmReservoir",)

    def _check(self, node: Node, g: Graph) -> tuple[ReservoirSpec, int, str]:
        spec = _spec(node)
        _mode(node)
        x_shape = g.shape(node.inputs[0])
        if len(x_shape) != 2 or int(x_shape[1]) != spec.n_in:
            raise unsupported(node, f"input {list(x_shape)} must be [T, {spec.n_in}]")
        for i, what in ((1, "initial mem"), (2, "initial spikes"), (3, "bias")):
            if _has(node, i) and tuple(g.shape(node.inputs[i])) not in ((spec.n_res,),
                                                                      (1, spec.n_res)):
                raise unsupported(
                    node, f"{what} {list(g.shape(node.inputs[i]))} must be [{spec.n_res}]"
                )
        if _has(node, 3) and g.const(node.inputs[3]) is None:
            raise unsupported(node, "the bias must be a constant")
        output = str(node.attr("output", "spikes"))
        if output not in ("spikes", "rate"):
            raise unsupported(node, f"output={output!r}; supported: spikes, rate")
        return spec, int(x_shape[0]), output

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        spec, t, output = self._check(node, g)
        y = (t, spec.n_res) if output == "spikes" else (spec.n_res,)
        return [(y, "float32"), ((spec.n_res,), "float32"), ((spec.n_res,), "float32")]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        spec, t, output = self._check(node, g)
        x = inputs[0]
        assert x is not None
        zeros = np.zeros(spec.n_res, np.float32)
        mem0 = inputs[1] if len(inputs) > 1 and inputs[1] is not None else zeros
        spk0 = inputs[2] if len(inputs) > 2 and inputs[2] is not None else zeros
        bias = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
        spikes, mem, spk = run_reservoir(
            spec, x, mem0, spk0, None if bias is None else bias.reshape(-1)
        )
        y = spikes if output == "spikes" else (spikes.sum(0) / np.float32(t)).astype(np.float32)
        return [y, mem, spk]

    def macs(self, node: Node, g: Graph) -> int:
        """Synaptic additions per run if every input were non-zero and every neuron spiked."""
        spec, t, _ = self._check(node, g)
        s_in, s_rec = synapses(spec)
        return t * (s_in.nnz + s_rec.nnz)

    def scratch(self, node: Node, g: Graph) -> int:
        return 4 * _spec(node).n_res

    def stats(self, node: Node, g: Graph) -> dict[str, int]:
        spec, _, _ = self._check(node, g)
        mode = _mode(node)
        s_in, s_rec = synapses(spec)
        nnz = s_in.nnz + s_rec.nnz
        table = 4 * nnz + 4 * (spec.n_in + 1 + spec.n_res + 1)
        return {
            "lsm_synapses": nnz,
            "lsm_dense_weight_bytes": 4 * spec.n_res * (spec.n_in + spec.n_res),
            "lsm_weight_flash_bytes": table if mode == "flash" else 0,
            "lsm_weight_ram_bytes": table if mode == "ram" else 0,
        }

    def emit(self, node: Node, ctx: EmitContext) -> str:
        g = ctx.g
        spec, t, output = self._check(node, g)
        mode = _mode(node)
        n, n_in = spec.n_res, spec.n_in
        s_in, s_rec = synapses(spec)
        sc = ctx.scratch()
        setup_in, col_in = _column_c(ctx, spec, s_in, "in", mode, "in_acc", "xv")
        setup_rec, col_rec = _column_c(ctx, spec, s_rec, "rec", mode, "rec_acc", "1")
        lines = [
            f"/* LSM reservoir ({mode}): {n_in} inputs, {n} LIF neurons, {s_in.nnz} input and "
            f"{s_rec.nnz} recurrent synapses, seed {spec.seed}, {t} step(s) */",
            f"float *mem = {sc};",
            f"float *spk = {sc} + {n};",
            f"float *in_acc = {sc} + {2 * n};",
            f"float *rec_acc = {sc} + {3 * n};",
        ]
        if mode == "ram":
            flag = "".join(c if c.isalnum() else "_" for c in f"{node.name}_ready")
            ctx.helper(flag, f"static int {flag} = 0;")
            lines.append(f"if (!{flag}) {{")
            lines += [f"    {s}" for s in (setup_in, setup_rec) if s]
            lines += [f"    {flag} = 1;", "}"]
        init_mem = f"{ctx.inp(1)}[j]" if _has(node, 1) else "0.0f"
        init_spk = f"{ctx.inp(2)}[j]" if _has(node, 2) else "0.0f"
        lines.append(
            f"for (int j = 0; j < {n}; ++j) {{ mem[j] = {init_mem}; spk[j] = {init_spk}; }}"
        )
        y = ctx.out(0)
        if output == "rate":
            lines.append(f"for (int j = 0; j < {n}; ++j) {y}[j] = 0.0f;")
        bias = ctx.inp(3) if _has(node, 3) else None
        fn = "".join(c if c.isalnum() else "_" for c in f"{node.name}_update")
        update = [
            f"float m = ({c_float(spec.decay)} * mem[j]) * (1.0f - spk[j]);",
            f"m = m + {c_float(spec.c_in)} * in_acc[j];",
            f"m = m + {c_float(spec.c_rec)} * rec_acc[j];",
        ]
        if bias:
            update.append("m = m + bias[j];")
        update += [
            "mem[j] = m;",
            f"spk[j] = m > {c_float(spec.v_th)} ? 1.0f : 0.0f;",
            "out[j] = spk[j];" if output == "spikes" else "out[j] += spk[j];",
        ]
        ctx.helper("EDGEC_LSM_NO_CONTRACT", C_NO_CONTRACT)
        bias_param = "const float *restrict bias, " if bias else ""
        ctx.helper(
            fn,
            f"/* '{node.name}' membrane update, FP contraction off: each product is rounded as "
            f"in PyTorch */\n"
            f"static EDGEC_LSM_NO_CONTRACT void {fn}(float *restrict mem, float *restrict spk,\n"
            f"    const float *restrict in_acc, const float *restrict rec_acc, {bias_param}"
            f"float *restrict out)\n{{\n"
            f"#if defined(__clang__)\n#pragma clang fp contract(off)\n#endif\n"
            f"    for (int j = 0; j < {n}; ++j) {{\n"
            + "".join(f"        {u}\n" for u in update)
            + "    }\n}",
        )
        out_ptr = f"{y} + t * {n}" if output == "spikes" else y
        call = f"{fn}(mem, spk, in_acc, rec_acc, {f'{bias}, ' if bias else ''}{out_ptr});"
        step = [
            f"const float *xt = {ctx.inp(0)} + t * {n_in};",
            f"for (int j = 0; j < {n}; ++j) {{ in_acc[j] = 0.0f; rec_acc[j] = 0.0f; }}",
        ]
        if col_in:
            step += [
                f"for (int ci = 0; ci < {n_in}; ++ci) {{",
                "    const float xv = xt[ci];",
                "    if (xv == 0.0f) continue;",
                *_lines(col_in, 1),
                "}",
            ]
        else:
            step.append("(void)xt;")
        if col_rec:
            step += [
                f"for (int ci = 0; ci < {n}; ++ci) {{",
                "    if (spk[ci] == 0.0f) continue;",
                *_lines(col_rec, 1),
                "}",
            ]
        step.append(call)
        lines.append(f"for (int t = 0; t < {t}; ++t) {{")
        lines += _lines("\n".join(step), 1)
        lines.append("}")
        if output == "rate":
            lines.append(f"for (int j = 0; j < {n}; ++j) {y}[j] = {y}[j] / {float(t)!r}f;")
        if len(node.outputs) > 1 and node.outputs[1]:
            lines.append(f"for (int j = 0; j < {n}; ++j) {ctx.out(1)}[j] = mem[j];")
        if len(node.outputs) > 2 and node.outputs[2]:
            lines.append(f"for (int j = 0; j < {n}; ++j) {ctx.out(2)}[j] = spk[j];")
        return "\n".join(lines) + "\n"


def _lines(code: str, depth: int) -> list[str]:
    pad = "    " * depth
    return [pad + ln if ln else "" for ln in code.rstrip("\n").split("\n")]
