"""User-facing errors: each one becomes a single line on stderr and exit status 2."""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a name read from a damaged file may hold a
    newline), so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class EdgecError(Exception):
    """An error caused by the user's input (model file, options), not by edgec itself; its
    message is one line (control characters in it are escaped)."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


class UnsupportedOpError(EdgecError):
    """An op (or an attribute combination) edgec cannot compile."""


def ops_hint(frontend: str | None = None) -> str:
    """Where an unsupported-op error sends the user: the ``edgec ops`` listing and its page."""
    flag = f" --frontend {frontend}" if frontend else ""
    return f"run 'edgec ops{flag}' for what is supported (docs/ops.md)"


class MalformedOperatorError(EdgecError):
    """An operator whose inputs or options do not fit together (numpy refused to fold or
    reshape them): a corrupt or inconsistent file, or an edgec bug; the message names the file,
    the operator and what numpy said, and asks for a report when the file is valid."""


class ShapeError(EdgecError):
    """A shape that cannot be resolved statically."""


class ModelTooBigError(EdgecError):
    """The compiled model does not fit the target's flash or RAM."""


class ToolchainError(EdgecError):
    """A compiler or emulator that edgec needs is missing or failed."""


class EdgecWarning(UserWarning):
    """Something the user should know that does not stop the compile (one line on stderr)."""
