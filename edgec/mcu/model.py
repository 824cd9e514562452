"""What the MCU tooling needs of a compiled model (``edgec.api.CompiledModel`` has it): the MCU
layer sits below the API, so the API's ``build``/``verify``/``profile`` can reach it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgec.backend.c_emit import CModel
from edgec.ir import Graph


class CompiledLike(Protocol):
    graph: Graph
    cmodel: CModel

    @property
    def name(self) -> str: ...

    @property
    def is_stateful(self) -> bool: ...

    @property
    def output_names(self) -> list[str]: ...

    def report(self) -> dict[str, Any]: ...

    def write(self, directory: str | os.PathLike[str]) -> list[Path]: ...

    def initial_state(self) -> dict[str, np.ndarray]: ...
