"""Strategy ``layers`` of the CUDA back-end: one kernel per layer group, for larger models.

Convolutions (implicit GEMM) and GEMMs (Gemm, MatMul with constant weights, 1x1 stride-1
convolutions) instantiate CUTLASS 2.x device templates (``cutlass::gemm::device::Gemm``,
``cutlass::conv::device::ImplicitGemmConvolution`` over ``DefaultConv2dFprop``) with the bias
and a ReLU fused into the epilogue (``LinearCombinationRelu``: ``max(threshold, acc + bias)``,
threshold ``-inf`` when the layer has no ReLU; the bias is the epilogue's C operand with stride
0). Elementwise ops, pools, global average pooling and softmax are small own kernels.
Activations are NHWC inside the library (weights re-laid out to KRSC here, at compile time) and
live in one device workspace planned by :func:`edgec.backend.planner.plan_memory`: a tensor at
per-sample element offset ``o`` lies at ``batch * o``, so the plan holds for every batch.

The weights are not in the source: :func:`weight_blob` packs them (each table 16-byte aligned)
into ``<name>_weights.bin``, which the ``.cu`` links with the assembler's ``.incbin`` and copies
to the device in ``<name>_init()``; the host build reads it in place.

Every GEMM/convolution is described by one ``edgec_gemm_t``/``edgec_conv_t`` built by a
generated function of ``batch``; the device build hands it to CUTLASS, the host build
(``EDGEC_HOST_BUILD``) to a plain loop over the same sizes, strides and offsets, rounding the
tensor-op operands like the GPU (tf32: 10 mantissa bits; bf16: the workspace holds bf16). A
wrong stride or offset therefore breaks the host numerics too.
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec._package import __version__
from edgec.backend.c_emit import Port
from edgec.backend.planner import plan_memory
from edgec.errors import EdgecError
from edgec.ir import Graph, Node
from edgec.ops import get_op

PRECISIONS = ("fp32", "tf32", "bf16")
#: bytes of one workspace element per precision
ELEM_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2}
#: elements per 16-byte access of the tensor-op kernels (CUTLASS's default alignment)
TENSOR_OP_ALIGN = {"fp32": 0, "tf32": 4, "bf16": 8}
#: what the strategy lowers (each message names these)
SUPPORTED = ("Conv (group 1)", "Gemm", "MatMul (constant weights)", "Relu", "Sigmoid", "Tanh",
             "Add/Sub/Mul (same shapes)", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Softmax (last axis)", "Flatten/Reshape", "Identity")
_UNARY = {"Relu": 1, "Sigmoid": 2, "Tanh": 3}
_BINARY = {"Add": 0, "Sub": 1, "Mul": 2}
_VIEWS = ("Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze")
#: the size-based default: models with a convolution and at least this many MACs per sample
#: run as layers, everything else fused (docs/cuda.md)
LAYERS_MIN_MACS = 5_000_000

#: CUTLASS instantiations: (kind, tensor_op) → C++ type name
KERNEL_NAMES = {("gemm", False): "edgec_gemm_simt", ("gemm", True): "edgec_gemm_top",
                ("conv", False): "edgec_conv_simt", ("conv", True): "edgec_conv_top",
                ("conv_res", False): "edgec_conv_res_simt",
                ("conv_res", True): "edgec_conv_res_top"}

INSTALL_HINT = "pip install 'edgec[cuda]'"


def cutlass_include() -> Path:
    """The CUTLASS headers of the ``nvidia-cutlass`` wheel (``edgec[cuda]``): one line if absent."""
    spec = importlib.util.find_spec("cutlass_library")
    if spec is not None and spec.origin:
        inc = Path(spec.origin).parent / "source" / "include"
        if (inc / "cutlass" / "cutlass.h").is_file():
            return inc
    raise EdgecError(
        "--option cuda=layers needs the CUTLASS headers of the nvidia-cutlass wheel, which is "
        f"not installed: {INSTALL_HINT} (or use --option cuda=fused)"
    )


def precision_of(option: Any) -> str:
    p = "fp32" if option is None else str(option)
    if p not in PRECISIONS:
        raise EdgecError(f"--option precision={p}: unknown; supported: {', '.join(PRECISIONS)}")
    return p


@dataclass
class Place:
    """Where a run-time tensor lies: per-sample element offset in the workspace and layout
    (``nhwc``: (h, w, c); ``flat``: (n,); ``flat_hwc``: a flattened NHWC tensor (h, w, c)
    whose consumers see it in NCHW order)."""

    offset: int
    layout: str
    dims: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.dims))


@dataclass
class Weight:
    sym: str
    data: np.ndarray  # float32, already in the device layout
    comment: str


@dataclass
class LayerPlan:
    name: str
    precision: str
    steps: list[str] = field(default_factory=list)  # C statements (each sets e)
    problems: list[str] = field(default_factory=list)  # generated problem functions
    weights: list[Weight] = field(default_factory=list)
    kernels: set[tuple[str, bool]] = field(default_factory=set)
    elems_per_sample: int = 0
    layers: list[dict[str, Any]] = field(default_factory=list)  # for the report


def _err(g: Graph, n: Node, what: str) -> EdgecError:
    return EdgecError(
        f"{g.name}: node '{n.name}' ({n.op}): {what}; --option cuda=layers supports "
        f"{', '.join(SUPPORTED)} (use --option cuda=fused for this model)"
    )


def _act_of(g: Graph, n: Node) -> int:
    act = n.attrs.get("_act")
    if act is None:
        return 0
    kind = act[0]
    if kind not in _UNARY:
        raise _err(g, n, f"fused activation {kind} is not supported")
    return _UNARY[kind]


def unsupported_nodes(g: Graph) -> list[str]:
    """Why each node the strategy does not lower is refused (empty: everything lowers)."""
    out = []
    for n in g.nodes:
        try:
            _check_node(g, n)
        except EdgecError as e:
            out.append(str(e))
    return out


def _check_node(g: Graph, n: Node) -> None:
    if n.op == "Conv":
        if int(n.attrs.get("group", 1)) != 1:
            raise _err(g, n, "grouped/depthwise convolution")
        if len(g.shape(n.inputs[0])) != 4:
            raise _err(g, n, "only 2-D convolutions")
        if g.const(n.inputs[1]) is None:
            raise _err(g, n, "the weights must be constant")
        _act_of(g, n)
    elif n.op in ("Gemm", "MatMul"):
        if g.const(n.inputs[1]) is None or len(g.shape(n.inputs[1])) != 2:
            raise _err(g, n, "the weights (input 1) must be a constant matrix")
        if int(n.attrs.get("transA", 0)):
            raise _err(g, n, "transA=1")
        if len(g.shape(n.inputs[0])) != 2:
            raise _err(g, n, "the input must be a matrix [batch, features]")
        if len(n.inputs) > 2 and n.inputs[2] and g.const(n.inputs[2]) is None:
            raise _err(g, n, "the bias must be constant")
        _act_of(g, n)
    elif n.op in _UNARY:
        pass
    elif n.op in _BINARY:
        a, b = n.inputs[:2]
        if g.const(a) is not None or g.const(b) is not None or g.shape(a) != g.shape(b):
            raise _err(g, n, "both operands must be run-time tensors of the same shape")
        _act_of(g, n)
    elif n.op in ("MaxPool", "AveragePool"):
        if len(g.shape(n.inputs[0])) != 4:
            raise _err(g, n, "only 2-D pools")
        if n.op == "AveragePool" and int(n.attrs.get("ceil_mode", 0)):
            raise _err(g, n, "ceil_mode=1")
    elif n.op == "GlobalAveragePool":
        if len(g.shape(n.inputs[0])) != 4:
            raise _err(g, n, "only 2-D pools")
    elif n.op == "Softmax":
        shape = g.shape(n.inputs[0])
        axis = int(n.attrs.get("axis", -1))
        if axis not in (-1, len(shape) - 1):
            raise _err(g, n, "softmax over an axis other than the last")
    elif n.op in _VIEWS:
        pass
    else:
        raise _err(g, n, "op not lowered by this strategy")
    if any(g.tensor(t).dtype != "float32" for t in [*n.inputs, *n.outputs]
           if t and g.const(t) is None):
        raise _err(g, n, "only float32 tensors")


def default_strategy(g: Graph) -> str:
    """fused, unless the model is a large stateless convolutional model that layers lowers
    (at least :data:`LAYERS_MIN_MACS` MACs per sample, every node supported) and the CUTLASS
    headers (edgec[cuda]) are installed: fused needs nothing more than nvcc."""
    if g.state or not any(n.op == "Conv" for n in g.nodes):
        return "fused"
    try:
        cutlass_include()
    except EdgecError:
        return "fused"
    macs = sum(get_op(n, g).macs(n, g) for n in g.nodes)
    if macs < LAYERS_MIN_MACS or unsupported_nodes(g):
        return "fused"
    return "layers"


#: the weight blob ``<name>_weights.bin``: a 32-byte header, then every weight table at a
#: 16-byte aligned offset (the tensor-op kernels read weights and bias 16 bytes at a time)
BLOB_MAGIC = b"EDGECWB1"
BLOB_HEADER = 32
BLOB_ALIGN = 16


@dataclass
class WeightBlob:
    """``<name>_weights.bin``: header (magic, element bytes, table count, payload bytes, CRC-32
    of the payload, 0; little-endian) and the payload, the tables in emission order, each at a
    16-byte aligned offset, zeros between them; ``offsets`` in elements from the payload."""

    data: bytes
    offsets: list[int]
    payload_bytes: int
    crc32: int
    elem_bytes: int


def weight_blob(weights: list[Weight], precision: str) -> WeightBlob:
    """The tables of ``weights`` in the workspace element type (float32, or bf16 bits rounded
    to nearest even), packed for the blob."""
    esize = ELEM_BYTES[precision]
    parts: list[bytes] = []
    offsets: list[int] = []
    at = 0
    for w in weights:
        flat = np.ascontiguousarray(w.data, dtype=np.float32).reshape(-1)
        raw = (_bf16_bits(flat) if precision == "bf16" else flat).astype(
            "<u2" if precision == "bf16" else "<f4").tobytes()
        offsets.append(at // esize)
        pad = -len(raw) % BLOB_ALIGN
        parts += [raw, bytes(pad)]
        at += len(raw) + pad
    payload = b"".join(parts)
    crc = zlib.crc32(payload) & 0xFFFFFFFF
    header = BLOB_MAGIC + struct.pack("<IIQII", esize, len(weights), len(payload), crc, 0)
    assert len(header) == BLOB_HEADER
    return WeightBlob(header + payload, offsets, len(payload), crc, esize)


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits, round to nearest even (NaN kept quiet), like the generated code."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    return np.where(nan, (u >> 16) | 0x40, r).astype(np.uint16)


class _Planner:
    def __init__(self, g: Graph, name: str, precision: str):
        self.g = g
        self.p = LayerPlan(name, precision)
        self.places: dict[str, Place] = {}
        self.align = TENSOR_OP_ALIGN[precision]
        self.esize = ELEM_BYTES[precision]
        #: conv node index → (its Add's index, the residual tensor): the Add (+ReLU) runs in
        #: the convolution's epilogue
        self.fused: dict[int, tuple[int, str]] = {}

    # -- workspace ----------------------------------------------------------------------
    def plan_workspace(self) -> None:
        g = self.g
        mem = plan_memory(g)
        for t, off in mem.offsets.items():
            if off % 4:
                raise EdgecError(f"{g.name}: tensor '{t}' is not float-aligned in the plan")
        top = mem.arena_floats
        # the graph's inputs and outputs, converted to/from the library's layout, after it
        for t in [*g.inputs, *g.outputs]:
            top = -(-top // 16) * 16
            self.places[t] = self._place(t, top)
            top += self.places[t].size
        for t, off in mem.offsets.items():
            self.places[t] = self._place(t, off // 4)
        self.p.elems_per_sample = max(16, -(-top // 16) * 16)

    def _place(self, t: str, offset: int) -> Place:
        shape = self.g.shape(t)
        if len(shape) == 4:
            return Place(offset, "nhwc", (shape[2], shape[3], shape[1]))
        return Place(offset, "flat", (int(np.prod(shape[1:])) if len(shape) > 1 else 1,))

    def plan_fusions(self) -> None:
        """Conv (no activation) → Add + ReLU, the conv's output read by that Add only: the Add
        moves into the conv's epilogue when the other operand exists when the conv runs (made
        by an earlier node or a graph input) and the Add's output may be written then (the
        next node, or in place over one of its operands)."""
        g = self.g
        made = {t: i for i, n in enumerate(g.nodes) for t in n.outputs}
        readers: dict[str, list[int]] = {}
        for j, n in enumerate(g.nodes):
            for t in n.inputs:
                readers.setdefault(t, []).append(j)
        for i, n in enumerate(g.nodes):
            if n.op != "Conv" or n.attrs.get("_act") or int(n.attrs.get("group", 1)) != 1:
                continue
            wt = g.const(n.inputs[1])
            if wt is None or (wt.shape[2:] == (1, 1) and list(n.attrs.get("strides", [1, 1]))
                              == [1, 1] and not any(n.attrs.get("pads", [0, 0, 0, 0]))):
                continue  # a 1x1 convolution runs as a GEMM
            out = n.outputs[0]
            users = readers.get(out, [])
            if out in g.outputs or len(users) != 1:
                continue
            j = users[0]
            add = g.nodes[j]
            act = add.attrs.get("_act")
            if add.op != "Add" or act is None or act[0] != "Relu" or add.inputs.count(out) != 1:
                continue
            res = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
            if g.const(res) is not None or g.shape(res) != g.shape(out):
                continue
            if made.get(res, -1) >= i:
                continue
            offs = {self.places[out].offset, self.places[res].offset}
            if j != i + 1 and self.places[add.outputs[0]].offset not in offs:
                continue
            self.fused[i] = (j, res)

    # -- helpers ------------------------------------------------------------------------
    def weight(self, sym: str, data: np.ndarray, comment: str) -> str:
        self.p.weights.append(Weight(f"{self.p.name}_{sym}", data.astype(np.float32), comment))
        return f"EDGEC_W({self.p.name}_{sym})"

    def off(self, t: str) -> str:
        return f"(edgec_idx_t)batch * {self.places[t].offset}"

    def aligned(self, *vals: int) -> bool:
        return self.align > 0 and all(v % self.align == 0 for v in vals)

    def emit(self, stmt: str) -> None:
        self.p.steps.append(f"if (e == 0) {{\n        e = {stmt};\n    }}")

    # -- nodes --------------------------------------------------------------------------
    def node(self, i: int, n: Node) -> None:
        _check_node(self.g, n)
        if any(j == i for j, _ in self.fused.values()):
            y = self.places[n.inputs[0]]
            self.places[n.outputs[0]] = Place(self.places[n.outputs[0]].offset, y.layout, y.dims)
            return  # in the convolution's epilogue
        if n.op == "Conv":
            self.conv(i, n)
        elif n.op in ("Gemm", "MatMul"):
            self.gemm(i, n)
        elif n.op in _UNARY:
            self.pointwise(n, "edgec_unary", [n.inputs[0]], [_UNARY[n.op]])
        elif n.op in _BINARY:
            self.pointwise(n, "edgec_binary", n.inputs[:2], [_BINARY[n.op], _act_of(self.g, n)])
        elif n.op in ("MaxPool", "AveragePool"):
            self.pool(n)
        elif n.op == "GlobalAveragePool":
            x = self.places[n.inputs[0]]
            h, w, c = x.dims
            self.emit(f"edgec_each(edgec_gap{{ws + {self.off(n.inputs[0])}, ws + "
                      f"{self.off(n.outputs[0])}, {h * w}, {c}}}, (edgec_idx_t)batch * {c}, s)")
        elif n.op == "Softmax":
            x = self.places[n.inputs[0]]
            if x.layout != "flat":
                raise _err(self.g, n, "softmax of a 4-D tensor")
            shape = self.g.shape(n.inputs[0])
            length = shape[-1]
            rows = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            self.emit(f"edgec_each(edgec_softmax{{ws + {self.off(n.inputs[0])}, ws + "
                      f"{self.off(n.outputs[0])}, {length}}}, (edgec_idx_t)batch * {rows}, s)")
        else:
            self.view(n)

    def _same_place(self, src: str, dst: str) -> bool:
        return self.places[src].offset == self.places[dst].offset

    def view(self, n: Node) -> None:
        src, dst = n.inputs[0], n.outputs[0]
        sp = self.places[src]
        in_shape, out_shape = self.g.shape(src), self.g.shape(dst)
        if sp.layout == "nhwc":
            h, w, c = sp.dims
            if len(out_shape) == 4 and tuple(out_shape) == tuple(in_shape):
                layout, dims = "nhwc", sp.dims
            elif len(out_shape) == 2 and h * w == 1:
                layout, dims = "flat", (c,)
            elif len(out_shape) == 2:
                layout, dims = "flat_hwc", sp.dims  # Gemm consumers permute their weights
            else:
                raise _err(self.g, n, f"a view {in_shape} -> {out_shape} of an NHWC tensor")
        else:
            if len(out_shape) == 4:
                raise _err(self.g, n, "a view to a 4-D tensor")
            layout, dims = sp.layout, sp.dims
        new = Place(self.places[dst].offset, layout, dims)
        if not self._same_place(src, dst):
            # not aliased (a graph output, or the planner copied): copy the elements
            self.emit(f"edgec_each(edgec_copy{{ws + {self.off(src)}, ws + {self.off(dst)}}}, "
                      f"(edgec_idx_t)batch * {sp.size}, s)")
        self.places[dst] = new

    def pointwise(self, n: Node, functor: str, srcs: list[str], codes: list[int]) -> None:
        """``functor{sources..., output, codes...}`` over every element (same layouts)."""
        places = [self.places[t] for t in srcs]
        if len({p.layout for p in places}) != 1:
            raise _err(self.g, n, "operands in different layouts")
        args = [f"ws + {self.off(t)}" for t in [*srcs, n.outputs[0]]] + [str(c) for c in codes]
        ctor = f"{functor}{{{', '.join(args)}}}"
        self.places[n.outputs[0]] = Place(self.places[n.outputs[0]].offset, places[0].layout,
                                          places[0].dims)
        self.emit(f"edgec_each({ctor}, (edgec_idx_t)batch * {places[0].size}, s)")

    def pool(self, n: Node) -> None:
        x, y = self.places[n.inputs[0]], self.places[n.outputs[0]]
        h, w, c = x.dims
        p, q, _ = y.dims
        kh, kw = n.attrs["kernel_shape"]
        sh, sw = n.attrs.get("strides", [1, 1])
        pads = n.attrs.get("pads", [0, 0, 0, 0])
        dh, dw = n.attrs.get("dilations", [1, 1])
        if n.op == "MaxPool":
            kind = 0
        else:
            kind = 1 if int(n.attrs.get("count_include_pad", 0)) else 2
        self.emit(f"edgec_each(edgec_pool{{ws + {self.off(n.inputs[0])}, ws + "
                  f"{self.off(n.outputs[0])}, {h}, {w}, {c}, {p}, {q}, {kh}, {kw}, {sh}, {sw}, "
                  f"{pads[0]}, {pads[1]}, {dh}, {dw}, {kind}}}, "
                  f"(edgec_idx_t)batch * {p * q * c}, s)")

    def _problem(self, fn: str, ctype: str, fields: list[str]) -> None:
        body = ",\n        ".join(fields)
        self.p.problems.append(
            f"static {ctype} {fn}(int batch)\n{{\n    {ctype} p = {{\n        {body}\n    }};\n"
            f"    return p;\n}}")

    def _bias(self, n: Node, k: int) -> np.ndarray:
        if len(n.inputs) > 2 and n.inputs[2]:
            b = np.asarray(self.g.const(n.inputs[2]), np.float32).reshape(-1)
            return np.broadcast_to(b, (k,)).copy() if b.size in (1, k) else b
        return np.zeros(k, np.float32)

    def conv(self, i: int, n: Node) -> None:
        g = self.g
        wt = np.asarray(g.const(n.inputs[1]), np.float32)  # K, C, R, S
        k, c, r, s = wt.shape
        x, y = self.places[n.inputs[0]], self.places[n.outputs[0]]
        h, w, _ = x.dims
        p, q, _ = y.dims
        pads = n.attrs.get("pads", [0, 0, 0, 0])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise _err(g, n, "asymmetric padding")
        st = n.attrs.get("strides", [1, 1])
        dil = n.attrs.get("dilations", [1, 1])
        act = _act_of(g, n)
        bias = self._bias(n, k)
        thr = "0.0f" if act == 1 else "-INFINITY"
        xo, yo = x.offset, y.offset
        if r == 1 and s == 1 and list(st) == [1, 1] and list(pads) == [0, 0, 0, 0]:
            # 1x1 stride 1: a GEMM over the NHWC rows, weights [K, C]
            self._gemm_core(i, n, h * w, k, c, wt.reshape(k, c), bias, n.inputs[0],
                            n.outputs[0], thr, act)
            return
        fused = self.fused.get(i)
        kind, res = "conv", "-1"
        if fused is not None:
            add = self.g.nodes[fused[0]]
            yo = self.places[add.outputs[0]].offset
            ro = self.places[fused[1]].offset
            kind, res, thr = "conv_res", f"(edgec_idx_t)batch * {ro}", "0.0f"
        top = self.aligned(c, k, xo, yo, *([ro] if fused else [])) and act in (0, 1)
        wsym = self.weight(f"w{i}", wt.transpose(0, 2, 3, 1), f"{n.name}: [K={k}][R={r}]"
                           f"[S={s}][C={c}] (KRSC)")
        bsym = self.weight(f"b{i}", bias, f"{n.name}: bias [{k}]")
        fn = f"{self.p.name}_conv{i}"
        self._problem(fn, "edgec_conv_t", [
            f"batch, {h}, {w}, {c}, {k}, {r}, {s}, {p}, {q}",
            f"{pads[0]}, {pads[1]}, {st[0]}, {st[1]}, {dil[0]}, {dil[1]}",
            f"(edgec_idx_t)batch * {xo}, (edgec_idx_t)batch * {yo}, {res}",
            f"{thr}, {int(top)}"])
        self.p.kernels.add((kind, top))
        self.emit(f"{KERNEL_NAMES[(kind, top)]}({fn}(batch), ws, {wsym}, {bsym}, s)")
        self.p.layers.append({"node": n.name, "kind": kind, "tensor_op": top,
                              "problem": f"N x {h}x{w}x{c} -> {p}x{q}x{k}, {r}x{s}"
                              + (f" + residual '{fused[1]}', ReLU" if fused else "")})
        if fused is None:
            self._after_act(n, act, y)
            self.places[n.outputs[0]] = Place(yo, "nhwc", (p, q, k))

    def gemm(self, i: int, n: Node) -> None:
        g = self.g
        wt = np.asarray(g.const(n.inputs[1]), np.float32)
        if n.op == "Gemm":
            alpha = float(n.attrs.get("alpha", 1.0))
            beta = float(n.attrs.get("beta", 1.0))
            wt = wt if int(n.attrs.get("transB", 0)) else wt.T  # → [N, K]
            wt = wt * np.float32(alpha)
        else:
            beta = 1.0
            wt = wt.T
        nn_, kk = wt.shape
        bias = self._bias(n, nn_) * np.float32(beta)
        x = self.places[n.inputs[0]]
        if x.layout == "flat_hwc":
            h, w, c = x.dims  # the graph flattens NCHW; the workspace holds NHWC
            wt = wt.reshape(nn_, c, h, w).transpose(0, 2, 3, 1).reshape(nn_, kk)
        act = _act_of(g, n)
        thr = "0.0f" if act == 1 else "-INFINITY"
        self._gemm_core(i, n, 1, nn_, kk, wt, bias, n.inputs[0], n.outputs[0], thr, act)

    def _gemm_core(self, i: int, n: Node, rows: int, nn_: int, kk: int, wt: np.ndarray,
                   bias: np.ndarray, src: str, dst: str, thr: str, act: int) -> None:
        """``rows`` GEMM rows per sample (1, or h*w for a 1x1 convolution over NHWC)."""
        xo, yo = self.places[src].offset, self.places[dst].offset
        top = self.aligned(kk, nn_, xo, yo) and act in (0, 1)
        wsym = self.weight(f"w{i}", wt, f"{n.name}: [N={nn_}][K={kk}] (column-major B)")
        bsym = self.weight(f"b{i}", bias, f"{n.name}: bias [{nn_}]")
        fn = f"{self.p.name}_gemm{i}"
        self._problem(fn, "edgec_gemm_t", [
            f"batch * {rows}, {nn_}, {kk}",
            f"{kk}, {kk}, {nn_}",
            f"(edgec_idx_t)batch * {xo}, (edgec_idx_t)batch * {yo}",
            f"{thr}, {int(top)}"])
        self.p.kernels.add(("gemm", top))
        self.emit(f"{KERNEL_NAMES[('gemm', top)]}({fn}(batch), ws, {wsym}, {bsym}, s)")
        self.p.layers.append({"node": n.name, "kind": "gemm", "tensor_op": top,
                              "problem": f"M=batch*{rows} N={nn_} K={kk}"})
        yp = self.places[dst]
        self._after_act(n, act, yp)
        if self.places[src].layout == "nhwc":
            self.places[dst] = Place(yo, "nhwc", yp.dims)
        else:
            self.places[dst] = Place(yo, "flat", (nn_,))

    def _after_act(self, n: Node, act: int, y: Place) -> None:
        """An activation the epilogue does not apply (sigmoid, tanh): in place after it."""
        if act > 1:
            out = f"ws + {self.off(n.outputs[0])}"
            self.emit(f"edgec_each(edgec_unary{{{out}, {out}, {act}}}, "
                      f"(edgec_idx_t)batch * {y.size}, s)")

    # -- boundary -----------------------------------------------------------------------
    def inputs(self) -> None:
        for k, t in enumerate(self.g.inputs):
            pl = self.places[t]
            dst = f"ws + {self.off(t)}"
            if pl.layout == "nhwc":
                h, w, c = pl.dims
                f = f"edgec_to_nhwc{{in{k}, {dst}, {c}, {h * w}}}"
            else:
                f = f"edgec_cast_in{{in{k}, {dst}}}"
            self.emit(f"edgec_each({f}, (edgec_idx_t)batch * {pl.size}, s)")

    def outputs(self) -> None:
        for k, t in enumerate(self.g.outputs):
            pl = self.places[t]
            src = f"ws + {self.off(t)}"
            if pl.layout in ("nhwc", "flat_hwc"):
                h, w, c = pl.dims
                f = f"edgec_from_nhwc{{{src}, out{k}, {c}, {h * w}}}"
            else:
                f = f"edgec_cast_out{{{src}, out{k}}}"
            self.emit(f"edgec_each({f}, (edgec_idx_t)batch * {pl.size}, s)")


def plan_layers(g: Graph, name: str, precision: str) -> LayerPlan:
    """The steps, problems and weights of ``g`` lowered as layers."""
    bad = unsupported_nodes(g)
    if bad:
        raise EdgecError(bad[0])
    if g.state:
        raise EdgecError(f"{g.name}: --option cuda=layers is for stateless models (this one "
                         "carries state between steps): use --option cuda=fused")
    pl = _Planner(g, name, precision)
    pl.plan_workspace()
    pl.plan_fusions()
    pl.inputs()
    for i, n in enumerate(g.nodes):
        pl.node(i, n)
    pl.outputs()
    return pl.p


def emit_layers(g: Graph, name: str | None, precision: str) -> dict[str, Any]:
    """What :func:`edgec.backend.cuda.emit.emit_cuda` renders for strategy ``layers``: the
    template variables and the report."""
    from edgec.backend.c_emit import _unique, c_ident

    cname = c_ident(name or g.name).lower()
    plan = plan_layers(g, cname, precision)
    bf16 = precision == "bf16"
    esize = ELEM_BYTES[precision]
    inputs = [Port(t, c, g.shape(t)) for t, c in zip(g.inputs, _unique(g.inputs, "in"),
                                                     strict=True)]
    outputs = [Port(t, c, g.shape(t)) for t, c in zip(g.outputs, _unique(g.outputs, "out"),
                                                      strict=True)]
    blob = weight_blob(plan.weights, precision)
    weights = [{"sym": w.sym, "size": w.data.size, "comment": w.comment, "offset": off}
               for w, off in zip(plan.weights, blob.offsets, strict=True)]
    weight_bytes = sum(w.data.size for w in plan.weights) * esize
    macs = sum(get_op(n, g).macs(n, g) for n in g.nodes)
    kernel_list = sorted(plan.kernels)
    per_sample = plan.elems_per_sample * esize
    variables = {
        "name": cname,
        "NAME": cname.upper(),
        "version": __version__,
        "source": Path(g.source).name if g.source else "<memory>",
        "precision": precision,
        "elem_type": "bf16" if bf16 else "float32",
        "inputs": inputs,
        "outputs": outputs,
        "weights": weights,
        "weight_bytes": weight_bytes,
        "weights_file": f"{cname}_weights.bin",
        "blob_header": BLOB_HEADER,
        "blob_payload": blob.payload_bytes,
        "blob_crc": blob.crc32,
        "blob_elem_bytes": blob.elem_bytes,
        "blob_bytes": len(blob.data),
        "problems": plan.problems,
        "steps": plan.steps,
        "kernels": {"gemm": any(k == "gemm" for k, _ in kernel_list),
                    "conv": any(k in ("conv", "conv_res") for k, _ in kernel_list),
                    "conv_res": any(k == "conv_res" for k, _ in kernel_list)},
        "kernel_list": kernel_list,
        "workspace_per_sample": per_sample,
        "macs": macs,
    }
    report = {
        "target": "cuda",
        "strategy": "layers",
        "precision": precision,
        "params": int(sum(w.data.size for w in plan.weights)),
        "weight_bytes": weight_bytes,
        "weight_space": "global",
        "weights_file": f"{cname}_weights.bin",
        "weights_file_bytes": len(blob.data),
        "workspace_bytes_per_sample": per_sample,
        "macs": macs,
        "nodes": len(g.nodes),
        "layers": plan.layers,
        "cutlass_kernels": [KERNEL_NAMES[k] for k in kernel_list],
    }
    return {"vars": variables, "report": report, "inputs": inputs, "outputs": outputs,
            "per_sample": per_sample, "blob": blob.data}
