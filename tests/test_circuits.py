"""C. elegans circuit policies: ncps CfC / LTC (wired and fully connected) and NCAP swimmers
compiled to C and checked against PyTorch on long sequences; sparse emission of masked weights.

Tolerances: CfC and LTC match torch within rtol 1e-4 / atol 1e-5 even after 400 carried steps
(the cells are contractive: tanh/sigmoid gates, and LTC's fused solver divides by
``cm·6/Δt + g_leak + Σ w ≥ cm·6``, so per-step rounding differences — summation order, libm
expf/tanhf vs torch's vectorised ones, ~1e-7 — are damped rather than accumulated). NCAP torques
are bit-identical (the same float32 operations in the same order).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ncps.torch import LTC, CfC, CfCCell, LTCCell, WiredCfCCell
from ncps.wirings import NCP, AutoNCP, FullyConnected

import edgec
from edgec.api import compile_graph
from edgec.errors import EdgecError, UnsupportedOpError
from edgec.ir import Graph, Node, Tensor
from edgec.ops.circuits import csr_bytes, sparse_summary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "swimmer_ncap"))
from ncap import SwimmerModule  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")


def _torch_run(m: torch.nn.Module, *args: object) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        y, h = m(*args)
    hs = h if isinstance(h, tuple) else (h,)
    return (y.numpy(), *(t.numpy() for t in hs))


def _check_run(m: torch.nn.Module, x: torch.Tensor, hx: object, **opts: str) -> edgec.CompiledModel:
    """Compile ``m(x, hx)``; run(x, hx) (C) and the IR interpreter must return torch's (y, hx)."""
    m = m.eval()
    args = (x,) if hx is None else (x, hx)
    want = _torch_run(m, *args)
    cm = edgec.compile(m, example_inputs=args, options=opts)
    flat = [x.numpy()]
    if hx is not None:
        flat += [t.numpy() for t in (hx if isinstance(hx, tuple) else (hx,))]
    for got in (cm.run(*flat), cm.reference(*flat)):
        got = got if isinstance(got, list) else [got]
        assert len(got) == len(want)
        for g_, w_ in zip(got, want, strict=True):
            assert g_.shape == w_.shape
            np.testing.assert_allclose(g_, w_, rtol=RTOL, atol=ATOL)
    return cm


# --- CfC ---------------------------------------------------------------------------------------

CFC_CASES = {
    "fc_default": lambda: CfC(3, 7),
    "fc_no_gate": lambda: CfC(3, 7, mode="no_gate", backbone_units=17),
    "fc_pure": lambda: CfC(3, 7, mode="pure", backbone_units=5),
    "fc_two_layer_silu": lambda: CfC(3, 7, backbone_layers=2, backbone_units=9, activation="silu"),
    "fc_gelu": lambda: CfC(3, 7, backbone_units=6, activation="gelu"),
    "fc_no_backbone": lambda: CfC(3, 7, backbone_layers=0),
    "fc_relu_proj": lambda: CfC(3, 7, activation="relu", proj_size=2, backbone_units=8),
    "fc_time_major_last": lambda: CfC(3, 7, batch_first=False, return_sequences=False),
    "autoncp": lambda: CfC(3, AutoNCP(17, 3)),
    "autoncp_no_gate_last": lambda: CfC(3, AutoNCP(17, 3), mode="no_gate", return_sequences=False),
    "autoncp_pure_time_major": lambda: CfC(3, AutoNCP(17, 3), mode="pure", batch_first=False),
    "ncp": lambda: CfC(3, NCP(5, 4, 3, 2, 2, 2, 2), proj_size=1),
    "wired_fully_connected": lambda: CfC(3, FullyConnected(7, 2)),
}


@pytest.mark.parametrize("case", list(CFC_CASES))
def test_cfc_run_matches_torch(case: str) -> None:
    torch.manual_seed(1)
    m = CFC_CASES[case]()
    bf = m.batch_first
    x = torch.randn(3, 41, 3) if bf else torch.randn(41, 3, 3)
    h = 0.5 * torch.randn(3, m.state_size)
    modes = ("csr", "dense") if "ncp" in case else ("auto",)
    for mode in modes:
        cm = _check_run(m, x, h, sparse=mode)
        assert cm.is_stateful


