"""Shared test helpers: build small ONNX models and check edgec's C against onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgec

#: default tolerances of float32 C vs onnxruntime (both single precision; libm vs MLAS)
RTOL = 1e-4
ATOL = 1e-5


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int]],
    outputs: Sequence[str] | Mapping[str, Sequence[int] | None],
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
    name: str = "m",
) -> onnx.ModelProto:
    """A float32 model; outputs' shapes may be None (left to shape inference)."""
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()]
    outs_spec = outputs if isinstance(outputs, Mapping) else {o: None for o in outputs}
    outs = [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, None if v is None else list(v))
        for k, v in outs_spec.items()
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), name, ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10
    if all(v is not None for v in outs_spec.values()):
        onnx.checker.check_model(model)
    return model


def ort_run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def random_feeds(
    model: onnx.ModelProto, seed: int = 0, low: float = -2.0, high: float = 2.0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    init = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.uniform(low, high, shape).astype(np.float32)
    return feeds


def check_model(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    **compile_kw: Any,
) -> edgec.CompiledModel:
    """Compile with edgec; compare the C output AND the numpy IR interpreter with onnxruntime."""
    feeds = dict(feeds) if feeds is not None else random_feeds(model)
    expected = ort_run(model, feeds)
    m = edgec.compile(model, **compile_kw)
    got = m.run(**{k: feeds[k] for k in m.input_names})
    got = got if isinstance(got, list) else [got]
    ref = m.reference(**{k: feeds[k] for k in m.input_names})
    ref = ref if isinstance(ref, list) else [ref]
    assert len(got) == len(expected)
    for i, (g_, r_, e_) in enumerate(zip(got, ref, expected, strict=True)):
        e_ = np.asarray(e_, np.float32)
        assert g_.shape == e_.shape, f"output {i}: C shape {g_.shape} vs onnxruntime {e_.shape}"
        np.testing.assert_allclose(g_, e_, rtol=rtol, atol=atol, err_msg=f"C output {i}")
        np.testing.assert_allclose(
            r_, e_, rtol=rtol, atol=atol, err_msg=f"IR interpreter output {i}"
        )
    return m
