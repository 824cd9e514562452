"""edgec: compile small trained neural networks to fast, dependency-free C."""

from __future__ import annotations

from edgec._package import __version__
from edgec.api import CompiledModel, compile

__all__ = ["CompiledModel", "__version__", "compile"]
