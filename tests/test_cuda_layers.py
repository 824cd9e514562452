"""The CUDA back-end's strategy ``layers`` (docs/cuda.md): CUTLASS GEMMs and implicit-GEMM
convolutions, own pool/elementwise kernels, one planned NHWC workspace. Without a GPU the
numerics are checked through the host build of the same ``.cu``, whose GEMMs and convolutions
are loops over the same problem descriptions CUTLASS gets, rounding tf32/bf16 operands like the
tensor cores; nvcc compiles the CUTLASS instantiations for sm_90 (and sm_87). The GPU tests
skip with the reason where no GPU is visible.

Tolerances against torch/onnxruntime, relative to the largest reference output: fp32 1e-5
(plus rtol 1e-4), tf32 5e-3, bf16 4e-2 (bf16 keeps 8 mantissa bits, and every activation is
stored as bf16)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import edgec
from bench.cuda import resnet18
from bench.models import basic_block
from edgec.backend.cuda import layers as layers_mod
from edgec.backend.cuda.build import nvcc_compile
from edgec.backend.cuda.emit import emit_cuda
from edgec.backend.cuda.model import CudaModel
from edgec.errors import EdgecError
from tests.cuda_env import GPUS, NVCC, needs_gpu, needs_nvcc
from tests.models import randomize_batchnorm

try:
    layers_mod.cutlass_include()
    HAVE_CUTLASS = True
except EdgecError:
    HAVE_CUTLASS = False
needs_cutlass = pytest.mark.skipif(not HAVE_CUTLASS,
                                   reason="nvidia-cutlass not installed (edgec[cuda])")

#: max |edgec - reference| allowed, as a fraction of max |reference|
REL_TOL = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 4e-2}
PRECISIONS = ("fp32", "tf32", "bf16")
BATCH = 5


class SmallResNet(nn.Module):
    """Conv+BN+ReLU stem, max pool, an identity block and a strided block with a 1x1
    projection (residual Adds), global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.l1 = basic_block(16, 16, 1)
        self.l2 = basic_block(16, 32, 2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.l2(self.l1(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class FlatCNN(nn.Module):
    """Conv, average pool, a 1x1 convolution (a GEMM over the NHWC rows), sigmoid, then a
    flatten of a 4x4 map into a linear layer (its weights permuted to the workspace's NHWC
    order) and softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.c2(self.pool(torch.relu(self.c1(x)))))
        return torch.softmax(self.fc(torch.flatten(y, 1)), dim=-1)


def wide_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.Tanh(),
                         nn.Linear(256, 16))


def _build(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "mlp":
        return wide_mlp().eval(), (1, 64)
    if kind == "resnet":
        net = SmallResNet()
        randomize_batchnorm(net, torch.Generator().manual_seed(3))
        return net.eval(), (1, 3, 16, 16)
    if kind == "flat":
        return FlatCNN().eval(), (1, 2, 8, 8)
    return resnet18(16, 100), (1, 3, 64, 64)


_CACHE: dict[tuple[str, str], tuple[nn.Module, CudaModel]] = {}


def compiled(kind: str, precision: str) -> tuple[nn.Module, CudaModel]:
    key = (kind, precision)
    if key not in _CACHE:
        net, shape = _build(kind)
        m = edgec.compile(net, example_inputs=(torch.zeros(*shape),), name=f"{kind}_l",
                          target="cuda", options={"cuda": "layers", "precision": precision})
        _CACHE[key] = (net, m)
    return _CACHE[key]


def _inputs(shape: tuple[int, ...], batch: int = BATCH) -> torch.Tensor:
    return torch.randn(batch, *shape[1:], generator=torch.Generator().manual_seed(7))


def _check(got: np.ndarray, want: np.ndarray, precision: str) -> float:
    err = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    rtol = 1e-4 if precision == "fp32" else 0.0
    assert np.all(np.abs(got - want) <= REL_TOL[precision] * scale + rtol * np.abs(want)), (
        f"{precision}: max abs error {err:.3g} vs max |reference| {scale:.3g}")
    return err


# -- host build vs torch ---------------------------------------------------------------------
@needs_cutlass
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["mlp", "resnet", "flat"])
def test_host_build_vs_torch(kind: str, precision: str) -> None:
    net, m = compiled(kind, precision)
    assert m.sources.strategy == "layers" and m.report()["precision"] == precision
    x = _inputs(_build(kind)[1])
    with torch.no_grad():
        want = net(x).numpy()
    got = np.asarray(m.run(x.numpy(), device="cpu"))
    _check(got.reshape(want.shape), want, precision)


@needs_cutlass
def test_reduced_precisions_are_emulated_not_skipped() -> None:
    """tf32 and bf16 results differ from fp32 by more than fp32's tolerance (the rounding is
    emulated: a host build that ignored the precision would pass the tests above)."""
    net, m32 = compiled("resnet", "fp32")
    x = _inputs((1, 3, 16, 16)).numpy()
    y32 = np.asarray(m32.run(x, device="cpu"))
    scale = float(np.abs(y32).max())
    for p, least in (("tf32", 2e-5), ("bf16", 1e-3)):
        yp = np.asarray(compiled("resnet", p)[1].run(x, device="cpu"))
        assert float(np.abs(yp - y32).max()) > least * scale, p
    del net


@needs_cutlass
def test_bf16_stores_round_to_nearest_even() -> None:
    """A bf16 workspace value is the float rounded to nearest even (the weights' conversion
    here, edgec_st() in the generated code): a ReLU on values that sit on and between bf16
    steps comes back bit for bit."""
    net = nn.Sequential(nn.ReLU())
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 64),), name="relu_bf16",
                      target="cuda", options={"cuda": "layers", "precision": "bf16"})
    base = np.float32(1.5) + np.arange(64, dtype=np.float32) * np.float32(2.0 ** -9)
    x = np.stack([base, -base, base * 1e-3]).astype(np.float32)  # ties, halves, negatives
    got = np.asarray(m.run(x, device="cpu")).reshape(x.shape).astype(np.float32)
    want = layers_mod._bf16_bits(np.maximum(x, 0)).astype(np.uint32) << 16
    np.testing.assert_array_equal(got.view(np.uint32), want.astype(np.uint32))


@needs_cutlass
def test_tensor_op_kernels_where_aligned() -> None:
    """fp32 runs SIMT kernels; tf32/bf16 the Sm80 tensor-op kernels where channels and offsets
    allow 16-byte accesses (the 3-channel stem stays SIMT)."""
    rep32 = compiled("resnet", "fp32")[1].report()
    assert not any(layer["tensor_op"] for layer in rep32["layers"])
    for p in ("tf32", "bf16"):
        rep = compiled("resnet", p)[1].report()
        tops = [layer["tensor_op"] for layer in rep["layers"] if layer["kind"] != "gemm"]
        assert tops[0] is False and all(tops[1:]), (p, tops)
        assert {"edgec_conv_top", "edgec_conv_res_top"} <= set(rep["cutlass_kernels"])


@needs_cutlass
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_residual_add_runs_in_the_epilogue(precision: str) -> None:
    """Both residual blocks' Add + ReLU run in a convolution's epilogue (the identity block's
    second conv; the projection block's 1x1 shortcut conv, its residual the second conv's
    output): no own add kernel is launched."""
    _, m = compiled("resnet", precision)
    fused = [la for la in m.report()["layers"] if la["kind"] == "conv_res"]
    assert [la["node"].split("_Conv")[0] for la in fused] == ["l1_conv2", "l2_down_0"]
    assert "edgec_each(edgec_binary{" not in m.cu_source
    assert m.cu_source.count("e = edgec_conv_res_") == 2


@needs_cutlass
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resnet18_class_host_build(precision: str) -> None:
    """ResNet-18's topology (width 16, 64x64 input, 100 classes): the default strategy is
    layers; the host build agrees with torch."""
    net, shape = _build("resnet18")
    m = edgec.compile(net, example_inputs=(torch.zeros(*shape),), name="r18", target="cuda",
                      options={"precision": precision})
    assert m.sources.strategy == "layers"
    x = _inputs(shape, 3)
    with torch.no_grad():
        want = net(x).numpy()
    _check(np.asarray(m.run(x.numpy(), device="cpu")).reshape(want.shape), want, precision)


@needs_cutlass
def test_onnx_resnet_vs_onnxruntime(tmp_path: Path) -> None:
    """The ONNX path: the small ResNet exported to ONNX, compiled from the file, host build vs
    onnxruntime (fp32 and tf32)."""
    import onnx

    from tests.helpers import ort_run

    net, shape = _build("resnet")
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(net, (torch.zeros(*shape),), str(path), input_names=["x"],
                      output_names=["y"], dynamo=False)
    x = _inputs(shape).numpy()
    for p in ("fp32", "tf32"):
        m = edgec.compile(str(path), target="cuda", options={"cuda": "layers", "precision": p})
        model = onnx.load(str(path))
        want = np.concatenate([ort_run(model, {"x": x[i:i + 1]})[0] for i in range(len(x))])
        _check(np.asarray(m.run(x, device="cpu")).reshape(want.shape), want, p)


# -- the problem descriptions and the workspace ----------------------------------------------
@needs_cutlass
def test_workspace_is_planned_per_batch() -> None:
    """The header states the workspace per sample (the planner's arena plus the converted
    inputs/outputs); the host build refuses a NULL workspace; a batch runs like its samples
    one by one (offsets scale with the batch)."""
    net, m = compiled("resnet", "bf16")
    per = m.sources.workspace_per_sample
    assert f"WORKSPACE_BYTES(batch) ((size_t)({per}) * (size_t)(batch))" in m.cu_header
    x = _inputs((1, 3, 16, 16), 4).numpy()
    whole = np.asarray(m.run(x, device="cpu"))
    one = np.concatenate([np.asarray(m.run(x[i:i + 1], device="cpu")) for i in range(4)])
    np.testing.assert_array_equal(whole.reshape(one.shape), one)
    assert "if (batch < 0 || (batch > 0 && workspace == NULL))" in m.cu_source
    del net


@needs_cutlass
def test_problem_descriptions_are_shared() -> None:
    """Each GEMM/convolution call passes one generated problem function's result: the device
    path (CUTLASS) and the host loop read the same struct, strides from one function."""
    _, m = compiled("resnet", "tf32")
    src = m.cu_source
    convs = [k for k in m.report()["cutlass_kernels"] if "_conv" in k]
    assert len(convs) == 3  # SIMT stem, tensor-op, tensor-op with the residual epilogue
    assert src.count("edgec_conv_strides(&p, sx, sw, sy);") == 1 + len(convs)  # + host loop
    calls = [ln.strip() for ln in src.splitlines() if ln.strip().startswith("e = edgec_conv")]
    assert calls and all("_conv" in c and "(batch), ws, EDGEC_W(" in c for c in calls)


# -- choices and errors ------------------------------------------------------------------------
def test_default_strategy_by_size() -> None:
    """No cuda= option: small models (an MLP, a small CNN) fused, a ResNet-18-class CNN layers;
    the option overrides either way."""
    from edgec.api import _optimized, load_graph

    def opt(net: nn.Module, shape: tuple[int, ...]) -> Any:
        g = load_graph(net, example_inputs=(torch.zeros(*shape),))
        return _optimized(g, None, None)[0]

    assert layers_mod.default_strategy(opt(*_build("mlp"))) == "fused"
    assert layers_mod.default_strategy(opt(*_build("resnet"))) == "fused"
    big = opt(*_build("resnet18"))
    assert layers_mod.default_strategy(big) == ("layers" if HAVE_CUTLASS else "fused")
    assert emit_cuda(big, strategy="fused").strategy == "fused"
    if HAVE_CUTLASS:
        assert emit_cuda(opt(*_build("resnet")), strategy="layers").strategy == "layers"
        # without the CUTLASS headers the default stays fused (it needs only nvcc)
        import importlib.util

        real = importlib.util.find_spec
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(importlib.util, "find_spec",
                       lambda n, *a: None if n == "cutlass_library" else real(n, *a))
            assert layers_mod.default_strategy(big) == "fused"


@needs_cutlass
def test_unsupported_op_is_one_line() -> None:
    dw = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.ReLU())
    with pytest.raises(EdgecError) as e:
        edgec.compile(dw, example_inputs=(torch.zeros(1, 4, 8, 8),), target="cuda",
                      options={"cuda": "layers"})
    msg = str(e.value)
    assert "\n" not in msg and "(Conv)" in msg and "grouped/depthwise" in msg
    assert "supports Conv (group 1), Gemm" in msg and "cuda=fused" in msg


def test_missing_cutlass_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "cutlass_library" else real(n, *a))
    net, shape = _build("mlp")
    with pytest.raises(EdgecError, match=r"pip install 'edgec\[cuda\]'") as e:
        edgec.compile(net, example_inputs=(torch.zeros(*shape),), target="cuda",
                      options={"cuda": "layers"})
    assert "\n" not in str(e.value)


def test_bad_precision_is_one_line() -> None:
    net, shape = _build("mlp")
    with pytest.raises(EdgecError, match="precision=fp16: unknown; supported: fp32, tf32, bf16"):
        edgec.compile(net, example_inputs=(torch.zeros(*shape),), target="cuda",
                      options={"cuda": "layers", "precision": "fp16"} if HAVE_CUTLASS
                      else {"precision": "fp16", "cuda": "fused"})
    with pytest.raises(EdgecError, match="precision=bf16 is for --option cuda=layers"):
        edgec.compile(net, example_inputs=(torch.zeros(*shape),), target="cuda",
                      options={"cuda": "fused", "precision": "bf16"})


@needs_cutlass
def test_sources_are_deterministic(tmp_path: Path) -> None:
    """Two compiles write byte-identical files, the weight blob included."""
    for p in ("fp32", "bf16"):
        written = []
        for k in range(2):
            net, shape = _build("resnet")
            m = edgec.compile(net, example_inputs=(torch.zeros(*shape),), name="det",
                              target="cuda", options={"cuda": "layers", "precision": p})
            paths = m.write(tmp_path / f"{p}{k}")
            written.append({q.name: q.read_bytes() for q in paths})
        assert sorted(written[0]) == ["det.cu", "det.h", "det_weights.bin"]
        assert written[0] == written[1]


# -- the weight blob -------------------------------------------------------------------------
def _tables(source: str) -> list[tuple[str, int]]:
    """(symbol, element offset) of each weight table, as the .cu states them."""
    return [(m.group(1), int(m.group(2))) for m in
            re.finditer(r"^static const edgec_idx_t (\w+) = (\d+);$", source, re.M)]


@needs_cutlass
@pytest.mark.parametrize("kind,precision", [("resnet", "fp32"), ("resnet", "bf16"),
                                            ("flat", "tf32"), ("mlp", "bf16")])
def test_weight_blob_layout(kind: str, precision: str) -> None:
    """<name>_weights.bin: the header (magic, element bytes, table count, payload bytes,
    CRC-32 of the payload), each table at a 16-byte aligned offset (the tensor-op kernels'
    16-byte accesses), in the order and at the offsets the .cu names, holding the planner's
    weights in the workspace element type (bf16: rounded to nearest even), zeros between."""
    import struct
    import zlib

    net, m = compiled(kind, precision)
    blob = m.sources.weights_blob
    assert blob is not None and m.sources.files()[f"{m.name}_weights.bin"] is blob
    magic, esize, count, payload, crc, zero = struct.unpack("<8sIIQII", blob[:32])
    assert (magic, esize, zero) == (b"EDGECWB1", 2 if precision == "bf16" else 4, 0)
    assert payload == len(blob) - 32 and payload % 16 == 0
    assert crc == zlib.crc32(blob[32:])
    plan = layers_mod.plan_layers(m.graph, m.name, precision)
    tables = _tables(m.cu_source)
    assert [t[0] for t in tables] == [w.sym for w in plan.weights] and count == len(tables)
    used = np.zeros(payload, bool)
    for (sym, off), w in zip(tables, plan.weights, strict=True):
        start = 32 + off * esize
        assert start % 16 == 0, sym
        n = w.data.size * esize
        want = (layers_mod._bf16_bits(w.data.reshape(-1)).tobytes() if precision == "bf16"
                else w.data.astype("<f4").tobytes())
        assert blob[start:start + n] == want, sym
        used[start - 32:start - 32 + n] = True
        assert f"{sym}]" not in m.cu_source  # an offset, not an array
    assert not np.frombuffer(blob[32:], np.uint8)[~used].any()  # padding is zeros
    assert m.report()["weights_file_bytes"] == len(blob)
    if kind == "flat":
        # the first table is the first convolution's filter, KRSC: torch's OIHW transposed
        w0 = net.c1.weight.detach().numpy().transpose(0, 2, 3, 1).reshape(-1)
        got = np.frombuffer(blob, "<f4", w0.size, 32 + tables[0][1] * 4)
        np.testing.assert_array_equal(got, w0)


def _host_program(m: CudaModel, d: Path) -> str:
    """A C++ program over the host build written to ``d``: the weights check, the blob's
    address modulo 16, and the status of one run."""
    n, big = m.name, m.name.upper()
    (i,), (o,) = m.sources.inputs, m.sources.outputs
    return f"""#include "{n}.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
extern "C" const unsigned char {n}_weights_blob[];
int main(void)
{{
    float *x = (float *)calloc({big}_{i.C}_SIZE, sizeof(float));
    float *y = (float *)calloc({big}_{o.C}_SIZE, sizeof(float));
    void *ws = malloc({big}_WORKSPACE_BYTES(1));
    const int check = {n}_weights_check();
    const int rc = {n}_run_host(1, x, y, ws);
    printf("%d %d %d\\n", check, (int)((uintptr_t){n}_weights_blob % 16u), rc);
    free(x);
    free(y);
    free(ws);
    return 0;
}}
"""


@needs_cutlass
def test_corrupt_or_missing_blob_is_a_clear_error(tmp_path: Path) -> None:
    """The written directory builds from anywhere with -I <dir> (the assembler finds the blob
    like a header); the linked blob is checked before a run: intact 0 (16-byte aligned), a
    flipped byte 3 (CRC), a changed header 2, a truncated file 1, and the run refuses (-2)
    instead of reading it; a missing file stops the build naming it. In Python, a bad blob
    is a one-line EdgecError when the library is loaded, a missing one before the build."""
    _, m = compiled("resnet", "fp32")
    d = tmp_path / "out"
    m.write(d)
    (tmp_path / "main.cpp").write_text(_host_program(m, d))
    blob = (d / f"{m.name}_weights.bin").read_bytes()

    def build_and_run(data: bytes | None) -> tuple[int, str]:
        path = d / f"{m.name}_weights.bin"
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)
        exe = tmp_path / "run"
        b = subprocess.run(["g++", "-std=c++14", "-O1", "-DEDGEC_HOST_BUILD", "-I", str(d),
                            "-x", "c++", str(d / f"{m.name}.cu"), str(tmp_path / "main.cpp"),
                            "-o", str(exe)], capture_output=True, text=True, cwd=tmp_path)
        if b.returncode != 0:
            return b.returncode, b.stderr
        r = subprocess.run([str(exe)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return 0, r.stdout.strip()

    assert build_and_run(blob) == (0, "0 0 0")
    flipped = bytearray(blob)
    flipped[100] ^= 0x40
    assert build_and_run(bytes(flipped)) == (0, "3 0 -2")
    header = bytearray(blob)
    header[8] = 2  # element bytes
    assert build_and_run(bytes(header)) == (0, "2 0 -2")
    assert build_and_run(blob[:-16]) == (0, "1 0 -2")
    rc, err = build_and_run(None)
    assert rc != 0 and f"{m.name}_weights.bin" in err

    # Python: the library checks its blob when it is loaded
    from dataclasses import replace

    bad = CudaModel(m.graph, replace(m.sources, weights_blob=bytes(flipped)), m.source_graph)
    with pytest.raises(EdgecError) as e:
        bad.run(np.zeros((1, 3, 16, 16), np.float32), device="cpu")
    assert "\n" not in str(e.value) and "CRC-32 does not match" in str(e.value)
    assert f"{m.name}_weights.bin" in str(e.value)
    gone = CudaModel(m.graph, replace(m.sources, weights_blob=None), m.source_graph)
    with pytest.raises(EdgecError, match=f"{m.name}_weights.bin is missing"):
        gone.run(np.zeros((1, 3, 16, 16), np.float32), device="cpu")


@needs_cutlass
def test_cli_compile_layers_bf16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgec.cli import main

    net, shape = _build("resnet")
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(net, (torch.zeros(*shape),), str(path), input_names=["x"],
                      output_names=["y"], dynamo=False)
    out = tmp_path / "out"
    assert main(["compile", str(path), "--target", "cuda", "--option", "cuda=layers",
                 "--option", "precision=bf16", "-o", str(out)]) == 0
    assert "layers (bf16" in capsys.readouterr().out
    # edgec verify --cuda cpu: the host build vs onnxruntime (fp32 at verify's tolerances;
    # bf16 at looser ones given on the command line)
    assert main(["verify", str(path), "--cuda", "cpu", "--option", "cuda=layers", "--n",
                 "2"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")
    assert main(["verify", str(path), "--cuda", "cpu", "--option", "cuda=layers", "--option",
                 "precision=bf16", "--n", "2", "--rtol", "0.05", "--atol", "0.05"]) == 0
    header = (out / "resnet.h").read_text()
    assert 'strategy "layers", precision bf16' in header
    assert "typedef uint16_t edgec_elem_t;" in (out / "resnet.cu").read_text()
    assert (out / "resnet_weights.bin").read_bytes()[:8] == b"EDGECWB1"


@needs_cutlass
@pytest.mark.parametrize("kind", ["mlp", "flat", "resnet"])
def test_host_build_is_warning_free(kind: str, tmp_path: Path) -> None:
    """g++ -std=c++14 -Wall -Wextra -Werror -pedantic on the host build, each precision."""
    for p in PRECISIONS:
        _, m = compiled(kind, p)
        m.sources.write(tmp_path)
        proc = subprocess.run(
            ["g++", "-std=c++14", "-Wall", "-Wextra", "-Werror", "-pedantic", "-DEDGEC_HOST_BUILD",
             "-x", "c++", "-fsyntax-only", "-I", str(tmp_path), str(tmp_path / f"{m.name}.cu")],
            capture_output=True, text=True)
        assert proc.returncode == 0, (p, proc.stderr[:2000])


@needs_cutlass
def test_bench_resnet_rows_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """bench.cuda's ResNet-18 rows (strategy layers, each precision) in CPU mode, tiny: the
    host build agrees with torch fp32 within the precision's tolerance."""
    from bench import cuda as bench_cuda

    assert bench_cuda.main(["--device", "cpu", "--models", "resnet18", "--resnet-batches",
                            "2", "--resnet-width", "8", "--resnet-res", "32", "--repeat",
                            "1"]) == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("resnet18/")]
    assert [r[0] for r in rows] == ["resnet18/fp32", "resnet18/tf32", "resnet18/bf16"]
    for r in rows:
        assert float(r[-1]) <= REL_TOL[r[0].split("/")[1]]


@needs_cutlass
@pytest.mark.parametrize("kind,precision", [("resnet", "bf16"), ("flat", "fp32")])
def test_host_build_under_sanitizers(kind: str, precision: str, tmp_path: Path) -> None:
    """A C++ program runs the host build on a workspace of exactly WORKSPACE_BYTES(batch)
    (malloc'd, so ASan sees its end) under -fsanitize=address,undefined: the plan fits the
    workspace the header promises and nothing reads outside it."""
    _, m = compiled(kind, precision)
    m.sources.write(tmp_path)
    n, big = m.name, m.name.upper()
    (i,), (o,) = m.sources.inputs, m.sources.outputs
    (tmp_path / "main.cpp").write_text(f"""#include "{n}.h"
#include <stdio.h>
#include <stdlib.h>
int main(void)
{{
    const int batch = 3;
    float *x = (float *)malloc(sizeof(float) * batch * {big}_{i.C}_SIZE);
    float *y = (float *)malloc(sizeof(float) * batch * {big}_{o.C}_SIZE);
    void *ws = malloc({big}_WORKSPACE_BYTES(batch));
    for (int k = 0; k < batch * {big}_{i.C}_SIZE; ++k) {{
        x[k] = (float)((k * 37) % 101) / 50.0f - 1.0f;
    }}
    const int rc = {n}_run_host(batch, x, y, ws);
    printf("%d %g\\n", rc, (double)y[0]);
    free(x);
    free(y);
    free(ws);
    return rc;
}}
""")
    exe = tmp_path / "run"
    build = subprocess.run(
        ["g++", "-std=c++14", "-O1", "-g", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-DEDGEC_HOST_BUILD", "-I", str(tmp_path), "-x", "c++",
         str(tmp_path / f"{n}.cu"), str(tmp_path / "main.cpp"), "-o", str(exe)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[:2000]
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("0 "), run.stderr[:2000]


# -- nvcc ------------------------------------------------------------------------------------
@needs_nvcc
@needs_cutlass
@pytest.mark.parametrize("precision", PRECISIONS)
def test_nvcc_sm90_layers(precision: str, tmp_path: Path) -> None:
    """The small ResNet's .cu with its CUTLASS instantiations (SIMT and, for tf32/bf16,
    Sm80 tensor-op kernels) compiles with nvcc -arch=sm_90 -Werror all-warnings."""
    _, m = compiled("resnet", precision)
    obj = nvcc_compile(m.sources, "sm_90", tmp_path)
    syms = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout
    assert "ImplicitGemmConvolution" in syms
    assert "ImplicitGemmConvolutionWithFusedEpilogue" in syms  # the residual blocks
    assert ("MmaTensorOp" in syms) == (precision != "fp32")
    # the tensor-op kernels read weights and bias 16 bytes at a time: the device copy of the
    # blob is 16-byte aligned (each table's offset in it too: test_weight_blob_layout)
    assert "#define EDGEC_WEIGHTS __device__ __align__(16)" in m.cu_source
    assert f"EDGEC_WEIGHTS edgec_elem_t {m.name}_weights_dev[" in m.cu_source
    assert not re.search(r"edgec_elem_t \w+\[\d+\] = \{", m.cu_source)  # no initializers


@needs_nvcc
@needs_cutlass
def test_users_program_builds_with_the_header_command(tmp_path: Path) -> None:
    """What a user does with the written directory: the header's nvcc command (-I <dir>, run
    from elsewhere) builds a program calling <name>_run without <name>_init (the first run
    copies the weights); with a GPU it runs and equals the host build."""
    _, m = compiled("flat", "fp32")
    d = tmp_path / "out"
    m.write(d)
    header = (d / f"{m.name}.h").read_text()
    assert f"-I <dir> -c <dir>/{m.name}.cu" in header
    n, big = m.name, m.name.upper()
    (i,), (o,) = m.sources.inputs, m.sources.outputs
    (tmp_path / "main.cu").write_text(f"""#include "{n}.h"
#include <stdio.h>
int main(void)
{{
    const int batch = 3;
    float x[batch * {big}_{i.C}_SIZE], y[batch * {big}_{o.C}_SIZE];
    for (int k = 0; k < batch * {big}_{i.C}_SIZE; ++k) {{
        x[k] = (float)((k * 37) % 101) / 50.0f - 1.0f;
    }}
    float *dx = NULL, *dy = NULL;
    void *ws = NULL;
    cudaError_t e = cudaMalloc((void **)&dx, sizeof(x));
    if (e == cudaSuccess) e = cudaMalloc((void **)&dy, sizeof(y));
    if (e == cudaSuccess) e = cudaMalloc(&ws, {big}_WORKSPACE_BYTES(batch));
    if (e == cudaSuccess) e = cudaMemcpy(dx, x, sizeof(x), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = {n}_run(batch, dx, dy, ws, 0);
    if (e == cudaSuccess) e = cudaMemcpy(y, dy, sizeof(y), cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {{
        printf("error %s\\n", cudaGetErrorString(e));
        return 1;
    }}
    for (int k = 0; k < batch * {big}_{o.C}_SIZE; ++k) {{
        printf("%.9g\\n", (double)y[k]);
    }}
    return 0;
}}
""")
    assert NVCC is not None
    exe = tmp_path / "prog"
    build = subprocess.run(
        [NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-isystem", str(layers_mod.cutlass_include()),
         "-I", str(d), str(d / f"{n}.cu"), str(tmp_path / "main.cu"), "-o", str(exe)],
        capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[:2000]
    if GPUS == 0:
        return
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    got = np.array([float(v) for v in run.stdout.split()], np.float32)
    x = ((np.arange(3 * i.size) * 37) % 101).astype(np.float32) / np.float32(50) - 1
    host = np.asarray(m.run(x.reshape(3, *i.shape[1:]), device="cpu")).reshape(-1)
    _check(got, host, "fp32")


@needs_nvcc
@needs_cutlass
def test_nvcc_sm90_mlp_gemm(tmp_path: Path) -> None:
    _, m = compiled("mlp", "bf16")
    obj = nvcc_compile(m.sources, "sm_90", tmp_path)
    syms = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout
    assert "gemm6kernel4Gemm" in syms and "MmaTensorOp" in syms


@pytest.mark.slow
@needs_nvcc
@needs_cutlass
def test_nvcc_sm90_resnet18_class() -> None:
    """The ResNet-18-class model (bf16: SIMT stem, tensor-op convs, residual epilogues) builds
    as a shared library with the runner's glue (what m.run() on a GPU loads)."""
    from edgec.backend.cuda.build import build_device
    from edgec.backend.cuda.runner import glue_source

    net, shape = _build("resnet18")
    m = edgec.compile(net, example_inputs=(torch.zeros(*shape),), name="r18", target="cuda",
                      options={"precision": "bf16"})
    lib = build_device(m.sources, glue_source(m.sources, device=True), "sm_90")
    assert lib.is_file()
    syms = subprocess.run(["nm", str(lib)], capture_output=True, text=True).stdout
    assert "r18_weights_blob" in syms and "r18_weights_dev" in syms
    exported = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                              text=True).stdout
    assert "edgec_glue_init" in exported and "r18_weights_blob" not in exported  # hidden


@pytest.mark.slow
@needs_nvcc
@needs_cutlass
def test_nvcc_sm90_full_resnet18(tmp_path: Path) -> None:
    """The full ResNet-18 (width 64, 224x224, 1000 classes, 11.7 M parameters): the weights
    are in <name>_weights.bin, not in the source (a .cu of under 100 KB instead of ~280 MB),
    and the .cu compiles with the header's nvcc command from another directory (-I <dir>)
    for sm_90 in bf16 (SIMT and tensor-op instantiations), well within a test's time (on 2
    cores about 10-40 s; with the weights as initializers it took 3.5 minutes and 7.5 GB)."""
    net = resnet18(64)
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 3, 224, 224),), name="resnet18",
                      target="cuda", options={"cuda": "layers", "precision": "bf16"})
    assert m.report()["params"] == 11_684_712  # torchvision's 11,689,512 less BatchNorm's
    d = tmp_path / "out"
    m.write(d)
    assert (d / "resnet18.cu").stat().st_size < 100_000
    assert (d / "resnet18_weights.bin").stat().st_size >= 2 * 11_684_712 + 32  # bf16
    assert NVCC is not None
    obj = tmp_path / "resnet18.o"
    proc = subprocess.run(
        [NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-Werror", "all-warnings", "-isystem",
         str(layers_mod.cutlass_include()), "-I", str(d), "-c", str(d / "resnet18.cu"),
         "-o", str(obj)], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[:2000]
    syms = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True).stdout
    assert "resnet18_weights_blob" in syms and "ImplicitGemmConvolution" in syms


