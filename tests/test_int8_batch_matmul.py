"""int8 MatMul of two run-time operands (QBatchMatMul, TFLite's int8 BATCH_MATMUL): attention
scores Q·Kᵀ, scores·V, x·xᵀ.

* single BATCH_MATMUL flatbuffers (batch broadcast, adj_x/adj_y, non-zero zero points) and
  Keras models converted full-integer by TFLite: edgec's C and numpy reference equal the TFLite
  interpreter's reference kernels byte for byte; on an emulated Cortex-M4F the C equals the host;
* a torch attention block quantized by onnxruntime (QDQ): its run-time MatMuls lower to
  QBatchMatMul (no float island left for them), within 2 output LSB of onnxruntime, C == numpy;
  strict C and ASan/UBSan clean;
* edgec's own quantizer lowers a float model's run-time MatMul to int8 too.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec
from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.mcu.project import build_firmware
from edgec.mcu.qemu import run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from edgec.ops.int8.batch_matmul import QBatchMatMul
from edgec.ops.int8.fixedpoint import f32, mbqm, quantize_multiplier
from edgec.ops.interpret import infer_shapes
from edgec.passes.qdq import float_islands
from tests.c_checks import STRICT, strict_and_sanitized
from tests.helpers import ort_run
from tests.onnx_quant_models import calibration, ort_quantize

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs the TFLite reference")

from tests.tflite_builder import TflBuilder, run_interpreter  # noqa: E402

#: quantization of the single-op models: non-zero zero points on both operands and the output
QA, QB, QY = (0.05, -7), (0.03, 11), (0.12, 4)


def _codes(rng: np.random.Generator, shape: tuple[int, ...], k: int) -> np.ndarray:
    """Input set k: all -128, all 127 (the accumulator extremes), then random codes."""
    if k < 2:
        return np.full(shape, -128 if k == 0 else 127, np.int8)
    return rng.integers(-128, 128, shape).astype(np.int8)


def _single(a_shape: tuple[int, ...], b_shape: tuple[int, ...], out: tuple[int, ...],
            adj_x: bool, adj_y: bool, qy: tuple[float, int] = QY) -> bytes:
    b = TflBuilder()
    x = b.input("a", a_shape, "int8", quant=QA)
    w = b.input("b", b_shape, "int8", quant=QB)
    y = b.tensor("y", out, "int8", quant=qy)
    b.op("BATCH_MATMUL", [x, w], [y], "BatchMatMulOptions", adjX=adj_x, adjY=adj_y)
    return b.build([x, w], [y])


# (a shape, b shape, output shape, adj_x, adj_y)
SINGLE = {
    "rank2": ((3, 4), (4, 5), (3, 5), False, False),
    "batch": ((2, 3, 6), (2, 6, 5), (2, 3, 5), False, False),
    "adj_x": ((2, 6, 3), (2, 6, 5), (2, 3, 5), True, False),
    "adj_y": ((2, 3, 6), (2, 5, 6), (2, 3, 5), False, True),
    "adj_xy": ((2, 6, 3), (2, 5, 6), (2, 3, 5), True, True),
    "broadcast_4d": ((2, 1, 3, 4), (3, 4, 5), (2, 3, 3, 5), False, False),
    "broadcast_rank": ((1, 3, 7), (2, 2, 7, 4), (2, 2, 3, 4), False, False),
    "lhs_rank2": ((3, 4), (2, 5, 4), (2, 3, 5), False, True),
}


@pytest.mark.parametrize("case", list(SINGLE))
def test_single_batch_matmul_bit_exact(case: str) -> None:
    a_shape, b_shape, out, adj_x, adj_y = SINGLE[case]
    data = _single(a_shape, b_shape, out, adj_x, adj_y)
    m = edgec.compile(data, name="bmm")
    assert [n.op for n in m.graph.nodes] == ["QBatchMatMul"]
    rng = np.random.default_rng(len(case))
    for k in range(12):
        feeds = [_codes(rng, a_shape, k), _codes(rng, b_shape, k)]
        (want,) = run_interpreter(data, feeds)
        got, ref = m.run(*feeds), m.reference(*feeds)
        assert got.dtype == want.dtype == np.int8 and got.shape == want.shape == out
        np.testing.assert_array_equal(got, want, err_msg=f"C, input set {k}")
        np.testing.assert_array_equal(ref, want, err_msg=f"numpy, input set {k}")


def test_saturating_output_scale_clamps() -> None:
    """A small output scale drives most outputs to the clamp: still the interpreter's bytes."""
    data = _single((2, 3, 8), (2, 8, 4), (2, 3, 4), False, False, qy=(0.004, -3))
    m = edgec.compile(data, name="bmm")
    rng = np.random.default_rng(3)
    hits = 0
    for k in range(8):
        feeds = [_codes(rng, (2, 3, 8), k), _codes(rng, (2, 8, 4), k)]
        got = m.run(*feeds)
        np.testing.assert_array_equal(got, run_interpreter(data, feeds)[0])
        hits += int(np.sum((got == -128) | (got == 127)))
    assert hits > 0


