"""The MPC runtime as a firmware reviewer checks it (issue 14): the NaN fallback survives
-ffast-math, two controllers interleaved are independent (no file-scope scratch), and a config
that does not match the model fails to compile."""

from __future__ import annotations

import os
import re
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


_THREADS_MAIN = """#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "edgec_mpc.h"
#define TICKS 12
typedef struct {
    edgec_mpc_t c;
    float shift;
    float u[TICKS][EDGEC_MPC_NU];
} job_t;
static job_t jobs[2];
static float alone[2][TICKS][EDGEC_MPC_NU];

static void tick(job_t *j, int k, float *u)
{
    float ref[EDGEC_MPC_REF_SIZE];
    float meas[EDGEC_MPC_MEAS_SIZE];
    int i;
    for (i = 0; i < EDGEC_MPC_REF_SIZE; ++i) ref[i] = j->shift + 0.02f * (float)(k + i);
    for (i = 0; i < EDGEC_MPC_MEAS_SIZE; ++i) meas[i] = 0.5f * j->shift - 0.01f * (float)(k - i);
    (void)edgec_mpc_step(&j->c, ref, meas, u);
}

static void *run_job(void *arg)
{
    job_t *j = (job_t *)arg;
    int k;
    for (k = 0; k < TICKS; ++k) tick(j, k, j->u[k]);
    return NULL;
}

int main(void)
{
    pthread_t th[2];
    int i;
    int k;
    for (i = 0; i < 2; ++i) { /* each controller alone */
        jobs[i].shift = i == 0 ? 0.1f : -0.3f;
        edgec_mpc_init(&jobs[i].c);
        run_job(&jobs[i]);
        memcpy(alone[i], jobs[i].u, sizeof(alone[i]));
    }
    for (i = 0; i < 2; ++i) edgec_mpc_init(&jobs[i].c);
    for (k = 0; k < TICKS; ++k) { /* interleaved in one thread */
        for (i = 0; i < 2; ++i) tick(&jobs[i], k, jobs[i].u[k]);
    }
    for (i = 0; i < 2; ++i) {
        if (memcmp(alone[i], jobs[i].u, sizeof(alone[i])) != 0) return 10 + i;
        edgec_mpc_init(&jobs[i].c);
    }
    for (i = 0; i < 2; ++i) { /* at once, in two threads */
        if (pthread_create(&th[i], NULL, run_job, &jobs[i]) != 0) return 2;
    }
    for (i = 0; i < 2; ++i) pthread_join(th[i], NULL);
    for (i = 0; i < 2; ++i) {
        if (memcmp(alone[i], jobs[i].u, sizeof(alone[i])) != 0) return 20 + i;
    }
    puts("ok");
    return 0;
}
"""


@pytest.mark.parametrize("mode", ["narx", "horizon"])
def test_two_controllers_interleaved_and_in_threads(controllers: dict[str, Controller],
                                                    tmp_path: Path, mode: str) -> None:
    """No file-scope state in the runtime (the model runs in the controller's own arena): two
    controllers interleaved, or in two threads under ThreadSanitizer, equal each alone."""
    ctrl = controllers[mode]
    ctrl.write_sources(tmp_path)
    obj = tmp_path / "edgec_mpc.o"
    cc = subprocess.run(["gcc", "-std=c99", "-O2", "-c", "-I", str(tmp_path),
                         str(tmp_path / "edgec_mpc.c"), "-o", str(obj)],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    syms = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout.splitlines()
    writable = [ln for ln in syms if ln.split()[-2:-1] and ln.split()[-2] in "bBdDcC"]
    assert writable == [], writable  # no static data the controllers would share
    assert not any(ln.endswith(f"{ctrl.model.name}_run") for ln in syms)  # the static arena's
    proc = _compile(ctrl, tmp_path, _THREADS_MAIN, ("-O1", "-g", "-fsanitize=thread",
                                                    "-pthread"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1")
    run = subprocess.run([str(tmp_path / "prog")], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-3000:])


def _compile_runtime(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-c",
                           "-I", str(d), str(d / "edgec_mpc.c"), "-o", str(d / "mpc.o")],
                          capture_output=True, text=True)


@pytest.mark.parametrize(("mode", "macro", "value", "check"), [
    ("narx", "NZ", 8, "model_inputs_match_model"),
    ("narx", "LU", 2, "model_inputs_match_lags"),
    ("narx", "NU", 3, "u_min_has_one_value_per_command"),
    ("narx", "NOUT", 3, "model_outputs_match_model"),
    ("horizon", "NY", 2, "q_has_one_weight_per_output"),
    ("horizon", "NX", 3, "model_inputs_are_states_and_commands"),
])
def test_mismatched_config_fails_to_compile(controllers: dict[str, Controller], tmp_path: Path,
                                            mode: str, macro: str, value: int,
                                            check: str) -> None:
    ctrl = controllers[mode]
    ctrl.write_sources(tmp_path)
    assert _compile_runtime(tmp_path).returncode == 0  # as generated: it compiles
    cfg = tmp_path / "edgec_mpc_config.h"
    text, n = re.subn(rf"(#define EDGEC_MPC_{macro}) \d+", rf"\1 {value}", cfg.read_text())
    assert n == 1
    cfg.write_text(text)
    proc = _compile_runtime(tmp_path)
    assert proc.returncode != 0
    assert f"edgec_mpc_check_{check}" in proc.stderr, proc.stderr[-2000:]
