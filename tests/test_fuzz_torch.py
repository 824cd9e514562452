"""A bounded run of the PyTorch front-end's differential fuzzer (bench/fuzz_torch.py): random
compositions of supported layers must compile and match torch, or be refused with an
EdgecError; never a silent mismatch or an internal error."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from bench.fuzz_torch import fuzz, random_case  # noqa: E402


def test_cases_are_reproducible_from_their_seed() -> None:
    a, b = random_case(12345), random_case(12345)
    assert a.layers == b.layers and bool((a.example == b.example).all())
    assert any(random_case(s).layers != a.layers for s in range(5))


def test_some_cases_carry_state_in_a_buffer() -> None:
    assert any(random_case(7 * 1_000_003 + i).steps > 1 for i in range(40))


def test_bounded_fuzz_run_has_no_mismatch_or_internal_error() -> None:
    counts = fuzz(40, seed=7)
    assert counts["mismatch"] == 0 and counts["internal"] == 0, counts
    assert counts["ok"] >= 30  # the generator builds mostly supported models
