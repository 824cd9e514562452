"""A parameterized-hypercomplex CNN (PHConv + PHMLinear, n = 4) on synthetic coloured shapes.

Generates the dataset itself (16x16 RGB images of twelve procedurally drawn shapes and
orientations, random colour, position and size, noisy background), trains a small PH-CNN written
with the PHNN reference layers (``edgec.nn.phm``), reports the test accuracy, compiles it
with edgec twice (``phm=dense``: weights materialised; ``phm=factored``: only the Kronecker
factors in flash), shows what ``phm=auto`` picks for a Cortex-M4F and a Cortex-M0, checks the
generated C against PyTorch on the test set, and prints flash, RAM and host time per inference.

    python examples/phm_shapes/train.py            # full run (well under a minute on 2 cores)
    python examples/phm_shapes/train.py --quick    # reduced run for CI (seconds)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import edgec  # noqa: E402
from bench.host import run_c_loop  # noqa: E402
from edgec.nn.phm import PHConv, PHMLinear  # noqa: E402

SIDE = 16
NOISE = 0.2  # standard deviation of the pixel noise
N = 4  # hypercomplex dimension: every layer's channels/features are multiples of 4
RTOL, ATOL = 1e-4, 1e-5

# -- the dataset ------------------------------------------------------------------------------

Mask = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def _disc(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return u**2 + v**2 <= r**2


def _square(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r


def _triangle_up(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    # apex at the top (image rows grow downwards), base at the bottom
    return (v <= 0.8 * r) & (np.abs(u) <= 0.5 * (v + r))


def _triangle_down(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _triangle_up(u, -v, r)


def _triangle_left(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _triangle_up(v, u, r)


def _triangle_right(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _triangle_up(v, -u, r)


def _bar_horizontal(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return (np.abs(u) <= r) & (np.abs(v) <= 1.0)


def _bar_vertical(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _bar_horizontal(v, u, r)


def _bar_diagonal(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """A bar along the image's main diagonal (top left to bottom right)."""
    return _bar_horizontal((u + v) / np.sqrt(2.0), (v - u) / np.sqrt(2.0), r)


