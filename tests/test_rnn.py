"""Recurrent ops (RNN, GRU, LSTM) against onnxruntime, PyTorch exports, and the stateful C API."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.errors import EdgecError, UnsupportedOpError
from tests.helpers import check_model, make_model, ort_run

torch = pytest.importorskip("torch")

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
N_OUT = {"RNN": 2, "GRU": 2, "LSTM": 3}


def rnn_model(
    op: str,
    seq: int,
    batch: int,
    inp: int,
    hidden: int,
    direction: str = "forward",
    *,
    bias: bool = True,
    init_state: str = "none",  # "none" | "input" (graph inputs) | "const" (initializers)
    peepholes: bool = False,
    seq_lens: Sequence[int] | None = None,
    outputs: Sequence[bool] | None = None,
    layout: int = 0,
    opset: int = 17,
    seed: int = 0,
    **attrs: Any,
) -> onnx.ModelProto:
    """One recurrent node with random constant weights (names X, W, R, B, h0, c0, P)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    rows = GATES[op] * hidden
    inits: dict[str, np.ndarray] = {
        "W": rng.uniform(-0.8, 0.8, (dirs, rows, inp)).astype(np.float32),
        "R": rng.uniform(-0.8, 0.8, (dirs, rows, hidden)).astype(np.float32),
    }
    x_shape = (seq, batch, inp) if layout == 0 else (batch, seq, inp)
    st_shape = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    graph_inputs: dict[str, tuple[int, ...]] = {"X": x_shape}
    names = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        inits["B"] = rng.uniform(-0.5, 0.5, (dirs, 2 * rows)).astype(np.float32)
        names[3] = "B"
    if seq_lens is not None:
        inits["L"] = np.asarray(seq_lens, np.int32)
        names[4] = "L"
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    for k, s in enumerate(states):
        if init_state == "input":
            graph_inputs[s] = st_shape
        elif init_state == "const":
            inits[s] = rng.uniform(-1, 1, st_shape).astype(np.float32)
        if init_state != "none":
            names[5 + k] = s
    if peepholes:
        inits["P"] = rng.uniform(-0.5, 0.5, (dirs, 3 * hidden)).astype(np.float32)
        names[7] = "P"
    while names and not names[-1]:
        names.pop()
    want = list(outputs) if outputs is not None else [True] * N_OUT[op]
    out_names = [n if w else "" for n, w in zip(["Y", "Y_h", "Y_c"], want, strict=False)]
    while out_names and not out_names[-1]:
        out_names.pop()
    if opset >= 14:
        attrs["layout"] = layout
    node = helper.make_node(op, names, out_names, hidden_size=hidden, direction=direction, **attrs)
    return make_model([node], graph_inputs, [o for o in out_names if o], inits, opset=opset)


# -- every op over odd sizes, directions and optional inputs ---------------------------------

SIZES = [(1, 1, 1, 1), (5, 2, 3, 17), (5, 1, 7, 3), (1, 2, 7, 17)]  # seq, batch, input, hidden


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "s{}b{}i{}h{}".format(*s))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sizes_directions(op: str, size: tuple[int, int, int, int], direction: str) -> None:
    check_model(rnn_model(op, *size, direction, init_state="input"))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("bias,init_state", [(False, "none"), (True, "none"), (False, "const")])
def test_optional_inputs(op: str, bias: bool, init_state: str) -> None:
    check_model(rnn_model(op, 5, 2, 3, 3, "bidirectional", bias=bias, init_state=init_state))


@pytest.mark.parametrize("given", ["h0", "c0"])
def test_lstm_one_initial_state(given: str) -> None:
    """initial_h without initial_c and the reverse: the absent one starts at zero."""
    model = rnn_model("LSTM", 5, 2, 3, 7, "bidirectional", init_state="input")
    node = model.graph.node[0]
    node.input[5 if given == "c0" else 6] = ""
    gone = "c0" if given == "h0" else "h0"
    kept = [vi for vi in model.graph.input if vi.name != gone]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    check_model(model)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("opset", [7, 14, 21])
