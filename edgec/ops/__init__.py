"""All ops edgec compiles. Every module in this package registers its ops on import."""

from __future__ import annotations

import importlib
import pkgutil

from edgec.ops.base import REGISTRY, EmitContext, Op, get_op, register

_SKIP = {"base", "loops"}

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod not in _SKIP:
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["REGISTRY", "EmitContext", "Op", "get_op", "register"]
