"""The LSTM and GRU cell updates as assembly loops on FPU Cortex-M (edgec/ops/rnn_cell_asm.py):
used for the default cells only, the same outputs as onnxruntime on the emulated M4F, and the
same as the plain C (the host build) where every gate saturates past the tables or is +-inf or
NaN (the out-of-line paths)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgec
from edgec.backend.host import HostLibrary, build_shared
from edgec.mcu.run import run_on_target
from edgec.mcu.targets import load_target
from tests.test_rnn import rnn_model


def _lstm(hidden: int, direction: str, **kw: Any) -> edgec.CompiledModel:
    return edgec.compile(rnn_model("LSTM", 9, 2, 6, hidden, direction, **kw))


def _gru(hidden: int, direction: str, **kw: Any) -> edgec.CompiledModel:
    return edgec.compile(rnn_model("GRU", 9, 2, 6, hidden, direction, **kw))


@pytest.mark.parametrize("variant,asm", [
    ({}, True),
    ({"outputs": [False, True, True]}, True),
    ({"clip": 2.5}, False),
    ({"peepholes": True}, False),
    ({"input_forget": 1}, False),
    ({"activations": ["Sigmoid", "Tanh", "Relu"] * 2}, False),
])
def test_assembly_only_for_the_default_cell(variant: dict[str, Any], asm: bool) -> None:
    m = _lstm(5, "bidirectional", **variant)
    assert ("#ifdef EDGEC_CELL_ASM" in m.c_source) == asm
    assert "gates[(4 * j) + 3]" in m.c_source  # unit-major gates on every path


@pytest.mark.parametrize("hidden,variant,asm", [
    (5, {"linear_before_reset": 1}, True),
    (5, {"linear_before_reset": 0}, True),
    (5, {"linear_before_reset": 1, "outputs": [False, True]}, True),
    (5, {"linear_before_reset": 1, "clip": 2.5}, False),
    (5, {"linear_before_reset": 0, "activations": ["Sigmoid", "Relu"] * 2}, False),
    (64, {"linear_before_reset": 1}, False),  # gx past a VLDR offset from h: the C loop
])
def test_gru_assembly_only_for_the_default_cell(hidden: int, variant: dict[str, Any],
                                                asm: bool) -> None:
    m = _gru(hidden, "bidirectional", **variant)
    assert ("#ifdef EDGEC_CELL_ASM" in m.c_source) == asm
    # z, r unit-major where the assembly is (on its C path too), as the walk wrote them else
    assert ("gates[(2 * j) + 1]" in m.c_source) == asm



@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("hidden,direction,variant", [
    (16, "bidirectional", {}),
    (5, "forward", {"outputs": [False, True, True]}),
    (3, "reverse", {}),
    (7, "forward", {"peepholes": True}),
])
def test_cell_on_cortex_m4f_matches_onnxruntime(hidden: int, direction: str,
                                                 variant: dict[str, Any]) -> None:
    m = _lstm(hidden, direction, **variant)
    rep = m.verify(target="cortex-m4f", n=2)
    assert rep.ok and rep.where == "cortex-m4f, QEMU", rep.format()


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("hidden,direction,variant", [
    (16, "bidirectional", {"linear_before_reset": 1}),
    (16, "bidirectional", {"linear_before_reset": 0}),
    (5, "forward", {"linear_before_reset": 1, "outputs": [False, True]}),
    (3, "reverse", {"linear_before_reset": 0, "outputs": [False, True]}),
])
def test_gru_cell_on_cortex_m4f_matches_onnxruntime(hidden: int, direction: str,
                                                     variant: dict[str, Any]) -> None:
    m = _gru(hidden, direction, **variant)
    assert "#ifdef EDGEC_CELL_ASM" in m.c_source
    rep = m.verify(target="cortex-m4f", n=2)
    assert rep.ok and rep.where == "cortex-m4f, QEMU", rep.format()


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.parametrize("cell", ["lstm", "gru0", "gru1"])
def test_saturated_infinite_and_nan_gates_on_cortex_m4f(cell: str) -> None:
    """Inputs x 60 (gates far past +-32, where the tables end), and +-inf and NaN inputs at
    some steps: the M4F's assembly = the host's C path (NaN where it has NaN)."""
    m = (_lstm(7, "bidirectional") if cell == "lstm"
         else _gru(7, "bidirectional", linear_before_reset=int(cell[-1])))
    rng = np.random.default_rng(4)
    names = list(m.input_names)
    shapes = [tuple(int(d) for d in m.graph.shape(n)) for n in names]
    big = [(60 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    special = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    x = special[0]
    x[2, 0, 1], x[4, 1, 3], x[6, 0, 0], x[7, 1, 5] = np.inf, -np.inf, np.nan, 1e30
    vectors = [big, special]
    board = run_on_target(m, load_target("cortex-m4f"), vectors)
    host = HostLibrary(m.cmodel, build_shared(m.cmodel))
    for vec, got in zip(vectors, board, strict=True):
        want = host.run(*vec)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g).reshape(-1), np.asarray(w).reshape(-1),
                                       rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(np.concatenate([np.asarray(o).reshape(-1) for o in board[1]])).any()
    assert not np.isnan(np.concatenate([np.asarray(o).reshape(-1) for o in board[0]])).any()
