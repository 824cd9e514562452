"""The fixed set of bench models, built deterministically from PyTorch into a cache directory,
and the helpers that build and export any model that way (the tests use them too).

Every model is built under a fixed seed (BatchNorm statistics randomised from a second fixed
seed, so folding them is not a no-op), put in eval mode and exported with the legacy TorchScript
exporter at a fixed opset. The ONNX file is cached under a name that includes a hash of the
model's spec, the bench spec version and the torch version, so a changed definition or a new
torch rebuilds it; a cached file is reused as is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

Exporter = Literal["legacy", "dynamo"]
EXPORTERS: tuple[Exporter, ...] = ("legacy", "dynamo")

#: bump when a model definition changes (invalidates every cached ONNX file)
SPEC_VERSION = 1
OPSET = 17
SEED = 0


@dataclass(frozen=True)
class BenchModel:
    """One bench model: how to build it and what it takes."""

    name: str
    description: str
    #: builds the ``torch.nn.Module`` (called under ``torch.manual_seed(SEED)``)
    factory: Callable[[], nn.Module]
    #: input name → shape (batch 1); recurrent state inputs included
    inputs: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...] = ("y",)
    #: edgec op modules this model needs beyond the core ones (for the skip message)
    needs: tuple[str, ...] = field(default_factory=tuple)

    def feeds(self, seed: int = SEED) -> dict[str, np.ndarray]:
        """Fixed standard-normal inputs (state inputs scaled to 0.5, a plausible hidden state)."""
        rng = np.random.default_rng(seed)
        out = {}
        for i, (k, shape) in enumerate(self.inputs.items()):
            x = rng.standard_normal(shape).astype(np.float32)
            out[k] = x * np.float32(0.5) if i > 0 and self.is_recurrent else x
        return out

    @property
    def is_recurrent(self) -> bool:
        return len(self.inputs) > 1

    @property
    def spec_key(self) -> str:
        import torch

        text = "\0".join(
            [str(SPEC_VERSION), str(OPSET), str(SEED), torch.__version__, self.name,
             repr(sorted(self.inputs.items())), repr(self.outputs)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the PyTorch definitions (imported lazily: torch is only needed to (re)build the cache) ------


def _mlp_tanh() -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(4, 64), nn.Tanh(),
        nn.Linear(64, 64), nn.Tanh(),
        nn.Linear(64, 3),
    )


def _mlp_wide() -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(),
        nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


def _cnn1d() -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(3, 16, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(16, 32, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(32, 32, kernel_size=3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 5),
    )


def _conv_bn_relu6(c_in: int, c_out: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
    from torch import nn

    return [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(),
    ]


def _cnn2d_dw() -> nn.Module:
    from torch import nn

    return nn.Sequential(
        *_conv_bn_relu6(3, 16, 3, stride=2),  # stem: 16x16x16
        *_conv_bn_relu6(16, 16, 3, stride=1, groups=16),  # depthwise
        *_conv_bn_relu6(16, 32, 1, stride=1),  # pointwise
        *_conv_bn_relu6(32, 32, 3, stride=2, groups=32),  # depthwise, 8x8
        *_conv_bn_relu6(32, 64, 1, stride=1),  # pointwise
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _gru() -> nn.Module:
    from torch import nn

    class GRUStep(nn.Module):
        """One GRU step with explicit state: (x, h0) → (y, hn)."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(16, 64, batch_first=True)
            self.head = nn.Linear(64, 4)

        def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, ...]:
            seq, hn = self.rnn(x, h0)
            return self.head(seq[:, -1]), hn

    return GRUStep()


def _lstm() -> nn.Module:
    from torch import nn

    class LSTMStep(nn.Module):
        """One LSTM step with explicit state: (x, h0, c0) → (y, hn, cn)."""

        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(16, 64, batch_first=True)
            self.head = nn.Linear(64, 4)

        def forward(
            self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor
        ) -> tuple[torch.Tensor, ...]:
            seq, (hn, cn) = self.rnn(x, (h0, c0))
            return self.head(seq[:, -1]), hn, cn

    return LSTMStep()


BENCH_MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel("mlp_tanh", "soft-actuator forward model: MLP 4→64→64→3, tanh",
                   _mlp_tanh, {"x": (1, 4)}),
        BenchModel("mlp_wide", "MLP 64→256→256→10, ReLU", _mlp_wide, {"x": (1, 64)}),
        BenchModel("cnn1d", "Conv1d/ReLU/MaxPool stack, global average pool, linear head",
                   _cnn1d, {"x": (1, 3, 128)}, needs=("conv", "pool")),
        BenchModel("cnn2d_dw", "depthwise-separable CNN, BatchNorm+ReLU6, global pool, head",
                   _cnn2d_dw, {"x": (1, 3, 32, 32)}, needs=("conv", "pool")),
        BenchModel("gru", "GRU 16→64, one step with state, linear head",
                   _gru, {"x": (1, 1, 16), "h0": (1, 1, 64)}, ("y", "hn"), needs=("rnn",)),
        BenchModel("lstm", "LSTM 16→64, one step with state, linear head",
                   _lstm, {"x": (1, 1, 16), "h0": (1, 1, 64), "c0": (1, 1, 64)},
                   ("y", "hn", "cn"), needs=("rnn",)),
    )
}