def test_cfc_mixed_memory_and_unbatched() -> None:
    torch.manual_seed(2)
    m = CfC(3, AutoNCP(11, 2), mixed_memory=True)
    x = torch.randn(2, 23, 3)
    hx = (0.3 * torch.randn(2, 11), 0.3 * torch.randn(2, 11))
    cm = _check_run(m, x, hx, sparse="csr")
    assert len(cm.cmodel.state) == 2
    # unbatched (L, C) input with 1-D state, and no state at all
    m1 = CfC(3, 5)
    _check_run(m1, torch.randn(19, 3), 0.3 * torch.randn(5))
    _check_run(m1, torch.randn(19, 3), None)


def _step_matches_sequence(m: torch.nn.Module, steps: int, feat: int, seed: int,
                           **opts: str) -> edgec.CompiledModel:
    """Compile one step (T = 1); reset + step per tick must follow torch's whole sequence."""
    torch.manual_seed(seed)
    m = m.eval()
    xs = torch.randn(1, steps, feat)
    h0 = torch.zeros(1, m.state_size)
    y_ref, h_ref = _torch_run(m, xs, h0)
    cm = edgec.compile(m, example_inputs=(xs[:, :1], h0), options=opts)
    cm.reset()
    ys = np.concatenate([cm.step(xs[:, t : t + 1].numpy()) for t in range(steps)], axis=1)
    np.testing.assert_allclose(ys, y_ref, rtol=RTOL, atol=ATOL)
    (state,) = cm.state().values()
    np.testing.assert_allclose(state, h_ref, rtol=RTOL, atol=ATOL)
    return cm


@pytest.mark.parametrize("wiring", ["autoncp", "fc"])
def test_cfc_long_sequence_stepped(wiring: str) -> None:
    units = AutoNCP(19, 4) if wiring == "autoncp" else 9
    _step_matches_sequence(CfC(5, units), 400, 5, seed=3, sparse="csr")


def test_cfc_cells_one_step() -> None:
    torch.manual_seed(4)
    x, h = torch.randn(3, 4), 0.4 * torch.randn(3, 6)
    cell = CfCCell(4, 6, backbone_units=7).eval()
    with torch.no_grad():
        want, _ = cell(x, h, 0.7)

    class Wrap(torch.nn.Module):
        def __init__(self, c: torch.nn.Module):
            super().__init__()
            self.c = c

        def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple:
            return self.c(x, h, 0.7)

    cm = edgec.compile(Wrap(cell), example_inputs=(x, h))
    y, hn = cm.run(x.numpy(), h.numpy())
    np.testing.assert_allclose(y, want.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hn, want.numpy(), rtol=RTOL, atol=ATOL)
    wired = WiredCfCCell(4, AutoNCP(9, 2)).eval()
    h9 = 0.4 * torch.randn(3, 9)
    with torch.no_grad():
        y_w, h_w = wired(x, h9, 1.5)

    class WrapW(Wrap):
        def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple:
            return self.c(x, h, 1.5)

    cm = edgec.compile(WrapW(wired), example_inputs=(x, h9), options={"sparse": "csr"})
    y, hn = cm.run(x.numpy(), h9.numpy())
    np.testing.assert_allclose(y, y_w.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hn, h_w.numpy(), rtol=RTOL, atol=ATOL)


# --- LTC ---------------------------------------------------------------------------------------

