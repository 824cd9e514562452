"""The int8 GEMM kernels of QFullyConnected / QConv2D (edgec/ops/int8/gemm_s8.py): the
compile-time pair-table layout, and the DSP-extension kernel (SMLAD/SXTB16) that Cortex-M4F and
M33 builds pick, byte-identical to the numpy reference (= the TFLite reference kernels) and to
the generic C built for the same board with -DEDGEC_NO_DSP, and to the generic C on the M3."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.api import CompiledModel, compile_graph
from edgec.ir import Graph, Quant
from edgec.mcu.toolchain import have_tool
from edgec.ops.int8.gemm_s8 import decode_pair_table, padded_dims, pair_table
from edgec.ops.interpret import interpret
from tests.int8_graphs import Builder, random_feeds, run_board

QEMU = pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
)


@pytest.mark.parametrize("m,k", [(1, 1), (2, 3), (3, 5), (4, 4), (5, 7), (6, 2), (7, 9),
                                 (8, 16), (13, 37)])
@pytest.mark.parametrize("kmult", [2, 4])
def test_pair_table_round_trip(m: int, k: int, kmult: int) -> None:
    rng = np.random.default_rng(m * 100 + k)
    w = rng.integers(-128, 128, (m, k)).astype(np.int8)
    t = pair_table(w, kmult)
    mp, kp = padded_dims(m, k, kmult)
    assert t.dtype == np.int8 and t.size == mp * kp and kp % kmult == 0
    assert np.array_equal(decode_pair_table(t, m, k, kmult), w)


def test_pair_table_words() -> None:
    """One quad, one k pair: [w0 ^ 0x80, w1, ...] as documented (lo rows stored + 128)."""
    w = np.array([[1, 2], [3, 4], [-5, 6], [7, -128]], np.int8)
    t = pair_table(w).reshape(-1, 4)  # k pairs padded to 2 (kp = 4)
    assert t[0].tolist() == [1 - 128, 3, 2 - 128, 4]
    assert t[1].tolist() == [-5 + 128, 7, 6 - 128, -128]
    assert (t[2:, [0, 2]] == -128).all() and (t[2:, [1, 3]] == 0).all()  # zero padding


def _gemm_graph() -> Graph:
    """Fully connected, convolution and depthwise layers of awkward sizes side by side, one
    model (depthwise: 16 channels with padding, 7 channels = 4 + a scalar tail without)."""
    b = Builder("gemms8", 5)
    v = b.input("v", (2, 37))  # two rows, K odd
    f1 = b.op("QFullyConnected", [v, w := b.weights((13, 37), 0), b.bias(13, v, w)],
              act_min=-60, act_max=100)  # 13 = 3 quads + a lone pair with a padded row
    f2 = b.op("QFullyConnected", [f1, w := b.weights((6, 13), None)])  # lone pair, per-tensor
    f3 = b.op("QFullyConnected", [f2, w := b.weights((3, 6), 0), b.bias(3, f2, w)])  # 1 quad
    x = b.input("img", (1, 7, 9, 3))  # C = 3: taps straddle k pairs
    c1 = b.op("QConv2D", [x, w := b.weights((5, 3, 3, 3), 0), b.bias(5, x, w)],
              strides=[2, 1], pads=[1, 1, 1, 0], act_min=-128, act_max=90)
    c2 = b.op("QConv2D", [c1, w := b.weights((10, 1, 1, 5), 0), b.bias(10, c1, w)])  # 1x1
    c3 = b.op("QConv2D", [c2, w := b.weights((7, 2, 3, 10), 0), b.bias(7, c2, w)],
              strides=[1, 2], dilations=[2, 1], pads=[0, 2, 1, 2])
    c4 = b.op("QConv2D", [c2, w := b.weights((6, 3, 3, 5), 0), b.bias(6, c2, w)],
              pads=[1, 1, 1, 1])  # two groups
    c5 = b.op("QConv2D", [c2, w := b.weights((16, 3, 3, 10), 0), b.bias(16, c2, w)],
              pads=[1, 1, 1, 1])  # C = 10: whole rows of taps widened at once
    d1 = b.op("QDepthwiseConv2D", [c5, w := b.weights((1, 3, 3, 16), 3), b.bias(16, c5, w)],
              strides=[2, 2], pads=[1, 1, 1, 1], depth_multiplier=1, dilations=[1, 1])
    d2 = b.op("QDepthwiseConv2D", [c3, w := b.weights((1, 2, 2, 7), 3), b.bias(7, c3, w)],
              strides=[1, 1], pads=[0, 0, 0, 0], depth_multiplier=1, dilations=[1, 2])
    c6 = b.op("QConv2D", [x, w := b.weights((8, 1, 1, 3), 0), b.bias(8, x, w)],
              act_min=-90, act_max=110)  # 7 x 9 = 63 pixels, 8 channels: whole quads, odd pair
    return b.finish([f3, f1, c3, c4, d1, d2, c6])


@pytest.fixture(scope="module")
def gemm_model() -> CompiledModel:
    return compile_graph(_gemm_graph())


def test_host_matches_reference(gemm_model: CompiledModel) -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        feeds = random_feeds(gemm_model.graph, rng)
        want = interpret(gemm_model.graph, feeds)
        got = gemm_model.run(feeds)
        for name, g in zip(gemm_model.graph.outputs, got, strict=True):
            assert np.array_equal(g, want[name]), name


def _run_board(m: CompiledModel, target: str, out: Path, cflags: tuple[str, ...] = ()) -> tuple:
    feeds, outs, got, dis = run_board(m, target, out, cflags, seed=11)
    return feeds, outs, got, "smlad" in dis


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("target,cflags,dsp", [
    ("cortex-m4f", (), True),
    ("cortex-m4f", ("-DEDGEC_NO_DSP",), False),
    ("cortex-m33", (), True),
    ("cortex-m7", (), True),
    ("cortex-m3", (), False),
])
def test_board_matches_reference(gemm_model: CompiledModel, tmp_path: Path, target: str,
                                 cflags: tuple[str, ...], dsp: bool) -> None:
    """Bit-exact on the board; the DSP kernels are in the M4F/M33 builds (SMLAD in the ELF) and
    absent from the M3's and from the -DEDGEC_NO_DSP build's."""
    feeds, outs, got, has_smlad = _run_board(gemm_model, target, tmp_path / "fw", cflags)
    assert has_smlad == dsp
    for f, vals in zip(feeds, got, strict=True):
        want = interpret(gemm_model.graph, f)
        for p, g in zip(outs, vals, strict=True):
            assert np.array_equal(g, want[p.name]), (target, p.name)


def _fc_forms_graph(rounding: str) -> Graph:
    """Fully connected layers for each requantization form of the DSP kernel: multipliers below
    1/4 (the single-rounding high-word form), a multiplier >= 1/4 in one layer (the general
    form), K = 50 (one 32-k iteration and five 4-k rest steps, k % 4 = 2), M = 9 (two quads
    and a lone pair with a padded row), K = 9 (rest steps only), K = 64 (no rest: the other
    quad loop); ``rounding`` is the int8_rounding option."""
    b = Builder("fcforms", 9, options={"int8_rounding": rounding})
    v = b.input("v", (1, 50))
    f1 = b.op("QFullyConnected", [v, w := b.weights((9, 50), 0), b.bias(9, v, w)],
              act_min=-100, act_max=120)
    big = Quant.per_tensor(0.00002, 3)  # s_x * s_w / s_y >= 1/4
    f2 = b.op("QFullyConnected", [v, w := b.weights((5, 50), None), b.bias(5, v, w)],
              quant=big)
    f3 = b.op("QFullyConnected", [f1, w := b.weights((16, 9), 0), b.bias(16, f1, w)])
    u = b.input("u", (1, 64))  # K % 32 == 0: the quad loop without the rest loop
    f4 = b.op("QFullyConnected", [u, w := b.weights((12, 64), 0), b.bias(12, u, w)])
    return b.finish([f2, f3, f4])


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("rounding", ["tflite", "double"])
def test_fc_requant_forms_on_board(tmp_path: Path, rounding: str) -> None:
    """Each DSP fully connected form (single rounding high-word and general, double) is
    bit-exact on the M4F, and the generic C of the same build too."""
    m = compile_graph(_fc_forms_graph(rounding))
    forms = {"edgec_fc_s8_single_hi", "edgec_fc_s8_single", "edgec_fc_s8_double"}
    used = {f for f in forms if f + "(" in m.c_source}
    assert used == ({"edgec_fc_s8_single_hi", "edgec_fc_s8_single"} if rounding == "tflite"
                    else {"edgec_fc_s8_double"})
    for cflags in ((), ("-DEDGEC_NO_DSP",)):
        feeds, outs, got, _ = _run_board(m, "cortex-m4f", tmp_path / f"fw{len(cflags)}", cflags)
        for f, vals in zip(feeds, got, strict=True):
            want = interpret(m.graph, f)
            for p, g in zip(outs, vals, strict=True):
                assert np.array_equal(g, want[p.name]), (rounding, cflags, p.name)


def _twin_layers_graph(options: dict | None = None) -> Graph:
    """Two depthwise + pointwise blocks of the same geometry (a DS-CNN's repeated block)."""
    b = Builder("twins", 12, options=options)
    x = b.input("x", (1, 5, 3, 8))  # 15 pixels: a last pixel pair of one
    for _ in range(2):
        x = b.op("QDepthwiseConv2D", [x, w := b.weights((1, 3, 3, 8), 3), b.bias(8, x, w)],
                 strides=[1, 1], pads=[1, 1, 1, 1], depth_multiplier=1, dilations=[1, 1],
                 act_min=-128, act_max=100)
        x = b.op("QConv2D", [x, w := b.weights((8, 1, 1, 8), 0), b.bias(8, x, w)],
                 act_min=-20, act_max=127)
    return b.finish([x])


@pytest.mark.parametrize("mode", ["shared", "specialized"])
def test_shared_kernels(mode: str) -> None:
    """int8_kernels=shared: layers of one geometry call one C function (one per op kind here)
    with their own tables and constants; specialized: none; both equal the reference."""
    import re

    m = compile_graph(_twin_layers_graph({"int8_kernels": mode}))
    defs = set(re.findall(r"static void (edgec_(?:dw|conv)_s8_\w+)\(", m.c_source))
    calls = re.findall(r"\b(edgec_(?:dw|conv)_s8_\w+)\(", m.c_source)
    if mode == "shared":
        assert len(defs) == 2 and len(calls) == 2 * 2 + 2, (defs, calls)
    else:
        assert not defs
    rng = np.random.default_rng(5)
    for _ in range(3):
        feeds = random_feeds(m.graph, rng)
        want = interpret(m.graph, feeds)
        assert np.array_equal(m.run(feeds), want[m.graph.outputs[0]])


@QEMU
@pytest.mark.qemu
def test_specialized_kernels_build_clean_on_both_paths(tmp_path: Path) -> None:
    """int8_kernels=specialized: each path's tables are named in the other path too, so neither
    build leaves a table unused (-Wunused-const-variable: the firmware did not build with
    -Werror), and neither links the other path's tables."""
    m = compile_graph(_twin_layers_graph({"int8_kernels": "specialized"}))
    assert "edgec_convq" in m.c_source  # the path with its own table
    for cflags in ((), ("-DEDGEC_NO_DSP",)):
        feeds, outs, got, _ = _run_board(m, "cortex-m4f", tmp_path / f"fw{len(cflags)}", cflags)
        for f, vals in zip(feeds, got, strict=True):
            want = interpret(m.graph, f)
            for p, g in zip(outs, vals, strict=True):
                assert np.array_equal(g, want[p.name]), (cflags, p.name)
        syms = subprocess.run(["arm-none-eabi-nm", str(next((tmp_path / f"fw{len(cflags)}")
                                                            .rglob("*.elf")))],
                              capture_output=True, text=True, check=True).stdout
        assert ("_convq" in syms) == (not cflags), cflags


def test_shared_kernels_option_error() -> None:
    from edgec.errors import EdgecError

    with pytest.raises(EdgecError, match="int8_kernels='fast'.*shared"):
        compile_graph(_twin_layers_graph({"int8_kernels": "fast"}))


def test_bench_layers_match_their_names() -> None:
    """bench/int8.py: each layer has the MACs its name says and a CMSIS-NN reference entry."""
    from bench import int8 as bench

    macs = {"dense 256x256": 65536, "dense 64x64": 4096,
            "conv 16x16x16->32 3x3": 16 * 16 * 32 * 9 * 16, "depthwise 3x3 32ch 16x16": 73728}
    assert set(bench.LAYERS) == set(bench.CMSIS_NN) == set(macs)
    for name, build in bench.LAYERS.items():
        assert int(compile_graph(build()).report()["macs"]) == macs[name], name


@QEMU
@pytest.mark.qemu
def test_dsp_kernel_executes_fewer_instructions() -> None:
    """Exact QEMU counts (deterministic): the DSP dense 64x64 runs in less than 40 % of the
    generic C's instructions on the same M4F (measured: 1.17 vs 3.46 per MAC)."""
    from bench.int8 import LAYERS
    from edgec.mcu.profile import profile

    cm = compile_graph(LAYERS["dense 64x64"]())
    dsp = profile(cm, "cortex-m4f", repeat=1)
    generic = profile(cm, "cortex-m4f", repeat=1, extra_cflags=["-DEDGEC_NO_DSP"])
    assert dsp.instructions_per_inference < 0.4 * generic.instructions_per_inference


@pytest.mark.skipif(not have_tool("arm-none-eabi-gcc"), reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("cpu", [("-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                                 ("-mcpu=cortex-m7", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
                                 ("-mcpu=cortex-m33", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
                                 ("-mcpu=cortex-m3", "-mfloat-abi=soft"),
                                 # unoptimized: the DSP assembly needs more registers than -O0
                                 # leaves, so the generic C is taken
                                 ("-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                                  "-O0")])
def test_strict_arm_build(gemm_model: CompiledModel, tmp_path: Path,
                          cpu: tuple[str, ...]) -> None:
    """-Wall -Wextra -Werror -std=c99 -pedantic on the DSP kernels (and the generic C)."""
    gemm_model.write(tmp_path)
    proc = subprocess.run(["arm-none-eabi-gcc", *cpu, "-mthumb", "-Wall", "-Wextra", "-Werror",
                           "-std=c99", "-pedantic", *([] if "-O0" in cpu else ["-O2"]), "-c",
                           f"{gemm_model.name}.c"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _depthwise_graph() -> Graph:
    """Depthwise layers for the pre-laid DSP kernel (depthwise_dsp.fast_channels): stride 2
    with padding on every border, C = 10 (two quads + a scalar tail), an odd 1x3 window with
    dilation, an even 2x2 window without padding (clamps: both bounds, the upper, the lower,
    none), and two that keep other paths: depth
    multiplier 2 (scalar) and a multiplier >= 1 (left shift: the previous DSP kernel); border
    pixels copy their window, except with a 5x5 window of 84 channels (a pointer per tap)."""
    b = Builder("dwdsp", 21)
    x = b.input("x", (2, 9, 7, 10))  # a batch of two: the per-image loop
    d1 = b.op("QDepthwiseConv2D", [x, w := b.weights((1, 3, 3, 10), 3), b.bias(10, x, w)],
              strides=[2, 2], pads=[1, 2, 2, 1], depth_multiplier=1, dilations=[1, 1],
              act_min=-100, act_max=110)
    d2 = b.op("QDepthwiseConv2D", [x, w := b.weights((1, 1, 3, 10), 3), b.bias(10, x, w)],
              strides=[1, 1], pads=[2, 2, 2, 2], depth_multiplier=1, dilations=[2, 2],
              act_min=-128, act_max=90)
    d3 = b.op("QDepthwiseConv2D", [x, w := b.weights((1, 2, 2, 10), 3), b.bias(10, x, w)],
              strides=[1, 2], pads=[0, 0, 0, 0], depth_multiplier=1, dilations=[1, 1],
              act_min=-20, act_max=127)
    y = b.input("y", (1, 5, 4, 4))
    d4 = b.op("QDepthwiseConv2D", [y, w := b.weights((1, 3, 3, 8), 3), b.bias(8, y, w)],
              strides=[1, 1], pads=[1, 1, 1, 1], depth_multiplier=2, dilations=[1, 1])
    d5 = b.op("QDepthwiseConv2D", [y, w := b.weights((1, 3, 3, 4), 3), b.bias(4, y, w)],
              strides=[1, 1], pads=[1, 1, 1, 1], depth_multiplier=1, dilations=[1, 1],
              quant=Quant.per_tensor(0.00002, 3))
    z = b.input("z", (1, 4, 3, 84))  # 5x5 x 84 channels > WINDOW_BYTES: a pointer per tap
    d6 = b.op("QDepthwiseConv2D", [z, w := b.weights((1, 5, 5, 84), 3), b.bias(84, z, w)],
              strides=[1, 1], pads=[2, 2, 2, 2], depth_multiplier=1, dilations=[1, 1])
    v = b.input("v", (1, 3, 67, 32))  # taps of the last row past LDR's 4095-byte offset
    d7 = b.op("QDepthwiseConv2D", [v, w := b.weights((1, 3, 3, 32), 3), b.bias(32, v, w)],
              strides=[1, 2], pads=[0, 0, 0, 0], depth_multiplier=1, dilations=[1, 1])
    return b.finish([d1, d2, d3, d4, d5, d6, d7])


def test_depthwise_fast_tables() -> None:
    """The pre-laid layout: doubled int16 pairs per tap pair and quad, the odd tap's [c0|c2],
    [c1|c3]; per quad 2 folded x4, (M, 2^(e-1) + zp << e, e) x4 (one LDM each); the stream: per
    quad its biases, weights, then requantization words (edgec_dw_rq4's LDM writes its pointer
    back to the next quad); None for a left shift or an accumulator that could overflow when
    doubled."""
    from edgec.ops.int8.depthwise_dsp import fast_stream, fast_tables

    w = np.arange(-13, 14, dtype=np.int8).reshape(3, 9)[:, :8]  # 3 taps, 8 channels
    folded = np.arange(8) * 100 - 300
    mult, shift = np.full(8, 1 << 30), np.full(8, -3)
    words, params = fast_tables(w, folded, mult, shift, zp_y=-5)
    h = words.view(np.uint32)
    lo = (h & 0xFFFF).astype(np.uint16).view(np.int16)
    hi = (h >> 16).astype(np.uint16).view(np.int16)
    assert words.size == 2 * (4 + 2)
    for q in range(2):
        blk = slice(6 * q, 6 * q + 6)
        assert lo[blk][:4].tolist() == [2 * v for v in w[0, 4 * q:4 * q + 4]]
        assert hi[blk][:4].tolist() == [2 * v for v in w[1, 4 * q:4 * q + 4]]
        c = w[2, 4 * q:4 * q + 4].astype(int) * 2
        assert lo[blk][4:].tolist() == [c[0], c[1]] and hi[blk][4:].tolist() == [c[2], c[3]]
    q0 = params.reshape(2, 16)[0].tolist()
    assert q0[:4] == [-600, -400, -200, 0] and q0[4:] == [1 << 30, 4 - 5 * 8, 3] * 4
    st = fast_stream(words, params).reshape(2, 4 + 6 + 12)
    assert st[1, :4].tolist() == params.reshape(2, 16)[1, :4].tolist()
    assert st[1, 4:10].tolist() == words[6:].tolist()
    assert st[1, 10:].tolist() == params.reshape(2, 16)[1, 4:].tolist()
    assert fast_tables(w, folded, mult, np.full(8, 1), 0) is None  # left shift
    assert fast_tables(w, folded + 2**30, mult, shift, 0) is None  # 2 acc leaves int32


def test_depthwise_paths_host() -> None:
    m = compile_graph(_depthwise_graph())
    # the helper, then one per kernel body: interior and border of d1, d2, d6, interior of
    # d3, d7
    assert m.c_source.count("edgec_dw_rq4(") == 1 + 2 + 2 + 1 + 2 + 1
    assert '"r"(xc + 4288), [ot] "i"(0)' in m.c_source
    assert m.c_source.count("memcpy(wb,") == 2 and "tp[24] + ch" in m.c_source
    # clamps only where the bound is not int8's: lo in d1, d3; hi in d1, d2 (+ definitions)
    assert m.c_source.count("edgec_max4_s8(") == 1 + 2 + 1
    assert m.c_source.count("edgec_min4_s8(") == 1 + 2 + 2
    rng = np.random.default_rng(8)
    for _ in range(3):
        feeds = random_feeds(m.graph, rng)
        want = interpret(m.graph, feeds)
        for name, g in zip(m.graph.outputs, m.run(feeds), strict=True):
            assert np.array_equal(g, want[name]), name


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("target,cflags", [("cortex-m4f", ()), ("cortex-m4f", ("-DEDGEC_NO_DSP",)),
                                           ("cortex-m33", ()), ("cortex-m7", ()),
                                           ("cortex-m3", ())])
def test_depthwise_paths_on_board(tmp_path: Path, target: str, cflags: tuple[str, ...]) -> None:
    m = compile_graph(_depthwise_graph())
    feeds, outs, got, _ = _run_board(m, target, tmp_path / "fw", cflags)
    for f, vals in zip(feeds, got, strict=True):
        want = interpret(m.graph, f)
        for p, g in zip(outs, vals, strict=True):
            assert np.array_equal(g, want[p.name]), (target, p.name)


def test_depthwise_rq4_arithmetic() -> None:
    """edgec_dw_rq4's arithmetic, step by step in Python integers, equals TFLite's double
    rounding MultiplyByQuantizedMultiplier + zero point wherever fast_tables takes the kernel:
    SMMLAR(2 acc, M, r) less the sign bit of acc (not of SMMLAR's product), shifted right by e
    (edge accumulators: 0, -1, powers of two and their neighbours, M = 2^30 and 2^31 - 1)."""
    from edgec.ops.int8.fixedpoint import mbqm

    rng = np.random.default_rng(4)
    edges = [0, 1, -1, 2, -2, 3, -3] + [s * (2**k + d) for k in range(1, 30)
                                        for d in (-1, 0, 1) for s in (1, -1)]
    accs = np.array(edges + rng.integers(-2**29, 2**29, 2000).tolist(), np.int64)
    checked = 0
    for m in [2**30, 2**31 - 1, *rng.integers(2**30, 2**31, 6).tolist()]:
        for e in range(1, 32):
            for zp in (-128, -3, 0, 127):
                rnd = (1 << (e - 1)) + (zp << e)
                ok = (2 * np.abs(accs) <= 2**31 - 1) & (
                    (np.abs(accs) * m >> 31) + 1 + abs(rnd) + 1 <= 2**31 - 1)
                a = accs[ok]
                got = ((rnd + ((2 * a * m + 2**31) >> 32)) - (a < 0)) >> e
                want = mbqm(a, m, -e, "double") + zp
                assert np.array_equal(got, want), (m, e, zp)
                checked += a.size
    assert checked > 100_000


@QEMU
@pytest.mark.qemu
def test_depthwise_specialized_on_board(tmp_path: Path) -> None:
    """int8_kernels=specialized: each layer's tables are static consts of its own code; the
    M4F build (the pre-laid path) reads neither the int8 tables nor leaves them unused (no
    warning), and is bit-exact."""
    g = _depthwise_graph()
    g.options["int8_kernels"] = "specialized"
    m = compile_graph(g)
    assert "edgec_dw_rq4(a0" in m.c_source and "static void edgec_dw_s8_" not in m.c_source
    feeds, outs, got, has_smlad = _run_board(m, "cortex-m4f", tmp_path / "fw")
    assert has_smlad
    for f, vals in zip(feeds, got, strict=True):
        want = interpret(m.graph, f)
        for p, g_ in zip(outs, vals, strict=True):
            assert np.array_equal(g_, want[p.name]), p.name


@QEMU
@pytest.mark.qemu
def test_depthwise_dsp_executes_fewer_instructions() -> None:
    """Exact QEMU counts: the bench's depthwise 3x3 x 32 channels (padding 1) on the M4F in
    less than 45 % of the generic C's instructions (measured: 2.90 vs 7.60 per MAC; the
    previous DSP kernel took 5.53, 73 %)."""
    from bench.int8 import LAYERS
    from edgec.mcu.profile import profile

    cm = compile_graph(LAYERS["depthwise 3x3 32ch 16x16"]())
    dsp = profile(cm, "cortex-m4f", repeat=1)
    generic = profile(cm, "cortex-m4f", repeat=1, extra_cflags=["-DEDGEC_NO_DSP"])
    assert dsp.instructions_per_inference < 0.45 * generic.instructions_per_inference


def _fc_layers_graph(n_layers: int, per_channel: bool) -> Graph:
    """``n_layers`` fully connected layers in a chain (K = 40: one 32-k iteration and two rest
    steps; M = 11 then 7: whole quads, a quad with a padded row and a lone pair)."""
    b = Builder(f"fc{n_layers}{'c' if per_channel else 't'}", 21)
    x = b.input("v", (1, 40))
    for i in range(n_layers):
        k, m = (40, 11) if i == 0 else (11, 7)
        x = b.op("QFullyConnected", [x, w := b.weights((m, k), 0 if per_channel else None),
                                     b.bias(m, x, w)], act_min=-110, act_max=115)
    return b.finish([x])


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("n_layers,per_channel", [(1, True), (2, True), (2, False)])
def test_fc_quad_loops_on_board(tmp_path: Path, n_layers: int, per_channel: bool) -> None:
    """The single-rounding kernel's two quad loops: C (one fully connected layer, specialised
    by the compiler) and the assembly function edgec_fcq_hi (several layers sharing the
    kernel), per-channel and per-tensor multipliers, bit-exact on the M4F."""
    from edgec.ops.int8.fc_dsp import whole_quads_in_assembly

    m = compile_graph(_fc_layers_graph(n_layers, per_channel))
    assert whole_quads_in_assembly(m.graph) == (n_layers > 1)
    assert ("edgec_fcq_hi(ctl, wp)" in m.c_source) == (n_layers > 1)
    feeds, outs, got, _ = _run_board(m, "cortex-m4f", tmp_path / "fw")
    for f, vals in zip(feeds, got, strict=True):
        want = interpret(m.graph, f)
        for p, g in zip(outs, vals, strict=True):
            assert np.array_equal(g, want[p.name]), p.name
