"""Spiking neurons (snnTorch, Norse, edgec.nn), the event-driven kernel and bit-packed spikes.

C vs PyTorch over long sequences (1000 steps): spike trains must be exactly equal, membranes
equal within float tolerance (they are bit-identical for single layers: same float32 operations,
same order).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import edgec
import edgec.nn as enn
from edgec.errors import EdgecError, UnsupportedOpError
from edgec.ops.spiking import pack_spikes, unpack_spikes

snn = pytest.importorskip("snntorch")
norse = pytest.importorskip("norse.torch")

STEPS = 1000
RTOL, ATOL = 1e-4, 1e-5


def _outs(v: Any) -> list[np.ndarray]:
    return [np.asarray(a) for a in (v if isinstance(v, list) else [v])]


def _step_c(m: edgec.CompiledModel, xs: torch.Tensor) -> list[np.ndarray]:
    m.reset()
    per_t = [_outs(m.step(xs[t].numpy())) for t in range(xs.shape[0])]
    return [np.stack([o[k] for o in per_t]) for k in range(len(per_t[0]))]


def _stack(ys: list[Any]) -> list[np.ndarray]:
    per = [[t.detach().numpy() for t in (y if isinstance(y, tuple) else (y,))] for y in ys]
    return [np.stack([p[k] for p in per]) for k in range(len(per[0]))]


def _currents(shape: tuple[int, ...], seed: int, scale: float = 0.8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((STEPS, *shape), generator=g) * scale + 0.2


# --- snnTorch -------------------------------------------------------------------------------------

RESET_CASES = [(r, d) for r in ("subtract", "zero", "none") for d in (True, False)]


@pytest.mark.parametrize(("reset", "delay"), RESET_CASES)
@pytest.mark.parametrize("n", [1, 7])
def test_snntorch_leaky_init_hidden(reset: str, delay: bool, n: int) -> None:
    torch.manual_seed(n)
    beta = torch.rand(n) * 1.2  # some above 1: clamped as snnTorch does
    lif = snn.Leaky(beta=beta, threshold=0.8, init_hidden=True, reset_mechanism=reset,
                    reset_delay=delay, learn_beta=True, learn_threshold=True)
    m = edgec.compile(lif, example_inputs=(torch.zeros(1, n),))
    xs = _currents((1, n), seed=n)
    lif.reset_mem()
    with torch.no_grad():
        ref = [lif(xs[t]) for t in range(STEPS)]
    (spk,) = _step_c(m, xs)
    (spk_ref,) = _stack(ref)
    np.testing.assert_array_equal(spk, spk_ref)
    assert 0.02 < spk.mean() < 0.9  # the test exercises both spiking and silence
    np.testing.assert_allclose(next(iter(m.state().values())), lif.mem.detach().numpy(),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("reset", "delay"), RESET_CASES)
def test_snntorch_leaky_mem_passed(reset: str, delay: bool) -> None:
    """forward(x, mem) -> (spk, mem): run(x, mem) returns what torch returns, step by step."""
    lif = snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism=reset, reset_delay=delay)
    m = edgec.compile(lif, example_inputs=(torch.zeros(2, 3), torch.zeros(2, 3)))
    assert not m.is_stateful
    xs = _currents((2, 3), seed=3)
    mem_t = torch.zeros(2, 3)
    mem_c = np.zeros((2, 3), np.float32)
    for t in range(300):
        with torch.no_grad():
            spk_t, mem_t = lif(xs[t], mem_t)
        spk_c, mem_c = m.run(xs[t].numpy(), mem_c)
        np.testing.assert_array_equal(spk_c, spk_t.numpy())
        np.testing.assert_array_equal(mem_c, mem_t.numpy())


def test_snntorch_leaky_worked_example() -> None:
    """families.md: beta 0.9, threshold 1, x 0.6 → mem 0.6, 1.14 (spike), 0.626, 1.1634."""
    m = edgec.compile(snn.Leaky(beta=0.9, init_hidden=True), example_inputs=(torch.zeros(1),))
    m.reset()
    out = [(float(m.step(np.float32([0.6]))[0]), float(next(iter(m.state().values()))[0]))
           for _ in range(4)]
    assert [s for s, _ in out] == [0.0, 1.0, 0.0, 1.0]
    np.testing.assert_allclose([v for _, v in out], [0.6, 1.14, 0.626, 1.1634], rtol=1e-6)


@pytest.mark.parametrize(("reset", "delay"), RESET_CASES)
def test_snntorch_synaptic(reset: str, delay: bool) -> None:
    torch.manual_seed(5)
    syn = snn.Synaptic(alpha=torch.rand(5), beta=0.85, threshold=torch.rand(5) + 0.5,
                       init_hidden=True, reset_mechanism=reset, reset_delay=delay)
    m = edgec.compile(syn, example_inputs=(torch.zeros(1, 5),))
    xs = _currents((1, 5), seed=6, scale=0.5) - 0.1
    syn.reset_mem()
    with torch.no_grad():
        ref = [syn(xs[t]) for t in range(STEPS)]
    (spk,) = _step_c(m, xs)
    np.testing.assert_array_equal(spk, _stack(ref)[0])
    assert 0.02 < spk.mean() < 0.9
    state = m.state()
    got = {k.rsplit("_", 1)[-1]: v for k, v in state.items()}
    np.testing.assert_allclose(got["syn"], syn.syn.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["mem"], syn.mem.numpy(), rtol=RTOL, atol=ATOL)


def test_snntorch_synaptic_state_passed() -> None:
    syn = snn.Synaptic(alpha=0.7, beta=0.9, reset_mechanism="zero")
    x = torch.zeros(1, 4)
    m = edgec.compile(syn, example_inputs=(x, x, x))
    xs = _currents((1, 4), seed=8)
    s_t, m_t = torch.zeros(1, 4), torch.zeros(1, 4)
    s_c, m_c = s_t.numpy(), m_t.numpy()
    for t in range(200):
        with torch.no_grad():
            spk_t, s_t, m_t = syn(xs[t], s_t, m_t)
        spk_c, s_c, m_c = m.run(xs[t].numpy(), s_c, m_c)
        np.testing.assert_array_equal(spk_c, spk_t.numpy())
        np.testing.assert_array_equal(m_c, m_t.numpy())


def test_snntorch_network_event_driven_and_packed() -> None:
    """Linear → Leaky → Linear → Leaky: the second Linear becomes event-driven on packed spikes;
    every spike mode gives the same outputs, equal to torch for 1000 steps."""
    torch.manual_seed(11)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(3, 40)
            self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
            self.fc2 = nn.Linear(40, 17)
            self.lif2 = snn.Leaky(beta=0.9, threshold=0.3, init_hidden=True, output=True)

        def forward(self, x: torch.Tensor) -> Any:
            return self.lif2(self.fc2(self.lif1(self.fc1(x))))

    net = Net().eval()
    with torch.no_grad():  # weights on a 2^-8 grid: spike sums are exact in any order
        for p in net.parameters():
            p.copy_(torch.round(p * 256) / 256)
    xs = _currents((1, 3), seed=12, scale=1.5)
    net.lif1.reset_mem()
    net.lif2.reset_mem()
    with torch.no_grad():
        ref = _stack([net(xs[t]) for t in range(STEPS)])
    results = {}
    for mode in ("packed", "event", "dense"):
        m = edgec.compile(net, example_inputs=(torch.zeros(1, 3),), options={"spikes": mode})
        ops = {n.op: n for n in m.graph.nodes}
        assert ("EventDense" in ops) == (mode != "dense")
        assert bool(ops.get("EventDense", ops["Gemm"]).attrs.get("packed")) == (mode == "packed")
        results[mode] = _step_c(m, xs)
        np.testing.assert_array_equal(results[mode][0], ref[0])
        np.testing.assert_allclose(results[mode][1], ref[1], rtol=RTOL, atol=ATOL)
    assert 0.05 < ref[0].mean() < 0.9
    for mode in ("event", "dense"):
        np.testing.assert_array_equal(results[mode][1], results["packed"][1])


# --- Norse ------------------------------------------------------------------------------------


def _norse_params(n: int) -> Any:
    from norse.torch.functional.lif import LIFParameters

    return LIFParameters(
        tau_syn_inv=torch.full((n,), 150.0) + torch.arange(n),
        tau_mem_inv=torch.as_tensor(90.0),
        v_leak=torch.as_tensor(0.1),
        v_th=torch.as_tensor(0.35),
        v_reset=torch.as_tensor(-0.05),
    )


@pytest.mark.parametrize("n", [1, 17])
def test_norse_lif_cell_carried_state(n: int) -> None:
    cell = norse.LIFCell(_norse_params(n), dt=0.002)
    m = edgec.compile(cell, example_inputs=(torch.zeros(2, n),))
    assert m.is_stateful
    xs = _currents((2, n), seed=20 + n, scale=3.0)
    state = None
    ys = []
    with torch.no_grad():
        for t in range(STEPS):
            z, state = cell(xs[t], state)
            ys.append((z, state.v, state.i))
    ref = _stack(ys)
    got = _step_c(m, xs)
    np.testing.assert_array_equal(got[0], ref[0])
    assert 0.02 < ref[0].mean() < 0.9
    for k in (1, 2):
        np.testing.assert_allclose(got[k], ref[k], rtol=RTOL, atol=ATOL)


def test_norse_lif_cell_default_params_and_state_input() -> None:
    from norse.torch.functional.lif import LIFFeedForwardState

    cell = norse.LIFCell()
    x = torch.zeros(1, 6)
    st = LIFFeedForwardState(v=torch.zeros(1, 6), i=torch.zeros(1, 6))
    m = edgec.compile(cell, example_inputs=(x, st))
    assert not m.is_stateful
    xs = _currents((1, 6), seed=2, scale=40.0)
    v, i = torch.zeros(1, 6), torch.zeros(1, 6)
    vc, ic = v.numpy(), i.numpy()
    spikes = 0.0
    for t in range(300):
        with torch.no_grad():
            z, s = cell(xs[t], LIFFeedForwardState(v, i))
        v, i = s.v, s.i
        zc, vc, ic = m.run(xs[t].numpy(), vc, ic)
        np.testing.assert_array_equal(zc, z.numpy())
        np.testing.assert_allclose(vc, v.numpy(), rtol=RTOL, atol=ATOL)
        spikes += float(z.sum())
    assert spikes > 10


@pytest.mark.parametrize("mode", ["packed", "dense"])
def test_norse_lif_recurrent_cell(mode: str) -> None:
    torch.manual_seed(30)
    cell = norse.LIFRecurrentCell(3, 16, _norse_params(16), dt=0.002)
    with torch.no_grad():  # 2^-6 grid: sums of spike-selected weights are exact in any order
        cell.input_weights.copy_(torch.round(cell.input_weights * 64) / 64)
        cell.recurrent_weights.copy_(torch.round(cell.recurrent_weights * 64) / 64)
    m = edgec.compile(cell, example_inputs=(torch.zeros(1, 3),), options={"spikes": mode})
    assert ("EventDense" in [n.op for n in m.graph.nodes]) == (mode != "dense")
    xs = torch.round(_currents((1, 3), seed=31, scale=2.0) * 64) / 64
    state = None
    ys = []
    with torch.no_grad():
        for t in range(STEPS):
            z, state = cell(xs[t], state)
            ys.append((z, state.v))
    ref = _stack(ys)
    got = _step_c(m, xs)
    np.testing.assert_array_equal(got[0], ref[0])
    assert 0.02 < ref[0].mean() < 0.9
    np.testing.assert_allclose(got[2], ref[1], rtol=RTOL, atol=ATOL)  # outputs: z, z, v, i


def test_norse_lif_sequence_module() -> None:
    lif = norse.LIF(_norse_params(5), dt=0.002)
    xs = _currents((12, 1, 5), seed=40, scale=4.0)[0]
    m = edgec.compile(lif, example_inputs=(xs,))
    with torch.no_grad():
        z, s = lif(xs)
    m.reset()
    zc, vc, ic = m.step(xs.numpy())
    np.testing.assert_array_equal(zc, z.numpy())
    np.testing.assert_allclose(vc, s.v.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ic, s.i.numpy(), rtol=RTOL, atol=ATOL)


# --- edgec.nn -----------------------------------------------------------------------------------


class SpikingNet(nn.Module):
    def __init__(self, lif_kwargs: dict[str, Any], return_spikes: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 24)
        self.lif1 = enn.LIF(24, **lif_kwargs)
        self.fc2 = nn.Linear(24, 7)
        self.lif2 = enn.LIF(7, beta=torch.linspace(0.5, 0.95, 7), threshold=0.6)
        self.fc3 = nn.Linear(7, 1)
        self.out = enn.LeakyIntegrator(1, lam=0.9)
        self.return_spikes = return_spikes

    def forward(self, x: torch.Tensor) -> Any:
        s1 = self.lif1(self.fc1(x))
        s2 = self.lif2(self.fc2(s1))
        y = self.out(self.fc3(s2))
        return (y, s1, s2) if self.return_spikes else y


LIF_CASES = {
    "plain": {"beta": 0.9},
    "synaptic": {"beta": 0.8, "alpha": 0.6, "reset": "zero"},
    "adaptive": {"beta": 0.9, "alpha": 0.3, "adapt_decay": 0.95, "adapt_add": 0.2,
                 "threshold": torch.linspace(0.5, 1.5, 24)},
    "no_reset": {"beta": 0.7, "reset": "none", "threshold": 2.0},
}


def _grid(net: nn.Module) -> None:
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.round(mod.weight * 2 * 256) / 256)
                mod.bias.copy_(torch.round(mod.bias * 256) / 256)


@pytest.mark.parametrize("case", list(LIF_CASES))
def test_edgec_lif_network(case: str) -> None:
    torch.manual_seed(50)
    net = SpikingNet(LIF_CASES[case]).eval()
    _grid(net)
    xs = _currents((1, 2), seed=51, scale=1.5)
    enn.reset_states(net)
    with torch.no_grad():
        ref = _stack([net(xs[t]) for t in range(STEPS)])
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 2),))
    got = _step_c(m, xs)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[2], ref[2])
    np.testing.assert_allclose(got[0], ref[0], rtol=RTOL, atol=ATOL)
    assert 0.02 < ref[1].mean() < 0.9 and 0.01 < ref[2].mean() < 0.95


def test_edgec_lif_packed_deployment_matches() -> None:
    """Returning only y: both spike tensors are packed; y equals torch for 1000 steps."""
    torch.manual_seed(52)
    net = SpikingNet(LIF_CASES["adaptive"], return_spikes=False).eval()
    _grid(net)
    xs = _currents((1, 2), seed=53, scale=1.5)
    enn.reset_states(net)
    with torch.no_grad():
        ref = np.stack([net(xs[t]).numpy() for t in range(STEPS)])
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 2),))
    packed = [n for n in m.graph.nodes if n.attrs.get("packed")]
    assert sorted(n.op for n in packed) == ["EventDense", "EventDense", "LIF", "LIF"]
    dense = edgec.compile(net, example_inputs=(torch.zeros(1, 2),), options={"spikes": "dense"})
    assert m.report()["arena_bytes"] < dense.report()["arena_bytes"]
    (got,) = _step_c(m, xs)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "atan"])
def test_edgec_lif_trains_with_surrogate_gradients(surrogate: str) -> None:
    torch.manual_seed(60)
    fc = nn.Linear(3, 8)
    lif = enn.LIF(8, beta=0.8, alpha=0.5, surrogate=surrogate, learn=True)
    xs = torch.rand(20, 4, 3) * 2
    target = torch.full((4, 8), 0.3)
    opt = torch.optim.Adam([*fc.parameters(), *lif.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        lif.reset()
        rate = torch.stack([lif(fc(x)) for x in xs]).mean(0)
        loss = ((rate - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert lif.beta.grad is not None and float(lif.beta.grad.abs().sum()) > 0
    assert losses[-1] < 0.5 * losses[0]


# --- packing, C strictness ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 31, 32, 33, 70])
def test_pack_roundtrip(k: int) -> None:
    s = (np.random.default_rng(k).random((3, k)) < 0.4).astype(np.float32)
    p = pack_spikes(s)
    assert p.shape == (3, (k + 31) // 32)
    np.testing.assert_array_equal(unpack_spikes(p, k), s)


def test_strict_flags_and_sanitizers(tmp_path: Path) -> None:
    """The packed, event-driven network builds with -Werror -pedantic and runs clean under
    ASan/UBSan from a C driver; its outputs equal the Python step path."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not on PATH")
    torch.manual_seed(70)
    net = SpikingNet(LIF_CASES["adaptive"], return_spikes=False).eval()
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 2),), name="snn")
    m.write(tmp_path)
    steps = 200
    xs = _currents((1, 2), seed=71, scale=1.5)[:steps].numpy()
    vals = ", ".join(f"{float(v):.9g}f" for v in xs.reshape(-1))
    (tmp_path / "driver.c").write_text(f"""#include <stdio.h>
#include "snn.h"
static const float xs[{steps * 2}] = {{{vals}}};
int main(void)
{{
    snn_state_t st;
    float y[1];
    snn_reset(&st);
    for (int t = 0; t < {steps}; ++t) {{
        if (snn_step(&st, xs + 2 * t, y) != 0) return 1;
        printf("%.9g\\n", (double)y[0]);
    }}
    return 0;
}}
""")
    flags = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]
    proc = subprocess.run(["gcc", *flags, "driver.c", "snn.c", "-lm", "-o", "driver"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run(["./driver"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    from_c = np.array(run.stdout.split(), np.float32)
    (from_py,) = _step_c(m, torch.from_numpy(xs))
    np.testing.assert_array_equal(from_c, from_py.reshape(-1))


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"graded_spikes_factor": 2.0}, "graded_spikes_factor"),
        ({"inhibition": True}, "inhibition"),
        ({"state_quant": lambda v: v}, "state_quant"),
    ],
)
def test_snntorch_unsupported_configurations(kwargs: dict[str, Any], what: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 4)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True, **kwargs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lif(self.fc(x))

    with pytest.raises(UnsupportedOpError) as exc:
        edgec.compile(Net(), example_inputs=(torch.zeros(1, 2),))
    msg = str(exc.value)
    assert "\n" not in msg and what in msg and "'lif'" in msg and "supported:" in msg


