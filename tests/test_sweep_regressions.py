"""Regressions from the torch / ONNX sweep (docs/conformance.md, "Front-end sweep"): small
models written the way users and exporters write them, each compared with onnxruntime or
torch. One test per bug found; the last tests hold a few representative passing cases that
no other test covered."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import edgec
from edgec.errors import EdgecError
from tests.helpers import check_model, make_model

rng = np.random.default_rng(7)


def _w(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def _bn_stats(c: int) -> dict[str, np.ndarray]:
    return {"s": _w(c), "t": _w(c), "mu": _w(c), "var": np.abs(_w(c)) + 0.5}


N = helper.make_node


# -- the C back-end: graph outputs that no node of the model computes into their port -------

def test_output_that_is_a_graph_input_is_copied_from_the_input() -> None:
    """Was: the output port shadowed the input's pointer, so the output was copied onto
    itself (zeros)."""
    m = make_model([N("Relu", ["x"], ["r"])], {"x": [2, 3]}, {"x": [2, 3], "r": [2, 3]})
    check_model(m)


def test_output_named_twice_fills_both_ports() -> None:
    """Was: the kernel wrote only the last port of a tensor listed twice in the outputs (a
    torch model returning ``(y, y)``, exported to ONNX); the first stayed zero."""
    m = make_model([N("Relu", ["x"], ["r"])], {"x": [2, 3]}, {"r": [2, 3]})
    m.graph.output.append(m.graph.output[0])
    check_model(m)


def test_output_that_is_an_input_and_a_view_of_it() -> None:
    m = make_model([N("Concat", ["x"], ["o"], axis=0)], {"x": [2, 3]},
                   {"o": [2, 3], "x": [2, 3]})
    check_model(m)


# -- passes ----------------------------------------------------------------------------------

def test_batchnorm_does_not_fold_a_per_row_gemm_bias() -> None:
    """Gemm C of shape [M, 1] is one value per row; fold_batchnorm took it for a per-column
    bias whenever M == N (wrong numbers)."""
    m = make_model(
        [N("Gemm", ["a", "b", "c"], ["y"]),
         N("BatchNormalization", ["y", "s", "t", "mu", "var"], ["o"])],
        {"a": [3, 4]}, {"o": [3, 3]}, {"b": _w(4, 3), "c": _w(3, 1), **_bn_stats(3)})
    check_model(m)


def test_batchnorm_spatial0_is_not_folded() -> None:
    """Opset 7's spatial=0 statistics ([C, H, W]) after a Conv: fold_batchnorm broadcast them
    as per-channel values and crashed (internal ValueError)."""
    stats = {k: _w(3, 3, 3) for k in ("s", "t", "mu")} | {"var": np.abs(_w(3, 3, 3)) + 0.5}
    m = make_model(
        [N("Conv", ["x", "w"], ["a"]),
         N("BatchNormalization", ["a", "s", "t", "mu", "var"], ["o"], spatial=0)],
        {"x": [1, 2, 5, 5]}, {"o": [1, 3, 3, 3]}, {"w": _w(3, 2, 3, 3), **stats}, opset=7)
    m.ir_version = 3
    check_model(m)


def test_bias_add_after_a_gemm_with_beta_zero() -> None:
    """fuse_bias_adds divided the bias by the Gemm's beta (scaling no C): beta = 0 gave
    infinite weights and the model was refused as holding NaN."""
    m = make_model([N("Gemm", ["a", "b"], ["y"], beta=0.0, alpha=0.5), N("Add", ["y", "c"], ["o"])],
                   {"a": [2, 4]}, {"o": [2, 3]}, {"b": _w(4, 3), "c": _w(3)})
    check_model(m)


@pytest.mark.parametrize("kind", ["lstm_h0_as_c0", "two_rnns_one_h0"])
def test_one_input_starting_two_recurrent_states_is_not_carried(kind: str) -> None:
    """detect_state made two state pairs from one graph input (an LSTM's h0 and c0 fed by one
    tensor; two RNNs started from one h0): the generated header had a duplicate state member
    and the host compiler failed. Such a model is stateless (h0 stays an input)."""
    if kind == "lstm_h0_as_c0":
        nodes = [N("LSTM", ["x", "w", "r", "", "", "h0", "h0"], ["y", "h", "c"], hidden_size=3)]
        outs = {"y": [4, 1, 1, 3], "h": [1, 1, 3], "c": [1, 1, 3]}
        inits = {"w": _w(1, 12, 2), "r": _w(1, 12, 3)}
    else:
        nodes = [N("RNN", ["x", "w", "r", "", "", "h0"], ["y", "h"], hidden_size=3),
                 N("RNN", ["x", "w2", "r", "", "", "h0"], ["y2", "h2"], hidden_size=3)]
        outs = {"h": [1, 1, 3], "h2": [1, 1, 3]}
        inits = {"w": _w(1, 3, 2), "w2": _w(1, 3, 2), "r": _w(1, 3, 3)}
    m = check_model(make_model(nodes, {"x": [4, 1, 2], "h0": [1, 1, 3]}, outs, inits))
    assert not m.graph.state


# -- the torch front-end -----------------------------------------------------------------------

torch = pytest.importorskip("torch")
nn = torch.nn


def _torch_check(mod: object, *shapes: tuple[int, ...], route: str = "fx") -> None:
    gen = torch.Generator().manual_seed(3)
    ex = tuple(torch.randn(*s, generator=gen) for s in shapes)
    if route == "fx":
        m = edgec.compile(mod, example_inputs=ex)
    else:
        m = edgec.compile(torch.export.export(mod, ex))
    for _ in range(3):
        xs = [torch.randn(*s, generator=gen) * 3 for s in shapes]
        with torch.no_grad():
            want = mod(*[x.clone() for x in xs])  # forward may write its inputs in place
        got = m.run(*[x.numpy() for x in xs])
        want = list(want) if isinstance(want, tuple) else [want]
        got = got if isinstance(got, list) else [got]
        for g_, w_ in zip(got, want, strict=True):
            np.testing.assert_allclose(g_, w_.numpy(), rtol=1e-4, atol=1e-5)


class _InPlaceChain(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = x * 2.0
        z.add_(y)
        torch.relu_(z)
        return z - x


class _InPlaceOnInput(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = x * y
        x.sigmoid_()
        return x + s


class _InPlaceModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(5, 5)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        g = self.act(h)
        return h + g * y


class _InPlaceOnRnnOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.g = nn.GRU(5, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, h = self.g(x.unsqueeze(1))  # out is an item of the module's tuple, not a view
        out.relu_()
        return out.squeeze(1) + h[0] * y


@pytest.mark.parametrize("cls", [_InPlaceChain, _InPlaceOnInput, _InPlaceModule,
                                 _InPlaceOnRnnOutput])
def test_fx_in_place_ops_write_their_tensor(cls: type) -> None:
    """torch.fx records ``z.add_(y)``, ``torch.relu_(z)``, ``nn.ReLU(inplace=True)(h)`` as
    calls whose results nobody reads; later reads of ``z`` / ``h`` still named the old value
    (the write was dropped: wrong numbers)."""
    _torch_check(cls().eval(), (2, 5), (2, 5))


def test_fx_in_place_write_through_a_view_is_refused() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x * 1.0
            z[:, :2].relu_()
            return z

    class Chunk(nn.Module):  # a piece of torch.chunk is a view of its input
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x * 1.0
            a, b = z.chunk(2, 1)
            a.relu_()
            return z + torch.cat([b, b], 1)

    class EarlierView(nn.Module):  # a view taken before the write sees the written values
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x * 1.0
            v = z[:, :2]
            z.relu_()
            return v * 2.0

    for mod in (M(), Chunk(), EarlierView()):
        with pytest.raises(EdgecError, match=r"in-place 'relu_'.*view"):
            edgec.compile(mod, example_inputs=(torch.randn(2, 4),))


@pytest.mark.parametrize("route", ["fx", "export"])
@pytest.mark.parametrize("make", [
    lambda: nn.Softplus(beta=2.0, threshold=5.0),
    lambda: _Fn(lambda x: nn.functional.softplus(x, beta=1.0, threshold=1.0)),
])
def test_softplus_threshold(make: object, route: str) -> None:
    """torch's softplus is x itself above threshold / beta; the threshold was ignored (a
    difference of log1p(exp(-threshold)) / beta, 3e-3 at threshold 5)."""
    _torch_check(make().eval(), (4, 16), route=route)  # type: ignore[operator]


class _Fn(nn.Module):
    def __init__(self, f: object) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)  # type: ignore[operator]


class _Factories(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.arange(4, dtype=torch.float32) + torch.ones(2, 4) - torch.zeros(1, 4)


def test_export_tensor_factories_fold() -> None:
    """``aten.arange`` / ``ones`` / ``zeros`` with static sizes (and nn.GRU's zero h0 in an
    export) were 'not supported': they read no tensor, so they were never folded."""
    _torch_check(_Factories().eval(), (2, 4), route="export")


class _Pieces(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = torch.chunk(x, 3, dim=1)  # 7 → 3, 3, 1
        p, q = torch.split(x, [2, 5], dim=-1)
        rows = torch.unbind(x, 0)
        return torch.cat([c * a[:, :1], b.flip(-1), q.flip(0, 1), p], 1) + rows[1].sum()


class _ChunkList(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(torch.chunk(x, 2, -1), 0).sum(0) + torch.flip(x, [1])[:, :2]


@pytest.mark.parametrize(("cls", "route"), [(_Pieces, "export"), (_ChunkList, "fx")])
def test_split_chunk_unbind_flip(cls: type, route: str) -> None:
    """torch.split / chunk / unbind / flip had no torch front-end rule (the ONNX route only)."""
    _torch_check(cls().eval(), (3, 7) if cls is _Pieces else (2, 4), route=route)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_export_of_nn_rnn_is_decomposed(kind: str) -> None:
    """A torch.export program keeps ``aten.gru`` / ``aten.lstm`` whole; edgec now lowers the
    core-ATen decomposition instead of stopping at 'torch op gru is not supported'."""
    torch.manual_seed(0)
    rnn = (nn.GRU if kind == "gru" else nn.LSTM)(3, 4, num_layers=2, batch_first=True)
    _torch_check(_Fn(lambda x: rnn(x)[0]).eval(), (1, 5, 3), route="export")


class _Expand(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(2, 3, -1) * x.expand_as(torch.zeros(4, 2, 3, 4))[1]


@pytest.mark.parametrize("route", ["fx", "export"])
def test_expand(route: str) -> None:
    """Tensor.expand had no torch rule (an export's batch_first nn.GRU / LSTM expands its h0)."""
    _torch_check(_Expand().eval(), (2, 1, 4), route=route)


def test_export_of_batch_first_gru() -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(3, 4, batch_first=True)
    _torch_check(_Fn(lambda x: rnn(x)[0]).eval(), (2, 5, 3), route="export")


class _MaskedFill(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(y > 0.2, -1.0) + x.masked_fill(torch.tensor([True, False] * 2), 0.5)


@pytest.mark.parametrize("route", ["fx", "export"])
def test_masked_fill(route: str) -> None:
    """masked_fill had no torch rule (its ONNX export stopped at the next test's Cast)."""
    _torch_check(_MaskedFill().eval(), (3, 4), (3, 4), route=route)


def test_cast_of_a_comparison_to_bool_is_dropped() -> None:
    """torch.onnx.export writes masked_fill as Where(Cast(mask, to=BOOL), ...): a Cast of a
    bool to BOOL was refused as 'a run-time Cast to BOOL'."""
    m = make_model([N("Greater", ["x", "y"], ["g"]), N("Cast", ["g"], ["b"], to=9),
                    N("Where", ["b", "z", "x"], ["o"])],
                   {"x": [2, 3], "y": [2, 3]}, {"o": [2, 3]}, {"z": np.float32(-1.0)})
    check_model(m)


# -- representative passing sweep cases no other test covers -----------------------------------

class _Tied(nn.Module):
    """Weight tying: the decoder is the encoder's weight transposed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.enc = nn.Linear(6, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(torch.tanh(self.enc(x)), self.enc.weight.t())


class _SharedBlock(nn.Module):
    """One conv + BN + ReLU block applied three times (shared weights, folded BN)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        bn = nn.BatchNorm2d(4)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        self.blk = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), bn, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = x + self.blk(x)
        return x


class _SharedRecurrence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x) + x)
        return self.a(torch.tanh(self.a(h) + x))


