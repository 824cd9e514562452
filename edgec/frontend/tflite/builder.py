"""Write ``.tflite`` flatbuffers directly (no TensorFlow) with the schema module of the
``ai-edge-litert`` or ``tflite-micro`` wheel: the quantizer's .tflite output and the one-op
models of the front-end tests.

``b = TflBuilder(); x = b.input("x", (1, 4)); w = b.const("w", arr); y = b.tensor("y", (1, 3))``
``b.op("FULLY_CONNECTED", [x, w, -1], [y], "FullyConnectedOptions", fusedActivationFunction=1)``
``data = b.build([x], [y])``. Quantized tensors take ``quant=(scale, zero_point[, axis])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgec.frontend.tflite.reader import schema

_TYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")

Quant = tuple[Any, Any] | tuple[Any, Any, int] | None


class Subgraph:
    def __init__(self, builder: TflBuilder, name: str):
        self.b = builder
        self.name = name
        self.tensors: list[Any] = []
        self.ops: list[Any] = []

    def _tensor(self, name: str, shape: Sequence[int], dtype: str, buffer: int, quant: Quant,
                signature: Sequence[int] | None = None, variable: bool = False) -> int:
        S = schema()
        t = S.TensorT()
        t.name = name.encode()
        t.shape = np.asarray(shape, np.int32)
        if signature is not None:
            t.shapeSignature = np.asarray(signature, np.int32)
        if dtype not in _TYPES:
            raise ValueError(f"tensor {name}: dtype {dtype} has no TFLite type")
        t.type = getattr(S.TensorType, dtype.upper())
        t.buffer = buffer
        t.isVariable = variable
        if quant is not None:
            q = S.QuantizationParametersT()
            q.scale = np.asarray(quant[0], np.float32).reshape(-1)
            q.zeroPoint = np.asarray(quant[1], np.int64).reshape(-1)
            q.quantizedDimension = int(quant[2]) if len(quant) > 2 else 0
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def tensor(self, name: str, shape: Sequence[int], dtype: str = "float32",
               quant: Quant = None, signature: Sequence[int] | None = None,
               variable: bool = False) -> int:
        """A run-time tensor (an input, an op output, or a variable)."""
        return self._tensor(name, shape, dtype, self.b._buffer(None), quant, signature, variable)

    input = tensor

    def const(self, name: str, data: Any, dtype: str | None = None, quant: Quant = None) -> int:
        arr = np.asarray(data, dtype=dtype) if dtype else np.asarray(data)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if arr.dtype == np.int64 and dtype is None:
            arr = arr.astype(np.int32)
        return self._tensor(name, arr.shape, str(arr.dtype), self.b._buffer(arr), quant)

    def op(self, opname: str, inputs: Sequence[int], outputs: Sequence[int],
           options: str | None = None, custom: str | None = None, **fields: Any) -> None:
        S = schema()
        o = S.OperatorT()
        o.opcodeIndex = self.b._opcode(opname, custom)
        o.inputs = np.asarray(inputs, np.int32)
        o.outputs = np.asarray(outputs, np.int32)
        if options is not None:
            opts = getattr(S, options + "T")()
            for k, v in fields.items():
                if not hasattr(opts, k):
                    raise AttributeError(f"{options} has no field {k}")
                setattr(opts, k, v)
            o.builtinOptionsType = getattr(S.BuiltinOptions, options)
            o.builtinOptions = opts
        if custom is not None:
            o.customOptions = np.zeros(0, np.uint8)
        self.ops.append(o)

    def build(self, inputs: Sequence[int], outputs: Sequence[int]) -> Any:
        S = schema()
        sg = S.SubGraphT()
        sg.tensors = self.tensors
        sg.inputs = np.asarray(inputs, np.int32)
        sg.outputs = np.asarray(outputs, np.int32)
        sg.operators = self.ops
        sg.name = self.name.encode()
        return sg


class TflBuilder(Subgraph):
    """Builds subgraph 0 itself; :meth:`subgraph` adds more (WHILE cond/body)."""

    def __init__(self) -> None:
        S = schema()
        self.buffers: list[Any] = [S.BufferT()]  # buffer 0: the empty sentinel
        self.opcodes: list[tuple[int, str | None]] = []
        self.extra: list[Subgraph] = []
        self.extra_io: list[tuple[list[int], list[int]]] = []
        self.description = "edgec"
        super().__init__(self, "main")

    def _buffer(self, arr: np.ndarray | None) -> int:
        S = schema()
        buf = S.BufferT()
        if arr is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8)
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def _opcode(self, name: str, custom: str | None) -> int:
        S = schema()
        code = S.BuiltinOperator.CUSTOM if custom else getattr(S.BuiltinOperator, name)
        key = (code, custom)
        if key not in self.opcodes:
            self.opcodes.append(key)
        return self.opcodes.index(key)

    def subgraph(self, name: str) -> Subgraph:
        sg = Subgraph(self, name)
        self.extra.append(sg)
        return sg

    def build(self, inputs: Sequence[int], outputs: Sequence[int],  # type: ignore[override]
              io: Sequence[tuple[Sequence[int], Sequence[int]]] = ()) -> bytes:
        """Serialise; ``io`` gives each extra subgraph's (inputs, outputs)."""
        S = schema()
        m = S.ModelT()
        m.version = 3
        codes = []
        for code, custom in self.opcodes:
            oc = S.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            if custom:
                oc.customCode = custom.encode()
            codes.append(oc)
        m.operatorCodes = codes
        m.subgraphs = [super().build(inputs, outputs)] + [
            sg.build(*io[k]) for k, sg in enumerate(self.extra)
        ]
        m.buffers = self.buffers
        m.description = self.description.encode()
        import flatbuffers

        fb = flatbuffers.Builder(1024)
        fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())
