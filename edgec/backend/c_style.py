"""Shared clean-up of generated C (MISRA C:2012 style), applied to every kernel and helper:

- identity arithmetic dropped (``n + 0``, ``0 + n``, ``n - 0``, ``n * 1``, ``1 * n``, ``n / 1``,
  ``0 * n`` on integer literals), and parentheses around a single name or number;
- loops that run once (``for (int m = 0; m < 1; ++m) S``) replaced by ``S`` with ``m`` as 0;
- the operands of binary operators parenthesized where they bind tighter (``a * b + c`` →
  ``(a * b) + c``, rule 12.1), the conditions of ``?:`` too;
- the bodies of ``for``/``while``/``if``/``else`` in braces (rule 15.6);
- the unused results of ``memcpy``/``memset``/``memmove`` cast to void (rule 17.7).

The rewriting works on tokens and parses expressions with C's precedences; any statement it
does not understand (declarations of functions, inline assembly, strings) is left as it was.
Preprocessor lines and comments are kept verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<comment>/\*.*?\*/|//[^\n]*)
    |(?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
    |(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[uUlLfF]*|0[xX][0-9a-fA-F]+[uUlL]*)
    |(?P<id>[A-Za-z_]\w*)
    |(?P<op><<=|>>=|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^]=|[-+*/%&|^!~<>=?:;,.(){}\[\]])
    """,
    re.S | re.X,
)

_TYPE_WORDS = {"const", "static", "volatile", "unsigned", "signed", "float", "double", "int",
               "char", "short", "long", "void", "restrict", "register"}
_CONTROL = {"for", "while", "if", "switch"}
_SKIP_WORDS = {"return", "else", "do", "break", "continue", "case", "default", "goto"}
_BINARY = {
    "*": 12, "/": 12, "%": 12, "+": 11, "-": 11, "<<": 10, ">>": 10,
    "<": 9, ">": 9, "<=": 9, ">=": 9, "==": 8, "!=": 8, "&": 7, "^": 6, "|": 5,
    "&&": 4, "||": 3,
}
_ASSIGN = {"=", "+=", "-=", "*=", "/=", "%=", "<<=", ">>=", "&=", "^=", "|="}
_PREFIX = {"-", "+", "!", "~", "*", "&", "++", "--"}
#: calls whose result (the destination pointer) is of no use: cast to void (rule 17.7)
_DISCARDED = {"memcpy", "memset", "memmove"}


@dataclass
class Tok:
    kind: str  # ws, comment, pp, str, num, id, op
    text: str


class _ParseError(Exception):
    pass


def tokenize(code: str) -> list[Tok]:
    """Tokens of ``code``; a preprocessor line (with its continuations) is one ``pp`` token."""
    out: list[Tok] = []
    pos = 0
    n = len(code)
    while pos < n:
        line_start = pos == 0 or code[pos - 1] == "\n"
        if line_start:
            m = re.match(r"[ \t]*#", code[pos:])
            if m:
                end = pos
                while True:
                    nl = code.find("\n", end)
                    if nl < 0:
                        end = n
                        break
                    if code[nl - 1] == "\\":
                        end = nl + 1
                        continue
                    end = nl
                    break
                out.append(Tok("pp", code[pos:end]))
                pos = end
                continue
        m = _TOKEN.match(code, pos)
        if m is None:
            raise ValueError(f"cannot tokenize C at {code[pos:pos + 20]!r}")
        kind = m.lastgroup or "op"
        end = m.end()
        if kind == "ws" and "\n" in m.group():
            end = pos + m.group().rindex("\n") + 1  # the next line may be a preprocessor line
        out.append(Tok(kind, code[pos:end]))
        pos = end
    return out


def _is_type_word(t: Tok) -> bool:
    return t.kind == "id" and (t.text in _TYPE_WORDS or t.text.endswith("_t"))


# -- expressions ---------------------------------------------------------------------------
@dataclass
class _Node:
    lo: int  # first significant token (index into the significant list)
    hi: int  # one past the last
    prec: int = 16  # 16: primary/unary/postfix; 2: ?:, 1: assignment, 0: comma
    op: str = ""
    kids: tuple[_Node, ...] = ()
    parens: bool = False  # the whole node is one parenthesized group