def _multiplier_witness() -> tuple[tuple[float, float, float], int]:
    """Scales whose multiplier differs when s_a * s_b is taken in double instead of float32,
    and an accumulator (|acc| < 127 * 128) whose output differs with it."""
    rng = np.random.default_rng(0)
    accs = np.arange(-127 * 128 + 1, 127 * 128)
    for _ in range(2000):
        s_a, s_b = (float(np.float32(v)) for v in rng.uniform(0.01, 0.1, 2))
        s_y = float(np.float32(rng.uniform(0.02, 0.2)))
        m32 = quantize_multiplier(f32(np.float32(s_a) * np.float32(s_b)) / s_y)
        m64 = quantize_multiplier(s_a * s_b / s_y)
        y32, y64 = mbqm(accs, *m32), mbqm(accs, *m64)
        hit = accs[(y32 != y64) & (np.abs(y32) < 100)]
        if m32 != m64 and hit.size:
            return (s_a, s_b, s_y), int(hit[0])
    raise AssertionError("no witness found")


def test_multiplier_is_the_float32_product_of_the_input_scales() -> None:
    """TFLite's Prepare multiplies the two input scales in float32 (then divides in double):
    an accumulator on which the double product would round the other way gives the
    interpreter's byte."""
    (s_a, s_b, s_y), acc = _multiplier_witness()
    b = TflBuilder()
    x = b.input("a", (1, 2), "int8", quant=(s_a, 0))
    w = b.input("b", (2, 1), "int8", quant=(s_b, 0))
    y = b.tensor("y", (1, 1), "int8", quant=(s_y, 0))
    b.op("BATCH_MATMUL", [x, w], [y], "BatchMatMulOptions")
    data = b.build([x, w], [y])
    q, r = divmod(acc, 127)  # acc = 127 * q + r * 1
    feeds = [np.array([[127, r]], np.int8), np.array([[q], [1]], np.int8)]
    m = edgec.compile(data, name="bmm")
    want = run_interpreter(data, feeds)[0]
    np.testing.assert_array_equal(m.run(*feeds), want)
    np.testing.assert_array_equal(m.reference(*feeds), want)


def _graph(a: tuple[int, ...], b: tuple[int, ...], **attrs: object) -> Graph:
    g = Graph("g")
    g.tensors["a"] = Tensor("a", a, "int8", quant=Quant.per_tensor(0.05, -7))
    g.tensors["b"] = Tensor("b", b, "int8", quant=Quant.per_tensor(0.03, 11))
    g.tensors["y"] = Tensor("y", (), "int8", quant=Quant.per_tensor(0.1, 0))
    g.inputs, g.outputs = ["a", "b"], ["y"]
    g.nodes.append(Node("QBatchMatMul", "mm", ["a", "b"], ["y"], dict(attrs)))
    return g


