"""Shared int8 kernel functions: one C function per distinct kernel body, called by every layer
that has it, with the layer's constant tables and quantization scalars as arguments.

A DS-CNN repeats the same depthwise and pointwise geometry four times; emitted per layer, each
copy differs only in its table symbols and a few integer constants (zero points, clamp
bounds). With the option ``int8_kernels="shared"`` (the default) a kernel writes its body with
named scalars (:meth:`SharedKernel.scalar`), its tables are renamed to parameters, and the body
is emitted once as ``static void <prefix>_<hash>(...)`` (the hash of its text, so the file is
deterministic); the node's function is one call. ``"specialized"`` keeps one copy per layer
with the constants folded in (a few percent fewer instructions, more flash).
"""

from __future__ import annotations

import hashlib
import re

from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.ops.base import EmitContext

#: compile options this module reads (``edgec.api.known_options`` collects them)
OPTIONS = {
    "int8_kernels": "shared | specialized: int8 conv/depthwise layers of the same geometry "
    "call one C function with their tables as arguments (shared, default: less flash) or each "
    "get a copy with their constants folded in (specialized: slightly faster)",
}
MODES = ("shared", "specialized")


def sharing(g: Graph) -> bool:
    """Whether int8 kernels are shared (option ``int8_kernels``)."""
    mode = str(g.options.get("int8_kernels", "shared"))
    if mode not in MODES:
        raise EdgecError(f"option int8_kernels={mode!r}: expected 'shared' or 'specialized'")
    return mode == "shared"


class SharedKernel:
    """Collects the tables and scalars of one node's kernel body, then emits the body as a
    shared function (or inline, when sharing is off)."""

    def __init__(self, ctx: EmitContext, prefix: str):
        self.ctx, self.prefix = ctx, prefix
        self.enabled = sharing(ctx.g)
        self.tables: list[tuple[str, str]] = []  # (C element type, symbol)
        self.scalars: list[tuple[str, int]] = []  # (parameter name, value)
        self.ptrs: list[tuple[str, str]] = []  # (C declaration, argument)

    def ptr(self, ctype: str, name: str, expr: str) -> str:
        """A pointer the body reads (the node's input, output or scratch): the body's name for
        it, parameter ``name`` of C type ``ctype`` when shared, else ``expr`` itself."""
        if not self.enabled:
            return expr
        self.ptrs.append((f"{ctype} {name}", expr))
        return name

    def table(self, sym: str, ctype: str) -> str:
        """Register constant table ``sym`` (elements ``ctype``) read by the body; returns it."""
        if (ctype, sym) not in self.tables:
            self.tables.append((ctype, sym))
        return sym

    def scalar(self, name: str, value: int) -> str:
        """The C expression of an int32 scalar of the body: a parameter ``name`` when shared,
        else the literal."""
        if not self.enabled:
            return f"({value})" if value < 0 else str(value)
        if name not in (n for n, _ in self.scalars):
            self.scalars.append((name, int(value)))
        return name

    def wrap(self, body: str) -> str:
        """The node's C: ``body`` itself, or a call of the shared function holding it.

        Inline (``specialized``), each table is named once outside the preprocessor branches:
        a build links only its path's tables, and the other path's would be static constants
        never read (-Wunused-const-variable); the cast is no read, so they are still dropped."""
        if not self.enabled:
            return "".join(f"(void){sym};\n" for _, sym in self.tables) + body
        decls = [d for d, _ in self.ptrs]
        args = [a for _, a in self.ptrs]
        for i, (ctype, sym) in enumerate(self.tables):
            body = re.sub(rf"\b{re.escape(sym)}\b", f"t{i}", body)
            decls.append(f"const {ctype} *restrict t{i}")
            args.append(sym)
        for name, value in self.scalars:
            decls.append(f"int32_t {name}")
            args.append(str(value))
        names = [re.findall(r"\w+$", d)[0] for d in decls]
        code = "".join(f"(void){n};\n" for n in names) + body
        sig = ", ".join(decls)
        digest = hashlib.sha1((sig + "\n" + code).encode()).hexdigest()[:10]
        fname = f"{self.prefix}_{digest}"
        text = (f"static void {fname}({sig})\n{{\n"
                + "".join(("    " + ln if ln and not ln.startswith("#") else ln) + "\n"
                          for ln in code.rstrip("\n").split("\n"))
                + "}")
        self.ctx.helper(fname, text)
        return f"{fname}({', '.join(args)});\n"
