"""Read a ``.tflite`` flatbuffer into plain Python objects (no TensorFlow needed).

The flatbuffer schema module comes from the ``ai-edge-litert`` or the ``tflite-micro`` wheel
(both ship ``schema_py_generated.py``); neither installed → one-line :class:`EdgecError` saying
what to pip install. The result is a :class:`TflModel`: subgraphs with their tensors (shape,
shape signature, dtype, constant data, quantization) and operators (builtin op name or custom
code, input/output tensor indices, builtin options as a dict keyed by the schema's field names).
Nothing here interprets the model; :mod:`edgec.frontend.tflite.importer` translates it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgec.errors import EdgecError

INSTALL_HINT = "pip install 'edgec[tflite]' (or: pip install ai-edge-litert)"

#: TFLite TensorType name → numpy dtype name (types edgec can at least read)
_NUMPY_TYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "FLOAT64": "float64",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "UINT16": "uint16",
    "INT32": "int32",
    "UINT32": "uint32",
    "INT64": "int64",
    "UINT64": "uint64",
    "BOOL": "bool",
}


def schema() -> ModuleType:
    """The flatbuffer schema module of an installed TFLite wheel."""
    try:
        from ai_edge_litert import schema_py_generated as s

        return s
    except ImportError:
        pass
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

        return s
    except ImportError:
        pass
    raise EdgecError(f"reading .tflite files needs the TFLite flatbuffer schema: {INSTALL_HINT}")


@dataclass
class TflQuant:
    """real = scale * (q - zero_point), per tensor (length 1) or per channel along ``axis``."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    axis: int


@dataclass
class TflTensor:
    index: int
    name: str
    type: str  # TFLite type name: FLOAT32, INT8, ...
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None  # shape_signature: -1 marks a dynamic dimension
    data: np.ndarray | None  # constant contents (None: computed at run time, or an input)
    quant: TflQuant | None
    is_variable: bool = False
    sparse: bool = False

    @property
    def dtype(self) -> str | None:
        """numpy dtype name, or None for types numpy cannot hold (string, resource, ...)."""
        return _NUMPY_TYPES.get(self.type)

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.signature or ()) if d < 0]


@dataclass
class TflOperator:
    index: int
    op: str  # builtin operator name (CONV_2D, ...) or "CUSTOM"
    custom_code: str
    version: int
    inputs: list[int]  # tensor indices; -1 marks an absent optional input
    outputs: list[int]
    builtin_options: dict[str, Any] = field(default_factory=dict)
    intermediates: list[int] = field(default_factory=list)


@dataclass
class TflSubgraph:
    index: int
    name: str
    tensors: list[TflTensor]
    inputs: list[int]
    outputs: list[int]
    operators: list[TflOperator]


@dataclass
class TflModel:
    source: str
    version: int
    description: str
    subgraphs: list[TflSubgraph]
    #: signature names of subgraph 0's inputs/outputs by tensor index (when the file has them)
    input_names: dict[int, str] = field(default_factory=dict)
    output_names: dict[int, str] = field(default_factory=dict)


def _decode(b: Any) -> str:
    if b is None:
        return ""
    if isinstance(b, bytes):
        return b.decode("utf-8", errors="replace")
    return str(b)


def _ints(v: Any) -> list[int]:
    if v is None or (isinstance(v, int) and v == 0):
        return []
    return [int(x) for x in np.asarray(v).reshape(-1)]


