"""snnTorch's RLeaky, RSynaptic, Alpha and Lapicque (issue 9): spikes equal snnTorch's over 300
steps, with ``init_hidden=True`` + ``output=True`` and with explicit state."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
snn = pytest.importorskip("snntorch")
from torch import nn  # noqa: E402

import edgec  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402

N, STEPS = 10, 300


def _neuron(kind: str, **kw: object) -> nn.Module:
    if kind == "rleaky":
        return snn.RLeaky(beta=0.9, linear_features=N, **kw)
    if kind == "rleaky_v":
        return snn.RLeaky(beta=0.9, all_to_all=False, V=torch.rand(N), **kw)
    if kind == "rsynaptic":
        return snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=N, **kw)
    if kind == "rsynaptic_v":
        return snn.RSynaptic(alpha=0.8, beta=0.9, all_to_all=False, V=0.5, **kw)
    if kind == "alpha":
        return snn.Alpha(alpha=0.9, beta=0.8, **kw)
    return snn.Lapicque(R=5.1, C=5e-3, time_step=1e-3, **kw)


class Hidden(nn.Module):
    """fc → neuron with ``init_hidden=True, output=True``: the state lives in the neuron."""

    def __init__(self, kind: str, **kw: object):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(4, N)
        self.lif = _neuron(kind, init_hidden=True, output=True, **kw)

    def forward(self, x: torch.Tensor) -> tuple:
        return self.lif(self.fc(x))


def _zero_hidden(lif: nn.Module) -> None:
    for a in ("spk", "syn", "mem", "syn_exc", "syn_inh"):
        if isinstance(getattr(lif, a, None), torch.Tensor):
            setattr(lif, a, torch.zeros(0))


def _inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(STEPS, 1, 4, generator=g) * 2


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize(
    "kind", ["rleaky", "rleaky_v", "rsynaptic", "rsynaptic_v", "alpha", "lapicque"]
)
def test_spikes_equal_snntorch_over_300_steps(kind: str, reset: str) -> None:
    net = Hidden(kind, reset_mechanism=reset).eval()
    xs = _inputs()
    cm = edgec.compile(net, example_inputs=xs[0])
    _zero_hidden(net.lif)
    with torch.no_grad():
        ref = [net(x) for x in xs]
    cm.reset()
    got = [cm.step(x.numpy()) for x in xs]
    assert len(got[0]) == len(ref[0])  # spikes and every state (output=True)
    spk_ref = np.stack([r[0].numpy() for r in ref])
    spk = np.stack([np.asarray(g[0]) for g in got]).reshape(spk_ref.shape)
    assert spk_ref.sum() > 20 and (spk_ref == 0).sum() > 20  # the test sees both values
    np.testing.assert_array_equal(spk, spk_ref)
    mem_ref = np.stack([r[-1].numpy() for r in ref])
    mem = np.stack([np.asarray(g[-1]) for g in got]).reshape(mem_ref.shape)
    np.testing.assert_allclose(mem, mem_ref, rtol=1e-4, atol=1e-4)


def test_rleaky_without_reset_delay() -> None:
    net = Hidden("rleaky", reset_delay=False).eval()
    xs = _inputs()
    cm = edgec.compile(net, example_inputs=xs[0])
    _zero_hidden(net.lif)
    with torch.no_grad():
        ref = np.stack([net(x)[0].numpy() for x in xs])
    cm.reset()
    got = np.stack([np.asarray(cm.step(x.numpy())[0]) for x in xs]).reshape(ref.shape)
    np.testing.assert_array_equal(got, ref)


class Explicit(nn.Module):
    """The state passed explicitly, as snnTorch's tutorials write a recurrent step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc = nn.Linear(4, N)
        self.rlif = snn.RLeaky(beta=0.85, linear_features=N)
        self.rsyn = snn.RSynaptic(alpha=0.7, beta=0.9, all_to_all=False, V=0.3)
        self.alpha = snn.Alpha(alpha=0.9, beta=0.8)
        self.lap = snn.Lapicque(beta=0.9, R=1.0)

    def forward(self, x, spk1, mem1, spk2, syn2, mem2, exc3, inh3, mem3, mem4):  # noqa: ANN001, ANN201
        cur = self.fc(x)
        spk1, mem1 = self.rlif(cur, spk1, mem1)
        spk2, syn2, mem2 = self.rsyn(cur, spk2, syn2, mem2)
        spk3, exc3, inh3, mem3 = self.alpha(cur, exc3, inh3, mem3)
        spk4, mem4 = self.lap(4 * cur, mem4)
        return spk1, mem1, spk2, syn2, mem2, spk3, exc3, inh3, mem3, spk4, mem4


#: the outputs of Explicit.forward that are its next state inputs, in order
STATE_OUTPUTS = (0, 1, 2, 3, 4, 6, 7, 8, 10)


def test_explicit_state_is_an_input_and_the_new_state_an_output() -> None:
    net = Explicit().eval()
    xs = _inputs()
    zeros = [torch.zeros(1, N) for _ in range(9)]
    cm = edgec.compile(net, example_inputs=(xs[0], *zeros))
    assert not cm.is_stateful
    state_ref = list(zeros)
    state = [z.numpy() for z in zeros]
    fired = 0.0
    with torch.no_grad():
        for x in xs:
            ref = net(x, *state_ref)
            got = [np.asarray(v) for v in cm.run(x.numpy(), *state)]
            for i in (0, 2, 5, 9):  # spikes
                np.testing.assert_array_equal(got[i].reshape(1, N), ref[i].numpy())
                fired += float(ref[i].sum())
            state_ref = [ref[i] for i in STATE_OUTPUTS]
            state = [got[i].reshape(1, N) for i in STATE_OUTPUTS]
    assert fired > 100


def test_rsynaptic_reset_delay_false_is_refused() -> None:
    net = Hidden("rsynaptic", reset_delay=False)
    with pytest.raises(EdgecError, match="reset_delay=False"):
        edgec.compile(net, example_inputs=torch.rand(1, 4))
