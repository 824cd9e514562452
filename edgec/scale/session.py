"""Starting Ray on this machine, or joining a cluster; a one-line error when Ray is missing."""

from __future__ import annotations

import os
from typing import Any

from edgec.errors import EdgecError

INSTALL = "pip install 'edgec[scale]'"


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EdgecError(f"this command runs on Ray, which is not installed: {INSTALL}") from None
    return ray


def require_tune() -> Any:
    require_ray()
    try:
        from ray import tune
    except ImportError:
        raise EdgecError(f"edgec tune needs Ray Tune (ray[tune]): {INSTALL}") from None
    return tune


def local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def start(address: str | None = None, workers: int | None = None) -> tuple[Any, bool]:
    """Ray, started or joined: ``address`` None starts a local Ray sized to ``workers`` (default:
    this machine's cores); ``"auto"`` or ``"ray://HOST:PORT"`` joins a running cluster. An
    already initialised Ray (a test session, a notebook) is reused. Returns (ray, started): the
    caller shuts Ray down when it started it."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    if address is not None and workers is not None:
        raise EdgecError("--workers sizes a local Ray; a cluster (--address) has its own size")
    kw: dict[str, Any] = {
        "include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
        "configure_logging": True,
    }
    try:
        if address is None:
            n = workers if workers is not None else local_cpus()
            if n < 1:
                raise EdgecError(f"--workers must be at least 1 (got {n})")
            ray.init(num_cpus=n, **kw)
        else:
            ray.init(address=address, **kw)
    except EdgecError:
        raise
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise EdgecError(
            f"cannot start {where} ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})"
        ) from None
    return ray, True


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
