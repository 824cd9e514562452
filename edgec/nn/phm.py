"""Reference PHM layers, written the way the PHNN paper's public code writes them.

``PHMLinear`` (factors ``a`` ``[n, n, n]`` and ``s`` ``[n, out/n, in/n]``, a bias) and ``PHConv``
(factors ``A`` and ``F`` ``[n, out/n, in/n, k, k]``) rebuild their weight ``sum_m A[m] (x) F[m]``
inside ``forward`` and store it in ``self.weight``. Two traits of that code matter to a compiler
and are reproduced on purpose:

* the Kronecker product builds its output size as ``torch.Size(torch.tensor(a.shape[-2:]) *
  torch.tensor(b.shape[-2:]))``: symbolic tracing (``torch.fx``) and ``torch.export`` cannot turn
  traced shapes into a tensor and back, so neither can capture these layers;
* ``PHConv`` creates a ``bias`` parameter that ``forward`` never uses.

edgec recognises both classes natively (``edgec.frontend.pytorch.lib_phm``): the traced model keeps
each layer as a leaf, and the handler reads the factors directly. Users with their own copy of
the paper's classes register them with
``edgec.frontend.pytorch.lib_phm.register_phm_class("their.module.PHMLinear", "linear")``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual spelling


def _xavier(shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.zeros(shape)))


class PHMLinear(nn.Module):
    """A parameterized hypercomplex linear layer: ``y = x W^T + b``, ``W = sum_m a[m] (x) s[m]``."""

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        if in_features % n or out_features % n:
            raise ValueError(f"in_features and out_features must be multiples of n={n}")
        self.n = n
        self.in_features = in_features
        self.out_features = out_features
        self.a = _xavier((n, n, n))
        self.s = _xavier((n, out_features // n, in_features // n))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight = torch.zeros((out_features, in_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    @staticmethod
    def kronecker_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        size = torch.Size(torch.tensor(a.shape[-2:]) * torch.tensor(b.shape[-2:]))
        prod = a.unsqueeze(-1).unsqueeze(-3) * b.unsqueeze(-2).unsqueeze(-4)
        return prod.reshape(prod.shape[:-4] + size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.weight = torch.sum(self.kronecker_product(self.a, self.s), dim=0)
        return F.linear(x.type(self.weight.type()), self.weight, self.bias)


class PHConv(nn.Module):
    """A parameterized hypercomplex 2-D convolution (square kernel, no dilation or groups).

    Like the paper's code it owns a ``bias`` that ``forward`` does not use.
    """

    def __init__(
        self,
        n: int,
        in_features: int,
        out_features: int,
        kernel_size: int,
        padding: int = 0,
        stride: int = 1,
    ):
        super().__init__()
        if in_features % n or out_features % n:
            raise ValueError(f"in_features and out_features must be multiples of n={n}")
        self.n = n
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.padding = padding
        self.stride = stride
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.A = _xavier((n, n, n))
        self.F = _xavier((n, out_features // n, in_features // n, kernel_size, kernel_size))
        self.weight = torch.zeros((out_features, in_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    @staticmethod
    def kronecker_product(a: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        size = torch.Size(torch.tensor(a.shape[-2:]) * torch.tensor(f.shape[-4:-2]))
        taps = torch.Size(torch.tensor(f.shape[-2:]))
        prod = a.unsqueeze(-1).unsqueeze(-3).unsqueeze(-1).unsqueeze(-1) * f.unsqueeze(
            -4
        ).unsqueeze(-6)
        return prod.reshape(prod.shape[:1] + size + taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.weight = torch.sum(self.kronecker_product(self.A, self.F), dim=0)
        x = x.type(self.weight.type())
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)
