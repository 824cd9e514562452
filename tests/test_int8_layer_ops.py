"""The int8 ops added for common Keras layers (QPRelu, QMaximum, QMinimum, QResizeBilinear):
host C against their numpy references on geometries the converted Keras models do not reach
(a slope with a zero point, broadcasting both ways, batches, downscaling, every
align_corners / half_pixel_centers combination TFLite allows, both rounding modes). The
numpy references themselves are held to the TFLite interpreter in tests/test_keras_models.py."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.api import compile_graph
from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops.int8.resize import axis_taps
from edgec.ops.interpret import interpret
from tests.int8_graphs import Builder, random_feeds

MODES = ("tflite", "double")


def _check(g: Graph, n: int = 10) -> None:
    m = compile_graph(g)
    rng = np.random.default_rng(0)
    for _ in range(n):
        feeds = random_feeds(g, rng)
        ref = interpret(g, feeds)[m.output_names[0]]
        got = m.run(*[feeds[i] for i in m.input_names])
        assert got.dtype == ref.dtype and np.array_equal(got, ref), np.count_nonzero(got != ref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sx,sa", [((2, 3, 4), (4,)), ((1, 5, 5, 3), (1, 1, 3)), ((6,), (6,)),
                                   ((3, 1), (1, 4))])
def test_qprelu(mode: str, sx: tuple, sa: tuple) -> None:
    b = Builder("qprelu", seed=len(sx), options={"int8_rounding": mode})
    x = b.input("x", sx, quant=b.quant(0.02, 0.2, zp=40))
    slope = b.const_int8(sa, quant=b.quant(0.001, 0.01, zp=30))  # a zero point on the slope
    _check(b.finish([b.op("QPRelu", [x, slope])]))


@pytest.mark.parametrize("op", ["QMaximum", "QMinimum"])
def test_qmaximum_qminimum_broadcast(op: str) -> None:
    b = Builder("qext", seed=2)
    x = b.input("a", (2, 3, 4))
    y = b.input("b", (3, 1))
    g = b.finish([b.op(op, [x, y], quant=b.g.quant(x))])
    feeds = random_feeds(g, np.random.default_rng(1))
    want = (np.maximum if op == "QMaximum" else np.minimum)(feeds["a"], feeds["b"])
    assert np.array_equal(interpret(g, feeds)[g.outputs[0]], want)
    _check(g)


# (N, H, W, C, out h, out w, align_corners, half_pixel_centers)
RESIZES = [
    (1, 4, 5, 3, 8, 10, 0, 1),
    (2, 5, 4, 2, 7, 9, 0, 1),
    (1, 6, 7, 3, 3, 4, 0, 1),  # downscale
    (1, 5, 4, 2, 9, 3, 1, 0),  # align_corners
    (1, 3, 3, 5, 7, 5, 0, 0),  # neither
    (1, 1, 4, 2, 3, 8, 0, 1),  # one row
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", RESIZES, ids=[f"resize{i}" for i in range(len(RESIZES))])
def test_qresize_bilinear(cfg: tuple, mode: str) -> None:
    n, h, w, c, h2, w2, ac, hp = cfg
    b = Builder("qresize", seed=h2 * w2, options={"int8_rounding": mode})
    x = b.input("x", (n, h, w, c))
    _check(b.finish([b.op("QResizeBilinear", [x], quant=b.g.quant(x), size=[h2, w2],
                          align_corners=ac, half_pixel_centers=hp)]))


def test_resize_taps_weights_sum_to_one_and_stay_inside() -> None:
    for size_in, size_out, ac, hp in [(4, 8, False, True), (7, 3, False, True),
                                      (5, 9, True, False), (3, 7, False, False)]:
        lo, hi, d = axis_taps(size_in, size_out, ac, hp)
        assert lo.min() >= 0 and hi.max() <= size_in - 1 and (hi >= lo).all()
        assert d.min() >= -512 and d.max() < 1024  # the int32 bound of the C kernel


def test_qresize_refuses_both_corner_modes() -> None:
    b = Builder("qresize_bad", seed=1)
    x = b.input("x", (1, 3, 3, 2))
    with pytest.raises(EdgecError, match="align_corners and half_pixel_centers"):
        b.op("QResizeBilinear", [x], size=[5, 5], align_corners=1, half_pixel_centers=1)
