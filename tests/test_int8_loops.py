"""int8 loops: edgec's quantizer quantizes inside Scan bodies (TFLite WHILE with a static trip
count: Keras SimpleRNN/GRU/LSTM; TensorFlow's own full-integer converter crashes on GRU/LSTM).

Calibration ranges a body tensor over every iteration of every calibration set; the body gets
QDQ like a top-level graph and is lowered to int8 ops; the Scan carries int8 codes, each state
with one scale and zero point at the body's input and output (docs/int8.md, "int8 loops").
Checked: the host C equals edgec's numpy reference of the lowered graph bit for bit, the error
against the float Keras model stays within 5% of the output range, the body holds int8 ops only,
strict C flags + ASan/UBSan, the emulated Cortex-M4F equals the host C; the quantized loop
written as .tflite (WHILE) runs in the TFLite interpreter to edgec's bytes and reads back into
edgec; as .onnx it is a one-line error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgec
from edgec.api import compile_graph
from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Tensor
from edgec.mcu.toolchain import have_tool
from edgec.ops.interpret import infer_shapes, interpret
from edgec.quantize import quantize_graph
from edgec.quantize.calibrate import collect_ranges

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: ops a quantized loop body may hold: int8 kernels and code movement, nothing in float
INT8_BODY_OPS = {"QFullyConnected", "QAdd", "QSub", "QMul", "QLut", "Requantize", "Split",
                 "Slice", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Transpose",
                 "Concat", "QConcat", "Gather"}


def _scans(g: Graph) -> list[Node]:
    return [n for n in g.nodes if n.op == "Scan"]


def _check_int8_loop(g: Graph) -> None:
    """Every Scan carries codes with one quantization per state, its body computes in int8."""
    scans = _scans(g)
    assert scans
    for n in scans:
        body = n.attrs["body"]
        ops = {m.op for m in body.nodes}
        assert ops <= INT8_BODY_OPS, ops - INT8_BODY_OPS
        assert "QFullyConnected" in ops and "QLut" in ops, ops
        for t in [*n.inputs, *(o for o in n.outputs if o)]:
            assert g.tensor(t).dtype == "int8", t
        n_state = len(n.inputs) - int(n.attr("num_scan_inputs", 0))
        for k in range(n_state):
            q_in, q_out = body.quant(body.inputs[k]), body.quant(body.outputs[k])
            assert q_in is not None and q_out is not None and q_in.same_as(q_out), k


# -- without TensorFlow: a recurrence built in edgec's IR ----------------------------------------

def _rnn_graph(trips: int = 6, hidden: int = 4, feat: int = 3, seed: int = 0,
               reverse: bool = False) -> Graph:
    """h_t = tanh(W x_t + U h_{t-1} + b); the Scan's final state is unused (output ""), its
    scan output (every h_t) feeds a Dense layer; ``reverse`` walks the sequence and writes
    the outputs backwards."""
    rng = np.random.default_rng(seed)
    body = Graph("body")
    body.tensors["h"] = Tensor("h", (1, hidden))
    body.tensors["x_t"] = Tensor("x_t", (1, feat))
    body.inputs = ["h", "x_t"]
    w = body.add_const("W", rng.normal(0, 0.6, (hidden, feat)).astype(np.float32))
    u = body.add_const("U", rng.normal(0, 0.4, (hidden, hidden)).astype(np.float32))
    b = body.add_const("b", rng.normal(0, 0.2, (hidden,)).astype(np.float32))
    body.nodes = [Node("Gemm", "wx", ["x_t", w, b], ["wx"], {"transB": 1}),
                  Node("Gemm", "uh", ["h", u], ["uh"], {"transB": 1}),
                  Node("Add", "pre", ["wx", "uh"], ["pre"]),
                  Node("Tanh", "act", ["pre"], ["h_next"])]
    body.outputs = ["h_next", "h_next"]
    infer_shapes(body)
    g = Graph("qrnn")
    g.tensors["x"] = Tensor("x", (trips, 1, feat))
    g.inputs = ["x"]
    h0 = g.add_const("h0", np.zeros((1, hidden), np.float32))
    shape = g.add_const("flat", np.asarray([trips, hidden], np.int64))
    wd = g.add_const("Wd", rng.normal(0, 0.5, (2, hidden)).astype(np.float32))
    g.nodes = [Node("Scan", "rnn", [h0, "x"], ["", "hs"], {
        "body": body, "num_scan_inputs": 1, "scan_input_directions": [int(reverse)],
        "scan_output_directions": [int(reverse)]}),
               Node("Reshape", "flat_hs", ["hs", shape], ["hs2"]),
               Node("Gemm", "dense", ["hs2", wd], ["y"], {"transB": 1})]
    g.outputs = ["y"]
    infer_shapes(g)
    return g


def _sets(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    return rng.normal(0, 1, (n, *shape)).astype(np.float32)


def test_calibration_ranges_a_body_tensor_over_every_iteration() -> None:
    g = _rnn_graph()
    sets = [{"x": x} for x in _sets(np.random.default_rng(1), (6, 1, 3), 5)]
    ranges = collect_ranges(g, sets)
    body = g.nodes[0].attrs["body"]
    seen: dict[str, list[np.ndarray]] = {}
    for feeds in sets:  # the body by hand, iteration by iteration
        h = np.zeros((1, 4), np.float32)
        for t in range(6):
            vals = interpret(body, {"h": h, "x_t": feeds["x"][t]})
            full = {**vals}
            for name in ("pre", "wx"):
                full[name] = _body_value(body, {"h": h, "x_t": feeds["x"][t]}, name)
            for name, v in full.items():
                seen.setdefault(name, []).append(np.asarray(v))
            h = vals["h_next"]
    r = ranges.bodies["rnn"]
    for name in ("pre", "wx", "h_next"):
        allv = np.concatenate([v.reshape(-1) for v in seen[name]])
        assert r.lo[name] == pytest.approx(float(allv.min()), abs=1e-6)
        assert r.hi[name] == pytest.approx(float(allv.max()), abs=1e-6)
    # the first iteration alone spans less: the union is what was collected
    first = seen["pre"][0]
    assert r.hi["pre"] > float(first.max()) or r.lo["pre"] < float(first.min())


def test_percentile_ranges_inside_the_loop() -> None:
    g = _rnn_graph()
    sets = [{"x": x} for x in _sets(np.random.default_rng(8), (6, 1, 3), 8)]
    full = collect_ranges(g, sets).bodies["rnn"]
    clipped = collect_ranges(g, sets, "percentile", 90.0).bodies["rnn"]
    assert full.lo["wx"] < clipped.lo["wx"] < clipped.hi["wx"] < full.hi["wx"]
    q = quantize_graph(g, np.stack([s["x"] for s in sets]), method="percentile",
                       percentile=99.0)
    m = compile_graph(q.lowered, name="qrnn_pct")
    for s in sets[:3]:
        np.testing.assert_array_equal(m.run(s["x"]), m.reference(s["x"]))


def _body_value(body: Graph, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
    b = body.copy()
    b.outputs = [name]
    return interpret(b, feeds)[name]


@pytest.mark.parametrize("reverse", [False, True])
def test_ir_recurrence_quantized_c_equals_reference(reverse: bool) -> None:
    g = _rnn_graph(reverse=reverse)
    rng = np.random.default_rng(2)
    cal = _sets(rng, (6, 1, 3), 24)
    q = quantize_graph(g, cal)
    assert q.report.float_ops == []
    _check_int8_loop(q.lowered)
    m = compile_graph(q.lowered, name="qrnn")
    _check_int8_loop(m.graph)
    for x in [*cal[:4], *_sets(rng, (6, 1, 3), 4)]:
        got = m.run(x)
        np.testing.assert_array_equal(got, m.reference(x))
    assert q.report.outputs[0].max_abs < 0.05 * _span(g, cal)
    again = compile_graph(quantize_graph(_rnn_graph(reverse=reverse), cal).lowered, name="qrnn")
    assert again.c_source == m.c_source  # deterministic


def _span(g: Graph, cal: np.ndarray) -> float:
    ys = np.stack([interpret(g, {g.inputs[0]: x})[g.outputs[0]] for x in cal])
    return float(ys.max() - ys.min())


def test_state_quantization_covers_its_initial_value() -> None:
    """c_t = c_{t-1} / 2 + tanh(W x_t) from c_0 = 4: later values stay below 3, the state's
    one scale must still hold 4 (its range is over the initial value and every iteration)."""
    rng = np.random.default_rng(7)
    body = Graph("body")
    body.tensors["c"] = Tensor("c", (1, 4))
    body.tensors["x_t"] = Tensor("x_t", (1, 3))
    body.inputs = ["c", "x_t"]
    w = body.add_const("W", rng.normal(0, 0.6, (4, 3)).astype(np.float32))
    half = body.add_const("half", np.float32(0.5))
    body.nodes = [Node("Gemm", "wx", ["x_t", w], ["wx"], {"transB": 1}),
                  Node("Tanh", "act", ["wx"], ["a"]),
                  Node("Mul", "decay", ["c", half], ["cd"]),
                  Node("Add", "next", ["cd", "a"], ["c_next"])]
    body.outputs = ["c_next"]
    infer_shapes(body)
    g = Graph("qdecay")
    g.tensors["x"] = Tensor("x", (5, 1, 3))
    g.inputs = ["x"]
    c0 = g.add_const("c0", np.full((1, 4), 4.0, np.float32))
    g.nodes = [Node("Scan", "loop", [c0, "x"], ["c_end"], {"body": body,
                                                            "num_scan_inputs": 1})]
    g.outputs = ["c_end"]
    infer_shapes(g)
    cal = _sets(rng, (5, 1, 3), 16)
    q = quantize_graph(g, cal)
    _check_int8_loop(q.lowered)
    (scan,) = _scans(q.lowered)
    scale, zp = scan.attrs["body"].quant(scan.attrs["body"].inputs[0]).scalar()
    assert scale * (127 - zp) >= 4.0 - scale  # 4 within one step of the top code
    m = compile_graph(q.lowered, name="qdecay")
    for x in cal[:4]:
        np.testing.assert_array_equal(m.run(x), m.reference(x))
    assert q.report.outputs[0].max_abs < 0.05


def test_body_op_without_int8_kernel_is_named_inside_the_loop() -> None:
    g = _rnn_graph()
    body = g.nodes[0].attrs["body"]
    body.nodes[3] = Node("Erf", "act", ["pre"], ["h_next"])  # no int8 kernel
    infer_shapes(body)
    infer_shapes(g)
    q = quantize_graph(g, _sets(np.random.default_rng(3), (6, 1, 3), 8))
    assert q.report.float_ops == ["rnn/body: act (Erf)"]
    m = compile_graph(q.lowered, name="qrnn_erf")
    x = _sets(np.random.default_rng(4), (6, 1, 3), 1)[0]
    np.testing.assert_array_equal(m.run(x), m.reference(x))


@pytest.mark.parametrize("reverse", [False, True])
def test_quantized_loop_as_tflite_runs_to_the_same_bytes(reverse: bool) -> None:
    """The .tflite writer's WHILE: the TFLite interpreter (reference kernels) gives edgec's
    bytes, and edgec reads the file back to the same program."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs the TFLite reference")
    from edgec.quantize.tflite_writer import to_tflite
    from tests.tflite_builder import run_interpreter

    rng = np.random.default_rng(6)
    q = quantize_graph(_rnn_graph(reverse=reverse), _sets(rng, (6, 1, 3), 16))
    data = to_tflite(q.lowered)
    m = compile_graph(q.lowered, name="qrnn")
    back = edgec.compile(data, name="qrnn_back")
    _check_int8_loop(back.graph)
    for x in _sets(rng, (6, 1, 3), 10):
        want = m.run(x)
        np.testing.assert_array_equal(run_interpreter(data, [x])[0], want)
        np.testing.assert_array_equal(back.run(x), want)


