"""Keras Embedding with an int32 token-id input: TFLite writes LESS, ADD, SELECT (negative ids
wrap) and a GATHER by those int32 indices at run time (``RuntimeGather``). The int32 input is a
C port of its own (``const int32_t *``), through the host runner, ``edgec verify`` with an
``.npz`` and the firmware's embedded vectors. Embedding → GlobalAveragePooling1D → Dense, float
and full-integer int8, against the TFLite interpreter (float within tolerance, int8 byte for
byte) on the host and the emulated Cortex-M4F; out-of-range ids (an error in TFLite) read the
nearest row, checked under ASan + UBSan."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgec
from edgec.api import compile_graph
from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Quant, Tensor
from edgec.mcu.toolchain import have_tool
from edgec.ops.interpret import infer_shapes, interpret

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert runs the TFLite reference")

from tests.tflite_builder import TflBuilder, run_interpreter  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VOCAB, SEQ, DIM = 50, 10, 8
RTOL, ATOL = 1e-4, 1e-5
KINDS = ["float", "int8-io", "float-io"]


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow", reason="the Keras tests need TensorFlow")


@pytest.fixture(scope="module")
def blobs(tf: Any) -> dict[str, bytes]:
    """Embedding(50, 8) → GlobalAveragePooling1D → Dense(4) on 10 int32 ids, converted float,
    int8 with int8 output, and int8 with float output."""
    from edgec.frontend.keras import _quiet

    L = tf.keras.layers  # noqa: N806 - Keras' own spelling
    tf.keras.utils.set_random_seed(3)
    ids = tf.keras.Input((SEQ,), batch_size=1, dtype="int32")
    x = L.GlobalAveragePooling1D()(L.Embedding(VOCAB, DIM)(ids))
    model = tf.keras.Model(ids, L.Dense(4)(L.Dense(6, activation="relu")(x)))
    emb = model.layers[1].embeddings
    emb.assign(np.random.default_rng(3).uniform(-1, 1, emb.shape).astype(np.float32))

    def rep() -> Any:
        r = np.random.default_rng(0)
        for _ in range(64):
            yield [r.integers(0, VOCAB, (1, SEQ)).astype(np.int32)]

    out = {}
    for kind in KINDS:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind != "float":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = rep
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if kind == "int8-io":
                conv.inference_output_type = tf.int8
        with _quiet():
            out[kind] = bytes(conv.convert())
    return out


def _ops(data: bytes) -> list[str]:
    from edgec.frontend.tflite.reader import read_tflite

    return [op.op for op in read_tflite(data).subgraphs[0].operators]


def _ids(rng: np.random.Generator, lo: int = -VOCAB, hi: int = VOCAB) -> np.ndarray:
    """Token ids, negative ones included (the model wraps -k to VOCAB - k, as Keras does)."""
    return rng.integers(lo, hi, (1, SEQ)).astype(np.int32)


def _assert_matches(kind: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    if kind == "int8-io":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_equals_the_interpreter(blobs: dict[str, bytes], kind: str) -> None:
    data = blobs[kind]
    assert "GATHER" in _ops(data) and "SELECT" in "".join(_ops(data))
    m = edgec.compile(data, name="emb")
    (port,) = m.cmodel.inputs
    assert (port.dtype, port.ctype, port.index_bound) == ("int32", "int32_t", VOCAB)
    assert "RuntimeGather" in {n.op for n in m.graph.nodes}
    if kind != "float":
        assert {"QMean", "QFullyConnected"} <= {n.op for n in m.graph.nodes}
    rng = np.random.default_rng(7)
    for _ in range(100):
        x = _ids(rng)
        _assert_matches(kind, m.run(x), run_interpreter(data, [x])[0])
    x = _ids(rng)
    ref = interpret(m.graph, {port.name: x})[m.output_names[0]]
    _assert_matches(kind, ref, run_interpreter(data, [x])[0])


def _wrapped(x: np.ndarray) -> np.ndarray:
    """What edgec reads for ids: the model's own wrap of negatives, then the clamp."""
    return np.clip(np.where(x < 0, x + VOCAB, x), 0, VOCAB - 1).astype(np.int32)


