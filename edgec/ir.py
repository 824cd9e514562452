"""edgec's intermediate representation: a small, static-shape dataflow graph.

Tensors are named; a node reads input tensor names and writes output tensor names. An empty
input name marks an absent optional input (as in ONNX). Constant tensors carry their data.
Op semantics follow ONNX (see ``edgec.ops``); passes may add attributes whose names start with
an underscore (``_act`` for a fused activation, for example).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]


@dataclass
class Tensor:
    name: str
    shape: Shape
    dtype: str = "float32"
    data: np.ndarray | None = None

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

    def add_const(self, name: str, data: np.ndarray) -> str:
        base, i = name, 0
        while name in self.tensors:
            i += 1
            name = f"{base}_{i}"
        arr = np.asarray(data, order="C")  # keeps 0-d arrays 0-d
        self.tensors[name] = Tensor(name, tuple(int(d) for d in arr.shape), str(arr.dtype), arr)
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
