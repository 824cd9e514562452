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


def float_conv1d_stack() -> onnx.ModelProto:
    """A sensor 1-D CNN: three Conv1d + BatchNorm1d + ReLU blocks (stride 2, dilation 2),
    max pools, global average pool, dense: 1x3x64 → 1x5."""
    from torch import nn

    def block(c_in: int, c_out: int, k: int, **kw: int) -> list[nn.Module]:
        return [nn.Conv1d(c_in, c_out, k, **kw), nn.BatchNorm1d(c_out), nn.ReLU()]

    net = nn.Sequential(
        *block(3, 8, 5, padding=2), nn.MaxPool1d(2),
        *block(8, 16, 3, stride=2, padding=1),
        *block(16, 16, 3, padding=2, dilation=2), nn.MaxPool1d(3, stride=2, padding=1),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 5))
    return export_1d(net, 3, 64)


def float_separable1d() -> onnx.ModelProto:
    """A depthwise-separable 1-D block: depthwise Conv1d (stride 2) + BatchNorm1d + ReLU6,
    pointwise Conv1d + ReLU, average pool, dense: 1x6x40 → 1x4."""
    from torch import nn

    net = nn.Sequential(
        nn.Conv1d(6, 6, 5, stride=2, padding=2, groups=6), nn.BatchNorm1d(6), nn.ReLU6(),
        nn.Conv1d(6, 12, 1), nn.ReLU(), nn.AvgPool1d(2),
        nn.Flatten(), nn.Linear(12 * 10, 4))
    return export_1d(net, 6, 40)


def float_ceil_pools() -> onnx.ModelProto:
    """Conv1d then pools with ``ceil_mode=True`` (max, average without and with padding), the
    last windows hanging over the input's end, dense: 1x4x24 → 1x6."""
    from torch import nn

    net = nn.Sequential(
        nn.Conv1d(4, 8, 3), nn.ReLU(), nn.MaxPool1d(3, stride=2, ceil_mode=True),
        nn.AvgPool1d(2, ceil_mode=True, count_include_pad=False),
        nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.Flatten(), nn.Linear(8 * 4, 6))
    return export_1d(net, 4, 24)


def export_1d(net: object, c: int, length: int) -> onnx.ModelProto:
    """``net`` given non-trivial BatchNorm statistics (a few training-mode batches), exported in
    eval mode for a 1 x c x length input."""
    import torch

    torch.manual_seed(2)
    net.train()  # type: ignore[attr-defined]
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, c, length) * 2 + 0.5)  # type: ignore[operator]
    return _export(net.eval(), torch.randn(1, c, length))  # type: ignore[attr-defined]