def test_out_of_range_ids_read_the_nearest_row(blobs: dict[str, bytes]) -> None:
    """TFLite stops with "gather index out of bounds"; edgec reads row 0 below the table and
    the last row past it (documented in docs/int8.md)."""
    data = blobs["int8-io"]
    m = edgec.compile(data, name="emb")
    x = np.array([[VOCAB, VOCAB + 7, 2**31 - 1, -(2**31), -VOCAB - 1, -1, 0, 3, VOCAB - 1,
                   1000]], np.int32)
    with pytest.raises(RuntimeError, match="out of bounds"):
        run_interpreter(data, [x])
    np.testing.assert_array_equal(m.run(x), run_interpreter(data, [_wrapped(x)])[0])


def test_header_prototype_and_host_runner(blobs: dict[str, bytes], tmp_path: Path) -> None:
    m = edgec.compile(blobs["int8-io"], name="emb")
    h = m.cmodel.header
    assert "#include <stdint.h>" in h
    port = m.cmodel.inputs[0]
    assert f"const int32_t *EDGEC_RESTRICT {port.c}" in h
    assert f"{port.c}: [1, {SEQ}] ({SEQ} int32 indices into {VOCAB} rows" in h
    with pytest.raises(ValueError, match="int32 index port takes integers"):
        m.run(np.zeros((1, SEQ), np.float32))


