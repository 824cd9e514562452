"""``CudaModel``: a model compiled for the CUDA target (what ``edgec.compile(...,
target="cuda")`` returns): its sources, and runs of whole batches on the GPU or, from the same
generated code built for the host, on the CPU."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgec.backend.c_emit import Port
from edgec.backend.cuda.build import build_device, build_host, find_nvcc, require_gpu
from edgec.backend.cuda.emit import CudaSources
from edgec.backend.cuda.runner import DeviceRunner, HostRunner, glue_source
from edgec.errors import EdgecError
from edgec.ir import Graph

DEVICES = ("cuda", "cpu")
BATCH_RULE = (
    "an array of the input's shape is one sample; a leading axis B gives a batch of B; an "
    "input whose first dimension is 1 also takes (B, ...) without the 1"
)


def _int8_codes(p: Port, got: str) -> str:
    return (f"input '{p.name}' is an int8 port (scale {p.scale}, zero point {p.zero_point}): "
            f"give int8 codes in [-128, 127], got {got} values")


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v.shape) if hasattr(v, "shape") else tuple(np.shape(v))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


class CudaModel:
    """A model compiled to CUDA. ``run(x)`` runs a batch on the GPU (numpy arrays or torch
    tensors in, the same kind out); ``run(x, device="cpu")`` runs the same generated code built
    for the host. Stateful models: ``reset(batch)`` then ``step(x)`` per tick."""

    def __init__(self, graph: Graph, sources: CudaSources, source_graph: Graph,
                 source: Any = None):
        self.graph = graph
        self.sources = sources
        self.source_graph = source_graph
        self.source = source
        self._runners: dict[str, HostRunner | DeviceRunner] = {}
        self._state: Any = None
        self._state_device: str | None = None
        self._state_batch = 0

    # -- facts ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.sources.name

    @property
    def target(self) -> str:
        return "cuda"

    @property
    def input_names(self) -> list[str]:
        return [p.name for p in self.sources.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.name for p in self.sources.outputs]

    @property
    def is_stateful(self) -> bool:
        return bool(self.sources.state)

    def report(self) -> dict[str, Any]:
        return dict(self.sources.report)

    @property
    def cu_source(self) -> str:
        return self.sources.source

    @property
    def cu_header(self) -> str:
        return self.sources.header

    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        try:
            return self.sources.write(directory)
        except OSError as exc:
            raise EdgecError(
                f"{directory}: cannot write the sources there ({exc.strerror or exc})"
            ) from None

    # -- builds ---------------------------------------------------------------------------
    def runner(self, device: str = "cuda") -> HostRunner | DeviceRunner:
        """The build for ``device``: "cuda" needs nvcc and a visible GPU (a one-line error says
        which is missing); "cpu" is the host build of the same file (a host C++ compiler)."""
        if device not in DEVICES:
            raise EdgecError(f"device={device!r}: use one of {', '.join(DEVICES)}")
        if device not in self._runners:
            if device == "cpu":
                lib = build_host(self.sources, glue_source(self.sources, device=False))
                self._runners[device] = HostRunner(self.sources, lib)
            else:
                find_nvcc()
                require_gpu()
                lib = build_device(self.sources, glue_source(self.sources, device=True))
                self._runners[device] = DeviceRunner(self.sources, lib)
        return self._runners[device]

    # -- batches --------------------------------------------------------------------------
    def _values(self, args: Sequence[Any], kwargs: Mapping[str, Any],
                ports: list[Port]) -> list[Any]:
        names = [p.name for p in ports]
        if kwargs:
            if args:
                raise ValueError("pass inputs either positionally or by name, not both")
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise ValueError(f"missing inputs: {missing}")
            return [kwargs[n] for n in names]
        if len(args) == 1 and isinstance(args[0], Mapping):
            missing = [n for n in names if n not in args[0]]
            if missing:
                raise ValueError(f"{self.name}: missing input(s) {', '.join(missing)}; given "
                                 f"{', '.join(map(str, args[0])) or 'none'}; the inputs are "
                                 f"{', '.join(names)}")
            return [args[0][n] for n in names]
        if len(args) != len(ports):
            raise ValueError(f"{self.name}: expected {len(ports)} inputs ({', '.join(names)}), "
                             f"got {len(args)}")
        return list(args)

    @staticmethod
    def _batch_of(p: Port, shape: tuple[int, ...]) -> tuple[int, str]:
        """(batch, form): form "one" (the port's shape), "lead" (B, *shape) or "drop1"."""
        ps = tuple(p.shape)
        if shape == ps:
            return 1, "one"
        if len(shape) == len(ps) + 1 and shape[1:] == ps:
            return shape[0], "lead"
        if ps and ps[0] == 1 and len(shape) == len(ps) and shape[1:] == ps[1:]:
            return shape[0], "drop1"
        raise ValueError(f"input '{p.name}' has shape {shape}; the model takes {ps} per sample "
                         f"({BATCH_RULE})")

    def _prepare(self, values: list[Any], ports: list[Port], device: str
                 ) -> tuple[int, str, list[Any], bool, Any]:
        """(batch, form, contiguous [batch, size] inputs, torch?, torch device)."""
        batches, forms = [], []
        for v, p in zip(values, ports, strict=True):
            b, f = self._batch_of(p, _shape(v))
            batches.append(b)
            forms.append(f)
        batch = batches[0] if batches else 1
        if any(b != batch for b in batches):
            raise ValueError(f"{self.name}: the inputs hold different batch sizes {batches}")
        torch_io = any(_is_torch(v) for v in values)
        tdev = None
        ins: list[Any] = []
        for v, p in zip(values, ports, strict=True):
            if _is_torch(v) and v.is_cuda and device == "cuda":
                import torch

                tdev = v.device
                dtype = torch.int8 if p.dtype == "int8" else torch.float32
                if p.dtype == "int8" and v.dtype.is_floating_point:
                    raise ValueError(_int8_codes(p, str(v.dtype)))
                ins.append(v.detach().to(dtype).contiguous().reshape(batch, p.size))
            else:
                a = v.detach().cpu().numpy() if _is_torch(v) else np.asarray(v)
                if p.dtype == "int8" and (a.dtype.kind not in "iub" or a.size and (
                        a.min() < -128 or a.max() > 127)):
                    raise ValueError(_int8_codes(p, str(a.dtype)))
                ins.append(np.ascontiguousarray(a, p.np_dtype).reshape(batch, p.size))
        # the outputs take the form of the first non-state input
        form = next((f for f, p in zip(forms, ports, strict=True) if not p.state),
                    forms[0] if forms else "one")
        return batch, form, ins, torch_io, tdev

    def _outputs(self, batch: int, ports: list[Port], tdev: Any) -> list[Any]:
        if tdev is not None:
            import torch

            return [torch.empty((batch, p.size), device=tdev,
                                dtype=torch.int8 if p.dtype == "int8" else torch.float32)
                    for p in ports]
        return [np.zeros((batch, p.size), p.np_dtype) for p in ports]

    @staticmethod
    def _shape_out(outs: list[Any], ports: list[Port], batch: int, form: str,
                   torch_io: bool) -> Any:
        res = []
        for y, p in zip(outs, ports, strict=True):
            ps = tuple(p.shape)
            if form == "one":
                shape = ps
            elif form == "drop1" and ps and ps[0] == 1:
                shape = (batch, *ps[1:])
            else:
                shape = (batch, *ps)
            y = y.reshape(shape)
            if torch_io and isinstance(y, np.ndarray):
                import torch

                y = torch.from_numpy(y)
            res.append(y)
        return res[0] if len(res) == 1 else res

    def initial_state(self) -> dict[str, np.ndarray]:
        init = self.graph.state_init
        return {
            p.name: np.asarray(init[p.name], np.float32).reshape(p.shape)
            if p.name in init else np.zeros(p.shape, np.float32)
            for p in self.sources.inputs if p.state
        }

    def run(self, *args: Any, device: str = "cuda", **kwargs: Any) -> Any:
        """Run a batch: every input with the same leading batch (see ``BATCH_RULE``); a
        stateful model's state inputs may be left out (initial values). One output → an
        array; several → a list. ``device="cpu"``: the host build of the same code."""
        ports = self.sources.inputs
        plain = [p for p in ports if not p.state]
        given = len(kwargs) if kwargs else (
            len(args[0]) if len(args) == 1 and isinstance(args[0], Mapping) else len(args))
        if self.is_stateful and given == len(plain) and len(plain) < len(ports):
            vals = dict(zip([p.name for p in plain], self._values(args, kwargs, plain),
                            strict=True))
            b, form = self._batch_of(plain[0], _shape(vals[plain[0].name]))
            for name, v in self.initial_state().items():
                vals[name] = v if form == "one" else np.broadcast_to(v, (b, *v.shape))
            values = [vals[p.name] for p in ports]
        else:
            values = self._values(args, kwargs, ports)
        runner = self.runner(device)
        batch, form, ins, torch_io, tdev = self._prepare(values, ports, device)
        outs = self._outputs(batch, self.sources.outputs, tdev)
        runner.run(batch, ins, outs)
        return self._shape_out(outs, self.sources.outputs, batch, form, torch_io)

    def on(self, device: str) -> DeviceView:
        """This model run on ``device`` ("cuda" or "cpu"), as ``edgec verify`` runs models."""
        return DeviceView(self, device)

    # -- stateful models ------------------------------------------------------------------
    def _need_state(self) -> None:
        if not self.is_stateful:
            raise EdgecError(f"{self.name} has no state: use run()")

    def reset(self, batch: int = 1, device: str = "cuda") -> None:
        """Start ``batch`` independent instances from the initial state on ``device``."""
        self._need_state()
        if batch < 1:
            raise ValueError(f"batch must be at least 1 (got {batch})")
        self._state = self.runner(device).new_state(batch)
        self._state_device = device
        self._state_batch = batch

    def step(self, *args: Any, device: str | None = None, **kwargs: Any) -> Any:
        """One tick of every instance (after ``reset``): the non-state inputs with the batch
        of ``reset``; returns the non-state outputs. It runs where ``reset`` put the states
        (``device``, if given, must be that one)."""
        self._need_state()
        if self._state is None or self._state_device is None:
            raise EdgecError(f"{self.name}: call reset(batch, device) before step()")
        if device is not None and device != self._state_device:
            raise ValueError(f"{self.name}: the states are on device={self._state_device!r} "
                             f"(reset); call reset(batch, device={device!r}) to step there")
        ports = [p for p in self.sources.inputs if not p.state]
        outs_p = [p for p in self.sources.outputs if not p.state]
        device = self._state_device
        values = self._values(args, kwargs, ports)
        batch, form, ins, torch_io, tdev = self._prepare(values, ports, device)
        if batch != self._state_batch:
            raise ValueError(f"{self.name}: step got a batch of {batch}, reset made "
                             f"{self._state_batch} instances")
        outs = self._outputs(batch, outs_p, tdev)
        runner = self.runner(device)
        runner.step(batch, self._state, ins, outs)  # type: ignore[arg-type]
        return self._shape_out(outs, outs_p, batch, form, torch_io)

    def state(self) -> dict[str, np.ndarray]:
        """The current states, by state input name: ``[batch, *shape]`` each."""
        self._need_state()
        if self._state is None or self._state_device is None:
            return {}
        flat = self.runner(self._state_device).read_state(self._state).reshape(
            self._state_batch, -1)
        out, off = {}, 0
        ports = {p.name: p for p in self.sources.inputs}
        for (s_in, _), size in zip(self.sources.state, self.sources.state_sizes, strict=True):
            out[s_in] = flat[:, off:off + size].reshape(self._state_batch, *ports[s_in].shape)
            off += size
        return out


class DeviceView:
    """A :class:`CudaModel` run on one device, seen through the interface the C models offer
    to ``edgec verify`` (``cmodel`` ports, ``run`` one input set at a time)."""

    def __init__(self, model: CudaModel, device: str):
        if device not in DEVICES:
            raise EdgecError(f"device={device!r}: use one of {', '.join(DEVICES)}")
        self.model = model
        self.device = device
        self.graph = model.graph
        self.cmodel = model.sources
        self.source = model.source

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def is_stateful(self) -> bool:
        return self.model.is_stateful

    @property
    def output_names(self) -> list[str]:
        return self.model.output_names

    @property
    def where(self) -> str:
        return "CUDA, on the GPU" if self.device == "cuda" else "CUDA code, host build"

    def report(self) -> dict[str, Any]:
        return self.model.report()

    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        return self.model.write(directory)

    def initial_state(self) -> dict[str, np.ndarray]:
        return self.model.initial_state()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.run(*args, device=self.device, **kwargs)
