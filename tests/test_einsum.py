"""Einsum (constant equation) lowered to MatMul/Transpose/Reshape/ReduceSum: against
onnxruntime and torch.einsum, the ops it becomes, and one-line errors for what it cannot
lower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgec
from edgec.errors import EdgecError, UnsupportedOpError
from tests.c_checks import strict_and_sanitized
from tests.helpers import ort_run


def _model(eq: str, shapes: list[tuple[int, ...]], const: tuple[int, ...] = ()) -> onnx.ModelProto:
    rng = np.random.default_rng(len(eq))
    names = [f"x{i}" for i in range(len(shapes))]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
              for i, (n, s) in enumerate(zip(names, shapes, strict=True)) if i not in const]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for i, (n, s) in enumerate(zip(names, shapes, strict=True)) if i in const]
    graph = helper.make_graph([helper.make_node("Einsum", names, ["y"], equation=eq)], "m",
                              inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                     None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim])
            .astype(np.float32) for vi in model.graph.input}


#: (equation, operand shapes, constant operands, the ops it lowers to)
CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)], (), ["MatMul"]),
    ("bi,oi->bo", [(2, 4), (3, 4)], (1,), ["MatMul"]),  # constant weights: a dense layer
    ("ij->ji", [(3, 4)], (), ["Transpose"]),
    ("ij->i", [(3, 4)], (), ["ReduceSum"]),
    ("ij->", [(3, 4)], (), ["ReduceSum"]),
    ("ij->ij", [(3, 4)], (), ["Identity"]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], (), ["MatMul"]),
    ("i,j->ij", [(3,), (4,)], (), None),
    ("i,i->", [(5,), (5,)], (), None),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)], (), ["MatMul"]),
    ("ij,jk", [(3, 4), (4, 5)], (), ["MatMul"]),  # implicit output
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)], (), None),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)], (), ["MatMul", "MatMul"]),
    ("bi,bi->b", [(3, 4), (3, 4)], (), None),
    ("abc,cd->abd", [(2, 3, 4), (4, 5)], (1,), None),
    ("i j , j k -> k i", [(3, 4), (4, 5)], (), ["MatMul", "Transpose"]),
    ("...i,i->...", [(2, 3, 4), (4,)], (1,), None),
    ("ik,kj->ji", [(3, 4), (4, 5)], (0,), None),
    ("bti,tj->bij", [(2, 3, 4), (3, 5)], (), None),
    ("ABc,cD->DAB", [(2, 3, 4), (4, 2)], (), None),
]


@pytest.mark.parametrize("eq,shapes,const,ops", CASES, ids=[c[0] for c in CASES])
def test_vs_onnxruntime(eq: str, shapes: list, const: tuple, ops: list | None) -> None:
    model = _model(eq, shapes, const)
    feeds = _feeds(model)
    expected = ort_run(model, feeds)[0]
    m = edgec.compile(model)
    assert "Einsum" not in [n.op for n in m.graph.nodes]
    if ops is not None:
        assert [n.op for n in m.graph.nodes if n.op != "Reshape"] == ops
    for got in (m.run(**feeds), m.reference(**feeds)):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_constant_operands_fold() -> None:
    model = _model("ij,jk->ik", [(3, 4), (4, 5)], (0, 1))
    graph = model.graph
    graph.node.append(helper.make_node("Add", ["y", "x"], ["z"]))
    graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]))
    graph.output[0].name = "z"
    m = edgec.compile(model)
    assert [n.op for n in m.graph.nodes] == ["Add"]


@pytest.mark.parametrize("eq,shapes,match", [
    ("ii->i", [(3, 3)], "repeated inside one operand"),
    ("ij,jk->ik", [(3, 4), (5, 6)], "sizes 4 and 5"),
    ("ij,jk->ik", [(3, 4)], "2 operand"),
    ("ijk->i", [(3, 4)], "does not fit"),
    ("ij->iz", [(3, 4)], "names one no operand has"),
    ("...i,...i->...", [(2, 3), (1, 3)], "'...' has sizes"),
])
def test_what_it_cannot_lower_is_one_line(eq: str, shapes: list, match: str) -> None:
    with pytest.raises(EdgecError, match=match) as err:
        edgec.compile(_model(eq, shapes))
    assert "\n" not in str(err.value) and "Einsum" in str(err.value)


def test_diagonal_is_unsupported_op_error() -> None:
    with pytest.raises(UnsupportedOpError):
        edgec.compile(_model("bii->bi", [(2, 3, 3)]))


def test_strict_c(tmp_path: Path) -> None:
    model = _model("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)])
    feeds = _feeds(model)
    (got,) = strict_and_sanitized(edgec.compile(model), tmp_path, list(feeds.values()))
    np.testing.assert_allclose(got, ort_run(model, feeds)[0], rtol=1e-5, atol=1e-5)


class Einsums(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.einsum("bi,oi->bo", x, self.w), torch.einsum("bi,bj->bij", x, x),
                torch.einsum("ij,ij->i", [x, x]), torch.einsum("...i,oi->...o", y, self.w),
                torch.einsum("bti->ib", y), torch.einsum("bti,bsi->bts", y, y))


@pytest.mark.parametrize("via", ["fx", "pt2"])
def test_torch(via: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(3, 4), torch.randn(2, 3, 4)
    module = Einsums().eval()
    with torch.no_grad():
        expected = [t.numpy() for t in module(x, y)]
    if via == "pt2":
        torch.export.save(torch.export.export(module, (x, y)), str(tmp_path / "m.pt2"))
        m = edgec.compile(str(tmp_path / "m.pt2"))
    else:
        m = edgec.compile(module, example_inputs=(x, y))
    for g_, e_ in zip(m.run(x.numpy(), y.numpy()), expected, strict=True):
        np.testing.assert_allclose(g_, e_, rtol=1e-5, atol=1e-5)


def test_torch_diagonal_is_one_line() -> None:
    class Trace(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("ii->i", x)

    with pytest.raises(EdgecError, match="diagonal") as err:
        edgec.compile(Trace(), example_inputs=(torch.randn(3, 3),))
    assert "\n" not in str(err.value)
