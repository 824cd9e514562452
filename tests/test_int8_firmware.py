"""int8 models on emulated Cortex-M boards: the firmware feeds int8 (and float) input vectors,
prints int8 outputs as bytes and floats as bit patterns, and the board's outputs equal edgec's
numpy reference (and, for a converted Keras CNN, the TFLite interpreter) byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.api import compile_graph
from edgec.errors import EdgecError
from edgec.mcu.project import build_firmware, render_main, step_ports
from edgec.mcu.qemu import parse_outputs, run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from edgec.ops.interpret import interpret
from tests.int8_graphs import kitchen_sink, random_feeds

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
        reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
    ),
]


@pytest.mark.parametrize("target", ["cortex-m4f", "cortex-m0"])
def test_kitchen_sink_on_board(tmp_path: Path, target: str) -> None:
    m = compile_graph(kitchen_sink(5))
    rng = np.random.default_rng(8)
    feeds = [random_feeds(m.graph, rng) for _ in range(4)]
    ins, outs = step_ports(m)
    vectors = [[f[p.name] for p in ins] for f in feeds]
    build = build_firmware(m, load_target(target), tmp_path / "fw", inputs=vectors)
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=120)
    for f, got in zip(feeds, res.outputs, strict=True):
        want = interpret(m.graph, f)
        for p, g in zip(outs, got, strict=True):
            assert g.dtype == want[p.name].dtype and np.array_equal(g, want[p.name]), p.name


def test_main_refuses_float_vectors_for_int8_ports() -> None:
    m = compile_graph(kitchen_sink(5))
    ins, _ = step_ports(m)
    bad = [np.zeros(p.shape, np.float32) for p in ins]
    with pytest.raises(EdgecError, match="'image' is an int8 port"):
        render_main(m, [bad])


def test_parse_outputs_int8_lines() -> None:
    m = compile_graph(kitchen_sink(5))
    _, outs = step_ports(m)
    lines = []
    for k, p in enumerate(outs):
        words = ["80 7f" + " 00" * (p.size - 2)] if p.dtype == "int8" else \
            [" ".join(["3f800000"] * p.size)]
        lines.append(f"y 0 {k}: {words[0]}")
    got = parse_outputs("\n".join(lines), outs, 1)[0]
    sm = got[0]
    assert sm.dtype == np.int8 and sm.reshape(-1)[0] == -128 and sm.reshape(-1)[1] == 127
    assert got[1].dtype == np.float32 and (got[1] == 1.0).all()


def test_tflite_cnn_on_cortex_m4f(tmp_path: Path) -> None:
    """A Keras CNN converted to int8 TFLite: the emulated M4F prints TFLite's bytes."""
    pytest.importorskip("tensorflow", reason="TensorFlow converts the Keras test model")
    from tests.test_int8_tflite import CNN_ATTRS, _cnn
    from tests.tflite_int8 import REF, Lite, build_graph, convert_int8

    ref = Lite(convert_int8(_cnn()), REF)
    g = build_graph(ref, CNN_ATTRS, name="qcnn_m4")
    m = compile_graph(g)
    rng = np.random.default_rng(14)
    xs = [ref.random_inputs(rng) for _ in range(5)]
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", inputs=xs)
    res = run_qemu(build, timeout_s=120)
    for x, got in zip(xs, res.outputs, strict=True):
        assert np.array_equal(got[0], ref.run(x)[0])
