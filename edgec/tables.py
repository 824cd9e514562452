"""Plain-text tables, progress bars and status lines, all drawn by ``rich`` (for the CLI, the MPC
and MCU reports, bench/). ``--json`` output never passes through here: it stays plain JSON.

Tables are plain text (no colour, no box-drawing characters) so they read the same in a
terminal, a log file and a test; progress and status go to stderr, and only when it is a
terminal, so piped output stays clean.

May import: nothing of edgec; the standard library and ``rich``.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

from rich import box
from rich.console import Console
from rich.table import Table

T = TypeVar("T")

#: tables wider than this wrap nothing: long cells make the table wider instead
_TABLE_WIDTH = 400

#: rich's SIMPLE_HEAD box in ASCII: one rule of '-' under the header, nothing else
_ASCII_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None
) -> str:
    """An aligned text table; ``align`` has one char per column, 'l' or 'r' (numbers: r).
    Headers that are all empty give a table without a header row."""
    body = [[_cell(c) for c in r] for r in rows]
    cols = len(headers)
    if align is None:
        align = "".join(
            "r" if body and all(_is_num(r[i]) for r in body if r[i]) else "l" for i in range(cols)
        )
    show_header = any(h for h in headers)
    table = Table(
        box=_ASCII_HEAD if show_header else None, show_header=show_header, show_edge=False,
        pad_edge=False, padding=(0, 1), highlight=False,
    )
    for h, a in zip(headers, align, strict=False):
        table.add_column(str(h), justify="right" if a == "r" else "left", no_wrap=True)
    for r in body:
        table.add_row(*r)
    buf = io.StringIO()
    Console(
        file=buf, width=_TABLE_WIDTH, color_system=None, force_terminal=False, soft_wrap=True,
        emoji=False, markup=False, highlight=False,
    ).print(table)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """A Markdown table (the benches' ``--markdown``); ``align`` one char per column, 'l' or 'r'
    (default: every column 'l')."""
    marks = ["---:" if a == "r" else "---" for a in (align or "l" * len(headers))]
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join(marks) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


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


def format_duration(seconds: float) -> str:
    """A time for people: µs below 1 ms, ms below 1 s, then s (and min above 2 min)."""
    if seconds < 0:
        return f"-{format_duration(-seconds)}"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120.0:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min"


def _stderr_console(stream: TextIO | None) -> Console | None:
    out = stream or sys.stderr
    if not (hasattr(out, "isatty") and out.isatty()):
        return None
    return Console(file=out, stderr=stream is None)


def progress(items: Sequence[T], label: str, stream: TextIO | None = None) -> Iterator[T]:
    """Yield ``items`` while drawing a progress bar on stderr (only on a terminal)."""
    console = _stderr_console(stream)
    if console is None:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"{label}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def status(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """A spinner with ``label`` and the elapsed time on stderr while the block runs (only on a
    terminal); for steps that take seconds (builds, emulator runs)."""
    console = _stderr_console(stream)
    if console is None:
        yield
        return
    t0 = time.monotonic()
    with console.status(label) as st:
        yield
        st.update(f"{label} ({format_duration(time.monotonic() - t0)})")
