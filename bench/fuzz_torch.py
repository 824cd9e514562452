"""Differential fuzzing of the PyTorch front-end: random compositions of supported layers,
compiled by edgec (C on the host) and compared with torch.

Each case is built from its own seed (``--seed`` + case index), so a failing case is rebuilt with
``python bench/fuzz_torch.py --seed S --cases 1 --first I``. A case ends in one of:

* ``ok``        compiled, and the C outputs match torch within ``atol + rtol * |torch|`` (over
  4 steps from the initial state for the cases wrapped in a hand-written buffer state);
* ``refused``   edgec raised an :class:`edgec.errors.EdgecError` (a stated reason);
* ``mismatch``  compiled, outputs differ (a silent wrong program: a bug);
* ``internal``  any other exception (a bug).

Usage: ``python bench/fuzz_torch.py --cases 1000 [--seed 0] [--verbose]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RTOL, ATOL = 1e-4, 1e-4
OUTCOMES = ("ok", "refused", "mismatch", "internal")

_ACTS: list[Callable[[], Any]] = []


def _acts() -> list[Callable[[], Any]]:
    from torch import nn

    if not _ACTS:
        _ACTS.extend([
            nn.ReLU, nn.Tanh, nn.Sigmoid, lambda: nn.LeakyReLU(0.1), nn.ELU, nn.Hardswish,
            nn.GELU, nn.ReLU6, nn.Softplus, nn.Hardsigmoid, nn.SELU, nn.Mish, nn.Identity,
            lambda: nn.Dropout(0.2),
        ])
    return _ACTS


def _randomise_bn(bn: Any, gen: Any) -> Any:
    import torch

    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
        bn.running_var.uniform_(0.5, 1.5, generator=gen)
        bn.weight.uniform_(0.5, 1.5, generator=gen)
        bn.bias.uniform_(-0.5, 0.5, generator=gen)
    return bn


def _image_layers(r: random.Random, gen: Any, c: int, h: int, w: int) -> tuple[list, int, int, int]:
    from torch import nn

    layers: list[Any] = []
    for _ in range(r.randint(1, 3)):
        choice = r.choice(["conv", "conv", "bn", "pool", "act", "convt"])
        if choice in ("conv", "convt") and min(h, w) >= 3:
            k = r.choice([1, 3])
            out = r.randint(1, 6)
            if choice == "convt" and r.random() < 0.5:
                layers.append(nn.ConvTranspose2d(c, out, k, stride=r.choice([1, 2])))
                s = layers[-1].stride[0]
                h, w = (h - 1) * s + k, (w - 1) * s + k
            else:
                pad, stride = r.choice([0, k // 2]), r.choice([1, 1, 2])
                groups = c if (c == out and r.random() < 0.3) else 1
                layers.append(nn.Conv2d(c, out, k, stride, pad, groups=groups,
                                        bias=r.random() < 0.8))
                h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
            c = out
        elif choice == "bn":
            layers.append(_randomise_bn(nn.BatchNorm2d(c), gen))
        elif choice == "pool" and min(h, w) >= 2:
            kind = r.choice([nn.MaxPool2d, nn.AvgPool2d])
            layers.append(kind(2))
            h, w = h // 2, w // 2
        else:
            layers.append(r.choice(_acts())())
    return layers, c, h, w


class _Residual:
    """x + f(x) around a shape-keeping block (built lazily: torch is imported on use)."""

    @staticmethod
    def make(block: Any) -> Any:
        from torch import nn

        class Residual(nn.Module):
            def __init__(self, f: Any):
                super().__init__()
                self.f = f

            def forward(self, x: Any) -> Any:
                return x + self.f(x)

        return Residual(block)


class _BufferState:
    """A hand-written leaky state around a model: ``self.v = decay * self.v + f(x)`` (or
    ``copy_`` / in-place), the state carried in a buffer from call to call."""

    @staticmethod
    def make(f: Any, out_shape: tuple[int, ...], how: str, decay: float) -> Any:
        import torch
        from torch import nn

        class BufferState(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.f = f
                self.register_buffer("v", torch.full(out_shape, 0.1))

            def forward(self, x: Any) -> Any:
                if how == "inplace":
                    self.v.mul_(decay).add_(self.f(x))
                    return self.v * 1.0
                v = decay * self.v + self.f(x)
                if how == "copy":
                    self.v.copy_(v)
                else:
                    self.v = v
                return v

        return BufferState()


@dataclass
class Case:
    seed: int
    model: Any
    example: Any
    layers: list[str] = field(default_factory=list)
    steps: int = 1  # > 1: a stateful model, stepped this many times from its initial state


def random_case(seed: int) -> Case:
    """One random model and input, fully determined by ``seed``."""
    import torch
    from torch import nn

    r = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers: list[Any] = []
    if r.random() < 0.5:  # an image model, flattened into a vector head
        c, h, w = r.randint(1, 4), r.randint(3, 9), r.randint(3, 9)
        example = torch.randn(1, c, h, w, generator=gen)
        body, c2, h2, w2 = _image_layers(r, gen, c, h, w)
        layers.extend(body)
        if r.random() < 0.3 and min(h2, w2) >= 1:
            layers.append(nn.AdaptiveAvgPool2d(1))
            h2 = w2 = 1
        layers.append(nn.Flatten())
        feat = c2 * h2 * w2
    else:
        feat = r.randint(1, 24)
        example = torch.randn(1, feat, generator=gen)
    for _ in range(r.randint(1, 4)):
        choice = r.choice(["linear", "linear", "act", "bn", "res"])
        if choice == "linear":
            out = r.randint(1, 24)
            layers.append(nn.Linear(feat, out, bias=r.random() < 0.8))
            feat = out
        elif choice == "bn":
            layers.append(_randomise_bn(nn.BatchNorm1d(feat), gen))
        elif choice == "res":
            layers.append(_Residual.make(nn.Sequential(nn.Linear(feat, feat), r.choice(_acts())())))
        else:
            layers.append(r.choice(_acts())())
    if r.random() < 0.2:
        layers.append(r.choice([nn.Softmax(dim=-1), nn.LogSoftmax(dim=-1)]))
    model = nn.Sequential(*layers).eval()
    names = [type(m).__name__ for m in layers]
    if r.random() < 0.2:
        with torch.no_grad():
            shape = tuple(model(example).shape)
        how = r.choice(["rebind", "copy", "inplace"])
        model = _BufferState.make(model, shape, how, r.uniform(0.3, 0.95)).eval()
        return Case(seed, model, example, [*names, f"state:{how}"], steps=4)
    return Case(seed, model, example, names)


def run_case(case: Case) -> tuple[str, str]:
    """(outcome, detail) of one case."""
    import torch

    import edgec
    from edgec.errors import EdgecError

    saved = {k: v.clone() for k, v in case.model.state_dict().items()}
    xs = [case.example * (1 + 0.5 * i) for i in range(case.steps)]
    try:
        cm = edgec.compile(case.model, example_inputs=case.example, name="fuzz")
        if case.steps > 1:
            cm.reset()
            got = np.stack([np.asarray(cm.step(x.numpy()), np.float32) for x in xs])
        else:
            got = np.asarray(cm.run(case.example.numpy()), np.float32)
    except EdgecError as exc:
        return "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
        return "internal", f"{type(exc).__name__}: {exc}"
    case.model.load_state_dict(saved)
    with torch.no_grad():
        if case.steps > 1:
            ref = np.stack([case.model(x).numpy() for x in xs])
        else:
            ref = case.model(case.example).numpy()
    got = got.reshape(ref.shape) if got.size == ref.size else got
    if got.shape != ref.shape:
        return "mismatch", f"shape {got.shape} vs torch {ref.shape}"
    bad = np.abs(got - ref) > ATOL + RTOL * np.abs(ref)
    if np.any(bad) or not np.array_equal(np.isnan(got), np.isnan(ref)):
        return "mismatch", f"max |diff| {float(np.nanmax(np.abs(got - ref))):.3g}"
    return "ok", ""


def fuzz(cases: int, seed: int = 0, first: int = 0, verbose: bool = False) -> Counter:
    counts: Counter = Counter()
    for i in range(first, first + cases):
        case = random_case(seed * 1_000_003 + i)
        outcome, detail = run_case(case)
        counts[outcome] += 1
        if verbose or outcome in ("mismatch", "internal"):
            print(f"case {i} ({'-'.join(case.layers)}): {outcome} {detail}", file=sys.stderr)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", type=int, default=0, help="index of the first case")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    counts = fuzz(args.cases, args.seed, args.first, args.verbose)
    secs = time.monotonic() - t0
    print(f"{args.cases} cases (seed {args.seed}) in {secs:.0f} s: "
          + ", ".join(f"{k} {counts.get(k, 0)}" for k in OUTCOMES))
    return 1 if counts.get("mismatch") or counts.get("internal") else 0


if __name__ == "__main__":
    sys.exit(main())
