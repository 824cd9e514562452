"""Torch models written the way users and tutorials write them (issue 9): state kept in buffers
and tensor attributes, weights computed from parameters (PHM kron sums, weight norm, masks),
and the errors for what cannot be carried."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402, N812

import edgec  # noqa: E402
from edgec.api import compile_graph  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.frontend.pytorch.importer import from_exported_program  # noqa: E402

STEPS = 60


class LIFReservoir(nn.Module):
    """A hand-written LIF reservoir + linear readout keeping its membrane in a buffer, updated
    as tutorials do it: ``self.v = v`` (rebind), ``self.v.copy_(v)`` or in place."""

    def __init__(self, how: str, n: int = 12):
        super().__init__()
        torch.manual_seed(1)
        self.how = how
        self.inp = nn.Linear(3, n)
        self.rec = nn.Linear(n, n, bias=False)
        self.readout = nn.Linear(n, 2)
        self.register_buffer("v", torch.full((1, n), 0.25))
        self.register_buffer("s", torch.zeros(1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cur = self.inp(x) + self.rec(self.s)
        v = 0.9 * self.v + cur
        s = (v > 1.0).float()
        if self.how == "rebind":
            self.v = v - s
            self.s = s
        elif self.how == "copy":
            self.v.copy_(v - s)
            self.s.copy_(s)
        else:  # chained in-place updates, the buffer read again afterwards
            self.v.mul_(0.9).add_(cur).sub_(s)
            self.s.copy_(s)
        return self.readout(self.s + 0.1 * self.v)


def _torch_steps(m: nn.Module, xs: torch.Tensor) -> np.ndarray:
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        ys = np.stack([m(x).numpy() for x in xs])
    m.load_state_dict(saved)
    return ys


def _c_steps(cm: edgec.CompiledModel, xs: torch.Tensor) -> np.ndarray:
    cm.reset()
    return np.stack([np.asarray(cm.step(x.numpy())) for x in xs])


@pytest.mark.parametrize("how", ["rebind", "copy", "inplace"])
def test_buffer_state_of_a_hand_written_reservoir_is_carried(how: str) -> None:
    m = LIFReservoir(how).eval()
    xs = torch.randn(STEPS, 1, 3) * 1.5
    cm = edgec.compile(m, example_inputs=xs[0])
    assert cm.is_stateful and sorted(s for s, _ in cm.cmodel.state) == ["s", "v"]
    # the initial state is the buffers' value, not zero
    assert np.allclose(cm.initial_state()["v"], 0.25)
    ref = _torch_steps(m, xs)
    got = _c_steps(cm, xs)
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-4, atol=1e-5)
    assert torch.all(m.v == 0.25)  # compiling left the module as it was


def test_buffer_state_through_torch_export() -> None:
    m = LIFReservoir("copy").eval()
    xs = torch.randn(STEPS, 1, 3) * 1.5
    for ep in (torch.export.export(m, (xs[0],)),
               torch.export.export(m, (xs[0],)).run_decompositions()):
        g = from_exported_program(ep, "res")
        assert sorted(s for s, _ in g.state) == ["s", "v"]
        cm = compile_graph(g)
        ref = _torch_steps(m, xs)
        np.testing.assert_allclose(_c_steps(cm, xs).reshape(ref.shape), ref, rtol=1e-4, atol=1e-5)


class PlainAttr(nn.Module):
    """State in a plain tensor attribute that broadcasts to the batch on the first step."""

    def __init__(self) -> None:
        super().__init__()
        self.v = torch.zeros(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.v = 0.5 * self.v + x
        return 2 * self.v


def test_tensor_attribute_state_grows_to_the_written_shape() -> None:
    m = PlainAttr()
    xs = torch.randn(10, 1, 4)
    cm = edgec.compile(m, example_inputs=xs[0])
    assert cm.cmodel.state and m.v.shape == (4,) and isinstance(m.v, torch.Tensor)
    ref = _torch_steps(m, xs)
    m.v = torch.zeros(4)
    np.testing.assert_allclose(_c_steps(cm, xs).reshape(ref.shape), ref, rtol=1e-5, atol=1e-6)


class PartWrite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("v", torch.zeros(1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.v[:, 0] = x[:, 0]
        return self.v + x


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * 2


class LazyState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mem = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mem is None:
            self.mem = torch.zeros_like(x)
        self.mem = self.mem * 0.5 + x
        return self.mem


class ViewInPlace(PartWrite):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.v[:, :2].add_(x[:, :2])
        return self.v + x


class ParamInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.w.mul_(0.5)
        return x * self.w


@pytest.mark.parametrize(
    ("module", "words"),
    [
        (PartWrite, ["self.v[:, 0] = x[:, 0]", "torch.export"]),
        (Counter, ["'calls'", "buffer"]),
        (LazyState, ["'mem'", "None"]),
        (ViewInPlace, ["'v'", "part", "in place"]),
        (ParamInPlace, ["parameter 'w'"]),
    ],
)
def test_state_that_cannot_be_carried_is_refused_naming_it(module: type, words: list) -> None:
    m = module()
    with pytest.raises(EdgecError) as err:
        edgec.compile(m, example_inputs=torch.randn(1, 4))
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    if module is Counter:
        assert m.calls == 0  # the trace's change was undone


# --- weights computed from parameters ----------------------------------------------------------


class KronPHM(nn.Module):
    """A PHM linear layer as the PHNN papers write it: ``W = sum_i kron(A_i, F_i)``."""

    def __init__(self, n: int, i: int, o: int):
        super().__init__()
        self.A = nn.Parameter(torch.randn(n, n, n))
        self.F = nn.Parameter(torch.randn(n, o // n, i // n) * 0.3)
        self.b = nn.Parameter(torch.randn(o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = sum(torch.kron(self.A[k], self.F[k]) for k in range(self.A.shape[0]))
        return F.linear(x, w, self.b)


class KronPHConv(nn.Module):
    """A PHM convolution with the product written by broadcasting, summed with torch.sum."""

    def __init__(self, n: int, i: int, o: int, k: int):
        super().__init__()
        self.A = nn.Parameter(torch.randn(n, n, n))
        self.F = nn.Parameter(torch.randn(n, o // n, i // n, k, k) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, o, i, k, _ = self.F.shape
        prod = self.A[:, :, None, :, None, None, None] * self.F[:, None, :, None, :, :, :]
        w = torch.sum(prod, dim=0).reshape(n * o, n * i, k, k)
        return F.conv2d(x, w, padding=1)


class KronMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = KronPHConv(2, 4, 4, 3)
        self.l1 = KronPHM(4, 64, 32)
        self.l2 = KronPHM(4, 32, 8)
        self.g = nn.Parameter(torch.rand(4, 1) + 0.5)  # weight norm + mask + einsum
        self.v = nn.Parameter(torch.randn(4, 8))
        self.register_buffer("mask", (torch.rand(4, 8) > 0.3).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)
        h = torch.relu(self.l2(torch.tanh(self.l1(h))))
        w = self.g * self.v / self.v.norm(dim=1, keepdim=True) * self.mask
        return h @ torch.einsum("ij->ji", torch.stack([w[r] for r in range(4)]))


@pytest.mark.parametrize("mode", ["dense", "factored"])
def test_kron_sum_phm_mlp_folds_and_keeps_its_factors(mode: str) -> None:
    m = KronMLP().eval()
    x = torch.randn(1, 4, 4, 4)
    cm = edgec.compile(m, example_inputs=x, options={"phm": mode})
    ops = [n.op for n in cm.graph.nodes]
    phm = [o for o in ops if o.startswith("Phm")]
    assert phm == ([] if mode == "dense" else ["PhmConv", "PhmLinear", "PhmLinear"]), ops
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(np.asarray(cm.run(x.numpy())), ref, rtol=1e-4, atol=1e-5)
    if mode == "factored":  # n times fewer weights than the dense layers
        assert cm.report()["weight_bytes"] < 4 * (64 * 32 + 32 * 8) / 2


def test_kron_sum_phm_through_torch_export_keeps_its_factors() -> None:
    m = KronMLP().eval()
    x = torch.randn(1, 4, 4, 4)
    cm = edgec.compile(torch.export.export(m, (x,)), options={"phm": "factored"})
    assert [n.op for n in cm.graph.nodes if n.op.startswith("Phm")] == [
        "PhmConv", "PhmLinear", "PhmLinear"
    ]
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(np.asarray(cm.run(x.numpy())), ref, rtol=1e-4, atol=1e-5)


def test_a_weight_that_is_not_a_kron_sum_stays_dense() -> None:
    class NotKron(KronPHM):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = sum(torch.kron(self.A[k], self.F[k]) for k in range(4)) + 0.01
            return F.linear(x, w, self.b)

    torch.manual_seed(0)
    m = NotKron(4, 8, 8).eval()
    x = torch.randn(1, 8)
    cm = edgec.compile(m, example_inputs=x, options={"phm": "factored"})
    assert [n.op for n in cm.graph.nodes] == ["Gemm"]
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(cm.run(x.numpy())), m(x).numpy(), rtol=1e-5,
                                   atol=1e-5)


# --- what cannot be lowered says where, and where else to go ----------------------------------


class Bessel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)


class Shrink(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardshrink(x, 0.3)


@pytest.mark.parametrize(
    ("inner", "words"),
    [
        (Bessel, ["module 'block.1' (Bessel)", "'special_bessel_j0'",
                  "torch.export and ONNX routes do not lower it either"]),
        (Shrink, ["module 'block.1' (Shrink)", "'hardshrink'",
                  "the torch.export route lowers it", "torch.export.export(model"]),
        (lambda: nn.PixelShuffle(1), ["module 'block.1' (PixelShuffle)", "not supported"]),
    ],
)
def test_unlowerable_module_names_path_op_and_route(inner: type, words: list) -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(3, 4), inner())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x)

    with pytest.raises(EdgecError) as err:
        edgec.compile(Outer(), example_inputs=torch.randn(1, 3))
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_random_draws_on_parameters_are_not_frozen_into_constants() -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.w + 0.01 * torch.randn_like(self.w))

    with pytest.raises(EdgecError, match="randn_like"):
        edgec.compile(Noisy(), example_inputs=torch.randn(1, 4))


def test_example_inputs_in_the_second_argument_as_torch_onnx_export_takes_them(
        tmp_path) -> None:  # noqa: ANN001
    """``edgec.compile(net, (x,))`` reads the tuple as example inputs (where
    ``torch.onnx.export`` takes them); a tuple for a file model is a one-line error that says
    what ``input_shapes`` is."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).eval()
    x = torch.randn(1, 4)
    m = edgec.compile(net, (x,))
    np.testing.assert_allclose(m.run(x.numpy()), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False)
    with pytest.raises(EdgecError, match=r"input_shapes is a tuple; give a dict input name"):
        edgec.compile(str(path), (x,))