class _Parser:
    def __init__(self, toks: list[Tok], sig: list[int], lo: int, hi: int):
        self.t, self.sig, self.i, self.hi = toks, sig, lo, hi

    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.t[self.sig[j]] if j < self.hi else None

    def text(self, k: int = 0) -> str:
        p = self.peek(k)
        return p.text if p is not None else ""

    def expect(self, s: str) -> None:
        if self.text() != s:
            raise _ParseError(s)
        self.i += 1

    def expr(self) -> _Node:  # comma expression
        lo = self.i
        first = self.assign()
        if self.text() != ",":
            return first
        kids = [first]
        while self.text() == ",":
            self.i += 1
            kids.append(self.assign())
        return _Node(lo, self.i, 0, ",", tuple(kids))

    def assign(self) -> _Node:
        lo = self.i
        lhs = self.ternary()
        if self.text() in _ASSIGN:
            op = self.text()
            self.i += 1
            rhs = self.assign()
            return _Node(lo, self.i, 1, op, (lhs, rhs))
        return lhs

    def ternary(self) -> _Node:
        lo = self.i
        cond = self.binary(3)
        if self.text() != "?":
            return cond
        self.i += 1
        a = self.expr()
        self.expect(":")
        b = self.ternary()
        return _Node(lo, self.i, 2, "?", (cond, a, b))

    def binary(self, min_prec: int) -> _Node:
        lo = self.i
        left = self.unary()
        while True:
            op = self.text()
            p = _BINARY.get(op)
            if p is None or p < min_prec or self.peek() is None or self.peek().kind != "op":
                return left
            self.i += 1
            right = self.binary(p + 1)
            left = _Node(lo, self.i, p, op, (left, right))

    def _cast_ahead(self) -> bool:
        """``(`` type words and ``*`` ``)``: a cast or sizeof's type."""
        if self.text() != "(":
            return False
        k = 1
        seen = False
        while True:
            p = self.peek(k)
            if p is None:
                return False
            if _is_type_word(p):
                seen = True
            elif p.text != "*":
                return seen and p.text == ")"
            k += 1

    def unary(self) -> _Node:
        lo = self.i
        tok = self.peek()
        if tok is None:
            raise _ParseError("end")
        if tok.kind == "op" and tok.text in _PREFIX:
            self.i += 1
            kid = self.unary()
            return _Node(lo, self.i, 16, "u" + tok.text, (kid,))
        if tok.text == "sizeof":
            self.i += 1
            if self._cast_ahead():
                while self.text() != ")":
                    self.i += 1
                self.i += 1
                return _Node(lo, self.i, 16, "sizeof")
            kid = self.unary()
            return _Node(lo, self.i, 16, "sizeof", (kid,))
        if self._cast_ahead():
            while self.text() != ")":
                self.i += 1
            self.i += 1
            kid = self.unary()
            return _Node(lo, self.i, 16, "cast", (kid,))
        return self.postfix()

    def postfix(self) -> _Node:
        lo = self.i
        node = self.primary()
        while True:
            s = self.text()
            if s == "[":
                self.i += 1
                idx = self.expr()
                self.expect("]")
                node = _Node(lo, self.i, 16, "[]", (node, idx))
            elif s == "(":
                self.i += 1
                args: list[_Node] = []
                if self.text() != ")":
                    args.append(self.assign())
                    while self.text() == ",":
                        self.i += 1
                        args.append(self.assign())
                self.expect(")")
                node = _Node(lo, self.i, 16, "call", (node, *args))
            elif s in (".", "->"):
                self.i += 1
                if self.peek() is None or self.peek().kind != "id":
                    raise _ParseError("member")
                self.i += 1
                node = _Node(lo, self.i, 16, "member", (node,))
            elif s in ("++", "--"):
                self.i += 1
                node = _Node(lo, self.i, 16, "post", (node,))
            else:
                return node

    def primary(self) -> _Node:
        lo = self.i
        tok = self.peek()
        if tok is None:
            raise _ParseError("end")
        if tok.kind in ("id", "num") and not _is_type_word(tok) and tok.text not in _CONTROL \
                and tok.text not in _SKIP_WORDS:
            self.i += 1
            return _Node(lo, self.i, 16, "atom")
        if tok.text == "(":
            self.i += 1
            inner = self.expr()
            self.expect(")")
            return _Node(lo, self.i, 16, "paren", (inner,), parens=True)
        if tok.text == "{":  # brace initializer
            self.i += 1
            kids: list[_Node] = []
            while self.text() != "}":
                kids.append(self.assign())
                if self.text() == ",":
                    self.i += 1
                elif self.text() != "}":
                    raise _ParseError("init")
            self.i += 1
            return _Node(lo, self.i, 16, "init", tuple(kids))
        raise _ParseError(tok.text)


