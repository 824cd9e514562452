"""TFLite Micro's smallest working tensor arena for a .tflite model (the `tflite-micro` wheel).

TFLite Micro plans every tensor of a model (inputs and outputs included) plus its own
bookkeeping (tensor structs, node data, scratch buffers) in one arena the application hands
it. ``smallest_arena`` finds the smallest ``arena_size`` with which the interpreter allocates
and runs the model, by bisection over probes in subprocesses (too small an arena can crash the
process instead of raising). ``recorded_arena`` is the interpreter's own report
(``print_allocations``: "Arena allocation total N bytes", written to the C-level stderr) with a
generous arena, where the bisection starts.

    python -m bench.tflm model.tflite
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from edgec.frontend.tflite.reader import read_tflite

#: the probe: allocate with the given arena, run once on zeros, exit 0 (any failure: non-zero)
_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
blob = open(sys.argv[1], "rb").read()
n_inputs = int(sys.argv[3])


def run(arena):
    it = runtime.Interpreter.from_bytes(blob, arena_size=arena)
    for i in range(n_inputs):
        d = it.get_input_details(i)
        it.set_input(np.zeros(d["shape"], d["dtype"]), i)
    it.invoke()
    return it


if sys.argv[2] == "bisect":  # lo fails, hi works: bisect, one line per probe
    lo, hi = int(sys.argv[4]), int(sys.argv[5])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        print("try", mid, flush=True)
        try:
            run(mid)
        except Exception:  # noqa: BLE001 - any failure means too small
            print("fail", mid, flush=True)
            lo = mid
        else:
            print("ok", mid, flush=True)
            hi = mid
else:
    it = run(int(sys.argv[2]))
    if len(sys.argv) > 4:
        it.print_allocations()
"""

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


def _input_count(path: Path) -> int:
    return len(read_tflite(path).subgraphs[0].inputs)


def _probe(path: Path, arena: int, report: bool = False) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-c", _PROBE, str(path), str(arena), str(_input_count(path))]
    args += ["report"] if report else []
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def works(path: Path, arena: int) -> bool:
    """Whether TFLite Micro allocates and runs the model in an arena of ``arena`` bytes."""
    return _probe(path, arena).returncode == 0


def recorded_arena(path: Path, arena: int = 1 << 22) -> int:
    """The arena total TFLite Micro reports after allocating the model in a large arena."""
    res = _probe(path, arena, report=True)
    m = _TOTAL.search(res.stderr + res.stdout)
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"TFLite Micro cannot run {path}: {res.stderr.strip()[-400:]}")
    return int(m.group(1))


def smallest_arena(model: bytes | Path) -> int:
    """The smallest ``arena_size`` (bytes) with which TFLite Micro runs the model."""
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, bytes):
            path = Path(tmp) / "model.tflite"
            path.write_bytes(model)
        else:
            path = Path(model)
        hi = recorded_arena(path)  # alignment slack can make it fail: grow until it works
        while not works(path, hi):
            hi = hi + max(64, hi // 8)
        lo = 0  # the bisection keeps works(hi) and not works(lo)
        while hi - lo > 1:  # a probe that crashes its process ends that process's bisection
            args = [sys.executable, "-c", _PROBE, str(path), "bisect", str(_input_count(path)),
                    str(lo), str(hi)]
            res = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
            tried = None
            for line in res.stdout.split("\n"):
                word, _, num = line.partition(" ")
                if word == "try":
                    tried = int(num)
                elif word == "ok":
                    hi, tried = int(num), None
                elif word == "fail":
                    lo, tried = int(num), None
            if tried is not None:  # it crashed on this one
                lo = tried
            elif res.returncode != 0:
                raise RuntimeError(f"TFLite Micro probe failed: {res.stderr.strip()[-400:]}")
        return hi


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for p in args.models:
        print(f"{p}: recorded {recorded_arena(p)} B, smallest working arena {smallest_arena(p)} B")


if __name__ == "__main__":
    main()
