"""The package layout: no import cycles, each subsystem imports only the layers below it, and
every subsystem says in its ``__init__`` what it owns and what it may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgec

ROOT = Path(edgec.__file__).resolve().parent

#: top-level modules (the API entry points and the few things every layer shares)
TOP_LEVEL = {"__init__", "_package", "api", "errors", "ir", "onnx_backend", "tables"}

#: subsystem → the edgec subsystems it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "_package": {"errors"},
    "errors": set(),
    "tables": set(),
    "ir": {"errors"},
    "ops": {"ir", "errors"},
    "passes": {"ir", "errors", "ops"},
    "frontend": {"ir", "errors", "ops", "passes", "mcu.targets", "_package"},
    "backend": {"ir", "errors", "ops", "_package"},
    "api": {"ir", "errors", "ops", "passes", "frontend", "backend", "mcu", "verify", "quantize",
            "_package"},
    "quantize": {"ir", "errors", "ops", "passes", "frontend"},
    "onnx_backend": {"api", "ir", "errors", "ops", "backend"},
    "nn": {"ops"},
    "mcu": {"backend", "ir", "errors", "ops", "tables", "_package"},
    "verify": {"frontend", "mcu", "backend", "ir", "errors", "ops", "tables", "_package"},
    "mpc": {"api", "backend", "ir", "errors", "ops", "passes", "mcu", "tables", "_package"},
    "scale": {"mpc", "api", "verify", "mcu", "backend", "errors", "tables", "_package"},
    "cli": {"*"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = ["edgec", *p.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every edgec module ``name`` imports, at the top or inside functions (lazy imports make
    cycles too)."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            found.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                base = ".".join(up + ([n.module] if n.module else []))
            for a in n.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _subsystem(mod: str) -> str:
    parts = mod.split(".")
    return "api" if len(parts) == 1 else parts[1]  # the package itself re-exports the API


def _cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_cycles() -> None:
    GRAPH["edgec.ir"].add("edgec.api")
    try:
        assert any("edgec.ir" in c and "edgec.api" in c for c in _cycles())
    finally:
        GRAPH["edgec.ir"].discard("edgec.api")


def _violations(mod: str) -> list[str]:
    own = _subsystem(mod)
    allowed = ALLOWED[own]
    if "*" in allowed:
        return []
    return [
        f"{mod} imports {dep}: {own} may import only {sorted(allowed)}"
        for dep in sorted(GRAPH[mod])
        if not (
            _subsystem(dep) in (own, *allowed) or dep.removeprefix("edgec.") in allowed
        )
    ]


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_respect_the_layers(mod: str) -> None:
    assert _violations(mod) == []


def test_the_layer_check_finds_violations() -> None:
    GRAPH["edgec.frontend.onnx_import"].add("edgec.backend.c_emit")
    try:
        assert _violations("edgec.frontend.onnx_import")
    finally:
        GRAPH["edgec.frontend.onnx_import"].discard("edgec.backend.c_emit")
    assert not _violations("edgec.frontend.pytorch.lib_phm")  # mcu.targets is allowed there


def test_top_level_holds_only_the_entry_points() -> None:
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == TOP_LEVEL


def test_every_subsystem_says_what_it_owns_and_may_import() -> None:
    for init in sorted(ROOT.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.parent.name}/__init__.py: no 'May import' rule"
        assert len(doc.split()) > 20, f"{init.parent.name}/__init__.py: docstring too thin"