def _bar_antidiagonal(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _bar_diagonal(-u, v, r)


def _plus(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return _bar_horizontal(u, v, r) | _bar_vertical(u, v, r)


#: the classes (a multiple of n = 4: the PHM head's outputs must be)
SHAPES: list[tuple[str, Mask]] = [
    ("disc", _disc),
    ("square", _square),
    ("triangle up", _triangle_up),
    ("triangle down", _triangle_down),
    ("triangle left", _triangle_left),
    ("triangle right", _triangle_right),
    ("bar -", _bar_horizontal),
    ("bar |", _bar_vertical),
    ("bar \\", _bar_diagonal),
    ("bar /", _bar_antidiagonal),
    ("plus", _plus),
    ("cross", lambda u, v, r: _bar_diagonal(u, v, r) | _bar_antidiagonal(u, v, r)),
]


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """One ``[3, SIDE, SIDE]`` image of shape ``label``: random colour, centre (+-2 px) and size
    on a random dim background, plus Gaussian pixel noise (sigma NOISE)."""
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    c = (SIDE - 1) / 2
    u = xs - c - rng.uniform(-2.0, 2.0)
    v = ys - c - rng.uniform(-2.0, 2.0)
    mask = SHAPES[label][1](u, v, rng.uniform(3.0, 6.0))
    background = rng.uniform(0.0, 0.3, size=(3, 1, 1))
    colour = rng.uniform(0.5, 1.0, size=(3, 1, 1))
    img = np.where(mask[None], colour, background) + rng.normal(0.0, NOISE, (3, SIDE, SIDE))
    return img.astype(np.float32)


def dataset(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(SHAPES)
    rng.shuffle(labels)
    x = np.stack([draw(int(k), rng) for k in labels])
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


# -- the model --------------------------------------------------------------------------------


class PHCNN(nn.Module):
    """RGB plus a luminance channel (4 = n input channels), three PH convolutions, a PHM head."""

    def __init__(self, classes: int = len(SHAPES)):
        super().__init__()
        self.c1 = PHConv(N, N, 32, 3, padding=1)  # 16x16
        self.c2 = PHConv(N, 32, 64, 3, padding=1, stride=2)  # 8x8
        self.c3 = PHConv(N, 64, 64, 3, padding=1, stride=2)  # 4x4
        self.fc = PHMLinear(N, 64 * 4 * 4, classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = torch.cat([rgb, rgb.mean(1, keepdim=True)], 1)
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(torch.flatten(x, 1))


PH_LAYERS = ("c1", "c2", "c3", "fc")


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float
) -> float:
    """Adam (one-cycle schedule) with label-smoothed cross-entropy; returns the last epoch's
    mean loss.

    Label smoothing keeps the logits moderate (a few units instead of tens): a small logit
    computed as the difference of large partial sums carries float32 rounding of the size of
    those sums, and an element-wise rtol 1e-4 / atol 1e-5 comparison of two float32
    implementations (PyTorch's and the C's, summing in different orders) then fails on
    rounding alone, although both are equally close to a float64 evaluation."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * ((len(x) + batch - 1) // batch)
    )
    gen = torch.Generator().manual_seed(1)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    mean = 0.0
    for _ in range(epochs):
        total = 0.0
        order = torch.randperm(len(x), generator=gen)
        for k in range(0, len(x), batch):
            idx = order[k : k + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        mean = total / len(x)
    model.eval()
    return mean


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


# -- compile and check ------------------------------------------------------------------------


def factored_layers(cm: edgec.CompiledModel) -> list[str]:
    """The PH layers a compiled model keeps factored (their ``<layer>_A`` factor is an input of a
    ``PhmConv`` / ``PhmLinear`` node); the others were materialised as plain Conv / Gemm."""
    a_inputs = [n.inputs[1] for n in cm.graph.nodes if n.op in ("PhmConv", "PhmLinear")]
    return [name for name in PH_LAYERS if any(a.startswith(f"{name}_A") for a in a_inputs)]


@dataclass
class Variant:
    mode: str
    flash_bytes: int
    ram_bytes: int
    macs: int
    us_per_inference: float
    max_abs_diff: float
    of_tolerance: float  # the worst |C - PyTorch| / (atol + rtol * |PyTorch|): <= 1 passes
    classes_agree: float
    passed: bool


@dataclass
class Result:
    accuracy: float
    variants: dict[str, Variant] = field(default_factory=dict)
    auto: dict[str, list[str]] = field(default_factory=dict)
    auto_passed: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (bool(self.variants) and all(v.passed for v in self.variants.values())
                and all(self.auto_passed.values()))


def check_variant(
    model: nn.Module, mode: str, x_test: torch.Tensor, want: np.ndarray, out: Path, timing: int
) -> Variant:
    """Compile in ``phm=mode``, run the C on every test image, time it inside C."""
    cm = edgec.compile(model, example_inputs=(x_test[:1],), name=f"phm_shapes_{mode}",
                       options={"phm": mode})
    cm.write(out / mode)
    got = np.concatenate([cm.run(x_test[i : i + 1].numpy()) for i in range(len(x_test))])
    ok = bool(np.allclose(got, want, rtol=RTOL, atol=ATOL))
    of_tolerance = float((np.abs(got - want) / (ATOL + RTOL * np.abs(want))).max())
    agree = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    with tempfile.TemporaryDirectory(prefix="phm-shapes-") as tmp:
        seconds, _ = run_c_loop(cm.cmodel, {cm.input_names[0]: x_test[:1].numpy()}, timing, 5,
                                Path(tmp))
    rep = cm.report()
    return Variant(
        mode=mode,
        flash_bytes=rep["weight_bytes"],
        ram_bytes=rep["arena_bytes"] + rep["state_bytes"],
        macs=rep["macs"],
        us_per_inference=seconds * 1e6,
        max_abs_diff=float(np.abs(got - want).max()),
        of_tolerance=of_tolerance,
        classes_agree=agree,
        passed=ok and agree == 1.0,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small dataset, two epochs, for CI")
    ap.add_argument("--out", default="build/phm_shapes", help="where to write the C sources")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> Result:
    t_start = time.perf_counter()
    torch.manual_seed(0)
    n_train, n_test = (384, 64) if args.quick else (3000, 800)
    epochs = 2 if args.quick else 6
    x_train, y_train = dataset(n_train, seed=1)
    x_test, y_test = dataset(n_test, seed=2)
    print(f"dataset: {n_train} train / {n_test} test RGB {SIDE}x{SIDE} images, "
          f"{len(SHAPES)} classes ({', '.join(name for name, _ in SHAPES)})")

    model = PHCNN()
    t0 = time.perf_counter()
    loss = train(model, x_train, y_train, epochs=epochs, batch=64, lr=0.01)
    acc = accuracy(model, x_test, y_test)
    # PHConv owns a bias its forward never uses (as in the paper's code): not counted
    params = sum(p.numel() for name, p in model.named_parameters()
                 if not (name.endswith(".bias") and isinstance(model.get_submodule(name[:-5]),
                                                                PHConv)))
    print(f"PH-CNN (n={N}): {params:,} trained parameters; {epochs} epochs in "
          f"{time.perf_counter() - t0:.1f} s, final loss {loss:.3f}")
    print(f"test accuracy {acc:.1%} (chance {1 / len(SHAPES):.1%})")
    result = Result(accuracy=acc)

    with torch.no_grad():
        want = model(x_test).numpy()
    out = Path(args.out)
    timing = 20 if args.quick else 200
    for mode in ("dense", "factored"):
        result.variants[mode] = check_variant(model, mode, x_test, want, out, timing)

    for target in ("cortex-m4f", "cortex-m0"):
        cm = edgec.compile(model, example_inputs=(x_test[:1],), name="phm_shapes_auto",
                           options={"phm": "auto", "target": target})
        result.auto[target] = factored_layers(cm)
        got = np.concatenate([cm.run(x_test[i : i + 1].numpy()) for i in range(len(x_test))])
        same = bool(np.allclose(got, want, rtol=RTOL, atol=ATOL)
                    and np.array_equal(got.argmax(-1), want.argmax(-1)))
        result.auto_passed[target] = same
        kept = [f"{k}={'factored' if k in result.auto[target] else 'dense'}" for k in PH_LAYERS]
        print(f"phm=auto for {target:10}: {', '.join(kept)} "
              f"(weights {cm.report()['weight_bytes']:,} B; C {'==' if same else '!='} PyTorch)")

    print()
    print(table(result.variants))
    dense, fact = result.variants["dense"], result.variants["factored"]
    print(f"\nfactored: {dense.flash_bytes / fact.flash_bytes:.1f}x less weight flash, "
          f"{fact.us_per_inference / dense.us_per_inference:.2f}x the host time of dense")
    if result.passed:
        print(f"C == PyTorch: logits within rtol {RTOL:g} / atol {ATOL:g} and identical predicted "
              f"classes on all {n_test} test images, in every mode")
    else:
        print("FAIL: the generated C differs from PyTorch")
    print(f"C sources in {out}/{{dense,factored}}; total {time.perf_counter() - t_start:.1f} s")
    return result


def table(variants: dict[str, Variant]) -> str:
    head = ("phm", "weight flash B", "arena RAM B", "MACs", "host us/inf", "max |diff|",
            "of tolerance", "classes agree")
    rows: list[tuple[Any, ...]] = [head]
    for v in variants.values():
        rows.append((v.mode, f"{v.flash_bytes:,}", f"{v.ram_bytes:,}", f"{v.macs:,}",
                     f"{v.us_per_inference:.1f}", f"{v.max_abs_diff:.1e}",
                     f"{v.of_tolerance:.2f}", f"{v.classes_agree:.0%}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return 0 if run(parse_args(argv)).passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
