"""Loops for the C back-end: every Scan becomes ``ScanBegin``, its body's nodes, ``ScanEnd``.

The flat graph is what the planner and the emitter see, so loop bodies need nothing special from
either: body tensors are planned in the one arena with lifetimes inside the loop (a body runs its
nodes in order each iteration, so two body tensors that are never alive together in one iteration
can share memory across iterations too); the state buffers, the scan-output sequences and the
scan-input sequences stay alive through the whole loop because ``ScanEnd`` reads them. Body tensor
names get the Scan's name as prefix; a state buffer is named after the Scan's final-state output
(so after the loop the result is already in place). Nested Scans nest loops (``it0``, ``it1``...).
"""

from __future__ import annotations

import dataclasses

from edgec.ir import Graph, Node, Tensor
from edgec.ops.patches import expand as expand_patch_loop
from edgec.ops.scan import scan_spec


def flatten_scans(g: Graph) -> Graph:
    """Also expands every PatchLoop (``edgec.ops.patches``) into its flat loop form."""
    if not any(n.op in ("Scan", "PatchLoop") for n in g.nodes):
        return g
    flat = Graph(g.name, [], dict(g.tensors), list(g.inputs), list(g.outputs), list(g.state),
                 dict(g.state_init), g.opset, g.source, dict(g.options))
    flat.nodes = _flatten(g, g.nodes, flat, 0)
    return flat


def _flatten(src: Graph, nodes: list[Node], flat: Graph, depth: int) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        if n.op == "PatchLoop":
            out.extend(expand_patch_loop(n, depth))
            continue
        if n.op != "Scan":
            out.append(n)
            continue
        s = scan_spec(n, src)
        body = s.body
        prefix = f"{n.name}/"
        rename: dict[str, str] = {}

        def new_name(base: str, prefix: str = prefix) -> str:
            name, i = prefix + base, 0
            while name in flat.tensors:
                i += 1
                name = f"{prefix}{base}#{i}"
            return name

        # state buffers: the Scan's final-state outputs (or a fresh buffer when unused)
        for k in range(s.n_state):
            buf = n.outputs[k] if k < len(n.outputs) and n.outputs[k] else ""
            if not buf:
                buf = new_name(body.inputs[k])
                src = body.tensor(body.inputs[k])
                flat.tensors[buf] = Tensor(buf, src.shape, src.dtype, quant=src.quant)
            rename[body.inputs[k]] = buf
        seqs_out = []
        for k in range(s.n_scan_out):
            j = s.n_state + k
            name = n.outputs[j] if j < len(n.outputs) and n.outputs[j] else ""
            if not name:
                name = new_name(f"scan_out{k}")
                shape = (s.trips, *body.shape(body.outputs[j]))
                src = body.tensor(body.outputs[j])
                flat.tensors[name] = Tensor(name, shape, src.dtype, quant=src.quant)
            seqs_out.append(name)
        for t in body.tensors.values():
            if t.name in rename:
                continue
            rename[t.name] = new_name(t.name)
            flat.tensors[rename[t.name]] = dataclasses.replace(t, name=rename[t.name])
        renamed = Graph(body.name, [], {}, [rename[i] for i in body.inputs],
                        [rename[o] for o in body.outputs], opset=body.opset)
        renamed.tensors = flat.tensors  # nested Scans resolve shapes in the flat graph
        body_nodes = [
            Node(m.op, prefix + m.name, [rename.get(i, i) if i else "" for i in m.inputs],
                 [rename.get(o, o) if o else "" for o in m.outputs], dict(m.attrs))
            for m in body.nodes
        ]
        state_bufs = [rename[i] for i in body.inputs[: s.n_state]]
        slices = [(rename[body.inputs[s.n_state + k]], s.n_state + k, s.in_reverse[k])
                  for k in range(s.n_scan_in)]
        var = f"it{depth}"
        out.append(Node("ScanBegin", prefix + "begin", list(n.inputs),
                        state_bufs + seqs_out,
                        {"trips": s.trips, "var": var, "slices": slices,
                         "n_state": s.n_state}))
        out.extend(_flatten(renamed, body_nodes, flat, depth + 1))
        nexts = [rename[o] for o in body.outputs]
        out.append(Node("ScanEnd", prefix + "end",
                        nexts + state_bufs + seqs_out + list(n.inputs[s.n_state:]), [],
                        {"trips": s.trips, "var": var, "n_state": s.n_state,
                         "n_scan_out": s.n_scan_out, "out_reverse": list(s.out_reverse)}))
    return out
