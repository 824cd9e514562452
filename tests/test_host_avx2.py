"""The host's AVX2+FMA kernels (``EDGEC_AVX2``: edgec/ops/gemm.py, edgec/ops/conv.py): built in
where the host CPU runs them, the same results as the plain C within the float tolerances, and
strict and sanitizer-clean. The plain C (``-DEDGEC_NO_AVX2``) is what the Cortex-M builds run."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.backend.host import AVX2_CFLAGS, HostLibrary, build_shared, host_simd_flags
from tests.c_checks import strict_and_sanitized
from tests.helpers import ATOL, RTOL, make_model, ort_run, random_feeds


def _cpu_runs_avx2() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


HAS_AVX2 = _cpu_runs_avx2()
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="host CPU without AVX2+FMA")


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(np.float32)


def _conv(name: str, x: tuple[int, ...], w: tuple[int, ...], act: str | None = None,
          **attrs: object) -> tuple[onnx.ModelProto, str]:
    rng = np.random.default_rng(len(name))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if act else "y"], **attrs)]
    inits = {"w": _w(rng, *w), "b": _w(rng, w[0])}
    if act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        inits |= {"lo": np.float32(0.0), "hi": np.float32(1.5)}
    elif act:
        nodes.append(helper.make_node(act, ["c"], ["y"]))
    return make_model(nodes, {"x": x}, ["y"], inits, name=name), name


def _gemm(name: str, m: int, k: int, n: int, bias: bool, act: str | None = None
          ) -> tuple[onnx.ModelProto, str]:
    rng = np.random.default_rng(k * n)
    out = "g" if act else "y"
    if bias:
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], [out], transB=1)]
        inits = {"w": _w(rng, n, k), "b": _w(rng, n)}
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], [out])]
        inits = {"w": _w(rng, k, n)}
    if act:
        nodes.append(helper.make_node(act, ["g"], ["y"]))
    return make_model(nodes, {"x": (m, k)}, ["y"], inits, name=name), name


#: (model, the AVX2 code its C must contain): every variant of the AVX2 kernels
CASES = {
    "dense_mv4": (_gemm("dense_mv4", 3, 64, 22, True, "Relu"), "edgec_mv4("),
    "dense_k_tail": (_gemm("dense_k_tail", 2, 37, 20, True), "edgec_mv4_t1("),
    "matmul_no_bias": (_gemm("matmul_no_bias", 1, 14, 9, False, "Tanh"), "edgec_mv4_k14("),
    "im2col": (_conv("im2col", (1, 3, 7, 9), (14, 3, 3, 3), "Tanh", pads=[1, 1, 1, 1]),
               "edgec_avx2_mv4(scratch"),
    "pointwise_clip": (_conv("pointwise_clip", (1, 6, 5, 7), (8, 6, 1, 1), "Clip"),
                       "edgec_avx2_pw4("),
    "pointwise_sigmoid": (_conv("pointwise_sigmoid", (1, 9, 4, 5), (4, 9, 1, 1), "Sigmoid"),
                          "edgec_avx2_pw4("),
    "pointwise_1d": (_conv("pointwise_1d", (2, 5, 43), (12, 5, 1)), "edgec_avx2_pw4("),
    "depthwise_s1": (_conv("depthwise_s1", (1, 4, 11, 13), (4, 1, 3, 3), "Relu", group=4,
                           pads=[1, 1, 1, 1]), "_mm256_loadu_ps(&xc["),
    "depthwise_s2": (_conv("depthwise_s2", (1, 3, 20, 21), (3, 1, 3, 3), "LeakyRelu", group=3,
                           strides=[2, 2], pads=[1, 1, 1, 1]), "edgec_avx2_even8(&xc["),
    "depthwise_1d_mult2": (_conv("depthwise_1d_mult2", (1, 3, 30), (6, 1, 5), "Clip", group=3,
                                 pads=[2, 2]), "_mm256_loadu_ps(&xc["),
}


@pytest.fixture(scope="module")
def compiled() -> dict[str, tuple[onnx.ModelProto, edgec.CompiledModel]]:
    return {key: (model, edgec.compile(model, name=name))
            for key, ((model, name), _) in CASES.items()}


@pytest.mark.parametrize("key", list(CASES))
def test_avx2_path_matches_plain_c_and_onnxruntime(
    compiled: dict[str, tuple[onnx.ModelProto, edgec.CompiledModel]], key: str
) -> None:
    model, m = compiled[key]
    assert CASES[key][1] in m.c_source and "#ifdef EDGEC_AVX2" in m.c_source
    feeds = random_feeds(model, seed=3)
    expected = np.asarray(ort_run(model, feeds)[0], np.float32)
    xs = [feeds[n] for n in m.input_names]
    plain = HostLibrary(m.cmodel, build_shared(m.cmodel, ("-DEDGEC_NO_AVX2",))).run(*xs)[0]
    simd = HostLibrary(m.cmodel, build_shared(m.cmodel)).run(*xs)[0]
    np.testing.assert_allclose(plain, expected, rtol=RTOL, atol=ATOL, err_msg="plain C")
    np.testing.assert_allclose(simd, expected, rtol=RTOL, atol=ATOL, err_msg="default build")
    np.testing.assert_allclose(simd, plain, rtol=RTOL, atol=ATOL, err_msg="AVX2 vs plain C")


@needs_avx2
def test_avx2_compiled_in_where_the_cpu_runs_it(
    compiled: dict[str, tuple[onnx.ModelProto, edgec.CompiledModel]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default host build carries 8-wide FMAs; EDGEC_NO_AVX2 and -DEDGEC_NO_AVX2 drop them."""
    if shutil.which("objdump") is None:
        pytest.skip("no objdump")
    m = compiled["pointwise_clip"][1]

    def ymm_fmas(lib: Path) -> int:
        asm = subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True).stdout
        return sum(1 for ln in asm.splitlines() if "vfmadd" in ln and "%ymm" in ln)

    assert host_simd_flags() == AVX2_CFLAGS
    assert ymm_fmas(build_shared(m.cmodel)) > 0
    assert ymm_fmas(build_shared(m.cmodel, ("-DEDGEC_NO_AVX2",))) == 0
    monkeypatch.setenv("EDGEC_NO_AVX2", "1")
    assert host_simd_flags() == ()
    assert ymm_fmas(build_shared(m.cmodel)) == 0


@needs_avx2
@pytest.mark.parametrize("key", ["dense_mv4", "im2col", "pointwise_1d", "depthwise_s2"])
def test_avx2_strict_and_sanitized(
    compiled: dict[str, tuple[onnx.ModelProto, edgec.CompiledModel]], key: str, tmp_path: Path
) -> None:
    """-Wall -Wextra -Werror -std=c99 -pedantic with -mavx2 -mfma; ASan/UBSan with every buffer
    at its exact size (the vector loads and masked tails stay inside)."""
    model, m = compiled[key]
    feeds = random_feeds(model, seed=5)
    got = strict_and_sanitized(m, tmp_path, [feeds[n] for n in m.input_names], AVX2_CFLAGS)
    np.testing.assert_allclose(got[0], np.asarray(ort_run(model, feeds)[0], np.float32),
                               rtol=RTOL, atol=ATOL)
