"""What the family benches share: the command line and the table of their rows."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from edgec.tables import format_table

#: (column header, row key, format) of the columns every family reports first
COMMON_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "{}"),
    ("variant", "variant", "{}"),
    ("flash B", "flash_bytes", "{:,}"),
    ("RAM B", "ram_bytes", "{:,}"),
)


def table_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]
) -> list[list[str]]:
    return [[fmt.format(r[key]) for _, key, fmt in columns] for r in rows]


def family_main(
    doc: str,
    rows: Callable[[int], list[dict[str, Any]]],
    extra_columns: Sequence[tuple[str, str, str]],
    argv: list[str] | None = None,
) -> int:
    """``python -m bench.family_<name> [--repeat N]``: print the family's rows as a table."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed batches (median)")
    args = ap.parse_args(argv)
    columns = (*COMMON_COLUMNS, *extra_columns, ("saving", "saving", "{}"))
    print(format_table([c[0] for c in columns], table_rows(rows(args.repeat), columns)))
    return 0
