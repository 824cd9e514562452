"""Generate data from the simulated soft actuator, train the NARX MLP, write the references.

    python examples/soft_actuator_mpc/train.py      # about 20 s on one CPU thread
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from edgec.mpc.config import load_config
from edgec.mpc.learn import collect_narx_data, train_narx
from edgec.mpc.plants import SoftActuator
from edgec.mpc.simulate import default_reference, write_reference

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = load_config(HERE / "soft_actuator.toml")
    z, y = collect_narx_data(SoftActuator(dt=cfg.dt), cfg, 6000, seed=0)
    net = train_narx(z, y, cfg, hidden=32, steps=2000, seed=0)
    with torch.no_grad():
        pred = net(torch.from_numpy(z)).numpy()
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    np.savez(HERE / "forward_weights.npz",
             **{k: v.detach().numpy() for k, v in net.state_dict().items()})
    write_reference(HERE / "soft_path.csv", default_reference("soft-actuator"), "theta")
    write_reference(HERE / "msd_path.csv", default_reference("msd"), "x")
    print(f"trained on {len(z)} samples in {time.perf_counter() - t0:.1f} s; "
          f"one-step RMSE {rmse:.2e} rad; wrote forward_weights.npz, soft_path.csv, msd_path.csv")


if __name__ == "__main__":
    main()