def test_opsets(op: str, opset: int) -> None:
    check_model(rnn_model(op, 5, 2, 3, 7, "forward", init_state="input", opset=opset))


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_clip(op: str, direction: str) -> None:
    check_model(rnn_model(op, 5, 2, 7, 3, direction, init_state="input", clip=0.4))


@pytest.mark.parametrize("acts", [["Relu"], ["Sigmoid"], ["Softsign"], ["Softplus"],
                                  ["Relu", "Tanh"]])
def test_rnn_activations(acts: list[str]) -> None:
    direction = "bidirectional" if len(acts) == 2 else "forward"
    check_model(rnn_model("RNN", 5, 2, 3, 7, direction, init_state="input", activations=acts))


@pytest.mark.parametrize("acts", [["Tanh", "Relu"], ["Sigmoid", "Softsign"],
                                  ["Sigmoid", "Tanh", "Relu", "Sigmoid"]])
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_activations(acts: list[str], lbr: int) -> None:
    direction = "bidirectional" if len(acts) == 4 else "forward"
    check_model(rnn_model("GRU", 5, 2, 3, 7, direction, init_state="input", activations=acts,
                          linear_before_reset=lbr))


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("size", [(5, 2, 3, 17), (1, 1, 7, 1)], ids=str)
def test_gru_linear_before_reset(lbr: int, direction: str, size: tuple[int, ...]) -> None:
    check_model(rnn_model("GRU", *size, direction, init_state="input", linear_before_reset=lbr))


def test_gru_linear_before_reset_clip() -> None:
    check_model(rnn_model("GRU", 5, 2, 3, 7, "bidirectional", init_state="input",
                          linear_before_reset=1, clip=0.3))


