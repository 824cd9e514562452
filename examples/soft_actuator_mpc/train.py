"""Generate data from the simulated plants, train the forward models, write the references.

    python examples/soft_actuator_mpc/train.py              # both, about 20 s on one CPU thread
    python examples/soft_actuator_mpc/train.py --only msd   # just the MSD dynamics model

* soft actuator: NARX MLP theta(t+1) = f(u(t), u(t-1), theta(t), theta(t-1)) (6 -> 32 -> 32 -> 1)
  from random held commands -> forward_weights.npz (soft_actuator.toml)
* mass-spring-damper: one-step dynamics x' = x + MLP([x, v, F]) (3 -> 32 -> 32 -> 2) from
  1 s episodes started at random states and driven by random held forces over the whole
  command range -> msd_dynamics_weights.npz (msd.toml)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from model import MSD_HIDDEN, MSD_STATE_BOX  # noqa: E402

from edgec.mpc.config import load_config  # noqa: E402
from edgec.mpc.learn import (  # noqa: E402
    collect_dynamics_data,
    collect_narx_data,
    train_dynamics,
    train_narx,
)
from edgec.mpc.plants import MassSpringDamper, SoftActuator  # noqa: E402
from edgec.mpc.simulate import default_reference, write_reference  # noqa: E402

MSD_TRAIN_TICKS, MSD_HELD_OUT_TICKS, MSD_STEPS = 6000, 2000, 1500


def _save(net: torch.nn.Module, path: Path) -> None:
    np.savez(path, **{k: v.detach().numpy() for k, v in net.state_dict().items()})


def train_soft_actuator() -> str:
    cfg = load_config(HERE / "soft_actuator.toml")
    z, y = collect_narx_data(SoftActuator(dt=cfg.dt), cfg, 6000, seed=0)
    net = train_narx(z, y, cfg, hidden=32, steps=2000, seed=0)
    with torch.no_grad():
        pred = net(torch.from_numpy(z)).numpy()
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    _save(net, HERE / "forward_weights.npz")
    return f"soft actuator: {len(z)} samples, one-step RMSE {rmse:.2e} rad -> forward_weights.npz"


def train_msd() -> str:
    cfg = load_config(HERE / "msd.toml")
    box = np.array(MSD_STATE_BOX)
    z, x1 = collect_dynamics_data(MassSpringDamper(dt=cfg.dt), cfg, MSD_TRAIN_TICKS, box, seed=0)
    net = train_dynamics(z, x1, hidden=MSD_HIDDEN, steps=MSD_STEPS, seed=0)
    zh, xh = collect_dynamics_data(
        MassSpringDamper(dt=cfg.dt), cfg, MSD_HELD_OUT_TICKS, box, seed=1
    )
    with torch.no_grad():
        err = net(torch.from_numpy(zh)).numpy() - xh
    rmse = np.sqrt(np.mean(err**2, axis=0))
    _save(net, HERE / "msd_dynamics_weights.npz")
    return (f"mass-spring-damper: {len(z)} samples, held-out one-step RMSE {rmse[0]:.2e} m, "
            f"{rmse[1]:.2e} m/s -> msd_dynamics_weights.npz")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("soft", "msd"), help="train just one of the models")
    ns = ap.parse_args(argv)
    torch.set_num_threads(1)
    for what, fn in (("soft", train_soft_actuator), ("msd", train_msd)):
        if ns.only in (None, what):
            t0 = time.perf_counter()
            msg = fn()
            print(f"{msg} ({time.perf_counter() - t0:.1f} s)")
    write_reference(HERE / "soft_path.csv", default_reference("soft-actuator"), "theta")
    write_reference(HERE / "msd_path.csv", default_reference("msd"), "x")
    print("wrote soft_path.csv, msd_path.csv")


if __name__ == "__main__":
    main()
