"""edgec: compile small trained neural networks to fast, dependency-free C."""

from __future__ import annotations

__version__ = "0.1.0"

from edgec.api import CompiledModel, compile  # noqa: E402

__all__ = ["CompiledModel", "__version__", "compile"]
