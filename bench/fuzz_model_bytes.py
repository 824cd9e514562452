"""Byte-level mutation fuzzing of the file front-ends: corrupt files must never crash edgec.

``python -m bench.fuzz_model_bytes MODEL.tflite|MODEL.onnx [...] --mutations 1000 --seed S
[--failures DIR]`` takes valid ``.tflite`` or ``.onnx`` files, damages copies of them (random
bytes, one overwritten 32-bit word - zero, all ones, 1, 2^31 or random -, or a truncation) and
compiles each copy from a file with :func:`edgec.compile`, as ``edgec compile`` does. Every
copy must either compile (the damage hit weight bytes or metadata) or be refused with a
one-line :class:`~edgec.errors.EdgecError`. Anything else is a bug, counted by kind:
``internal`` (another exception: the CLI would print "internal error"), ``multiline`` (an
error message over several lines), ``runtime_warning`` (numpy computed with NaN/inf/overflow:
a damaged value went through unchecked) and ``timeout``. The exit status is 1 when there is
one.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import edgec
from edgec.errors import EdgecError

#: outcomes that are bugs
BUGS = ("internal", "multiline", "runtime_warning", "timeout")

#: the 32-bit words a damaged offset, count or index is most likely to trip over
WORDS = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x00\x00\x00", b"\x00\x00\x00\x80")


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A damaged copy of ``data`` (the 8-byte header with the file identifier is kept) and a
    description of the damage."""
    d = bytearray(data)
    kind = rng.choice(("bytes", "bytes", "word", "truncate"))
    if kind == "bytes":
        n = rng.choice((1, 2, 4, 16))
        for _ in range(n):
            d[rng.randrange(8, len(d))] = rng.randrange(256)
        return bytes(d), f"{n} random byte(s)"
    if kind == "word":
        at = rng.randrange(8, len(d) - 4) & ~3
        word = rng.choice((*WORDS, bytes(rng.randrange(256) for _ in range(4))))
        d[at:at + 4] = word
        return bytes(d), f"word {word.hex()} at {at}"
    cut = rng.randrange(8, len(d))
    return bytes(d[:cut]), f"truncated to {cut} bytes"


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def classify(data: bytes, suffix: str = ".tflite", timeout_s: int = 60) -> tuple[str, str]:
    """('ok' | 'refused' | a bug kind, detail) for compiling ``data`` as a ``suffix`` file."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    tmp = tempfile.TemporaryDirectory(prefix="edgec_fuzz_bytes_")
    path = Path(tmp.name) / f"m{suffix}"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            edgec.compile(path, name="m")
        numeric = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        if numeric:
            return "runtime_warning", str(numeric[0].message)
        return "ok", ""
    except _Timeout:
        return "timeout", f"no answer in {timeout_s} s"
    except EdgecError as exc:
        msg = str(exc)
        return ("multiline", msg) if "\n" in msg else ("refused", msg)
    except Exception as exc:  # noqa: BLE001 - what this fuzzer looks for
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "internal", (f"{type(exc).__name__}: {str(exc)[:200]} "
                            f"({Path(where.filename).name}:{where.lineno})")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        tmp.cleanup()


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    bugs: list[tuple[int, str, str, str, str]] = field(default_factory=list)  # i, model, damage,
    # kind, detail

    @property
    def ok(self) -> bool:
        return not self.bugs


def run(models: Mapping[str, bytes], mutations: int, seed: int,
        failures: Path | None = None, timeout_s: int = 60) -> Report:
    """Compile ``mutations`` damaged copies of ``models`` (name → file contents; the name's
    suffix says the format, .tflite without one), drawn with ``seed``."""
    rng = random.Random(seed)
    names = sorted(models)
    rep = Report()
    for i in range(mutations):
        name = rng.choice(names)
        data, damage = mutate(models[name], rng)
        kind, detail = classify(data, Path(name).suffix or ".tflite", timeout_s)
        rep.counts[kind] += 1
        if kind in BUGS:
            rep.bugs.append((i, name, damage, kind, detail))
            if failures is not None:
                failures.mkdir(parents=True, exist_ok=True)
                suffix = Path(name).suffix or ".tflite"
                (failures / f"{seed}_{i}_{Path(name).stem}{suffix}").write_bytes(data)
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="valid .tflite/.onnx files to damage")
    ap.add_argument("--mutations", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=60, help="seconds per compile")
    ap.add_argument("--failures", type=Path, help="directory for the copies that found a bug")
    args = ap.parse_args(argv)
    models = {str(p): p.read_bytes() for p in args.models}
    rep = run(models, args.mutations, args.seed, args.failures, args.timeout)
    print(f"{'outcome':<16} {'count':>6}")
    for kind in ("ok", "refused", *BUGS):
        print(f"{kind:<16} {rep.counts[kind]:>6}")
    for i, name, damage, kind, detail in rep.bugs:
        print(f"#{i} {name} ({damage}): {kind}: {detail}")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
