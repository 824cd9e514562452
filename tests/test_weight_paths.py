"""The report's int8 weight bytes per build path: an int8 model's C holds the tables of the DSP
kernels (``EDGEC_S8_DSP``: Cortex-M4/M7/M33) and of the generic C (host, M0, M3,
``-DEDGEC_NO_DSP``); a build links its path's only. ``weight_bytes_dsp`` / ``_generic`` (ops
tag the tables one path reads: ``EmitContext.const_array(path=)``) must equal the model tables
the linked ELF holds, the Cortex-M4F build and the same build with ``-DEDGEC_NO_DSP``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgec.api import CompiledModel, compile_graph
from edgec.backend.c_emit import WeightTable, lower_c
from edgec.backend.report import summary_rows
from edgec.errors import EdgecError
from edgec.ir import Graph, Quant
from edgec.mcu.elf import read_elf
from edgec.mcu.profile import WEIGHT_SYMBOL
from edgec.mcu.toolchain import have_tool
from tests.int8_graphs import Builder, kitchen_sink

GCC = pytest.mark.skipif(not have_tool("arm-none-eabi-gcc"),
                         reason="needs arm-none-eabi-gcc to link the firmware "
                         "(scripts/setup.sh installs it)")

#: the two builds: (path, extra cflags of the Cortex-M4F firmware)
BUILDS = (("dsp", ()), ("generic", ("-DEDGEC_NO_DSP",)))


def paths_graph(options: dict | None = None) -> Graph:
    """One layer per way a table reaches the builds: a conv of whole quads (the DSP path reads
    the quad stream, the generic C the pair table, bias and multipliers), a conv of 6 channels
    (a pair after the quad: every table both), depthwise with the pre-laid DSP stream (8
    channels: the plain tables generic only; 6: a scalar tail reads them on the DSP path too),
    a depthwise whose multiplier >= 1 keeps the plain DSP kernel (only the unfolded border bias
    is generic), depth multiplier 2 (generic C on both), fully connected per tensor (the DSP
    kernel's one-entry multiplier tables; two such layers, so the compiler cannot fold them
    into one call's constants) and per channel."""
    b = Builder("paths", 3, options)
    x = b.input("x", (1, 12, 10, 16))
    c1 = b.op("QConv2D", [x, w := b.weights((8, 3, 3, 16), 0), b.bias(8, x, w)],
              pads=[1, 1, 1, 1])
    c2 = b.op("QConv2D", [c1, w := b.weights((6, 3, 3, 8), 0), b.bias(6, c1, w)],
              pads=[1, 1, 1, 1])
    dw = {"strides": [1, 1], "pads": [1, 1, 1, 1], "depth_multiplier": 1,
          "dilations": [1, 1]}
    d1 = b.op("QDepthwiseConv2D", [c1, w := b.weights((1, 3, 3, 8), 3), b.bias(8, c1, w)],
              **dw)
    d2 = b.op("QDepthwiseConv2D", [c2, w := b.weights((1, 3, 3, 6), 3), b.bias(6, c2, w)],
              **dw)
    d3 = b.op("QDepthwiseConv2D", [c1, w := b.weights((1, 3, 3, 8), 3), b.bias(8, c1, w)],
              quant=Quant.per_tensor(0.00002, 3), **dw)
    d4 = b.op("QDepthwiseConv2D", [c2, w := b.weights((1, 3, 3, 12), 3), b.bias(12, c2, w)],
              **(dw | {"depth_multiplier": 2}))
    fl = b.op("Reshape", [d1, b.g.add_const("shape", np.array([1, -1], np.int64))], None)
    f1 = b.op("QFullyConnected", [fl, w := b.weights((24, 960), None), b.bias(24, fl, w)])
    f2 = b.op("QFullyConnected", [f1, w := b.weights((20, 24), 0), b.bias(20, f1, w)])
    f3 = b.op("QFullyConnected", [f2, w := b.weights((16, 20), None), b.bias(16, f2, w)])
    return b.finish([f3, d2, d3, d4])


def path_tables(m: CompiledModel) -> dict[str, dict[str, int]]:
    """Per build path, the tables (symbol: bytes) the report counts for it."""
    lowered = lower_c(m.graph, m.name)
    tables = lowered.vars["weights"]
    assert [w.sym for w in tables] == re.findall(r"static const \w+ (w\d+_\w+)\[", m.c_source)
    return {p: {w.sym: w.nbytes for w in tables if p in w.paths} for p, _ in BUILDS}


def elf_tables(m: CompiledModel, out: Path, cflags: tuple[str, ...]) -> dict[str, int]:
    """The model tables (symbol: bytes) the Cortex-M4F firmware built with ``cflags`` links,
    found as edgec profile's flash split finds them."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.targets import load_target

    build = build_firmware(m, load_target("cortex-m4f"), out, extra_cflags=cflags)
    info = read_elf(build.elf)
    flash = {s.name for s in info.sections if s.in_flash and not s.in_ram}
    return {s.name: s.size for s in info.symbols
            if s.kind == "OBJECT" and s.section in flash and WEIGHT_SYMBOL.match(s.name)}


def test_table_paths_merge() -> None:
    """A table two kernels share is read by both paths' union; tables every path reads add
    no per-path keys; an unknown path is an error."""
    t = WeightTable()
    a = t.add("a", np.arange(4), "int32_t", path="dsp")
    t.add("b", np.arange(3), "int8_t")
    assert t.report() == {"weight_bytes": 19, "weight_bytes_dsp": 19, "weight_bytes_generic": 3}
    assert t.add("a_again", np.arange(4), "int32_t", path="generic") == a
    assert t.report() == {"weight_bytes": 19}
    with pytest.raises(EdgecError, match="build path 'neon'"):
        t.add("c", np.arange(2), path="neon")


def test_float_report_unchanged() -> None:
    """A float model's tables serve every build: one figure, as before."""
    b = Builder("flt", 1)
    x = b.input("x", (1, 6), "float32")
    g = b.g
    w = g.add_const("w", np.ones((6, 4), np.float32))
    c = g.add_const("c", np.ones(4, np.float32))
    y = b.op("Gemm", [x, w, c], None, dtype="float32")
    m = compile_graph(b.finish([y]))
    rep = m.report()
    assert rep["weight_bytes"] == 4 * (6 * 4 + 4)
    assert not [k for k in rep if k.startswith("weight_bytes_")]
    for dsp in (None, True, False):
        assert dict(summary_rows(rep, dsp))["weights (flash)"] == "112 B"


def test_summary_rows_int8() -> None:
    rep = compile_graph(paths_graph()).report()
    dsp, gen, total = rep["weight_bytes_dsp"], rep["weight_bytes_generic"], rep["weight_bytes"]
    assert gen < dsp < total < dsp + gen  # both read most, neither all
    cells = {d: dict(summary_rows(rep, d))["weights (flash)"] for d in (None, True, False)}
    assert cells[None].startswith(f"{dsp:,} B on DSP cores")
    assert f"{gen:,} B on others" in cells[None]
    assert cells[True].startswith(f"{dsp:,} B (a DSP core's build")
    assert cells[False].startswith(f"{gen:,} B (a build without the DSP kernels")
    assert all(f"{total:,} B of tables in the C file" in c for c in cells.values())


@GCC
@pytest.mark.parametrize("options", [{}, {"int8_rounding": "tflite"}], ids=["double", "tflite"])
def test_report_equals_elf(tmp_path: Path, options: dict) -> None:
    """Each build links exactly the tables the report counts for its path."""
    m = compile_graph(paths_graph(options))
    said = path_tables(m)
    rep = m.report()
    for path, cflags in BUILDS:
        got = elf_tables(m, tmp_path / path, cflags)
        assert got == said[path], (path, sorted(set(got) ^ set(said[path])))
        assert rep[f"weight_bytes_{path}"] == sum(got.values())


@GCC
@pytest.mark.parametrize("name", ["kitchen", "kitchen_specialized", "paths_specialized",
                                  "simd_gemm", "simd_depthwise"])
def test_report_bounds_elf(tmp_path: Path, name: str) -> None:
    """Models with small fully unrolled layers: the compiler folds some of their tables into
    code (every read at a constant index, or none left: a window never wholly inside), so a
    build may link less than its path reads, but never a table the report leaves out of its
    path."""
    from tests.test_int8_simd import _depthwise_graph, _gemm_graph

    g = {"kitchen": lambda: kitchen_sink(),
         "kitchen_specialized": lambda: kitchen_sink(options={"int8_kernels": "specialized"}),
         "paths_specialized": lambda: paths_graph({"int8_kernels": "specialized"}),
         "simd_gemm": _gemm_graph, "simd_depthwise": _depthwise_graph}[name]()
    m = compile_graph(g)
    said = path_tables(m)
    rep = m.report()
    for path, cflags in BUILDS:
        got = elf_tables(m, tmp_path / path, cflags)
        assert set(got) <= set(said[path]), (path, sorted(set(got) - set(said[path])))
        folded = sum(said[path].values()) - sum(got.values())
        assert rep[f"weight_bytes_{path}"] == sum(said[path].values())
        assert 0 <= folded <= 0.1 * rep[f"weight_bytes_{path}"], (path, folded)


@GCC
def test_has_dsp_matches_the_compiler() -> None:
    """Target.has_dsp (the report's path for a target) says what arm-none-eabi-gcc defines:
    ``__ARM_FEATURE_DSP`` for the target's flags."""
    from edgec.mcu.targets import list_targets

    for t in list_targets():
        macros = subprocess.run(["arm-none-eabi-gcc", *t.cpu_flags, "-dM", "-E", "-x", "c",
                                 "/dev/null"], capture_output=True, text=True, check=True).stdout
        assert t.has_dsp == ("#define __ARM_FEATURE_DSP 1" in macros), t.name


@pytest.mark.slow
@GCC
def test_ds_cnn_report_equals_elf(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The int8 DS-CNN bench model: the report's per-path bytes are its firmware's tables;
    ``edgec build`` reports the target's figure."""
    import json

    pytest.importorskip("tensorflow", reason="TensorFlow converts the Keras bench model")
    from bench.int8_models import keras_model, tflite
    from edgec.cli import main

    path = tmp_path / "ds_cnn.tflite"
    path.write_bytes(tflite(keras_model("ds_cnn")))
    import edgec

    m = edgec.compile(path.read_bytes(), name="ds_cnn")
    rep = m.report()
    for p, cflags in BUILDS:
        assert rep[f"weight_bytes_{p}"] == sum(elf_tables(m, tmp_path / p, cflags).values())
    for target, p in (("cortex-m4f", "dsp"), ("cortex-m3", "generic")):
        capsys.readouterr()
        assert main(["build", str(path), "--target", target, "-o", str(tmp_path / target),
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["weight_bytes"] == rep[f"weight_bytes_{p}"]


def test_profile_weights_note() -> None:
    """edgec profile notes where the ELF's tables differ from the report's figure for the
    target's path, and says nothing where they agree."""
    from types import SimpleNamespace

    from edgec.cli.profile import weights_note

    rep = {"weight_bytes": 300, "weight_bytes_dsp": 200, "weight_bytes_generic": 150}

    def prof(elf_bytes: int) -> Any:
        return SimpleNamespace(size=SimpleNamespace(weights=elf_bytes))

    assert weights_note(rep, prof(200), dsp=True) is None
    assert weights_note(rep, prof(150), dsp=False) is None
    note = weights_note(rep, prof(190), dsp=True)
    assert note is not None and "190 B" in note and "200 B" in note and "folded" in note
    assert weights_note({"weight_bytes": 64}, prof(64), dsp=True) is None  # float: one figure


def test_cuda_report_has_one_figure() -> None:
    """The CUDA target holds every table of the file on the GPU: no Cortex-M build paths."""
    from edgec.api import compile_graph_cuda

    g = paths_graph()
    rep = compile_graph_cuda(g).report()
    assert rep["weight_bytes"] == compile_graph(g).report()["weight_bytes"]
    assert not [k for k in rep if k.startswith("weight_bytes_")]
