"""Find the state a stateful C API carries between calls.

A recurrent node (RNN, GRU, LSTM) whose initial state is a graph input and whose final state is a
graph output defines a state pair (input, output) that ``<name>_step`` carries. Pairs can also be
given explicitly (``edgec.compile(..., state=[("h0", "hn")])``, ``--state h0:hn``).
"""

from __future__ import annotations

from edgec.ir import Graph

# op type → ((initial-state input index, final-state output index), ...)
_RECURRENT = {
    "RNN": ((5, 1),),
    "GRU": ((5, 1),),
    "LSTM": ((5, 1), (6, 2)),
}


def detect_state(g: Graph) -> Graph:
    if g.state:
        return g
    g = g.copy()
    pairs: list[tuple[str, str]] = []
    for n in g.nodes:
        for i_in, i_out in _RECURRENT.get(n.op, ()):
            if len(n.inputs) <= i_in or len(n.outputs) <= i_out:
                continue
            s_in, s_out = n.inputs[i_in], n.outputs[i_out]
            if s_in in g.inputs and s_out in g.outputs and g.shape(s_in) == g.shape(s_out):
                pairs.append((s_in, s_out))
    g.state = pairs
    return g
