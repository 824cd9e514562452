"""Optimisation passes: plain functions Graph → Graph (each returns a new or the same graph).

One module per pass (or family of passes); :data:`DEFAULT_PIPELINE` is the order
:func:`optimize` runs them in. :func:`edgec.passes.jacobian.add_jacobian` is not in the
pipeline: the MPC adds forward-mode Jacobians on request (the pipeline's
``fuse_tangent_gemms`` then merges each dense layer with its tangent).

May import: ``edgec.ir``, ``edgec.errors``, ``edgec.ops``; never front-ends or back-ends.
"""

from __future__ import annotations

from collections.abc import Callable

from edgec.ir import Graph
from edgec.passes.batchnorm import fold_batchnorm
from edgec.passes.cleanup import eliminate_dead_nodes, fold_constants, remove_identities
from edgec.passes.einsum import lower_einsum
from edgec.passes.events import use_event_kernels
from edgec.passes.fuse import fuse_activations, fuse_bias_adds
from edgec.passes.jacobian import fuse_tangent_gemms
from edgec.passes.patches import patch_early_stage
from edgec.passes.qdq import lower_qdq
from edgec.passes.sparse import use_sparse_weights
from edgec.passes.state import detect_state
from edgec.passes.transposes import optimize_transposes
from edgec.passes.views import simplify_views

Pass = Callable[[Graph], Graph]

DEFAULT_PIPELINE: tuple[Pass, ...] = (
    lower_qdq,
    lower_einsum,
    fold_constants,
    remove_identities,
    optimize_transposes,
    simplify_views,
    fold_batchnorm,
    use_event_kernels,
    use_sparse_weights,
    fuse_bias_adds,
    fuse_activations,
    fuse_tangent_gemms,
    eliminate_dead_nodes,
    patch_early_stage,
    detect_state,
)


def optimize(g: Graph, pipeline: tuple[Pass, ...] = DEFAULT_PIPELINE) -> Graph:
    for p in pipeline:
        g = p(g)
    # loop bodies keep their convolutions whole (a PatchLoop is a top-level construct)
    return _optimize_bodies(
        g, tuple(p for p in pipeline if p not in (detect_state, patch_early_stage)))


def _optimize_bodies(g: Graph, pipeline: tuple[Pass, ...]) -> Graph:
    """The same passes inside every loop body (a Scan's ``body`` graph)."""
    if not any(n.op == "Scan" for n in g.nodes):
        return g
    g = g.copy()
    for n in g.nodes:
        if n.op == "Scan":
            n.attrs["body"] = optimize(n.attrs["body"], pipeline)
    return g


__all__ = [
    "DEFAULT_PIPELINE",
    "detect_state",
    "eliminate_dead_nodes",
    "fold_batchnorm",
    "fold_constants",
    "fuse_activations",
    "fuse_bias_adds",
    "lower_einsum",
    "lower_qdq",
    "optimize",
    "optimize_transposes",
    "patch_early_stage",
    "remove_identities",
    "simplify_views",
    "use_sparse_weights",
]
