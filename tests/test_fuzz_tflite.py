"""The TFLite mutation fuzzer (bench/fuzz_tflite.py): mutated Keras-converted models are refused
in one line or compiled and equal to the TFLite interpreter (int8 byte for byte); its mutations
and its classification."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest

from bench.fuzz_tflite import MUTATIONS, classify, fuzz, mutants, mutate, seed_models
from edgec.frontend.tflite.reader import read_tflite

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                       reason="the seed models are converted by TensorFlow "
                              "(pip install 'edgec[tf]')"),
    pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                       reason="the reference is the TFLite interpreter (ai-edge-litert)"),
]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return seed_models(Path(tmp_path_factory.mktemp("seeds")), names=("branches", "cnn2d"))


def test_every_mutation_changes_a_model_that_still_parses(seeds: dict[str, bytes]) -> None:
    data = seeds["cnn2d_int8"]
    for kind in sorted(MUTATIONS):
        got = None
        for k in range(20):  # a draw may find nothing to change (then None)
            got = mutate(data, kind, random.Random(k))
            if got is not None:
                break
        assert got is not None, kind
        out, what = got
        assert out != data and what, kind
        read_tflite(out, source=kind)


def test_mutants_are_deterministic(seeds: dict[str, bytes]) -> None:
    a = [(m.seed_model, m.kind, m.what, m.data) for m in mutants(seeds, 12, seed=4)]
    b = [(m.seed_model, m.kind, m.what, m.data) for m in mutants(seeds, 12, seed=4)]
    assert a == b and len({m[3] for m in a}) == 12


def test_a_batch_of_mutants_matches_the_interpreter(seeds: dict[str, bytes]) -> None:
    res = fuzz(40, seed=3, execute="numpy", seeds=seeds)
    assert res.bad_count == 0, [(m.kind, m.what, o, d) for m, o, d in res.bad]
    assert res.counts["match"] >= 20, res.counts


def test_a_few_mutants_as_generated_c(seeds: dict[str, bytes]) -> None:
    res = fuzz(8, seed=11, execute="host", seeds=seeds)
    assert res.bad_count == 0, [(m.kind, m.what, o, d) for m, o, d in res.bad]
    assert res.counts["match"] >= 3, res.counts


def _ok(*outs: np.ndarray) -> dict:
    return {"status": "ok", "outs": list(outs)}


def test_classification() -> None:
    q = np.array([[1, -128, 127]], np.int8)
    f = np.array([1.0, -2.0, np.nan], np.float32)
    assert classify(_ok(q, f), _ok(q.copy(), f + 1e-6))[0] == "match"
    assert classify(_ok(q), _ok(q + np.int8(1)))[0] == "mismatch"  # one code off
    assert classify(_ok(q), _ok(q.reshape(3)))[0] == "mismatch"  # shape
    assert classify(_ok(q), _ok(q.astype(np.int16)))[0] == "mismatch"  # dtype
    assert classify(_ok(f), _ok(f * 1.001))[0] == "mismatch"  # beyond the float tolerance
    assert classify(_ok(q), _ok(q, q))[0] == "mismatch"  # output count
    assert classify(_ok(q), {"status": "refused", "why": "x"}) == ("refused_valid", "x")
    assert classify(_ok(q), {"status": "internal", "why": "KeyError"})[0] == "internal_error"
    assert classify(_ok(q), {"status": "multiline", "why": "a\nb"})[0] == "multiline_error"
    rejects = {"status": "rejects", "why": "Prepare failed"}
    assert classify(rejects, {"status": "refused", "why": ""})[0] == "refused"
    assert classify(rejects, {"status": "compiled"})[0] == "compiled_interp_rejects"


def test_the_seed_list_names_every_keras_seed() -> None:
    from bench.fuzz_tflite import SEED_KINDS, SEED_NAMES, _keras_models

    assert sorted(_keras_models()) == sorted(SEED_NAMES)
    assert set(SEED_KINDS) <= set(SEED_NAMES)
