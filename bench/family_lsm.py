"""Liquid-state-machine bench: ``python -m bench.family_lsm [--repeat N]``.

A generated reservoir (``edgec.nn.lsm.Reservoir``: event-camera sized, 512 inputs, 200 LIF neurons,
10 % input and recurrent density) compiled as a stateful per-tick model in the three weight
modes, plus the plain path for comparison:

* ``regen``: synapses regenerated from the seed on every step, only for the inputs that are
  non-zero and the neurons that spiked (no weight storage at all);
* ``ram``: the same column lists generated into static RAM on the first call;
* ``flash``: the column lists stored as constants (int16 row + int16 weight per synapse);
* ``dense``: what an exporter gives (dense float ``W_in`` and ``W_rec`` in plain Gemm kernels,
  the same equations written as ordinary torch ops, the threshold as a steep clamp).

Columns: flash (weight bytes), RAM (arena + state + generated tables), host time per step of the
generated C (timed inside C by ``bench.host``'s harness on a state reached after 100 steps of
moving-bar-like events, so the activity is the network's own), synapses, the step's spike
activity, and the saving against ``dense``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import edgec
from bench.family_common import family_main
from bench.host import run_c_loop

ITERATIONS = 2000
WARMUP_STEPS = 100
N_IN, N_RES = 512, 200
VARIANTS = ("regen", "ram", "flash", "dense")


def _reservoir() -> Any:
    from edgec.nn.lsm import Reservoir

    return Reservoir(
        N_IN,
        N_RES,
        seed=2024,
        density_in=0.1,
        density_rec=0.1,
        scale_in=2.5,
        scale_rec=2.0,
        decay=0.9,
        v_th=5.0,
    )


def _dense_step(res: Any) -> Any:
    """The reservoir step as plain torch ops on dense float weights (forward(x, mem, spk))."""
    import torch
    from torch import nn

    class DenseStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w_in = nn.Linear(N_IN, N_RES, bias=False)
            self.w_rec = nn.Linear(N_RES, N_RES, bias=False)
            with torch.no_grad():
                self.w_in.weight.copy_(res.c_in * res.k_in_t.T)
                self.w_rec.weight.copy_(res.c_rec * res.k_rec_t.T)
            self.decay = float(res.decay)
            self.v_th = float(res.v_th)

        def forward(self, x: Any, mem: Any, spk: Any) -> tuple[Any, Any]:
            m = self.decay * mem * (1.0 - spk) + self.w_in(x) + self.w_rec(spk)
            # Heaviside as clamp((m - v_th) * 1e30, 0, 1): the torch front-end lowers no `gt`
            return torch.clamp((m - self.v_th) * 1e30, 0.0, 1.0), m

    return DenseStep().eval()


def _events(steps: int) -> np.ndarray:
    """A bar sweeping a 16x16 sensor (ON and OFF edges) with 1 % noise events."""
    rng = np.random.default_rng(0)
    out = np.zeros((steps, 2, 16, 16), np.float32)
    for t in range(steps):
        col = (t // 2) % 16
        out[t, 0, :, col] = 1.0
        out[t, 1, :, (col - 2) % 16] = 1.0
    out = np.maximum(out, rng.random(out.shape) < 0.01)
    return out.reshape(steps, 1, N_IN)


def rows(repeat: int = 5) -> list[dict[str, Any]]:
    import torch

    res = _reservoir()
    drive = _events(WARMUP_STEPS)
    res.reset()
    for x in drive:
        res(torch.from_numpy(x))
    mem, spk = res.mem.numpy().copy(), res.spk.numpy().copy()
    activity = float(spk.mean())
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgec-bench-lsm-") as tmp:
        for v in VARIANTS:
            if v == "dense":
                net = _dense_step(res)
                ex = (torch.zeros(1, N_IN), torch.zeros(1, N_RES), torch.zeros(1, N_RES))
                cm = edgec.compile(net, example_inputs=ex, name="lsm_dense")
                values = [drive[-1], mem.reshape(1, -1), spk.reshape(1, -1)]
            else:
                cm = edgec.compile(
                    res, example_inputs=(torch.zeros(1, N_IN),), name=f"lsm_{v}", options={"lsm": v}
                )
                state = {"mem": mem, "spk": spk}
                values = []
                for p in cm.cmodel.inputs:
                    key = next((k for k in state if k in p.name), None) if p.state else None
                    values.append(drive[-1] if key is None else state[key])
            feeds = {
                p.name: np.asarray(val, np.float32).reshape(p.shape)
                for p, val in zip(cm.cmodel.inputs, values, strict=True)
            }
            work = Path(tmp) / v
            work.mkdir()
            seconds, _ = run_c_loop(cm.cmodel, feeds, ITERATIONS, repeat, work)
            rep = cm.report()
            s = rep.get("structure", {})
            out[v] = {
                "model": f"lsm_{N_IN}in_{N_RES}res",
                "variant": v,
                "flash_bytes": rep["weight_bytes"],
                "ram_bytes": rep["arena_bytes"]
                + rep["state_bytes"]
                + s.get("lsm_weight_ram_bytes", 0),
                "ns_per_step": seconds * 1e9,
                "synapses": s.get("lsm_synapses", N_RES * (N_IN + N_RES)),
                "activity": activity,
                "saving": "",
            }
    dense = out["dense"]
    for v in ("regen", "ram", "flash"):
        r = out[v]
        r["saving"] = (
            f"{dense['flash_bytes'] - r['flash_bytes']:,} B flash, "
            f"{dense['ns_per_step'] / r['ns_per_step']:.2f}x speed"
        )
    return [out[v] for v in VARIANTS]


EXTRA_COLUMNS = (
    ("ns/step", "ns_per_step", "{:.0f}"),
    ("synapses", "synapses", "{:,}"),
    ("activity", "activity", "{:.2f}"),
)


def main(argv: list[str] | None = None) -> int:
    return family_main(__doc__ or "", rows, EXTRA_COLUMNS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
