"""int8 Add/Sub/Mul requantize in the SMMLAR form (``fixedpoint.smmlar_form``): every pair of
int8 codes through the generated C equals TFLite's MultiplyByQuantizedMultiplier arithmetic
(the ops' numpy references, themselves checked against the interpreter in
test_int8_tflite.py), on the host and on the emulated boards (the DSP's SMMLAR on the M4F/M33,
the C 64-bit product on the M3 and M0); constants outside the form keep the generic code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.api import CompiledModel, compile_graph
from edgec.ir import Graph, Quant
from edgec.mcu.project import build_firmware, step_ports
from edgec.mcu.qemu import run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from edgec.ops.int8.fixedpoint import mbqm, quantize_multiplier, smmlar_form, smmlar_rq
from edgec.ops.interpret import interpret
from tests.int8_graphs import Builder

QEMU = pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm",
)


def test_smmlar_form_equals_mbqm() -> None:
    """The numpy model of the C form equals MBQM + zero point over multipliers from 1e-7 to
    just below 1 (shifts -23..0), zero points, operand bounds from an int8 product to the
    shifted Add operands, on consecutive runs (every rounding tie) and random values."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(600):
        real = float(np.exp(rng.uniform(np.log(1e-7), np.log(0.9999))))
        m, h = quantize_multiplier(real, "double")
        zp = int(rng.integers(-128, 128))
        bound = int(rng.choice([255, 65025, 255 << 20, 1 << 28]))
        form = smmlar_form(m, h, zp, bound)
        assert form is not None, (real, zp, bound)
        e, r = form
        run = np.arange(-min(bound, 3000), min(bound, 3000) + 1)
        x = np.concatenate([run, rng.integers(-bound, bound + 1, 5000), [bound, -bound]])
        assert np.array_equal(smmlar_rq(x, m, e, r), mbqm(x, m, h) + zp), (m, h, zp)
        checked += 1
    assert checked == 600


def test_smmlar_form_refuses_what_it_cannot_hold() -> None:
    m, h = quantize_multiplier(0.3, "double")
    assert smmlar_form(m, h, 0, 1000) is not None
    assert smmlar_form(m, 2, 0, 1000) is None          # a left shift
    assert smmlar_form(0, h, 0, 1000) is None          # a zero multiplier
    assert smmlar_form(m, h, 0, 1 << 30) is None       # 2x leaves int32
    assert smmlar_form(m, -28, 100, 1000) is None      # zp << e leaves the rounding term


# (op, (s1, z1), (s2, z2), (so, zo), act range, fast form expected)
CASES = [
    ("QAdd", (0.02, 3), (0.011, -7), (0.03, -31), (-128, 127), True),    # input 0 the larger
    ("QAdd", (0.004, -128), (0.05, 127), (0.06, 5), (-128, 127), True),  # input 1 the larger
    ("QAdd", (0.02, 10), (0.02, -10), (0.04, 0), (-128, 127), True),     # equal: two shifts
    ("QAdd", (0.02, 3), (0.011, -7), (0.03, -31), (-31, 127), True),     # fused ReLU
    ("QSub", (0.015, 0), (0.03, 20), (0.05, -2), (-100, 90), True),
    ("QMul", (0.05, 4), (0.04, -9), (0.2, 11), (-128, 127), True),       # multiplier < 1/2
    ("QMul", (0.05, 4), (0.04, -9), (0.003, 11), (-128, 127), True),     # in [1/2, 1): e = 0
    ("QMul", (0.05, 4), (0.04, -9), (0.0007, -3), (-128, 127), False),   # > 1: left shift
    ("QAdd", (0.02, 3), (0.011, -7), (1e-9, 0), (-128, 127), False),    # output left shift
]


def _pairs_graph(case: tuple, codes: np.ndarray) -> Graph:
    """``y[i, j] = op(a[j], b[i])``: every pair of the codes in one run by broadcasting."""
    op, (s1, z1), (s2, z2), (so, zo), (lo, hi), _ = case
    b = Builder(f"pairs_{op.lower()}", seed=1)
    x = b.input("a", (codes.size,), quant=Quant.per_tensor(s1, z1))
    y = b.input("b", (codes.size, 1), quant=Quant.per_tensor(s2, z2))
    return b.finish([b.op(op, [x, y], quant=Quant.per_tensor(so, zo), act_min=lo,
                          act_max=hi)])


def _feeds(codes: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": codes.astype(np.int8), "b": codes.astype(np.int8).reshape(-1, 1)}


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_every_code_pair_on_the_host(case: tuple) -> None:
    codes = np.arange(-128, 128)
    m = compile_graph(_pairs_graph(case, codes))
    assert ("edgec_smmlar" in m.c_source) == case[-1]
    feeds = _feeds(codes)
    want = interpret(m.graph, feeds)[m.output_names[0]]
    got = m.run(feeds["a"], feeds["b"])
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} of 65536 differ"


