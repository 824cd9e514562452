"""Tiny float ONNX models and their onnxruntime-quantized twins (QDQ and QOperator formats),
shared by the ONNX-int8 and quantizer tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx


def _export(module: object, example: object) -> onnx.ModelProto:
    import torch

    buf = io.BytesIO()
    torch.onnx.export(module, (example,), buf, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def float_cnn() -> onnx.ModelProto:
    """conv 3x3 (+relu), max pool, depthwise 3x3 (+relu) with a residual add, global average
    pool, dense: 1x3x8x8 → 1x10."""
    import torch
    from torch import nn

    class Cnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 12, 1)
            self.fc = nn.Linear(12, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.c1(x))
            y = nn.functional.max_pool2d(y, 2)
            y = torch.relu(self.dw(y)) + y
            y = nn.functional.adaptive_avg_pool2d(self.pw(y), 1)
            return self.fc(torch.flatten(y, 1))

    torch.manual_seed(0)
    return _export(Cnn().eval(), torch.randn(1, 3, 8, 8))


def float_mlp() -> onnx.ModelProto:
    """dense 16→24, tanh, dense 24→8 (MatMul + Add), sigmoid: 1x16 → 1x8."""
    import torch
    from torch import nn

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(16, 24)
            self.b = nn.Linear(24, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.b(torch.tanh(self.a(x))))

    torch.manual_seed(1)
    return _export(Mlp().eval(), torch.randn(1, 16))


def calibration(model: onnx.ModelProto, n: int = 16, seed: int = 0) -> list[np.ndarray]:
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(dims).astype(np.float32) for _ in range(n)]


def ort_quantize(model: onnx.ModelProto, out: Path, fmt: str, per_channel: bool,
                 activations: str = "int8") -> Path:
    """``onnxruntime.quantization.quantize_static`` with the given format ("qdq"/"qoperator"),
    per-channel or per-tensor int8 weights and int8 or uint8 activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    data = calibration(model)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": x} for x in data])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    src = out.with_name(out.stem + "_float.onnx")
    onnx.save(model, src)
    quantize_static(
        str(src), str(out), Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=per_channel,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out