def test_quantized_loop_as_onnx_is_a_one_line_error() -> None:
    from edgec.quantize.onnx_writer import to_onnx

    q = quantize_graph(_rnn_graph(), _sets(np.random.default_rng(5), (6, 1, 3), 8))
    with pytest.raises(EdgecError) as e:
        to_onnx(q.qdq)
    msg = str(e.value)
    assert "\n" not in msg and "node 'rnn' (Scan)" in msg and ".tflite" in msg, msg


# -- Keras recurrent layers ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow", reason="the Keras RNN tests need TensorFlow")


STEPS, FEAT = 8, 3
#: (layer, units, return_sequences)
CASES = [("SimpleRNN", 4, False), ("SimpleRNN", 9, True), ("GRU", 12, False),
         ("GRU", 6, True), ("LSTM", 5, True), ("LSTM", 10, False)]


def _keras(tf: Any, kind: str, units: int, seqs: bool) -> Any:
    tf.keras.utils.set_random_seed(units)
    layer = getattr(tf.keras.layers, kind)(units, return_sequences=seqs)
    return tf.keras.Sequential([tf.keras.Input((STEPS, FEAT), batch_size=1), layer,
                                tf.keras.layers.Dense(2)])


def _compile(tf: Any, kind: str, units: int, seqs: bool) -> tuple[Any, Any, np.ndarray]:
    model = _keras(tf, kind, units, seqs)
    cal = _sets(np.random.default_rng(units), (1, STEPS, FEAT), 32)
    m = edgec.compile(model, quantize="int8", calibration=cal,
                      name=f"q{kind.lower()}{units}")
    return model, m, cal