@pytest.mark.parametrize("a,b,attrs,msg", [
    ((3, 4), (5, 6), {}, "inner dimensions 4 and 5 differ"),
    ((2, 3, 4), (3, 4, 5), {}, "batch dimensions [2] and [3] do not broadcast"),
    ((4,), (4, 5), {}, "both need rank >= 2"),
    ((1, 120000), (120000, 1), {}, "can overflow the int32 accumulator"),
])
def test_bad_shapes_are_one_line_errors(a: tuple, b: tuple, attrs: dict, msg: str) -> None:
    with pytest.raises(EdgecError) as e:
        infer_shapes(_graph(a, b, **attrs))
    text = str(e.value)
    assert msg in text and "'mm' (QBatchMatMul)" in text and "\n" not in text


def test_macs_and_broadcast_shape() -> None:
    g = _graph((2, 1, 3, 4), (3, 5, 4), adj_y=1)
    infer_shapes(g)
    assert g.shape("y") == (2, 3, 3, 5)
    assert QBatchMatMul().macs(g.nodes[0], g) == 2 * 3 * 3 * 5 * 4


# -- the DSP path on emulated boards ----------------------------------------------------------

def _board_graph() -> Graph:
    """QBatchMatMul of each kernel form: b copied to columns (K = 13, k % 4 = 1), b's columns
    contiguous (adj_y, broadcast, zp_b = 0), a's rows strided (adj_x: generic C only), a clamp
    with a softmax-like zp_a = -128 (K = 16)."""
    g = Graph("bmmboard")
    specs = [((2, 5, 13), (2, 13, 7), (0.05, -7), (0.03, 11), {}),
             ((3, 4, 8), (1, 6, 8), (0.04, 9), (0.02, 0), {"adj_y": 1}),
             ((2, 6, 5), (2, 6, 3), (0.05, 3), (0.05, -20), {"adj_x": 1}),
             ((1, 6, 16), (1, 16, 4), (1 / 256, -128), (0.02, -7),
              {"act_min": -100, "act_max": 90})]
    for i, (a, b, qa, qb, attrs) in enumerate(specs):
        g.tensors[f"a{i}"] = Tensor(f"a{i}", a, "int8", quant=Quant.per_tensor(*qa))
        g.tensors[f"b{i}"] = Tensor(f"b{i}", b, "int8", quant=Quant.per_tensor(*qb))
        g.tensors[f"y{i}"] = Tensor(f"y{i}", (), "int8", quant=Quant.per_tensor(0.06, 2))
        g.inputs += [f"a{i}", f"b{i}"]
        g.outputs.append(f"y{i}")
        g.nodes.append(Node("QBatchMatMul", f"mm{i}", [f"a{i}", f"b{i}"], [f"y{i}"], attrs))
    infer_shapes(g)
    return g


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
@pytest.mark.parametrize("target,cflags,dsp", [("cortex-m4f", (), True),
                                               ("cortex-m4f", ("-DEDGEC_NO_DSP",), False),
                                               ("cortex-m0", (), False)])
def test_kernel_forms_on_board(tmp_path: Path, target: str, cflags: tuple[str, ...],
                               dsp: bool) -> None:
    """The DSP path (SMLAD in the ELF) and the generic C equal the numpy reference on the
    board, extreme codes included."""
    from edgec.api import compile_graph

    m = compile_graph(_board_graph())
    rng = np.random.default_rng(4)
    shapes = [tuple(m.graph.shape(i)) for i in m.graph.inputs]
    feeds = [[_codes(rng, s, k) for s in shapes] for k in range(3)]
    build = build_firmware(m, load_target(target), tmp_path / "fw", inputs=feeds,
                           extra_cflags=cflags)
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=120)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(build.elf)], capture_output=True,
                         text=True, check=True).stdout
    assert ("smlad" in dis) == dsp
    for f, got in zip(feeds, res.outputs, strict=True):
        want = m.reference(*f)
        for w, o in zip(want, got, strict=True):
            assert o.dtype == np.int8 and np.array_equal(o, w)


# -- Keras models converted by TFLite ----------------------------------------------------------

