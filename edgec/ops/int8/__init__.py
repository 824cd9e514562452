"""The int8 ops (docs/int8.md): TFLite's integer kernels, bit-exact to its reference kernels.

Every module here registers its ops on import (``edgec.ops`` imports this package); the shared
fixed-point arithmetic (QuantizeMultiplier, MultiplyByQuantizedMultiplier, gemmlowp's rounding
helpers) lives in :mod:`edgec.ops.int8.fixedpoint`, numpy and C side by side.
"""

from __future__ import annotations

import importlib
import pkgutil

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}")