@pytest.mark.parametrize(("kind", "units", "seqs"), CASES)
def test_keras_rnn_int8_equals_reference_and_float_within_bound(
        tf: Any, kind: str, units: int, seqs: bool) -> None:
    model, m, cal = _compile(tf, kind, units, seqs)
    report = m.quant_report
    assert report is not None and report.float_ops == [], report.format()
    _check_int8_loop(m.graph)
    rng = np.random.default_rng(99)
    for x in [*cal, *_sets(rng, (1, STEPS, FEAT), 8)]:
        got = m.run(x)
        np.testing.assert_array_equal(got, m.reference(x))
    want = np.concatenate([np.asarray(model(x)) for x in cal])
    got = np.concatenate([m.run(x) for x in cal])
    err = float(np.abs(got - want).max())
    span = float(want.max() - want.min())
    print(f"{kind}({units}, return_sequences={seqs}): max |int8 - float| {err:.4f} over an "
          f"output range of {span:.3f} ({100 * err / span:.2f}%)")
    assert err < 0.05 * span
    assert report.outputs[0].max_abs < 0.05 * span


@pytest.mark.parametrize("case", ["bidirectional_gru", "lstm_then_gru", "simple_rnn_backwards"])
def test_keras_rnn_stacks_int8(tf: Any, case: str) -> None:
    """Two loops in one model (Bidirectional: one walks backwards; stacked layers: one loop's
    int8 output sequence is the next one's scan input), and go_backwards."""
    L = tf.keras.layers  # noqa: N806 - Keras' own spelling
    layers = {"bidirectional_gru": lambda: [L.Bidirectional(L.GRU(6))],
              "lstm_then_gru": lambda: [L.LSTM(6, return_sequences=True), L.GRU(5)],
              "simple_rnn_backwards": lambda: [L.SimpleRNN(5, go_backwards=True,
                                                           return_sequences=True)]}[case]
    tf.keras.utils.set_random_seed(3)
    model = tf.keras.Sequential([tf.keras.Input((STEPS, FEAT), batch_size=1), *layers(),
                                 L.Dense(2)])
    cal = _sets(np.random.default_rng(3), (1, STEPS, FEAT), 32)
    m = edgec.compile(model, quantize="int8", calibration=cal, name=case)
    assert m.quant_report is not None and m.quant_report.float_ops == []
    _check_int8_loop(m.graph)
    assert len(_scans(m.graph)) == (1 if case == "simple_rnn_backwards" else 2)
    for x in cal[:8]:
        np.testing.assert_array_equal(m.run(x), m.reference(x))
    want = np.concatenate([np.asarray(model(x)) for x in cal])
    got = np.concatenate([m.run(x) for x in cal])
    assert np.abs(got - want).max() < 0.05 * (want.max() - want.min())