@functools.cache
def _basic_block_class() -> type:
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """ResNet's BasicBlock: conv 3x3 (stride) + BN + ReLU, conv 3x3 + BN, the input (or its
        1x1 strided projection + BN where the shape changes) added, ReLU."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    return BasicBlock


def basic_block(cin: int, cout: int, stride: int) -> nn.Module:
    """A ResNet BasicBlock (``cin`` -> ``cout`` channels, first conv's ``stride``): the CUDA
    bench's ResNet-18 and the CUDA tests' small residual nets."""
    return _basic_block_class()(cin, cout, stride)


def default_cache_dir() -> Path:
    root = os.environ.get("EDGEC_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgec", "bench"
    )
    return Path(root)


def randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial statistics so folding them is actually tested."""
    import torch
    from torch import nn

    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.2)


def build(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``factory()`` built under ``seed``, BatchNorm statistics randomised (from ``seed + 1``,
    so folding them is not a no-op), in eval mode."""
    import torch

    torch.manual_seed(seed)
    model = factory()
    randomize_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def export(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    path: str | Path,
    exporter: Exporter,
    input_names: Sequence[str] = ("x",),
    output_names: Sequence[str] = ("y",),
    dynamic_batch: bool = False,
    opset: int | None = None,
    optimize: bool = True,
    **extra: Any,
) -> Path:
    """Export ``model`` to ONNX at ``path`` with the chosen exporter; returns ``path``.

    The dynamo exporter writes its weights to ``<path>.data``; the legacy one embeds them.
    ``dynamic_batch`` makes dimension 0 of every input (and, for legacy, output) symbolic:
    ``dynamic_axes`` for the legacy exporter, ``dynamic_shapes`` for dynamo (which needs an
    example batch of at least 2). ``optimize=False`` turns off the exporter's own graph clean-up
    (legacy: constant folding, dynamo: the ONNX optimiser), which leaves BatchNormalization nodes
    and shape-computation chains for edgec to remove. ``extra`` goes to ``torch.onnx.export``.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"input_names": list(input_names),
                              "output_names": list(output_names), **extra}
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            if dynamic_batch:
                kwargs["dynamic_axes"] = {n: {0: "batch"} for n in [*input_names, *output_names]}
            torch.onnx.export(model, tuple(inputs), str(path), dynamo=False,
                              do_constant_folding=optimize, **kwargs)
        elif exporter == "dynamo":
            if dynamic_batch:
                batch = torch.export.Dim("batch")
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in inputs)
            torch.onnx.export(model, tuple(inputs), str(path), dynamo=True, verbose=False,
                              external_data=True, optimize=optimize, **kwargs)
        else:
            raise ValueError(f"unknown exporter {exporter!r}")
    return path


def build_torch(spec: BenchModel) -> nn.Module:
    """The model's ``torch.nn.Module``: fixed seed, BatchNorm statistics randomised, eval mode."""
    return build(spec.factory, SEED)


def torch_param_count(spec: BenchModel) -> int:
    """Trainable parameters of the PyTorch model (BatchNorm folds into the conv before it)."""
    model = build_torch(spec)
    return sum(p.numel() for p in model.parameters())


def export_onnx(spec: BenchModel, path: Path) -> Path:
    """Export ``spec`` with the legacy exporter to ``path`` (written atomically)."""
    import torch

    model = build_torch(spec)
    args = [torch.from_numpy(x) for x in spec.feeds().values()]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    export(model, args, tmp, "legacy", input_names=list(spec.inputs),
           output_names=list(spec.outputs), opset=OPSET)
    os.replace(tmp, path)
    return path


def model_path(name: str, cache_dir: Path | None = None) -> Path:
    """The cached ONNX file of bench model ``name``, built first if it is not there."""
    spec = BENCH_MODELS[name]
    path = (cache_dir or default_cache_dir()) / f"{name}-{spec.spec_key}.onnx"
    if not path.is_file():
        export_onnx(spec, path)
    return path


def build_all(names: Sequence[str] | None = None, cache_dir: Path | None = None) -> dict[str, Path]:
    """Build (or reuse) every named bench model; returns name → ONNX path."""
    return {n: model_path(n, cache_dir) for n in (names or list(BENCH_MODELS))}
