"""CUDA sources from an optimised IR graph: ``<name>.cu`` + ``<name>.h``.

Strategy ``fused``: the C back-end lowers the graph exactly as for the MCU (same passes, same
memory plan, same kernels, :func:`edgec.backend.c_emit.lower_c`); this module renders those
pieces as device code. Every node kernel and helper becomes an ``EDGEC_DEVICE`` function (empty
under a host compiler), the weight tables ``__constant__`` (``__device__`` when they exceed
constant memory), and one CUDA kernel runs the whole network for one sample per thread, its
activations in a per-thread arena (local memory; registers where the compiler resolves them).
The same file compiled by a host C++ compiler is the host build that the numerics tests run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from edgec._package import __version__, data_path
from edgec.backend.c_emit import CLowering, Port, lower_c
from edgec.backend.cuda.layers import (
    cutlass_include,
    default_strategy,
    emit_layers,
    precision_of,
)
from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops import get_op
from edgec.ops.int8.fixedpoint import C_HELPERS as FIXEDPOINT_HELPERS
from edgec.ops.spiking import CTZ_HELPER

OPTIONS = {
    "cuda": "CUDA lowering strategy (target cuda): fused (the whole network per sample in one "
    "kernel, one thread per sample; small models) or layers (one kernel per layer group, "
    "CUTLASS GEMMs and convolutions; large convolutional models). Default: by size "
    "(docs/cuda.md)",
    "precision": "CUDA strategy layers: fp32 (default), tf32 or bf16 tensor-op GEMMs and "
    "convolutions (bf16 activations in the workspace)",
}

STRATEGIES = ("fused", "layers")

#: the largest per-thread arena (activations of one sample) kept in local memory; a larger one
#: lies in the caller's workspace (``<NAME>_WORKSPACE_BYTES(batch)``)
LOCAL_ARENA_LIMIT = 16 * 1024
#: weights up to this size go to __constant__ memory (64 KiB per module, minus helper tables)
CONSTANT_LIMIT = 60 * 1024
#: threads per block of the generated kernels
BLOCK = 128

#: device versions of C helpers that use host-only builtins
DEVICE_HELPERS: dict[str, str] = {
    FIXEDPOINT_HELPERS["edgec_clz32"]: """/* Leading zero bits of a 32-bit value (32 for 0). */
static inline int edgec_clz32(uint32_t x)
{
#ifdef EDGEC_HOST_BUILD
#if defined(__GNUC__) || defined(__clang__)
    return x ? __builtin_clz(x) : 32;
#else
    int n = 0;
    if (!x) return 32;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
#else
    return __clz((int)x);
#endif
}""",
    CTZ_HELPER: """/* index of the lowest set bit of a non-zero word */
