"""``edgec ops``: the ops, modules and functions each front-end supports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from edgec.errors import EdgecError

Handler = Callable[[argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    from edgec.frontend.catalog import CATALOG

    p = sub.add_parser(
        "ops",
        help="list the ops, modules and functions each front-end supports",
        description="List what each front-end compiles: ONNX ops with their opset versions "
        "and schema attributes (opsets 7-21), PyTorch modules by class and functions / ATen "
        "ops by name. Limits of single ops (attribute values, shapes) are reported when a "
        "model uses them; docs/ops.md explains the rules.",
    )
    p.add_argument("--frontend", choices=sorted(CATALOG), help="one front-end only")
    p.add_argument("--json", action="store_true", help="print the lists as JSON")
    p.add_argument("name", nargs="?", help="show only entries whose name contains this")
    return {"ops": cmd_ops}


def cmd_ops(args: argparse.Namespace) -> int:
    from edgec.frontend.catalog import CATALOG
    from edgec.tables import format_table

    names = [args.frontend] if args.frontend else sorted(CATALOG)
    found = {}
    for fe in names:
        rows = CATALOG[fe]()
        if args.name:
            rows = [e for e in rows if args.name.lower() in e.name.lower()]
        found[fe] = rows
    if args.name and not any(found.values()):
        raise EdgecError(f"no supported op, module or function matches '{args.name}'")
    if args.json:
        print(json.dumps({
            fe: [{"name": e.name, "kind": e.kind, "versions": e.versions,
                  "attributes": e.attributes, "note": e.note} for e in rows]
            for fe, rows in found.items()
        }, indent=2))
        return 0
    blocks = []
    for fe, rows in found.items():
        if fe == "onnx":
            blocks.append(f"onnx: {len(rows)} ops (opsets 7-21, float32)\n" + format_table(
                ["op", "opset versions", "attributes"],
                [[e.name, " ".join(map(str, e.versions)), ", ".join(e.attributes) or "-"]
                 for e in rows], align="lll",
            ))
        else:
            blocks.append(f"{fe}: {len(rows)} modules and functions\n" + format_table(
                ["name", "kind", "note"], [[e.name, e.kind, e.note or ""] for e in rows],
                align="lll",
            ))
    print("\n\n".join(blocks))
    return 0