def _keras(name: str) -> tuple[object, dict[str, tuple[int, ...]]]:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow converts the Keras test models")
    L = tf.keras.layers
    rng = np.random.default_rng(5)
    if name == "scores":  # attention scores: Dense(x) · Dense(x)ᵀ, plus scores · Dense(x)
        x = tf.keras.Input((6, 8), batch_size=1, name="x")
        q, k, v = L.Dense(5)(x), L.Dense(5)(x), L.Dense(4)(x)
        s = L.Lambda(lambda t: tf.matmul(t[0], t[1], transpose_b=True))([q, k])
        y = L.Lambda(lambda t: tf.matmul(t[0], t[1]))([s, v])
        model = tf.keras.Model(x, y)
        for layer in model.layers:  # random biases (Keras starts them at zero)
            ws = layer.get_weights()
            if ws:
                layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(np.float32)
                                   for w in ws])
        return model, {"x": (1, 6, 8)}
    a = tf.keras.Input((2, 4, 6), batch_size=1, name="a")
    b = tf.keras.Input((6, 3), batch_size=1, name="b")
    y = L.Lambda(lambda t: tf.matmul(t[0], t[1][:, None]))([a, b])  # b broadcast over heads
    return tf.keras.Model([a, b], y), {"a": (1, 2, 4, 6), "b": (1, 6, 3)}


def _convert(name: str) -> bytes:
    from tests.tflite_int8 import convert_int8

    model, shapes = _keras(name)
    return convert_int8(model, seed=0, n=48, spread=1.5, by_name=shapes)


@pytest.fixture(scope="module")
def converted() -> Callable[[str], bytes]:
    cache: dict[str, bytes] = {}

    def get(name: str) -> bytes:
        if name not in cache:
            cache[name] = _convert(name)
        return cache[name]

    return get


def _batch_matmuls(data: bytes) -> list[dict]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    return [o for o in it._get_ops_details() if o["op_name"] == "BATCH_MATMUL"]


@pytest.mark.parametrize("name,count", [("scores", 2), ("broadcast", 1)])
def test_keras_batch_matmul_equals_tflite(converted: Callable[[str], bytes], name: str,
                                          count: int) -> None:
    data = converted(name)
    ops = _batch_matmuls(data)
    assert len(ops) == count
    for o in ops:  # the converter really wrote int8 BATCH_MATMUL
        assert o["operand_types"] == [np.int8, np.int8] and o["result_types"] == [np.int8]
    m = edgec.compile(data, name=name)
    assert [n.op for n in m.graph.nodes].count("QBatchMatMul") == count
    shapes = [p.shape for p in m.cmodel.inputs]
    rng = np.random.default_rng(11)
    for k in range(120):
        feeds = [_codes(rng, tuple(s), k) for s in shapes]
        want = run_interpreter(data, feeds)[0]
        np.testing.assert_array_equal(m.run(*feeds), want, err_msg=f"C, input set {k}")
        np.testing.assert_array_equal(m.reference(*feeds), want, err_msg=f"numpy, set {k}")


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_keras_scores_cortex_m4f_equals_host(converted: Callable[[str], bytes],
                                             tmp_path: Path) -> None:
    m = edgec.compile(converted("scores"), name="scores")
    rng = np.random.default_rng(2)
    xs = [_codes(rng, tuple(m.cmodel.inputs[0].shape), k) for k in (0, 2, 3)]
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs])
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=120)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        want = m.run(x)
        assert got.dtype == want.dtype == np.int8 and got.tobytes() == want.tobytes()


# -- ONNX QDQ (onnxruntime quantize_static) -------------------------------------------------------

