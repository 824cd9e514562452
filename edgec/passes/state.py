"""Find the state a stateful C API carries between calls.

A recurrent node (RNN, GRU, LSTM) whose initial state comes from a graph input and whose final
state reaches a graph output — directly or through views that keep every element (Reshape,
Squeeze, Unsqueeze, Flatten, Identity, e.g. the dynamo exporter's full Slice, which
``simplify_views`` turns into a Reshape) — defines a state pair (input, output) that
``<name>_step`` carries. Pairs can also be given explicitly
(``edgec.compile(..., state=[("h0", "hn")])``, ``--state h0:hn``).
"""

from __future__ import annotations

from edgec.ir import Graph

# op type → ((initial-state input index, final-state output index), ...)
_RECURRENT = {
    "RNN": ((5, 1),),
    "GRU": ((5, 1),),
    "LSTM": ((5, 1), (6, 2)),
}
_VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def detect_state(g: Graph) -> Graph:
    if g.state:
        return g
    producers = g.producers()
    consumers = g.consumers()

    def source(t: str) -> str:
        while t not in g.inputs:
            p = producers.get(t)
            if p is None or p.op not in _VIEWS or g.tensor(p.inputs[0]).size != g.tensor(t).size:
                return ""
            t = p.inputs[0]
        return t

    def sink(t: str) -> str:
        while t not in g.outputs:
            users = consumers.get(t, [])
            if len(users) != 1 or users[0].op not in _VIEWS:
                return ""
            t = users[0].outputs[0]
        return t

    pairs: list[tuple[str, str]] = []
    for n in g.nodes:
        for i_in, i_out in _RECURRENT.get(n.op, ()):
            if len(n.inputs) <= i_in or len(n.outputs) <= i_out:
                continue
            if not n.inputs[i_in] or not n.outputs[i_out]:
                continue
            s_in, s_out = source(n.inputs[i_in]), sink(n.outputs[i_out])
            if s_in and s_out and g.tensor(s_in).size == g.tensor(s_out).size:
                pairs.append((s_in, s_out))
    # a graph input that starts two recurrent states (one tensor as an LSTM's h0 and c0, or
    # two RNNs' h0) or an output two of them end in cannot be carried: no pair for either
    ins = [a for a, _ in pairs]
    outs = [b for _, b in pairs]
    pairs = [(a, b) for a, b in pairs if ins.count(a) == 1 and outs.count(b) == 1]
    if not pairs:
        return g
    g = g.copy()
    g.state = pairs
    return g
