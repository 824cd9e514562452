"""ONNX's own backend test suite (``onnx.backend.test``, shipped in the onnx wheel) against the C.

Selection: the node tests of every op edgec supports (:data:`NODE_TESTS`), plus the
pytorch-converted, pytorch-operator and simple model tests whose ops all are in that list.
Every selected test runs through :class:`edgec.onnx_backend.EdgecBackend` (compile, build the C
with gcc, run it via ctypes, compare with ONNX's expected outputs at the suite's tolerances),
except those in :data:`EXCLUDED`, the one list of exclusions, each with its reason.

``docs/conformance.md`` reports the result; regenerate it (it runs every selected test, excluded
ones too, and flags exclusions that no longer fail) with::

    python -m tests.test_onnx_conformance --write-doc

``python -m tests.test_onnx_conformance --survey`` prints the same findings without writing.
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import re
import sys
import unittest
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

with warnings.catch_warnings():  # the node-test generators overflow casts on purpose
    warnings.simplefilter("ignore")
    import onnx.backend.test
    from onnx.backend.test.loader import load_model_tests

from edgec.errors import EdgecError
from edgec.onnx_backend import EdgecBackend, parameter_inputs

pytestmark = pytest.mark.conformance

DOC = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"


class ConformanceBackend(EdgecBackend):
    """Builds as the host library does (-O2), plus -Werror -pedantic: the project's bar for C.

    (-O0 would save about a fifth of the suite's time, most of which is gcc; -O2 keeps the
    optimizer's warnings and the shipped code path.)
    """

    cflags = ("-O2", "-Werror", "-pedantic")


#: op → the node tests that exercise it (the runner names them test_<op>_<variant>_<device>;
#: each pattern must match the whole name without the device suffix)
NODE_TESTS: dict[str, str] = {
    "Gemm": r"test_gemm_.*",
    "MatMul": r"test_matmul_.*",
    "Add": r"test_add(_.*)?",
    "Sub": r"test_sub(_.*)?",
    "Mul": r"test_mul(_.*)?",
    "Div": r"test_div(_.*)?",
    "Relu": r"test_relu(_.*)?",
    "LeakyRelu": r"test_leakyrelu(_.*)?",
    "PRelu": r"test_prelu_.*",
    "Sigmoid": r"test_sigmoid(_.*)?",
    "Tanh": r"test_tanh(_.*)?",
    "HardSigmoid": r"test_hardsigmoid(_.*)?",
    "HardSwish": r"test_hardswish(_.*)?",
    "Elu": r"test_elu(_.*)?",
    "Selu": r"test_selu(_.*)?",
    "Softplus": r"test_softplus(_.*)?",
    "Softmax": r"test_softmax_.*",
    "LogSoftmax": r"test_logsoftmax_.*",
    "Clip": r"test_clip(_.*)?",
    "Exp": r"test_exp(_.*)?",
    "Log": r"test_log(_.*)?",
    "Sqrt": r"test_sqrt(_.*)?",
    "Neg": r"test_neg(_.*)?",
    "Abs": r"test_abs(_.*)?",
    "Pow": r"test_pow(_.*)?",
    "Conv": r"test_basic_conv_with(out)?_padding|test_conv_with_.*",
    "ConvTranspose": r"test_convtranspose(_.*)?",
    "MaxPool": r"test_maxpool_.*",
    "AveragePool": r"test_averagepool_.*",
    "GlobalAveragePool": r"test_globalaveragepool(_.*)?",
    "GlobalMaxPool": r"test_globalmaxpool(_.*)?",
    "BatchNormalization": r"test_batchnorm_.*",
    "Flatten": r"test_flatten_.*",
    "Reshape": r"test_reshape_.*",
    "Transpose": r"test_transpose_.*",
    "Concat": r"test_concat_.*",
    "Split": r"test_split_(?!to_sequence).*",
    "Slice": r"test_slice(_.*)?",
    "Squeeze": r"test_squeeze(_.*)?",
    "Unsqueeze": r"test_unsqueeze_.*",
    "Gather": r"test_gather_(?!elements).*",
    "Pad": r"test_(constant|edge|reflect|wrap)_pad(_.*)?",
    "ReduceMean": r"test_reduce_mean_.*",
    "ReduceSum": r"test_reduce_sum_(?!square).*",
    "ReduceMax": r"test_reduce_max_.*",
    "Identity": r"test_identity(_.*)?",
    "Dropout": r"test_dropout_.*|test_training_dropout(_.*)?",
    "Constant": r"test_constant",
    "Cast": r"test_cast_.*",
    "RNN": r"test_rnn_.*|test_simple_rnn_.*",
    "GRU": r"test_gru_.*",
    "LSTM": r"test_lstm_.*",
    "Sin": r"test_sin(_example)?",
    "Cos": r"test_cos(_example)?",
    "Atan": r"test_atan(_example)?",
    "Erf": r"test_erf",
    "Sign": r"test_sign",
    "Round": r"test_round",
    "ArgMax": r"test_argmax_.*",
    "ArgMin": r"test_argmin_.*",
    "TopK": r"test_top_k(_.*)?",
    "LayerNormalization": r"test_layer_normalization_.*",
    "Einsum": r"test_einsum_.*",
}

#: model-test collections whose models are included when every op they use is in NODE_TESTS
MODEL_KINDS = ("pytorch-converted", "pytorch-operator", "simple")

_POW_TENSOR = "Pow exponent is a tensor (edgec: one scalar exponent)"
_OPSET6_PRELU = "opset 6 PRelu: per-channel slope of shape (C,) (numpy broadcasting since opset 7)"

_3D = "3-D spatial input (edgec: 1-D and 2-D)"

#: THE exclusion list: test name (without the _cpu suffix) → why it cannot pass on edgec. A reason
#: starting with "bug:" marks a defect to fix: that test runs as an expected failure, so the suite
#: flags it the day it passes.
EXCLUDED: dict[str, str] = {
    # -- dtypes: edgec's C functions take and return float32 tensors only --------------------
    "test_add_int16": "INT16 data",
    "test_add_int8": "INT8 data",
    "test_add_uint16": "UINT16 data",
    "test_add_uint32": "UINT32 data",
    "test_add_uint64": "UINT64 data",
    "test_add_uint8": "UINT8 data",
    "test_clip_default_int8_inbounds": "INT8 data",
    "test_clip_default_int8_inbounds_expanded": "INT8 data",
    "test_clip_default_int8_max": "INT8 data",
    "test_clip_default_int8_max_expanded": "INT8 data",
    "test_clip_default_int8_min": "INT8 data",
    "test_clip_default_int8_min_expanded": "INT8 data",
    "test_div_int16": "INT16 data",
    "test_div_int32_trunc": "INT32 data",
    "test_div_int8": "INT8 data",
    "test_div_uint16": "UINT16 data",
    "test_div_uint32": "UINT32 data",
    "test_div_uint64": "UINT64 data",
    "test_div_uint8": "UINT8 data",
    "test_dropout_default_mask": "mask output (BOOL)",
    "test_dropout_default_mask_ratio": "mask output (BOOL)",
    "test_edge_pad": "INT32 data",
    "test_identity_opt": "optional-typed input (not a tensor)",
    "test_identity_sequence": "sequence-typed input (not a tensor)",
    "test_maxpool_2d_uint8": "UINT8 data",
    "test_maxpool_with_argmax_2d_precomputed_pads": "Indices output (INT64)",
    "test_maxpool_with_argmax_2d_precomputed_strides": "Indices output (INT64)",
    "test_mul_int16": "INT16 data",
    "test_mul_int8": "INT8 data",
    "test_mul_uint16": "UINT16 data",
    "test_mul_uint32": "UINT32 data",
    "test_mul_uint64": "UINT64 data",
    "test_mul_uint8": "UINT8 data",
    "test_operator_add_broadcast": "DOUBLE data",
    "test_operator_add_size1_broadcast": "DOUBLE data",
    "test_operator_add_size1_right_broadcast": "DOUBLE data",
    "test_operator_add_size1_singleton_broadcast": "DOUBLE data",
    "test_operator_addconstant": "DOUBLE data",
    "test_operator_non_float_params": "INT64 data",
    "test_pow_types_int32_float32": "INT32 data",
    "test_pow_types_int32_int32": "INT32 data",
    "test_pow_types_int64_float32": "INT64 data",
    "test_pow_types_int64_int64": "INT64 data",
    "test_reduce_max_bool_inputs": "BOOL data",
    "test_reduce_max_empty_set_bool": "BOOL data",
    "test_reflect_pad": "INT32 data",
    "test_sub_int16": "INT16 data",
    "test_sub_int8": "INT8 data",
    "test_sub_uint16": "UINT16 data",
    "test_sub_uint32": "UINT32 data",
    "test_sub_uint64": "UINT64 data",
    "test_sub_uint8": "UINT8 data",
    "test_training_dropout_default_mask": "mask output (BOOL)",
    "test_training_dropout_mask": "mask output (BOOL)",
    "test_training_dropout_zero_ratio_mask": "mask output (BOOL)",
    "test_wrap_pad": "INT32 data",
    "test_einsum_batch_diagonal": "DOUBLE data",
    "test_einsum_batch_matmul": "DOUBLE data",
    "test_einsum_batch_matmul_bfloat16": "BFLOAT16 data",
    "test_einsum_inner_prod": "DOUBLE data",
    "test_einsum_scalar": "DOUBLE data",
    "test_einsum_sum": "DOUBLE data",
    "test_einsum_sum_bfloat16": "BFLOAT16 data",
    "test_einsum_transpose": "DOUBLE data",
    "test_einsum_transpose_bfloat16": "BFLOAT16 data",
    "test_top_k_same_values": "INT64 data",
    "test_top_k_same_values_2d": "INT64 data",
    "test_top_k_same_values_largest": "INT64 data",
    "test_top_k_uint64": "UINT64 data",
    # -- Cast: every ONNX Cast test has a non-float32 input or output ---------------------------
    "test_cast_BFLOAT16_to_FLOAT": "BFLOAT16 input",
    "test_cast_DOUBLE_to_FLOAT": "DOUBLE input",
    "test_cast_DOUBLE_to_FLOAT16": "DOUBLE input",
    "test_cast_FLOAT16_to_DOUBLE": "FLOAT16 input",
    "test_cast_FLOAT16_to_FLOAT": "FLOAT16 input",
    "test_cast_FLOAT16_to_FLOAT4E2M1": "FLOAT16 input",
    "test_cast_FLOAT16_to_FLOAT8E4M3FN": "FLOAT16 input",
    "test_cast_FLOAT16_to_FLOAT8E4M3FNUZ": "FLOAT16 input",
    "test_cast_FLOAT16_to_FLOAT8E5M2": "FLOAT16 input",
    "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ": "FLOAT16 input",
    "test_cast_FLOAT16_to_INT2": "FLOAT16 input",
    "test_cast_FLOAT16_to_INT4": "FLOAT16 input",
    "test_cast_FLOAT16_to_UINT2": "FLOAT16 input",
    "test_cast_FLOAT16_to_UINT4": "FLOAT16 input",
    "test_cast_FLOAT4E2M1_to_FLOAT": "FLOAT4E2M1 input",
    "test_cast_FLOAT4E2M1_to_FLOAT16": "FLOAT4E2M1 input",
    "test_cast_FLOAT8E4M3FNUZ_to_FLOAT": "FLOAT8E4M3FNUZ input",
    "test_cast_FLOAT8E4M3FNUZ_to_FLOAT16": "FLOAT8E4M3FNUZ input",
    "test_cast_FLOAT8E4M3FN_to_FLOAT": "FLOAT8E4M3FN input",
    "test_cast_FLOAT8E4M3FN_to_FLOAT16": "FLOAT8E4M3FN input",
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT": "FLOAT8E5M2FNUZ input",
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT16": "FLOAT8E5M2FNUZ input",
    "test_cast_FLOAT8E5M2_to_FLOAT": "FLOAT8E5M2 input",
    "test_cast_FLOAT8E5M2_to_FLOAT16": "FLOAT8E5M2 input",
    "test_cast_FLOAT_to_BFLOAT16": "BFLOAT16 output",
    "test_cast_FLOAT_to_DOUBLE": "DOUBLE output",
    "test_cast_FLOAT_to_FLOAT16": "FLOAT16 output",
    "test_cast_FLOAT_to_FLOAT4E2M1": "FLOAT4E2M1 output",
    "test_cast_FLOAT_to_FLOAT8E4M3FN": "FLOAT8E4M3FN output",
    "test_cast_FLOAT_to_FLOAT8E4M3FNUZ": "FLOAT8E4M3FNUZ output",
    "test_cast_FLOAT_to_FLOAT8E5M2": "FLOAT8E5M2 output",
    "test_cast_FLOAT_to_FLOAT8E5M2FNUZ": "FLOAT8E5M2FNUZ output",
    "test_cast_FLOAT_to_INT2": "INT2 output",
    "test_cast_FLOAT_to_INT4": "INT4 output",
    "test_cast_FLOAT_to_UINT2": "UINT2 output",
    "test_cast_FLOAT_to_UINT4": "UINT4 output",
    "test_cast_INT2_to_FLOAT": "INT2 input",
    "test_cast_INT2_to_FLOAT16": "INT2 input",
    "test_cast_INT2_to_INT8": "INT2 input",
    "test_cast_INT4_to_FLOAT": "INT4 input",
    "test_cast_INT4_to_FLOAT16": "INT4 input",
    "test_cast_INT4_to_INT8": "INT4 input",
    "test_cast_UINT2_to_FLOAT": "UINT2 input",
    "test_cast_UINT2_to_FLOAT16": "UINT2 input",
    "test_cast_UINT2_to_UINT8": "UINT2 input",
    "test_cast_UINT4_to_FLOAT": "UINT4 input",
    "test_cast_UINT4_to_FLOAT16": "UINT4 input",
    "test_cast_UINT4_to_UINT8": "UINT4 input",
    "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0": "FLOAT16 input",
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT": "FLOAT8E8M0 input",
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16": "FLOAT8E8M0 input",
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0": "FLOAT8E8M0 output",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN": "FLOAT16 input",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ": "FLOAT16 input",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2": "FLOAT16 input",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ": "FLOAT16 input",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN": "FLOAT8E4M3FN output",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ": "FLOAT8E4M3FNUZ output",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2": "FLOAT8E5M2 output",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ": "FLOAT8E5M2FNUZ output",
    # -- parameters edgec needs as compile-time constants ---------------------------------------
    "test_pow": _POW_TENSOR,
    "test_pow_example": _POW_TENSOR,
    "test_pow_bcast_array": _POW_TENSOR,
    "test_pow_types_float32_int32": _POW_TENSOR,
    "test_pow_types_float32_int64": _POW_TENSOR,
    "test_pow_types_float32_uint32": _POW_TENSOR,
    "test_pow_types_float32_uint64": _POW_TENSOR,
    "test_operator_pow": "Pow exponent is a run-time tensor (edgec: one constant scalar exponent)",
    # -- 3-D spatial ops (edgec: 1-D and 2-D Conv, ConvTranspose and pooling) -----------------
    "test_AvgPool3d": _3D,
    "test_AvgPool3d_stride": _3D,
    "test_AvgPool3d_stride1_pad0_gpu_input": _3D,
    "test_Conv3d": _3D,
    "test_Conv3d_dilated": _3D,
    "test_Conv3d_dilated_strided": _3D,
    "test_Conv3d_groups": _3D,
    "test_Conv3d_no_bias": _3D,
    "test_Conv3d_stride": _3D,
    "test_Conv3d_stride_padding": _3D,
    "test_MaxPool3d": _3D,
    "test_MaxPool3d_stride": _3D,
    "test_MaxPool3d_stride_padding": _3D,
    "test_averagepool_3d_default": _3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": _3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": _3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": _3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": _3D,
    "test_averagepool_3d_dilations_small": _3D,
    "test_convtranspose_3d": _3D,
    "test_maxpool_3d_default": _3D,
    "test_maxpool_3d_dilations": _3D,
    "test_maxpool_3d_dilations_use_ref_impl": _3D,
    "test_maxpool_3d_dilations_use_ref_impl_large": _3D,
    # -- attribute combinations edgec rejects ---------------------------------------------------
    "test_convtranspose_output_shape": (
        "output_shape beyond the full transposed extent (implied output_padding) not supported"
    ),
    # -- zero-size tensors (edgec needs every dimension >= 1) -----------------------------------
    "test_reduce_max_empty_set": "zero-size tensor",
    "test_reduce_sum_empty_set": "zero-size tensor",
    "test_reduce_sum_empty_set_non_reduced_axis_zero": "zero-size tensor",
    "test_reshape_allowzero_reordered": "zero-size tensor",
    "test_split_zero_size_splits_opset13": "zero-size tensor",
    "test_split_zero_size_splits_opset18": "zero-size tensor",
    # -- training mode (edgec compiles inference graphs) -----------------------------------------
    "test_batchnorm_epsilon_training_mode": "training_mode",
    "test_batchnorm_example_training_mode": "training_mode",
    "test_training_dropout": "training_mode",
    "test_training_dropout_default": "training_mode",
    "test_training_dropout_zero_ratio": "training_mode",
    # -- opset < 7 semantics (edgec implements opsets 7-21) ------------------------------------
    "test_PReLU_1d_multiparam": _OPSET6_PRELU,
    "test_PReLU_2d_multiparam": _OPSET6_PRELU,
    "test_PReLU_3d_multiparam": _OPSET6_PRELU,
    # -- defects (reason "bug: ...": run as expected failures) ----------------------------------
}


def _op_of(name: str) -> str | None:
    for op, pat in NODE_TESTS.items():
        if re.fullmatch(pat, name):
            return op
    return None


@functools.lru_cache(maxsize=1)
def _model_tests() -> dict[str, tuple[str, str]]:
    """Included model tests: name → (collection, comma-separated op types)."""
    data = Path(onnx.backend.test.__file__).resolve().parent / "data"
    out: dict[str, tuple[str, str]] = {}
    for kind in MODEL_KINDS:
        for d in sorted(glob.glob(str(data / kind / "test_*"))):
            path = os.path.join(d, "model.onnx")
            if not os.path.isfile(path):
                continue
            ops = sorted({n.op_type for n in onnx.load(path, load_external_data=False).graph.node})
            if ops and all(op in NODE_TESTS for op in ops):
                out[os.path.basename(d)] = (kind, ",".join(ops))
    return out


def selected() -> dict[str, str]:
    """Every selected test (without the _cpu suffix) → what it exercises (op or model ops)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node_names = sorted(t.name for t in load_model_tests(kind="node"))
    out: dict[str, str] = {}
    for name in node_names:
        op = _op_of(name)
        if op is not None:
            out[name] = op
    for name, (kind, ops) in _model_tests().items():
        out[name] = f"{kind}: {ops}"
    return out


def _build_cases() -> tuple[dict[str, type[unittest.TestCase]], dict[str, Callable[..., Any]]]:
    """(TestCase classes for pytest, name → the unwrapped test function for the survey)."""
    names = selected()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = onnx.backend.test.BackendTest(ConformanceBackend, __name__)
    for name in names:
        runner.include(f"^{re.escape(name)}_cpu$")
    classes: dict[str, type[unittest.TestCase]] = {}
    raw: dict[str, Callable[..., Any]] = {}
    items = runner._test_items  # the runner's unfiltered test functions, by category
    for category, by_name in sorted(items.items()):
        attrs: dict[str, Any] = {}
        for test_name, item in sorted(by_name.items()):
            base = test_name.removesuffix("_cpu")
            if not test_name.endswith("_cpu") or base not in names:
                continue
            raw[base] = item.func
            func = item.func
            reason = EXCLUDED.get(base)
            if reason is not None and reason.startswith("bug:"):
                func = unittest.expectedFailure(func)
            elif reason is not None:
                func = unittest.skip(f"excluded: {reason}")(func)
            attrs[test_name] = func
        if attrs:
            cls_name = f"OnnxBackend{category}Test"
            cls = type(cls_name, (unittest.TestCase,), attrs)
            cls.__module__ = __name__
            classes[cls_name] = cls
    return classes, raw


_CLASSES, _RAW = _build_cases()
globals().update(_CLASSES)


_REGEN = "run python -m tests.test_onnx_conformance --write-doc"


# -- the backend itself -----------------------------------------------------------------------

def test_backend_devices() -> None:
    assert EdgecBackend.supports_device("CPU")
    assert not EdgecBackend.supports_device("CUDA")
    with pytest.raises(EdgecError, match="CPU only"):
        EdgecBackend.prepare(_relu_model(), "CUDA")


def _relu_model() -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_backend_run_node_and_model() -> None:
    x = np.array([[-1.5, 0.0, 2.0], [3.0, -0.25, 7.0]], np.float32)
    (y,) = ConformanceBackend.run_node(helper.make_node("Relu", ["x"], ["y"]), [x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    (y,) = ConformanceBackend.run_model(_relu_model(), {"x": -x})
    np.testing.assert_array_equal(y, np.maximum(-x, 0))


def test_backend_binds_parameter_inputs_per_value() -> None:
    """Pow's exponent fed as an input is bound at run time; a new value means a new build."""
    node = helper.make_node("Pow", ["x", "e"], ["y"])
    graph = helper.make_graph(
        [node], "pow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5]),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
    )
    rep = ConformanceBackend.prepare(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    assert rep.bound_inputs == ["e"]
    x = np.array([0.5, 1.0, 2.0, 3.0, 1.25], np.float32)
    for e in (2.0, 3.0, 2.0):
        (y,) = rep.run([x, np.float32(e)])
        np.testing.assert_allclose(y, x**e, rtol=1e-6)
    assert len(rep._builds) == 2


def test_backend_rejects_non_float_boundary() -> None:
    node = helper.make_node("Shape", ["x"], ["s"])
    graph = helper.make_graph(
        [node], "shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(EdgecError, match="INT64"):
        ConformanceBackend.prepare(model)


def test_exclusions_name_selected_tests() -> None:
    stray = sorted(set(EXCLUDED) - set(_RAW))
    assert not stray, f"EXCLUDED names tests that are not selected: {stray}"


def test_conformance_doc_in_sync() -> None:
    """docs/conformance.md lists exactly EXCLUDED and the current selection's counts."""
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `(test_\w+)` \| [^|]* \| (.+?) \|$", text, flags=re.M))
    assert rows == EXCLUDED, f"docs/conformance.md is stale: {_REGEN}"
    m = re.search(r"^Selected: (\d+) tests; passing: (\d+); excluded: (\d+)\.$", text, flags=re.M)
    assert m, "docs/conformance.md lacks its summary line"
    assert (int(m[1]), int(m[2]), int(m[3])) == (
        len(_RAW), len(_RAW) - len(EXCLUDED), len(EXCLUDED)
    ), f"docs/conformance.md counts are stale: {_REGEN}"


# -- survey and report (python -m tests.test_onnx_conformance --survey / --write-doc) -----------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if isinstance(exc, AssertionError) and len(lines) > 1:
        detail = next((ln for ln in lines if ln.startswith("Mismatched") or "Max abs" in ln), "")
        return f"{lines[0][:120]} {detail}".strip()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def survey() -> dict[str, str]:
    """Run every selected test (excluded ones too): name → "" when it passes, else the error."""
    results: dict[str, str] = {}
    for name, func in sorted(_RAW.items()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                func(None)
            results[name] = ""
        except unittest.SkipTest as exc:
            results[name] = f"skipped: {exc}"
        except Exception as exc:  # every failure is a finding
            results[name] = _first_line(exc)
    return results


def _failing_note(failing: list[str]) -> str:
    return f" Failing and not excluded: {', '.join(f'`{n}`' for n in failing)}." if failing else ""


def write_doc(results: dict[str, str]) -> None:
    sel = selected()
    passing = [n for n, r in results.items() if not r]
    failing = sorted(n for n, r in results.items() if r and n not in EXCLUDED)
    per_op: dict[str, list[int]] = {}
    for name, what in sel.items():
        counts = per_op.setdefault(what.split(":")[0], [0, 0, 0])
        counts[0 if not results.get(name) else 1 if name in EXCLUDED else 2] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node_models = {t.name: t.model for t in load_model_tests(kind="node")}
    bound = [n for n in passing if node_models.get(n) and parameter_inputs(node_models[n])]
    lines = [
        "# ONNX backend conformance",
        "",
        "ONNX ships its backend test suite in the onnx wheel (`onnx.backend.test`). "
        "`tests/test_onnx_conformance.py` runs it against edgec's generated C through "
        "`edgec.onnx_backend.EdgecBackend`: each test model is compiled by `edgec.compile`, the C "
        "is built with gcc (`-std=c99 -O2 -Wall -Wextra -Werror -pedantic`) and run on the host "
        "via ctypes, and its outputs are compared with ONNX's expected outputs at the suite's own "
        "tolerances. The tests carry the `conformance` marker and run in plain `pytest tests/`.",
        "",
        "Selection: the node tests of every op edgec supports (patterns in `NODE_TESTS`), plus the "
        "pytorch-converted, pytorch-operator and simple model tests whose ops all are in that "
        "list. Exclusions live in one list, `EXCLUDED`, each with its reason; this page is "
        "generated from it (`python -m tests.test_onnx_conformance --write-doc`, which runs every "
        "selected test, excluded ones included) and a test checks that the two agree.",
        "",
        f"Selected: {len(sel)} tests; passing: {len(passing)}; excluded: {len(EXCLUDED)}.",
        "",
        f"(onnx {onnx.__version__}; excluded tests that are known bugs, reason `bug: ...`, run as "
        f"expected failures.){_failing_note(failing)}",
        "",
        "## Parameter inputs",
        "",
        "edgec compiles a model for fixed weights and fixed shape, axis, index, pad and exponent "
        "parameters (they become `static const` tables and compile-time loop bounds). Many node "
        "tests feed those as graph inputs. The backend binds a graph input that is used only at "
        "such a position (`PARAMETER_INPUTS` in `edgec/onnx_backend.py`: Conv/ConvTranspose "
        "weights and bias, BatchNormalization statistics, RNN/GRU/LSTM weights and sequence "
        "lengths, Pow exponent, Clip bounds, Reshape shape, Slice starts/ends/axes/steps, Gather "
        "indices, Pad pads/value/axes, Split sizes, (Un)Squeeze and Reduce axes, TopK k, Dropout "
        "ratio and training mode) to the value the test feeds, when `run` sees it, and compiles "
        "then (once per distinct set of values). The data inputs stay run-time arguments of the C "
        "function; expected outputs are never read by the backend. "
        f"{len(bound)} passing tests rely on such binding.",
        "",
        *_kept_sections(),
        "## Per op",
        "",
        "| op / collection | passing | excluded | failing |",
        "|---|---|---|---|",
    ]
    for key in sorted(per_op):
        ok, ex, bad = per_op[key]
        lines.append(f"| {key} | {ok} | {ex} | {bad} |")
    lines += [
        "",
        "## Exclusions",
        "",
        "| test | op / collection | reason |",
        "|---|---|---|",
    ]
    for name in sorted(EXCLUDED):
        lines.append(f"| `{name}` | {sel.get(name, '?')} | {EXCLUDED[name]} |")
    lines.append("")
    DOC.write_text("\n".join(lines))


#: hand-written sections of docs/conformance.md that --write-doc keeps as they are
KEPT_SECTIONS = ("## Invalid models, NaN and infinity",
                 "## Front-end sweep: torch modules and hand-built ONNX")


def _kept_sections() -> list[str]:
    text = DOC.read_text() if DOC.is_file() else ""
    out: list[str] = []
    for head in KEPT_SECTIONS:
        m = re.search(rf"^{re.escape(head)}\n.*?(?=^## )", text, flags=re.M | re.S)
        if m:
            out += m.group(0).rstrip("\n").split("\n") + [""]
    return out


def _report(results: dict[str, str]) -> int:
    failing = {n: r for n, r in results.items() if r and n not in EXCLUDED}
    stale = sorted(n for n, r in results.items() if not r and n in EXCLUDED)
    for n, r in sorted(failing.items()):
        print(f"FAIL  {n}: {r}")
    for n in stale:
        print(f"STALE {n}: passes but is excluded ({EXCLUDED[n]})")
    print(
        f"{len(results)} selected, {sum(not r for r in results.values())} pass, "
        f"{len(failing)} failing and not excluded, {len(stale)} stale exclusions"
    )
    return 1 if failing or stale else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survey", action="store_true", help="run every selected test and report")
    ap.add_argument("--write-doc", action="store_true", help="survey, then write the doc")
    ap.add_argument("--errors", action="store_true", help="print every failing test's error")
    args = ap.parse_args(argv)
    results = survey()
    if args.errors:
        for n, r in sorted(results.items()):
            if r:
                print(f"    {n!r}: {r!r},")
    rc = _report(results)
    if args.write_doc:
        write_doc(results)
        print(f"wrote {DOC}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