def _attention() -> onnx.ModelProto:
    """Two-head self-attention on 1 x 6 x 8 (q/k/v projections, Q·Kᵀ scaled, softmax,
    scores·V, output projection) next to the Gram matrix x·xᵀ: 1 x 6 x 14."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            def heads(z: torch.Tensor) -> torch.Tensor:
                return z.reshape(1, 6, 2, 4).transpose(1, 2)

            q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
            s = torch.softmax(q @ k.transpose(-1, -2) * 0.5, dim=-1)
            o = (s @ v).transpose(1, 2).reshape(1, 6, 8)
            return torch.cat([self.o(o), x @ x.transpose(-1, -2)], dim=-1)

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(Attention().eval(), (torch.randn(1, 6, 8),), buf, input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module")
def attention() -> onnx.ModelProto:
    return _attention()


@pytest.fixture(scope="module")
def quantized(attention: onnx.ModelProto, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Path]:
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's advice
    tmp = tmp_path_factory.mktemp("ortbmm")
    return {act: ort_quantize(attention, tmp / f"att_{act}.onnx", "qdq", act == "int8", act)
            for act in ("int8", "uint8")}


def _runtime_matmuls(proto: onnx.ModelProto) -> int:
    consts = {i.name for i in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    made = {o: n for n in proto.graph.node for o in n.output}

    def dq_of_runtime(name: str) -> bool:
        n = made.get(name)
        return n is not None and n.op_type == "DequantizeLinear" and n.input[0] not in consts

    return sum(1 for n in proto.graph.node if n.op_type == "MatMul"
               and all(dq_of_runtime(i) for i in n.input))


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_onnx_attention_matmuls_are_int8_within_two_lsb(quantized: dict, attention: onnx.ModelProto,
                                                        act: str) -> None:
    proto = onnx.load(str(quantized[act]))
    # onnxruntime quantized both run-time operands of Q·Kᵀ, scores·V and x·xᵀ
    assert _runtime_matmuls(proto) == 3
    m = edgec.compile(str(quantized[act]))
    ops = [n.op for n in m.graph.nodes]
    assert ops.count("QBatchMatMul") == 3 and "MatMul" not in ops, ops
    assert not any(i.endswith("(MatMul)") for i in float_islands(m.graph))
    # onnxruntime's softmax output scale is 1/255: TFLite's int8 softmax (1/256) + Requantize
    assert float_islands(m.graph) == []
    sm = next(n for n in m.graph.nodes if n.op == "QSoftmax")
    assert m.graph.quant(sm.outputs[0]).scalar() == (float(np.float32(1 / 256)), -128)
    assert any(n.op == "Requantize" and n.inputs[0] == sm.outputs[0] for n in m.graph.nodes)
    deq = [n for n in m.graph.nodes if n.op == "Dequantize"][-1]
    q = m.graph.quant(deq.inputs[0])
    assert q is not None
    lsb, worst, ones, total = float(q.scale[0]), 0.0, 0, 0
    for x in calibration(attention, 60, seed=3):
        got = m.run(x)
        np.testing.assert_array_equal(got, m.reference(x))
        diff = np.abs(got - ort_run(proto, {"x": x})[0]) / lsb
        worst = max(worst, float(diff.max()))
        ones += int(np.sum(diff > 0.5))
        total += diff.size
    assert worst <= 2.0 + 1e-3, worst
    assert ones / total <= 0.25, ones / total


def test_onnx_attention_strict_c_and_sanitizers(quantized: dict, attention: onnx.ModelProto,
                                                tmp_path: Path) -> None:
    m = edgec.compile(str(quantized["int8"]), name="att")
    x = calibration(attention, 1, seed=9)[0]
    (out,) = strict_and_sanitized(m, tmp_path, [x])
    np.testing.assert_array_equal(out, m.run(x))
    arm = shutil.which("arm-none-eabi-gcc")
    if arm is not None:
        proc = subprocess.run([arm, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                               "-mfpu=fpv4-sp-d16", *STRICT, "-O2", "-c", "att.c", "-o", "m4.o"],
                              cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]


def _qdq_matmul(a_shape: list[int], b_shape: list[int], zp: int, relu: bool
                ) -> onnx.ModelProto:
    """DequantizeLinear(a), DequantizeLinear(b) → MatMul (→ Relu) → QuantizeLinear →
    DequantizeLinear, both operands graph inputs (run-time)."""
    from onnx import TensorProto, helper

    nodes, inits = [], []
    for name in ("a", "b"):
        inits += [helper.make_tensor(f"{name}_s", TensorProto.FLOAT, [], [0.01]),
                  helper.make_tensor(f"{name}_z", TensorProto.INT8, [], [zp])]
        nodes += [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"],
                                   [f"{name}_q"]),
                  helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                                   [f"{name}_d"])]
    inits += [helper.make_tensor("y_s", TensorProto.FLOAT, [], [0.002]),
              helper.make_tensor("y_z", TensorProto.INT8, [], [-20])]
    nodes.append(helper.make_node("MatMul", ["a_d", "b_d"], ["p"], name="mm"))
    if relu:
        nodes.append(helper.make_node("Relu", ["p"], ["r"], name="relu"))
    nodes += [helper.make_node("QuantizeLinear", ["r" if relu else "p", "y_s", "y_z"], ["y_q"]),
              helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"])]
    out = [*a_shape[:-1], b_shape[-1]]
    graph = helper.make_graph(
        nodes, "mm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape),
                      helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_matmul_relu_becomes_the_clamp() -> None:
    """A Relu after a run-time MatMul is the QBatchMatMul's clamp (act_min = the output zero
    point): within 1 LSB of onnxruntime, nothing negative."""
    model = _qdq_matmul([2, 3, 5], [2, 5, 4], 3, relu=True)
    m = edgec.compile(model)
    (node,) = [n for n in m.graph.nodes if n.op == "QBatchMatMul"]
    assert node.attrs["act_min"] == -20 and float_islands(m.graph) == []
    rng = np.random.default_rng(6)
    for _ in range(20):
        feeds = {"a": rng.uniform(-1, 1, (2, 3, 5)).astype(np.float32),
                 "b": rng.uniform(-1, 1, (2, 5, 4)).astype(np.float32)}
        got = m.run(feeds)
        np.testing.assert_array_equal(got, m.reference(feeds))
        assert got.min() >= 0.0
        np.testing.assert_allclose(got, ort_run(model, feeds)[0], rtol=0, atol=0.002 + 1e-6)


def test_matmul_accumulator_overflow_stays_float() -> None:
    """A run-time MatMul whose int32 accumulator could overflow keeps its float island (and the
    lowering leaves no half-built node behind)."""
    m = edgec.compile(_qdq_matmul([1, 40000], [40000, 1], -128, relu=False))
    assert float_islands(m.graph) == ["mm (MatMul)"]
    assert "QBatchMatMul" not in [n.op for n in m.graph.nodes]


# -- edgec's quantizer ----------------------------------------------------------------------

def test_quantizer_lowers_runtime_matmul(attention: onnx.ModelProto) -> None:
    cal = np.stack(calibration(attention, 24, seed=1))
    m = edgec.compile(attention, quantize="int8", calibration={"x": cal})
    ops = [n.op for n in m.graph.nodes]
    assert ops.count("QBatchMatMul") == 3 and "MatMul" not in ops, ops
    assert float_islands(m.graph) == []
    x = calibration(attention, 1, seed=4)[0]
    np.testing.assert_array_equal(m.run(x), m.reference(x))


def test_quantized_attention_written_as_tflite_runs_to_the_same_bytes(
        attention: onnx.ModelProto) -> None:
    """edgec quantize -o model.tflite: each QBatchMatMul is a BATCH_MATMUL (adjX/adjY as the
    node's), and the TFLite interpreter runs the file to the same bytes as edgec's C."""
    from edgec.api import compile_graph, load_graph
    from edgec.quantize import quantize_graph
    from edgec.quantize.tflite_writer import to_tflite

    cal = np.stack(calibration(attention, 24, seed=1))
    q = quantize_graph(load_graph(attention), {"x": cal})
    assert [n.op for n in q.lowered.nodes].count("QBatchMatMul") == 3
    data = to_tflite(q.lowered)
    m = compile_graph(q.qdq)
    back = edgec.compile(data)
    assert [n.op for n in back.graph.nodes].count("QBatchMatMul") == 3
    for x in calibration(attention, 20, seed=12):
        c = m.run(x)
        np.testing.assert_array_equal(run_interpreter(data, [x])[0].reshape(c.shape), c)
        np.testing.assert_array_equal(back.run(x).reshape(c.shape), c)


@pytest.mark.parametrize("a,b,attrs", [
    ((2, 3, 5), (2, 5, 4), {}),
    ((2, 5, 3), (2, 5, 4), {"adj_x": 1}),
    ((2, 3, 5), (2, 4, 5), {"adj_y": 1}),
    ((3, 5), (2, 4, 5), {"adj_y": 1, "act_min": 0}),  # a clamp: RELU after BATCH_MATMUL
])
def test_batch_matmul_written_as_tflite(a: tuple[int, ...], b: tuple[int, ...],
                                        attrs: dict) -> None:
    """QBatchMatMul → BATCH_MATMUL with its adjX/adjY; the clamp (BATCH_MATMUL has no fused
    activation) a RELU after it: the interpreter's codes equal edgec's reference."""
    from edgec.quantize.tflite_writer import to_tflite

    g = _graph(a, b, **attrs)
    infer_shapes(g)
    data = to_tflite(g)
    rng = np.random.default_rng(5)
    node = g.nodes[0]
    for _ in range(5):
        xa = rng.integers(-128, 128, a, dtype=np.int8)
        xb = rng.integers(-128, 128, b, dtype=np.int8)
        want = QBatchMatMul().reference(node, [xa, xb], g)[0]
        np.testing.assert_array_equal(run_interpreter(data, [xa, xb])[0], want)
    if "act_min" in attrs:
        assert int(want.min()) == 0  # the clamp took effect


def test_onnx_attention_transposes_fold_into_adj_y(quantized: dict) -> None:
    """Kᵀ, V's head split and xᵀ reach the kernels as adj_y = 1 (their columns read in place,
    no transposed copy in the scratch); the outputs are the reference's (tests above)."""
    m = edgec.compile(str(quantized["int8"]))
    mms = [n for n in m.graph.nodes if n.op == "QBatchMatMul"]
    assert len(mms) == 3 and all(n.attr("adj_y", 0) == 1 for n in mms)


