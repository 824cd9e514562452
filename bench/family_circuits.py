"""C. elegans circuit policies bench: ``python -m bench.family_circuits [--repeat N]``.

One step per call (sequence length 1, the state passed in and out) of each model, compiled twice
where the structure matters — masks stored sparsely (CSR / per-neuron synapse lists) and densely
(masks folded into dense matrices, as an ONNX export would have them) — side by side: flash
(weight bytes), RAM (arena + state bytes), host time per step of the generated C (timed inside C
by ``bench.host``'s harness), MACs, mask density, and the sparse path's flash saving and speed-up.
Also CfC vs LTC per step on the same AutoNCP wiring, the NCAP swimmer, and a masked Linear
exported to ONNX (mask folded into a dense Gemm; the sparse pass recovers CSR under ``auto``).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import edgec
from bench.family_common import family_main
from bench.host import run_c_loop
from edgec.api import compile_graph
from edgec.ir import Graph, Node, Tensor
from edgec.ops.circuits import sparse_summary

ROOT = Path(__file__).resolve().parent.parent
ITERATIONS = 2000


def _ncps_model(kind: str, units: int, inputs: int) -> Callable[[str], edgec.CompiledModel]:
    import torch
    from ncps.torch import LTC, CfC
    from ncps.wirings import AutoNCP

    torch.manual_seed(0)
    wiring = AutoNCP(units, 4)
    net = (CfC(inputs, wiring) if kind == "cfc" else LTC(inputs, wiring)).eval()
    ex = (torch.randn(1, 1, inputs), torch.zeros(1, units))
    return lambda mode: edgec.compile(
        net, example_inputs=ex, options={"sparse": mode}, name=f"{kind}{units}_{mode}"
    )


def _cfc_fc(units: int, inputs: int) -> Callable[[str], edgec.CompiledModel]:
    import torch
    from ncps.torch import CfC

    torch.manual_seed(0)
    net = CfC(inputs, units, backbone_units=64).eval()
    ex = (torch.randn(1, 1, inputs), torch.zeros(1, units))
    return lambda mode: edgec.compile(net, example_inputs=ex, name=f"cfcfc{units}")


def _sparse_linear(n: int, k: int, density: float) -> Callable[[str], edgec.CompiledModel]:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((n, k)) * (rng.random((n, k)) < density)).astype(np.float32)

    def build(mode: str) -> edgec.CompiledModel:
        g = Graph(f"masked_{mode}")
        g.tensors["x"] = Tensor("x", (1, k))
        g.inputs, g.outputs = ["x"], ["y"]
        g.add_const("w", w if mode == "csr" else np.ascontiguousarray(w.T))
        g.tensors["y"] = Tensor("y", (1, n))
        op = "SparseLinear" if mode == "csr" else "MatMul"
        g.nodes.append(Node(op, "fc", ["x", "w"], ["y"]))
        return compile_graph(g, name=f"masked_{mode}", options={"sparse": mode})

    return build


def _masked_onnx(n: int, k: int, density: float) -> Callable[[str], edgec.CompiledModel]:
    """A torch Linear times a fixed 0/1 mask, exported to ONNX (legacy exporter: the mask is
    folded into a dense Gemm weight); ``auto`` recovers the CSR storage, ``dense`` keeps it."""
    import io
    import warnings

    import onnx
    import torch

    class MaskedLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(k, n)
            gen = torch.Generator().manual_seed(0)
            self.register_buffer("mask", (torch.rand(n, k, generator=gen) < density).float())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, self.fc.weight * self.mask, self.fc.bias)

    torch.manual_seed(0)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MaskedLinear().eval(), (torch.zeros(1, k),), buf, dynamo=False,
                          input_names=["x"], output_names=["y"])
    proto = onnx.load_from_string(buf.getvalue())
    return lambda mode: edgec.compile(
        proto, options={"sparse": mode}, name=f"masked_onnx_{mode}"
    )


def _ncap() -> Callable[[str], edgec.CompiledModel]:
    import torch

    sys.path.insert(0, str(ROOT / "examples" / "swimmer_ncap"))
    from ncap import SwimmerModule

    net = SwimmerModule(6).eval()
    return lambda mode: edgec.compile(net, example_inputs=(torch.zeros(1, 6),), name="ncap6")


def _time_step(cm: edgec.CompiledModel, repeat: int, work: Path) -> float:
    rng = np.random.default_rng(1)
    feeds = {
        p.name: (0.5 * rng.standard_normal(p.shape)).astype(np.float32) for p in cm.cmodel.inputs
    }
    seconds, _ = run_c_loop(cm.cmodel, feeds, ITERATIONS, repeat, work)
    return seconds * 1e9


def _row(model: str, variant: str, cm: edgec.CompiledModel, ns: float) -> dict[str, Any]:
    rep = cm.report()
    summary = sparse_summary(rep)
    return {
        "model": model,
        "variant": variant,
        "flash_bytes": rep["weight_bytes"],
        "ram_bytes": rep["arena_bytes"] + rep["state_bytes"],
        "ns_per_step": ns,
        "macs": rep["macs"],
        "density": summary["density"],
        "saving": "",
    }


CASES: list[tuple[str, Callable[[], Callable[[str], edgec.CompiledModel]], tuple[str, ...]]] = [
    ("ltc_autoncp32", lambda: _ncps_model("ltc", 32, 8), ("csr", "dense")),
    ("cfc_autoncp32", lambda: _ncps_model("cfc", 32, 8), ("csr", "dense")),
    ("cfc_fc32_bb64", lambda: _cfc_fc(32, 8), ("dense",)),
    ("masked_64x256_10pct", lambda: _sparse_linear(64, 256, 0.1), ("csr", "dense")),
    ("masked_onnx_64x256_10pct", lambda: _masked_onnx(64, 256, 0.1), ("auto", "dense")),
    ("ncap_swimmer6", _ncap, ("native",)),
]


def rows(repeat: int = 5) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-circuits-") as tmp:
        for model, make, variants in CASES:
            build = make()
            got = []
            for v in variants:
                cm = build(v)
                work = Path(tmp) / f"{model}_{v}"
                work.mkdir()
                got.append(_row(model, v, cm, _time_step(cm, repeat, work)))
            if len(got) == 2:
                sp, de = got
                saved = 1 - sp["flash_bytes"] / de["flash_bytes"]
                speed = de["ns_per_step"] / sp["ns_per_step"]
                sp["saving"] = f"{100 * saved:.0f}% flash, {speed:.2f}x speed"
                de["density"] = sp["density"]  # the mask's, folded into the dense matrix
            out.extend(got)
    return out


EXTRA_COLUMNS = (
    ("ns/step", "ns_per_step", "{:.0f}"),
    ("MACs", "macs", "{:,}"),
    ("density", "density", "{:.2f}"),
)


def main(argv: list[str] | None = None) -> int:
    return family_main(__doc__ or "", rows, EXTRA_COLUMNS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
