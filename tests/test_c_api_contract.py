"""The generated C's API as a firmware reviewer checks it (issue 14): a stateful model keeps
``_reset``/``_step_arena`` without the static arena, independent instances (one state and one
arena each) do not disturb each other, and the header states the reentrancy rules.

Every C program here is compiled with the strict flags and run under ASan + UBSan."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from tests.c_checks import SANITIZE, STRICT
from tests.helpers import make_model
from tests.test_firmware import gru_step_model

STEPS = 6


def _cell_model() -> onnx.ModelProto:
    """h_new = tanh(x + h); y = h_new + h: the state is read after its update (two buffers)."""
    nodes = [
        helper.make_node("Add", ["x", "h"], ["s"]),
        helper.make_node("Tanh", ["s"], ["h_new"]),
        helper.make_node("Add", ["h_new", "h"], ["y"]),
    ]
    return make_model(nodes, {"x": (1, 4), "h": (1, 4)}, {"y": (1, 4), "h_new": (1, 4)})


def _compile(kind: str) -> edgec.CompiledModel:
    if kind == "gru":  # state updated in place (one buffer)
        return edgec.compile(gru_step_model(), name="gru")
    return edgec.compile(_cell_model(), state=[("h", "h_new")], name="cell")


def _build_and_run(tmp: Path, m: edgec.CompiledModel, driver: str, feed: bytes,
                   defines: tuple[str, ...] = ()) -> bytes:
    m.write(tmp)
    (tmp / "driver.c").write_text(driver)
    proc = subprocess.run(["gcc", *STRICT, "-O1", *SANITIZE, *defines, "driver.c",
                           f"{m.name}.c", "-lm", "-o", "driver"],
                          cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run(["./driver"], cwd=tmp, input=feed, capture_output=True, env=env,
                         timeout=60)
    assert run.returncode == 0, run.stderr.decode()[-4000:]
    return run.stdout


def _plain(m: edgec.CompiledModel) -> tuple[int, int]:
    """Sizes of the one plain (not state) input and output of the test models."""
    (pin,) = [p for p in m.cmodel.inputs if not p.state]
    (pout,) = [p for p in m.cmodel.outputs if not p.state]
    return pin.size, pout.size


def _instances_driver(name: str, n_in: int, n_out: int) -> str:
    macro = name.upper()
    return f"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "{name}.h"
#define T {STEPS}
#define ARENA_SIZE ({macro}_ARENA_BYTES > 0 ? {macro}_ARENA_BYTES : 1)
static float xs[2][T][{n_in}];
static float inter[2][T][{n_out}];
static float alone[2][T][{n_out}];
int main(void)
{{
    float *arena[2];
    {name}_state_t *st[2];
    int i;
    int t;
    if (fread(xs, sizeof(xs), 1, stdin) != 1) return 4;
    for (i = 0; i < 2; ++i) {{
        arena[i] = (float *)malloc(ARENA_SIZE);
        st[i] = ({name}_state_t *)malloc(sizeof({name}_state_t));
        if (arena[i] == NULL || st[i] == NULL) return 3;
        memset(arena[i], 0xff, ARENA_SIZE); /* NaNs: reads of unwritten arena show */
        {name}_reset(st[i]);
    }}
    for (t = 0; t < T; ++t) {{ /* two instances stepped interleaved */
        for (i = 0; i < 2; ++i) {{
            if ({name}_step_arena(st[i], arena[i], xs[i][t], inter[i][t]) != 0) return 5;
        }}
    }}
    for (i = 0; i < 2; ++i) {{ /* each alone, in one arena */
        {name}_reset(st[0]);
        for (t = 0; t < T; ++t) {{
            if ({name}_step_arena(st[0], arena[0], xs[i][t], alone[i][t]) != 0) return 5;
        }}
    }}
    fwrite(inter, sizeof(inter), 1, stdout);
    fwrite(alone, sizeof(alone), 1, stdout);
    for (i = 0; i < 2; ++i) {{
        free(arena[i]);
        free(st[i]);
    }}
    return 0;
}}
"""


@pytest.mark.parametrize("kind", ["gru", "cell"])
def test_no_static_arena_keeps_state_api_and_instances_are_independent(
        tmp_path: Path, kind: str) -> None:
    m = _compile(kind)
    macro = m.name.upper()
    header = m.c_header
    # the header declares exactly what the source defines without the static arena
    assert f"int {m.name}_step_arena({m.name}_state_t *s, float *arena" in header
    guard = header.index(f"#ifndef {macro}_NO_STATIC_ARENA")
    assert guard < header.index(f"int {m.name}_run(") < header.index("#endif", guard)
    n_in, n_out = _plain(m)
    xs = np.random.default_rng(3).uniform(-1, 1, (2, STEPS, n_in)).astype(np.float32)
    out = _build_and_run(tmp_path, m, _instances_driver(m.name, n_in, n_out), xs.tobytes(),
                         (f"-D{macro}_NO_STATIC_ARENA",))
    res = np.frombuffer(out, np.float32).reshape(2, 2, STEPS, n_out)
    inter, alone = res[0], res[1]
    np.testing.assert_array_equal(inter, alone)
    for i in range(2):  # and both are what the (static-arena) host library's step gives
        m.reset()
        want = np.stack([np.asarray(m.step(x.reshape(1, -1) if kind == "cell" else
                                           x.reshape(1, 1, -1))).reshape(-1) for x in xs[i]])
        np.testing.assert_allclose(alone[i], want, rtol=1e-6, atol=1e-6)


def test_header_states_reentrancy_rules() -> None:
    for m in (_compile("gru"), edgec.compile(_cell_model(), name="plain")):
        text = m.c_header
        assert "Reentrancy:" in text and "not reentrant" in text
        assert f"{m.name}_run_arena()" in text.split("Reentrancy:")[1]
        if m.is_stateful:
            assert f"its own {m.name}_state_t" in text