@pytest.mark.parametrize("shared", [False, True])
def test_transpose_before_second_operand_becomes_adj_y(shared: bool) -> None:
    """b → Transpose(0, 2, 1) → QBatchMatMul: the matmul reads b with adj_y = 1 and the Transpose
    goes; when the transposed tensor is also an output, the Transpose stays for it."""
    from edgec.api import compile_graph

    g = Graph("fold")
    q = Quant.per_tensor(0.03, 11)
    g.tensors["a"] = Tensor("a", (2, 3, 5), "int8", quant=Quant.per_tensor(0.05, -7))
    g.tensors["b"] = Tensor("b", (2, 4, 5), "int8", quant=q)
    g.tensors["bt"] = Tensor("bt", (), "int8", quant=q)
    g.tensors["y"] = Tensor("y", (), "int8", quant=Quant.per_tensor(0.1, 0))
    g.inputs, g.outputs = ["a", "b"], ["y", "bt"] if shared else ["y"]
    g.nodes += [Node("Transpose", "t", ["b"], ["bt"], {"perm": [0, 2, 1]}),
                Node("QBatchMatMul", "mm", ["a", "bt"], ["y"], {})]
    infer_shapes(g)
    ref_graph = g.copy()
    m = compile_graph(g)
    (mm,) = [n for n in m.graph.nodes if n.op == "QBatchMatMul"]
    assert mm.attr("adj_y", 0) == 1
    assert sum(n.op == "Transpose" for n in m.graph.nodes) == (1 if shared else 0)
    rng = np.random.default_rng(8)
    for _ in range(5):
        a = rng.integers(-128, 128, (2, 3, 5), dtype=np.int8)
        b = rng.integers(-128, 128, (2, 4, 5), dtype=np.int8)
        want = QBatchMatMul().reference(ref_graph.nodes[1], [a, b.transpose(0, 2, 1)],
                                        ref_graph)[0]
        got = m.run(a, b)
        got = got[0] if shared else got
        np.testing.assert_array_equal(got, want)