def test_snntorch_custom_spike_function_unsupported() -> None:
    lif = snn.Leaky(beta=0.9, init_hidden=True, spike_grad=torch.sigmoid)  # not a step
    with pytest.raises(UnsupportedOpError, match="not H"):
        edgec.compile(lif, example_inputs=(torch.zeros(1, 3),))


def test_wrong_state_shape_is_one_line_error() -> None:
    lif = snn.Leaky(beta=0.9)
    with pytest.raises(EdgecError) as exc:
        edgec.compile(lif, example_inputs=(torch.zeros(1, 3), torch.zeros(1, 4)))
    assert "\n" not in str(exc.value) and "state 'mem' has shape (1, 4)" in str(exc.value)


def test_bad_spikes_option() -> None:
    with pytest.raises(EdgecError, match="spikes='sparse'"):
        edgec.compile(enn.LIF(3), example_inputs=(torch.zeros(1, 3),), options={"spikes": "sparse"})


def test_norse_adjoint_unsupported() -> None:
    from norse.torch.functional.lif import LIFParameters

    cell = norse.LIFCell(LIFParameters(method="adjoint"))
    with pytest.raises(UnsupportedOpError, match="adjoint"):
        edgec.compile(cell, example_inputs=(torch.zeros(1, 3),))


# --- the example ----------------------------------------------------------------------------------