LTC_CASES = {
    "autoncp": lambda: LTC(3, AutoNCP(13, 2)),
    "ncp_time_major_last": lambda: LTC(
        3, NCP(4, 3, 3, 2, 2, 2, 2), batch_first=False, return_sequences=False
    ),
    "fc_units": lambda: LTC(3, 7),
    "fc_explicit_constraints_linear": lambda: LTC(
        3, 7, implicit_param_constraints=False, input_mapping="linear", output_mapping="linear"
    ),
    "no_mapping_three_unfolds": lambda: LTC(
        3, AutoNCP(9, 3), input_mapping=None, output_mapping=None, ode_unfolds=3
    ),
    "mixed_memory": lambda: LTC(3, AutoNCP(9, 2), mixed_memory=True),
}


@pytest.mark.parametrize("case", list(LTC_CASES))
def test_ltc_run_matches_torch(case: str) -> None:
    torch.manual_seed(5)
    m = LTC_CASES[case]()
    x = torch.randn(2, 37, 3) if m.batch_first else torch.randn(37, 2, 3)
    h = 0.3 * torch.randn(2, m.state_size)
    hx = (h, 0.3 * torch.randn(2, m.state_size)) if m.use_mixed else h
    for mode in ("csr", "dense"):
        _check_run(m, x, hx, sparse=mode)


@pytest.mark.parametrize("wiring", ["autoncp", "fc"])
def test_ltc_long_sequence_stepped(wiring: str) -> None:
    units = AutoNCP(16, 3) if wiring == "autoncp" else 8
    _step_matches_sequence(LTC(4, units), 400, 4, seed=6)


def test_ltc_cell_elapsed_time() -> None:
    torch.manual_seed(7)
    cell = LTCCell(AutoNCP(8, 2), 3).eval()
    x, h = torch.randn(2, 3), 0.2 * torch.randn(2, 8)
    with torch.no_grad():
        y_t, h_t = cell(x, h, 0.25)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = cell

        def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple:
            return self.c(x, h, 0.25)

    cm = edgec.compile(Wrap(), example_inputs=(x, h))
    y, hn = cm.run(x.numpy(), h.numpy())
    np.testing.assert_allclose(y, y_t.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hn, h_t.numpy(), rtol=RTOL, atol=ATOL)


# --- sparse emission ---------------------------------------------------------------------------


def _sparse_graph(w: np.ndarray, b: np.ndarray, rows: int, relu: bool) -> Graph:
    g = Graph("sparse")
    g.tensors["x"] = Tensor("x", (rows, w.shape[1]))
    g.inputs = ["x"]
    g.add_const("w", w)
    g.add_const("b", b)
    g.tensors["y"] = Tensor("y", (rows, w.shape[0]))
    g.nodes.append(Node("SparseLinear", "sp", ["x", "w", "b"], ["y"]))
    g.outputs = ["y"]
    if relu:
        g.tensors["r"] = Tensor("r", (rows, w.shape[0]))
        g.nodes.append(Node("Relu", "relu", ["y"], ["r"]))
        g.outputs = ["r"]
    return g


