"""edgec on an emulated Cortex-M4F: ``python -m bench.m4 [--models a,b] [--markdown]``.

For each bench model (:mod:`bench.models`) and for single-layer models of the sizes the issue's
goals name, it builds edgec's firmware for ``cortex-m4f`` and measures with
:func:`edgec.mcu.profile.profile`: exact instructions per inference (QEMU plugin), estimated cycles
(Cortex-M4 TRM timing table), flash and RAM. Next to it, a naive reference: the same Dense / Conv
layers (GRU/LSTM as their gate matrix-vector products) written as plain nested loops over the
ONNX weight layouts, compiled with the same compiler, flags and startup, counted by the same
plugin. The naive reference has only the MAC layers (no activations, pooling or glue), so it
favours the naive side. Goals (float): Dense 64x64 and larger at most 2.0 instructions per MAC,
Conv with >= 16 channels at most 2.5.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

import edgec
from edgec.errors import EdgecError
from edgec.ir import Graph, Node
from edgec.mcu import project as firmware
from edgec.mcu.profile import ProfileReport, count_elf, profile
from edgec.mcu.targets import Target, load_target
from edgec.mcu.toolchain import find_tool
from edgec.ops.base import c_float
from edgec.tables import format_table, markdown_table

TARGET = "cortex-m4f"

HEADERS = (
    "model", "MACs", "instr", "instr/MAC", "est. cycles", "MAC/cycle", "flash B", "RAM B",
    "naive instr", "naive instr/MAC", "naive/edgec", "goal",
)  # fmt: skip


@dataclass
class Row:
    name: str
    rep: ProfileReport
    naive_insns: int | None
    goal: float | None

    def cells(self) -> list[str]:
        r = self.rep
        ipm = r.instructions_per_mac
        naive = self.naive_insns
        goal = "-"
        if self.goal is not None:
            goal = f"<= {self.goal:.1f} " + ("met" if ipm <= self.goal else "MISSED")
        return [
            self.name,
            f"{r.macs:,}",
            f"{r.instructions_per_inference:,}",
            f"{ipm:.2f}",
            f"{r.estimated_cycles:,}",
            f"{r.macs_per_cycle:.3f}",
            f"{r.size.flash_total:,}",
            f"{r.size.ram_total:,}",
            f"{naive:,}" if naive else "-",
            f"{naive / r.macs:.2f}" if naive and r.macs else "-",
            f"{naive / r.instructions_per_inference:.2f}x" if naive else "-",
            goal,
        ]


# -- the naive reference -----------------------------------------------------------------------


def _array(name: str, data: np.ndarray, const: bool = True) -> str:
    flat = np.asarray(data, np.float32).reshape(-1)
    rows = [flat[i : i + 8] for i in range(0, flat.size, 8)]
    body = ",\n".join("    " + ", ".join(c_float(float(v)) for v in r) for r in rows)
    q = "static const " if const else ""
    return f"{q}float {name}[{flat.size}] = {{\n{body}\n}};\n"


class NaiveProgram:
    """Plain nested-loop C for the MAC layers of a graph (weights in ONNX layout)."""

    def __init__(self) -> None:
        self.decls: list[str] = []
        self.calls: list[str] = []
        self.layers = 0
        self.rng = np.random.default_rng(0)

    def _buffers(self, n_in: int, n_out: int) -> tuple[str, str]:
        i = self.layers
        self.layers += 1
        xin = self.rng.standard_normal(n_in).astype(np.float32)
        # non-static globals: the compiler must keep every load and store
        self.decls.append(_array(f"naive_x{i}", xin, const=False))
        self.decls.append(f"float naive_y{i}[{n_out}];\n")
        return f"naive_x{i}", f"naive_y{i}"

    def dense(self, w_nk: np.ndarray, bias: np.ndarray | None, rows: int = 1) -> None:
        n, k = w_nk.shape
        x, y = self._buffers(rows * k, rows * n)
        i = self.layers - 1
        self.decls.append(_array(f"naive_w{i}", w_nk))
        b = f"naive_b{i}[n]" if bias is not None else "0.0f"
        if bias is not None:
            self.decls.append(_array(f"naive_b{i}", bias))
        self.decls.append(
            f"static void naive_layer{i}(void)\n{{\n"
            f"    for (int m = 0; m < {rows}; ++m)\n"
            f"        for (int n = 0; n < {n}; ++n) {{\n"
            f"            float acc = {b};\n"
            f"            for (int k = 0; k < {k}; ++k)\n"
            f"                acc += naive_w{i}[n * {k} + k] * {x}[m * {k} + k];\n"
            f"            {y}[m * {n} + n] = acc;\n"
            f"        }}\n}}\n"
        )
        self.calls.append(f"naive_layer{i}();")

    def conv(self, node: Node, g: Graph) -> None:
        from edgec.ops.conv import conv_geom

        geom = conv_geom(node, g)
        w = g.const(node.inputs[1])
        assert w is not None
        bias = g.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        h, wd = geom.h, geom.w
        cin_g, cout_g = geom.c_in // geom.group, geom.c_out // geom.group
        kh, kw = h.kernel, wd.kernel
        x, y = self._buffers(geom.n * geom.c_in * h.size_in * wd.size_in,
                             geom.n * geom.c_out * h.size_out * wd.size_out)  # fmt: skip
        i = self.layers - 1
        self.decls.append(_array(f"naive_w{i}", w))
        b = f"naive_b{i}[oc]" if bias is not None else "0.0f"
        if bias is not None:
            self.decls.append(_array(f"naive_b{i}", bias))
        hi, wi, ho, wo = h.size_in, wd.size_in, h.size_out, wd.size_out
        self.decls.append(
            f"static void naive_layer{i}(void)\n{{\n"
            f"    for (int oc = 0; oc < {geom.c_out}; ++oc) {{\n"
            f"        const int g = oc / {cout_g};\n"
            f"        for (int oy = 0; oy < {ho}; ++oy)\n"
            f"            for (int ox = 0; ox < {wo}; ++ox) {{\n"
            f"                float acc = {b};\n"
            f"                for (int ic = 0; ic < {cin_g}; ++ic)\n"
            f"                    for (int ky = 0; ky < {kh}; ++ky)\n"
            f"                        for (int kx = 0; kx < {kw}; ++kx) {{\n"
            f"                            const int iy = oy * {h.stride} - {h.pad_begin} "
            f"+ ky * {h.dilation};\n"
            f"                            const int ix = ox * {wd.stride} - {wd.pad_begin} "
            f"+ kx * {wd.dilation};\n"
            f"                            if (iy >= 0 && iy < {hi} && ix >= 0 && ix < {wi})\n"
            f"                                acc += {x}[((g * {cin_g} + ic) * {hi} + iy) * {wi} "
            f"+ ix] * naive_w{i}[((oc * {cin_g} + ic) * {kh} + ky) * {kw} + kx];\n"
            f"                        }}\n"
            f"                {y}[(oc * {ho} + oy) * {wo} + ox] = acc;\n"
            f"            }}\n    }}\n}}\n"
        )
        self.calls.append(f"naive_layer{i}();")

    def add_graph(self, g: Graph) -> int:
        """Add every MAC layer of ``g``; returns how many were added."""
        before = self.layers
        for node in g.nodes:
            if node.op in ("Gemm", "MatMul") and g.const(node.inputs[1]) is not None:
                w = g.const(node.inputs[1]).astype(np.float32)
                if node.op == "Gemm":
                    w = w if node.attr("transB", 0) else w.T
                    has_c = len(node.inputs) > 2 and bool(node.inputs[2])
                    c = g.const(node.inputs[2]) if has_c else None
                    bias = None if c is None or c.size != w.shape[0] else c.reshape(-1)
                else:
                    w = w.reshape(w.shape[-2], w.shape[-1]).T
                    bias = None
                a_shape = g.shape(node.inputs[0])
                rows = int(np.prod(a_shape[:-1])) if len(a_shape) > 1 else 1
                self.dense(w, bias, rows)
            elif node.op == "Conv":
                self.conv(node, g)
            elif node.op in ("GRU", "LSTM", "RNN"):
                x_shape = g.shape(node.inputs[0])  # every time step and batch item
                steps = int(x_shape[0]) * int(x_shape[1])
                for k in (1, 2):  # W [dirs, gates*H, I] and R [dirs, gates*H, H]
                    wr = g.const(node.inputs[k])
                    if wr is not None:
                        for d in range(wr.shape[0]):
                            self.dense(wr[d].astype(np.float32), None, steps)
        return self.layers - before

    def source(self) -> str:
        calls = "\n    ".join(self.calls)
        return (
            '#include "edgec_marks.h"\n\n'
            + "".join(self.decls)
            + f"\nint main(void)\n{{\n    edgec_mark_start();\n    {calls}\n"
            "    edgec_mark_stop();\n    return 0;\n}\n"
        )


def build_naive(prog: NaiveProgram, target: Target, out_dir: Path) -> Path:
    """Compile the naive program with the firmware's startup, flags and linker script."""
    cc = find_tool("arm-none-eabi-gcc")
    fw = firmware.firmware_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "naive.c").write_text(prog.source())
    (out_dir / firmware.LINKER_SCRIPT).write_text(firmware.linker_script(target))
    srcs = [str(out_dir / "naive.c"), *(str(fw / s) for s in firmware.FIRMWARE_SOURCES)]
    elf = out_dir / "naive.elf"
    cmd = [
        cc, *target.cpu_flags, *firmware.cflags_for(target), "-DEDGEC_SEMIHOSTING=1",
        f"-I{fw}", *firmware.LDFLAGS, *firmware.SPECS_SEMIHOSTING,
        "-T", str(out_dir / firmware.LINKER_SCRIPT), "-o", str(elf), *srcs, *firmware.LDLIBS,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out_dir)
    if proc.returncode != 0:
        raise EdgecError(f"naive reference did not build: {proc.stderr.strip()[:300]}")
    return elf