def test_verify_with_an_npz_of_ids(blobs: dict[str, bytes], tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    """``edgec verify`` (the interpreter as reference): random ids inside the table, and an
    .npz of ids; ids past the table (the interpreter's error) and float ids are one-line
    errors."""
    from edgec.cli import main

    model = tmp_path / "emb.tflite"
    model.write_bytes(blobs["int8-io"])
    assert main(["verify", str(model), "--n", "5"]) == 0
    assert "5/5" in capsys.readouterr().out
    rng = np.random.default_rng(2)
    ids = np.stack([_wrapped(_ids(rng)) for _ in range(6)])
    name = edgec.compile(blobs["int8-io"]).cmodel.inputs[0].name
    np.savez(tmp_path / "ids.npz", **{name: ids})
    assert main(["verify", str(model), "--inputs", str(tmp_path / "ids.npz")]) == 0
    assert "6/6" in capsys.readouterr().out
    np.savez(tmp_path / "far.npz", **{name: ids + VOCAB})  # TFLite's error, in one line
    assert main(["verify", str(model), "--inputs", str(tmp_path / "far.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "gather index out of bounds" in err and "\n" not in err, err
    np.savez(tmp_path / "bad.npz", **{name: ids.astype(np.float32)})
    assert main(["verify", str(model), "--inputs", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "int32 index port" in err and "\n" not in err


def test_strict_c_and_sanitizers_with_out_of_range_ids(blobs: dict[str, bytes],
                                                       tmp_path: Path) -> None:
    """Strict C99 flags; ASan + UBSan (every buffer malloc'd at its size, a caller arena; also
    float-cast-overflow) on ids far outside the table: no read outside it, the model's int32
    index arithmetic (id + n near 2^31) wraps without undefined behaviour, outputs equal the
    numpy reference."""
    import shutil
    import subprocess

    from tests.c_checks import SANITIZE, STRICT, typed_driver

    for kind in ("float", "int8-io"):
        d = tmp_path / kind
        m = edgec.compile(blobs[kind], name="emb")
        m.write(d)
        (d / "driver.c").write_text(typed_driver(m))
        for flags in ([*STRICT, "-O2", "-c", "emb.c", "-o", "strict.o"],
                      [*STRICT, "-O1", *SANITIZE, "-fsanitize=float-cast-overflow",
                       "-DEMB_NO_STATIC_ARENA", "driver.c", "emb.c", "-lm", "-o", "driver"]):
            proc = subprocess.run(["gcc", *flags], cwd=d, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-3000:]
        rng = np.random.default_rng(5)
        edge = np.array([[2**31 - 1, 2**31 - VOCAB, 2**31 - VOCAB - 1, -(2**31), -(2**31) + 1,
                          -VOCAB, -VOCAB - 1, VOCAB, -1, 0]], np.int32)
        xs = [edge] + [_ids(rng, -(2**31), 2**31 - 1) for _ in range(4)]
        xs += [_ids(rng) for _ in range(4)]
        (d / "in.bin").write_bytes(b"".join(x.tobytes() for x in xs))
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
        proc = subprocess.run(["./driver", "in.bin", "out.bin", str(len(xs))], cwd=d,
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0 and "runtime error" not in proc.stderr, proc.stderr[-3000:]
        p = m.cmodel.outputs[0]
        got = np.frombuffer((d / "out.bin").read_bytes(), p.np_dtype).reshape(len(xs), *p.shape)
        for x, g in zip(xs, got, strict=True):
            want = interpret(m.graph, {m.input_names[0]: x})[m.output_names[0]]
            _assert_matches(kind, g, want)  # float: sums in another order than numpy's
        assert shutil.which("gcc")


def _gather_graph(data_dtype: str, axis: int) -> Graph:
    """RuntimeGather alone: a table (constant int8 codes, or float data at run time) and
    int32 indices of shape [2, 3]."""
    g = Graph("rg")
    rng = np.random.default_rng(axis % 3)
    if data_dtype == "int8":
        table = rng.integers(-128, 128, (5, 4, 3)).astype(np.int8)
        g.add_const("table", table, Quant.per_tensor(0.1, 3))
    else:
        g.tensors["table"] = Tensor("table", (5, 4, 3), "float32")
        g.inputs.append("table")
    g.tensors["idx"] = Tensor("idx", (2, 3), "int32")
    g.inputs.append("idx")
    g.tensors["y"] = Tensor("y", (), data_dtype)
    g.nodes.append(Node("RuntimeGather", "rg", ["table", "idx"], ["y"], {"axis": axis}))
    g.outputs = ["y"]
    infer_shapes(g)
    return g


@pytest.mark.parametrize("data_dtype", ["int8", "float32"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_runtime_gather_c_equals_numpy(data_dtype: str, axis: int) -> None:
    """Any axis, constant int8 codes (the quantization kept) or run-time float data, indices
    inside, below and past the axis: host C equals the numpy reference, which is np.take of
    the clamped indices."""
    g = _gather_graph(data_dtype, axis)
    m = compile_graph(g)
    if data_dtype == "int8":
        assert g.quant("y") is not None and g.quant("y").same_as(g.quant("table"))
    dim = (5, 4, 3)[axis]
    rng = np.random.default_rng(9)
    for _ in range(10):
        idx = rng.integers(-3, dim + 3, (2, 3)).astype(np.int32)
        feeds = {"idx": idx}
        if data_dtype == "float32":
            feeds["table"] = rng.standard_normal((5, 4, 3)).astype(np.float32)
        want = interpret(g, feeds)["y"]
        table = feeds.get("table", g.const("table"))
        np.testing.assert_array_equal(want, np.take(table, np.clip(idx, 0, dim - 1), axis=axis))
        got = m.run(*[feeds[i] for i in m.input_names])
        np.testing.assert_array_equal(got, want)


def test_runtime_gather_refuses_float_indices() -> None:
    b = TflBuilder()
    t = b.const("table", np.zeros((5, 2), np.float32))
    i = b.input("i", (3,), "float32")
    y = b.tensor("y", (3, 2))
    b.op("GATHER", [t, i], [y], "GatherOptions", axis=0)
    with pytest.raises(EdgecError, match=r"GATHER indices at run time must be int32") as exc:
        edgec.compile(b.build([i], [y]))
    assert "\n" not in str(exc.value)


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
@pytest.mark.parametrize("kind", ["int8-io", "float"])
def test_embedding_on_cortex_m4f_equals_the_interpreter(blobs: dict[str, bytes], kind: str,
                                                        tmp_path: Path) -> None:
    """int32 ids embedded in the firmware: the int8 model's outputs byte for byte the
    interpreter's, the float model's within the tolerance."""
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target

    data = blobs[kind]
    m = edgec.compile(data, name="emb")
    rng = np.random.default_rng(11)
    xs = [_ids(rng) for _ in range(4)] + [np.full((1, SEQ), VOCAB + 5, np.int32)]
    build = build_firmware(m, load_target("cortex-m4f"), tmp_path / "fw", [[x] for x in xs])
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=180)
    assert len(res.outputs) == len(xs)
    for x, (got,) in zip(xs, res.outputs, strict=True):
        _assert_matches(kind, got, run_interpreter(data, [_wrapped(x)])[0])
