"""Seeded differential fuzzer of the TFLite front-end: mutated .tflite models vs the interpreter.

Each mutant is one seed model (Keras models converted by TensorFlow's converter: float, int8
with int8 ports, int8 with float ports) with one thing changed in its flatbuffer: an
activation's scale or zero point, a weight channel's scale, an operator option (strides,
padding, fused activation, axis, keep_dims, beta, alpha, ...), some weight or bias values
(int8 weights at -128 included), or a tensor's declared shape. The TFLite interpreter
(ai-edge-litert, reference kernels) runs the mutant on random inputs; edgec must either refuse
it with a one-line EdgecError, or compile it and compute what the interpreter computes: int8
outputs byte for byte, float outputs within ``RTOL``/``ATOL``. A mutant the interpreter rejects
may be compiled or refused (there is nothing to compare with).

Interpreter and edgec run in a worker process with a time limit, so a crash or hang (the
interpreter aborts on some mutants) is counted and the worker restarted.

    python -m bench.fuzz_tflite --count 2000 --seed 0 --exec numpy   # edgec's numpy interpreter
    python -m bench.fuzz_tflite --count 300 --exec host              # the generated C

Outcome counts go to stdout as JSON; ``--failures DIR`` keeps every bad mutant as a file.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.fuzz import FuzzResult, Mutant, Runner, run_mutants

#: outcomes that break edgec's promise (a correct program or a clear one-line error)
BAD = ("internal_error", "multiline_error", "crash", "hang", "mismatch")

#: float outputs: |edgec - tflite| <= ATOL + RTOL * |tflite|
RTOL, ATOL = 1e-4, 1e-5

#: seed models are converted once and kept here (delete the folder to convert again)
CACHE = Path.home() / ".cache" / "edgec" / "fuzz_tflite_seeds"

# -- seed models -------------------------------------------------------------------------------

#: the Keras seeds (``_keras_models`` builds them; listed here so a full cache needs no TF)
SEED_NAMES = ("branches", "cnn1d", "cnn2d", "gru_unrolled", "lstm_loop", "mlp_acts",
              "reshape_permute")
#: seeds converted to fewer kinds: the converter's int8 calibration crashes on the fused
#: recurrent ops, so a loop (WHILE) seed is float only
SEED_KINDS = {"lstm_loop": ("float",)}


def _keras_models() -> dict[str, Callable[[], Any]]:
    import tensorflow as tf

    L = tf.keras.layers

    def seq(shape: tuple[int, ...], *layers: Any) -> Any:
        return tf.keras.Sequential([tf.keras.Input(shape, batch_size=1), *layers])

    def branches() -> Any:
        a = tf.keras.Input((6, 6, 3), batch_size=1)
        b = tf.keras.Input((6, 6, 3), batch_size=1)
        s = L.Add()([L.Conv2D(4, 1)(a), L.Conv2D(4, 1)(b)])
        d = L.Subtract()([L.Conv2D(4, 3, padding="same")(a), s])
        m = L.Multiply()([s, L.Activation("sigmoid")(d)])
        c = L.Concatenate()([m, L.ReLU(6.0)(d)])
        g = L.GlobalAveragePooling2D()(c)
        return tf.keras.Model([a, b], L.Dense(3, activation="softmax")(g))

    return {
        "cnn2d": lambda: seq((10, 10, 3), L.Conv2D(8, 3, strides=2, padding="same",
                                                   activation="relu"),
                             L.DepthwiseConv2D(3, padding="same"), L.MaxPooling2D(),
                             L.AveragePooling2D(2, padding="same"), L.Flatten(), L.Dense(5),
                             L.Softmax()),
        "cnn1d": lambda: seq((16, 4), L.Conv1D(6, 3, activation="relu"), L.MaxPooling1D(2),
                             L.ZeroPadding1D(1), L.Conv1D(4, 3), L.GlobalAveragePooling1D(),
                             L.Dense(2)),
        "mlp_acts": lambda: seq((12,), L.Dense(16, activation="tanh"), L.Dense(16),
                                L.LeakyReLU(0.2), L.Dense(8, activation="sigmoid"),
                                L.Dense(8), L.Activation("hard_swish"), L.Dense(3)),
        "branches": branches,
        "reshape_permute": lambda: seq((4, 6, 2), L.Permute((2, 1, 3)), L.Cropping2D(1),
                                       L.Reshape((8, 2)), L.Dense(3)),
        "gru_unrolled": lambda: seq((5, 3), L.GRU(6, unroll=True), L.Dense(2)),
        "lstm_loop": lambda: seq((6, 3), L.LSTM(5, return_sequences=True), L.GRU(4),
                                 L.Dense(2)),
    }


def _convert(model: Any, kind: str) -> bytes:
    """float, or full-integer int8 with int8 ("int8") or float ("int8_fio") ports (32
    calibration samples of spread 1.5)."""
    if kind != "float":
        from tests.tflite_int8 import convert_int8

        return convert_int8(model, seed=0, n=32, spread=1.5, float_io=kind == "int8_fio")
    import tensorflow as tf

    from edgec.frontend.keras import _quiet

    with _quiet():
        return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def seed_models(cache: Path = CACHE, names: Sequence[str] = SEED_NAMES) -> dict[str, bytes]:
    """The Keras seeds ``names`` as float, int8 (int8 ports) and int8_fio (float ports)."""
    out: dict[str, bytes] = {}
    factories = None
    for name in names:
        for kind in SEED_KINDS.get(name, ("float", "int8", "int8_fio")):
            path = cache / f"{name}_{kind}.tflite"
            if not path.exists():
                if factories is None:
                    factories = _keras_models()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_convert(factories[name](), kind))
            out[path.stem] = path.read_bytes()
    return out


# -- mutations (on the schema's object API) ----------------------------------------------------


def _schema() -> Any:
    from edgec.frontend.tflite.reader import schema

    return schema()


def _tensors(m: Any) -> list[tuple[Any, Any]]:
    """(subgraph, tensor) pairs of the model."""
    return [(sg, t) for sg in m.subgraphs or [] for t in sg.tensors or []]


def _has_data(m: Any, t: Any) -> bool:
    buf = m.buffers[t.buffer] if 0 < t.buffer < len(m.buffers or []) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def _mut_activation_quant(m: Any, r: random.Random) -> str | None:
    S = _schema()
    cands = [t for _, t in _tensors(m) if t.type == S.TensorType.INT8 and not _has_data(m, t)
             and t.quantization is not None and t.quantization.scale is not None]
    if not cands:
        return None
    t = r.choice(cands)
    q = t.quantization
    if r.random() < 0.5:
        f = 2.0 ** r.uniform(-8, 8)
        q.scale = (np.asarray(q.scale, np.float32) * np.float32(f)).astype(np.float32)
        return f"scale of '{t.name.decode()}' x{f:.4g}"
    old = int(np.asarray(q.zeroPoint).reshape(-1)[0]) if q.zeroPoint is not None else 0
    zp = r.choice([v for v in (-128, 127, 0, r.randint(-128, 127)) if v != old] or [old ^ 1])
    q.zeroPoint = np.full(len(q.scale), zp, np.int64)
    return f"zero point of '{t.name.decode()}' = {zp}"


def _mut_weight_quant(m: Any, r: random.Random) -> str | None:
    S = _schema()
    cands = [t for _, t in _tensors(m) if t.type == S.TensorType.INT8 and _has_data(m, t)
             and t.quantization is not None and t.quantization.scale is not None]
    if not cands:
        return None
    t = r.choice(cands)
    sc = np.array(t.quantization.scale, np.float32)
    k = r.randrange(sc.size)
    f = 2.0 ** r.uniform(-12, 6)
    sc[k] *= np.float32(f)
    t.quantization.scale = sc
    return f"weight scale {k} of '{t.name.decode()}' x{f:.4g}"


#: values an option field is set to (by field name; other ints get small integers)
OPTION_VALUES: dict[str, Sequence[Any]] = {
    "fusedActivationFunction": (0, 1, 2, 3, 4, 6),
    "padding": (0, 1),
    "strideH": (1, 2, 3), "strideW": (1, 2, 3), "strideW_": (1, 2),
    "dilationHFactor": (1, 2), "dilationWFactor": (1, 2),
    "filterHeight": (1, 2, 3), "filterWidth": (1, 2, 3),
    "depthMultiplier": (1, 2),
    "axis": (-1, 0, 1, 2, 3),
    "keepDims": (True, False), "keepNumDims": (True, False),
    "beta": (0.5, 1.0, 2.0, 0.01),
    "alpha": (0.01, 0.3, 1.0, -0.5),
    "beginMask": (0, 1, 2, 3), "endMask": (0, 1, 2, 3), "shrinkAxisMask": (0, 1, 2),
    "ellipsisMask": (0, 1), "newAxisMask": (0, 1), "offset": (False, True),
    "potScaleInt16": (True, False), "asymmetricQuantizeInputs": (False, True),
}


def _mut_option(m: Any, r: random.Random) -> str | None:
    ops = [(sg, op) for sg in m.subgraphs or [] for op in sg.operators or []
           if op.builtinOptions is not None
           and any(not k.startswith("_") for k in vars(op.builtinOptions))]
    if not ops:
        return None
    _, op = r.choice(ops)
    fields = sorted(k for k, v in vars(op.builtinOptions).items()
                    if isinstance(v, (bool, int, float)) and not k.startswith("_"))
    if not fields:
        return None
    k = r.choice(fields)
    old = getattr(op.builtinOptions, k)
    choices = OPTION_VALUES.get(k)
    if choices is None:
        choices = (True, False) if isinstance(old, bool) else (
            (old * 0.5, old * 2.0, 0.0) if isinstance(old, float) else (0, 1, 2, 3))
    choices = [c for c in choices if c != old]
    if not choices:
        return None
    new = r.choice(choices)
    setattr(op.builtinOptions, k, new)
    code = m.operatorCodes[op.opcodeIndex]
    return f"op {max(code.builtinCode, code.deprecatedBuiltinCode)} option {k}: {old} -> {new}"


def _mut_values(m: Any, r: random.Random) -> str | None:
    S = _schema()
    kinds = {S.TensorType.INT8: np.int8, S.TensorType.INT32: np.int32,
             S.TensorType.FLOAT32: np.float32}
    cands = [t for _, t in _tensors(m) if t.type in kinds and _has_data(m, t)]
    if not cands:
        return None
    t = r.choice(cands)
    buf = m.buffers[t.buffer]
    arr = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), kinds[t.type]).copy()
    n = r.choice((1, 3, arr.size))
    idx = [r.randrange(arr.size) for _ in range(n)]
    if t.type == S.TensorType.INT8:
        vals = [r.choice((-128, -127, 127, 0, r.randint(-128, 127))) for _ in idx]
    elif t.type == S.TensorType.INT32:
        vals = [r.choice((2**30, -(2**30), 2**31 - 1, -(2**31), r.randint(-5000, 5000)))
                for _ in idx]
    else:
        vals = [r.choice((0.0, 1e3, -1e3, r.gauss(0, 3))) for _ in idx]
    before = arr.copy()
    arr[idx] = np.asarray(vals, arr.dtype)
    if np.array_equal(arr, before, equal_nan=True):
        return None
    buf.data = np.frombuffer(arr.tobytes(), np.uint8)
    return f"{n} value(s) of '{t.name.decode()}'"


def _mut_shape(m: Any, r: random.Random) -> str | None:
    cands = [t for _, t in _tensors(m) if not _has_data(m, t) and t.shape is not None
             and len(t.shape) > 0]
    if not cands:
        return None
    t = r.choice(cands)
    shape = np.array(t.shape, np.int32)
    k = r.randrange(shape.size)
    shape[k] = int(shape[k]) + r.choice((-1, 1, 2) if shape[k] > 1 else (1, 2))
    t.shape = shape
    t.shapeSignature = None
    return f"declared shape of '{t.name.decode()}' -> {shape.tolist()}"


MUTATIONS: dict[str, Callable[[Any, random.Random], str | None]] = {
    "activation_quant": _mut_activation_quant,
    "weight_quant": _mut_weight_quant,
    "option": _mut_option,
    "values": _mut_values,
    "shape": _mut_shape,
}


def mutate(data: bytes, kind: str, r: random.Random) -> tuple[bytes, str] | None:
    import flatbuffers

    m = _schema().ModelT.InitFromPackedBuf(data, 0)
    what = MUTATIONS[kind](m, r)
    if what is None:
        return None
    fb = flatbuffers.Builder(len(data) + 1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output()), what


def mutants(seeds: dict[str, bytes], count: int, seed: int) -> Iterator[Mutant]:
    r = random.Random(seed)
    names = sorted(seeds)
    i = 0
    while i < count:
        name = r.choice(names)
        kind = r.choice(sorted(MUTATIONS))
        got = mutate(seeds[name], kind, r)
        if got is None:
            continue
        yield Mutant(i, name, kind, got[1], got[0])
        i += 1


# -- one mutant: the interpreter, then edgec ---------------------------------------------------


def _feeds(details: list[dict[str, Any]], seed: int) -> list[np.ndarray] | None:
    rng = np.random.default_rng(seed)
    feeds = []
    for d in details:
        shape = tuple(int(v) for v in d["shape"])
        if d["dtype"] == np.int8:
            feeds.append(rng.integers(-128, 128, shape).astype(np.int8))
        elif d["dtype"] == np.float32:
            feeds.append((2.0 * rng.standard_normal(shape)).astype(np.float32))
        else:
            return None
    return feeds


def _interpreter(data: bytes, feed_seed: int) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        try:
            it = Interpreter(model_content=data,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        except ValueError as exc:  # a builtin without a reference kernel
            if "Didn't find op" not in str(exc):
                raise
            it = Interpreter(model_content=data, experimental_op_resolver_type=(
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        it.allocate_tensors()
        details = it.get_input_details()
        feeds = _feeds(details, feed_seed)
        if feeds is None:
            return {"status": "rejects", "why": "inputs other than int8/float32"}
        for d, x in zip(details, feeds, strict=True):
            it.set_tensor(d["index"], x)
        it.invoke()
        outs = [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
    except Exception as exc:  # noqa: BLE001 - the interpreter refuses the mutant
        return {"status": "rejects", "why": f"{type(exc).__name__}: {str(exc)[:160]}"}
    return {"status": "ok", "feeds": feeds, "outs": outs}


def _edgec(data: bytes, feeds: list[np.ndarray] | None, execute: str) -> dict[str, Any]:
    import edgec
    from edgec.errors import EdgecError

    try:
        m = edgec.compile(data, name="fz")
    except EdgecError as exc:
        msg = str(exc)
        return {"status": "multiline" if "\n" in msg else "refused", "why": msg[:300]}
    except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
        return {"status": "internal", "why": f"{type(exc).__name__}: {str(exc)[:200]}"}
    if feeds is None:
        return {"status": "compiled"}
    try:
        got = m.run(*feeds) if execute == "host" else m.reference(*feeds)
    except EdgecError as exc:
        return {"status": "refused", "why": f"at run time: {str(exc)[:300]}"}
    except Exception as exc:  # noqa: BLE001
        return {"status": "internal", "why": f"run: {type(exc).__name__}: {str(exc)[:200]}"}
    return {"status": "ok", "outs": got if isinstance(got, list) else [got]}


def _same(got: np.ndarray, ref: np.ndarray) -> bool:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return False
    if ref.dtype.kind in "iub":
        return bool(np.array_equal(got, ref))
    both_nan = np.isnan(got) & np.isnan(ref)
    close = np.abs(got - ref) <= ATOL + RTOL * np.abs(ref)
    return bool(np.all(both_nan | close | (got == ref)))


def classify(ref: dict[str, Any], ec: dict[str, Any]) -> tuple[str, str]:
    if ec["status"] == "internal":
        return "internal_error", ec["why"]
    if ec["status"] == "multiline":
        return "multiline_error", ec["why"]
    if ref["status"] == "rejects":
        return ("refused" if ec["status"] == "refused" else "compiled_interp_rejects",
                ref["why"])
    if ec["status"] == "refused":
        return "refused_valid", ec["why"]
    for k, (g, e) in enumerate(zip(ec["outs"], ref["outs"], strict=False)):
        if not _same(g, e):
            g, e = np.asarray(g), np.asarray(e)
            return "mismatch", (f"output {k}: edgec {g.dtype}{list(g.shape)} "
                                f"{g.reshape(-1)[:6]} tflite {e.dtype}{list(e.shape)} "
                                f"{e.reshape(-1)[:6]}")
    if len(ec["outs"]) != len(ref["outs"]):
        return "mismatch", f"{len(ec['outs'])} outputs, tflite {len(ref['outs'])}"
    return "match", ""


def _worker(conn: Any, execute: str) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        data, feed_seed = msg
        conn.send(("phase", "tflite"))
        ref = _interpreter(data, feed_seed)
        conn.send(("phase", "edgec"))
        ec = _edgec(data, ref.get("feeds"), execute)
        conn.send(("done", classify(ref, ec)))


#: outcomes that are not bugs but say where edgec and the interpreter part (``--verbose``)
NOTABLE = ("refused_valid", "compiled_interp_rejects", "tflite_crash", "tflite_hang")


def fuzz(count: int, seed: int = 0, execute: str = "numpy", timeout: float = 120.0,
         seeds: dict[str, bytes] | None = None, failures: Path | None = None,
         progress: Callable[[int, Counter[str]], None] | None = None) -> FuzzResult:
    """Run ``count`` mutants; returns the outcome counts, the bad and the notable mutants."""
    seeds = seeds if seeds is not None else seed_models()
    return run_mutants(Runner(execute, timeout, worker=_worker, ref="tflite"),
                       mutants(seeds, count, seed), seed, ".tflite", BAD, NOTABLE, failures,
                       progress)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exec", dest="execute", choices=("host", "numpy"), default="numpy")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    ap.add_argument("--failures", type=Path, help="directory to keep the bad mutants in")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where the seed models are kept")
    ap.add_argument("--verbose", action="store_true",
                    help="also list the mutants edgec refused that the interpreter runs (and "
                         "the reverse) with the reason")
    args = ap.parse_args(argv)
    seeds = seed_models(args.cache)

    def progress(done: int, counts: Counter[str]) -> None:
        if done % 100 == 0:
            print(f"{done}/{args.count} {dict(sorted(counts.items()))}", file=sys.stderr,
                  flush=True)

    res = fuzz(args.count, args.seed, args.execute, args.timeout, seeds, args.failures,
               progress)
    print(json.dumps(res.summary(), indent=2))
    for mt, outcome, detail in res.bad[:50] + (res.notable if args.verbose else []):
        print(f"#{mt.index} {mt.seed_model} [{mt.kind}: {mt.what}] {outcome}: {detail}")
    return 1 if res.bad_count else 0


if __name__ == "__main__":
    sys.exit(main())