@pytest.mark.parametrize("acts", [["Sigmoid", "Relu", "Tanh"], ["Softsign", "Tanh", "Relu"],
                                  ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Softplus"]])
def test_lstm_activations(acts: list[str]) -> None:
    direction = "bidirectional" if len(acts) == 6 else "forward"
    check_model(rnn_model("LSTM", 5, 2, 3, 7, direction, init_state="input", activations=acts))


@pytest.mark.parametrize("peepholes", [False, True])
@pytest.mark.parametrize("input_forget", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_peepholes_input_forget(peepholes: bool, input_forget: int, direction: str) -> None:
    check_model(rnn_model("LSTM", 5, 2, 3, 17, direction, init_state="input",
                          peepholes=peepholes, input_forget=input_forget))


def test_lstm_everything() -> None:
    check_model(rnn_model("LSTM", 5, 2, 7, 3, "bidirectional", init_state="const",
                          peepholes=True, input_forget=1, clip=0.5,
                          activations=["Sigmoid", "Relu", "Tanh", "Sigmoid", "Tanh", "Softsign"]))


OUTPUT_SETS = {
    "RNN": [(True, False), (False, True)],
    "GRU": [(True, False), (False, True)],
    "LSTM": [(True, False, False), (False, True, False), (False, False, True), (True, False, True)],
}


@pytest.mark.parametrize("op,outputs", [(op, o) for op, sets in OUTPUT_SETS.items() for o in sets],
                         ids=str)
def test_optional_outputs(op: str, outputs: tuple[bool, ...]) -> None:
    m = check_model(rnn_model(op, 5, 2, 3, 7, "bidirectional", init_state="input",
                              outputs=outputs))
    assert len(m.output_names) == sum(outputs)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_sequence_lens_full(op: str) -> None:
    check_model(rnn_model(op, 5, 2, 3, 7, "bidirectional", init_state="input", seq_lens=[5, 5]))


LAYOUT1_CASES = [(op, d, False) for op in ("RNN", "GRU", "LSTM")
                 for d in ("forward", "bidirectional")] + [("LSTM", "bidirectional", True)]


@pytest.mark.parametrize("op,direction,peepholes", LAYOUT1_CASES, ids=str)
def test_layout1(op: str, direction: str, peepholes: bool) -> None:
    """onnxruntime has no layout=1: compare with the layout-0 model on transposed tensors."""
    kw: dict[str, Any] = {"init_state": "input", "peepholes": peepholes, "seed": 3}
    if op == "GRU":
        kw["linear_before_reset"] = 1
    m0 = rnn_model(op, 5, 2, 3, 7, direction, layout=0, **kw)
    m1 = rnn_model(op, 5, 2, 3, 7, direction, layout=1, **kw)
    rng = np.random.default_rng(4)
    dirs = 2 if direction == "bidirectional" else 1
    x0 = rng.uniform(-2, 2, (5, 2, 3)).astype(np.float32)
    st0 = {s: rng.uniform(-1, 1, (dirs, 2, 7)).astype(np.float32) for s in ("h0", "c0")}
    feeds0 = {"X": x0, "h0": st0["h0"]}
    feeds1 = {"X": x0.transpose(1, 0, 2), "h0": st0["h0"].transpose(1, 0, 2)}
    if op == "LSTM":
        feeds0["c0"], feeds1["c0"] = st0["c0"], st0["c0"].transpose(1, 0, 2)
    expected = ort_run(m0, feeds0)
    compiled = edgec.compile(m1)
    got = compiled.run(**feeds1)
    ref = compiled.reference(**feeds1)
    for i, (g_, r_, e_) in enumerate(zip(got, ref, expected, strict=True)):
        e_ = e_.transpose(2, 0, 1, 3) if i == 0 else e_.transpose(1, 0, 2)
        np.testing.assert_allclose(g_, e_, rtol=1e-4, atol=1e-5, err_msg=f"C output {i}")
        np.testing.assert_allclose(r_, e_, rtol=1e-4, atol=1e-5, err_msg=f"reference output {i}")


# -- unsupported combinations: one-line errors ------------------------------------------------

def test_sequence_lens_partial_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match="sequence_lens"):
        edgec.compile(rnn_model("GRU", 5, 2, 3, 7, seq_lens=[5, 3]))


def test_parameterised_activation_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match="LeakyRelu.*not supported"):
        edgec.compile(rnn_model("RNN", 5, 2, 3, 7, activations=["LeakyRelu"],
                                activation_alpha=[0.1]))


def test_wrong_activation_count_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match="activations"):
        edgec.compile(rnn_model("LSTM", 5, 2, 3, 7, activations=["Sigmoid", "Tanh"]))


def test_runtime_weights_unsupported() -> None:
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=3)
    model = make_model([node], {"X": (5, 1, 2), "W": (1, 9, 2), "R": (1, 9, 3)}, ["Y"])
    with pytest.raises(UnsupportedOpError, match="W must be a constant"):
        edgec.compile(model)


# -- generated code -------------------------------------------------------------------------

def test_time_loop_not_unrolled_and_bias_folded() -> None:
    m = edgec.compile(rnn_model("LSTM", 50, 1, 3, 7, init_state="input"))
    assert "for (int s = 0; s < 50; ++s)" in m.c_source
    # ONE matrix-vector call per step over [W | R] against [x_t | h] (x_t copied next to h;
    # k = 3 + 7, no zero columns: the walk unrolled for k = 10): the helper and its one call
    assert m.c_source.count("edgec_mv4_k10(") == 2
    assert "{ xh[i] = xt[i]; }" in m.c_source
    assert "xh[i] = 0.0f" not in m.c_source
    # W [28x3] and R [28x7] re-laid out, plus ONE folded bias vector (Wb + Rb)
    assert _bias_shapes(m) == [(28,)]
    assert m.report()["params"] == 28 * 3 + 28 * 7 + 28  # the zero padding is not counted
    assert m.report()["macs"] == 50 * 28 * (3 + 7)


