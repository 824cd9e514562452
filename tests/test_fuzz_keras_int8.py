"""The Keras int8 fuzzer (bench/fuzz_keras_int8.py): a fixed-seed batch of random Keras models,
converted to full-integer int8 TFLite, equals the TFLite interpreter on the host (and on the
emulated Cortex-M4F); its classification of refused models, interpreter crashes and
differences.

TensorFlow runs in the fuzzer's worker process only (this process does not import it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.fuzz_keras_int8 import (
    BAD,
    VARIANTS,
    Fuzzer,
    WorkerCrash,
    check_blob,
    differ,
    fuzz,
    model_seed,
)
from edgec.mcu.toolchain import have_tool
from tests.tflite_builder import TflBuilder

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                       reason="the Keras fuzzer needs TensorFlow (pip install 'edgec[tf]')"),
    pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                       reason="the Keras fuzzer needs ai-edge-litert (the TFLite reference)"),
]


@pytest.fixture(scope="module")
def fz() -> Iterator[Fuzzer]:
    with Fuzzer() as f:
        yield f


def _add(out_scale: float) -> bytes:
    """An int8 ADD of two (1, 4) inputs of scale 0.05 into ``out_scale``."""
    b = TflBuilder()
    x0 = b.input("a", (1, 4), "int8", quant=(0.05, 1))
    x1 = b.input("b", (1, 4), "int8", quant=(0.05, -1))
    y = b.tensor("y", (1, 4), "int8", quant=(out_scale, 0))
    b.op("ADD", [x0, x1], [y], "AddOptions")
    return b.build([x0, x1], [y])


def test_a_fixed_seed_batch_equals_the_interpreter(fz: Fuzzer) -> None:
    """Six models (seed 3), both port variants: no mismatch, no internal error, and most
    compile (what the batch draws is pinned so a change of the draw shows up here)."""
    s = fuzz(6, seed=3, fuzzer=fz)
    assert not any(s.total(o) for o in BAD), [r for r in s.results if r.outcome in BAD]
    assert sum(s.counts.values()) == 6 * len(VARIANTS)
    assert s.total("ok") >= 10, s.table()
    layers = {w.split("(")[0] for r in s.results for w in r.desc}
    assert {"Conv2D", "Dense"} <= layers, layers


def test_models_are_seeded(fz: Fuzzer) -> None:
    """The same seed draws the same model and converts it to the same bytes."""
    a, b = fz.converter.call(model_seed(5, 1)), fz.converter.call(model_seed(5, 1))
    assert a["desc"] == b["desc"] and a["spread"] == b["spread"]
    assert all(a[v] == b[v] and isinstance(a[v], bytes) for v in VARIANTS)
    assert fz.converter.call(model_seed(5, 2))["desc"] != a["desc"]


def test_a_refused_model_is_classified_refused(fz: Fuzzer) -> None:
    """An ADD whose output rescale is not below 1 (TFLite's interpreter aborts on it): edgec's
    one-line refusal, and the interpreter is not asked."""
    outcome, detail = check_blob(_add(1e-9), 1.0, 0, fz.interpreter)
    assert outcome == "refused"
    assert "operator 0 (ADD): the output rescale" in detail and "\n" not in detail
    outcome, detail = check_blob(_add(0.1), 1.0, 0, fz.interpreter)
    assert (outcome, detail) == ("ok", "")


def test_an_interpreter_crash_is_reported_and_the_worker_restarts(fz: Fuzzer) -> None:
    """The interpreter aborts the process on that ADD (Prepare's CHECK): the worker's death
    is a WorkerCrash (classified interpreter_error), and the next call gets a fresh worker."""
    sets = [[np.zeros((1, 4), np.int8), np.ones((1, 4), np.int8)]]
    with pytest.raises(WorkerCrash, match="died"):
        fz.interpreter.call((_add(1e-9), sets))
    (out,) = fz.interpreter.call((_add(0.1), sets))
    assert out[0].dtype == np.int8 and out[0].shape == (1, 4)


def test_differ_is_exact_on_int8_and_tolerant_on_float() -> None:
    w8 = np.array([[1, 2, 3]], np.int8)
    assert differ([w8.copy()], [w8]) == ""
    assert differ([np.array([[1, 2, 4]], np.int8)], [w8]) == \
        "output 0: 1 of 3 codes differ (by up to 1)"
    assert differ([w8.astype(np.float32)], [w8]).startswith("output 0: float32")
    wf = np.array([1.0, -2.0], np.float32)
    assert differ([wf * np.float32(1 + 5e-5)], [wf]) == ""
    assert differ([wf + np.float32(1e-3)], [wf]).startswith("output 0: max |diff|")


@pytest.mark.qemu
@pytest.mark.skipif(not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
                    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh)")
def test_a_batch_on_the_cortex_m4f_equals_the_interpreter(fz: Fuzzer, tmp_path: Path) -> None:
    """Three models (seed 7) on the emulated Cortex-M4F (the DSP int8 kernels) and the host:
    byte for byte the interpreter; a failure leaves its .tflite in --failures."""
    s = fuzz(3, seed=7, board="cortex-m4f", failures=tmp_path, fuzzer=fz)
    assert not any(s.total(o) for o in BAD), [r for r in s.results if r.outcome in BAD]
    assert s.total("ok") >= 4, s.table()
    assert not list(tmp_path.iterdir())