class _MiscOps(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, 3, 2, padding=1, ceil_mode=True,
                                          count_include_pad=False)
        return (torch.matmul(x, y).amax(dim=(1, 3)).sum() + nn.functional.hardswish(pooled)
                + x.transpose(2, 3)[..., :4, :4].mean(dim=(1, 3), keepdim=True))


@pytest.mark.parametrize("route", ["fx", "export"])
@pytest.mark.parametrize(("cls", "shapes"), [
    (_Tied, [(2, 6)]),
    (_SharedBlock, [(1, 4, 6, 6)]),
    (_SharedRecurrence, [(1, 8)]),
    (_MiscOps, [(2, 3, 6, 6), (1, 3, 6, 6)]),
], ids=["weight_tying", "shared_block_x3", "shared_recurrence", "pool_matmul_reduce"])
def test_sweep_cases_that_pass(cls: type, shapes: list, route: str) -> None:
    _torch_check(cls().eval(), *shapes, route=route)


@pytest.mark.parametrize("pairs", [[("h0", "h"), ("h0", "c")], [("h0", "h"), ("c0", "h")]])
def test_explicit_state_pairs_sharing_a_tensor_are_refused(pairs: list) -> None:
    """state=[("h0", "h"), ("h0", "c")] compiled, with h0 carried from whichever output the C
    wrote last."""
    m = make_model([N("LSTM", ["x", "w", "r", "", "", "h0", "c0"], ["y", "h", "c"], hidden_size=3)],
                   {"x": [4, 1, 2], "h0": [1, 1, 3], "c0": [1, 1, 3]},
                   {"h": [1, 1, 3], "c": [1, 1, 3]}, {"w": _w(1, 12, 2), "r": _w(1, 12, 3)})
    with pytest.raises(EdgecError, match="one state pair only"):
        edgec.compile(m, state=pairs)


def test_pad_wrap_at_opset_18() -> None:
    """torch.onnx.export(dynamo=True) writes F.pad(mode='circular') as Pad mode='wrap' at
    opset 18 (onnxruntime runs it); it was refused with "Pad mode 'wrap'; supported: ...,
    wrap"."""
    m = make_model([N("Pad", ["x", "p"], ["o"], mode="wrap")], {"x": [1, 2, 5, 6]},
                   {"o": [1, 2, 8, 9]}, {"p": np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64)},
                   opset=18)
    check_model(m)
