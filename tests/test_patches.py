"""Patch-based inference (edgec.ops.patches, edgec.passes.patches): a chain of int8 convolutions
run patch by patch is bit-exact to running it whole (numpy reference and host C), on odd
geometries (SAME padding with the extra pixel at the end, stride 2, dilation, groups), and on a
Keras CNN whose peak sits in its first layers it is bit-exact to the TFLite interpreter while the
arena shrinks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.api import compile_graph
from edgec.backend.report import node_rows
from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops.interpret import interpret
from edgec.passes.patches import patch_early_stage, patch_stage
from tests.int8_graphs import Builder, random_feeds


def _odd_chain() -> Graph:
    """13x11x3 → conv 3x3 SAME → depthwise 3x3 stride 2 → dilated 3x3 conv (d=2, 2 groups)
    → 1x1 conv: 7x6 output."""
    b = Builder("odd_chain", seed=3)
    x = b.input("x", (1, 13, 11, 3))
    w = b.weights((8, 3, 3, 3), 0)
    y = b.op("QConv2D", [x, w, b.bias(8, x, w)], pads=[1, 1, 1, 1], act_min=-100, act_max=127)
    w = b.weights((1, 3, 3, 8), 3)
    y = b.op("QDepthwiseConv2D", [y, w, b.bias(8, y, w)], strides=[2, 2], pads=[1, 1, 1, 1])
    w = b.weights((6, 3, 3, 4), 0)
    y = b.op("QConv2D", [y, w, b.bias(6, y, w)], dilations=[2, 2], pads=[2, 2, 2, 2])
    w = b.weights((5, 1, 1, 6), 0)
    y = b.op("QConv2D", [y, w, b.bias(5, y, w)])
    return b.finish([y])


@pytest.mark.parametrize(("start", "length", "grid"),
                         [(0, 4, (7, 6)), (0, 4, (7, 3)), (0, 4, (1, 2)), (1, 2, (7, 2))])
def test_patched_chain_equals_whole(start: int, length: int, grid: tuple[int, int]) -> None:
    """The whole model as one stage (graph input to graph output), and a middle stage (arena
    tensors in and out)."""
    g = _odd_chain()
    patched = patch_stage(g, start, length, grid)
    assert [n.op for n in patched.nodes].count("PatchLoop") == 1
    assert len(patched.nodes) == len(g.nodes) - length + 1
    m = compile_graph(patched, options={"patches": "off"})
    rng = np.random.default_rng(5)
    for _ in range(4):
        feeds = random_feeds(g, rng)
        want = interpret(g, feeds)[g.outputs[0]]
        assert np.array_equal(interpret(patched, feeds)[g.outputs[0]], want)
        assert np.array_equal(m.run(feeds["x"]).reshape(want.shape), want)
    loop = patched.nodes[start]
    # 1x1 patches of a 7x6 output recompute a lot; the whole output as one patch nothing
    assert m.report()["structure"]["patch_recompute_macs"] == loop.attr("recompute_macs") > 0
    gy, gx = grid
    labels = [r[4] for r in node_rows(patched) if r[2].startswith("Patch")]
    masks = ["zero point outside"] * (length - 1)
    assert labels == [f"loop x{gy * gx} patches", *masks, "end of loop"]


def test_patch_stage_refuses_bad_requests() -> None:
    g = _odd_chain()
    with pytest.raises(EdgecError, match="does not divide the stage output 7x6"):
        patch_stage(g, 0, 4, (2, 2))
    with pytest.raises(EdgecError, match="not a chain"):
        patch_stage(g, 1, 4, (7, 6))
    g.options["patches"] = "sometimes"
    with pytest.raises(EdgecError, match="option patches='sometimes'"):
        patch_early_stage(g)


def test_pass_leaves_models_it_cannot_help() -> None:
    """A chain whose output is as large as its intermediates gains nothing: unchanged."""
    assert patch_early_stage(_odd_chain()).nodes[0].op == "QConv2D"


tf = pytest.importorskip("tensorflow", reason="TensorFlow converts the Keras test model")


@pytest.fixture(scope="module")
def early_peak() -> bytes:
    from bench.int8_models import keras_model, tflite

    return tflite(keras_model("mbnet_early"))


def _lite(blob: bytes):  # noqa: ANN202 - the interpreter class comes from the wheel
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    return it


def _run_lite(it, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def test_early_peak_cnn_bit_exact_and_smaller(early_peak: bytes) -> None:
    import edgec

    m = edgec.compile(early_peak, name="early")
    plain = edgec.compile(early_peak, name="early_plain", options={"patches": "off"})
    assert m.graph.nodes[0].op == "PatchLoop"
    rep, rep0 = m.report(), plain.report()
    assert rep["arena_bytes"] * 3 <= rep0["arena_bytes"]
    recompute = rep["structure"]["patch_recompute_macs"]
    assert 0 < recompute <= 0.3 * rep0["macs"]
    assert rep["macs"] == rep0["macs"] + recompute
    it = _lite(early_peak)
    rng = np.random.default_rng(21)
    for _ in range(4):
        x = rng.integers(-128, 128, (1, 64, 64, 1)).astype(np.int8)
        want = _run_lite(it, x)
        assert np.array_equal(interpret(m.graph, {m.graph.inputs[0]: x})[m.graph.outputs[0]]
                              .reshape(want.shape), want)
        assert np.array_equal(m.run(x).reshape(want.shape), want)


@pytest.mark.slow
@pytest.mark.qemu
def test_early_peak_cnn_on_cortex_m4f(early_peak: bytes, tmp_path: Path) -> None:
    """The patched model on the emulated M4F prints TFLite's bytes."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target
    from edgec.mcu.toolchain import have_tool

    if not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")):
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm")
    import edgec

    m = edgec.compile(early_peak, name="early_m4")
    assert m.graph.nodes[0].op == "PatchLoop"
    it = _lite(early_peak)
    rng = np.random.default_rng(22)
    xs = [[rng.integers(-128, 128, (1, 64, 64, 1)).astype(np.int8)] for _ in range(2)]
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", inputs=xs)
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=300)
    for x, got in zip(xs, res.outputs, strict=True):
        want = _run_lite(it, x[0])
        assert np.array_equal(got[0].reshape(want.shape), want)