def _enum_names(cls: type) -> dict[int, str]:
    return {int(v): k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _options(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    out: dict[str, Any] = {}
    for k, v in vars(obj).items():
        if isinstance(v, (bytes, bytearray)):
            v = _decode(v)
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def read_tflite(model: str | os.PathLike[str] | bytes, source: str | None = None) -> TflModel:
    """Parse a ``.tflite`` file (path or bytes); every way it can fail is one line."""
    if isinstance(model, (bytes, bytearray)):
        buf = bytes(model)
        src = source or "<tflite bytes>"
    else:
        p = Path(model)
        src = source or str(p)
        if not p.is_file():
            raise EdgecError(f"{p}: no such file")
        buf = p.read_bytes()
    s = schema()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise EdgecError(
            f"{src}: not a TFLite flatbuffer (no 'TFL3' file identifier; corrupt, truncated or "
            f"another format)"
        )
    try:
        return _read(s, buf, src)
    except EdgecError:
        raise
    except Exception as exc:  # flatbuffers reads past the end of a truncated/corrupt buffer
        text = str(exc).strip().splitlines()
        detail = text[0] if text else type(exc).__name__
        raise EdgecError(
            f"{src}: not a valid TFLite flatbuffer (corrupt or truncated): "
            f"{type(exc).__name__}: {detail}"
        ) from None


def _check_quant(q: TflQuant, shape: tuple[int, ...], where: str) -> None:
    """A tensor's quantization must be one scale and zero point, or one per channel of its axis."""
    n = q.scale.size
    if q.zero_point.size != n:
        raise EdgecError(f"{where}: quantization has {n} scale(s) but {q.zero_point.size} "
                         "zero point(s); they must be of equal length (corrupt file?)")
    bad = q.scale[~(np.isfinite(q.scale) & (q.scale >= 0))]
    if bad.size:
        raise EdgecError(f"{where}: quantization scale {float(bad[0])} is not a finite "
                         "non-negative number (corrupt file?)")
    if n > 1 and not 0 <= q.axis < len(shape):
        raise EdgecError(f"{where}: per-channel quantization along axis {q.axis} of a "
                         f"{len(shape)}-D tensor (corrupt file?)")
    if n > 1 and shape[q.axis] != n:
        raise EdgecError(f"{where}: {n} per-channel scales along axis {q.axis}, which has "
                         f"{shape[q.axis]} channels (corrupt file?)")


def _read(s: ModuleType, buf: bytes, src: str) -> TflModel:
    m = s.ModelT.InitFromPackedBuf(buf, 0)
    op_names = _enum_names(s.BuiltinOperator)
    type_names = _enum_names(s.TensorType)
    buffers: list[np.ndarray | None] = []
    for b in m.buffers or []:
        offset, size = int(getattr(b, "offset", 0) or 0), int(getattr(b, "size", 0) or 0)
        if offset > 1:  # large models keep buffers after the flatbuffer
            if offset + size > len(buf):
                raise EdgecError(f"{src}: a weight buffer lies past the end of the file "
                                 f"(truncated file)")
            buffers.append(np.frombuffer(buf, np.uint8, size, offset))
        elif b.data is None or len(b.data) == 0:
            buffers.append(None)
        else:
            buffers.append(np.asarray(b.data, np.uint8))
    codes = []
    for oc in m.operatorCodes or []:
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        codes.append((op_names.get(code, f"BUILTIN_{code}"), _decode(oc.customCode),
                      int(oc.version or 1)))
    subgraphs: list[TflSubgraph] = []
    for si, sg in enumerate(m.subgraphs or []):
        tensors = []
        for ti, t in enumerate(sg.tensors or []):
            tname = type_names.get(int(t.type), f"TYPE_{t.type}")
            shape = tuple(_ints(t.shape))
            sig = tuple(_ints(t.shapeSignature)) if t.shapeSignature is not None else None
            raw = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
            data = None
            if raw is not None and tname in _NUMPY_TYPES:
                dt = np.dtype(_NUMPY_TYPES[tname])
                if raw.size != dt.itemsize * int(np.prod(shape, dtype=np.int64)):
                    raise EdgecError(
                        f"{src}: subgraph {si} tensor {ti} '{_decode(t.name)}': buffer holds "
                        f"{raw.size} bytes, shape {list(shape)} of {tname} needs "
                        f"{dt.itemsize * int(np.prod(shape, dtype=np.int64))}"
                    )
                data = np.frombuffer(raw.tobytes(), dt).reshape(shape)
            q = t.quantization
            quant = None
            if q is not None and q.scale is not None and len(q.scale) > 0:
                zp = q.zeroPoint if q.zeroPoint is not None else np.zeros(len(q.scale))
                quant = TflQuant(
                    np.asarray(q.scale, np.float32).reshape(-1),
                    np.asarray(zp, np.int64).reshape(-1),
                    int(q.quantizedDimension or 0),
                )
                _check_quant(quant, shape, f"{src}: subgraph {si} tensor {ti} "
                                           f"'{_decode(t.name)}'")
            tensors.append(TflTensor(ti, _decode(t.name), tname, shape, sig, data, quant,
                                     bool(t.isVariable), t.sparsity is not None))
        ops = []
        for oi, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < len(codes):
                raise EdgecError(f"{src}: subgraph {si} operator {oi}: opcode index "
                                 f"{op.opcodeIndex} out of range")
            name, custom, version = codes[op.opcodeIndex]
            ins, outs = _ints(op.inputs), _ints(op.outputs)
            for k in ins + [-2 if k == -1 else k for k in outs]:  # -1: an absent input
                if not -1 <= k < len(tensors):
                    raise EdgecError(f"{src}: subgraph {si} operator {oi} ({name}): tensor "
                                     f"index {k} out of range")
            ops.append(TflOperator(oi, name, custom, version, ins, outs,
                                   _options(op.builtinOptions), _ints(op.intermediates)))
        sg_ins, sg_outs = _ints(sg.inputs), _ints(sg.outputs)
        for k in sg_ins + sg_outs:
            if not 0 <= k < len(tensors):
                raise EdgecError(f"{src}: subgraph {si}: input/output tensor index {k} out of "
                                 "range")
        subgraphs.append(TflSubgraph(si, _decode(sg.name), tensors, sg_ins, sg_outs, ops))
    if not subgraphs:
        raise EdgecError(f"{src}: the TFLite model holds no subgraph")
    model = TflModel(src, int(m.version or 0), _decode(m.description), subgraphs)
    for sig in m.signatureDefs or []:
        if int(sig.subgraphIndex or 0) != 0:
            continue
        model.input_names = {int(t.tensorIndex): _decode(t.name) for t in sig.inputs or []}
        model.output_names = {int(t.tensorIndex): _decode(t.name) for t in sig.outputs or []}
        break
    return model
