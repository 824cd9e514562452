"""Spiking networks bench: ``python -m bench.family_spiking [--repeat N]``.

Each spiking model is compiled three ways, side by side:

* ``packed`` (default): layers fed by spikes are event-driven (add the weight columns of the inputs
  that spiked, no multiplications) and the spikes they read are bit-packed (32 per word);
* ``event``: event-driven with float spikes;
* ``dense``: the plain dense kernel (as an ONNX export would compile).

Columns: flash (weight bytes), RAM (arena + state bytes, from ``report()``), host time per step
of the generated C (timed inside C by ``bench.host``'s harness, on the state reached after 200
steps of a realistic input, so the spike activity is the network's own), MACs (dense count; the
event-driven kernels do additions only), the spike activity of the layers' inputs, and the saving
of each variant against ``dense``.
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

ITERATIONS = 2000
WARMUP_STEPS = 200
VARIANTS = ("packed", "event", "dense")


def _edgec_mlp(n_in: int, hidden: int, n_out: int) -> tuple[Any, int]:
    import torch
    from torch import nn

    import edgec.nn as enn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(n_in, hidden),
        enn.LIF(hidden, beta=0.9, alpha=0.5),
        nn.Linear(hidden, hidden),
        enn.LIF(hidden, beta=0.9, threshold=0.5),
        nn.Linear(hidden, n_out),
        enn.LeakyIntegrator(n_out, lam=0.9),
    ).eval()
    return net, n_in


def _snntorch_mlp(n_in: int, hidden: int, n_out: int) -> tuple[Any, int]:
    import snntorch as snn
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(n_in, hidden),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(hidden, hidden),
        snn.Leaky(beta=0.9, threshold=0.5, init_hidden=True),
        nn.Linear(hidden, n_out),
    ).eval()
    return net, n_in


def _blimp() -> tuple[Any, int]:
    import sys

    import torch

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "examples" / "blimp_snn"))
    import blimp_snn as b

    torch.manual_seed(0)
    net = b.BlimpSNN().eval()
    rng = np.random.default_rng(0)
    for ctrl in (net.fast, net.steady):
        theta = np.concatenate(
            [
                np.geomspace(0.3, 4.0, b.N_ENC // 2),
                rng.uniform(-0.3, 0.3, b.N_ENC),
                rng.normal(0, 0.4, b.N_ENC * b.N_HID),
                rng.uniform(0, 0.3, b.N_HID),
            ]
        )
        b.load(ctrl, theta, rng.normal(0, 0.5, b.N_HID + 1))
    return net, b.N_IN


CASES: list[tuple[str, Callable[[], tuple[Any, int]]]] = [
    ("blimp_snn_162", _blimp),
    ("edgec_lif_16-128-128-10", lambda: _edgec_mlp(16, 128, 10)),
    ("snntorch_64-256-256-10", lambda: _snntorch_mlp(64, 256, 10)),
]


def _warm_feeds(cm: edgec.CompiledModel, n_in: int) -> tuple[dict[str, np.ndarray], float]:
    """Inputs and the state after WARMUP_STEPS realistic steps, and the spike activity."""
    rng = np.random.default_rng(1)
    drive = (rng.random((WARMUP_STEPS, 1, n_in)) * 2.0).astype(np.float32)
    cm.reset()
    for x in drive:
        cm.step(x)
    state = cm.state()
    feeds: dict[str, np.ndarray] = {}
    for p in cm.cmodel.inputs:
        feeds[p.name] = state[p.name] if p.state else drive[-1].reshape(p.shape)
    return feeds, _activity(cm, feeds)


def _activity(cm: edgec.CompiledModel, feeds: dict[str, np.ndarray]) -> float:
    """Fraction of active inputs of the spike-fed layers, from the numpy reference."""
    from edgec.ops.interpret import interpret
    from edgec.ops.spiking import NEURON_OPS, unpack_spikes

    g = cm.graph
    vals = interpret_all(g, feeds, interpret)
    fired, total = 0.0, 0
    for n in g.nodes:
        if n.op in NEURON_OPS:
            s = vals[n.outputs[0]]
            if n.attrs.get("packed"):
                s = unpack_spikes(s, g.shape(n.inputs[0])[-1])
            fired += float(np.sum(s))
            total += int(s.size)
    return fired / max(total, 1)


def interpret_all(g: Any, feeds: dict[str, np.ndarray], interpret: Any) -> dict[str, np.ndarray]:
    h = g.copy()
    h.outputs = list(dict.fromkeys(list(h.outputs) + h.runtime_tensors()))
    return interpret(h, feeds)


def rows(repeat: int = 5) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgec-bench-spiking-") as tmp:
        for model, make in CASES:
            import torch

            net, n_in = make()
            got: dict[str, dict[str, Any]] = {}
            for v in VARIANTS:
                cm = edgec.compile(
                    net,
                    example_inputs=(torch.zeros(1, n_in),),
                    options={"spikes": v},
                    name=f"{model.split('_')[0]}_{v}",
                )
                feeds, act = _warm_feeds(cm, n_in)
                work = Path(tmp) / f"{model}_{v}"
                work.mkdir()
                seconds, _ = run_c_loop(cm.cmodel, feeds, ITERATIONS, repeat, work)
                rep = cm.report()
                got[v] = {
                    "model": model,
                    "variant": v,
                    "flash_bytes": rep["weight_bytes"],
                    "ram_bytes": rep["arena_bytes"] + rep["state_bytes"],
                    "ns_per_step": seconds * 1e9,
                    "macs": rep["macs"],
                    "activity": act,
                    "saving": "",
                }
            dense = got["dense"]
            for v in ("packed", "event"):
                r = got[v]
                ram = dense["ram_bytes"] - r["ram_bytes"]
                speed = dense["ns_per_step"] / r["ns_per_step"]
                r["saving"] = f"{ram} B RAM, {speed:.2f}x speed"
            out.extend(got[v] for v in VARIANTS)
    return out


EXTRA_COLUMNS = (
    ("ns/step", "ns_per_step", "{:.0f}"),
    ("MACs", "macs", "{:,}"),
    ("activity", "activity", "{:.2f}"),
)


def main(argv: list[str] | None = None) -> int:
    return family_main(__doc__ or "", rows, EXTRA_COLUMNS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
