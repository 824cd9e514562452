"""int8 in the IR and the C back-end: quantization carried through data movement, the byte-planned
arena, int8 ports (header macros, the ctypes runner), parameter counts, determinism, and clear
errors for what is not supported."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgec.api import compile_graph
from edgec.backend.planner import ALIGN, plan_memory, tensor_bytes
from edgec.errors import EdgecError, UnsupportedOpError
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.interpret import infer_shapes, interpret
from tests.int8_graphs import Builder, kitchen_sink

ROOT = Path(__file__).resolve().parent.parent


def _lut_chain(n: int, length: int = 37) -> Graph:
    b = Builder("chain", seed=n)
    x = b.input("x", (1, length))
    for _ in range(n):
        x = b.op("QLut", [x], b.g.quant(x), table=np.arange(-128, 128)[::-1].astype(np.int8))
        x = b.op("Requantize", [x])
    return b.finish([x])


def test_header_states_int8_ports() -> None:
    m = compile_graph(kitchen_sink(0))
    h = m.c_header
    q = m.graph.quant("image")
    assert q is not None
    assert "#include <stdint.h>" in h
    assert f"#define KITCHEN_IN_IMAGE_ZERO_POINT ({int(q.zero_point[0])})" in h
    assert "#define KITCHEN_IN_IMAGE_SCALE " in h and "#define KITCHEN_IN_VECTOR_SCALE" not in h
    assert ("int kitchen_run(const int8_t *EDGEC_RESTRICT in_image, "
            "const float *EDGEC_RESTRICT in_vector, "
            "int8_t *EDGEC_RESTRICT out_qsoftmax_20, float *EDGEC_RESTRICT out_dequantize_21") in h
    assert "Inputs (row-major / C order)" in h and "Inputs (float32" not in h


def test_host_runner_int8_ports() -> None:
    g = _lut_chain(1)
    m = compile_graph(g)
    x = np.arange(-18, 19).reshape(1, 37)
    y = m.run(x)  # any integer array with int8 values is taken
    assert y.dtype == np.int8 and np.array_equal(y, interpret(g, {"x": x})[g.outputs[0]])
    with pytest.raises(ValueError, match="int8 codes"):
        m.run(x.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[-128, 127\]"):
        m.run(x + 200)


def test_arena_is_planned_in_bytes() -> None:
    g = _lut_chain(3, length=37)
    plan = plan_memory(g)
    assert all(off % ALIGN == 0 for off in plan.offsets.values())
    assert tensor_bytes(g, g.nodes[0].outputs[0]) == 37
    # QLut and Requantize run in place: one 40-byte (37 rounded up) buffer for the chain
    assert plan.arena_bytes == 40 == plan.lower_bound_bytes
    m = compile_graph(g)
    assert m.report()["arena_bytes"] == 40
    assert "static float chain_arena[10]" in m.c_source  # the arena stays float-aligned


def test_int8_arena_quarter_of_float() -> None:
    """The same chain of 1x256 tensors: int8 buffers take a quarter of float buffers, plus the
    fully connected DSP kernel's int16 copy of its input row (2 * 256 bytes of scratch)."""
    b = Builder("q", seed=0)
    x = b.input("x", (1, 256))
    w = b.weights((256, 256), 0)
    y = b.op("QFullyConnected", [b.op("QFullyConnected", [x, w]), w])
    q_plan = plan_memory(b.finish([y]))
    f = Graph("f")
    f.tensors["x"] = Tensor("x", (1, 256))
    f.inputs = ["x"]
    wf = f.add_const("w", np.ones((256, 256), np.float32))
    f.nodes = [Node("MatMul", "a", ["x", wf], ["h"]), Node("MatMul", "b", ["h", wf], ["y"])]
    f.outputs = ["y"]
    infer_shapes(f)
    assert 4 * (q_plan.arena_bytes - 2 * 256) == plan_memory(f).arena_bytes == 1024


def test_report_counts_int8_parameters() -> None:
    b = Builder("p", seed=0)
    x = b.input("x", (1, 10))
    w = b.weights((4, 10), 0)
    m = compile_graph(b.finish([b.op("QFullyConnected", [x, w, b.bias(4, x, w)])]))
    rep = m.report()
    assert rep["params"] == 4 * 10 + 4  # weights + bias (multiplier tables are not parameters)
    # int8 weights (k padded from 10 to 12 for the DSP kernel), int32 bias and multipliers,
    # int8 right shifts
    assert rep["weight_bytes"] == 40 + 4 * 2 + 16 + 16 + 4


def test_quant_follows_per_channel_axis() -> None:
    """Transposed / reshaped constant weights keep their per-channel axis where it went."""
    g = Graph("w")
    w = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    g.add_const("w", w, Quant(np.ones(4, np.float32), np.zeros(4, np.int32), 2))
    g.add_const("shape", np.array([6, 4], np.int64))
    g.nodes = [Node("Transpose", "t", ["w"], ["wt"], {"perm": [2, 0, 1]}),
               Node("Reshape", "r", ["w", "shape"], ["wr"], {}),
               Node("Reshape", "r2", ["wt", "shape"], ["wr2"], {})]
    g.outputs = ["wt", "wr", "wr2"]
    infer_shapes(g)
    assert g.quant("wt").axis == 0 and g.quant("wr").axis == 1
    assert g.quant("wr2") is None  # channels no longer a dimension of their own