@pytest.mark.parametrize("lbr,biases", [(0, [(7,), (14,)]), (1, [(7,), (7,), (14,)])])
def test_gru_bias_folding(lbr: int, biases: list[tuple[int]]) -> None:
    """z/r biases always fold; the hidden gate's fold unless linear_before_reset=1."""
    m = edgec.compile(rnn_model("GRU", 5, 1, 3, 7, linear_before_reset=lbr))
    assert _bias_shapes(m) == biases
    assert m.report()["params"] == 21 * 3 + 21 * 7 + sum(b[0] for b in biases)


def _bias_shapes(m: edgec.CompiledModel) -> list[tuple[int, ...]]:
    """Shapes of the 1-D weight tables in the generated C (from their declaration comments)."""
    found = re.findall(r"static const float \w+\[\d+\] \w+_PLACEMENT = \{ /\* ([\dx]+) \*/",
                       m.c_source)
    return sorted((int(s),) for s in found if "x" not in s)


# -- PyTorch exports (legacy TorchScript exporter and the default dynamo exporter) -----------

EXPORTERS = ("legacy", "dynamo")
CELLS = {"GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM, "RNN": torch.nn.RNN}
TORCH_TOL = {"rtol": 1e-4, "atol": 1e-5}


class SeqNet(torch.nn.Module):
    """A recurrent layer; with ``with_state`` it takes h0 (and c0) and returns hn (and cn)."""

    def __init__(self, cell: str, n_in: int, hidden: int, layers: int = 1,
                 batch_first: bool = False, with_state: bool = False):
        super().__init__()
        self.rnn = CELLS[cell](n_in, hidden, num_layers=layers, batch_first=batch_first)
        self.lstm = cell == "LSTM"
        self.with_state = with_state

    def forward(self, x: Any, *state: Any) -> Any:
        if not self.with_state:
            return self.rnn(x)[0]
        if self.lstm:
            y, (h, c) = self.rnn(x, (state[0], state[1]))
            return y, h, c
        y, h = self.rnn(x, state[0])
        return y, h


def build(cell: str, n_in: int, hidden: int, seed: int = 0, **kw: Any) -> SeqNet:
    torch.manual_seed(seed)
    return SeqNet(cell, n_in, hidden, **kw).eval()


def io_names(m: SeqNet) -> tuple[list[str], list[str]]:
    if not m.with_state:
        return ["x"], ["y"]
    if m.lstm:
        return ["x", "h0", "c0"], ["y", "hn", "cn"]
    return ["x", "h0"], ["y", "hn"]


def export(m: SeqNet, args: Sequence[np.ndarray], path: Path, exporter: str) -> Path:
    """Export with either exporter; dynamo's weights land in ``path.data`` next to ``path``."""
    ins, outs = io_names(m)
    targs = tuple(torch.from_numpy(a) for a in args)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(m, targs, str(path), dynamo=False, input_names=ins,
                              output_names=outs)
        else:
            torch.onnx.export(m, targs, str(path), input_names=ins, output_names=outs)
    return path


def torch_run(m: SeqNet, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = m(*[torch.from_numpy(a) for a in args])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def check_export(path: Path, m: SeqNet, args: Sequence[np.ndarray],
                 state: Sequence[tuple[str, str]] | None = None) -> edgec.CompiledModel:
    """C and the IR interpreter against onnxruntime (same file) and PyTorch."""
    ins, _ = io_names(m)
    feeds = dict(zip(ins, args, strict=True))
    expected = ort_run(onnx.load(str(path)), feeds)
    from_torch = torch_run(m, args)
    compiled = edgec.compile(path, state=state)
    got = compiled.run(**feeds)
    ref = compiled.reference(**feeds)
    got, ref = (got, ref) if isinstance(got, list) else ([got], [ref])
    for i, (g_, r_, e_, t_) in enumerate(zip(got, ref, expected, from_torch, strict=True)):
        np.testing.assert_allclose(e_, t_, **TORCH_TOL, err_msg=f"export itself, output {i}")
        np.testing.assert_allclose(g_, e_, **TORCH_TOL, err_msg=f"C vs onnxruntime, output {i}")
        np.testing.assert_allclose(r_, e_, **TORCH_TOL, err_msg=f"IR vs onnxruntime, output {i}")
        np.testing.assert_allclose(g_, t_, **TORCH_TOL, err_msg=f"C vs PyTorch, output {i}")
    return compiled


def sample(shape: Sequence[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_torch_no_initial_state(tmp_path: Path, cell: str, batch_first: bool,
                                exporter: str) -> None:
    """No h0: the legacy exporter builds zeros through Shape → Gather → Concat → Expand."""
    m = build(cell, 3, 17, batch_first=batch_first)
    x = sample((2, 5, 3) if batch_first else (5, 2, 3), 1)
    check_export(export(m, [x], tmp_path / "m.onnx", exporter), m, [x])


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_torch_initial_state(tmp_path: Path, cell: str, batch_first: bool, exporter: str) -> None:
    m = build(cell, 7, 3, batch_first=batch_first, with_state=True)
    x = sample((1, 5, 7) if batch_first else (5, 1, 7), 2)
    states = [sample((1, 1, 3), 3 + k) for k in range(2 if cell == "LSTM" else 1)]
    check_export(export(m, [x, *states], tmp_path / "m.onnx", exporter), m, [x, *states])


# -- the stateful C API: reset() + step() carry the recurrent state inside C ------------------

STEPS = 50
STATE_TOL = {"rtol": 1e-4, "atol": 1e-5}


def stream_vs_sequence(compiled: edgec.CompiledModel, m: SeqNet, xs: np.ndarray,
                       state_names: Sequence[str]) -> None:
    """``STEPS`` × step(x_t) on one compiled 1-step model equals PyTorch on the whole sequence
    (outputs at every step and the final state); reset() starts over from zeros."""
    batch, hidden = xs.shape[1], m.rnn.hidden_size
    zeros = [np.zeros((m.rnn.num_layers, batch, hidden), np.float32) for _ in state_names]
    full = torch_run(m, [xs, *zeros])  # y [STEPS, B, H], hn (, cn)
    assert np.abs(full[0]).max() > 1e-2, "degenerate test: the model output is ~0"
    compiled.reset()
    first = None
    for t in range(STEPS):
        y = compiled.step(xs[t : t + 1])
        np.testing.assert_allclose(y[0], full[0][t], **STATE_TOL, err_msg=f"step {t}")
        first = y if first is None else first
    carried = compiled.state()
    assert sorted(carried) == sorted(state_names)
    for name, final in zip(state_names, full[1:], strict=True):
        np.testing.assert_allclose(carried[name], final, **STATE_TOL, err_msg=f"state {name}")
    compiled.reset()
    assert all(not np.any(v) for v in compiled.state().values())
    np.testing.assert_allclose(compiled.step(xs[:1]), first, rtol=0, atol=0)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cell,n_in,hidden,batch", [("GRU", 7, 17, 1), ("LSTM", 3, 17, 2),
                                                     ("RNN", 1, 3, 2)])
def test_stateful_step_matches_sequence(tmp_path: Path, cell: str, n_in: int, hidden: int,
                                        batch: int, exporter: str) -> None:
    """THE stateful test: a 1-step export with h0 (c0) in and hn (cn) out, stepped 50 times."""
    m = build(cell, n_in, hidden, seed=5, with_state=True)
    ins, outs = io_names(m)
    x1 = sample((1, batch, n_in), 6)
    zeros = [np.zeros((1, batch, hidden), np.float32) for _ in ins[1:]]
    path = export(m, [x1, *zeros], tmp_path / "step.onnx", exporter)
    pairs = list(zip(ins[1:], outs[1:], strict=True))
    # legacy: the node reads h0 and writes hn directly, so the state is found automatically;
    # dynamo slices h0 per layer first, so the pairs are given
    compiled = edgec.compile(path, state=None if exporter == "legacy" else pairs)
    assert compiled.cmodel.state == pairs
    header = compiled.c_header
    for sym in ("_state_t;", "_reset(", "_step("):
        assert f"{compiled.name}{sym}" in header
    stream_vs_sequence(compiled, m, sample((STEPS, batch, n_in), 7), ins[1:])


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_two_layer_lstm(tmp_path: Path, exporter: str) -> None:
    """h0/c0 [2, B, H] are sliced per layer and hn/cn concatenated: the pairs are given."""
    m = build("LSTM", 3, 17, layers=2, seed=8, with_state=True)
    x = sample((5, 2, 3), 9)
    states = [sample((2, 2, 17), 10 + k) for k in range(2)]
    path = export(m, [x, *states], tmp_path / "lstm2.onnx", exporter)
    check_export(path, m, [x, *states])

    step_path = export(m, [x[:1], *states], tmp_path / "lstm2_step.onnx", exporter)
    compiled = edgec.compile(step_path, state=[("h0", "hn"), ("c0", "cn")])
    assert compiled.is_stateful
    stream_vs_sequence(compiled, m, sample((STEPS, 2, 3), 11), ["h0", "c0"])


def test_explicit_state_errors(tmp_path: Path) -> None:
    m = build("GRU", 3, 5, with_state=True)
    path = export(m, [sample((1, 1, 3), 0), np.zeros((1, 1, 5), np.float32)],
                  tmp_path / "g.onnx", "legacy")
    with pytest.raises(EdgecError, match="must be a graph input"):
        edgec.compile(path, state=[("hn", "h0")])


STRICT = ("-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1")


def _c_floats(a: np.ndarray) -> str:
    return ", ".join(f"{float(v):.9g}f" for v in a.reshape(-1))


def test_stateful_c_api_from_c(tmp_path: Path) -> None:
    """A C program drives <name>_reset/<name>_step (strict flags, ASan + UBSan); its outputs
    match the Python step() path, and a second reset starts over."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not on PATH")
    m = build("LSTM", 3, 7, seed=12, with_state=True)
    zeros = [np.zeros((1, 2, 7), np.float32)] * 2
    path = export(m, [sample((1, 2, 3), 0), *zeros], tmp_path / "lstm.onnx", "legacy")
    compiled = edgec.compile(path, name="lstm_step")
    compiled.write(tmp_path)
    steps = 20
    xs = sample((steps, 1, 2, 3), 13)
    n_y = 1 * 2 * 7
    driver = f"""#include <stdio.h>
#include "lstm_step.h"
static const float xs[{steps * 6}] = {{{_c_floats(xs)}}};
int main(void)
{{
    lstm_step_state_t st;
    float y[{n_y}];
    for (int round = 0; round < 2; ++round) {{
        lstm_step_reset(&st);
        for (int t = 0; t < {steps}; ++t) {{
            if (lstm_step_step(&st, xs + 6 * t, y) != 0) return 1;
            for (int i = 0; i < {n_y}; ++i) printf("%.9g\\n", (double)y[i]);
        }}
    }}
    return 0;
}}
"""
    (tmp_path / "driver.c").write_text(driver)
    build_cmd = ["gcc", *STRICT, *SANITIZE, "driver.c", "lstm_step.c", "-lm", "-o", "driver"]
    proc = subprocess.run(build_cmd, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run(["./driver"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    from_c = np.array(run.stdout.split(), np.float32).reshape(2, steps, n_y)

    compiled.reset()
    from_py = np.stack([compiled.step(x).reshape(-1) for x in xs])
    np.testing.assert_allclose(from_c[0], from_py, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(from_c[0], from_c[1])
    full = torch_run(m, [xs.reshape(steps, 2, 3), *zeros])[0]
    np.testing.assert_allclose(from_c[0], full.reshape(steps, n_y), **STATE_TOL)


SANITIZED_MODELS = {
    "lstm_everything": lambda: rnn_model(
        "LSTM", 5, 2, 7, 3, "bidirectional", init_state="input", peepholes=True,
        input_forget=1, clip=0.5, activations=["Sigmoid", "Relu", "Tanh"] * 2),
    "gru_lbr0": lambda: rnn_model("GRU", 5, 2, 3, 17, "bidirectional", init_state="const",
                                  clip=0.7),
    "gru_lbr1": lambda: rnn_model("GRU", 5, 1, 7, 3, "reverse", init_state="input",
                                  linear_before_reset=1, outputs=(False, True)),
    "rnn_layout1": lambda: rnn_model("RNN", 5, 2, 1, 17, "bidirectional", layout=1,
                                     activations=["Softsign", "Relu"]),
}


@pytest.mark.parametrize("key", list(SANITIZED_MODELS))
def test_strict_flags_and_sanitizers(tmp_path: Path, key: str) -> None:
    """Warning-free under strict C99 (host, and Cortex-M4 when arm-none-eabi-gcc is there);
    a C program running <name>_run under ASan + UBSan matches the IR interpreter."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not on PATH")
    compiled = edgec.compile(SANITIZED_MODELS[key](), name=key)
    compiled.write(tmp_path)
    arm = shutil.which("arm-none-eabi-gcc")
    if arm is not None:
        cortex_m4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
        proc = subprocess.run([arm, *cortex_m4, *STRICT, "-O2", "-c", f"{key}.c", "-o", "m4.o"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    ports_in, ports_out = compiled.cmodel.inputs, compiled.cmodel.outputs
    feeds = {p.name: sample(p.shape, 20 + i) for i, p in enumerate(ports_in)}
    decls = [f"static const float {p.c}[{p.size}] = {{{_c_floats(feeds[p.name])}}};"
             for p in ports_in]
    decls += [f"static float {p.c}[{p.size}];" for p in ports_out]
    prints = [f"for (int i = 0; i < {p.size}; ++i) printf(\"%.9g\\n\", (double){p.c}[i]);"
              for p in ports_out]
    args = ", ".join(p.c for p in [*ports_in, *ports_out])
    nl = "\n"
    (tmp_path / "driver.c").write_text(
        f"#include <stdio.h>\n#include \"{key}.h\"\n{nl.join(decls)}\n"
        f"int main(void)\n{{\n    if ({key}_run({args}) != 0) return 1;\n"
        f"    {nl.join(prints)}\n    return 0;\n}}\n")
    proc = subprocess.run(["gcc", *STRICT, *SANITIZE, "driver.c", f"{key}.c", "-lm", "-o", "d"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run(["./d"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = np.array(run.stdout.split(), np.float32)
    ref = compiled.reference(**feeds)
    ref = np.concatenate([r.reshape(-1) for r in (ref if isinstance(ref, list) else [ref])])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("op,direction,lbr", [("GRU", "forward", 0), ("GRU", "reverse", 1),
                                              ("LSTM", "bidirectional", 0)])
def test_cells_on_cortex_m4f_match_onnxruntime(op: str, direction: str, lbr: int) -> None:
    """The [x_t | h] walks with the assembly dot product and the tanh-based sigmoid gates on
    the emulated M4F, against onnxruntime (input and hidden sizes with a k % 4 tail)."""
    attrs = {"linear_before_reset": lbr} if op == "GRU" else {}
    m = edgec.compile(rnn_model(op, 12, 1, 5, 18, direction, init_state="input", **attrs))
    rep = m.verify(target="cortex-m4f", n=2)
    assert rep.ok and rep.where == "cortex-m4f, QEMU", rep.format()
