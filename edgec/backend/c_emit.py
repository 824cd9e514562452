"""The C back-end: an optimised IR graph → ``<name>.h`` + ``<name>.c`` (C99, static memory)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from edgec._package import __version__, data_path
from edgec.backend import c_math, c_style
from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Quant
from edgec.ops import get_op
from edgec.ops.base import BUILD_PATHS, c_float, prod
from edgec.ops.unary import act_c

_CTYPES = {
    "float": np.float32,
    "int32_t": np.int32,
    "int16_t": np.int16,
    "int8_t": np.int8,
    "uint8_t": np.uint8,
    "uint32_t": np.uint32,
}

#: dtypes a run-time tensor may have, and its C element type in kernels and ports (booleans
#: computed at run time are 0.0f / 1.0f floats; int64 indices of ArgMax/TopK are floats holding
#: the integer, see ops/select.py; int32: index inputs such as an Embedding's token ids)
RUNTIME_CTYPES = {"float32": "float", "bool": "float", "int8": "int8_t", "int64": "float",
                  "int32": "int32_t"}


def tensor_ctype(g: Graph, name: str) -> str:
    """C element type of a tensor: run-time tensors by RUNTIME_CTYPES, constants by dtype."""
    t = g.tensor(name)
    if t.data is None:
        return RUNTIME_CTYPES.get(t.dtype, "float")
    return const_ctype(t.data.dtype)


def const_ctype(dtype: np.dtype) -> str:
    """The C type a constant of numpy ``dtype`` is stored as (integer tables as int32_t)."""
    if dtype.kind == "f":
        return "float"
    if dtype == np.int8:
        return "int8_t"
    return "int32_t"


#: kernels of ops with ``exact_fp`` (bit-exact spike trains) are compiled without FMA contraction,
#: whatever the build's -ffp-contract: GCC through a function attribute, clang through a pragma
EXACT_FP_MACRO = """#if defined(__GNUC__) && !defined(__clang__)
#define EDGEC_EXACT_FP __attribute__((optimize("fp-contract=off")))
#else
#define EDGEC_EXACT_FP
#endif"""


def template_dir() -> Path:
    return data_path("templates/model.c.j2").parent


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def c_ident(s: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in s)
    if not out or out[0].isdigit():
        out = "t_" + out
    return out


@dataclass
class Weight:
    sym: str
    data: np.ndarray
    ctype: str
    param: bool = True  # counted as model parameters (index tables are not)
    #: values of a parameter table that are layout padding (zeros), not parameters
    padding: int = 0
    #: the build paths that read it (BUILD_PATHS; both unless an op said one)
    paths: frozenset[str] = frozenset(BUILD_PATHS)

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.data.shape) or "scalar"

    @property
    def body(self) -> str:
        flat = self.data.reshape(-1)
        if self.ctype == "float":
            items = [c_float(v) for v in flat.tolist()]
        else:
            items = [str(int(v)) for v in flat.tolist()]
        per = 8 if self.ctype == "float" else 16
        rows = [", ".join(items[i : i + per]) for i in range(0, len(items), per)]
        return ",\n".join("    " + r for r in rows)