def test_keras_gru_strict_c_and_sanitizers(tf: Any, tmp_path: Path) -> None:
    from tests.c_checks import strict_and_sanitized

    _, m, cal = _compile(tf, "GRU", 6, True)
    for x in cal[:3]:
        (got,) = strict_and_sanitized(m, tmp_path, [x])
        np.testing.assert_array_equal(got, m.run(x))


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_keras_lstm_on_cortex_m4f_equals_host_c(tf: Any, tmp_path: Path) -> None:
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target

    _, m, cal = _compile(tf, "LSTM", 5, True)
    xs = list(cal[:3])
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs])
    res = run_qemu(build, timeout_s=180)
    assert len(res.outputs) == len(xs)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        assert got.tobytes() == m.run(x).tobytes()


def test_quantize_cli_writes_a_keras_gru_the_interpreter_runs_bit_exact(
        tf: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``edgec quantize gru.keras -o x.tflite``: the interpreter runs the file to the bytes of
    edgec.compile(..., quantize="int8") on the same calibration; ``-o x.onnx`` is refused."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs the TFLite reference")
    from edgec.cli import main
    from tests.tflite_builder import run_interpreter

    model = _keras(tf, "GRU", 6, True)
    path = tmp_path / "gru.keras"
    model.save(path)
    cal = _sets(np.random.default_rng(0), (1, STEPS, FEAT), 16)
    np.save(tmp_path / "cal.npy", cal)
    args = ["quantize", str(path), "--calibration", str(tmp_path / "cal.npy"), "-o"]
    assert main([*args, str(tmp_path / "x.tflite")]) == 0
    assert "float ops (no int8 kernel): none" in capsys.readouterr().out
    data = (tmp_path / "x.tflite").read_bytes()
    m = edgec.compile(model, quantize="int8", calibration=cal, name="qgru_cli")
    for x in [*cal[:4], *_sets(np.random.default_rng(1), (1, STEPS, FEAT), 4)]:
        np.testing.assert_array_equal(run_interpreter(data, [x])[0], m.run(x))
    assert main([*args, str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "(Scan) is a quantized loop" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.onnx").exists()
