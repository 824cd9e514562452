"""The TFLite front-end: the flatbuffer reader, float and int8 translation checked against the
TFLite interpreter (ai-edge-litert, reference kernels), WHILE loops, bad input.

Single-op models are written directly as flatbuffers (tests/tflite_builder.py, no TensorFlow);
Keras-converted models are in tests/test_keras.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="the TFLite tests need ai-edge-litert "
                    "(pip install 'edgec[tflite]')")

from edgec.errors import EdgecError  # noqa: E402
from edgec.frontend.tflite.reader import read_tflite  # noqa: E402
from tests.tflite_builder import TflBuilder  # noqa: E402


def _fc_model(act: int = 0) -> bytes:
    b = TflBuilder()
    x = b.input("x", (1, 4), signature=(-1, 4))
    w = b.const("w", np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
    bias = b.const("b", np.array([1.0, -1.0, 0.5], np.float32))
    y = b.tensor("y", (1, 3))
    b.op("FULLY_CONNECTED", [x, w, bias], [y], "FullyConnectedOptions",
         fusedActivationFunction=act)
    return b.build([x], [y])


# -- reader ------------------------------------------------------------------------------------

def test_reader_tensors_operators_options() -> None:
    m = read_tflite(_fc_model(act=1))
    sg = m.subgraphs[0]
    assert len(m.subgraphs) == 1 and sg.inputs == [0] and sg.outputs == [3]
    x, w, bias, y = sg.tensors
    assert (x.name, x.type, x.shape, x.signature, x.data) == ("x", "FLOAT32", (1, 4), (-1, 4), None)
    assert x.dynamic_dims == [0]
    assert w.dtype == "float32" and w.data is not None and w.data.shape == (3, 4)
    np.testing.assert_array_equal(w.data, np.arange(12, dtype=np.float32).reshape(3, 4) / 10)
    np.testing.assert_array_equal(bias.data, [1.0, -1.0, 0.5])
    assert y.data is None and y.quant is None
    (op,) = sg.operators
    assert (op.op, op.inputs, op.outputs) == ("FULLY_CONNECTED", [0, 1, 2], [3])
    assert op.options["fusedActivationFunction"] == 1
    assert op.options["keepNumDims"] is False


def test_reader_quantization_and_custom_op() -> None:
    b = TflBuilder()
    x = b.input("x", (1, 2, 2, 3), "int8", quant=(0.5, -3))
    w = b.const("w", np.ones((4, 1, 1, 3), np.int8), quant=([0.1, 0.2, 0.3, 0.4], [0] * 4, 0))
    y = b.tensor("y", (1, 2, 2, 4), "int8", quant=(0.25, 7))
    b.op("CUSTOM", [x, w], [y], custom="MyOp")
    sg = read_tflite(b.build([x], [y])).subgraphs[0]
    assert sg.tensors[0].quant is not None
    np.testing.assert_allclose(sg.tensors[0].quant.scale, [0.5])
    assert sg.tensors[0].quant.zero_point.tolist() == [-3]
    wq = sg.tensors[1].quant
    assert wq is not None and wq.axis == 0 and wq.scale.shape == (4,)
    assert sg.tensors[1].data.dtype == np.int8
    assert (sg.operators[0].op, sg.operators[0].custom_code) == ("CUSTOM", "MyOp")


@pytest.mark.parametrize("cut", [0, 7, 40, 200, -30])
def test_reader_truncated_or_corrupt(cut: int) -> None:
    data = _fc_model()
    bad = data[:cut] if cut >= 0 else data[:cut]
    with pytest.raises(EdgecError) as exc:
        read_tflite(bad, source="m.tflite")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("m.tflite: ")


def test_reader_garbage_after_identifier() -> None:
    data = bytearray(_fc_model())
    rng = np.random.default_rng(0)
    for _ in range(20):  # random bytes everywhere but the identifier: never a traceback
        junk = bytearray(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
        junk[4:8] = b"TFL3"
        try:
            read_tflite(bytes(junk), source="junk.tflite")
        except EdgecError as exc:
            assert "\n" not in str(exc)


def test_reader_missing_file(tmp_path) -> None:
    with pytest.raises(EdgecError, match="no such file"):
        read_tflite(tmp_path / "none.tflite")