def _run_board(m: CompiledModel, feeds: dict[str, np.ndarray], target: str,
               out: Path) -> tuple[np.ndarray, str]:
    ins, _ = step_ports(m)
    build = build_firmware(m, load_target(target), out, inputs=[[feeds[p.name] for p in ins]])
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=120)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(build.elf)], capture_output=True,
                         text=True, check=True).stdout
    return np.asarray(res.outputs[0][0]).reshape(m.graph.tensor(m.output_names[0]).shape), dis


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("target,smmlar", [("cortex-m4f", True), ("cortex-m33", True),
                                           ("cortex-m3", False), ("cortex-m0", False)])
def test_code_pairs_on_boards(tmp_path: Path, target: str, smmlar: bool) -> None:
    """A 48 × 48 grid of codes (both ends and zero included) through Add, Sub and both Mul
    forms, bit-exact on each board; SMMLAR in the ELF exactly where the core has the DSP."""
    rng = np.random.default_rng(5)
    codes = np.unique(np.concatenate([[-128, -127, -1, 0, 1, 126, 127],
                                      rng.integers(-128, 128, 41)]))
    for k in (0, 4, 6):
        m = compile_graph(_pairs_graph(CASES[k], codes))
        feeds = _feeds(codes)
        got, dis = _run_board(m, feeds, target, tmp_path / f"fw{k}")
        want = interpret(m.graph, feeds)[m.output_names[0]]
        assert np.array_equal(got.astype(np.int8), want), (target, CASES[k][0])
        assert ("smmlar" in dis) == smmlar, target


def _conv_graph() -> Graph:
    """Convolutions whose quads store four outputs at once (M a multiple of 4), per-channel and
    per-tensor, output zero points at both ends, with and without a clamp."""
    b = Builder("convrq", 9)
    x = b.input("x", (1, 6, 7, 8))
    c1 = b.op("QConv2D", [x, w := b.weights((8, 3, 3, 8), 0), b.bias(8, x, w)],
              quant=Quant.per_tensor(0.05, -128), pads=[1, 1, 1, 1])
    c2 = b.op("QConv2D", [x, w := b.weights((12, 1, 1, 8), None), b.bias(12, x, w)],
              quant=Quant.per_tensor(0.04, 127), act_min=-100, act_max=120)
    c3 = b.op("QConv2D", [c1, w := b.weights((16, 3, 3, 8), 0), b.bias(16, c1, w)],
              strides=[2, 2], pads=[1, 0, 1, 1], act_min=-20, act_max=127)
    return b.finish([c2, c3])


@QEMU
@pytest.mark.qemu
@pytest.mark.parametrize("target", ["cortex-m4f", "cortex-m33"])
def test_conv_smmlar_requant_on_boards(tmp_path: Path, target: str) -> None:
    """The DSP conv kernel's SMMLAR requantization equals the reference on the board."""
    m = compile_graph(_conv_graph())
    # the quads of a pixel pair run in edgec_convq* (edgec/ops/int8/conv_dsp.py), their
    # requantization one SMMLAR per output
    assert m.c_source.count("smmlar r") >= 4 and "edgec_convq" in m.c_source
    rng = np.random.default_rng(3)
    feeds = {"x": rng.integers(-128, 128, (1, 6, 7, 8)).astype(np.int8)}
    ins, outs = step_ports(m)
    build = build_firmware(m, load_target(target), tmp_path / "fw",
                           inputs=[[feeds[p.name] for p in ins]])
    assert not build.warnings, build.warnings
    got = run_qemu(build, timeout_s=120).outputs[0]
    want = interpret(m.graph, feeds)
    for p, g in zip(outs, got, strict=True):
        assert np.array_equal(np.asarray(g).reshape(want[p.name].shape), want[p.name]), p.name


def test_conv_smmlar_requant_bounds() -> None:
    """The form is taken only where no accumulator can leave its range: a bias near 2^30 (2 acc
    would overflow) or a multiplier above 1 (a left shift) keeps the generic requantization."""
    from edgec.ops.int8.conv import _acc_bound, _smmlar_requant

    w = np.full((4, 9), 127, np.int8)
    m, h = quantize_multiplier(0.001, "double")
    mult, shift = np.full(4, m), np.full(4, h)
    assert _smmlar_requant(mult, shift, 5, _acc_bound(np.zeros(4, np.int64), w))
    assert not _smmlar_requant(mult, shift, 5, _acc_bound(np.array([0, 0, 1 << 30, 0]), w))
    m2, h2 = quantize_multiplier(3.0, "double")
    assert not _smmlar_requant(np.array([m, m, m, m2]), np.array([h, h, h, h2]), 5,
                               _acc_bound(np.zeros(4, np.int64), w))
