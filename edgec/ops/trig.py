"""Elementwise transcendental functions: Sin, Cos, Atan and Erf (the Gaussian error function,
what the legacy PyTorch exporter writes for ``nn.GELU``).

The C kernels call single-precision libm (``sinf``, ``cosf``, ``atanf``, ``erff``: newlib's on
Cortex-M, glibc's on the host); the numpy references evaluate in float64 and round to float32.
:class:`TableOp` (one table entry per op: C expression over ``v``, numpy reference) is shared with
:mod:`edgec.ops.rounding`. Both register their ops in :mod:`edgec.ops.unary`'s ``UNARY`` (as
parameterless unary ops: Transposes move through them) and their derivatives in ``DERIV``
(forward-mode Jacobians of the MPC, ``passes.jacobian``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, c_float, prod, register
from edgec.ops.unary import DERIV, UNARY, Unary, map_loop


def _erf(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x.astype(np.float64))


#: op → (C expression over the float ``v``, numpy reference)
TRIG: dict[str, Unary] = {
    "Sin": Unary(lambda v, p: f"sinf({v})", lambda x, p: np.sin(x.astype(np.float64))),
    "Cos": Unary(lambda v, p: f"cosf({v})", lambda x, p: np.cos(x.astype(np.float64))),
    "Atan": Unary(lambda v, p: f"atanf({v})", lambda x, p: np.arctan(x.astype(np.float64))),
    "Erf": Unary(lambda v, p: f"erff({v})", _erf),
}


class TableOp(Op):
    """An elementwise op whose C expression and reference come from :attr:`table`; the output
    keeps the input's shape and dtype, and may overwrite the input."""

    table: ClassVar[dict[str, Unary]] = {}

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        return [(g.shape(node.inputs[0]), g.tensor(node.inputs[0]).dtype)]

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        x = inputs[0]
        assert x is not None
        with np.errstate(invalid="ignore"):
            return [np.asarray(self.table[node.op].ref(x, {})).astype(x.dtype)]

    def inplace(self, node: Node, g: Graph) -> bool:
        return True

    def emit(self, node: Node, ctx: EmitContext) -> str:
        expr = self.table[node.op].c("v", {})
        return map_loop(prod(ctx.g.shape(node.outputs[0])), ctx.inp(0), ctx.out(0), expr)


@register
class Trig(TableOp):
    types = tuple(TRIG)
    table = TRIG


def _f64(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

UNARY.update(TRIG)
DERIV.update({
    "Sin": Unary(lambda v, p: f"cosf({v})", lambda x, p: np.cos(_f64(x)).astype(np.float32)),
    "Cos": Unary(lambda v, p: f"(-sinf({v}))", lambda x, p: (-np.sin(_f64(x))).astype(np.float32)),
    "Atan": Unary(lambda v, p: f"(1.0f / (1.0f + {v} * {v}))",
                  lambda x, p: (1.0 / (1.0 + _f64(x) ** 2)).astype(np.float32)),
    "Erf": Unary(lambda v, p: f"({c_float(_TWO_OVER_SQRT_PI)} * expf(-{v} * {v}))",
                 lambda x, p: (_TWO_OVER_SQRT_PI * np.exp(-_f64(x) ** 2)).astype(np.float32)),
})
