"""The static memory planner: validity on random graphs, in-place reuse, views, lower bound."""

from __future__ import annotations

import numpy as np
import pytest

from edgec.backend.planner import plan_memory, tensor_bytes
from edgec.ir import Graph, Node, Tensor
from edgec.ops.interpret import infer_shapes


def _graph(
    nodes: list[Node],
    inputs: dict[str, tuple[int, ...]],
    outputs: list[str],
    consts: dict[str, np.ndarray] | None = None,
) -> Graph:
    g = Graph("t")
    for k, s in inputs.items():
        g.tensors[k] = Tensor(k, s)
        g.inputs.append(k)
    for k, v in (consts or {}).items():
        g.tensors[k] = Tensor(k, v.shape, str(v.dtype), v)
    g.nodes = nodes
    g.outputs = outputs
    infer_shapes(g)
    return g


def _check_no_overlap(g: Graph) -> None:
    """No two tensors that are alive at the same step (and not aliases) share arena bytes."""
    plan = plan_memory(g)
    last = {}
    first = {}
    for i, n in enumerate(g.nodes):
        for t in n.inputs:
            last[t] = i
        for t in n.outputs:
            first.setdefault(t, i)
    names = list(plan.offsets)
    alias_groups = {}
    for t in names:  # tensors sharing an offset because of views / in-place are one buffer
        alias_groups.setdefault((plan.offsets[t]), []).append(t)
    for a in names:
        for b in names:
            if (
                a >= b
                or plan.offsets[a] == plan.offsets[b]
                and (a in plan.aliased | plan.inplace or b in plan.aliased | plan.inplace)
            ):
                continue
            la = (first[a], last.get(a, first[a]))
            lb = (first[b], last.get(b, first[b]))
            if la[0] <= lb[1] and lb[0] <= la[1]:
                sa, sb = tensor_bytes(g, a), tensor_bytes(g, b)
                oa, ob = plan.offsets[a], plan.offsets[b]
                assert oa + sa <= ob or ob + sb <= oa, f"{a} and {b} overlap while both alive"
    assert plan.arena_floats >= plan.lower_bound_floats


def test_chain_reuses_two_buffers() -> None:
    w = np.ones((8, 8), np.float32)
    nodes = [Node("MatMul", f"m{i}", [f"t{i}", "w"], [f"t{i + 1}"]) for i in range(5)]
    nodes.append(Node("Relu", "r", ["t5"], ["y"]))
    g = _graph(nodes, {"t0": (1, 8)}, ["y"], {"w": w})
    plan = plan_memory(g)
    assert plan.arena_floats == 16 == plan.lower_bound_floats


def test_inplace_elementwise() -> None:
    w = np.ones((8, 8), np.float32)
    nodes = [
        Node("MatMul", "m", ["x", "w"], ["a"]),
        Node("Relu", "r", ["a"], ["b"]),
        Node("Sigmoid", "s", ["b"], ["c"]),
        Node("MatMul", "m2", ["c", "w"], ["y"]),
    ]
    g = _graph(nodes, {"x": (1, 8)}, ["y"], {"w": w})
    plan = plan_memory(g)
    assert plan.inplace == {"b", "c"}
    assert plan.arena_floats == 8


def test_no_inplace_when_input_still_needed() -> None:
    nodes = [
        Node("Relu", "r", ["x"], ["a"]),
        Node("Sigmoid", "s", ["a"], ["b"]),
        Node("Add", "add", ["a", "b"], ["y"]),
    ]
    g = _graph(nodes, {"x": (1, 8)}, ["y"])
    plan = plan_memory(g)
    assert "b" not in plan.inplace
    assert plan.offsets["a"] != plan.offsets["b"]