static int edgec_ctz32(uint32_t v)
{
#ifdef EDGEC_HOST_BUILD
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
#else
    return __ffs((int)v) - 1;
#endif
}""",
}


@dataclass
class CudaSources:
    """The generated CUDA library of one model."""

    name: str
    header: str
    source: str
    report: dict[str, Any]
    inputs: list[Port]
    outputs: list[Port]
    state: list[tuple[str, str]]
    strategy: str
    #: kernels that must round like the reference: build with -fmad=false
    exact_fp: bool
    #: floats per sample of each state tensor, in ``<name>_state_t`` order
    state_sizes: list[int] = field(default_factory=list)
    #: device workspace bytes per sample (the arena, when too large for local memory)
    workspace_per_sample: int = 0
    #: strategy layers: fp32, tf32 or bf16
    precision: str = "fp32"
    #: strategy layers: ``<name>_weights.bin``, which the ``.cu`` links (``.incbin``)
    weights_blob: bytes | None = None

    @property
    def state_floats(self) -> int:
        return sum(self.state_sizes)

    @property
    def weights_file(self) -> str | None:
        """``<name>_weights.bin`` for strategy layers (which links it), else None."""
        return f"{self.name}_weights.bin" if self.strategy == "layers" else None

    def files(self) -> dict[str, str | bytes]:
        """Every generated file by name; a build of ``<name>.cu`` passes ``-I`` their
        directory (where the assembler finds the weight blob)."""
        out: dict[str, str | bytes] = {f"{self.name}.h": self.header,
                                       f"{self.name}.cu": self.source}
        if self.weights_file is not None and self.weights_blob:
            out[self.weights_file] = self.weights_blob
        return out

    def write(self, directory: str | Path) -> list[Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = []
        for fname, data in self.files().items():
            paths.append(d / fname)
            if isinstance(data, bytes):
                paths[-1].write_bytes(data)
            else:
                paths[-1].write_text(data)
        return paths


def strategy_for(g: Graph, option: str | None) -> str:
    """The strategy ``--option cuda=...`` names, or the default for this model's size
    (:func:`edgec.backend.cuda.layers.default_strategy`)."""
    if option is None:
        return default_strategy(g)
    if option not in STRATEGIES:
        raise EdgecError(
            f"--option cuda={option}: unknown CUDA strategy; supported: {', '.join(STRATEGIES)}"
        )
    if option == "layers":
        cutlass_include()  # one line naming the extra when the CUTLASS headers are missing
    return option


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates/cuda/model.cu.j2").parent)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render_template(template: str, **variables: Any) -> str:
    """One of ``templates/cuda/`` rendered (e.g. ``batch_sim.cu.j2``: edgec.mpc.batch_cuda)."""
    return _env().get_template(template).render(**variables)


_FUNC = re.compile(r"^static\s+[^=;\[{]*\(")


def device_helper(code: str) -> str:
    """A C helper as device code: its file-scope functions ``EDGEC_DEVICE``, its constant tables
    ``EDGEC_TABLE``; mutable file-scope data (shared between threads) is refused."""
    code = DEVICE_HELPERS.get(code, code)
    out = []
    depth = 0
    for line in code.split("\n"):
        if depth == 0 and line.startswith("static "):
            if _FUNC.match(line):
                line = "static EDGEC_DEVICE " + line[len("static "):]
            elif re.search(r"\bconst\b", line.split("=")[0]):
                line = "static EDGEC_TABLE " + line[len("static "):]
            else:
                raise EdgecError(
                    f"generated C keeps mutable data at file scope ('{line.strip()}'): one "
                    "copy cannot serve every CUDA thread (an LSM reservoir in mode 'ram': use "
                    "--option lsm=flash or lsm=regen for CUDA)"
                )
        depth += line.count("{") - line.count("}")
        out.append(line)
    return "\n".join(out)


def _state_args(low: CLowering) -> tuple[str, str]:
    """(parameters, arguments of ``<name>_sample``) of ``<name>_sample_step``: state ports from
    the state struct ``s`` (or a local next-state buffer), the rest passed through."""
    states = low.vars["state"]
    by_src = {s["src"]: s for s in states}
    by_dst = {s["dst"]: s for s in states}
    params = [f"const {p.ctype} *EDGEC_RESTRICT {p.c}" for p in low.inputs if not p.state]
    params += [f"{p.ctype} *EDGEC_RESTRICT {p.c}" for p in low.outputs if not p.state]
    args = [f"s->{by_src[p.name]['c']}" if p.state else p.c for p in low.inputs]
    for p in low.outputs:
        if not p.state:
            args.append(p.c)
            continue
        st = by_dst[p.name]
        args.append(f"s->{st['c']}" if st["inplace"] else f"{st['c']}_next")
    return ", ".join(params), ", ".join(args)


def emit_cuda(g: Graph, name: str | None = None, strategy: str | None = None,
              precision: str | None = None) -> CudaSources:
    """``<name>.cu`` + ``<name>.h`` for the optimised graph ``g``."""
    strategy = strategy_for(g, strategy)
    if strategy == "layers":
        return _emit_layers(g, name, precision_of(precision))
    if precision not in (None, "fp32"):
        raise EdgecError(f"--option precision={precision} is for --option cuda=layers; the "
                         "fused strategy computes in fp32")
    low = lower_c(g, name)
    v = low.vars
    in_workspace = low.report["arena_bytes"] > LOCAL_ARENA_LIMIT
    per_sample = 4 * int(v["arena_floats"]) if in_workspace else 0
    # kernels that must round like the reference: ops marked exact_fp, C code that turns FP
    # contraction off itself (the LSM membrane update), int8 models (bit-exact to TFLite,
    # float quantization steps included); nvcc has no per-function switch
    code = [*v["helpers"], *(k["body"] for k in v["kernels"])]
    exact_fp = (
        any(get_op(n, g).exact_fp for n in g.nodes)
        or any("fp-contract=off" in c or "fp contract(off)" in c for c in code)
        or any(g.tensor(t).dtype == "int8" for t in g.runtime_tensors())
    )
    space = "constant" if v["weight_bytes"] <= CONSTANT_LIMIT else "global"
    params, args = _state_args(low)
    cu_vars = {
        **v,
        "strategy": strategy,
        "helpers": [device_helper(h) for h in v["helpers"]],
        "weight_space": space,
        "weight_qualifier": "__constant__" if space == "constant" else "__device__",
        "workspace_per_sample": per_sample,
        "arena_in_workspace": in_workspace,
        "block": BLOCK,
        "exact_fp": exact_fp,
        "step_inputs": [p for p in low.inputs if not p.state],
        "step_outputs": [p for p in low.outputs if not p.state],
        "sample_step_params": params,
        "sample_step_args": args,
        "version": __version__,
    }
    env = _env()
    header = env.get_template("model.h.j2").render(**cu_vars)
    source = env.get_template("model.cu.j2").render(**cu_vars)
    report = dict(low.report)
    report.pop("state_bytes", None)
    # the int8 tables a Cortex-M build links per path: the GPU holds the file's every table
    report.pop("weight_bytes_dsp", None)
    report.pop("weight_bytes_generic", None)
    report |= {
        "target": "cuda",
        "strategy": strategy,
        "weight_space": space,
        "thread_arena_bytes": low.report["arena_bytes"],
        "workspace_bytes_per_sample": per_sample,
    }
    if low.state:
        report["state_bytes"] = 4 * sum(s["size"] for s in v["state"])
    return CudaSources(
        low.name, header, source, report, low.inputs, low.outputs, low.state, strategy,
        exact_fp, [int(s["size"]) for s in v["state"]], per_sample,
    )


def _emit_layers(g: Graph, name: str | None, precision: str) -> CudaSources:
    out = emit_layers(g, name, precision)
    env = _env()
    v = out["vars"]
    header = env.get_template("layers.h.j2").render(**v)
    source = env.get_template("layers.cu.j2").render(**v)
    return CudaSources(v["name"], header, source, out["report"], out["inputs"], out["outputs"],
                       [], "layers", False, [], out["per_sample"], precision, out["blob"])


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """The report of a CUDA compile as rows for people (``edgec compile --target cuda``)."""
    if report["strategy"] == "layers":
        return [
            ["strategy", f"layers ({report['precision']}; CUTLASS: "
             f"{', '.join(report['cutlass_kernels']) or 'none'})"],
            ["parameters", f"{report['params']:,}"],
            ["weights", f"{report['weight_bytes']:,} B (global memory)"],
            ["workspace per sample", f"{report['workspace_bytes_per_sample']:,} B"],
            ["MACs per sample", f"{report['macs']:,}"],
        ]
    rows = [
        ["strategy", f"{report['strategy']} (one thread per sample)"],
        ["parameters", f"{report['params']:,}"],
        ["weights", f"{report['weight_bytes']:,} B ({report['weight_space']} memory)"],
        ["activations per thread", f"{report['thread_arena_bytes']:,} B ("
         + ("workspace" if report["workspace_bytes_per_sample"] else "local memory") + ")"],
        ["MACs per sample", f"{report['macs']:,}"],
    ]
    if "state_bytes" in report:
        rows.append(["state per sample", f"{report['state_bytes']:,} B"])
    return rows
