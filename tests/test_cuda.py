"""The CUDA back-end (docs/cuda.md): the generated ``<name>.cu`` builds with nvcc for sm_90 and
sm_87 with every warning an error, is deterministic, and its numerics — checked through the host
build of the same file where no GPU is visible — match the source framework; the GPU runs skip
with the reason where no GPU is visible."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import edgec
import edgec.nn as enn
from edgec.backend.cuda.build import (
    build_device,
    nvcc_compile,
    resource_usage,
)
from edgec.backend.cuda.emit import LOCAL_ARENA_LIMIT, device_helper
from edgec.backend.cuda.model import CudaModel
from edgec.backend.cuda.runner import DeviceRunner, glue_source
from edgec.errors import EdgecError, ToolchainError
from edgec.nn.lsm import LSMClassifier, Reservoir
from tests.cuda_env import GPUS, NVCC, needs_gpu, needs_nvcc
from tests.models import TORCH_ATOL, TORCH_RTOL, DSCNN2d, TanhMLP, randomize_batchnorm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "swimmer_ncap"))
from ncap import SwimmerModule  # noqa: E402

BATCH = 37  # not a multiple of the block: the last block is partly idle
STEPS = 40



class GRUStep(nn.Module):
    """One GRU step with explicit state: (x, h0) → (y, hn); hn is carried by step()."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(5, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq, hn = self.rnn(x, h0)
        return self.head(seq[:, -1]), hn


class LSTMStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(5, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> Any:
        seq, (hn, cn) = self.rnn(x, (h0, c0))
        return self.head(seq[:, -1]), hn, cn


class SpikingNet(nn.Module):
    """Linear → LIF → Linear → LIF → Linear → leaky integrator (edgec.nn), weights on a 2^-8
    grid so that every summation order gives the same spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 24)
        self.lif1 = enn.LIF(24, beta=0.9, alpha=0.3, adapt_decay=0.95, adapt_add=0.2,
                            threshold=torch.linspace(0.5, 1.5, 24))
        self.fc2 = nn.Linear(24, 7)
        self.lif2 = enn.LIF(7, beta=torch.linspace(0.5, 0.95, 7), threshold=0.6)
        self.fc3 = nn.Linear(7, 1)
        self.out = enn.LeakyIntegrator(1, lam=0.9)
        with torch.no_grad():
            for mod in (self.fc1, self.fc2, self.fc3):
                mod.weight.copy_(torch.round(mod.weight * 2 * 256) / 256)
                mod.bias.copy_(torch.round(mod.bias * 256) / 256)

    def forward(self, x: torch.Tensor) -> Any:
        s1 = self.lif1(self.fc1(x))
        return self.out(self.fc3(self.lif2(self.fc2(s1)))), s1


class SnnTorchNet(nn.Module):
    """snntorch Leaky layers: the second Linear is event-driven on packed spikes (the kernels
    use the bit-scan helper, a device intrinsic under nvcc)."""

    def __init__(self) -> None:
        import snntorch as snn

        super().__init__()
        self.fc1 = nn.Linear(3, 40)
        self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
        self.fc2 = nn.Linear(40, 17)
        self.lif2 = snn.Leaky(beta=0.9, threshold=0.3, init_hidden=True, output=True)
        with torch.no_grad():  # weights on a 2^-8 grid: spike sums are exact in any order
            for p in self.parameters():
                p.copy_(torch.round(p * 256) / 256)

    def forward(self, x: torch.Tensor) -> Any:
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


def _mlp() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return TanhMLP().eval(), (torch.zeros(1, 4),)


def _gru() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return GRUStep().eval(), (torch.zeros(1, 1, 5), torch.zeros(1, 1, 16))


def _lstm() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return LSTMStep().eval(), (torch.zeros(1, 1, 5), torch.zeros(1, 1, 16), torch.zeros(1, 1, 16))


def _snn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return SpikingNet().eval(), (torch.zeros(1, 2),)


def _snntorch() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return SnnTorchNet().eval(), (torch.zeros(1, 3),)


def _cfc() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from ncps.torch import CfC

    return CfC(3, 8, backbone_units=16).eval(), (torch.zeros(1, 1, 3), torch.zeros(1, 8))


def _ncap() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    model = SwimmerModule(n_joints=4, oscillator_period=7).eval()
    with torch.no_grad():
        for p in model.params.values():
            p.copy_(torch.randn(()) * 1.5)
    return model, (torch.zeros(3, 4),)


def _lsm() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    res = Reservoir(n_in=6, n_res=24, seed=8, density_in=0.3, density_rec=0.2,
                        scale_in=1.5, scale_rec=0.8, decay=0.9, v_th=1.0)
    clf = LSMClassifier(res, nn.Sequential(nn.Linear(24, 8), nn.Tanh(), nn.Linear(8, 3)))
    return clf.eval(), (torch.zeros(30, 6),)


def _cnn() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Depthwise-separable CNN with BatchNorm (folded) and ReLU6: fused runs it per thread."""
    net = DSCNN2d()
    randomize_batchnorm(net, torch.Generator().manual_seed(4))
    return net.eval(), (torch.zeros(1, 3, 16, 16),)


FACTORIES: dict[str, Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "mlp": _mlp, "cnn": _cnn, "gru": _gru, "lstm": _lstm, "snn": _snn, "snntorch": _snntorch,
    "cfc": _cfc, "ncap": _ncap, "lsm": _lsm,
}


class Compiled:
    """The test models compiled for CUDA, each on first use; a model whose library (snntorch,
    ncps) is not installed skips the tests that use it (the lent GPU machine has torch only)."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[nn.Module, CudaModel]] = {}

    def __getitem__(self, key: str) -> tuple[nn.Module, CudaModel]:
        if key not in self.models:
            torch.manual_seed(3)
            try:
                net, ex = FACTORIES[key]()
            except ModuleNotFoundError as exc:
                pytest.skip(f"model '{key}' needs {exc.name}, not installed here")
            m = edgec.compile(net, example_inputs=ex, name=f"cu_{key}", target="cuda")
            assert isinstance(m, CudaModel)
            self.models[key] = (net, m)
        return self.models[key]


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    return Compiled()


# -- the sources ------------------------------------------------------------------------------


@needs_nvcc
@pytest.mark.parametrize("key", list(FACTORIES))
def test_nvcc_sm90_warnings_as_errors(key: str, compiled: Compiled, tmp_path: Path) -> None:
    obj = nvcc_compile(compiled[key][1].sources, "sm_90", tmp_path)
    assert obj.stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize(
    "key", [k if k in ("mlp", "snn") else pytest.param(k, marks=pytest.mark.slow)
            for k in FACTORIES])
def test_nvcc_sm87_jetson_orin(key: str, compiled: Compiled, tmp_path: Path) -> None:
    obj = nvcc_compile(compiled[key][1].sources, "sm_87", tmp_path)
    assert obj.stat().st_size > 0


@needs_nvcc
def test_resource_usage_per_kernel(compiled: Compiled, tmp_path: Path) -> None:
    """ptxas's registers / stack frame / spills of each generated kernel (docs/cuda.md)."""
    usage = resource_usage(compiled["gru"][1].sources, "sm_90", tmp_path)
    assert sorted(usage) == ["reset", "run", "step"]
    for k in usage.values():
        assert k["registers"] > 0 and {"stack_bytes", "spill_store_bytes"} <= set(k)


def test_sources_are_deterministic(compiled: Compiled) -> None:
    for key in ("mlp", "snn"):
        torch.manual_seed(3)
        net, ex = FACTORIES[key]()
        again = edgec.compile(net, example_inputs=ex, name=f"cu_{key}", target="cuda")
        first = compiled[key][1]
        assert again.cu_source == first.cu_source
        assert again.cu_header == first.cu_header


def test_header_states_the_api(compiled: Compiled) -> None:
    h = compiled["gru"][1].cu_header
    assert "cudaError_t cu_gru_run(int batch, const float *d_in_x, const float *d_in_h0, " \
        "float *d_out_y0, float *d_out_y1,\n    void *d_workspace, cudaStream_t stream);" in h
    assert "#define CU_GRU_WORKSPACE_BYTES(batch)" in h
    assert "cudaError_t cu_gru_reset(int batch, cu_gru_state_t *d_state, " in h
    assert "cudaError_t cu_gru_step(int batch, cu_gru_state_t *d_state, const float *d_in_x, " \
        "float *d_out_y0,\n    void *d_workspace, cudaStream_t stream);" in h
    assert "__constant__" in compiled["mlp"][1].cu_source
    assert "-fmad=false" in compiled["snn"][1].cu_header  # spikes: no FMA contraction
    assert "-fmad=false" in compiled["lsm"][1].cu_header  # its C turns contraction off itself
    assert "-fmad=false" not in compiled["mlp"][1].cu_header


C_PROGRAM = """#include "cu_gru.h"
#include <stdio.h>
/* a C99 host program: 1000 GRU instances, one step (prints "no gpu" without one) */
int main(void)
{
    cu_gru_state_t *d_state = NULL;
    float *d_x = NULL;
    float *d_y = NULL;
    const int batch = 1000;
    if (cudaMalloc((void **)&d_state, batch * CU_GRU_STATE_BYTES) != cudaSuccess) {
        puts("no gpu");
        return 0;
    }
    cudaMalloc((void **)&d_x, batch * CU_GRU_IN_X_SIZE * sizeof(float));
    cudaMalloc((void **)&d_y, batch * CU_GRU_OUT_Y0_SIZE * sizeof(float));
    cudaMemset(d_x, 0, batch * CU_GRU_IN_X_SIZE * sizeof(float));
    if (cu_gru_reset(batch, d_state, 0) != cudaSuccess ||
        cu_gru_step(batch, d_state, d_x, d_y, NULL, 0) != cudaSuccess) {
        return 1;
    }
    return cudaDeviceSynchronize() == cudaSuccess ? 0 : 1;
}
"""


@needs_nvcc
def test_c_host_program_links_against_the_library(compiled: Compiled, tmp_path: Path) -> None:
    """The header is a C API: a C99 program (host gcc through nvcc) calls reset/step and links
    with the nvcc object; it runs where a GPU is visible."""
    m = compiled["gru"][1]
    obj = nvcc_compile(m.sources, "sm_90", tmp_path)
    (tmp_path / "main.c").write_text(C_PROGRAM)
    assert NVCC is not None
    for cmd in (
        [NVCC, "-Xcompiler", "-std=c99,-Wall,-Wextra,-Werror", "-I", str(tmp_path), "-c",
         str(tmp_path / "main.c"), "-o", str(tmp_path / "main.o")],
        [NVCC, "-arch=sm_90", str(tmp_path / "main.o"), str(obj), "-o", str(tmp_path / "app")],
    ):
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    if GPUS > 0:
        p = subprocess.run([str(tmp_path / "app")], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "no gpu" not in p.stdout


SAMPLE_PROGRAM = """#define CU_GRU_SAMPLE_ONLY
#include "cu_gru.cu"
#ifdef EDGEC_HOST_BUILD
#include <stdio.h>
/* 3 instances stepped 4 times by the caller's own loop */
int main(void)
{
    cu_gru_state_t s[3];
    float arena[CU_GRU_ARENA_FLOATS];
    for (int b = 0; b < 3; ++b) {
        cu_gru_sample_reset(&s[b]);
    }
    for (int t = 0; t < 4; ++t) {
        for (int b = 0; b < 3; ++b) {
            float x[CU_GRU_IN_X_SIZE];
            float y[CU_GRU_OUT_Y0_SIZE];
            for (int k = 0; k < CU_GRU_IN_X_SIZE; ++k) {
                x[k] = 0.25f * (float)((t + 1) * (b + 1) * (k - 2));
            }
            cu_gru_sample_step(arena, &s[b], x, y);
            for (int k = 0; k < CU_GRU_OUT_Y0_SIZE; ++k) {
                printf("%.9g\\n", (double)y[k]);
            }
        }
    }
    return 0;
}
#else
/* a user's kernel: each thread steps its instance n times */
__global__ void sim(int batch, int n, cu_gru_state_t *states, const float *x, float *y)
{
    const int b = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (b < batch) {
        float arena[CU_GRU_ARENA_FLOATS];
        cu_gru_state_t s = states[b];
        for (int t = 0; t < n; ++t) {
            cu_gru_sample_step(arena, &s, x + (size_t)b * CU_GRU_IN_X_SIZE,
                               y + (size_t)b * CU_GRU_OUT_Y0_SIZE);
        }
        states[b] = s;
    }
}
#endif
"""


@needs_nvcc
def test_per_sample_code_in_the_users_own_loop(compiled: Compiled, tmp_path: Path) -> None:
    """<NAME>_SAMPLE_ONLY: a file that includes <name>.cu gets the per-sample code alone; a
    user's kernel that steps instances builds with nvcc, and the same file's host loop
    (g++) gives the outputs of m.step bit for bit."""
    m = compiled["gru"][1]
    m.write(tmp_path)
    (tmp_path / "sim.cu").write_text(SAMPLE_PROGRAM)
    assert NVCC is not None
    p = subprocess.run([NVCC, "-arch=sm_90", "-Werror", "all-warnings", "-I", str(tmp_path),
                        "-c", str(tmp_path / "sim.cu"), "-o", str(tmp_path / "sim.o")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(["g++", "-x", "c++", "-O2", "-ffp-contract=off", "-Wall", "-Wextra",
                        "-Werror", "-I", str(tmp_path), str(tmp_path / "sim.cu"), "-o",
                        str(tmp_path / "sim"), "-lm"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    run = subprocess.run([str(tmp_path / "sim")], capture_output=True, text=True, timeout=60)
    got = np.array([float(v) for v in run.stdout.split()], np.float32).reshape(4, 3, 3)
    m.reset(3, device="cpu")
    for t in range(4):
        x = np.array([[0.25 * (t + 1) * (b + 1) * (k - 2) for k in range(5)] for b in range(3)],
                     np.float32).reshape(3, 1, 1, 5)
        np.testing.assert_array_equal(m.step(x).reshape(3, 3), got[t])


def test_cli_compile_target_cuda(tmp_path: Path) -> None:
    model = ROOT / "examples" / "soft_actuator_mlp" / "model.onnx"
    cli = [sys.executable, "-c", "import sys; from edgec.cli import main; sys.exit(main())"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([*cli, "compile", str(model), "--target", "cuda", "-o", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.cu", "model.h"]
    assert "constant memory" in p.stdout
    for opt, msg in (("precision=bf16", "is for --option cuda=layers"),
                     ("cuda=warp", "unknown CUDA")):
        p = subprocess.run([*cli, "compile", str(model), "--target", "cuda", "-o", str(tmp_path),
                            "--option", opt], capture_output=True, text=True, env=env)
        assert p.returncode == 2 and msg in p.stderr and len(p.stderr.splitlines()) == 1


@needs_nvcc
def test_large_arena_lies_in_the_workspace(tmp_path: Path) -> None:
    """A CNN whose activations exceed the local-memory limit: each sample's arena lies in the
    workspace (the size is in the header), nvcc keeps none of it on the stack, and the host
    build (which takes the workspace too) matches torch."""
    torch.manual_seed(3)
    net = DSCNN2d()
    randomize_batchnorm(net, torch.Generator().manual_seed(5))
    net.eval()
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 3, 40, 40),), name="big",
                      target="cuda")
    assert isinstance(m, CudaModel)
    per = m.report()["workspace_bytes_per_sample"]
    assert per >= m.report()["thread_arena_bytes"] > LOCAL_ARENA_LIMIT
    assert f"#define BIG_WORKSPACE_BYTES(batch) ((size_t)({per}) * (size_t)(batch))" \
        in m.cu_header
    usage = resource_usage(m.sources, "sm_90", tmp_path)
    assert usage["run"]["stack_bytes"] < 1024
    x = _x((3 if GPUS == 0 else 200, 3, 40, 40), 15)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.run(x, device="cpu"), want, rtol=TORCH_RTOL, atol=TORCH_ATOL)
    if GPUS > 0:  # the device build, its workspace allocated by the runner
        np.testing.assert_allclose(m.run(x), want, rtol=TORCH_RTOL, atol=TORCH_ATOL)


def test_cli_verify_cuda(capsys: pytest.CaptureFixture) -> None:
    """``edgec verify --cuda cpu``: the host build of the CUDA code vs onnxruntime; ``--cuda
    gpu`` without a GPU says so on one line (exit 2)."""
    from edgec.cli import main

    model = str(ROOT / "examples" / "soft_actuator_mlp" / "model.onnx")
    assert main(["verify", model, "--cuda", "cpu", "--n", "5"]) == 0
    out = capsys.readouterr().out
    assert "CUDA code, host build" in out and out.rstrip().endswith("PASS")
    assert main(["verify", model, "--cuda", "cpu", "--target", "cortex-m4f"]) == 2
    assert "exclusive" in capsys.readouterr().err
    if GPUS == 0 and NVCC is not None:
        assert main(["verify", model, "--cuda", "gpu"]) == 2
        err = capsys.readouterr().err
        assert "no CUDA GPU visible" in err and len(err.splitlines()) == 1


def test_run_and_step_argument_errors(compiled: Compiled) -> None:
    _, m = compiled["snn"]
    with pytest.raises(ValueError, match="missing input.s. x; given y; the inputs are x"):
        m.run({"y": np.zeros((2, 2), np.float32)}, device="cpu")
    m.reset(2, device="cpu")
    with pytest.raises(ValueError, match="states are on device='cpu'"):
        m.step(np.zeros((2, 2), np.float32), device="cuda")  # not taken for an input named device


def test_refusals() -> None:
    with pytest.raises(EdgecError, match="target='gpu'"):
        edgec.compile(TanhMLP(), example_inputs=(torch.zeros(1, 4),), target="gpu")
    with pytest.raises(EdgecError, match="lsm=flash"):  # mutable static data per model
        device_helper("static int16_t t_row[4];\nstatic void f(void)\n{\n}")
    assert device_helper("static const float t[2] = {1.0f, 2.0f};\nstatic float f(void)\n{\n"
                         "    return t[0];\n}") == (
        "static EDGEC_TABLE const float t[2] = {1.0f, 2.0f};\nstatic EDGEC_DEVICE float "
        "f(void)\n{\n    return t[0];\n}")


@needs_nvcc
@pytest.mark.skipif(GPUS > 0, reason="a GPU is visible: the GPU tests run the device build")
def test_device_build_links_and_reports_cuda_errors(compiled: Compiled) -> None:
    """The shared library m.run builds (model + glue, nvcc) links here; without a GPU its first
    CUDA call fails with the runtime's message on one line."""
    m = compiled["gru"][1]
    lib = build_device(m.sources, glue_source(m.sources, device=True), arch="sm_90")
    runner = DeviceRunner(m.sources, lib)
    with pytest.raises(EdgecError, match="cudaMalloc failed on the GPU") as err:
        runner.new_state(4)
    assert "\n" not in str(err.value)


# -- numerics through the host build of the same .cu ------------------------------------------


def _x(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def test_host_build_mlp_batch_vs_torch(compiled: Compiled) -> None:
    net, m = compiled["mlp"]
    x = _x((BATCH, 4), 1)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = m.run(x, device="cpu")
    assert got.shape == (BATCH, 3)
    np.testing.assert_allclose(got, want, rtol=TORCH_RTOL, atol=TORCH_ATOL)
    # the batch rule: one sample (the port's shape), a leading axis, torch in → torch out
    np.testing.assert_allclose(m.run(x[:1], device="cpu"), want[:1], rtol=TORCH_RTOL,
                               atol=TORCH_ATOL)
    np.testing.assert_allclose(m.run(x[:, None], device="cpu")[:, 0], want, rtol=TORCH_RTOL,
                               atol=TORCH_ATOL)
    t = m.run(torch.from_numpy(x), device="cpu")
    assert isinstance(t, torch.Tensor) and t.shape == (BATCH, 3)
    with pytest.raises(ValueError, match="takes"):
        m.run(np.zeros((BATCH, 5), np.float32), device="cpu")


def test_host_build_cnn_with_batchnorm_vs_torch(compiled: Compiled) -> None:
    net, m = compiled["cnn"]
    x = _x((9, 3, 16, 16), 12)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.run(x, device="cpu"), want, rtol=TORCH_RTOL, atol=TORCH_ATOL)


@pytest.mark.parametrize("key", ["gru", "lstm"])
def test_host_build_rnn_run_and_steps_vs_torch(key: str, compiled: Compiled) -> None:
    net, m = compiled[key]
    assert m.is_stateful
    xs = _x((STEPS, BATCH, 1, 5), 2)
    n_state = 1 if key == "gru" else 2
    states = [torch.zeros(1, BATCH, 16) for _ in range(n_state)]
    # one run with explicit state inputs (batch first in edgec, layer first in torch)
    h = [_x((BATCH, 1, 16), 3 + i, 0.5) for i in range(n_state)]
    with torch.no_grad():
        want = net(torch.from_numpy(xs[0]), *[torch.from_numpy(a).transpose(0, 1) for a in h])
    got = m.run(xs[0], *h, device="cpu")
    np.testing.assert_allclose(got[0], want[0].numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
    np.testing.assert_allclose(got[1], want[1].transpose(0, 1).numpy(), rtol=TORCH_RTOL,
                               atol=TORCH_ATOL)
    # STEPS ticks of BATCH independent instances
    m.reset(BATCH, device="cpu")
    for t in range(STEPS):
        with torch.no_grad():
            out = net(torch.from_numpy(xs[t]), *states)
        states = list(out[1:])
        y = m.step(xs[t])
        np.testing.assert_allclose(y, out[0].numpy(), rtol=1e-4, atol=1e-4)
    state = m.state()
    np.testing.assert_allclose(next(iter(state.values())).reshape(BATCH, 16),
                               states[0][0].numpy(),
                               rtol=1e-4, atol=1e-4)


def test_host_build_snn_spikes_equal_torch(compiled: Compiled) -> None:
    net, m = compiled["snn"]
    xs = _x((STEPS, BATCH, 2), 4, 1.5)
    enn.reset_states(net)
    m.reset(BATCH, device="cpu")
    spikes = 0.0
    for t in range(STEPS):
        with torch.no_grad():
            y, s1 = net(torch.from_numpy(xs[t]))
        got_y, got_s1 = m.step(xs[t])
        np.testing.assert_array_equal(got_s1, s1.numpy())
        np.testing.assert_allclose(got_y, y.numpy(), rtol=TORCH_RTOL, atol=TORCH_ATOL)
        spikes += float(s1.mean())
    assert 0.02 < spikes / STEPS < 0.9  # the spike trains are not trivial


def test_host_build_snntorch_event_driven_spikes_equal_torch(compiled: Compiled) -> None:
    net, m = compiled["snntorch"]
    assert "__ffs" in m.cu_source  # the device version of the bit-scan helper
    xs = _x((STEPS, BATCH, 3), 13, 1.5)
    net.lif1.reset_mem()
    net.lif2.reset_mem()
    m.reset(BATCH, device="cpu")
    for t in range(STEPS):
        with torch.no_grad():
            spk, mem = net(torch.from_numpy(xs[t]))
        got_spk, got_mem = m.step(xs[t])
        np.testing.assert_array_equal(got_spk, spk.numpy())
        np.testing.assert_array_equal(got_mem, mem.numpy())


def test_tflite_while_loop_host_build_equals_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TFLite WHILE loop (→ Scan → a for loop in the per-sample code), through the TFLite
    front-end: the host build of the .cu equals the C target's (plain C) host build."""
    monkeypatch.setenv("EDGEC_NO_AVX2", "1")  # the AVX2 dense walk's FMAs round differently
    from tests.test_tflite import rnn_while_model

    data, feeds = rnn_while_model(sequences=True)
    c = edgec.compile(data)
    cu = edgec.compile(data, target="cuda")
    assert isinstance(cu, CudaModel) and "for (int it0 = 0; it0 < 6; ++it0) {" in cu.cu_source
    x = np.stack([feeds[0], feeds[0] * 0.5, -feeds[0]])
    want = np.stack([c.run(x[i]) for i in range(3)])
    np.testing.assert_array_equal(cu.run(x, device="cpu"), want)


@needs_nvcc
def test_tflite_while_loop_nvcc(tmp_path: Path) -> None:
    from tests.test_tflite import rnn_while_model

    cu = edgec.compile(rnn_while_model(sequences=True)[0], target="cuda")
    assert isinstance(cu, CudaModel)
    assert nvcc_compile(cu.sources, "sm_90", tmp_path).stat().st_size > 0


def test_mpc_forward_model_with_jacobian(tmp_path: Path) -> None:
    """The network part of the NR-MPC controller (forward model + exact Jacobian, as
    mpc/build.py makes it) through the CUDA target: nvcc builds it, and for a batch of commands
    the host build equals the C target's model, value and Jacobian."""
    from edgec.api import compile_graph_cuda
    from edgec.mpc.build import compile_forward_model, load_forward_graph
    from edgec.mpc.config import load_config
    from edgec.passes.jacobian import add_jacobian

    cfg = load_config(ROOT / "examples" / "soft_actuator_mpc" / "mlp2.toml")
    c = compile_forward_model(cfg)
    g = load_forward_graph(cfg)
    cu = compile_graph_cuda(add_jacobian(g, g.inputs[0], list(range(cfg.jacobian_columns))),
                            name=f"{cfg.name}_model")
    assert cu.output_names == c.output_names == ["y", "d_y__d_u"]
    u = np.random.default_rng(14).uniform(-1, 1, (50, 2)).astype(np.float32)
    y, jac = cu.run(u, device="cpu")
    want = [c.run(u[i : i + 1]) for i in range(len(u))]
    np.testing.assert_array_equal(y, np.concatenate([w[0] for w in want]))
    np.testing.assert_array_equal(jac, np.stack([w[1] for w in want]).reshape(jac.shape))
    if NVCC is not None:
        assert nvcc_compile(cu.sources, "sm_90", tmp_path).stat().st_size > 0


def _int8_case() -> tuple[Any, CudaModel, list[dict[str, np.ndarray]]]:
    from edgec.api import compile_graph, compile_graph_cuda
    from tests.int8_graphs import kitchen_sink, random_feeds

    g = kitchen_sink()
    rng = np.random.default_rng(16)
    return compile_graph(g, name="k8"), compile_graph_cuda(g, name="k8"), [
        random_feeds(g, rng) for _ in range(6)]


def test_int8_host_build_equals_c_bit_for_bit(tmp_path: Path) -> None:
    """An int8 graph (conv, depthwise, pools, FC, softmax, requantization: the C target's int8
    kernels, bit-exact to TFLite) through the CUDA target: int8 ports, the header states their
    scale and zero point, nvcc builds it, and a batch through the host build equals the C model
    run set by set, bit for bit."""
    c, cu, sets = _int8_case()
    assert "#define K8_IN_IMAGE_ZERO_POINT" in cu.cu_header
    assert "const int8_t *d_in_image" in cu.cu_header
    assert "-fmad=false" in cu.cu_header  # bit-exact: the float quantization steps too
    batch = {k: np.stack([s[k] for s in sets]) for k in sets[0]}
    got = cu.run(**batch, device="cpu")
    for i, name in enumerate(cu.output_names):
        want = np.stack([np.asarray(c.run(**s)[i]) for s in sets])
        assert got[i].dtype == want.dtype
        np.testing.assert_array_equal(got[i].reshape(want.shape), want, err_msg=name)
    with pytest.raises(ValueError, match="int8 port"):
        cu.run(**(batch | {"image": batch["image"].astype(np.float32)}), device="cpu")
    if NVCC is not None:
        assert nvcc_compile(cu.sources, "sm_90", tmp_path).stat().st_size > 0


@needs_gpu
def test_gpu_int8_equals_host_build() -> None:
    _, cu, sets = _int8_case()
    batch = {k: np.concatenate([np.stack([s[k] for s in sets])] * 50) for k in sets[0]}
    for a, b in zip(cu.run(**batch), cu.run(**batch, device="cpu"), strict=True):
        if a.dtype == np.int8:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_host_build_cfc_steps_vs_torch(compiled: Compiled) -> None:
    net, m = compiled["cfc"]
    xs = _x((STEPS, BATCH, 1, 3), 5)
    hx = torch.zeros(BATCH, 8)
    m.reset(BATCH, device="cpu")
    for t in range(STEPS):
        with torch.no_grad():
            y, hx = net(torch.from_numpy(xs[t]), hx)
        got = m.step(xs[t])
        np.testing.assert_allclose(got, y.numpy(), rtol=1e-4, atol=1e-4)


def test_host_build_ncap_steps_equal_torch(compiled: Compiled) -> None:
    net, m = compiled["ncap"]
    qs = _x((STEPS, BATCH, 3, 4), 6, 1.2)
    net.reset()
    m.reset(BATCH, device="cpu")
    for t in range(STEPS):
        with torch.no_grad():  # the module is row-wise: a batch is rows stacked
            want = net(torch.from_numpy(qs[t].reshape(-1, 4))).numpy()
        got = m.step(qs[t])
        np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_host_build_lsm_readout_vs_torch(compiled: Compiled) -> None:
    net, m = compiled["lsm"]
    rng = np.random.default_rng(7)
    x = (rng.random((4, 30, 6)) < 0.2).astype(np.float32)
    with torch.no_grad():
        want = np.stack([net(torch.from_numpy(x[b])).numpy() for b in range(4)])
    got = m.run(x, device="cpu")
    np.testing.assert_allclose(got, want, rtol=TORCH_RTOL, atol=TORCH_ATOL)


# -- what is missing ----------------------------------------------------------------------------


def test_no_nvcc_is_one_line(compiled: Compiled, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NVCC", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("edgec.backend.cuda.build.DEFAULT_CUDA_HOMES", ())
    m = compiled["mlp"][1]
    m._runners.pop("cuda", None)
    with pytest.raises(ToolchainError, match="nvcc not found") as err:
        m.run(np.zeros((2, 4), np.float32))
    assert "\n" not in str(err.value)


@needs_nvcc
@pytest.mark.skipif(GPUS > 0, reason="a GPU is visible")
def test_no_gpu_is_one_line(compiled: Compiled) -> None:
    with pytest.raises(EdgecError, match="no CUDA GPU visible") as err:
        compiled["mlp"][1].run(np.zeros((2, 4), np.float32))
    assert "\n" not in str(err.value) and "device='cpu'" in str(err.value)


# -- on a GPU ------------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("key", ["mlp", "cnn", "lsm"])
def test_gpu_run_vs_host_build_and_torch(key: str, compiled: Compiled) -> None:
    net, m = compiled[key]
    if key == "mlp":
        x = _x((4096 + 5, 4), 8)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
    elif key == "cnn":
        x = _x((300, 3, 16, 16), 8)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
    else:
        x = (np.random.default_rng(9).random((64, 30, 6)) < 0.2).astype(np.float32)
        with torch.no_grad():
            want = np.stack([net(torch.from_numpy(x[b])).numpy() for b in range(len(x))])
    got = m.run(x)
    np.testing.assert_allclose(got, want, rtol=TORCH_RTOL, atol=TORCH_ATOL)
    # the device contracts multiply-adds into FMAs, the host build does not
    np.testing.assert_allclose(got, m.run(x, device="cpu"), rtol=1e-4, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize("key", ["gru", "snn", "snntorch", "cfc", "ncap"])
def test_gpu_steps_vs_host_build(key: str, compiled: Compiled) -> None:
    _, m = compiled[key]
    shape = {"gru": (1, 5), "snn": (2,), "snntorch": (3,), "cfc": (1, 3), "ncap": (3, 4)}[key]
    xs = _x((STEPS, 1000, *shape), 10)
    m.reset(1000, device="cuda")
    gpu = [m.step(xs[t]) for t in range(STEPS)]
    m.reset(1000, device="cpu")
    cpu = [m.step(xs[t]) for t in range(STEPS)]
    for g, c in zip(gpu, cpu, strict=True):
        for a, b in zip(g if isinstance(g, list) else [g], c if isinstance(c, list) else [c],
                        strict=True):
            if key in ("snn", "snntorch", "ncap"):
                np.testing.assert_array_equal(a, b)  # -fmad=false: the same roundings
            else:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_gpu_torch_cuda_tensors_in_and_out(compiled: Compiled) -> None:
    net, m = compiled["mlp"]
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    x = torch.from_numpy(_x((300, 4), 11)).cuda()
    y = m.run(x)
    assert isinstance(y, torch.Tensor) and y.is_cuda and y.shape == (300, 3)
    with torch.no_grad():
        want = net(x.cpu()).numpy()
    np.testing.assert_allclose(y.cpu().numpy(), want, rtol=TORCH_RTOL, atol=TORCH_ATOL)