def test_deterministic_across_processes(tmp_path: Path) -> None:
    child = (
        "import hashlib, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from edgec.api import compile_graph\n"
        "from tests.int8_graphs import kitchen_sink\n"
        "m = compile_graph(kitchen_sink(0))\n"
        "print(hashlib.sha256((m.c_header + m.c_source).encode()).hexdigest())\n"
    )
    m = compile_graph(kitchen_sink(0))
    here = hashlib.sha256((m.c_header + m.c_source).encode()).hexdigest()
    assert here == hashlib.sha256((compile_graph(kitchen_sink(0)).c_header
                                   + compile_graph(kitchen_sink(0)).c_source).encode()).hexdigest()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", child, str(ROOT)], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == here


# -- errors ---------------------------------------------------------------------------------

def test_float_op_refuses_int8() -> None:
    b = Builder("e", seed=0)
    x = b.input("x", (1, 4))
    with pytest.raises(UnsupportedOpError, match=r"node 'n1_Relu' \(Relu\): int8 tensor 'x'.*"
                                                 r"QFullyConnected"):
        b.op("Relu", [x], None)


def test_concat_of_differently_quantized_int8() -> None:
    b = Builder("e", seed=0)
    x, y = b.input("x", (1, 4)), b.input("y", (1, 4))
    with pytest.raises(UnsupportedOpError, match="QConcat requantizes"):
        b.op("Concat", [x, y], None, axis=1)


@pytest.mark.parametrize("what", ["no_quant", "per_channel"])
def test_int8_port_needs_one_scale(what: str) -> None:
    g = Graph("p")
    q = None if what == "no_quant" else Quant([0.1, 0.2], [0, 0], 1)
    g.tensors["x"] = Tensor("x", (1, 2), "int8", quant=q)
    g.inputs = ["x"]
    g.tensors["y"] = Tensor("y", (), "int8", quant=Quant.per_tensor(0.1))
    g.nodes = [Node("QLut", "l", ["x"], ["y"], {"table": np.zeros(256, np.int8)})]
    g.outputs = ["y"]
    infer_shapes(g)
    with pytest.raises(EdgecError, match="int8 model port 'x' has"):
        compile_graph(g)


def test_int8_state_is_refused() -> None:
    with pytest.raises(EdgecError, match="state port 'x' is int8"):
        compile_graph(_lut_chain(1), state=[("x", _lut_chain(1).outputs[0])])


@pytest.mark.parametrize("case,match", [
    ("asymmetric_weights", "non-zero zero points"),
    ("missing_quant", "has no quantization"),
    ("bad_axis", "per-channel quantization must have one scale per output channel"),
    ("softmax_out", "scale 1/256, zero point -128"),
    ("bias_dtype", "must be int32"),
    ("act_range", "act_min/act_max"),
    ("pool_quant", "share scale and zero point"),
])
def test_int8_op_errors(case: str, match: str) -> None:
    b = Builder("e", seed=0)
    x = b.input("x", (1, 4, 4, 2))
    with pytest.raises(EdgecError, match=match):
        if case == "asymmetric_weights":
            w = b.g.add_const("w", np.ones((3, 1, 1, 2), np.int8), Quant.per_tensor(0.1, 1))
            b.op("QConv2D", [x, w])
        elif case == "missing_quant":
            w = b.g.add_const("w", np.ones((3, 1, 1, 2), np.int8))
            b.op("QConv2D", [x, w])
        elif case == "bad_axis":
            w = b.g.add_const("w", np.ones((3, 1, 1, 2), np.int8),
                              Quant(np.ones(2, np.float32), np.zeros(2, np.int32), 3))
            b.op("QConv2D", [x, w])
        elif case == "softmax_out":
            b.op("QSoftmax", [x], Quant.per_tensor(0.1, 0))
        elif case == "bias_dtype":
            w = b.weights((3, 1, 1, 2), 0)
            b.op("QConv2D", [x, w, b.g.add_const("b", np.ones(3, np.float32))])
        elif case == "act_range":
            b.op("QMaxPool2D", [x], b.g.quant(x), kernel=[2, 2], act_min=5, act_max=1)
        elif case == "pool_quant":
            b.op("QMaxPool2D", [x], Quant.per_tensor(0.5, 0), kernel=[2, 2])


def test_bad_rounding_option() -> None:
    with pytest.raises(EdgecError, match="int8_rounding='nearest'"):
        kitchen_sink(0, {"int8_rounding": "nearest"})


def test_quant_validation() -> None:
    with pytest.raises(ValueError, match="equal length"):
        Quant([0.1, 0.2], [0], 0)
    with pytest.raises(ValueError, match="channel axis"):
        Quant([0.1, 0.2], [0, 0])


def test_non_int8_integer_ports_stay_float() -> None:
    """A constant integer output (here a Shape) is still a float port, as before int8 ports."""
    g = Graph("shape_out")
    g.tensors["x"] = Tensor("x", (2, 3))
    g.inputs = ["x"]
    g.nodes = [Node("Shape", "s", ["x"], ["s"], {}), Node("Relu", "r", ["x"], ["y"], {})]
    g.outputs = ["s", "y"]
    infer_shapes(g)
    m = compile_graph(g)
    assert "float *EDGEC_RESTRICT out_s" in m.c_header
    s, _ = m.run(np.ones((2, 3), np.float32))
    assert s.dtype == np.float32 and s.tolist() == [2.0, 3.0]
