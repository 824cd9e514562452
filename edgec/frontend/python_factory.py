"""``file.py:function`` model sources: import the user's file and call the function, which
returns ``(torch module, example inputs)``; one-line errors for each way that fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.errors import EdgecError


def load_python_factory(spec: str) -> tuple[Any, Any]:
    """``models/net.py:make`` → ``make()`` → ``(module, example_inputs)``."""
    import importlib.util

    path_s, _, fn = spec.rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise EdgecError(f"{path}: no such file")
    mod_spec = importlib.util.spec_from_file_location(f"edgec_user_{path.stem}", path)
    if mod_spec is None or mod_spec.loader is None:
        raise EdgecError(f"{path}: cannot import it as Python")
    user = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(user)
    except Exception as exc:
        raise EdgecError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(user, fn, None)
    if not callable(factory):
        raise EdgecError(f"{path}: has no function '{fn}' (expected {spec} → (module, inputs))")
    try:
        result = factory()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise EdgecError(
            f"{spec}: your function {fn}() raised {type(exc).__name__}: {first}"
        ) from None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise EdgecError(
            f"{spec}: must return (module, example_inputs), got {type(result).__name__}"
        )
    return result



def python_needs_function(path: Path) -> str:
    """The error for ``edgec compile net.py``: say which ``net.py:FN`` to write."""
    import ast

    hint = "FN"
    try:
        tree = ast.parse(path.read_text())
        fns = [
            n.name for n in tree.body
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
            and len(n.args.args) == len(n.args.defaults)
        ]
        hint = next((f for f in fns if f in ("make", "build", "model", "get_model")), None) or (
            fns[0] if len(fns) == 1 else "FN"
        )
    except (OSError, SyntaxError, UnicodeDecodeError):
        pass
    return (
        f"{path}: a Python file needs the function that builds the model: {path}:{hint}, "
        f"where {hint}() returns (torch module, example inputs)"
    )
