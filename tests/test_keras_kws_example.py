"""The Keras keyword-spotting example (examples/keras_kws/train.py) in its CI mode: it trains a
few steps, converts to int8 and float TFLite, compiles both, and the int8 C equals TFLite byte
for byte on the host (the float twin within tolerance)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the example trains in Keras")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "keras_kws" / "train.py"


def _load() -> ModuleType:
    name = "keras_kws_train"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def test_keras_kws_quick(tmp_path: Path) -> None:
    ex = _load()
    res = ex.run(ex.parse_args(["--quick", "--no-board", "--out", str(tmp_path)]))
    assert res.int8_bit_exact_host and res.float_within_tol and res.passed
    assert res.int8_bit_exact_board is None  # --no-board
    assert (tmp_path / "kws_int8.tflite").is_file() and (tmp_path / "int8" / "kws_int8.c").is_file()
    # int8 activations take a byte where the float twin's take four
    assert 4 * res.arena["int8"] <= res.arena["float"] + 512


def test_dataset_is_deterministic_and_balanced() -> None:
    ex = _load()
    k = len(ex.KEYWORDS)
    x1, y1 = ex.dataset(4 * k, seed=5)
    x2, y2 = ex.dataset(4 * k, seed=5)
    assert x1.shape == (4 * k, ex.FRAMES, ex.COEFFS, 1) and x1.dtype == np.float32
    assert (x1 == x2).all() and (y1 == y2).all()
    assert sorted(y1.tolist()) == sorted(list(range(k)) * 4)
    # keywords carry energy that silence does not
    assert x1[y1 != 0].mean() > x1[y1 == 0].mean() + 0.05
