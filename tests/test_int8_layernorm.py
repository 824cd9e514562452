"""int8 LayerNormalization: TFLite's full-integer converter lowers a Keras LayerNormalization to
MEAN, (DEQUANTIZE, NEG, QUANTIZE), SQUARED_DIFFERENCE, MEAN, ADD ε, RSQRT, MUL, MUL, ADD (and a
MUL by γ, an ADD of β). The two builtins edgec lacked, SQUARED_DIFFERENCE and RSQRT
(``QSquaredDifference``, ``QRsqrt``), are held to the TFLite interpreter's reference kernels
byte for byte alone (one-op flatbuffers, broadcasting, zero points, every input code), and in
Keras models (LayerNormalization on 2-D and 3-D inputs, with and without γ/β, Dense →
LayerNorm → Dense, a transformer block with multi-head attention) on 100 inputs each; the C
builds with strict flags and runs clean under ASan + UBSan, and runs on the emulated
Cortex-M4F."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgec
from edgec.api import compile_graph
from edgec.errors import EdgecError
from edgec.ir import Quant
from edgec.mcu.toolchain import have_tool
from edgec.ops.int8.rsqrt import inv_sqrt_multiplier_exp, rsqrt_table
from edgec.ops.interpret import interpret
from tests.int8_graphs import Builder, random_feeds

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs the TFLite reference")

from tests.tflite_builder import TflBuilder, run_interpreter  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _check(data: bytes, feeds_list: list[list[np.ndarray]], name: str = "q") -> None:
    """edgec's host C and numpy reference equal the interpreter byte for byte."""
    m = edgec.compile(data, name=name)
    for feeds in feeds_list:
        want = run_interpreter(data, feeds)[0]
        got = m.run(*feeds)
        ref = interpret(m.graph, dict(zip(m.input_names, feeds, strict=True)))
        assert got.dtype == want.dtype == np.int8
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(ref[m.output_names[0]], want)


# -- SQUARED_DIFFERENCE alone ------------------------------------------------------------------

def _squared_difference(sa: tuple[int, ...], sb: tuple[int, ...], sy: tuple[int, ...],
                        qa: tuple[float, int], qb: tuple[float, int],
                        qy: tuple[float, int]) -> bytes:
    b = TflBuilder()
    x = b.input("a", sa, "int8", quant=qa)
    w = b.input("b", sb, "int8", quant=qb)
    y = b.tensor("y", sy, "int8", quant=qy)
    b.op("SQUARED_DIFFERENCE", [x, w], [y])
    return b.build([x, w], [y])


#: (a shape, b shape, output shape): same shape, LayerNorm's [.., T, 1] mean, a scalar, 4-D
#: broadcasting both ways
SD_SHAPES = [((2, 3, 8), (2, 3, 8), (2, 3, 8)), ((1, 5, 8), (1, 5, 1), (1, 5, 8)),
             ((7,), (1,), (7,)), ((2, 1, 4, 5), (1, 3, 1, 5), (2, 3, 4, 5)),
             ((1, 8), (1, 8), (1, 8))]
#: (a, b, y) quantizations: LayerNorm's (a wider than b, y at zero point -128), b wider, equal
#: scales, zero points on every tensor
SD_QUANTS = [((0.0546, 15), (0.0133, 5), (0.2206, -128)),
             ((0.01, -3), (0.04, 60), (0.5, -100)),
             ((0.03, 0), (0.03, 0), (0.05, -128)),
             ((0.02, 127), (0.025, -128), (0.9, 10))]


