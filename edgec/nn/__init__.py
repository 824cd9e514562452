"""The PyTorch modules users import and edgec compiles natively, keeping their structure.

- :mod:`edgec.nn.lif`: ``LIF`` (leaky integrate-and-fire with surrogate gradients, optional
  synaptic current, adaptive threshold) and ``LeakyIntegrator``; ``reset_states(module)``.
- :mod:`edgec.nn.phm`: reference parameterized-hypercomplex layers ``PHMLinear``/``PHConv``,
  written the way the PHNN paper's code writes them.
- :mod:`edgec.nn.lsm`: liquid-state-machine ``Reservoir`` from edgec's seeded generator,
  ``LSMClassifier`` and ``fit_readout``.

May import: torch, numpy, ``edgec.ops`` (the LSM generator shared with the C). Importing this
package imports torch. The front-end recognises these classes in
``edgec.frontend.pytorch.lib_*``.
"""

from __future__ import annotations

from edgec.nn.lif import LIF, RESETS, SURROGATES, LeakyIntegrator, reset_states, spike

__all__ = ["LIF", "RESETS", "SURROGATES", "LeakyIntegrator", "reset_states", "spike"]
