"""Fold inference-mode BatchNormalization into the Conv / Gemm / MatMul that feeds it."""

from __future__ import annotations

import numpy as np

from edgec.ir import Graph, Node


def _bn_scale_shift(g: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    vals = [g.const(i) for i in bn.inputs[1:5]]
    if any(v is None for v in vals):
        return None
    scale, bias, mean, var = (np.asarray(v, np.float64) for v in vals)  # type: ignore[arg-type]
    if any(v.ndim != 1 for v in (scale, bias, mean, var)):
        return None  # opset 6-8's spatial=0: statistics per channel and position, not foldable
    eps = float(bn.attr("epsilon", 1e-5))
    s = scale / np.sqrt(var + eps)
    return s, bias - mean * s


def fold_batchnorm(g: Graph) -> Graph:
    g = g.copy()
    consumers = g.consumers()
    producers = g.producers()
    removed: set[int] = set()
    for bn in g.nodes:
        if bn.op != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1:
            continue
        if bn.attr("training_mode", 0):
            continue
        src = bn.inputs[0]
        p = producers.get(src)
        if p is None or src in g.outputs or len(consumers.get(src, [])) != 1:
            continue
        if "_act" in p.attrs:
            continue
        ss = _bn_scale_shift(g, bn)
        if ss is None:
            continue
        s, t = ss
        if p.op == "Conv" and g.const(p.inputs[1]) is not None:
            w = g.const(p.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
            b = g.const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else None
            b64 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
            if b is None and len(p.inputs) > 2 and p.inputs[2]:
                continue  # run-time bias
            w2 = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
            b2 = (b64 * s + t).astype(np.float32)
            wn = g.add_const(f"{p.name}_wbn", w2)
            bnm = g.add_const(f"{p.name}_bbn", b2)
            p.inputs = [p.inputs[0], wn, bnm]
        elif p.op == "Gemm" and _gemm_foldable(g, p, s.size):
            b = g.const(p.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
            tb = bool(p.attr("transB", 0))
            alpha = float(p.attr("alpha", 1.0))
            w_nk = (b if tb else b.T) * alpha  # [N, K]
            c = g.const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else None
            beta = float(p.attr("beta", 1.0))
            c64 = (
                np.zeros(w_nk.shape[0])
                if c is None
                else np.broadcast_to(c.astype(np.float64).reshape(-1) * beta, (w_nk.shape[0],))
            )
            wn = g.add_const(f"{p.name}_wbn", (w_nk * s[:, None]).astype(np.float32))
            bnm = g.add_const(f"{p.name}_bbn", (c64 * s + t).astype(np.float32))
            p.inputs = [p.inputs[0], wn, bnm]
            p.attrs.update({"transB": 1, "alpha": 1.0, "beta": 1.0})
        else:
            continue
        p.outputs[0] = bn.outputs[0]
        g.tensors[bn.outputs[0]].shape = g.tensors[src].shape
        del g.tensors[src]
        producers[bn.outputs[0]] = p
        removed.add(id(bn))
    g.nodes = [n for n in g.nodes if id(n) not in removed]
    return g


def _gemm_foldable(g: Graph, p: Node, channels: int) -> bool:
    if g.const(p.inputs[1]) is None or p.attr("transA", 0):
        return False
    if len(p.inputs) > 2 and p.inputs[2]:
        c = g.const(p.inputs[2])
        # a bias per output column (a scalar, [N] or [1, N]); a column [M, 1] or a full [M, N]
        # C is per row / per element and does not fold into per-channel weights
        if c is None or not (c.size == 1 or (c.size == channels and c.shape[-1] == channels)):
            return False
    b = g.const(p.inputs[1])
    n = b.shape[0] if p.attr("transB", 0) else b.shape[1]  # type: ignore[union-attr]
    return n == channels
