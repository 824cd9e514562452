"""One table for the model families: flash, RAM, host time per step and the saving of the
structure-aware path (event-driven vs dense spikes, sparse vs dense circuits, factored vs dense
PHM, regenerated vs stored LSM reservoirs). ``python -m bench.families [--repeat N] [--markdown]``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from edgec.tables import format_table, markdown_table

FAMILIES = ("spiking", "circuits", "phm", "lsm")
HEADERS = ("family", "model", "variant", "flash B", "RAM B", "µs/step", "saving")


def _us(row: dict[str, Any]) -> float:
    if "ns_per_step" in row:
        return float(row["ns_per_step"]) / 1000.0
    return float(row["us_per_run"])


def rows(repeat: int = 5) -> list[list[str]]:
    out = []
    for fam in FAMILIES:
        mod = importlib.import_module(f"bench.family_{fam}")
        for r in mod.rows(repeat):
            out.append([fam, r["model"], r["variant"], f"{r['flash_bytes']:,}",
                        f"{r['ram_bytes']:,}", f"{_us(r):.2f}", r.get("saving", "")])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed batches (median)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    cells = rows(args.repeat)
    if args.markdown:
        print(markdown_table(HEADERS, cells))
    else:
        print(format_table(HEADERS, cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
