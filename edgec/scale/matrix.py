"""``edgec verify --matrix models/ --targets a,b``: every model x target pair verified on the
target's emulated board (QEMU), each pair a Ray task.

A task receives the model file's bytes (and an ``.onnx.data`` weights file next to it), writes
them where it runs, compiles there and verifies there: no path of the driver's machine is used.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.errors import EdgecError

#: model files a matrix directory may hold (front-ends that read one file)
MODEL_SUFFIXES = (".onnx", ".tflite", ".pt2", ".keras", ".h5")


@dataclass(frozen=True)
class ShippedFile:
    name: str
    data: bytes
    sidecars: tuple[tuple[str, bytes], ...] = ()  # e.g. model.onnx.data

    def write(self, directory: Path) -> Path:
        for n, d in self.sidecars:
            (directory / n).write_bytes(d)
        path = directory / self.name
        path.write_bytes(self.data)
        return path


def find_models(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise EdgecError(f"--matrix {d}: not a directory")
    models = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
    if not models:
        raise EdgecError(f"--matrix {d}: no model files ({', '.join(MODEL_SUFFIXES)}) there")
    return models


def ship(path: Path) -> ShippedFile:
    side = path.with_name(path.name + ".data")
    sidecars = ((side.name, side.read_bytes()),) if side.is_file() else ()
    return ShippedFile(path.name, path.read_bytes(), sidecars)


def verify_pair(model: ShippedFile, target: str, n: int, seed: int, rtol: float,
                atol: float | None) -> dict[str, Any]:
    """Compile and verify one model on one target's emulated board, where the task runs."""
    import edgec
    from edgec.verify.compare import verify

    t0 = time.perf_counter()
    row: dict[str, Any] = {"model": model.name, "target": target}
    with tempfile.TemporaryDirectory(prefix="edgec-matrix-") as tmp:
        try:
            path = model.write(Path(tmp))
            m = edgec.compile(str(path))
            rep = verify(m, str(path), n=n, seed=seed, rtol=rtol, atol=atol, target=target)
            worst = max((o.max_abs_err for o in rep.outputs), default=0.0)
            row |= {"pass": rep.ok, "max_abs_err": worst,
                    "where": rep.where, "error": None}
        except EdgecError as exc:  # named by the model's file name, not the task's scratch path
            text = str(exc).replace(str(Path(tmp) / model.name), model.name)
            row |= {"pass": False, "max_abs_err": None, "where": None,
                    "error": " ".join(text.split())}
        except Exception as exc:  # one broken pair must not stop the matrix
            row |= {"pass": False, "max_abs_err": None, "where": None,
                    "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"}
    row["seconds"] = time.perf_counter() - t0
    row["node"] = os.uname().nodename
    return row


def run_matrix(
    directory: str | Path, targets: list[str], address: str | None = None,
    workers: int | None = None, n: int = 5, seed: int = 0, rtol: float = 1e-4,
    atol: float | None = None,
) -> list[dict[str, Any]]:
    from edgec.mcu.targets import load_target
    from edgec.scale.session import start

    if not targets:
        raise EdgecError("--targets: name at least one target (edgec targets lists them)")
    for t in targets:
        load_target(t)  # an unknown target is an error before any work
    models = find_models(directory)
    ray, started = start(address, workers)
    try:
        task = ray.remote(num_cpus=1)(verify_pair)
        refs = [task.remote(ship(m), t, n, seed, rtol, atol) for m in models for t in targets]
        return list(ray.get(refs))
    finally:
        if started:
            ray.shutdown()


def format_matrix(rows: list[dict[str, Any]]) -> str:
    from edgec.tables import format_table

    table = format_table(
        ["model", "target", "result", "max abs err", "time"],
        [[r["model"], r["target"], "PASS" if r["pass"] else "FAIL",
          "-" if r["max_abs_err"] is None else f"{r['max_abs_err']:.3g}",
          f"{r['seconds']:.1f} s"] for r in rows],
        align="llllr",
    )
    fails = [f"{r['model']} on {r['target']}: {r['error']}" for r in rows if r["error"]]
    ok = sum(r["pass"] for r in rows)
    return "\n".join([table, *fails, f"{ok}/{len(rows)} pairs pass"])
