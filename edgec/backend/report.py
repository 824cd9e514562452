"""The compiled model's report as rows for people: totals (``edgec compile``) and per node
(``edgec inspect``)."""

from __future__ import annotations

from typing import Any

from edgec.backend.planner import plan_memory
from edgec.ir import Graph
from edgec.ops import get_op


def weights_cell(report: dict[str, Any], dsp: bool | None = None) -> str:
    """The weight bytes a build links. An int8 model whose C holds tables for both build paths
    (report keys ``weight_bytes_dsp`` / ``weight_bytes_generic``): the figure of the target's
    path when ``dsp`` says it (whether the target's core has the DSP extension), else both;
    the bytes of every table in the file follow."""
    total = report["weight_bytes"]
    if "weight_bytes_dsp" not in report:
        return f"{total:,} B"
    both = f"{total:,} B of tables in the C file"
    if dsp is None:
        return (f"{report['weight_bytes_dsp']:,} B on DSP cores (M4, M7, M33), "
                f"{report['weight_bytes_generic']:,} B on others and with -DEDGEC_NO_DSP "
                f"({both})")
    path = "dsp" if dsp else "generic"
    what = "a DSP core's build" if dsp else "a build without the DSP kernels"
    return f"{report[f'weight_bytes_{path}']:,} B ({what}; {both})"


def summary_rows(report: dict[str, Any], dsp: bool | None = None) -> list[tuple[str, str]]:
    """Totals for people; ``dsp``: whether the target's core has the DSP extension (None:
    no target, show both int8 build paths' weight bytes)."""
    lb = report["arena_lower_bound_bytes"]
    arena = report["arena_bytes"]
    pct = f" ({100.0 * arena / lb:.1f} % of lower bound {lb:,} B)" if lb else ""
    rows = [
        ("parameters", f"{report['params']:,}"),
        ("weights (flash)", weights_cell(report, dsp)),
        ("activation arena (RAM)", f"{arena:,} B{pct}"),
    ]
    if report.get("state_bytes"):
        rows.append(("state (RAM)", f"{report['state_bytes']:,} B"))
    rows.append(("MACs per inference", f"{report['macs']:,}"))
    if report.get("structure", {}).get("masked_entries"):
        from edgec.ops.circuits import sparse_summary

        sp = sparse_summary(report)
        rows.append((
            "sparse weights",
            f"density {sp['density']:.2f}, {sp['masked_flash_bytes']:,} B "
            f"({sp['flash_saved_bytes']:,} B saved vs dense)",
        ))
    return rows


def node_rows(g: Graph) -> list[list[Any]]:
    """Per-node rows for ``edgec inspect``: op, shapes, params, MACs, arena offset. Loops are
    shown as the back-end emits them: ScanBegin, the body's nodes, ScanEnd."""
    from edgec.backend.flatten import flatten_scans

    g = flatten_scans(g)
    plan = plan_memory(g)
    rows: list[list[Any]] = []
    for i, n in enumerate(g.nodes):
        op = get_op(n, g)
        if getattr(op, "control", False):
            what = op.label(n)
            rows.append([i, n.name, n.op, "", what, 0, 0, "-"])
            continue
        act = n.attrs.get("_act")
        kind = n.op + (f"+{act[0]}" if act else "")
        ins = " ".join(
            "x".join(map(str, g.shape(t))) or "1" for t in n.inputs if t and g.const(t) is None
        )
        outs = " ".join("x".join(map(str, g.shape(t))) or "1" for t in n.outputs if t)
        params = sum(g.tensor(t).size for t in n.inputs if t and g.const(t) is not None)
        o = n.outputs[0]
        if o in g.outputs:
            where = "output"
        elif o in plan.aliased:
            where = f"{plan.offsets[o]} (view)"
        elif o in plan.offsets:
            where = str(plan.offsets[o]) + (" (in place)" if o in plan.inplace else "")
        else:
            where = "-"
        rows.append([i, n.name, kind, ins, outs, params, op.macs(n, g), where])
    return rows