def _codes(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Input set k: all -128, all 127, then random codes."""
    if k < 2:
        return np.full(shape, -128 if k == 0 else 127, np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


@pytest.mark.parametrize("quants", SD_QUANTS, ids=[f"q{i}" for i in range(len(SD_QUANTS))])
@pytest.mark.parametrize("shapes", SD_SHAPES, ids=[f"s{i}" for i in range(len(SD_SHAPES))])
def test_squared_difference_equals_the_interpreter(shapes: tuple, quants: tuple) -> None:
    sa, sb, sy = shapes
    data = _squared_difference(sa, sb, sy, *quants)
    rng = np.random.default_rng(len(sa) * 7 + sb[-1])
    feeds = [[_codes(rng, sa, k), _codes(rng, sb, 1 - k if k < 2 else k)] for k in range(12)]
    _check(data, feeds)


def test_squared_difference_every_code_pair() -> None:
    """All 256 x 256 pairs of codes (b broadcast along a's rows)."""
    data = _squared_difference((256, 256), (1, 256), (256, 256), (0.0213, -7), (0.0371, 21),
                               (0.3, -120))
    a = np.repeat(np.arange(-128, 128, dtype=np.int8)[:, None], 256, axis=1)
    _check(data, [[a, np.arange(-128, 128, dtype=np.int8)[None, :]]])


def test_squared_difference_refuses_a_ratio_of_one() -> None:
    """An output scale so small that twice_max² / (2^14 s_out) ≥ 1: TFLite's Prepare stops on
    it (QuantizeMultiplierSmallerThanOneExp); edgec says so in one line."""
    data = _squared_difference((4,), (4,), (4,), (0.5, 0), (0.5, 0), (1e-6, 0))
    with pytest.raises(EdgecError, match=r"QSquaredDifference.*output scale ratio .* not in "
                                         r"\(0, 1\)") as exc:
        edgec.compile(data)
    assert "\n" not in str(exc.value)


# -- RSQRT alone -------------------------------------------------------------------------------

def _rsqrt(q_in: tuple[float, int], q_out: tuple[float, int], n: int = 256) -> bytes:
    b = TflBuilder()
    x = b.input("x", (1, n), "int8", quant=q_in)
    y = b.tensor("y", (1, n), "int8", quant=q_out)
    b.op("RSQRT", [x], [y])
    return b.build([x], [y])


#: (input, output) quantizations: LayerNorm's (variance + ε at zero point -128), large and
#: small output scales (clamping at both ends), zero points inside the range
RSQRT_QUANTS = [((0.0388, -128), (0.00596, -128)), ((0.0388, -128), (0.05, 0)),
                ((0.2, -128), (0.0008, -128)), ((1.7, 0), (0.004, -30)),
                ((0.003, 17), (0.3, -128)), ((0.5, 100), (0.01, 3)),
                ((7.5, -128), (0.0005, 90))]


@pytest.mark.parametrize("q", RSQRT_QUANTS, ids=[f"q{i}" for i in range(len(RSQRT_QUANTS))])
def test_rsqrt_every_code_equals_the_interpreter(q: tuple) -> None:
    """Every code at or above the input zero point (TFLite stops with an error below it)."""
    (s_in, zp_in), q_out = q
    codes = np.arange(zp_in, 128, dtype=np.int8)
    data = _rsqrt((s_in, zp_in), q_out, codes.size)
    _check(data, [[codes.reshape(1, -1)]])


def test_rsqrt_below_the_zero_point_gives_127() -> None:
    """A negative real input (TFLite: "Rsqrt is only defined for positive values") gives 127,
    as zero does; numpy reference and C agree."""
    data = _rsqrt((0.05, 10), (0.05, 0), 256)
    codes = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    got = edgec.compile(data).run(codes)[0]
    assert (got[: 128 + 10 + 1] == 127).all()  # codes -128..10 (10 is the real 0)
    assert got[128 + 11] < 127
    table = rsqrt_table(0.05, 10, 0.05, 0, "double")
    np.testing.assert_array_equal(got, table)


def test_inv_sqrt_multiplier_is_close_to_the_real_one() -> None:
    """GetInvSqrtQuantizedMultiplierExp's fixed point: m · 2^(shift - 31) ≈ 1/sqrt(v) within
    1e-5 relative, from 2 to 2^31 - 1 (the loop dividing by 4 included)."""
    for v in [2, 3, 4, 5, 255, 1000, 1 << 20, (1 << 29) - 1, 1 << 29, (1 << 31) - 1]:
        m, shift = inv_sqrt_multiplier_exp(v)
        approx = m * 2.0 ** (shift - 31)
        assert abs(approx * np.sqrt(v) - 1.0) < 1e-5, (v, m, shift)
    assert inv_sqrt_multiplier_exp(1) == (2**31 - 1, 0)


# -- edgec's .tflite writer ----------------------------------------------------------------

def test_writer_round_trip() -> None:
    """A graph holding QSquaredDifference and QRsqrt written by edgec's .tflite writer runs in
    the interpreter to the bytes of edgec's C."""
    from edgec.quantize.tflite_writer import to_tflite

    b = Builder("ln_ops", seed=4)
    x = b.input("x", (1, 5, 8), quant=Quant.per_tensor(0.05, 3))
    mu = b.input("mu", (1, 5, 1), quant=Quant.per_tensor(0.02, -9))
    sd = b.op("QSquaredDifference", [x, mu], Quant.per_tensor(0.2, -128))
    rs = b.op("QRsqrt", [sd], Quant.per_tensor(0.01, -128))
    g = b.finish([rs])
    data = to_tflite(g)
    m = compile_graph(g)
    rng = np.random.default_rng(3)
    for _ in range(20):
        feeds = random_feeds(g, rng)
        feeds["mu"] = np.clip(feeds["mu"], -9, 127).astype(np.int8)
        got = m.run(feeds["x"], feeds["mu"])
        np.testing.assert_array_equal(got, run_interpreter(data, [feeds["x"], feeds["mu"]])[0])


# -- Keras LayerNormalization ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow", reason="the Keras tests need TensorFlow")


def _keras_models(tf: Any) -> dict[str, Callable[[], Any]]:
    keras = tf.keras
    L = keras.layers  # noqa: N806 - Keras' own spelling

    def seq(shape: tuple[int, ...], *layers: Any) -> Any:
        return keras.Sequential([keras.Input(shape, batch_size=1), *layers])

    def attention() -> Any:  # a transformer encoder block (attention KWS), LayerNorm twice
        a = keras.Input((6, 8), batch_size=1)
        h = L.MultiHeadAttention(num_heads=2, key_dim=4)(a, a)
        x = L.LayerNormalization()(L.Add()([a, h]))
        f = L.Dense(8)(L.Dense(16, activation="relu")(x))
        y = L.LayerNormalization(epsilon=1e-5)(L.Add()([x, f]))
        return keras.Model(a, L.Dense(3)(L.GlobalAveragePooling1D()(y)))

    return {
        "ln_3d": lambda: seq((5, 8), L.LayerNormalization()),
        "ln_2d": lambda: seq((12,), L.LayerNormalization()),
        "ln_plain": lambda: seq((5, 8), L.LayerNormalization(center=False, scale=False)),
        "ln_gamma_only": lambda: seq((4, 6), L.LayerNormalization(center=False)),
        "dense_ln_dense": lambda: seq((6, 16), L.Dense(16), L.LayerNormalization(),
                                      L.Dense(4)),
        "attention_block": attention,
    }


class _Zoo:
    def __init__(self, tf: Any):
        self.tf = tf
        self.factories = _keras_models(tf)
        self.blobs: dict[tuple[str, str], bytes] = {}

    def tflite(self, key: str, io: str) -> bytes:
        if (key, io) not in self.blobs:
            from tests.tflite_int8 import convert_int8

            tf = self.tf
            tf.keras.utils.set_random_seed(len(key))
            model = self.factories[key]()
            rng = np.random.default_rng(len(key))
            for w in model.weights:  # γ and β away from their 1 and 0 defaults
                if "gamma" in w.path:
                    w.assign(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
                elif "beta" in w.path or "bias" in w.path:
                    w.assign(rng.uniform(-0.5, 0.5, w.shape).astype(np.float32))
            self.blobs[key, io] = convert_int8(model, n=32, spread=1.5, float_io=io != "int8-io")
        return self.blobs[key, io]


@pytest.fixture(scope="module")
def zoo(tf: Any) -> _Zoo:
    return _Zoo(tf)


def _ops(data: bytes) -> list[str]:
    from edgec.frontend.tflite.reader import read_tflite

    return [op.op for op in read_tflite(data).subgraphs[0].operators]


def _feeds(m: edgec.CompiledModel, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(-128, 128, p.shape).astype(np.int8) if p.dtype == "int8"
            else (1.5 * rng.standard_normal(p.shape)).astype(np.float32)
            for p in m.cmodel.inputs]


@pytest.mark.parametrize("io", ["int8-io", "float-io"])
@pytest.mark.parametrize("key", ["ln_3d", "ln_2d", "ln_plain", "ln_gamma_only",
                                 "dense_ln_dense", "attention_block"])
def test_keras_layer_normalization_is_byte_exact(zoo: _Zoo, key: str, io: str) -> None:
    data = zoo.tflite(key, io)
    ops = _ops(data)
    assert "SQUARED_DIFFERENCE" in ops and "RSQRT" in ops, ops
    m = edgec.compile(data, name=key)
    kinds = {n.op for n in m.graph.nodes}
    assert {"QSquaredDifference", "QRsqrt", "QMean"} <= kinds, kinds
    rng = np.random.default_rng(11)
    for _ in range(100):
        feeds = _feeds(m, rng)
        got, want = m.run(*feeds), run_interpreter(data, feeds)[0]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_layer_normalization_strict_c_and_sanitizers(zoo: _Zoo, tmp_path: Path) -> None:
    """The attention block (float ports, int8 inside): -Wall -Wextra -Werror -std=c99
    -pedantic, and ASan + UBSan with a caller arena, outputs equal to the host build."""
    from tests.c_checks import strict_and_sanitized

    m = edgec.compile(zoo.tflite("attention_block", "float-io"), name="att_ln")
    rng = np.random.default_rng(12)
    for _ in range(3):
        feeds = _feeds(m, rng)
        (got,) = strict_and_sanitized(m, tmp_path, feeds)
        np.testing.assert_array_equal(got, m.run(*feeds))


def test_layer_normalization_builds_for_the_m4f(zoo: _Zoo, tmp_path: Path) -> None:
    from tests.c_checks import strict_for_m4f

    strict_for_m4f(edgec.compile(zoo.tflite("attention_block", "int8-io"), name="att_ln"),
                   tmp_path, "att_ln")


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_attention_block_on_cortex_m4f_equals_the_interpreter(zoo: _Zoo,
                                                              tmp_path: Path) -> None:
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target

    data = zoo.tflite("attention_block", "int8-io")
    m = edgec.compile(data, name="att_ln")
    rng = np.random.default_rng(13)
    xs = [_feeds(m, rng)[0] for _ in range(3)]
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs])
    res = run_qemu(build, timeout_s=180)
    assert len(res.outputs) == len(xs)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        assert got.tobytes() == run_interpreter(data, [x])[0].tobytes()
