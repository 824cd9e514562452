"""QConv2D's DSP path (edgec/ops/int8/conv_dsp.py): the assembly quad loop ``edgec_convq`` /
``edgec_convq_clamp``, its compile-time parameter table, and the im2col (two input pixels
widened in place, or gathered into the patch's upper half and widened upwards), bit-exact to
the numpy reference (= TFLite's reference kernels) on the emulated M4F, M33 and M7, with the
generic C of the same M4F build (-DEDGEC_NO_DSP) alongside."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.api import CompiledModel, compile_graph
from edgec.ir import Graph
from edgec.mcu.toolchain import have_tool
from edgec.ops.int8.conv_dsp import quad_params, quad_stream
from edgec.ops.int8.fixedpoint import mbqm, quantize_multiplier
from edgec.ops.int8.gemm_s8 import decode_pair_table, pair_table
from edgec.ops.interpret import interpret
from tests.int8_graphs import Builder, random_feeds, run_board

QEMU = pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
)


def _conv_graph() -> Graph:
    """Convolutions whose output channels per group are a multiple of 4 (the assembly quad
    loop), one per im2col form: pointwise in place (stride 1 and 2, an odd pixel count),
    aligned rows and taps with padding, a DS-CNN-like first layer (C = 1, 10x4 window, stride
    2: whole rows of four codes, single codes at the border), two groups, dilation, k
    padded to a multiple of 4, per-tensor weights; clamped and unclamped outputs."""
    b = Builder("convdsp", 7, {"patches": "off"})
    x = b.input("x", (1, 7, 9, 16))
    pw = b.op("QConv2D", [x, w := b.weights((8, 1, 1, 16), 0), b.bias(8, x, w)],
              act_min=-100, act_max=110)  # 63 pixels: the last pair is one pixel twice
    ps = b.op("QConv2D", [x, w := b.weights((12, 1, 1, 16), 0), b.bias(12, x, w)],
              strides=[2, 2])  # in place with strides
    c3 = b.op("QConv2D", [x, w := b.weights((8, 3, 3, 16), 0), b.bias(8, x, w)],
              pads=[1, 1, 1, 1])  # rows and taps word-aligned; k = 144: the looped walk
    cc = b.op("QConv2D", [x, w := b.weights((4, 3, 3, 16), 0), b.bias(4, x, w)],
              pads=[0, 1, 2, 1], act_min=-30, act_max=127)  # looped walk, clamped
    q64 = b.op("QConv2D", [x, w := b.weights((4, 2, 2, 16), 0), b.bias(4, x, w)],
               pads=[0, 0, 1, 1])  # k = 64: the whole loop-free walk
    gr = b.op("QConv2D", [pw, w := b.weights((8, 3, 3, 4), 0), b.bias(8, pw, w)],
              pads=[1, 0, 1, 2], act_min=-128, act_max=60)  # two groups of 4 channels
    dl = b.op("QConv2D", [pw, w := b.weights((4, 3, 2, 8), None), b.bias(4, pw, w)],
              dilations=[2, 2], pads=[2, 1, 1, 2])  # per-tensor weights
    s = b.input("s", (1, 13, 10, 1))
    f1 = b.op("QConv2D", [s, w := b.weights((8, 10, 4, 1), 0), b.bias(8, s, w)],
              strides=[2, 2], pads=[4, 1, 5, 1], act_min=-128, act_max=127)
    i3 = b.input("i3", (1, 6, 5, 3))
    k27 = b.op("QConv2D", [i3, w := b.weights((4, 3, 3, 3), 0), b.bias(4, i3, w)],
               pads=[1, 1, 1, 1])  # k = 27, padded to 28
    # the looped walk entered at blocks 1, 2, 3 (kp = 76, 72, 68)
    e1 = b.op("QConv2D", [i3, w := b.weights((4, 5, 5, 3), 0), b.bias(4, i3, w)],
              pads=[2, 2, 2, 2])
    e2 = b.op("QConv2D", [pw, w := b.weights((4, 3, 3, 8), 0), b.bias(4, pw, w)],
              pads=[1, 1, 1, 1], act_min=-128, act_max=100)
    e3 = b.op("QConv2D", [s, w := b.weights((4, 11, 6, 1), 0), b.bias(4, s, w)],
              pads=[5, 2, 5, 3])
    return b.finish([ps, c3, cc, q64, gr, dl, f1, k27, e1, e2, e3])


@pytest.fixture(scope="module")
def conv_model() -> CompiledModel:
    return compile_graph(_conv_graph())


def test_every_form_takes_the_assembly(conv_model: CompiledModel) -> None:
    """Each conv of the model runs its quads in assembly: both walks (looped, loop-free), both
    clamp forms, both im2col forms; the loop-free walk entered at several blocks, 0 included."""
    src = conv_model.c_source
    calls = re.findall(r"\b(edgec_convqf?(?:_clamp)?)\(ctl\);", src)
    assert set(calls) == {"edgec_convq", "edgec_convq_clamp", "edgec_convqf",
                          "edgec_convqf_clamp"}
    assert len(calls) == 12
    entries = {int(v) for v in re.findall(r"ctl\[10\] = (\d+)u;", src)}
    # flat: 32 - kp / 2; looped: (4 - kp / 4 % 4) % 4 for kp 144, 76, 72, 68
    assert entries == {0, 8, 12, 14, 18, 24, 1, 2, 3}
    assert re.search(r"\bedgec_widen2_pix\(xn", src)
    assert re.search(r"\bedgec_widen2_pair\(", src)
    assert re.search(r"\bedgec_widen2_pix\(xn \+ \(+ih0", src)  # interior pairs, row by row
    assert "edgec_quad2_s8(" not in src.split("#else")[0]


def test_host_matches_reference(conv_model: CompiledModel) -> None:
    rng = np.random.default_rng(5)
    for _ in range(3):
        feeds = random_feeds(conv_model.graph, rng)
        want = interpret(conv_model.graph, feeds)
        for name, got in zip(conv_model.graph.outputs, conv_model.run(feeds), strict=True):
            assert np.array_equal(got, want[name]), name


def test_quad_params_requantize_like_tflite() -> None:
    """The table's words: the accumulators' start values (b0 + 256 b1 modulo 2^32, b1, ...),
    then per channel (M, r, e) such that the assembly's (SMMLAR(2 acc, M, r) - (acc < 0)) >> e,
    saturated, is TFLite's double-rounding requantization plus the zero point, saturated, for
    accumulators across the bound (edges included)."""
    rng = np.random.default_rng(2)
    o, zp = 8, -37
    folded = rng.integers(-2**20, 2**20, o)
    scales = rng.uniform(1e-5, 2e-2, o)
    mult, shift = (np.array(v) for v in zip(*(quantize_multiplier(float(s), "double")
                                               for s in scales), strict=True))
    bound = np.abs(folded) + 128 * 127 * 64
    words = quad_params(folded, mult, shift, zp, bound).astype(np.int64).reshape(-1, 16)
    for q in range(o // 4):
        b = folded[4 * q : 4 * q + 4]
        assert words[q, 0] == np.int32(np.uint32((b[0] + 256 * b[1]) & 0xFFFFFFFF))
        assert words[q, 1] == b[1] and words[q, 3] == b[3]
        assert words[q, 2] == np.int32(np.uint32((b[2] + 256 * b[3]) & 0xFFFFFFFF))
        for r in range(4):
            c = 4 * q + r
            m, rnd, e = (int(v) for v in words[q, 4 + 3 * r : 7 + 3 * r])
            acc = np.concatenate([rng.integers(-bound[c], bound[c] + 1, 2000),
                                  [bound[c], -bound[c], 0, 1, -1]]).astype(np.int64)
            v = rnd + ((2 * acc * m + 2**31) >> 32)
            got = np.clip((v - (acc < 0)) >> e, -128, 127)
            want = np.clip(mbqm(acc, int(mult[c]), int(shift[c]), "double") + zp, -128, 127)
            assert np.array_equal(got, want), c


def test_quad_stream_layout() -> None:
    """Per quad: its four start words, its 4 kp bytes of the pair table, its twelve
    requantization words; groups one after the other; the weights decode back."""
    rng = np.random.default_rng(4)
    k, og, groups = 27, 8, 2
    kp = 28
    ws = [rng.integers(-128, 128, (og, k)).astype(np.int8) for _ in range(groups)]
    params = rng.integers(-2**31, 2**31, groups * og // 4 * 16).astype(np.int32)
    st = quad_stream(params, [pair_table(w) for w in ws], kp).reshape(-1, 4 + kp + 12)
    assert st.shape[0] == groups * og // 4
    par = params.reshape(-1, 16)
    assert np.array_equal(st[:, :4], par[:, :4]) and np.array_equal(st[:, -12:], par[:, 4:])
    for gr, w in enumerate(ws):
        table = st[gr * 2 : gr * 2 + 2, 4 : 4 + kp].astype("<i4").view(np.int8).reshape(-1)
        assert np.array_equal(decode_pair_table(table, og, k), w)


def _run_board(m: CompiledModel, target: str, out: Path, cflags: tuple[str, ...] = ()) -> tuple:
    feeds, outs, got, dis = run_board(m, target, out, cflags, seed=13)
    return feeds, outs, got, "<edgec_convqf>:" in dis


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("target,cflags,asm", [
    ("cortex-m4f", (), True),
    ("cortex-m4f", ("-DEDGEC_NO_DSP",), False),
    ("cortex-m33", (), True),
    ("cortex-m7", (), True),
])
def test_board_matches_reference(conv_model: CompiledModel, tmp_path: Path, target: str,
                                 cflags: tuple[str, ...], asm: bool) -> None:
    """Bit-exact on the board, with the assembly quad loop in the DSP builds' ELF and not in
    the generic one's."""
    feeds, outs, got, has_asm = _run_board(conv_model, target, tmp_path / "fw", cflags)
    assert has_asm == asm
    for f, vals in zip(feeds, got, strict=True):
        want = interpret(conv_model.graph, f)
        for p, g in zip(outs, vals, strict=True):
            assert np.array_equal(g, want[p.name]), (target, p.name)


