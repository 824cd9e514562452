"""Sign and Round, elementwise.

``Round`` rounds halves to even (ONNX and ``torch.round``: 0.5 → 0, 1.5 → 2, -2.5 → -2) with
C99 ``rintf`` in the default rounding mode (±0, infinities and NaN unchanged); ``Sign`` gives
-1, 0 or 1, +0 for -0 and NaN for NaN, as ONNX Runtime (``torch.sign`` gives 0 for NaN).
Integer constants fold as integers.
"""

from __future__ import annotations

import numpy as np

from edgec.ops.base import register
from edgec.ops.trig import TableOp
from edgec.ops.unary import DERIV, UNARY, Unary


def _round(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    return x.copy() if x.dtype.kind in "iub" else np.round(x)  # numpy: halves to even


def _sign(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    if x.dtype.kind in "iub":
        return np.sign(x)
    with np.errstate(invalid="ignore"):
        return np.sign(x) + np.zeros((), x.dtype)  # -0 + 0 = +0; NaN stays NaN


ROUNDING: dict[str, Unary] = {
    "Round": Unary(lambda v, p: f"rintf({v})", _round),
    "Sign": Unary(lambda v, p: f"({v} > 0.0f ? 1.0f : ({v} < 0.0f ? -1.0f : {v} + 0.0f))", _sign),
}


@register
class SignRound(TableOp):
    types = tuple(ROUNDING)
    table = ROUNDING


UNARY.update(ROUNDING)
#: piecewise constant: derivative 0 (torch.autograd gives 0 too, also at the jumps)
DERIV.update({op: Unary(lambda v, p: "0.0f", lambda x, p: np.zeros_like(x, np.float32))
              for op in ROUNDING})
