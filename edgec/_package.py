"""What edgec knows about its own installation: the version and where its data files are.

Data files (``templates/``, ``targets/``, ``firmware/``) sit at the repository root in a checkout
and under ``edgec/share/`` (templates: ``edgec/templates/``) in an installed wheel.
"""

from __future__ import annotations

from pathlib import Path

from edgec.errors import EdgecError

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent


def data_path(relative: str) -> Path:
    """The installed data file or directory ``relative`` (e.g. ``"firmware/mpc/edgec_mpc.c"``):
    ``edgec/share/<relative>`` (``edgec/<relative>`` for templates) or ``<checkout>/<relative>``.
    Raises EdgecError naming it when the installation lacks it."""
    for cand in (_HERE / "share" / relative, _HERE / relative, _HERE.parent / relative):
        if cand.exists():
            return cand
    raise EdgecError(f"edgec installation is broken: {relative} not found")