def test_strict_c_and_determinism(conv_model: CompiledModel, tmp_path: Path) -> None:
    """The C (assembly functions included) compiles warning-free under the strict flags for
    the M4F (its DSP path) and the host, and compiling again gives the same bytes."""
    from tests.c_checks import STRICT, strict_for_m4f

    strict_for_m4f(conv_model, tmp_path / "m4f", "convdsp")
    conv_model.write(tmp_path / "host")
    proc = subprocess.run(["gcc", *STRICT, "-O2", "-c", "convdsp.c", "-o", "convdsp.o"],
                          cwd=tmp_path / "host", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert compile_graph(_conv_graph()).c_source == conv_model.c_source


ARM_GCC = pytest.mark.skipif(not have_tool("arm-none-eabi-gcc"),
                             reason="arm-none-eabi-gcc not installed (scripts/setup.sh)")


@ARM_GCC
@pytest.mark.parametrize("name", ["pix", "pair"])
def test_widen2_loop_end_never_shares_an_advancing_register(name: str, tmp_path: Path) -> None:
    """The patch widening's loop compares its store pointer with the end; when gcc can prove
    the scratch ends where the conv input starts (both in one static arena) it gave the input
    pointer and the end one register (``ldr lr, [r3], #4`` ... ``cmp r2, r3``: the end moved
    with the pointer, the loop overran the patch). With the early-clobber operands the end's
    register is none that the loop writes back."""
    from edgec.ops.int8.conv_dsp import widen2_c

    src = ("#include <stdint.h>\n#include <string.h>\n#define EDGEC_S8_DSP 1\n"
           + widen2_c(name) + "\nstatic uint32_t arena[64];\n"
           "void f(int32_t *sums)\n{\n"
           f"    edgec_widen2_{name}((const int8_t *)(arena + 16), (const int8_t *)(arena + 20),"
           " arena, 4, sums);\n}\n")
    (tmp_path / "w.c").write_text(src)
    proc = subprocess.run(["arm-none-eabi-gcc", "-O2", "-mcpu=cortex-m4", "-mthumb",
                           "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-S", "w.c", "-o", "w.s"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    asm = (tmp_path / "w.s").read_text()
    loop = asm[asm.index("1:"):asm.index("bne 1b")]
    written = set(re.findall(r"\[(\w+)\](?:, #-?\d+|!)", loop))  # post-indexed / writeback
    written |= set(re.findall(r"^\s*(?:ldr|ldrd|sxtb16|smlad|pkhbt|pkhtb)\s+(\w+)", loop, re.M))
    written |= set(re.findall(r"^\s*ldrd\s+\w+,\s*(\w+)", loop, re.M))
    cmp = re.search(r"cmp\s+(\w+),\s*(\w+)", loop)
    assert cmp and cmp.group(1) in written, loop
    assert cmp.group(2) not in written, loop
