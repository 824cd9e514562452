"""Scan: a loop over a body graph with a static trip count (ONNX Scan semantics).

``Scan(state_0.., xs_0..) -> (state_final.., ys_0..)`` with attribute ``body`` (a
:class:`edgec.ir.Graph`) and ``num_scan_inputs``. The body's inputs are the states, then one slice
``xs_k[t]`` of every scan input; its outputs are the next states, then one slice of every scan
output. The trip count is the scan inputs' length along axis 0 (``scan_input_axes`` and
``scan_output_axes`` must be 0); ``scan_input_directions``/``scan_output_directions`` 1 walk
backwards. A Scan without scan inputs gives its trip count in the edgec attribute ``_trips``.

The C back-end does not emit a Scan as one kernel: :func:`edgec.backend.flatten.flatten_scans`
replaces it by ``ScanBegin``, the body's own nodes and ``ScanEnd`` (defined here too), so the body's
tensors are planned in the model's arena and its kernels are emitted like any other. ``ScanBegin``
copies the initial states into the state buffers (which are the Scan's final-state outputs) and
opens ``for (int itD = 0; itD < N; ++itD) {``, pointing each scan-input slice into its sequence;
``ScanEnd`` copies the next states into the state buffers and the scan-output slices into their
sequences, then closes the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgec.errors import EdgecError
from edgec.ir import Graph, Node, Shape
from edgec.ops.base import EmitContext, Op, get_op, int_list, prod, register, unsupported


@dataclass(frozen=True)
class ScanSpec:
    body: Graph
    n_state: int
    n_scan_in: int
    n_scan_out: int
    trips: int
    in_reverse: tuple[bool, ...]
    out_reverse: tuple[bool, ...]


def scan_spec(node: Node, g: Graph) -> ScanSpec:
    body = node.attr("body")
    if not isinstance(body, Graph):
        raise unsupported(node, "Scan needs its body graph (attribute 'body')")
    n_in = int(node.attr("num_scan_inputs", 0))
    n_state = len(node.inputs) - n_in
    n_out = len(body.outputs) - n_state
    if n_state < 0 or n_out < 0 or len(body.inputs) != n_state + n_in:
        raise unsupported(node, f"Scan with {len(node.inputs)} inputs, {n_in} scan inputs and a "
                                f"body of {len(body.inputs)} inputs / {len(body.outputs)} outputs")
    for key in ("scan_input_axes", "scan_output_axes"):
        if any(int_list(node.attr(key, []))):
            raise unsupported(node, f"{key} other than 0 is not supported")
    in_dirs = int_list(node.attr("scan_input_directions", [0] * n_in))
    out_dirs = int_list(node.attr("scan_output_directions", [0] * n_out))
    lengths = {g.shape(t)[0] for t in node.inputs[n_state:] if t and g.shape(t)}
    if len(lengths) > 1:
        raise unsupported(node, f"scan inputs have different lengths {sorted(lengths)}")
    if lengths:
        trips = lengths.pop()
    elif node.attr("_trips") is not None:
        trips = int(node.attr("_trips"))
    else:
        raise unsupported(node, "Scan without scan inputs needs a trip count ('_trips')")
    return ScanSpec(body, n_state, n_in, n_out, trips, tuple(bool(d) for d in in_dirs),
                    tuple(bool(d) for d in out_dirs))


@register
class Scan(Op):
    types = ("Scan",)
    #: an int8 loop (edgec's quantizer) carries codes; its body checks its own ops
    int8 = True

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        s = scan_spec(node, g)
        b = s.body
        for k, t in enumerate(node.inputs):
            want = g.shape(t)[1:] if k >= s.n_state else g.shape(t)
            if tuple(b.shape(b.inputs[k])) != tuple(want):
                raise unsupported(node, f"body input '{b.inputs[k]}' has shape "
                                        f"{list(b.shape(b.inputs[k]))}, the Scan gives "
                                        f"{list(want)}")
        for k in range(s.n_state):
            if b.shape(b.outputs[k]) != b.shape(b.inputs[k]):
                raise unsupported(node, f"state {k}: the body maps shape "
                                        f"{list(b.shape(b.inputs[k]))} to "
                                        f"{list(b.shape(b.outputs[k]))}")
        outs = [(b.shape(b.outputs[k]), b.tensor(b.outputs[k]).dtype) for k in range(s.n_state)]
        for k in range(s.n_state, len(b.outputs)):
            outs.append(((s.trips, *b.shape(b.outputs[k])), b.tensor(b.outputs[k]).dtype))
        return outs

    def reference(self, node: Node, inputs: list[np.ndarray | None], g: Graph) -> list[np.ndarray]:
        from edgec.ops.interpret import interpret

        s = scan_spec(node, g)
        b = s.body
        states = [np.asarray(x) for x in inputs[: s.n_state]]
        seqs = [np.asarray(x) for x in inputs[s.n_state:]]
        ys: list[list[np.ndarray]] = [[] for _ in range(s.n_scan_out)]
        for t in range(s.trips):
            feeds = dict(zip(b.inputs[: s.n_state], states, strict=True))
            for k, seq in enumerate(seqs):
                feeds[b.inputs[s.n_state + k]] = seq[s.trips - 1 - t if s.in_reverse[k] else t]
            res = interpret(b, feeds)
            states = [res[o] for o in b.outputs[: s.n_state]]
            for k in range(s.n_scan_out):
                ys[k].append(res[b.outputs[s.n_state + k]])
        outs = list(states)
        for k, items in enumerate(ys):
            if s.out_reverse[k]:
                items = items[::-1]
            shape = (s.trips, *b.shape(b.outputs[s.n_state + k]))
            outs.append(np.stack(items).reshape(shape) if items else np.zeros(shape, np.float32))
        return outs

    def macs(self, node: Node, g: Graph) -> int:
        s = scan_spec(node, g)
        return s.trips * sum(get_op(n, s.body).macs(n, s.body) for n in s.body.nodes)

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise EdgecError(f"node '{node.name}': a Scan is emitted as a loop over its body "
                         f"(backend.flatten.flatten_scans), not as one kernel")


# -- the flattened form (see edgec.backend.flatten) ---------------------------------------------

class LoopControl(Op):
    """A marker the C back-end turns into loop code instead of a kernel: ``emit_control``
    returns C statements; ``depth_change`` opens (+1) or closes (-1) a loop."""

    control: ClassVar[bool] = True
    depth_change: ClassVar[int] = 0

    def infer(self, node: Node, g: Graph) -> list[tuple[Shape, str]]:
        raise EdgecError(f"node '{node.name}' ({node.op}) exists only in the back-end")

    def emit(self, node: Node, ctx: EmitContext) -> str:
        raise EdgecError(f"node '{node.name}' ({node.op}) is emitted by emit_control")

    def emit_control(self, node: Node, ctx: EmitContext, ptr: dict[str, str]) -> list[str]:
        raise NotImplementedError

    def label(self, node: Node) -> str:
        """What ``edgec inspect`` shows for it."""
        if self.depth_change > 0:
            return f"loop x{node.attr('trips')}"
        return "end of loop" if self.depth_change < 0 else node.op


def _src(ctx: EmitContext, ptr: dict[str, str], node: Node, i: int) -> str:
    """C pointer of input ``i``: its buffer, or the weight table of a constant."""
    t = node.inputs[i]
    return ptr[t] if t in ptr else ctx.inp(i)


def _copy(dst: str, src: str, nbytes: int) -> str:
    return f"memcpy({dst}, {src}, {nbytes});"


@register
class ScanBegin(LoopControl):
    """inputs: initial states; outputs: state buffers, then scan-output buffers.
    attrs: ``trips``, ``var`` (the C loop variable), ``slices``: (slice tensor, sequence input
    index, reverse) per scan input, ``n_state``."""

    types = ("ScanBegin",)
    depth_change = 1

    def emit_control(self, node: Node, ctx: EmitContext, ptr: dict[str, str]) -> list[str]:
        g = ctx.g
        n, var = int(node.attr("trips")), str(node.attr("var"))
        lines = [f"/* {node.name}: {n} iterations */"]
        for k in range(int(node.attr("n_state"))):
            init, buf = node.inputs[k], node.outputs[k]
            data = g.const(init)
            nbytes = g.tensor(buf).nbytes
            if data is not None and not np.any(data):
                lines.append(f"memset({ptr[buf]}, 0, {nbytes});")
            elif ptr.get(init) != ptr[buf]:
                lines.append(_copy(ptr[buf], _src(ctx, ptr, node, k), nbytes))
        for slice_t, seq_idx, reverse in node.attr("slices"):
            size = prod(g.shape(slice_t))
            pos = f"({n - 1} - {var})" if reverse else var
            ptr[slice_t] = f"({_src(ctx, ptr, node, int(seq_idx))}) + {size} * {pos}"
        lines.append(f"for (int {var} = 0; {var} < {n}; ++{var}) {{")
        return lines


@register
class ScanEnd(LoopControl):
    """inputs: next states, scan-output slices, then (to keep them alive through the loop) the
    state buffers, scan-output buffers and sequences; attrs ``n_state``, ``n_scan_out``,
    ``trips``, ``var``, ``out_reverse``."""

    types = ("ScanEnd",)
    depth_change = -1

    def emit_control(self, node: Node, ctx: EmitContext, ptr: dict[str, str]) -> list[str]:
        g = ctx.g
        n, var = int(node.attr("trips")), str(node.attr("var"))
        n_state, n_out = int(node.attr("n_state")), int(node.attr("n_scan_out"))
        bufs = node.inputs[n_state + n_out: 2 * n_state + n_out]
        seqs = node.inputs[2 * n_state + n_out: 2 * n_state + 2 * n_out]
        copies: list[tuple[str, str, int]] = []
        for k in range(n_state):
            src, dst = _src(ctx, ptr, node, k), ptr[bufs[k]]
            if src != dst:
                copies.append((dst, src, g.tensor(bufs[k]).nbytes))
        # a next state that is another state's buffer would be overwritten before it is read
        if {d for d, _, _ in copies} & {s for _, s, _ in copies}:
            raise EdgecError(f"node '{node.name}': the loop body permutes its states; "
                             f"not supported")
        lines = [_copy(d, s, nbytes) for d, s, nbytes in copies]
        for k in range(n_out):
            elem = node.inputs[n_state + k]
            size = prod(g.shape(elem))
            pos = f"({n - 1} - {var})" if node.attr("out_reverse")[k] else var
            lines.append(_copy(f"({ptr[seqs[k]]}) + {size} * {pos}", _src(ctx, ptr, node,
                                                                         n_state + k),
                               g.tensor(elem).nbytes))
        return ["    " + ln for ln in lines] + ["}"]