@dataclass
class WeightTable:
    weights: list[Weight] = field(default_factory=list)
    by_key: dict[tuple[str, str, bytes], str] = field(default_factory=dict)
    used_syms: set[str] = field(default_factory=set)

    def add(
        self, base: str, data: np.ndarray, ctype: str = "float", param: bool | None = None,
        padding: int = 0, path: str | None = None,
    ) -> str:
        """A ``static const`` table; ``param``: count its values as parameters (default: the
        float tables are parameters, integer index tables are not), less ``padding`` values a
        kernel's layout added; ``path``: the one build path that reads it (BUILD_PATHS), None
        for both. A table two kernels share is read by the union of their paths."""
        if path is not None and path not in BUILD_PATHS:
            raise EdgecError(f"constant '{base}': build path {path!r} is not one of "
                             f"{', '.join(BUILD_PATHS)}")
        paths = frozenset(BUILD_PATHS if path is None else (path,))
        src = np.asarray(data)
        if ctype == "int8_t" and src.size and (src.min() < -128 or src.max() > 127):
            raise EdgecError(f"constant '{base}': values outside [-128, 127] for an int8 table")
        arr = np.ascontiguousarray(src.astype(_CTYPES[ctype]))
        if arr.size == 0:
            arr = np.zeros(1, _CTYPES[ctype])
        is_param = ctype == "float" if param is None else param
        key = (ctype, str(arr.shape), hashlib.sha256(arr.tobytes()).digest())
        if key in self.by_key:
            sym = self.by_key[key]
            known = next(w for w in self.weights if w.sym == sym)
            known.param = known.param or is_param
            known.paths = known.paths | paths
            return sym
        sym = f"w{len(self.weights)}_{c_ident(base)[:40]}"
        self.weights.append(Weight(sym, arr, ctype, is_param, padding, paths))
        self.by_key[key] = sym
        return sym

    @property
    def nbytes(self) -> int:
        """Bytes of every table in the file."""
        return sum(w.nbytes for w in self.weights)

    def path_bytes(self, path: str) -> int:
        """Bytes of the tables build path ``path`` (BUILD_PATHS) reads: what its build links."""
        return sum(w.nbytes for w in self.weights if path in w.paths)

    def report(self) -> dict[str, int]:
        """The report's weight bytes: ``weight_bytes`` (every table in the file), and where
        some table is read by one build path only, ``weight_bytes_dsp`` and
        ``weight_bytes_generic`` (what each build links)."""
        rep = {"weight_bytes": self.nbytes}
        if any(len(w.paths) < len(BUILD_PATHS) for w in self.weights):
            rep |= {f"weight_bytes_{p}": self.path_bytes(p) for p in BUILD_PATHS}
        return rep

    @property
    def count(self) -> int:
        """Parameters: values of the float tables and of quantized weight/bias tables (integer
        index tables are not parameters)."""
        return sum(w.size - w.padding for w in self.weights if w.param)


class NodeContext:
    """The :class:`edgec.ops.base.EmitContext` the back-end hands to each op."""

    def __init__(
        self, g: Graph, node: Node, weights: WeightTable, scratch: bool, helpers: dict[str, str]
    ):
        self.helpers = helpers
        self.g = g
        self.node = node
        self.weights = weights
        self.has_scratch = scratch
        self.used_inputs: dict[int, str] = {}

    def inp(self, i: int) -> str:
        name = self.node.inputs[i]
        if not name:
            raise EdgecError(f"node '{self.node.name}': optional input {i} is absent")
        data = self.g.const(name)
        if data is not None:
            if data.dtype.kind not in "fiub":
                raise EdgecError(
                    f"node '{self.node.name}': constant '{name}' has dtype {data.dtype}"
                )
            ctype = const_ctype(data.dtype)
            param = True if self.g.quant(name) is not None else None
            return self.weights.add(name, data, ctype, param)
        self.used_inputs[i] = name
        return f"x{i}"

    def out(self, i: int) -> str:
        return f"y{i}"

    def ctype(self, tensor: str) -> str:
        return tensor_ctype(self.g, tensor)

    def scratch(self) -> str:
        if not self.has_scratch:
            raise EdgecError(f"node '{self.node.name}': kernel asked for scratch it did not plan")
        return "scratch"

    def act(self, expr: str) -> str:
        a = self.node.attrs.get("_act")
        return expr if a is None else act_c(a[0], a[1], expr)

    def const_array(
        self, base: str, data: np.ndarray, ctype: str = "float", param: bool | None = None,
        padding: int = 0, path: str | None = None,
    ) -> str:
        return self.weights.add(base, data, ctype, param, padding, path)

    def helper(self, name: str, code: str) -> str:
        """Emit a shared static helper function (once per file, before the kernels)."""
        prev = self.helpers.setdefault(name, code)
        if prev != code:
            raise EdgecError(f"two different C helpers named '{name}'")
        return name