@pytest.mark.slow
@needs_nvcc
@needs_cutlass
def test_nvcc_sm87_layers(tmp_path: Path) -> None:
    _, m = compiled("resnet", "bf16")
    nvcc_compile(m.sources, "sm_87", tmp_path)


# -- on a GPU --------------------------------------------------------------------------------
@needs_gpu
@needs_cutlass
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("kind", ["mlp", "resnet", "flat", "resnet18"])
def test_gpu_layers_vs_torch(kind: str, precision: str) -> None:
    """The device build (CUTLASS) vs torch at the precision's tolerance, and vs the host build
    (which emulates the same rounding: within the same tolerance)."""
    net, shape = _build(kind)
    m = edgec.compile(net, example_inputs=(torch.zeros(*shape),), name=f"{kind}_g",
                      target="cuda", options={"cuda": "layers", "precision": precision})
    x = _inputs(shape, 67)
    with torch.no_grad():
        want = net(x).numpy()
    got = np.asarray(m.run(x.numpy())).reshape(want.shape)
    _check(got, want, precision)
    host = np.asarray(m.run(x.numpy(), device="cpu")).reshape(want.shape)
    _check(got, host, precision)
    tx = x.cuda()
    gt = m.run(tx)
    assert gt.is_cuda
    np.testing.assert_allclose(gt.cpu().numpy().reshape(want.shape), got, rtol=0, atol=0)
