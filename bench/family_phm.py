"""PHM (hypercomplex) layers bench: ``python -m bench.family_phm [--repeat N]``.

Each model, built from the PHNN reference layers (``edgec.nn.phm``), is compiled two
ways side by side:

* ``factored``: only the factors ``A`` and ``F`` in flash (about 1/n of the parameters), the
  Kronecker sums computed inside the kernels (``PhmLinear`` / ``PhmConv``);
* ``dense``: ``W = sum A (x) F`` materialised at compile time (plain Gemm / Conv kernels).

Columns: flash (weight bytes), RAM (arena + state bytes, from ``report()``), host time per run
of the generated C (timed inside C by ``bench.host``'s harness), MACs (the factored count
includes the ``n^2 * in`` input mixing), and the factored variant's flash saving and time cost
against ``dense``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import edgec
from bench.family_common import family_main
from bench.host import run_c_loop

ITERATIONS = 200
VARIANTS = ("factored", "dense")


def _mlp(n: int) -> tuple[Any, tuple[int, ...]]:
    import torch
    from torch import nn

    from edgec.nn.phm import PHMLinear

    torch.manual_seed(0)
    net = nn.Sequential(
        PHMLinear(n, 256, 256),
        nn.ReLU(),
        PHMLinear(n, 256, 256),
        nn.ReLU(),
        PHMLinear(n, 256, 16),
    ).eval()
    return net, (1, 256)


def _cnn(n: int) -> tuple[Any, tuple[int, ...]]:
    import torch
    from torch import nn

    from edgec.nn.phm import PHConv, PHMLinear

    class PHCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = PHConv(n, n, 8 * n, 3, padding=1)
            self.c2 = PHConv(n, 8 * n, 8 * n, 3, padding=1, stride=2)
            self.c3 = PHConv(n, 8 * n, 16 * n, 3, padding=1, stride=2)
            self.fc = PHMLinear(n, 16 * n * 16, 4 * n)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.c1(x))
            x = torch.relu(self.c2(x))
            x = torch.relu(self.c3(x))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    return PHCNN().eval(), (1, n, 16, 16)


CASES: list[tuple[str, Callable[[], tuple[Any, tuple[int, ...]]]]] = [
    ("phm_mlp_256x3_n4", lambda: _mlp(4)),
    ("phm_mlp_256x3_n8", lambda: _mlp(8)),
    ("phcnn_16x16_n4", lambda: _cnn(4)),
]


def rows(repeat: int = 5) -> list[dict[str, Any]]:
    import torch

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-phm-") as tmp:
        for model, make in CASES:
            net, shape = make()
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                want = net(x).numpy()
            got: dict[str, dict[str, Any]] = {}
            for v in VARIANTS:
                cm = edgec.compile(net, example_inputs=(x,), options={"phm": v}, name=f"phm_{v}")
                work = Path(tmp) / f"{model}_{v}"
                work.mkdir()
                feeds = {cm.input_names[0]: x.numpy()}
                seconds, outs = run_c_loop(cm.cmodel, feeds, ITERATIONS, repeat, work)
                err = float(np.abs(outs[0].reshape(want.shape) - want).max())
                rep = cm.report()
                got[v] = {
                    "model": model,
                    "variant": v,
                    "flash_bytes": rep["weight_bytes"],
                    "ram_bytes": rep["arena_bytes"] + rep["state_bytes"],
                    "us_per_run": seconds * 1e6,
                    "macs": rep["macs"],
                    "max_abs_err": err,
                    "saving": "",
                }
            dense, fact = got["dense"], got["factored"]
            fact["saving"] = (
                f"{dense['flash_bytes'] / fact['flash_bytes']:.1f}x less flash, "
                f"{fact['us_per_run'] / dense['us_per_run']:.2f}x time"
            )
            out.extend(got[v] for v in VARIANTS)
    return out


EXTRA_COLUMNS = (("us/run", "us_per_run", "{:.1f}"), ("MACs", "macs", "{:,}"))


def main(argv: list[str] | None = None) -> int:
    return family_main(__doc__ or "", rows, EXTRA_COLUMNS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
