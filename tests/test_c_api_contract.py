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
from edgec.backend.host import HostLibrary, build_shared
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
    assert f"int {m.name}_step_arena({m.name}_state_t *s, float *EDGEC_RESTRICT arena" in header
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


def _in_place_driver(name: str, n_in: int, n_out: int, n_h: int) -> str:
    macro = name.upper()
    return f"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "{name}.h"
#define T {STEPS}
#define ARENA_SIZE ({macro}_ARENA_BYTES > 0 ? {macro}_ARENA_BYTES : 1)
static float xs[T][{n_in}];
static float y_run[T][{n_out}];
static float y_step[T][{n_out}];
int main(void)
{{
    float *arena = (float *)malloc(ARENA_SIZE);
    float *h = (float *)malloc(sizeof(float) * {n_h}); /* exact size: ASan sees overruns */
    {name}_state_t *st = ({name}_state_t *)malloc(sizeof({name}_state_t));
    int t;
    if (arena == NULL || h == NULL || st == NULL) return 3;
    if (fread(xs, sizeof(xs), 1, stdin) != 1) return 4;
    memset(arena, 0xff, ARENA_SIZE);
    memset(h, 0, sizeof(float) * {n_h});
    {name}_reset(st);
    for (t = 0; t < T; ++t) {{
        if ({name}_run_arena(arena, xs[t], h, y_run[t], h) != 0) return 5; /* in place */
        if ({name}_step_arena(st, arena, xs[t], y_step[t]) != 0) return 5;
    }}
    fwrite(y_run, sizeof(y_run), 1, stdout);
    fwrite(y_step, sizeof(y_step), 1, stdout);
    fwrite(h, sizeof(float) * {n_h}, 1, stdout);
    free(arena);
    free(h);
    free(st);
    return 0;
}}
"""


def test_in_place_state_update_under_sanitizers(tmp_path: Path) -> None:
    """``gru_run(x, h, y, h)`` is allowed (the header says so and leaves those two pointers
    without restrict) and equals stepping; every other port pointer is restrict."""
    m = _compile("gru")
    proto = m.c_header.split(f"int {m.name}_run_arena(")[1].split(";")[0]
    assert "const float *EDGEC_RESTRICT in_x" in proto and "float *EDGEC_RESTRICT out_y" in proto
    assert "const float *in_h0" in proto and "float *out_Y_h" in proto
    assert "in_h0 and out_Y_h" in m.c_header.split("Aliasing:")[1].split("Reentrancy:")[0]
    n_in, n_out = _plain(m)
    n_h = m.cmodel.inputs[1].size
    xs = np.random.default_rng(5).uniform(-1, 1, (STEPS, n_in)).astype(np.float32)
    out = np.frombuffer(_build_and_run(tmp_path, m, _in_place_driver(m.name, n_in, n_out, n_h),
                                       xs.tobytes()), np.float32)
    y_run, y_step = out[:STEPS * n_out], out[STEPS * n_out:2 * STEPS * n_out]
    np.testing.assert_array_equal(y_run, y_step)
    # the host wrapper takes the same in-place call (the plain C, as the driver above: an
    # AVX2 host library sums the dense walk in another order)
    lib = HostLibrary(m.cmodel, build_shared(m.cmodel, ("-DEDGEC_NO_AVX2",)))
    h = np.zeros((1, 1, n_h), np.float32)
    y = np.zeros((1, n_out), np.float32)
    for x in xs:
        lib.run(x.reshape(1, 1, -1), h, out=[y, h])
    np.testing.assert_array_equal(y.reshape(-1), y_step[-n_out:])
    np.testing.assert_array_equal(h.reshape(-1), out[2 * STEPS * n_out:])


def test_host_wrapper_refuses_overlapping_buffers() -> None:
    m = _compile("cell")  # its state is double-buffered: h and h_new may not share memory
    x = np.ones((1, 4), np.float32)
    h = np.zeros((1, 4), np.float32)
    y = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="'h' and 'h_new' overlap"):
        m.lib.run(x, h, out=[y, h])
    with pytest.raises(ValueError, match="'h_new' and 'y' overlap"):
        m.lib.run(x, h, out=[y, y])
    buf = np.zeros(8, np.float32)  # partial overlap of an input and an output
    with pytest.raises(ValueError, match="'x' and 'y' overlap"):
        m.lib.run(buf[:4].reshape(1, 4), h, out=[buf[2:6], np.zeros(4, np.float32)])
    y2, hn = np.zeros(4, np.float32), np.zeros(4, np.float32)
    m.lib.run(x, h, out=[y2, hn])
    np.testing.assert_allclose(hn, np.tanh(1.0), rtol=1e-6)


def test_placement_macros_put_weights_and_arena_in_sections(tmp_path: Path) -> None:
    m = _compile("gru")
    macro = m.name.upper()
    assert f"{macro}_WEIGHTS_PLACEMENT" in m.c_header and f"{macro}_ARENA_PLACEMENT" in m.c_header
    m.write(tmp_path)  # -O0: -O2 may fold small tables into the code
    defines = [
        f"-D{macro}_WEIGHTS_PLACEMENT=__attribute__((section(\".edgec_w\"), aligned(32)))",
        f"-D{macro}_ARENA_PLACEMENT=__attribute__((section(\".edgec_a\"), aligned(64)))",
    ]
    cc = subprocess.run(["gcc", *STRICT, "-O0", *defines, "-c", f"{m.name}.c", "-o", "m.o"],
                        cwd=tmp_path, capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr[-3000:]
    heads = subprocess.run(["objdump", "-h", "m.o"], cwd=tmp_path, capture_output=True,
                           text=True).stdout
    sizes = {p[1]: (int(p[2], 16), p[6]) for p in (ln.split() for ln in heads.splitlines())
             if len(p) >= 7 and p[1] in (".edgec_w", ".edgec_a")}
    weights, arena = sizes[".edgec_w"], sizes[".edgec_a"]
    assert weights[0] >= m.report()["weight_bytes"] and weights[1] == "2**5"
    assert arena[0] == m.report()["arena_bytes"] and arena[1] == "2**6"