def test_inplace_over_second_operand() -> None:
    """Add(a, b) with a still needed later and b dying: the sum is written over b."""
    nodes = [
        Node("Relu", "r", ["x"], ["a"]),
        Node("Sigmoid", "s", ["a"], ["b"]),
        Node("Add", "add", ["a", "b"], ["c"]),
        Node("Mul", "mul", ["a", "c"], ["y"]),
    ]
    g = _graph(nodes, {"x": (1, 8)}, ["y"])
    plan = plan_memory(g)
    assert "c" in plan.inplace and plan.offsets["c"] == plan.offsets["b"]
    assert plan.arena_floats == 16


def test_int8_add_over_second_operand_runs_exact() -> None:
    """The same with QAdd on int8 codes: the C, writing the sum over b, equals the reference."""
    from edgec.api import compile_graph
    from edgec.ops.interpret import interpret
    from tests.int8_graphs import Builder, random_feeds

    b = Builder("qadd_over_b", seed=4)
    x = b.input("x", (1, 64))
    w = b.weights((64, 64), 0)
    a = b.op("QFullyConnected", [x, w, b.bias(64, x, w)])
    w2 = b.weights((64, 64), 0)
    h = b.op("QFullyConnected", [a, w2, b.bias(64, a, w2)])
    s = b.op("QAdd", [a, h])
    y = b.op("QMul", [a, s])
    g = b.finish([y])
    plan = plan_memory(g)
    assert s in plan.inplace and plan.offsets[s] == plan.offsets[h]
    m = compile_graph(g)
    # a, h with the sum written over it, and the dense kernel's int16 row copy (2 * 64 bytes)
    assert m.report()["arena_bytes"] == 2 * 64 + 2 * 64
    rng = np.random.default_rng(6)
    for _ in range(5):
        feeds = random_feeds(g, rng)
        assert np.array_equal(m.run(feeds["x"]), interpret(g, feeds)[y])


def test_skip_connection_lower_bound() -> None:
    w = np.ones((16, 16), np.float32)
    nodes = [
        Node("MatMul", "a", ["x", "w"], ["a"]),
        Node("MatMul", "b", ["a", "w"], ["b"]),
        Node("MatMul", "c", ["b", "w"], ["c"]),
        Node("Add", "s", ["a", "c"], ["d"]),
        Node("MatMul", "e", ["d", "w"], ["y"]),
    ]
    g = _graph(nodes, {"x": (1, 16)}, ["y"], {"w": w})
    plan = plan_memory(g)
    assert plan.lower_bound_floats == 48
    assert plan.arena_floats <= 1.1 * plan.lower_bound_floats
    _check_no_overlap(g)


@pytest.mark.parametrize("seed", range(20))
def test_random_dags_are_valid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["x"]
    nodes = []
    for i in range(int(rng.integers(3, 15))):
        k = int(rng.integers(0, 3))
        a = names[int(rng.integers(max(0, len(names) - 4), len(names)))]
        out = f"t{i}"
        if k == 0:
            nodes.append(Node("Relu", f"n{i}", [a], [out]))
        elif k == 1:
            b = names[int(rng.integers(0, len(names)))]
            nodes.append(Node("Add", f"n{i}", [a, b], [out]))
        else:
            nodes.append(Node("Tanh", f"n{i}", [a], [out]))
        names.append(out)
    g = _graph(nodes, {"x": (1, int(rng.integers(1, 9)))}, [names[-1]])
    _check_no_overlap(g)


def test_arena_pointers_count_bytes_for_every_type() -> None:
    """A tensor or scratch buffer ``offset`` bytes into the arena, whatever its C type (an int32
    scratch at byte 8 is element 2: ``(int32_t *)arena + 8`` would point 32 bytes in)."""
    from edgec.backend.c_emit import _arena_ptr

    assert _arena_ptr("float", 8) == "arena + 2"
    assert _arena_ptr("int8_t", 5) == "(int8_t *)arena + 5"
    assert _arena_ptr("int16_t", 6) == "(int16_t *)arena + 3"
    assert _arena_ptr("int32_t", 8) == "(int32_t *)arena + 2"
    assert _arena_ptr("int32_t", 6) == "(int32_t *)(void *)((unsigned char *)arena + 6)"
    assert _arena_ptr("int32_t", 0) == "(int32_t *)arena"
