"""Plain-text tables and progress bars (for the CLI, the MPC and MCU reports, bench/).

May import: nothing of edgec; only the standard library.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

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