def test_blimp_example_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """The blimp example in --quick mode: evolves, compiles, checks the C's spike trains equal
    PyTorch's for 1000 steps of recorded closed-loop inputs (it exits otherwise) and flies the
    closed loop: the steady-state controller must remove most of the fast one's offset, the pair
    must track near the PID even after 4 generations, and the C must fly as PyTorch does."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "blimp_snn"))
    import blimp_snn

    table = blimp_snn.main(["--quick"])
    out = capsys.readouterr().out
    assert "spike trains equal for 1000 steps" in out
    assert list(table) == ["PID", "SNN fast only", "SNN fast + steady (PyTorch)",
                           "SNN fast + steady (C)"]
    pid, fast = table["PID"], table["SNN fast only"]
    both, both_c = table["SNN fast + steady (PyTorch)"], table["SNN fast + steady (C)"]
    assert pid["rmse"] < 1.0
    assert both["rmse"] < 0.8 * fast["rmse"]
    assert both["ss_err"] < 0.5 * fast["ss_err"]
    assert both["rmse"] < 2.0 * pid["rmse"]
    assert both_c["rmse"] == pytest.approx(both["rmse"], rel=0.1)


def _host_has_fma() -> bool:
    try:
        return " fma " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


@pytest.mark.skipif(not _host_has_fma(), reason="host CPU without FMA instructions")
def test_spikes_exact_with_fp_contraction() -> None:
    """Firmware builds use -ffp-contract=fast; neuron kernels opt out (EDGEC_EXACT_FP), so
    spike trains stay equal to snnTorch's even where every other multiply-add becomes an FMA."""
    from edgec.backend.host import HostLibrary, build_shared

    torch.manual_seed(11)
    n = 64
    beta = torch.rand(n) * 0.3 + 0.7
    lif = snn.Leaky(beta=beta, threshold=0.8, init_hidden=True, reset_mechanism="subtract")
    m = edgec.compile(lif, example_inputs=(torch.zeros(1, n),))
    assert "EDGEC_EXACT_FP void" in m.c_source
    lib = HostLibrary(m.cmodel, build_shared(m.cmodel, ("-ffp-contract=fast", "-mfma")))
    xs = _currents((1, n), seed=11)
    lif.reset_mem()
    with torch.no_grad():
        ref = [lif(xs[t]) for t in range(STEPS)]
    lib.reset()
    got = np.stack([lib.step(xs[t].numpy())[0] for t in range(STEPS)])
    (spk_ref,) = _stack(ref)
    np.testing.assert_array_equal(got, spk_ref)
    assert 0.02 < got.mean() < 0.9
    # the membranes round exactly as in the build without contraction (an FMA would differ in
    # the last bits long before it flips a spike)
    m.reset()
    for t in range(STEPS):
        m.step(xs[t].numpy())
    mem_plain = next(iter(m.state().values()))
    mem_fma = next(iter(lib.state().values()))
    np.testing.assert_array_equal(mem_fma.view(np.uint32), mem_plain.view(np.uint32))