def _no_side_effects(toks: list[Tok], sig: list[int], n: _Node) -> bool:
    return not any(toks[sig[j]].text in ("(", "++", "--", "=") or toks[sig[j]].text in _ASSIGN
                   for j in range(n.lo, n.hi))


def _literal(toks: list[Tok], sig: list[int], n: _Node, value: str) -> bool:
    return n.op == "atom" and n.hi == n.lo + 1 and toks[sig[n.lo]].text == value


class _Edit:
    """Token edits of one pass: deletions and insertions before/after significant tokens."""

    def __init__(self) -> None:
        self.delete: set[int] = set()  # significant positions
        self.before: dict[int, str] = {}
        self.after: dict[int, str] = {}
        self.replace: dict[int, str] = {}


def _simplify(toks: list[Tok], sig: list[int], n: _Node, ed: _Edit) -> bool:
    """One identity rewrite in ``n``'s tree (the first found); True when one was made."""
    if n.op in ("+", "-", "*", "/") and len(n.kids) == 2:
        a, b = n.kids
        drop: tuple[int, int] | None = None  # significant range to delete
        if n.op in ("+", "-") and _literal(toks, sig, b, "0"):
            drop = (a.hi, b.hi)
        elif n.op == "+" and _literal(toks, sig, a, "0"):
            drop = (a.lo, b.lo)
        elif n.op in ("*", "/") and _literal(toks, sig, b, "1"):
            drop = (a.hi, b.hi)
        elif n.op == "*" and _literal(toks, sig, a, "1"):
            drop = (a.lo, b.lo)
        elif n.op == "*" and _literal(toks, sig, a, "0") and _no_side_effects(toks, sig, b):
            drop = (a.hi, b.hi)
        elif n.op == "*" and _literal(toks, sig, b, "0") and _no_side_effects(toks, sig, a):
            drop = (a.lo, b.lo)
        if drop is not None:
            ed.delete.update(range(*drop))
            return True
    if n.op == "paren" and n.kids[0].op == "atom" and (  # (n) → n; not sizeof(n), f (n)
            n.lo == 0 or toks[sig[n.lo - 1]].kind != "id"):
        ed.delete.update((n.lo, n.hi - 1))
        return True
    return any(_simplify(toks, sig, k, ed) for k in n.kids)


def _wrap(n: _Node, ed: _Edit) -> None:
    ed.before[n.lo] = ed.before.get(n.lo, "") + "("
    ed.after[n.hi - 1] = ")" + ed.after.get(n.hi - 1, "")


def _parenthesize(n: _Node, ed: _Edit, toks: list[Tok], sig: list[int]) -> None:
    """Rule 12.1: an operand of a binary operator (or ?:) that binds tighter gets parentheses.
    Rule 10.4: an integer literal times ``sizeof`` becomes unsigned (``sizeof(float) * 8u``)."""
    if n.op == "*" and any(k.op == "sizeof" for k in n.kids):
        for k in n.kids:
            if k.op == "atom" and re.fullmatch(r"\d+", toks[sig[k.lo]].text):
                ed.replace[k.lo] = toks[sig[k.lo]].text + "u"
    if 2 <= n.prec <= 12:
        for k in n.kids:
            if n.prec < k.prec <= 12 and not k.parens:
                _wrap(k, ed)
    for k in n.kids:
        _parenthesize(k, ed, toks, sig)


