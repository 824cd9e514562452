"""edgec's intermediate representation: a small, static-shape dataflow graph.

Tensors are named; a node reads input tensor names and writes output tensor names. An empty
input name marks an absent optional input (as in ONNX). Constant tensors carry their data.
Op semantics follow ONNX (see ``edgec.ops``); passes may add attributes whose names start with
an underscore (``_act`` for a fused activation, for example).

Quantized tensors (dtype ``int8``, or ``int32`` for biases) carry a :class:`Quant`: TFLite's
affine parameters, real = scale * (q - zero_point), per tensor or per channel (docs/int8.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]


@dataclass(eq=False)
class Quant:
    """Affine quantization of a tensor: real = scale * (q - zero_point).

    ``scale`` (float32) and ``zero_point`` (int32) are 1-D arrays of length 1 (per tensor) or C
    (per channel along ``axis``, the tensor's channel dimension).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        self.scale = np.asarray(self.scale, np.float32).reshape(-1)
        self.zero_point = np.asarray(self.zero_point, np.int64).reshape(-1).astype(np.int32)
        if self.scale.size == 0 or self.scale.size != self.zero_point.size:
            raise ValueError(
                f"quantization: {self.scale.size} scale(s) but {self.zero_point.size} zero "
                "point(s); they must be non-empty and of equal length"
            )
        if self.scale.size > 1 and self.axis is None:
            raise ValueError("per-channel quantization needs the channel axis")
        if self.axis is not None:
            self.axis = int(self.axis)

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int = 0) -> Quant:
        return cls(np.asarray([scale], np.float32), np.asarray([zero_point], np.int32))

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1 or self.axis is not None

    @property
    def size(self) -> int:
        return int(self.scale.size)

    def scalar(self) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor quantization (ValueError if per channel)."""
        if self.scale.size != 1:
            raise ValueError(f"expected per-tensor quantization, got {self.scale.size} channels")
        return float(self.scale[0]), int(self.zero_point[0])

    def same_as(self, other: Quant | None) -> bool:
        """Same parameters (bit for bit): tensors that can share codes without requantizing."""
        return (
            other is not None
            and self.scale.tobytes() == other.scale.tobytes()
            and np.array_equal(self.zero_point, other.zero_point)
            and (self.axis if self.scale.size > 1 else None)
            == (other.axis if other.scale.size > 1 else None)
        )

    def describe(self) -> str:
        if self.scale.size == 1:
            return f"scale {float(self.scale[0]):.9g}, zero point {int(self.zero_point[0])}"
        return f"{self.scale.size} channels on axis {self.axis}"


@dataclass
class Tensor:
    name: str
    shape: Shape
    dtype: str = "float32"
    data: np.ndarray | None = None
    quant: Quant | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    # (state input name, state output name): carried between calls by the stateful C API.
    state: list[tuple[str, str]] = field(default_factory=list)
    # initial values of state inputs that do not start at zero (``<name>_reset`` loads them)
    state_init: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    source: str = ""
    # compile options that steer passes (e.g. ``sparse``: auto | csr | dense)
    options: dict[str, Any] = field(default_factory=dict)

    # -- tensors -------------------------------------------------------------
    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def shape(self, name: str) -> Shape:
        return self.tensors[name].shape

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, or None if it is computed at run time (or absent)."""
        if not name or name not in self.tensors:
            return None
        return self.tensors[name].data

    def quant(self, name: str) -> Quant | None:
        """The quantization of a tensor (None: not quantized, or an absent optional input)."""
        t = self.tensors.get(name) if name else None
        return t.quant if t is not None else None

    def add_const(self, name: str, data: np.ndarray, quant: Quant | None = None) -> str:
        base, i = name, 0
        while name in self.tensors:
            i += 1
            name = f"{base}_{i}"
        arr = np.asarray(data, order="C")  # keeps 0-d arrays 0-d
        self.tensors[name] = Tensor(
            name, tuple(int(d) for d in arr.shape), str(arr.dtype), arr, quant
        )
        return name

    def rename(self, old: str, new: str) -> None:
        """Rename tensor ``old`` to ``new`` everywhere (producer, consumers, ports, state)."""
        t = self.tensors.pop(old)
        t.name = new
        self.tensors[new] = t
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
            n.outputs = [new if o == old else o for o in n.outputs]
        self.inputs = [new if i == old else i for i in self.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]
        self.state = [(new if a == old else a, new if b == old else b) for a, b in self.state]
        if old in self.state_init:
            self.state_init[new] = self.state_init.pop(old)

    def fresh_name(self, base: str) -> str:
        name, i = base, 0
        while name in self.tensors:
            i += 1
            name = f"{base}_{i}"
        return name

    # -- structure -------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def runtime_tensors(self) -> list[str]:
        """Names of tensors computed at run time by nodes (not graph inputs, not constants)."""
        names: list[str] = []
        for n in self.nodes:
            names.extend(o for o in n.outputs if o)
        return names

    def copy(self) -> Graph:
        return copy.deepcopy(self)

    def toposort(self) -> None:
        """Reorder nodes topologically, keeping the existing order where it is already valid."""
        ready = set(self.inputs) | {t.name for t in self.tensors.values() if t.is_const}
        ready.add("")
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            progressed = False
            rest: list[Node] = []
            for n in pending:
                if all(i in ready for i in n.inputs):
                    ordered.append(n)
                    ready.update(n.outputs)
                    progressed = True
                else:
                    rest.append(n)
            if not progressed:
                missing = sorted({i for n in rest for i in n.inputs if i not in ready})
                raise ValueError(f"graph has a cycle or undefined tensors: {missing[:5]}")
            pending = rest
        self.nodes = ordered
