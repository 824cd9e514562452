"""All ops edgec compiles, one module per op family: each op's shape rule, numpy reference and
C emission live together (an ``Op`` subclass registered with ``@register``). Every module in
this package registers its ops on import; :mod:`edgec.ops.interpret` runs shape inference and
the numpy reference over a graph.

May import: ``edgec.ir``, ``edgec.errors`` and each other; nothing above them.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgec.ops.base import REGISTRY, EmitContext, Op, get_op, register

_SKIP = {"base", "loops", "interpret"}

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod not in _SKIP:
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["REGISTRY", "EmitContext", "Op", "get_op", "register"]
