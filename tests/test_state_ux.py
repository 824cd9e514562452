"""Recurrent state as a user meets it (issue 15, item 10): library modules carry their state by
default (or say in one line that they do not), state ports carry the modules' own names, and
the state struct holds one buffer per state where the update can be done in place."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.errors import EdgecWarning
from tests.helpers import make_model

torch = pytest.importorskip("torch")
ncps = pytest.importorskip("ncps")
snn = pytest.importorskip("snntorch")


def _cfc() -> torch.nn.Module:
    from ncps.torch import CfC
    from ncps.wirings import AutoNCP

    torch.manual_seed(0)
    return CfC(3, AutoNCP(12, 2), batch_first=True).eval()


def test_cfc_carries_its_state_by_default() -> None:
    m = _cfc()
    x = torch.randn(1, 5, 3)
    cm = edgec.compile(m, example_inputs=(x,))
    assert cm.is_stateful and cm.cmodel.state == [("hx", "hx_next")]
    assert ("int cfc_step(cfc_state_t *s, const float *EDGEC_RESTRICT in_input, "
            "float *EDGEC_RESTRICT out_y);") in cm.c_header
    with torch.no_grad():
        y1, h1 = m(x)
        y2, _ = m(x, h1)
    np.testing.assert_allclose(cm.run(x.numpy())[0], y1.numpy(), rtol=1e-4, atol=1e-5)
    cm.reset()
    cm.step(x.numpy())
    np.testing.assert_allclose(cm.step(x.numpy()), y2.numpy(), rtol=1e-4, atol=1e-5)
    assert cm.verify(n=2).ok  # torch's hx is fed what the C model carries


def test_nested_cfc_without_hx_warns_in_one_line(tmp_path: Path) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = _cfc()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.rnn(x)
            return y

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cm = edgec.compile(Net(), example_inputs=(torch.randn(1, 5, 3),))
    msgs = [str(w.message) for w in rec if issubclass(w.category, EdgecWarning)]
    assert len(msgs) == 1 and "rnn" in msgs[0] and "zero state" in msgs[0]
    assert not cm.is_stateful
    p = tmp_path / "net.py"
    p.write_text(
        "import torch\nfrom ncps.torch import CfC\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.rnn = CfC(3, 8)\n"
        "    def forward(self, x):\n        y, _ = self.rnn(x)\n        return y\n"
        "def make():\n    return Net(), (torch.randn(1, 4, 3),)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "edgec.cli", "compile", f"{p}:make", "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgec: warning: ") and "hx" in lines[0]


def test_state_ports_use_the_modules_names() -> None:
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), snn.Leaky(beta=0.9, init_hidden=True), torch.nn.Linear(8, 2),
        snn.Leaky(beta=0.8, init_hidden=True, output=True),
    )
    cm = edgec.compile(net, example_inputs=(torch.randn(1, 4),))
    c_names = [p.c for p in cm.cmodel.inputs + cm.cmodel.outputs]
    # the last layer returns (spk, mem): named after what they are
    assert c_names == ["in_input", "in_leaky1_mem", "in_leaky3_mem", "out_spk",
                       "out_mem", "out_leaky1_mem_next", "out_leaky3_mem_next"]
    assert "t_1" not in cm.c_header and "input_1" not in cm.c_header
    # spikes alone stay y
    only_spikes = torch.nn.Sequential(torch.nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True))
    cm = edgec.compile(only_spikes, example_inputs=(torch.randn(1, 4),))
    assert [p.c for p in cm.cmodel.outputs] == ["out_y", "out_leaky1_mem_next"]


def _gru_step() -> onnx.ModelProto:
    from tests.test_firmware import gru_step_model

    return gru_step_model()


def test_state_updated_in_place_halves_state_ram() -> None:
    m = edgec.compile(_gru_step(), name="gru")
    assert m.cmodel.state_inplace == {"h0"}
    assert m.report()["state_bytes"] == 4 * 8  # one buffer, not hx + hx_next
    assert "h0_next" not in m.c_header and "memcpy(s->" not in m.c_source
    assert "gru_run_arena(arena, in_x, s->h0, out_y, s->h0)" in m.c_source
    # the in-place kernel takes its state pointers without restrict
    kernel = next(ln for ln in m.c_source.splitlines() if "_gru(" in ln and "static" in ln)
    assert "restrict x5" not in kernel and "restrict y1" not in kernel


def test_state_read_after_its_update_stays_double_buffered() -> None:
    """h_new = tanh(x + h); y = h_new + h reads h after h_new is written: two buffers."""
    nodes = [
        helper.make_node("Add", ["x", "h"], ["s"]),
        helper.make_node("Tanh", ["s"], ["h_new"]),
        helper.make_node("Add", ["h_new", "h"], ["y"]),
    ]
    model = make_model(nodes, {"x": (1, 4), "h": (1, 4)}, {"y": (1, 4), "h_new": (1, 4)})
    m = edgec.compile(model, state=[("h", "h_new")], name="cell")
    assert m.cmodel.state_inplace == set() and m.report()["state_bytes"] == 2 * 4 * 4
    assert "h_next" in m.c_header
    xs = np.random.default_rng(0).standard_normal((5, 1, 4)).astype(np.float32)
    h = np.zeros((1, 4), np.float32)
    m.reset()
    for x in xs:
        h_new = np.tanh(x + h)
        np.testing.assert_allclose(m.step(x), h_new + h, rtol=1e-6, atol=1e-6)
        h = h_new
