"""The ONNX backend interface (``onnx.backend.base``) on top of edgec's C path.

``EdgecBackend.prepare(model)`` returns a :class:`EdgecRep` whose ``run(inputs)`` compiles the
model with :func:`edgec.compile`, builds the generated C into a host shared library and calls it
through ctypes. It exists to run ONNX's own backend test suite (``onnx.backend.test``) against
the generated C; see ``tests/test_onnx_conformance.py`` and ``docs/conformance.md``.

edgec compiles a model for fixed weights and fixed shape/axis/index parameters (they become
``static const`` tables or compile-time loop bounds). The ONNX node tests feed many of those as
graph inputs. The inputs at the positions listed in :data:`PARAMETER_INPUTS` are therefore bound
as constants when ``run`` sees their values (the model is compiled once per distinct set of
parameter values); every other input stays a run-time float32 argument of the C function.
Anything else edgec cannot compile raises an :class:`~edgec.errors.EdgecError`: a model with a
non-float32 data input or output, an unsupported op or attribute.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from edgec.api import CompiledModel
from edgec.api import compile as edgec_compile
from edgec.backend.host import HostLibrary, build_shared
from edgec.errors import EdgecError, UnsupportedOpError
from edgec.ops import REGISTRY

#: op type → input positions edgec compiles as constants (weights, shapes, axes, indices, pads,
#: exponents...). A graph input used only at such positions is bound to the value ``run`` gets.
PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    "BatchNormalization": (1, 2, 3, 4),
    "Clip": (1, 2),
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Dropout": (1, 2),
    "Gather": (1,),
    "GRU": (1, 2, 3, 4),
    "LSTM": (1, 2, 3, 4, 7),
    "Pad": (1, 2, 3),
    "Pow": (1,),
    "ReduceMax": (1,),
    "ReduceMean": (1,),
    "ReduceSum": (1,),
    "Reshape": (1,),
    "RNN": (1, 2, 3, 4),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "TopK": (1,),
    "Unsqueeze": (1,),
}

#: ops whose int64 outputs (indices) the C computes, as exact float values: (op, output index)
_INDEX_OUTPUTS = frozenset({("ArgMax", 0), ("ArgMin", 0), ("TopK", 1)})

#: graph-level ops the ONNX importer turns into constants (not registered as kernels)
_IMPORTER_OPS = frozenset({"Constant"})


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type) if elem_type else "unknown"


def parameter_inputs(model: onnx.ModelProto) -> list[str]:
    """Graph inputs that are used only at parameter positions (see :data:`PARAMETER_INPUTS`)."""
    g = model.graph
    init = {i.name for i in g.initializer}
    runtime = [vi.name for vi in g.input if vi.name not in init]
    as_param: set[str] = set()
    as_data: set[str] = set()
    for node in g.node:
        positions = PARAMETER_INPUTS.get(node.op_type, ())
        for idx, name in enumerate(node.input):
            if name:
                (as_param if idx in positions else as_data).add(name)
    as_data.update(o.name for o in g.output)
    return [n for n in runtime if n in as_param and n not in as_data]


class EdgecRep(BackendRep):
    """A prepared model: compiled (and built) once per distinct set of parameter-input values."""

    def __init__(self, model: onnx.ModelProto, cflags: Sequence[str] = ()):
        self.model = model
        self.cflags = tuple(cflags)
        g = model.graph
        init = {i.name for i in g.initializer}
        self.input_names = [vi.name for vi in g.input if vi.name not in init]
        self.bound_inputs = parameter_inputs(model)
        for vi in g.input:
            elem = vi.type.tensor_type.elem_type
            if vi.name in init or vi.name in self.bound_inputs or elem == TensorProto.FLOAT:
                continue
            raise EdgecError(
                f"input '{vi.name}' has dtype {_dtype_name(elem)}; edgec's C functions take "
                f"float32 inputs only"
            )
        indices = {o for n in g.node for k, o in enumerate(n.output) if (n.op_type, k) in
                   _INDEX_OUTPUTS}
        #: graph outputs returned as int64 (the C gives their index values as floats)
        self.int64_outputs = {vi.name for vi in g.output
                              if vi.type.tensor_type.elem_type == TensorProto.INT64
                              and vi.name in indices}
        for vi in g.output:
            elem = vi.type.tensor_type.elem_type
            if elem not in (TensorProto.FLOAT, TensorProto.UNDEFINED) and (
                vi.name not in self.int64_outputs
            ):
                raise EdgecError(
                    f"output '{vi.name}' has dtype {_dtype_name(elem)}; edgec's C functions "
                    f"produce float32 outputs only"
                )
        for node in g.node:
            if node.domain not in ("", "ai.onnx") or (
                node.op_type not in REGISTRY and node.op_type not in _IMPORTER_OPS
            ):
                raise UnsupportedOpError(f"op {node.op_type} is not supported by edgec")
        self._builds: dict[str, tuple[CompiledModel, HostLibrary]] = {}
        if not self.bound_inputs:
            self._build({})

    # -- compilation ----------------------------------------------------------------------
    def _bind(self, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        """The model with the parameter inputs turned into initializers holding ``values``."""
        if not values:
            return self.model
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        kept = [vi for vi in m.graph.input if vi.name not in values]
        del m.graph.input[:]
        m.graph.input.extend(kept)
        for name in self.bound_inputs:
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
        return m

    def _build(self, values: Mapping[str, np.ndarray]) -> tuple[CompiledModel, HostLibrary]:
        h = hashlib.sha256()
        for name in self.bound_inputs:
            arr = np.ascontiguousarray(values[name])
            h.update(f"{name}\0{arr.dtype}\0{arr.shape}\0".encode())
            h.update(arr.tobytes())
        key = h.hexdigest()
        if key not in self._builds:
            cm = edgec_compile(self._bind(values), name=self.model.graph.name or "model")
            lib = HostLibrary(cm.cmodel, build_shared(cm.cmodel, self.cflags))
            self._builds[key] = (cm, lib)
        return self._builds[key]

    # -- execution ------------------------------------------------------------------------
    def run(self, inputs: Any, **kwargs: Any) -> list[np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            seq = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(seq) != len(self.input_names):
                raise ValueError(
                    f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                    f"got {len(seq)}"
                )
            feeds = {k: np.asarray(v) for k, v in zip(self.input_names, seq, strict=True)}
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"missing inputs: {', '.join(missing)}")
        cm, lib = self._build({n: feeds[n] for n in self.bound_inputs})
        data = []
        for name in cm.input_names:
            x = feeds[name]
            if x.dtype != np.float32:
                raise EdgecError(f"input '{name}' is {x.dtype}; edgec runs float32 inputs only")
            data.append(x)
        outs = lib.run(*data)
        return [np.rint(y).astype(np.int64) if name in self.int64_outputs else y
                for y, name in zip(outs, cm.output_names, strict=True)]


class EdgecBackend(Backend):
    """ONNX backend running edgec's generated C on the host CPU."""

    #: extra host C compiler flags (the conformance suite adds -O0 -Werror, for example)
    cflags: tuple[str, ...] = ()

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except Exception:
            return False

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True  # incompatibilities raise from prepare, so the test suite records them

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgecRep:
        if not cls.supports_device(device):
            raise EdgecError(f"edgec's ONNX backend runs on the CPU only, not on {device}")
        super().prepare(model, device, **kwargs)  # onnx.checker
        return EdgecRep(model, cls.cflags)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> list[np.ndarray]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[Any, Any]] | None = None,
        **kwargs: Any,
    ) -> list[np.ndarray]:
        """Run one node through a one-node float32 model (opset ``kwargs['opset_version']``)."""
        seq = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
        names = [n for n in node.input if n]
        if len(seq) != len(names):
            raise ValueError(f"node {node.op_type}: {len(names)} inputs, {len(seq)} values given")
        arrays = [np.asarray(v) for v in seq]
        ins = [
            helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)
            )
            for n, a in zip(names, arrays, strict=True)
        ]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output if o]
        graph = helper.make_graph([node], f"node_{node.op_type.lower()}", ins, outs)
        opset = int(kwargs.pop("opset_version", 17))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        if not cls.supports_device(device):
            raise EdgecError(f"edgec's ONNX backend runs on the CPU only, not on {device}")
        # no onnx.checker here: the outputs' shapes are left to edgec's shape inference
        return EdgecRep(model, cls.cflags).run(arrays)


prepare = EdgecBackend.prepare
run_model = EdgecBackend.run_model
run_node = EdgecBackend.run_node
supports_device = EdgecBackend.supports_device
