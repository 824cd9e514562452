"""Differential fuzzing of the int8 TFLite path from Keras: random small Keras models converted by
TensorFlow's TFLiteConverter to full-integer int8 (int8 ports, and float ports around the same
int8 graph), compiled by edgec and run as C on the host (and, with ``--board``, on an emulated
Cortex-M), compared with the TFLite interpreter's reference kernels.

Each model is built from its own seed (``--seed`` * 1000003 + index), so a model is rebuilt with
``python -m bench.fuzz_keras_int8 --seed S --first I --models 1 --verbose``. Each (model, port
variant) ends in one of:

* ``ok``                  compiled; every output equals the interpreter's: int8 byte for byte,
  float32 (the DEQUANTIZE at a float-port model's end) within ``ATOL + RTOL * |ref|``;
* ``mismatch``            compiled, outputs differ (a bug: exit status 1);
* ``refused``             edgec raised its one-line :class:`edgec.errors.EdgecError`;
* ``converter_error``     TensorFlow's converter failed or crashed (skipped);
* ``interpreter_error``   the interpreter failed or crashed on a model edgec compiled (skipped);
* ``internal``            any other exception from edgec (a bug: exit status 1).

TensorFlow runs in a worker process (its converter can crash the process: a crash is
``converter_error`` and the worker restarts), the interpreter in another (TFLite's kernels
abort the process on some models, e.g. an ADD whose output rescale is not below 1), so this
process never imports TensorFlow.

Usage: ``python -m bench.fuzz_keras_int8 --models 150 --seed 0 [--board cortex-m4f]
[--failures DIR] [--verbose]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from edgec.mcu.targets import list_targets

#: float outputs (a float-port model's final DEQUANTIZE) vs the interpreter (edgec's Dequantize
#: is TFLite's float32 ``s * (q - zp)``; the tolerance is edgec verify's for float outputs)
RTOL, ATOL = 1e-4, 1e-5
VARIANTS = ("int8-io", "float-io")
OUTCOMES = ("ok", "mismatch", "refused", "converter_error", "interpreter_error", "internal")
BAD = ("mismatch", "internal")
N_INPUTS = 3  # random input sets per (model, variant)
N_CALIBRATION = 32

# -- the worker processes ---------------------------------------------------------------------


class WorkerCrash(Exception):
    """The worker process died (a signal) or did not answer in time."""


class Worker:
    """A child process (spawned: no fork of a process holding TensorFlow or threads) serving
    ``handler(request) -> reply`` one request at a time; restarted after it dies."""

    def __init__(self, handler: Callable[[Any], Any], timeout_s: float = 300.0):
        self.handler = handler
        self.timeout_s = timeout_s
        self.proc: Any = None
        self.conn: Connection | None = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, self.handler), daemon=True)
        self.proc.start()
        child.close()

    def call(self, request: Any) -> Any:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        assert self.conn is not None
        try:
            self.conn.send(request)
            if not self.conn.poll(self.timeout_s):
                self.close()
                raise WorkerCrash(f"no answer within {self.timeout_s:g} s")
            return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.proc.join(5)
            code = self.proc.exitcode
            self.close()
            raise WorkerCrash(f"the process died (exit code {code})") from None

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None


def _serve(conn: Connection, handler: Callable[[Any], Any]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        conn.send(handler(request))


# -- random Keras models (in the TensorFlow worker) -------------------------------------------

#: activations whose int8 TFLite kernels edgec implements (RELU/RELU6 fused or alone, TANH,
#: LOGISTIC, LEAKY_RELU, HARD_SWISH). Not drawn: ELU. The converter leaves it float
#: (DEQUANTIZE, ELU, QUANTIZE), and the interpreter has no reference ELU kernel, so the whole
#: model runs on its optimized kernels, whose int8 arithmetic is not the reference kernels' (the
#: contract, docs/int8.md): Dense(12) -> ELU -> Dense(5) with float ports differed on 2 of 20
#: input sets by 1 LSB, the last FULLY_CONNECTED giving 41 where the reference arithmetic (and
#: edgec) gives 40 from the same int8 input codes
ACTIVATIONS = ("relu", "relu6", "tanh", "sigmoid", "leaky_relu", "hard_swish")


@dataclass
class Draw:
    """A random model under construction: the current tensor, its shape without the batch."""

    r: random.Random
    x: Any
    shape: tuple[int, ...]
    desc: list[str] = field(default_factory=list)


def _activation(tf: Any, d: Draw) -> Any:
    L = tf.keras.layers
    name = d.r.choice(ACTIVATIONS)
    d.desc.append(name)
    if name == "relu6":
        return L.ReLU(6.0)
    if name == "leaky_relu":
        return L.LeakyReLU(negative_slope=d.r.choice([0.05, 0.1, 0.3]))
    if name == "hard_swish":
        return L.Activation(tf.keras.activations.hard_swish)
    return L.Activation(name)


def _fused(d: Draw) -> str | None:
    return d.r.choice([None, None, "relu", "relu6"])


def _image_layer(tf: Any, d: Draw, kind: str) -> Any:
    """A layer on an image (H, W, C): conv, depthwise, pool; sets d.shape to its output's."""
    L = tf.keras.layers
    r = d.r
    h, w, c = d.shape
    if kind == "pool":
        k = min(2, h, w)
        pad = r.choice(["valid", "same"])
        cls = r.choice([L.MaxPooling2D, L.AveragePooling2D])
        d.desc.append(f"{cls.__name__}({k},{pad})")
        d.shape = ((-(-h // k), -(-w // k), c) if pad == "same" else (h // k, w // k, c))
        return cls(k, padding=pad)
    k = r.choice([1, 2, 3]) if min(h, w) >= 3 else 1
    s = r.choice([1, 1, 2]) if min(h, w) >= 4 else 1
    pad = r.choice(["valid", "same"])
    act = _fused(d)
    oh, ow = ((-(-h // s), -(-w // s)) if pad == "same" else
              ((h - k) // s + 1, (w - k) // s + 1))
    if kind == "depthwise":
        m = r.choice([1, 1, 2])
        d.desc.append(f"DepthwiseConv2D({k},s{s},{pad},m{m},{act})")
        d.shape = (oh, ow, c * m)
        return L.DepthwiseConv2D(k, s, pad, depth_multiplier=m, activation=act)
    f = r.randint(1, 8)
    d.desc.append(f"Conv2D({f},{k},s{s},{pad},{act})")
    d.shape = (oh, ow, f)
    return L.Conv2D(f, k, s, pad, activation=act)


def _seq_layer(tf: Any, d: Draw, kind: str) -> Any:
    """A layer on a sequence (T, C): Conv1D, pool, a small recurrent layer."""
    L = tf.keras.layers
    r = d.r
    t, c = d.shape
    if kind == "pool":
        k = min(2, t)
        cls = r.choice([L.MaxPooling1D, L.AveragePooling1D])
        d.desc.append(f"{cls.__name__}({k})")
        d.shape = (t // k, c)
        return cls(k)
    if kind == "rnn":
        # unroll=True: TensorFlow 2.21's int8 calibration of the fused sequence LSTM/RNN ops
        # crashes (bench/README.md); unrolled, the steps are FULLY_CONNECTED/ADD/MUL/... builtins
        cls = r.choice([L.SimpleRNN, L.GRU, L.LSTM])
        u, seq = r.randint(1, 6), r.random() < 0.5
        d.desc.append(f"{cls.__name__}({u},seq={seq})")
        d.shape = (t, u) if seq else (u,)
        return cls(u, return_sequences=seq, unroll=True)
    k = min(r.choice([1, 2, 3]), t)
    pad = r.choice(["valid", "same", "causal"])
    f, act = r.randint(1, 8), _fused(d)
    d.desc.append(f"Conv1D({f},{k},{pad},{act})")
    d.shape = (t if pad != "valid" else t - k + 1, f)
    return L.Conv1D(f, k, padding=pad, activation=act)


def _vector_layer(tf: Any, d: Draw) -> Any:
    u, act = d.r.randint(1, 16), d.r.choice([None, None, "relu", "relu6", "tanh", "sigmoid"])
    d.desc.append(f"Dense({u},{act})")
    d.shape = (u,)
    return tf.keras.layers.Dense(u, activation=act)


def _same_shape_branch(tf: Any, d: Draw) -> Any:
    """A layer that keeps the shape (for the two sides of a merge)."""
    L = tf.keras.layers
    if len(d.shape) == 3:
        return L.Conv2D(d.shape[2], d.r.choice([1, 3]), padding="same")
    if len(d.shape) == 2:
        return L.Conv1D(d.shape[1], d.r.choice([1, 3]), padding="same")
    return L.Dense(d.shape[0])


def _merge(tf: Any, d: Draw) -> None:
    """Two branches from the current tensor merged by Add/Subtract/Multiply/Concatenate (one
    branch may be the tensor itself, a residual)."""
    L = tf.keras.layers
    a = _same_shape_branch(tf, d)(d.x)
    b = d.x if d.r.random() < 0.5 else _same_shape_branch(tf, d)(d.x)
    if d.r.random() < 0.3:
        b = _activation(tf, d)(b)
    kind = d.r.choice(["Add", "Subtract", "Multiply", "Concatenate"])
    d.desc.append(kind)
    d.x = getattr(L, kind)()([a, b])
    if kind == "Concatenate":
        d.shape = (*d.shape[:-1], 2 * d.shape[-1])


def _step(tf: Any, d: Draw) -> None:
    """One random layer (or merge) on the current tensor."""
    L = tf.keras.layers
    r = d.r
    rank = len(d.shape)
    if r.random() < 0.15:
        _merge(tf, d)
        return
    if r.random() < 0.15:
        d.x = _activation(tf, d)(d.x)
        return
    if rank == 3:
        kind = r.choice(["conv", "conv", "depthwise", "pool", "gap", "flatten"])
        if kind == "pool" and min(d.shape[:2]) < 2:
            kind = "conv"
        if kind == "gap":
            d.desc.append("GlobalAveragePooling2D")
            d.x, d.shape = L.GlobalAveragePooling2D()(d.x), (d.shape[2],)
        elif kind == "flatten":
            d.desc.append("Flatten")
            d.x, d.shape = L.Flatten()(d.x), (int(np.prod(d.shape)),)
        else:
            d.x = _image_layer(tf, d, kind)(d.x)
    elif rank == 2:
        kind = r.choice(["conv", "conv", "pool", "rnn", "gap", "flatten"])
        if kind == "pool" and d.shape[0] < 2:
            kind = "conv"
        if kind == "gap":
            d.desc.append("GlobalAveragePooling1D")
            d.x, d.shape = L.GlobalAveragePooling1D()(d.x), (d.shape[1],)
        elif kind == "flatten":
            d.desc.append("Flatten")
            d.x, d.shape = L.Flatten()(d.x), (int(np.prod(d.shape)),)
        else:
            d.x = _seq_layer(tf, d, kind)(d.x)
    elif r.random() < 0.15 and d.shape[0] % 2 == 0:
        d.desc.append("Reshape")
        d.shape = (d.shape[0] // 2, 2)
        d.x = L.Reshape(d.shape)(d.x)
    else:
        d.x = _vector_layer(tf, d)(d.x)


def draw_model(seed: int) -> tuple[Any, list[str], float]:
    """The random Keras model of ``seed`` (static batch 1), its layers in words, and the spread
    of its calibration and float inputs (standard deviation)."""
    import tensorflow as tf

    r = random.Random(seed)
    tf.keras.backend.clear_session()  # layer names (in the .tflite) restart: same seed, same bytes
    tf.keras.utils.set_random_seed(seed % (2**31))
    family = r.choice(["image", "image", "sequence", "vector"])
    if family == "image":
        shape: tuple[int, ...] = (r.randint(2, 9), r.randint(2, 9), r.randint(1, 4))
    elif family == "sequence":
        shape = (r.randint(2, 10), r.randint(1, 4))
    else:
        shape = (r.randint(1, 16),)
    inp = tf.keras.Input(shape, batch_size=1)
    d = Draw(r, inp, shape, [f"in{list(shape)}"])
    for _ in range(r.randint(1, 5)):
        _step(tf, d)
    if r.random() < 0.5:
        if len(d.shape) > 1:
            d.desc.append("Flatten")
            d.x = tf.keras.layers.Flatten()(d.x)
        d.x = _vector_layer(tf, d)(d.x)
    model = tf.keras.Model(inp, d.x)
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # random biases (Keras starts them at 0) and weights
        ws = layer.get_weights()
        if ws:
            layer.set_weights([(r.choice([0.3, 0.5, 1.0]) * rng.standard_normal(w.shape))
                               .astype(np.float32) for w in ws])
    return model, d.desc, r.choice([0.5, 1.0, 2.0, 4.0])


def _convert(model: Any, spread: float, seed: int, float_io: bool) -> bytes:
    from tests.tflite_int8 import convert_int8

    return convert_int8(model, seed=seed, n=N_CALIBRATION, spread=spread, float_io=float_io)


def convert_handler(seed: int) -> dict[str, Any]:
    """TensorFlow worker: the model of ``seed`` and its two conversions (bytes, or the
    converter's error in one line)."""
    model, desc, spread = draw_model(seed)
    out: dict[str, Any] = {"desc": desc, "spread": spread}
    for v in VARIANTS:
        try:
            out[v] = _convert(model, spread, seed, v == "float-io")
        except Exception as exc:  # noqa: BLE001 - the converter's failure is the result
            out[v] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return out


def interpret_handler(request: tuple[bytes, list[list[np.ndarray]]]) -> Any:
    """Interpreter worker: the outputs of each input set (``edgec verify``'s reference: the
    reference kernels, a builtin without one on the optimized kernels), or the interpreter's
    error in one line."""
    from edgec.frontend.tflite.reference import TfliteReference

    blob, sets = request
    try:
        ref = TfliteReference(blob)
        return [ref.run(None, dict(zip(ref.inputs, feeds, strict=True))) for feeds in sets]
    except Exception as exc:  # noqa: BLE001 - the interpreter's failure is the result
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


# -- comparing edgec with the interpreter -----------------------------------------------------


@dataclass
class Result:
    seed: int
    variant: str
    outcome: str
    detail: str = ""
    desc: list[str] = field(default_factory=list)
    blob: bytes | None = None


def inputs_for(cm: Any, spread: float, seed: int) -> list[list[np.ndarray]]:
    """N_INPUTS input sets for the compiled model: random int8 codes, or float32 values of the
    calibration's spread."""
    rng = np.random.default_rng(seed + 1)
    return [[rng.integers(-128, 128, p.shape).astype(np.int8) if np.dtype(p.dtype) == np.int8
             else (spread * rng.standard_normal(p.shape)).astype(np.float32)
             for p in cm.cmodel.inputs] for _ in range(N_INPUTS)]


def differ(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> str:
    """'' when ``got`` equals the interpreter's ``want`` (int8 byte for byte, float within
    ATOL + RTOL * |want|), else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs vs {len(want)}"
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        g = np.asarray(g)
        if g.dtype != w.dtype or g.size != w.size:
            return f"output {k}: {g.dtype}{list(g.shape)} vs {w.dtype}{list(w.shape)}"
        g = g.reshape(w.shape)
        if w.dtype == np.float32:
            if not np.allclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True):
                return f"output {k}: max |diff| {float(np.nanmax(np.abs(g - w))):.3g}"
        elif g.tobytes() != w.tobytes():
            n = int(np.count_nonzero(g != w))
            diff = int(np.abs(g.astype(np.int32) - w.astype(np.int32)).max())
            return f"output {k}: {n} of {w.size} codes differ (by up to {diff})"
    return ""


def _outputs(value: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in (value if isinstance(value, list) else [value])]


def check_blob(blob: bytes, spread: float, seed: int, interpreter: Worker,
               board: str | None = None, workdir: Path | None = None) -> tuple[str, str]:
    """(outcome, detail) of one TFLite model: edgec's host C (and the board's) vs the
    interpreter on N_INPUTS random input sets."""
    import edgec
    from edgec.errors import EdgecError

    try:
        cm = edgec.compile(blob, name="kf")
        sets = inputs_for(cm, spread, seed)
        got = [_outputs(cm.run(*feeds)) for feeds in sets]
    except EdgecError as exc:
        return "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
        return "internal", f"{type(exc).__name__}: {exc}"
    try:
        want = interpreter.call((blob, sets))
    except WorkerCrash as exc:
        return "interpreter_error", f"the interpreter crashed: {exc}"
    if isinstance(want, str):
        return "interpreter_error", want
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        if d := differ(g, w):
            return "mismatch", f"host C, input set {k}: {d}"
    if board is not None:
        return _check_board(cm, sets, want, board, workdir or Path(tempfile.mkdtemp()))
    return "ok", ""


def _check_board(cm: Any, sets: list[list[np.ndarray]], want: list[list[np.ndarray]],
                 board: str, workdir: Path) -> tuple[str, str]:
    from edgec.errors import EdgecError
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target

    try:
        res = run_qemu(build_firmware(cm, load_target(board), workdir / "fw", sets),
                       timeout_s=180)
    except EdgecError as exc:  # a model too big for the board, a build or run failure
        return "internal", f"{board}: {' '.join(str(exc).split())[:300]}"
    if len(res.outputs) != len(want):
        return "internal", f"{board}: {len(res.outputs)} output sets for {len(want)} inputs"
    for k, (g, w) in enumerate(zip(res.outputs, want, strict=True)):
        if d := differ(g, w):
            return "mismatch", f"{board}, input set {k}: {d}"
    return "ok", ""


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)  # (variant, outcome) -> n
    results: list[Result] = field(default_factory=list)
    builtins: Counter = field(default_factory=Counter)  # models of int8 ports using each builtin
    seconds: float = 0.0

    def total(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)

    def table(self) -> str:
        head = f"{'variant':<10}" + "".join(f"{o:>19}" for o in OUTCOMES)
        rows = [f"{v:<10}" + "".join(f"{self.counts[v, o]:>19}" for o in OUTCOMES)
                for v in VARIANTS]
        return "\n".join([head, *rows])


class Fuzzer:
    """The two workers, kept across models (TensorFlow's import costs ~9 s)."""

    def __init__(self) -> None:
        self.converter = Worker(convert_handler)
        self.interpreter = Worker(interpret_handler, timeout_s=120.0)

    def close(self) -> None:
        self.converter.close()
        self.interpreter.close()

    def __enter__(self) -> Fuzzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model(self, seed: int, board: str | None = None) -> list[Result]:
        """Both port variants of the model of ``seed``."""
        try:
            conv = self.converter.call(seed)
        except WorkerCrash as exc:
            return [Result(seed, v, "converter_error", f"the converter crashed: {exc}")
                    for v in VARIANTS]
        out = []
        for v in VARIANTS:
            blob = conv[v]
            if isinstance(blob, str):
                out.append(Result(seed, v, "converter_error", blob, conv["desc"]))
                continue
            with tempfile.TemporaryDirectory() as tmp:
                outcome, detail = check_blob(blob, conv["spread"], seed, self.interpreter,
                                             board, Path(tmp))
            out.append(Result(seed, v, outcome, detail, conv["desc"], blob))
        return out


def builtins(blob: bytes) -> list[str]:
    """The builtin of each operator of a .tflite model."""
    from edgec.frontend.tflite.reader import read_tflite

    return [op.op for op in read_tflite(blob).subgraphs[0].operators]


def model_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def fuzz(models: int, seed: int = 0, first: int = 0, board: str | None = None,
         failures: Path | None = None, verbose: bool = False,
         fuzzer: Fuzzer | None = None) -> Summary:
    t0 = time.monotonic()
    summary = Summary()
    own = fuzzer is None
    fz = fuzzer or Fuzzer()
    try:
        for i in range(first, first + models):
            for res in fz.model(model_seed(seed, i), board):
                summary.counts[res.variant, res.outcome] += 1
                summary.results.append(res)
                if res.variant == "int8-io" and res.blob is not None:
                    summary.builtins.update(set(builtins(res.blob)))
                line = (f"model {i} {res.variant} ({' '.join(res.desc)}): {res.outcome} "
                        f"{res.detail}")
                if verbose or res.outcome in BAD:
                    print(line, file=sys.stderr)
                if failures is not None and res.outcome in BAD and res.blob is not None:
                    failures.mkdir(parents=True, exist_ok=True)
                    stem = failures / f"seed{seed}_model{i}_{res.variant}"
                    stem.with_suffix(".tflite").write_bytes(res.blob)
                    stem.with_suffix(".txt").write_text(line + "\n")
    finally:
        if own:
            fz.close()
    summary.seconds = time.monotonic() - t0
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first", type=int, default=0, help="index of the first model")
    ap.add_argument("--board", choices=[t.name for t in list_targets() if t.qemu_machine],
                    help="also run each compiled model on this emulated board (QEMU)")
    ap.add_argument("--failures", type=Path, help="save each mismatching model's .tflite here")
    ap.add_argument("--verbose", action="store_true", help="one line per (model, variant)")
    args = ap.parse_args(argv)
    s = fuzz(args.models, args.seed, args.first, args.board, args.failures, args.verbose)
    where = f"host + {args.board}" if args.board else "host"
    print(f"{args.models} models x {len(VARIANTS)} port variants (seed {args.seed}, {where}) "
          f"in {s.seconds:.0f} s")
    print(s.table())
    print("int8-port models using each builtin: "
          + ", ".join(f"{k} {n}" for k, n in sorted(s.builtins.items())))
    refusals = Counter(re.sub(r"^.*?operator \d+ ", "", r.detail)[:160] for r in s.results
                       if r.outcome == "refused")
    for msg, n in refusals.most_common():
        print(f"refused x{n}: {msg}")
    return 1 if any(s.total(o) for o in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
