"""Keyword spotting on a Cortex-M4F: a small DS-CNN trained in Keras, int8 TFLite, edgec.

The dataset is synthetic and spectrogram-like: 49 frames x 10 cepstral coefficients (a 1 s
MFCC window) per example; each keyword class is a "formant" ridge with its own trajectory
across the coefficients, starting at a random frame with a random length, loudness and pitch
shift, over Gaussian noise; class 0 is silence (noise only). The model is MLPerf Tiny's DS-CNN
shape at 32 channels. It is trained in Keras (seconds on a CPU), converted to a full-integer int8
TFLite model (int8 input and output) and to a float32 TFLite twin, and both are compiled by
edgec for the Cortex-M4F:

* host: the int8 C equals the TFLite interpreter byte for byte on every test example; the float
  twin is within edgec's float tolerance;
* board (skipped by ``--no-board``): the int8 firmware on the emulated Cortex-M4F (QEMU
  mps2-an386) prints TFLite's bytes; both models are profiled there (exact instructions,
  estimated cycles, flash, RAM).

    python examples/keras_kws/train.py              # full run
    python examples/keras_kws/train.py --quick      # CI: a few training steps
    python examples/keras_kws/train.py --no-board   # host only
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAMES, COEFFS = 49, 10
KEYWORDS = ["silence", "yes", "no", "up", "down", "left"]
CHANNELS = 32


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples [n, 49, 10, 1] float32 and labels, classes balanced, deterministic."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(KEYWORDS)
    rng.shuffle(labels)
    x = 0.3 * rng.standard_normal((n, FRAMES, COEFFS)).astype(np.float32)
    t = np.arange(FRAMES, dtype=np.float32)
    coeff = np.arange(COEFFS, dtype=np.float32)
    for i, k in enumerate(labels):
        if k == 0:
            continue
        start = rng.integers(0, 15)
        length = rng.integers(20, 32)
        u = np.clip((t - start) / length, 0.0, 1.0)  # 0..1 through the word
        # class k's ridge: a start coefficient, a slope and a wobble of its own
        centre = (1.0 + 1.5 * (k % 3) + (2.0 if k > 3 else -0.5) * u
                  + 1.2 * np.sin(np.pi * u * (1 + k % 2)) + rng.uniform(-0.5, 0.5))
        ridge = np.exp(-0.5 * ((coeff[None, :] - centre[:, None]) / 0.9) ** 2)
        on = ((t >= start) & (t < start + length)).astype(np.float32)[:, None]
        x[i] += rng.uniform(1.0, 2.0) * on * ridge
    return x[..., None], labels.astype(np.int64)


def ds_cnn():  # noqa: ANN201 - a tf.keras.Model (TensorFlow is imported lazily)
    import tensorflow as tf

    layers = tf.keras.layers
    a = tf.keras.Input((FRAMES, COEFFS, 1), batch_size=1)
    x = layers.Conv2D(CHANNELS, (10, 4), strides=2, padding="same", activation="relu")(a)
    for _ in range(2):
        x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
        x = layers.Conv2D(CHANNELS, 1, activation="relu")(x)
    x = layers.AveragePooling2D((25, 5))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(len(KEYWORDS))(x)
    x = layers.Softmax()(x)
    return tf.keras.Model(a, x)


def train(x: np.ndarray, y: np.ndarray, steps: int, seed: int):  # noqa: ANN201
    """Adam on mini-batches of 32 for ``steps`` steps (the model's batch size is 1 for the
    converter; training runs a batch-free twin sharing its layers' weights)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = ds_cnn()
    trainer = tf.keras.Sequential([tf.keras.Input((FRAMES, COEFFS, 1))]
                                  + [layer for layer in model.layers[1:]])
    trainer.compile(optimizer=tf.keras.optimizers.Adam(3e-3),
                    loss=tf.keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, len(x), 32)
        losses.append(float(trainer.train_on_batch(x[idx], y[idx])))
    return model, losses[-1]


def convert(model, x_calib: np.ndarray, int8: bool) -> bytes:  # noqa: ANN001
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        def rep():  # noqa: ANN202 - the converter's calibration generator
            for s in x_calib:
                yield [s[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints its SavedModel
        return conv.convert()


def tflite_run(blob: bytes, xs: np.ndarray) -> np.ndarray:
    """The TFLite interpreter's (reference kernels) outputs for each example."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=blob,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    for s in xs:
        it.set_tensor(i, s[None])
        it.invoke()
        outs.append(it.get_tensor(o)[0].copy())
    return np.stack(outs)


def quantize_inputs(blob: bytes, x: np.ndarray) -> np.ndarray:
    """Float examples → the int8 model's input codes (its input scale and zero point)."""
    from edgec.frontend.tflite.reader import read_tflite

    sg = read_tflite(blob).subgraphs[0]
    q = sg.tensors[sg.inputs[0]].quant
    assert q is not None
    scale, zp = float(q.scale[0]), int(q.zero_point[0])
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


@dataclass
class Result:
    accuracy_float: float = 0.0
    accuracy_int8: float = 0.0
    int8_bit_exact_host: bool = False
    float_max_abs_diff: float = 0.0
    float_within_tol: bool = False
    int8_bit_exact_board: bool | None = None
    arena: dict[str, int] = field(default_factory=dict)
    profile: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (self.int8_bit_exact_host and self.float_within_tol
                and self.int8_bit_exact_board is not False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: 30 training steps")
    ap.add_argument("--no-board", action="store_true", help="skip QEMU (verify and profile)")
    ap.add_argument("--out", type=Path, default=Path("build/keras_kws"),
                    help="where the .tflite files and C sources go")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> Result:
    import edgec

    t0 = time.perf_counter()
    res = Result()
    n_train, n_test, steps = (384, 60, 30) if args.quick else (3000, 300, 400)
    x_train, y_train = dataset(n_train, seed=1)
    x_test, y_test = dataset(n_test, seed=2)
    model, loss = train(x_train, y_train, steps, seed=3)
    print(f"DS-CNN ({CHANNELS} channels), {len(KEYWORDS)} classes: {steps} steps of 32, "
          f"final loss {loss:.3f} ({time.perf_counter() - t0:.1f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    blobs = {"int8": convert(model, x_train[:100], int8=True),
             "float": convert(model, x_train[:100], int8=False)}
    for kind, blob in blobs.items():
        (args.out / f"kws_{kind}.tflite").write_bytes(blob)

    # float twin: edgec's C vs the TFLite interpreter within float tolerance
    m_f = edgec.compile(str(args.out / "kws_float.tflite"), name="kws_float")
    want_f = tflite_run(blobs["float"], x_test)
    got_f = np.stack([np.asarray(m_f.run(s[None])).reshape(-1) for s in x_test])
    res.float_max_abs_diff = float(np.abs(got_f - want_f).max())
    res.float_within_tol = bool(np.allclose(got_f, want_f, rtol=1e-4, atol=1e-5))
    res.accuracy_float = float((want_f.argmax(1) == y_test).mean())

    # int8: byte for byte on the host
    m_q = edgec.compile(str(args.out / "kws_int8.tflite"), name="kws_int8")
    xq = quantize_inputs(blobs["int8"], x_test)
    want_q = tflite_run(blobs["int8"], xq)
    got_q = np.stack([np.asarray(m_q.run(s[None])).reshape(-1) for s in xq])
    res.int8_bit_exact_host = bool(np.array_equal(got_q, want_q))
    res.accuracy_int8 = float((want_q.argmax(1) == y_test).mean())
    for kind, m in (("int8", m_q), ("float", m_f)):
        m.write(args.out / kind)
        res.arena[kind] = int(m.report()["arena_bytes"])
    print(f"test accuracy: float {res.accuracy_float:.1%}, int8 {res.accuracy_int8:.1%} "
          f"(chance {1 / len(KEYWORDS):.1%})")
    print(f"host: int8 C == TFLite byte for byte on {n_test} examples: "
          f"{res.int8_bit_exact_host}; float C vs TFLite max |diff| {res.float_max_abs_diff:.2e}")

    if not args.no_board:
        from edgec.mcu.project import build_firmware
        from edgec.mcu.qemu import run_qemu
        from edgec.mcu.targets import load_target

        n_board = 8
        build = build_firmware(m_q, load_target("cortex-m4f"), args.out / "fw_int8",
                               inputs=[[s[None]] for s in xq[:n_board]])
        board = run_qemu(build, timeout_s=300)
        res.int8_bit_exact_board = all(
            np.array_equal(np.asarray(got[0]).reshape(-1), want)
            for got, want in zip(board.outputs, want_q[:n_board], strict=True))
        print(f"cortex-m4f (QEMU): int8 outputs == TFLite byte for byte on {n_board} examples: "
              f"{res.int8_bit_exact_board}")
        rows = []
        for kind, m in (("int8", m_q), ("float", m_f)):
            p = m.profile("cortex-m4f", repeat=1)
            res.profile[kind] = {
                "macs": p.macs, "instructions": p.instructions_per_inference,
                "cycles": p.estimated_cycles, "mac_per_cycle": p.macs_per_cycle,
                "time_us": p.estimated_time_us, "flash": p.size.flash_total,
                "weights": p.size.weights, "code": p.size.code, "arena": res.arena[kind],
            }
            r = res.profile[kind]
            rows.append(f"| {kind} | {r['macs']:,} | {r['instructions']:,} | {r['cycles']:,} | "
                        f"{r['mac_per_cycle']:.2f} | {r['time_us']:,.0f} | {r['weights']:,} | "
                        f"{r['code']:,} | {r['flash']:,} | {r['arena']:,} |")
        print("\n| model | MACs | instructions | est. cycles | MAC/cycle | est. us | weights B "
              "| code B | flash B | arena B |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    print(f"total {time.perf_counter() - t0:.1f} s; sources and .tflite files in {args.out}")
    return res


def main(argv: list[str] | None = None) -> int:
    return 0 if run(parse_args(argv)).passed else 1


if __name__ == "__main__":
    sys.exit(main())