@dataclass
class Port:
    name: str  # tensor name
    c: str  # C parameter name
    shape: tuple[int, ...]
    state: bool = False
    #: float32, int8, int32 (indices: an Embedding's token ids), or int64 (ArgMax/TopK indices
    #: held as exact float values)
    dtype: str = "float32"
    quant: Quant | None = None  # an int8 port's scale and zero point
    #: an int32 index input: the valid values are [0, index_bound) (the smallest axis it
    #: gathers from; values outside are clamped), None when it indexes no table
    index_bound: int | None = None

    @property
    def ctype(self) -> str:
        return {"int8": "int8_t", "int32": "int32_t"}.get(self.dtype, "float")

    @property
    def np_dtype(self) -> type:
        return {"int8": np.int8, "int32": np.int32}.get(self.dtype, np.float32)

    @property
    def scale(self) -> str:
        """C literal of an int8 port's scale (per-tensor quantization)."""
        assert self.quant is not None
        return c_float(self.quant.scalar()[0])

    @property
    def zero_point(self) -> int:
        assert self.quant is not None
        return self.quant.scalar()[1]

    @property
    def C(self) -> str:  # noqa: N802 - C macro spelling
        return self.c.upper()

    @property
    def size(self) -> int:
        return prod(self.shape) if self.shape else 1

    @property
    def shape_str(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


@dataclass
class CModel:
    name: str
    header: str
    source: str
    report: dict[str, Any]
    inputs: list[Port]
    outputs: list[Port]
    state: list[tuple[str, str]]
    #: state inputs ``<name>_step`` updates in place (one buffer in the state struct, not two)
    state_inplace: set[str] = field(default_factory=set)

    def write(self, directory: str | Path) -> list[Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = [d / f"{self.name}.h", d / f"{self.name}.c"]
        paths[0].write_text(self.header)
        paths[1].write_text(self.source)
        return paths


def _unique(names: list[str], prefix: str) -> list[str]:
    seen: set[str] = set()
    out = []
    for n in names:
        c = f"{prefix}_{c_ident(n)}"
        base, i = c, 1
        while c in seen:
            i += 1
            c = f"{base}_{i}"
        seen.add(c)
        out.append(c)
    return out


@dataclass
class CLowering:
    """An IR graph lowered to C pieces (weights, helpers, kernels, the calls of ``_run``, the
    ports): what the templates render. The C back-end renders ``model.{h,c}.j2``; the CUDA
    back-end (:mod:`edgec.backend.cuda`) renders the same pieces as device code."""

    name: str
    vars: dict[str, Any]
    report: dict[str, Any]
    inputs: list[Port]
    outputs: list[Port]
    state: list[tuple[str, str]]
    state_inplace: set[str]

    def render(self) -> CModel:
        env = _env()
        header = env.get_template("model.h.j2").render(**self.vars)
        source = env.get_template("model.c.j2").render(**self.vars)
        return CModel(self.name, header, source, self.report, self.inputs, self.outputs,
                      self.state, self.state_inplace)


def emit_c(g: Graph, name: str | None = None, layer_marks: bool = False) -> CModel:
    """``layer_marks``: see :func:`lower_c`."""
    return lower_c(g, name, layer_marks).render()


def lower_c(g: Graph, name: str | None = None, layer_marks: bool = False) -> CLowering:
    """``layer_marks``: a per-layer profiling build, each top-level node's code (a kernel call,
    or a whole loop) bracketed by ``edgec_mark_start()``/``edgec_mark_stop()``
    (firmware/edgec_marks.c); the report's ``layer_nodes`` lists the index in ``g.nodes`` of
    each bracketed node in order."""
    from edgec.backend.flatten import flatten_scans
    from edgec.backend.planner import plan_memory

    name = c_ident(name or g.name).lower()
    total_macs = sum(get_op(node, g).macs(node, g) for node in g.nodes)
    n_nodes = len(g.nodes)
    g = flatten_scans(g)  # loops → ScanBegin, body nodes, ScanEnd
    for t in g.runtime_tensors():
        if g.tensor(t).dtype not in RUNTIME_CTYPES and g.const(t) is None:
            prod_node = g.producers()[t]
            raise EdgecError(
                f"node '{prod_node.name}' ({prod_node.op}): computes a {g.tensor(t).dtype} tensor "
                f"'{t}' at run time; edgec's C back-end supports float32 and int8 run-time "
                "tensors only"
            )
    plan = plan_memory(g)
    weights = WeightTable()
    state_in = {a: b for a, b in g.state}
    state_out = {b: a for a, b in g.state}
    in_c = _unique(g.inputs, "in")
    out_c = _unique(g.outputs, "out")
    inputs = [_port(g, t, c, t in state_in) for t, c in zip(g.inputs, in_c, strict=True)]
    outputs = [_port(g, t, c, t in state_out) for t, c in zip(g.outputs, out_c, strict=True)]
    ptr: dict[str, str] = {p.name: p.c for p in inputs}
    for p in outputs:  # a tensor named twice in the outputs is computed into the first port
        if p.name not in ptr:
            ptr[p.name] = p.c
    for t, off in plan.offsets.items():
        ptr.setdefault(t, _arena_ptr(tensor_ctype(g, t), off))

    inplace_state, alias_nodes = _inplace_state(g)
    kernels: list[dict[str, str]] = []
    helpers: dict[str, str] = {}
    math_helpers: dict[str, str] = {}  # edgec's own libm replacements (backend/c_math.py)
    calls: list[str] = []
    depth = 0  # loop nesting (ScanBegin/ScanEnd)
    layer_nodes: list[int] = []
    top = -1  # index of the top-level node (of the graph before flattening) being emitted
    for idx, node in enumerate(g.nodes):
        op = get_op(node, g)
        control = getattr(op, "control", False)
        if depth == 0 and not (control and op.depth_change < 0):
            top += 1
        if control:  # loop code instead of a kernel
            ctx = NodeContext(g, node, weights, False, helpers)
            depth += min(op.depth_change, 0)
            lines = op.emit_control(node, ctx, ptr)
            if layer_marks and depth == 0 and op.depth_change > 0:  # a whole loop is one layer
                lines = ["edgec_mark_start();", *lines]
                layer_nodes.append(top)
            if layer_marks and depth == 0 and op.depth_change < 0:
                lines = [*lines, "edgec_mark_stop();"]
            calls.extend("    " * depth + ln for ln in lines)
            depth += max(op.depth_change, 0)
            continue
        if op.view and node.outputs[0] in plan.aliased:
            calls.append("    " * depth
                         + f"/* {node.op} '{node.name}': view of its input, no code */")
            continue
        ctx = NodeContext(g, node, weights, idx in plan.scratch, helpers)
        body, needed = c_math.apply(op.emit(node, ctx))
        body = c_style.normalize(body)
        math_helpers.update(needed)
        alias = node.outputs[0] in plan.inplace or idx in alias_nodes
        params: list[str] = []
        args: list[str] = []
        restrict = "" if alias else "restrict "
        for i in sorted(ctx.used_inputs):
            params.append(f"const {tensor_ctype(g, ctx.used_inputs[i])} *{restrict}x{i}")
            args.append(ptr[ctx.used_inputs[i]])
        for i, o in enumerate(node.outputs):
            if o and re.search(rf"\by{i}\b", body):
                params.append(f"{tensor_ctype(g, o)} *{restrict}y{i}")
                args.append(ptr[o])
        if ctx.has_scratch:
            sc_type = op.scratch_ctype(node, g)
            params.append(f"{sc_type} *restrict scratch")
            args.append(_arena_ptr(sc_type, plan.scratch[idx], always=True))
        fn = f"node{idx}_{c_ident(node.op).lower()}"
        shapes = ", ".join("x".join(map(str, g.shape(o))) or "scalar" for o in node.outputs if o)
        act = node.attrs.get("_act")
        comment = f"node {idx}: {node.op} '{node.name}' -> [{shapes}]"
        if act:
            comment += f", fused {act[0]}"
        if alias:
            comment += ", in place"
        qualifier = ""
        if op.exact_fp:  # rounds like the reference: no FMA contraction in this kernel
            helpers.setdefault("EDGEC_EXACT_FP", EXACT_FP_MACRO)
            qualifier = "EDGEC_EXACT_FP "
            body = "#if defined(__clang__)\n#pragma clang fp contract(off)\n#endif\n" + body
            comment += ", FP contraction off"
        kernels.append(
            {
                "fn": fn,
                "qualifier": qualifier,
                "params": ", ".join(params) or "void",
                "body": _indent(body),
                "comment": comment.replace("*/", "* /"),
            }
        )
        call = f"{fn}({', '.join(args)});"
        if layer_marks and depth == 0:
            call = f"edgec_mark_start(); {call} edgec_mark_stop();"
            layer_nodes.append(top)
        calls.append("    " * depth + call)
    # outputs that are constants, graph inputs or a tensor an earlier port already holds are
    # copied in
    for p in outputs:
        if g.const(p.name) is not None:
            sym = weights.add(p.name, g.const(p.name), p.ctype)
            calls.append(f"memcpy({p.c}, {sym}, sizeof({p.ctype}) * {p.size});")
        elif ptr[p.name] != p.c:
            calls.append(f"memcpy({p.c}, {ptr[p.name]}, sizeof({p.ctype}) * {p.size});")
    # ports no call reads or writes (an input only shapes depend on, an empty output)
    unused = [p.c for p in inputs + outputs
              if not any(re.search(rf"\b{p.c}\b", c) for c in calls)]
    calls[:0] = [f"(void){c};" for c in unused]

    # ports that may share one buffer: a state input and its output updated in place
    # (``<name>_run(x, h, y, h)``); every other port pointer is restrict
    may_alias = {p.c for p in inputs if p.name in inplace_state}
    may_alias |= {p.c for p in outputs if state_out.get(p.name) in inplace_state}

    def _param(p: Port, const: str) -> str:
        qual = "" if p.c in may_alias else "EDGEC_RESTRICT "
        return f"{const}{p.ctype} *{qual}{p.c}"

    run_params = (
        ", ".join([_param(p, "const ") for p in inputs] + [_param(p, "") for p in outputs])
        or "void"
    )
    alias_pairs = [
        (next(p.c for p in inputs if p.name == a), next(p.c for p in outputs if p.name == b))
        for a, b in g.state
        if a in inplace_state
    ]
    run_args = ", ".join([p.c for p in inputs] + [p.c for p in outputs])
    state_ports = []
    for s_in, s_out in g.state:
        p = next(p for p in inputs if p.name == s_in)
        init = g.state_init.get(s_in)
        init_sym = None if init is None else weights.add(f"{s_in}_init", init.reshape(-1))
        state_ports.append(
            {"c": p.c[3:], "size": p.size, "shape_str": p.shape_str, "src": s_in, "dst": s_out,
             "init": init_sym, "inplace": s_in in inplace_state}
        )
    step_params = ", ".join(
        [_param(p, "const ") for p in inputs if not p.state]
        + [_param(p, "") for p in outputs if not p.state]
    )
    step_args = ", ".join(
        [f"s->{p.c[3:]}" if p.state else p.c for p in inputs]
        + [
            _state_dst(state_ports[[s["dst"] for s in state_ports].index(p.name)])
            if p.state
            else p.c
            for p in outputs
        ]
    )
    step_call_args = ", ".join(
        [p.c for p in inputs if not p.state] + [p.c for p in outputs if not p.state]
    )
    # a state updated in place needs one buffer, a double-buffered one two
    state_bytes = sum((4 if s["inplace"] else 8) * s["size"] for s in state_ports)
    # structure counters an op reports through an optional ``stats(node, g) -> dict[str, int]``
    structure: dict[str, int] = {}
    for node in g.nodes:
        node_stats = getattr(get_op(node, g), "stats", None)
        for key, val in (node_stats(node, g) if node_stats else {}).items():
            structure[key] = structure.get(key, 0) + int(val)
    helper_codes = []
    for code in helpers.values():
        code, needed = c_math.apply(code)
        math_helpers.update(needed)
        helper_codes.append(c_style.normalize(code))
    math_helpers = {k: c_style.normalize(v) for k, v in math_helpers.items()}
    report = {
        "name": name,
        "params": weights.count,
        **weights.report(),
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes,
        "state_bytes": state_bytes,
        "macs": total_macs,
        "nodes": n_nodes,
    }
    if structure:
        report["structure"] = structure
    if layer_marks:  # first an empty region: what the markers cost by themselves
        calls.insert(0, "edgec_mark_start(); edgec_mark_stop(); /* the markers' own cost */")
        report["layer_nodes"] = [-1, *layer_nodes]
    ctx_vars = {
        "name": name,
        "NAME": name.upper(),
        "version": __version__,
        "source": Path(g.source).name if g.source else "<memory>",
        "inputs": inputs,
        "outputs": outputs,
        "quantized_ports": any(p.dtype == "int8" for p in inputs + outputs),
        "integer_ports": any(p.dtype in ("int8", "int32") for p in inputs + outputs),
        "weights": weights.weights,
        "weight_bytes": weights.nbytes,
        "arena_bytes": plan.arena_bytes,
        "arena_floats": plan.arena_floats,
        "lower_bound_bytes": plan.lower_bound_bytes,
        "macs": total_macs,
        "kernels": kernels,
        "helpers": list(math_helpers.values()) + helper_codes,
        # the host's AVX2+FMA kernel paths (#ifdef EDGEC_AVX2, edgec/ops/gemm.py and conv.py)
        "avx2": any("EDGEC_AVX2" in c for c in helper_codes + [k["body"] for k in kernels]),
        "calls": calls,
        "run_params": run_params,
        "run_args": run_args,
        "state": state_ports,
        "state_bytes": state_bytes,
        "step_params": step_params,
        "step_args": step_args,
        "step_call_args": step_call_args,
        "alias_pairs": alias_pairs,
        "layer_marks": layer_marks,
    }
    return CLowering(name, ctx_vars, report, inputs, outputs, list(g.state), inplace_state)


def _state_dst(st: dict[str, Any]) -> str:
    return f"s->{st['c']}" if st["inplace"] else f"s->{st['c']}_next"


def _inplace_state(g: Graph) -> tuple[set[str], set[int]]:
    """State inputs whose new value ``<name>_step`` can write over the old one (one buffer
    instead of two), and the nodes that then read and write the same buffer (no restrict).

    Safe when the node N computing the new state is a kernel, no node after N reads the old
    state, and N itself reads it only where its op says each part is read before that part of
    the output is written (:meth:`edgec.ops.base.Op.state_inplace`)."""
    producer = {o: (i, n) for i, n in enumerate(g.nodes) for o in n.outputs if o}
    in_loop: set[int] = set()  # nodes inside a loop body run again after later nodes
    depth = 0
    for i, n in enumerate(g.nodes):
        op = get_op(n, g)
        change = op.depth_change if getattr(op, "control", False) else 0
        if depth > 0 or change:
            in_loop.add(i)
        depth += change
    inplace: set[str] = set()
    alias_nodes: set[int] = set()
    for s_in, s_out in g.state:
        if s_out not in producer or s_in in g.outputs or s_out in g.inputs:
            continue
        k, node = producer[s_out]
        op = get_op(node, g)
        if op.view or k in in_loop:
            continue
        j_out = node.outputs.index(s_out)
        ok = True
        reads_here = False
        for i, n in enumerate(g.nodes):
            uses = [ii for ii, t in enumerate(n.inputs) if t == s_in]
            if not uses or i < k:
                continue
            if i > k or i in in_loop or not all(op.state_inplace(n, ii, j_out) for ii in uses):
                ok = False
                break
            reads_here = True
        if ok:
            inplace.add(s_in)
            if reads_here:
                alias_nodes.add(k)
    return inplace, alias_nodes


def _index_bound(g: Graph, tensor: str) -> int | None:
    """The smallest axis an int32 input indexes through RuntimeGather (following the
    elementwise index arithmetic TFLite puts before a GATHER: LESS, ADD, SELECT)."""
    reach, bounds = {tensor}, []
    for n in g.nodes:
        if n.op == "RuntimeGather" and n.inputs[1] in reach:
            axis = int(n.attr("axis", 0))
            bounds.append(g.shape(n.inputs[0])[axis])
        elif n.op in ("Add", "Where", "Identity") and any(i in reach for i in n.inputs):
            reach.update(o for o in n.outputs if g.tensor(o).dtype == "int32")
    return min(bounds) if bounds else None


def _port(g: Graph, tensor: str, c: str, state: bool) -> Port:
    t = g.tensor(tensor)
    if t.dtype == "int64" and t.data is None:  # ArgMax/TopK indices: floats holding integers
        return Port(tensor, c, t.shape, state, "int64")
    if t.dtype == "int32" and t.data is None:  # index inputs (an Embedding's token ids)
        if state:
            raise EdgecError(f"state port '{tensor}' is int32; state carried by <name>_step "
                             "must be float32")
        return Port(tensor, c, t.shape, state, "int32", index_bound=_index_bound(g, tensor))
    if t.dtype != "int8":  # float ports (booleans and constant integers are passed as floats)
        return Port(tensor, c, t.shape, state)
    if state:
        raise EdgecError(
            f"state port '{tensor}' is int8; state carried by <name>_step must be float32"
        )
    q = t.quant
    if q is None or q.size != 1:
        what = "no quantization" if q is None else "per-channel quantization"
        raise EdgecError(
            f"int8 model port '{tensor}' has {what}; int8 ports need one scale and zero "
            "point (they are stated in the header)"
        )
    return Port(tensor, c, t.shape, state, t.dtype, t.quant)


def _arena_ptr(ctype: str, offset: int, always: bool = False) -> str:
    """C pointer to ``offset`` bytes into the (float) arena, typed ``ctype *``."""
    if ctype == "float":
        return f"arena + {offset // 4}" if offset else "arena"
    if not offset:
        return f"({ctype} *)arena"
    size = _CTYPE_BYTES.get(ctype)
    if size is not None and offset % size == 0:  # pointer arithmetic counts elements, not bytes
        return f"({ctype} *)arena + {offset // size}"
    return f"({ctype} *)(void *)((unsigned char *)arena + {offset})"


#: element sizes of the C types a tensor or a scratch buffer in the arena may have
_CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4,
                "uint32_t": 4, "int64_t": 8, "uint64_t": 8, "double": 8}


def _indent(body: str) -> str:
    lines = body.rstrip("\n").split("\n")
    return "".join(("    " + ln if ln else "") + "\n" for ln in lines)
