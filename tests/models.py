"""Small PyTorch models for whole-model tests.

``build`` and ``export`` come from ``bench.models`` (one definition for tests and benches):
``export(model, inputs, path, exporter)`` writes ``path`` with either the legacy TorchScript
exporter (``"legacy"``: one self-contained file) or the default dynamo exporter (``"dynamo"``:
weights in ``path + ".data"`` next to it). Every model is built under a fixed seed and put in
eval mode, so the same call gives the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import edgec
from bench.models import EXPORTERS, Exporter, build, export, randomize_batchnorm
from tests.helpers import ort_run

__all__ = ["EXPORTERS", "Exporter", "build", "export", "randomize_batchnorm"]


#: generated C (and edgec's IR interpreter) vs onnxruntime: both float32, but different
#: summation orders and libm
ORT_RTOL, ORT_ATOL = 1e-4, 1e-5
#: generated C vs PyTorch: PyTorch runs the unfolded model (separate BatchNorm, its own kernels)
TORCH_RTOL, TORCH_ATOL = 1e-4, 5e-5
#: the planned arena may exceed the lower bound (largest live set) by at most this factor
ARENA_SLACK = 1.1


class TanhMLP(nn.Module):
    """The soft-actuator forward-kinematics shape: 4 → 64 → 64 → 3 with tanh."""

    def __init__(self, n_in: int = 4, hidden: int = 64, n_out: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1d(nn.Module):
    """Conv1d/ReLU/MaxPool1d stack, global average pool, linear head (odd lengths welcome)."""

    def __init__(self, c_in: int = 3, n_out: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(c_in, 8, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(8, 16, kernel_size=3, stride=2), nn.ReLU(),
            nn.MaxPool1d(3, stride=2, padding=1),
            nn.Conv1d(16, 12, kernel_size=3, padding=1, dilation=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(12, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.features(x))
        return self.head(torch.flatten(h, 1))


def _conv_bn(c_in: int, c_out: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(),
    )


class DSCNN2d(nn.Module):
    """Conv2d+BN+ReLU6 stem, depthwise-separable blocks (one with stride 2), global pool, head."""

    def __init__(self, c_in: int = 3, n_out: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(c_in, 8, 3, stride=2),
            _conv_bn(8, 8, 3, stride=1, groups=8),  # depthwise
            _conv_bn(8, 16, 1, stride=1),  # pointwise
            _conv_bn(16, 16, 3, stride=2, groups=16),
            _conv_bn(16, 24, 1, stride=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(24, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


class PoolNet2d(nn.Module):
    """2-D max/avg pooling and a Flatten into a linear layer."""

    def __init__(self, c_in: int = 2, n_out: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c_in, 6, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.head = nn.Linear(6 * 3 * 3, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.avgpool(self.maxpool(torch.relu(self.conv(x))))
        return self.head(torch.flatten(h, 1))


class AttentionPool(nn.Module):
    """Shape ops, Softmax and reductions: a single-head self-attention pooled over time."""

    def __init__(self, d: int = 8, n_out: int = 3):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.head = nn.Linear(2 * d, n_out)
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.d, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2) / float(self.d) ** 0.5, dim=-1)
        h = att @ v
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)
        return self.head(pooled)


class GRUNet(nn.Module):
    """A one-layer GRU over a sequence, a linear head on the last step."""

    def __init__(self, n_in: int = 3, hidden: int = 8, n_out: int = 2):
        super().__init__()
        self.rnn = nn.GRU(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class LSTMNet(nn.Module):
    """A one-layer LSTM over a sequence, a linear head on the last step."""

    def __init__(self, n_in: int = 3, hidden: int = 8, n_out: int = 2):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class ActivationMix(nn.Module):
    """Every elementwise op and activation edgec fuses or computes, and a MatMul."""

    def __init__(self, n_in: int = 6, hidden: int = 12, n_out: int = 5):
        super().__init__()
        self.fc = nn.Linear(n_in, hidden)
        self.prelu = nn.PReLU(hidden, init=0.15)
        self.proj = nn.Parameter(torch.randn(hidden, n_out) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        mag = torch.abs(h)
        a = nn.functional.leaky_relu(h, 0.1) + torch.sigmoid(h) * h
        b = nn.functional.elu(h, 0.7) - nn.functional.selu(h)
        c = nn.functional.softplus(h) / (mag + 1.0)
        d = torch.exp(-mag) * torch.sqrt(mag + 1.0) + torch.log(mag + 2.0)
        e = nn.functional.hardswish(h) + nn.functional.hardsigmoid(h) + self.prelu(h)
        f = torch.clamp(h, -0.5, 0.5) + 0.1 * h.pow(2) + torch.reciprocal(mag + 1.0)
        return torch.tanh(a + b + c + d + e + f + torch.relu(h)) @ self.proj


def torch_forward(model: nn.Module, inputs: Sequence[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out = model(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
    return out.numpy()


def random_inputs(shapes: Sequence[Sequence[int]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes]


def check_memory_plan(m: edgec.CompiledModel) -> None:
    """The planned arena is within ``ARENA_SLACK`` of the lower bound."""
    r = m.report()
    assert r["arena_bytes"] <= ARENA_SLACK * r["arena_lower_bound_bytes"], (
        f"{m.name}: arena {r['arena_bytes']} B > {ARENA_SLACK} x lower bound "
        f"{r['arena_lower_bound_bytes']} B"
    )


def check_exported(
    path: str | Path,
    torch_model: nn.Module,
    inputs: Sequence[np.ndarray],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_names: Sequence[str] = ("x",),
) -> edgec.CompiledModel:
    """Compile an exported model; its C output and IR interpreter must match onnxruntime and
    the C output must match PyTorch; the memory plan must be near its lower bound."""
    feeds = dict(zip(input_names, inputs, strict=True))
    expected = np.asarray(ort_run(onnx.load(str(path)), feeds)[0], np.float32)
    from_torch = torch_forward(torch_model, inputs)
    assert np.abs(expected).max() > 1e-3, "degenerate test: the model output is ~0"
    np.testing.assert_allclose(expected, from_torch, rtol=TORCH_RTOL, atol=TORCH_ATOL,
                               err_msg="onnxruntime vs PyTorch: the export itself differs")

    m = edgec.compile(path, input_shapes=input_shapes)
    got = m.run(**feeds)
    interpreted = m.reference(**feeds)
    assert got.shape == expected.shape, f"C shape {got.shape} vs onnxruntime {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=ORT_RTOL, atol=ORT_ATOL,
                               err_msg="C vs onnxruntime")
    np.testing.assert_allclose(interpreted, expected, rtol=ORT_RTOL, atol=ORT_ATOL,
                               err_msg="IR interpreter vs onnxruntime")
    np.testing.assert_allclose(got, from_torch, rtol=TORCH_RTOL, atol=TORCH_ATOL,
                               err_msg="C vs PyTorch")
    check_memory_plan(m)
    return m
