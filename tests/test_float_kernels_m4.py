"""The float dense walks on the emulated Cortex-M4F (their assembly) against torch: all row
blocks in one call (edgec_mv4, here with k / 4 equal to the block count), the last N % 4 rows
interleaved by their count (edgec_dot<R>x1), K with and without a k % 4 tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgec

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


class _NoBias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(13, 10, bias=False)
        self.b = nn.Linear(10, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("which", ["mlp_3_48_48_2", "no_bias_13_10_7"])
def test_dense_walks_on_cortex_m4f(which: str) -> None:
    torch.manual_seed(11)
    if which == "mlp_3_48_48_2":
        net: nn.Module = nn.Sequential(nn.Linear(3, 48), nn.Tanh(), nn.Linear(48, 48), nn.Tanh(),
                                       nn.Linear(48, 2))
        x = torch.randn(1, 3)
    else:
        net, x = _NoBias(), torch.randn(1, 13)
    m = edgec.compile(net.eval(), example_inputs=(x,))
    src = m.c_source
    assert ("edgec_mv4(" in src) == (which == "mlp_3_48_48_2")
    assert "edgec_dot2x1(" in src if which == "mlp_3_48_48_2" else "edgec_dot3x1(" in src
    rep = m.verify(target="cortex-m4f", n=3)
    assert rep.ok, rep.format()


class _Chain(nn.Module):
    """Dense layers whose (K, N) cover every form of the walk: the loop (k > 32) with
    k % 4 = 0..3 and an even and an odd count of four-k steps, the whole unrolled walk (k <= 32,
    k < 4 and k = 1 included), block pairs with and without an odd last block, N % 4 rows after
    the blocks, no blocks at all; no bias on some."""

    SIZES = (37, 40, 34, 35, 22, 13, 8, 3, 12, 5, 4, 1, 20, 14, 16)

    def __init__(self) -> None:
        super().__init__()
        s = self.SIZES
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=(i % 3 != 1))
                                    for i, (a, b) in enumerate(zip(s[:-1], s[1:], strict=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def test_walk_forms_on_cortex_m4f() -> None:
    torch.manual_seed(5)
    net = _Chain().eval()
    m = edgec.compile(net, example_inputs=(torch.randn(1, 37),))
    src = m.c_source
    for name in ("edgec_mv4(", "edgec_mv4_t1(", "edgec_mv4_t2(", "edgec_mv4_t3(",
                 "edgec_mv4_k22(", "edgec_mv4_k3(", "edgec_mv4_k1(", "edgec_mv4_k12("):
        assert name in src
    rep = m.verify(target="cortex-m4f", n=4)
    assert rep.ok, rep.format()


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_tanh_row_in_assembly_on_cortex_m4f(scale: float) -> None:
    """A dense layer's fused tanh as the table function in assembly over the row
    (edgec/ops/table_asm.py): the M4F = the host's C, also past the table's end (x 300),
    for +-inf and NaN."""
    from edgec.backend.host import HostLibrary, build_shared
    from edgec.mcu.run import run_on_target
    from edgec.mcu.targets import load_target

    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 12), nn.Tanh()).eval()
    m = edgec.compile(net, example_inputs=(torch.randn(1, 6),))
    assert "#ifdef EDGEC_CELL_ASM" in m.c_source
    rng = np.random.default_rng(1)
    xs = [(scale * rng.standard_normal((1, 6))).astype(np.float32) for _ in range(4)]
    xs[2][0, 1], xs[3][0, 4] = np.inf, np.nan
    board = run_on_target(m, load_target("cortex-m4f"), [[x] for x in xs])
    host = HostLibrary(m.cmodel, build_shared(m.cmodel))
    for x, got in zip(xs, board, strict=True):
        np.testing.assert_allclose(np.asarray(got[0]).reshape(-1),
                                   np.asarray(host.run(x)[0]).reshape(-1),
                                   rtol=1e-5, atol=1e-6, equal_nan=True)
    assert (np.abs(np.asarray(board[2][0])) == 1.0).all()  # +-inf in: +-1 out
    assert np.isnan(np.asarray(board[3][0])).all()  # NaN in, every output NaN
