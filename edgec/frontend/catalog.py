"""What each front-end accepts, for ``edgec ops`` and docs/ops.md: ONNX ops with the opsets and
attributes of their schemas, PyTorch modules (by class) and functions/ATen ops (by name).

Front-ends register a lister in :data:`CATALOG` (name → function returning rows); the ONNX rows
are the ops of :mod:`edgec.ops` that the ONNX standard defines (edgec's own internal ops, such as
fused or event-driven kernels, are not accepted from files and not listed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: the ONNX opsets the importer accepts
ONNX_OPSETS = (7, 21)


@dataclass(frozen=True)
class Entry:
    """One supported op / module / function of a front-end."""

    name: str
    kind: str  # "op", "module", "function"
    #: opset versions (ONNX: the schema versions within the accepted opsets)
    versions: list[int] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    note: str = ""


def onnx_entries() -> list[Entry]:
    import onnx

    from edgec.ops import REGISTRY

    lo, hi = ONNX_OPSETS
    history: dict[str, list[onnx.defs.OpSchema]] = {}
    for sch in onnx.defs.get_all_schemas_with_history():
        if sch.domain in ("", "ai.onnx") and sch.name in REGISTRY:
            history.setdefault(sch.name, []).append(sch)
    out = []
    for name in sorted(history):
        schemas = sorted(history[name], key=lambda s: s.since_version)
        versions = [s.since_version for s in schemas if s.since_version <= hi]
        if not versions:
            continue
        first = max([v for v in versions if v <= lo] or [versions[0]])
        shown = [v for v in versions if v >= first]
        latest = [s for s in schemas if s.since_version <= hi][-1]
        out.append(Entry(name, "op", shown, sorted(latest.attributes)))
    return out


def torch_entries() -> list[Entry]:
    from edgec.frontend.pytorch.importer import _ensure_handlers
    from edgec.frontend.pytorch.lowering import FUNCTIONS, MODULE_MATCHERS, MODULES

    _ensure_handlers()
    out = [Entry(q, "module") for q in sorted(MODULES)]
    for pred, _h in MODULE_MATCHERS:
        doc = (pred.__doc__ or getattr(pred, "__name__", "")).strip().splitlines()
        out.append(Entry(doc[0] if doc else "module matched by structure", "module",
                         note="recognised by its structure"))
    out += [Entry(f, "function") for f in sorted(FUNCTIONS) if not f.startswith("_")]
    return out


#: front-end name → its lister; front-ends add theirs
CATALOG: dict[str, Callable[[], list[Entry]]] = {
    "onnx": onnx_entries,
    "torch": torch_entries,
}
