"""User-facing errors: each one becomes a single line on stderr and exit status 2."""

from __future__ import annotations


class EdgecError(Exception):
    """An error caused by the user's input (model file, options), not by edgec itself."""

    exit_code = 2


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
