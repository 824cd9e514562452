"""The PHM example (examples/phm_shapes/train.py) in its CI mode: it trains, compiles in
``phm=dense`` and ``phm=factored``, and its C matches PyTorch on the test images."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "phm_shapes" / "train.py"


def _load() -> ModuleType:
    """Import train.py (registered in sys.modules first: its dataclasses need that)."""
    name = "phm_shapes_train"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_phm_shapes_quick(tmp_path: Path) -> None:
    ex = _load()
    res = ex.run(ex.parse_args(["--quick", "--out", str(tmp_path)]))
    dense, fact = res.variants["dense"], res.variants["factored"]
    # C vs PyTorch: logits within rtol 1e-4 / atol 1e-5 and the same classes, both modes
    assert res.passed
    for v in (dense, fact):
        assert v.passed and v.classes_agree == 1.0 and v.max_abs_diff < 1e-3
        assert v.us_per_inference > 0
        assert (tmp_path / v.mode / f"phm_shapes_{v.mode}.c").is_file()
    # only the factors in flash: about 1/n of the dense weights (n = 4)
    assert fact.flash_bytes < dense.flash_bytes
    assert fact.flash_bytes < 0.3 * dense.flash_bytes
    # auto keeps everything dense on a 4 MB Cortex-M4F, factors the big layers on a 256 KB M0
    assert res.auto["cortex-m4f"] == []
    assert res.auto["cortex-m0"] and set(res.auto["cortex-m0"]) <= set(ex.PH_LAYERS)
    assert res.auto_passed == {"cortex-m4f": True, "cortex-m0": True}
    assert 0.0 <= res.accuracy <= 1.0


def test_phm_shapes_dataset_is_deterministic_and_balanced() -> None:
    ex = _load()
    classes = len(ex.SHAPES)
    assert classes % ex.N == 0  # the PHM head's outputs are a multiple of n
    x1, y1 = ex.dataset(5 * classes, seed=5)
    x2, y2 = ex.dataset(5 * classes, seed=5)
    assert x1.shape == (5 * classes, 3, ex.SIDE, ex.SIDE)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert sorted(y1.tolist()) == sorted(list(range(classes)) * 5)
    assert not (ex.dataset(5 * classes, seed=6)[0] == x1).all()
    # every class draws a distinct, non-empty shape at the centre
    ys, xs = np.mgrid[0 : ex.SIDE, 0 : ex.SIDE] - (ex.SIDE - 1) / 2
    masks = [draw_mask(xs, ys, 5.0) for _, draw_mask in ex.SHAPES]
    assert all(m.any() and not m.all() for m in masks)
    assert len({m.tobytes() for m in masks}) == classes
