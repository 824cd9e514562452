"""int8 RAM vs TFLite Micro (bench/int8_memory.py): edgec's arena plus its input and output
buffers against TFLite Micro's smallest working arena on the same int8 models. RAM is
deterministic, so the issue's ratios are asserted: <= 0.75 on the MLP, <= 0.5 on the CNN whose
peak sits in its first layers (run patch by patch)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow", reason="TensorFlow converts the Keras bench models")
pytest.importorskip("tflite_micro.python.tflite_micro.runtime",
                    reason="tflite-micro wheel not installed")

from bench.int8_memory import GOALS, HEADERS, measure  # noqa: E402
from bench.int8_models import keras_model, tflite  # noqa: E402
from bench.tflm import smallest_arena, works  # noqa: E402
from edgec.tables import format_table  # noqa: E402


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    return {name: tflite(keras_model(name)) for name in ("mlp", "mbnet_early")}


@pytest.mark.parametrize("name", ["mlp", "mbnet_early"])
def test_ratio_goal(name: str, blobs: dict[str, bytes]) -> None:
    row = measure(name, blobs[name], flash=False)
    assert row.ratio <= GOALS[name], format_table(HEADERS, [row.cells()])
    if name == "mbnet_early":  # the goal is reached by the patches, not without them
        assert row.recompute > 0 and row.arena_no_patches + row.io > 0.5 * row.tflm
    else:
        assert row.recompute == 0 and row.arena == row.arena_no_patches


def test_tflm_smallest_arena_is_the_edge(tmp_path: Path, blobs: dict[str, bytes]) -> None:
    """The bisection's answer runs and one byte less does not."""
    path = tmp_path / "mlp.tflite"
    path.write_bytes(blobs["mlp"])
    n = smallest_arena(path)
    assert works(path, n) and not works(path, n - 1)
    assert n > 64 + 64  # holds at least the input and output tensors