@pytest.mark.parametrize(("n", "k", "density"), [(1, 1, 1.0), (7, 17, 0.3), (33, 300, 0.05)])
@pytest.mark.parametrize("relu", [False, True])
def test_sparse_linear_matches_dense(n: int, k: int, density: float, relu: bool) -> None:
    rng = np.random.default_rng(8)
    w = (rng.standard_normal((n, k)) * (rng.random((n, k)) < density)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((3, k)).astype(np.float32)
    cm = compile_graph(_sparse_graph(w, b, 3, relu))
    want = x @ w.T + b
    want = np.maximum(want, 0) if relu else want
    np.testing.assert_allclose(cm.run(x), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(cm.reference(x), want, rtol=RTOL, atol=ATOL)
    s = cm.report()["structure"]
    assert s["masked_nnz"] == np.count_nonzero(w)
    assert s["masked_flash_bytes"] == csr_bytes(w)


def test_sparse_flash_proportional_to_nonzeros() -> None:
    """Flash of the CSR path grows with the non-zeros (≈ 5 B each for K ≤ 256), below dense."""
    rng = np.random.default_rng(9)
    n, k = 64, 200
    dense_bytes = 4 * n * k
    sizes = {}
    for density in (0.05, 0.1, 0.2, 0.4):
        w = (rng.standard_normal((n, k)) * (rng.random((n, k)) < density)).astype(np.float32)
        nnz = int(np.count_nonzero(w))
        cm = compile_graph(_sparse_graph(w, np.zeros(n, np.float32), 1, False))
        flash = cm.report()["weight_bytes"] - 4 * n  # minus the bias table
        assert 5 * nnz <= flash <= 5 * nnz + 2 * (n + 1) + 16
        assert flash < dense_bytes
        sizes[density] = flash
        summary = sparse_summary(cm.report())
        assert summary["density"] == pytest.approx(nnz / (n * k))
        assert summary["flash_saved_bytes"] == dense_bytes - csr_bytes(w)
    assert sizes[0.05] < sizes[0.1] < sizes[0.2] < sizes[0.4]


def test_ltc_sparse_path_saves_flash() -> None:
    torch.manual_seed(10)
    m = LTC(8, AutoNCP(32, 4)).eval()
    x, h = torch.randn(1, 1, 8), torch.zeros(1, 32)
    sparse = edgec.compile(m, example_inputs=(x, h), options={"sparse": "csr"})
    dense = edgec.compile(m, example_inputs=(x, h), options={"sparse": "dense"})
    auto = edgec.compile(m, example_inputs=(x, h))
    s, d = sparse.report(), dense.report()
    assert s["weight_bytes"] < d["weight_bytes"] / 2
    assert auto.report()["weight_bytes"] == s["weight_bytes"]
    summary = sparse_summary(s)
    assert summary["density"] < 0.5 and summary["flash_saved_bytes"] > 0
    assert s["macs"] < d["macs"]


# --- NCAP swimmer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_joints": 1, "oscillator_period": 7},
        {"use_weight_sharing": False, "n_joints": 5},
        {"use_weight_constraints": False, "include_proprioception": False},
        {"include_head_oscillators": False},
    ],
)
def test_ncap_reset_step_matches_module(kwargs: dict) -> None:
    torch.manual_seed(11)
    model = SwimmerModule(**kwargs).eval()
    nj = model.n_joints
    with torch.no_grad():  # random weights of both signs: the constraints must fold
        for p in model.params.values():
            p.copy_(torch.randn(()) * 1.5)
    qs = torch.randn(1000, 3, nj) * 1.2
    cm = edgec.compile(model, example_inputs=(qs[0],))
    model.timestep = 123  # reset() must bring both back to tick 0
    model.reset()
    cm.reset()
    with torch.no_grad():
        want = torch.stack([model(qs[t]) for t in range(1000)]).numpy()
    got = np.stack([cm.step(qs[t].numpy()) for t in range(1000)])
    np.testing.assert_array_equal(got, want)
    assert cm.report()["state_bytes"] == 8


def test_swimmer_example_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "swimmer_ncap" / "train.py"), "--quick"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bit-identical" in proc.stdout


# --- generated C: strict flags and sanitizers ----------------------------------------------------

_DRIVER = """#include <stdio.h>
#include "{name}.h"
static float in_buf[{nin}], out_buf[{nout}];
int main(void)
{{
    FILE *f = fopen("in.bin", "rb");
    if (!f || fread(in_buf, sizeof(float), {nin}, f) != {nin}) return 3;
    fclose(f);
    if ({name}_run({args}) != 0) return 4;
    f = fopen("out.bin", "wb");
    if (!f || fwrite(out_buf, sizeof(float), {nout}, f) != {nout}) return 5;
    fclose(f);
    return 0;
}}
"""


@pytest.mark.parametrize("kind", ["cfc_wired_mixed", "cfc_backbone_pure", "ltc_sparse", "ltc_dense",
                                  "ncap"])
