"""Spiking building blocks (``edgec.nn.LIF``, ``edgec.nn.LeakyIntegrator``) for PyTorch.

``edgec.nn.LIF`` is a leaky integrate-and-fire layer you can train with surrogate gradients (or
evolve) and compile to C; ``edgec.nn.LeakyIntegrator`` is a non-spiking output neuron. Both keep
their state inside the module (call ``reset()`` between sequences), so a model is stepped once per
tick, exactly as the compiled ``<name>_step`` is::

    import torch, edgec, edgec.nn

    net = torch.nn.Sequential(torch.nn.Linear(2, 32), edgec.nn.LIF(32, beta=0.9, alpha=0.5),
                              torch.nn.Linear(32, 1), edgec.nn.LeakyIntegrator(1, lam=0.95))
    # ... train: for each sequence, reset_states(net), then y_t = net(x_t) for every tick ...
    m = edgec.compile(net, example_inputs=(torch.zeros(1, 2),))
    m.reset()
    y = m.step(x_t)       # == net(x_t) after reset_states(net)

The layer after a spiking layer (``Linear`` above) is compiled event-driven: it adds the weight
columns of the inputs that spiked, with the spikes bit-packed in RAM.

Per tick, for every neuron (all float32, in this order; H(v) = 1 if v > 0 else 0)::

    syn   = alpha * syn + x                       (when alpha is given: current-based LIF)
    mem   = beta * mem + (syn or x)
    theta = threshold + adapt_add * trace         (when adapt_decay is given: adaptive threshold)
    s     = H(mem - theta)
    mem   = mem - s * theta   (reset="subtract")  |  mem - s * mem  ("zero")  |  mem  ("none")
    trace = adapt_decay * trace + s

``beta`` and ``alpha`` are clamped to [0, 1]; parameters may be scalars or one value per neuron and
can be learned (``learn=True``). The spike's backward pass uses a surrogate derivative:
``"fast_sigmoid"`` 1 / (slope·|v| + 1)² (default, slope 25) or ``"atan"``
(slope / 2) / (1 + (π/2 · slope · v)²) (slope 2).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SURROGATES = ("fast_sigmoid", "atan")
RESETS = ("subtract", "zero", "none")


class _Spike(torch.autograd.Function):
    """Heaviside forward, surrogate derivative backward."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.kind, ctx.slope = kind, slope
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (v,) = ctx.saved_tensors
        k = ctx.slope
        if ctx.kind == "atan":
            d = (k / 2) / (1 + (math.pi / 2 * k * v) ** 2)
        else:
            d = 1.0 / (k * v.abs() + 1.0) ** 2
        return grad * d, None, None


def spike(
    v: torch.Tensor, surrogate: str = "fast_sigmoid", slope: float | None = None
) -> torch.Tensor:
    """H(v) with a surrogate gradient."""
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
    k = slope if slope is not None else (25.0 if surrogate == "fast_sigmoid" else 2.0)
    return _Spike.apply(v, surrogate, float(k))


def _param(module: nn.Module, name: str, value: Any, size: int, learn: bool) -> None:
    """A float32 scalar or per-neuron parameter: trainable, or a buffer (saved, not trained)."""
    if value is None:
        module.register_buffer(name, None)
        return
    t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if t.dim() > 0 and t.numel() not in (1, size):
        raise ValueError(f"{name} has {t.numel()} values for {size} neurons")
    if learn:
        module.register_parameter(name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)


class LIF(nn.Module):
    """A layer of ``size`` LIF neurons (see the module docstring for the update).

    Args:
        size: number of neurons (the last dimension of the input).
        beta: membrane decay in [0, 1] (scalar or per neuron).
        threshold: firing threshold θ0.
        alpha: synaptic-current decay; ``None`` feeds the input straight into the membrane.
        reset: ``"subtract"`` (default), ``"zero"`` or ``"none"``.
        adapt_decay, adapt_add: adaptive threshold θ = θ0 + adapt_add·trace with
            trace ← adapt_decay·trace + s; ``None`` (default) for a fixed threshold.
        surrogate, slope: the spike's surrogate derivative.
        learn: make beta, alpha, threshold (and the adaptation) trainable parameters.
    """

    def __init__(
        self,
        size: int,
        beta: Any = 0.9,
        threshold: Any = 1.0,
        alpha: Any = None,
        reset: str = "subtract",
        adapt_decay: Any = None,
        adapt_add: Any = 0.0,
        surrogate: str = "fast_sigmoid",
        slope: float | None = None,
        learn: bool = False,
    ):
        super().__init__()
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {surrogate!r}")
        self.size, self.reset_mode, self.surrogate, self.slope = size, reset, surrogate, slope
        _param(self, "beta", beta, size, learn)
        _param(self, "threshold", threshold, size, learn)
        _param(self, "alpha", alpha, size, learn)
        _param(self, "adapt_decay", adapt_decay, size, learn)
        _param(self, "adapt_add", None if adapt_decay is None else adapt_add, size, learn)
        self.mem: torch.Tensor | None = None
        self.syn: torch.Tensor | None = None
        self.trace: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the state: the next call starts from zero membrane, current and trace."""
        self.mem = self.syn = self.trace = None

    def detach_(self) -> None:
        """Cut the state from the autograd graph (truncated backpropagation through time)."""
        for k in ("mem", "syn", "trace"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.detach())

    def _zeros(self, x: torch.Tensor, cur: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros_like(x) if cur is None or cur.shape != x.shape else cur

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(f"LIF({self.size}) got an input of shape {tuple(x.shape)}")
        mem = self._zeros(x, self.mem)
        cur = x
        if self.alpha is not None:
            self.syn = self.alpha.clamp(0, 1) * self._zeros(x, self.syn) + x
            cur = self.syn
        mem = self.beta.clamp(0, 1) * mem + cur
        theta = self.threshold
        trace = None
        if self.adapt_decay is not None:
            trace = self._zeros(x, self.trace)
            theta = self.threshold + self.adapt_add * trace
        s = spike(mem - theta, self.surrogate, self.slope)
        if self.reset_mode == "subtract":
            mem = mem - s * theta
        elif self.reset_mode == "zero":
            mem = mem - s * mem
        self.mem = mem
        if trace is not None:
            assert self.adapt_decay is not None
            self.trace = self.adapt_decay * trace + s
        return s

    def extra_repr(self) -> str:
        return f"{self.size}, reset={self.reset_mode!r}, surrogate={self.surrogate!r}"


class LeakyIntegrator(nn.Module):
    """Non-spiking output neurons: y ← λ·y + (1-λ)·x (state inside; ``reset()`` zeroes y)."""

    def __init__(self, size: int, lam: Any = 0.9, learn: bool = False):
        super().__init__()
        self.size = size
        _param(self, "lam", lam, size, learn)
        self.y: torch.Tensor | None = None

    def reset(self) -> None:
        self.y = None

    def detach_(self) -> None:
        if self.y is not None:
            self.y = self.y.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.zeros_like(x) if self.y is None or self.y.shape != x.shape else self.y
        self.y = self.lam * y + (1 - self.lam) * x
        return self.y

    def extra_repr(self) -> str:
        return f"{self.size}"


def reset_states(module: nn.Module) -> None:
    """Call ``reset()`` on every edgec.nn layer inside ``module``."""
    for m in module.modules():
        if isinstance(m, (LIF, LeakyIntegrator)):
            m.reset()
