"""Plain-text tables and progress bars for the CLI (no dependencies)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

from edgec.backend.planner import plan_memory
from edgec.ir import Graph
from edgec.ops import get_op

T = TypeVar("T")


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """An aligned text table; ``align`` has one char per column, 'l' or 'r' (numbers: r)."""
    body = [[_cell(c) for c in r] for r in rows]
    cols = len(headers)
    widths = [len(h) for h in headers]
    for r in body:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    if align is None:
        align = "".join(
            "r" if body and all(_is_num(r[i]) for r in body if r[i]) else "l" for i in range(cols)
        )

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i]) for i, c in enumerate(r)
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(list(headers)), sep, *(fmt(r) for r in body)])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _is_num(s: str) -> bool:
    try:
        float(s.replace(",", "").rstrip("%"))
        return True
    except ValueError:
        return False


def progress(items: Sequence[T], label: str, stream: TextIO | None = None) -> Iterator[T]:
    """Yield ``items`` while drawing a one-line progress bar on stderr (only on a terminal)."""
    out = stream or sys.stderr
    tty = hasattr(out, "isatty") and out.isatty()
    n = len(items)
    for i, item in enumerate(items):
        if tty:
            filled = int(30 * i / max(n, 1))
            out.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {i}/{n}")
            out.flush()
        yield item
    if tty:
        out.write(f"\r{label} [{'#' * 30}] {n}/{n}\n")
        out.flush()


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    lb = report["arena_lower_bound_bytes"]
    arena = report["arena_bytes"]
    pct = f" ({100.0 * arena / lb:.1f} % of lower bound {lb:,} B)" if lb else ""
    rows = [
        ("parameters", f"{report['params']:,}"),
        ("weights (flash)", f"{report['weight_bytes']:,} B"),
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
    """Per-node rows for ``edgec inspect``: op, shapes, params, MACs, arena offset."""
    plan = plan_memory(g)
    rows: list[list[Any]] = []
    for i, n in enumerate(g.nodes):
        op = get_op(n, g)
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
            where = f"{4 * plan.offsets[o]} (view)"
        elif o in plan.offsets:
            where = str(4 * plan.offsets[o]) + (" (in place)" if o in plan.inplace else "")
        else:
            where = "-"
        rows.append([i, n.name, kind, ins, outs, params, op.macs(n, g), where])
    return rows