def naive_instructions(cm: edgec.CompiledModel, target: Target, work: Path) -> int | None:
    prog = NaiveProgram()
    if not prog.add_graph(cm.graph):
        return None
    elf = build_naive(prog, target, work)
    res, proc = count_elf(elf, target.qemu_machine or "", timeout_s=600)
    if proc.returncode != 0 or len(res.regions) != 1:
        raise EdgecError(f"naive reference run failed (status {proc.returncode})")
    return res.regions[0].insns


# -- single-layer models of the goal sizes ------------------------------------------------------


def _dense(n: int) -> onnx.ModelProto:
    from tests.helpers import make_model

    rng = np.random.default_rng(0)
    inits = {
        "w": rng.standard_normal((n, n)).astype(np.float32),
        "b": rng.standard_normal(n).astype(np.float32),
    }
    return make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        {"x": [1, n]}, {"y": [1, n]}, inits, name=f"dense{n}",
    )  # fmt: skip


def _conv(c_in: int, c_out: int, size: int, k: int, groups: int = 1, dims: int = 2):
    from tests.helpers import make_model

    rng = np.random.default_rng(0)
    spatial = [size] * dims
    inits = {
        "w": rng.standard_normal((c_out, c_in // groups, *([k] * dims))).astype(np.float32),
        "b": rng.standard_normal(c_out).astype(np.float32),
    }
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], pads=[k // 2] * (2 * dims), group=groups
    )
    return make_model([node], {"x": [1, c_in, *spatial]}, {"y": [1, c_out, *spatial]}, inits)


def _recurrent(kind: str, n_in: int, hidden: int, seq: int, bidirectional: bool = False):
    """One GRU / LSTM node over a sequence (batch 1): the cells of issue 12."""
    from tests.helpers import make_model

    rng = np.random.default_rng(0)
    dirs, gates = (2 if bidirectional else 1), {"GRU": 3, "LSTM": 4}[kind]
    scale = 1.0 / np.sqrt(hidden)
    inits = {
        "w": (scale * rng.standard_normal((dirs, gates * hidden, n_in))).astype(np.float32),
        "r": (scale * rng.standard_normal((dirs, gates * hidden, hidden))).astype(np.float32),
        "b": (scale * rng.standard_normal((dirs, 2 * gates * hidden))).astype(np.float32),
    }
    node = helper.make_node(
        kind, ["x", "w", "r", "b"], ["y", "y_h"], hidden_size=hidden,
        direction="bidirectional" if bidirectional else "forward",
    )
    return make_model([node], {"x": [seq, 1, n_in]},
                      {"y": [seq, dirs, 1, hidden], "y_h": [dirs, 1, hidden]}, inits,
                      name=f"{kind.lower()}{hidden}")


def _mlp_3_48_48_2():
    """The soft-actuator example's small tanh MLP 3 -> 48 -> 48 -> 2."""
    from tests.helpers import make_model

    rng = np.random.default_rng(0)
    inits: dict[str, np.ndarray] = {}
    for i, (a, b) in enumerate(((3, 48), (48, 48), (48, 2))):
        inits[f"w{i}"] = (rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32)
        inits[f"b{i}"] = (0.1 * rng.standard_normal(b)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["p0"], transB=1),
        helper.make_node("Tanh", ["p0"], ["h0"]),
        helper.make_node("Gemm", ["h0", "w1", "b1"], ["p1"], transB=1),
        helper.make_node("Tanh", ["p1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "w2", "b2"], ["y"], transB=1),
    ]
    return make_model(nodes, {"x": [1, 3]}, {"y": [1, 2]}, inits, name="mlp3_48_48_2")


#: name → (model factory, goal in instructions per MAC or None)
LAYERS = {
    # issue 12: recurrent cells (<= 2.2 for hidden >= 16) and the small tanh MLP (<= 2.0)
    "GRU 6->20, 50 steps": (lambda: _recurrent("GRU", 6, 20, 50), 2.2),
    "BiLSTM 6->12, 50 steps": (lambda: _recurrent("LSTM", 6, 12, 50, True), None),
    "BiLSTM 6->16, 50 steps": (lambda: _recurrent("LSTM", 6, 16, 50, True), 2.2),
    "MLP 3->48->48->2 tanh": (_mlp_3_48_48_2, 2.0),
    "dense 64x64": (lambda: _dense(64), 2.0),
    "dense 128x128": (lambda: _dense(128), 2.0),
    "dense 256x256": (lambda: _dense(256), 2.0),
    "conv2d 16->16 3x3 16x16": (lambda: _conv(16, 16, 16, 3), 2.5),
    "conv2d 32->32 3x3 8x8": (lambda: _conv(32, 32, 8, 3), 2.5),
    "conv2d 32->64 1x1 8x8": (lambda: _conv(32, 64, 8, 1), 2.5),
    "conv1d 16->32 k3 L64": (lambda: _conv(16, 32, 64, 3, dims=1), 2.5),
    "depthwise 32 3x3 8x8": (lambda: _conv(32, 32, 8, 3, groups=32), None),
}


def measure(
    name: str, model: onnx.ModelProto | Path, goal: float | None, target: Target, work: Path
) -> Row:
    cm = edgec.compile(model if isinstance(model, onnx.ModelProto) else str(model))
    rep = profile(cm, target, repeat=1, timeout_s=600)
    naive = naive_instructions(cm, target, work / "naive")
    return Row(name, rep, naive, goal)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.m4", description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated bench models (default: all)")
    ap.add_argument("--no-layers", action="store_true", help="skip the single-layer models")
    ap.add_argument("--layers", help="only the single-layer models whose names contain one of "
                    "these comma-separated words (e.g. GRU,LSTM,MLP)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ns = ap.parse_args(argv)
    from bench.models import BENCH_MODELS, model_path

    target = load_target(TARGET)
    names = ns.models.split(",") if ns.models else list(BENCH_MODELS)
    rows: list[Row] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-m4-") as tmp:
        jobs: list[tuple[str, onnx.ModelProto | Path, float | None]] = []
        for n in names:
            if n not in BENCH_MODELS:
                raise SystemExit(f"unknown bench model '{n}' (known: {', '.join(BENCH_MODELS)})")
            jobs.append((n, model_path(n), None))
        if not ns.no_layers:
            words = ns.layers.split(",") if ns.layers else [""]
            jobs += [(n, f(), goal) for n, (f, goal) in LAYERS.items()
                     if any(w in n for w in words)]
        for k, (n, model, goal) in enumerate(jobs):
            try:
                rows.append(measure(n, model, goal, target, Path(tmp) / str(k)))
            except EdgecError as exc:
                skipped.append(f"{n}: {' '.join(str(exc).split())}")
            print(f"measured {n}", file=sys.stderr)
    cells = [r.cells() for r in rows]
    if ns.markdown:
        print(markdown_table(HEADERS, cells, "l" + "r" * (len(HEADERS) - 2) + "l"))
    else:
        print(format_table(HEADERS, cells, align="l" + "r" * (len(HEADERS) - 2) + "l"))
    print(
        f"\n{TARGET} on QEMU {target.qemu_machine}; arm-none-eabi-gcc "
        f"{_gcc_version()}, {' '.join(firmware.cflags_for(target))}; instructions exact (QEMU "
        "TCG plugin), cycles estimated from the Cortex-M4 TRM timing tables (zero wait states). "
        "naive: the MAC layers alone as plain nested loops, same flags."
    )
    for s in skipped:
        print(f"skipped {s}")
    missed = [r.name for r in rows if r.goal is not None and r.rep.instructions_per_mac > r.goal]
    return 1 if missed else 0


def _gcc_version() -> str:
    try:
        out = subprocess.run(
            [find_tool("arm-none-eabi-gcc"), "-dumpversion"], capture_output=True, text=True
        ).stdout.strip()
    except (EdgecError, OSError):
        out = "?"
    return out or "?"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