def test_generated_c_strict_and_sanitized(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(12)
    opts = {"sparse": "dense" if kind == "ltc_dense" else "csr"}
    if kind == "cfc_wired_mixed":
        m = CfC(3, AutoNCP(10, 2), mixed_memory=True)
        ex: tuple = (torch.randn(2, 9, 3), (torch.randn(2, 10), torch.randn(2, 10)))
    elif kind == "cfc_backbone_pure":
        m = CfC(3, 6, mode="pure", backbone_layers=2, backbone_units=5, proj_size=2)
        ex = (torch.randn(2, 9, 3), torch.randn(2, 6))
    elif kind == "ncap":
        m = SwimmerModule(use_weight_sharing=False)
        ex = (torch.randn(2, 6),)
    else:
        m = LTC(3, AutoNCP(10, 2))
        ex = (torch.randn(2, 9, 3), torch.randn(2, 10))
    cm = edgec.compile(m.eval(), example_inputs=ex, options=opts)
    c = cm.cmodel
    cm.write(tmp_path)
    sizes_in = [p.size for p in c.inputs]
    sizes_out = [p.size for p in c.outputs]
    offs_in = np.cumsum([0, *sizes_in])
    offs_out = np.cumsum([0, *sizes_out])
    args = [f"in_buf + {o}" for o in offs_in[:-1]] + [f"out_buf + {o}" for o in offs_out[:-1]]
    (tmp_path / "driver.c").write_text(_DRIVER.format(
        name=c.name, nin=max(int(offs_in[-1]), 1), nout=int(offs_out[-1]), args=", ".join(args)))
    rng = np.random.default_rng(13)
    feeds = [rng.standard_normal(p.shape).astype(np.float32) for p in c.inputs]
    np.concatenate([f.reshape(-1) for f in feeds]).astype(np.float32).tofile(tmp_path / "in.bin")
    cc = ["gcc", *STRICT, "-O1", *SANITIZE, "driver.c", f"{c.name}.c", "-lm", "-o", "driver"]
    proc = subprocess.run(cc, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run(["./driver"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr[-4000:]
    got = np.fromfile(tmp_path / "out.bin", np.float32)
    want = cm.run(*feeds)
    want = want if isinstance(want, list) else [want]
    np.testing.assert_allclose(got, np.concatenate([w.reshape(-1) for w in want]),
                               rtol=RTOL, atol=ATOL)
    arm = shutil.which("arm-none-eabi-gcc")
    if arm is not None:  # Cortex-M4F: the dense kernels' VFMA path, strict flags
        m4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
        proc = subprocess.run([arm, *m4, *STRICT, "-O2", "-c", f"{c.name}.c", "-o", "m4.o"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]


# --- bad input ---------------------------------------------------------------------------------


def test_bad_inputs_one_line_errors() -> None:
    torch.manual_seed(14)
    m = CfC(3, 5).eval()
    x = torch.randn(1, 4, 3)
    with pytest.raises(EdgecError, match=r"hx has shape \(1, 7\); expected \(1, 5\)") as e:
        edgec.compile(m, example_inputs=(x, torch.zeros(1, 7)))
    assert "\n" not in str(e.value)

    class WithTimespans(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = m

        def forward(self, x: torch.Tensor, ts: torch.Tensor) -> tuple:
            return self.rnn(x, None, ts)

    with pytest.raises(UnsupportedOpError, match="rnn.*timespans=None") as e:
        edgec.compile(WithTimespans(), example_inputs=(x, torch.ones(1, 4)))
    assert "\n" not in str(e.value)
    with pytest.raises(EdgecError, match="sparse='sometimes'"):
        edgec.compile(CfC(3, AutoNCP(8, 2)), example_inputs=(x,), options={"sparse": "sometimes"})
    mixed = CfC(3, 5, mixed_memory=True).eval()
    with pytest.raises(UnsupportedOpError, match=r"mixed_memory=True needs hx = \(h0, c0\)"):
        edgec.compile(mixed, example_inputs=(x, torch.zeros(1, 5)))
    with pytest.raises(UnsupportedOpError, match="joint_pos must be a tensor"):
        edgec.compile(SwimmerModule(6), example_inputs=(torch.zeros(1, 4),))