# -- statements ----------------------------------------------------------------------------
class _Rewriter:
    def __init__(self, code: str):
        self.toks = tokenize(code)
        self.sig = [i for i, t in enumerate(self.toks) if t.kind not in ("ws", "comment")]

    def s(self, j: int) -> str:
        return self.toks[self.sig[j]].text if j < len(self.sig) else ""

    def kind(self, j: int) -> str:
        return self.toks[self.sig[j]].kind if j < len(self.sig) else ""

    def match(self, j: int) -> int:
        """Index of the bracket closing the one at ``j``."""
        opening = self.s(j)
        closing = {"(": ")", "[": "]", "{": "}"}[opening]
        depth = 0
        for k in range(j, len(self.sig)):
            if self.s(k) == opening:
                depth += 1
            elif self.s(k) == closing:
                depth -= 1
                if depth == 0:
                    return k
        raise _ParseError("unbalanced")

    def stmt_end(self, j: int) -> int:
        """One past the statement starting at significant index ``j``."""
        s = self.s(j)
        if s == "{":
            return self.match(j) + 1
        if s in ("for", "while", "switch"):
            return self.stmt_end(self.match(j + 1) + 1)
        if s == "if":
            end = self.stmt_end(self.match(j + 1) + 1)
            if self.s(end) == "else":
                end = self.stmt_end(end + 1)
            return end
        k = j
        depth = 0
        while k < len(self.sig):
            t = self.s(k)
            if self.kind(k) == "pp":
                raise _ParseError("pp in statement")
            if t in ("(", "[", "{"):
                depth += 1
            elif t in (")", "]", "}"):
                depth -= 1
            elif t == ";" and depth == 0:
                return k + 1
            k += 1
        raise _ParseError("no ;")

    # expressions of one statement span [lo, hi)
    def expr_span(self, lo: int, hi: int, simplify: bool, ed: _Edit) -> bool:
        j = lo
        while j < hi and (_is_type_word(self.toks[self.sig[j]]) or self.s(j) in _SKIP_WORDS):
            j += 1
            while j < hi and self.s(j) in ("*",) and self.s(lo) not in _SKIP_WORDS:
                j += 1
        if j >= hi:
            return False
        p = _Parser(self.toks, self.sig, j, hi)
        node = p.expr()
        if p.i != hi:
            raise _ParseError("trailing")
        if simplify:
            return _simplify(self.toks, self.sig, node, ed)
        _parenthesize(node, ed, self.toks, self.sig)
        return False

    def walk(self, lo: int, hi: int, mode: str, ed: _Edit) -> bool:
        """Rewrites statements in [lo, hi); ``mode``: simplify, loops, parens or braces.
        Returns True when ``simplify``/``loops`` changed something (one change per pass)."""
        j = lo
        while j < hi:
            t = self.s(j)
            if self.kind(j) == "pp" or t in (";", "}"):
                j += 1
                continue
            if t == "{":
                if self.walk(j + 1, self.match(j), mode, ed):
                    return True
                j = self.match(j) + 1
                continue
            if t == "else":
                if self.s(j + 1) == "if":  # else if: a chain, not a body to brace
                    j += 1
                    continue
                j = self._body(j + 1, mode, ed)
                if j < 0:
                    return True
                continue
            if t in _CONTROL:
                close = self.match(j + 1)
                if t == "for" and mode == "loops" and self._once(j, close, ed):
                    return True
                try:
                    if t == "for":
                        parts = self._split_for(j + 2, close)
                        for a, b in parts:
                            if a < b and self.expr_span(a, b, mode == "simplify", ed):
                                return True
                    elif mode in ("simplify", "parens") and self.expr_span(
                            j + 2, close, mode == "simplify", ed):
                        return True
                except _ParseError:
                    pass
                j = self._body(close + 1, mode, ed)
                if j < 0:
                    return True
                continue
            brace = self._definition_body(j)
            if brace is not None:  # a function definition: its body's statements
                if self.walk(brace + 1, self.match(brace), mode, ed):
                    return True
                j = self.match(brace) + 1
                continue
            try:
                end = self.stmt_end(j)
            except _ParseError:
                return False
            if mode == "parens" and self.s(j) in _DISCARDED and self.s(j + 1) == "(":
                ed.before[j] = ed.before.get(j, "") + "(void)"  # rule 17.7
            if mode in ("simplify", "parens") and not any(
                    self.kind(k) in ("str", "pp") or self.s(k) in ("__asm__", "asm")
                    for k in range(j, end)):
                try:
                    if self.expr_span(j, end - 1, mode == "simplify", ed):
                        return True
                except _ParseError:
                    pass
            j = end
        return False

    def _definition_body(self, j: int) -> int | None:
        """The ``{`` of a function definition starting at ``j`` (``... ) {``), else None."""
        depth = 0
        for k in range(j, len(self.sig)):
            t = self.s(k)
            if self.kind(k) == "pp" or t == ";":
                return None
            if t in ("(", "["):
                depth += 1
            elif t in (")", "]"):
                depth -= 1
            elif t == "{" and depth == 0:
                return k if k > j and self.s(k - 1) == ")" else None
        return None

    def _body(self, j: int, mode: str, ed: _Edit) -> int:
        """The body of a control statement at ``j``; braces it (mode ``braces``). Returns the
        index after it, or -1 when a one-change mode changed something."""
        end = self.stmt_end(j)
        if mode == "braces" and self.s(j) != "{":
            ed.before[j] = ed.before.get(j, "") + "{ "
            ed.after[end - 1] = ed.after.get(end - 1, "") + " }"
        if self.walk(j, end, mode, ed):
            return -1
        return end

    def _split_for(self, lo: int, hi: int) -> list[tuple[int, int]]:
        parts = []
        a = lo
        depth = 0
        for k in range(lo, hi):
            t = self.s(k)
            if t in ("(", "[", "{"):
                depth += 1
            elif t in (")", "]", "}"):
                depth -= 1
            elif t == ";" and depth == 0:
                parts.append((a, k))
                a = k + 1
        parts.append((a, hi))
        return parts

    def _once(self, j: int, close: int, ed: _Edit) -> bool:
        """``for (int v = 0; v < 1; ++v) S`` → ``S`` with ``v`` replaced by 0."""
        head = [self.s(k) for k in range(j + 2, close)]
        if len(head) != 11 or head[0] != "int" or head[2:4] != ["=", "0"]:
            return False
        v = head[1]
        if head[3:] != ["0", ";", v, "<", "1", ";", "++", v] and \
                head[3:] != ["0", ";", v, "<", "1", ";", v, "++"]:
            return False
        body_lo = close + 1
        body_hi = self.stmt_end(body_lo)
        uses = [k for k in range(body_lo, body_hi) if self.s(k) == v]
        for k in uses:  # no redeclaration, no member named v, no assignment to v
            prev = self.toks[self.sig[k - 1]]
            declared = _is_type_word(prev) or (
                prev.text == "*" and _is_type_word(self.toks[self.sig[k - 2]]))
            member = prev.text in (".", "->")
            written = self.s(k + 1) in _ASSIGN | {"++", "--"} or prev.text in ("++", "--", "&")
            if declared or member or written:
                return False
        ed.delete.update(range(j, close + 1))
        for k in uses:
            ed.replace[k] = "0"
        return True

    def render(self, ed: _Edit) -> str:
        pos_of = {ti: si for si, ti in enumerate(self.sig)}
        closers = {")", "]", ";", ","}
        out: list[str] = []
        after_deleted = False
        for ti, tok in enumerate(self.toks):
            si = pos_of.get(ti)
            if si is None:
                joined = not out or out[-1][-1:].isspace() or out[-1][-1:] in ("(", "[")
                if not (after_deleted and joined and tok.kind == "ws" and "\n" not in tok.text):
                    out.append(tok.text)
                continue
            if si in ed.delete:
                nxt = next((k for k in range(si + 1, len(self.sig)) if k not in ed.delete),
                           None)
                if nxt is not None and self.s(nxt) in closers and out and out[-1].isspace() \
                        and "\n" not in out[-1]:
                    out.pop()  # "n + 0]" -> "n]"
                after_deleted = True
                continue
            after_deleted = False
            out.append(ed.before.get(si, ""))
            out.append(ed.replace.get(si, tok.text))
            out.append(ed.after.get(si, ""))
        return "".join(out)


def _pass(code: str, mode: str) -> tuple[str, bool]:
    rw = _Rewriter(code)
    ed = _Edit()
    try:
        changed = rw.walk(0, len(rw.sig), mode, ed)
    except _ParseError:
        return code, False
    if mode in ("simplify", "loops") and not changed:
        return code, False
    return rw.render(ed), changed


def normalize(code: str) -> str:
    """``code`` with the rewrites of this module applied (see the module docstring)."""
    for mode in ("loops", "simplify"):
        for _ in range(1000):
            code, changed = _pass(code, mode)
            if not changed:
                break
        else:
            raise RuntimeError(f"c_style: {mode} does not settle")
    code, _ = _pass(code, "braces")
    code, _ = _pass(code, "parens")
    return code
