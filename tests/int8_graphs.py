"""int8 test graphs built directly in edgec's IR (no TensorFlow): random int8 weights, int32
biases and quantization parameters, one builder per op, and a model that uses every int8 op
(``kitchen_sink``) for the compile-flag, sanitizer and firmware tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgec.ir import Graph, Node, Quant, Tensor
from edgec.ops.interpret import infer_node, infer_shapes


class Builder:
    """Builds a graph node by node; every output tensor gets its quantization up front."""

    def __init__(self, name: str, seed: int = 0, options: dict[str, Any] | None = None):
        self.g = Graph(name)
        self.g.options = dict(options or {})
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def quant(self, lo: float = 0.01, hi: float = 0.1, zp: int = 20) -> Quant:
        """A random per-tensor quantization."""
        return Quant.per_tensor(float(self.rng.uniform(lo, hi)),
                                int(self.rng.integers(-zp, zp + 1)))

    def input(self, name: str, shape: tuple[int, ...], dtype: str = "int8",
              quant: Quant | None = None) -> str:
        q = (quant or self.quant()) if dtype == "int8" else None
        self.g.tensors[name] = Tensor(name, shape, dtype, quant=q)
        self.g.inputs.append(name)
        return name

    def weights(self, shape: tuple[int, ...], axis: int | None) -> str:
        """Symmetric int8 weights, per-channel on ``axis`` (None: one scale)."""
        w = self.rng.integers(-127, 128, shape).astype(np.int8)
        n = 1 if axis is None else shape[axis]
        q = Quant(self.rng.uniform(0.002, 0.02, n).astype(np.float32), np.zeros(n, np.int32),
                  axis if axis is not None and n > 1 else None)
        if axis is not None and n == 1:
            q = Quant(q.scale, q.zero_point, axis)
        return self.g.add_const(f"w{self.count}", w, q)

    def bias(self, n: int, x: str, w: str) -> str:
        q_x, q_w = self.g.quant(x), self.g.quant(w)
        assert q_x is not None and q_w is not None
        scales = (np.float32(q_x.scale[0]) * q_w.scale).astype(np.float32)
        if scales.size == 1:
            scales = np.repeat(scales, n)
        b = self.rng.integers(-4000, 4000, n).astype(np.int32)
        return self.g.add_const(f"b{self.count}", b, Quant(scales, np.zeros(n, np.int32), 0))

    def const_int8(self, shape: tuple[int, ...], quant: Quant | None = None) -> str:
        return self.g.add_const(f"c{self.count}", self.rng.integers(-128, 128, shape)
                                .astype(np.int8), quant or self.quant())

    def op(self, op_type: str, inputs: list[str], quant: Quant | None | str = "random",
           dtype: str = "int8", **attrs: Any) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        q = self.quant() if quant == "random" else quant
        self.g.tensors[out] = Tensor(out, (), dtype, quant=q if isinstance(q, Quant) else None)
        node = Node(op_type, f"n{self.count}_{op_type}", inputs, [out], attrs)
        self.g.nodes.append(node)
        infer_node(self.g, node)  # shapes and quantization known as the graph grows
        return out

    def finish(self, outputs: list[str]) -> Graph:
        self.g.outputs = list(outputs)
        infer_shapes(self.g)
        return self.g


def run_board(m: Any, target: str, out: Any, cflags: tuple[str, ...] = (),
              seed: int = 11) -> tuple[list[dict[str, np.ndarray]], list[Any], list[Any], str]:
    """``m`` (a compiled int8 model) on ``target``'s emulated board with three random input
    sets: (the feeds, the output ports, the board's outputs per set, the ELF's disassembly)."""
    import subprocess

    from edgec.mcu.project import build_firmware, step_ports
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import load_target

    rng = np.random.default_rng(seed)
    feeds = [random_feeds(m.graph, rng) for _ in range(3)]
    ins, outs = step_ports(m)
    build = build_firmware(m, load_target(target), out, inputs=[[f[p.name] for p in ins]
                                                               for f in feeds],
                           extra_cflags=cflags)
    assert not build.warnings, build.warnings
    res = run_qemu(build, timeout_s=120)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(build.elf)], capture_output=True,
                         text=True, check=True).stdout
    return feeds, outs, res.outputs, dis


def random_feeds(g: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for name in g.inputs:
        t = g.tensor(name)
        if t.dtype == "int8":
            out[name] = rng.integers(-128, 128, t.shape).astype(np.int8)
        else:
            out[name] = (3 * rng.standard_normal(t.shape)).astype(np.float32)
    return out


def kitchen_sink(seed: int = 0, options: dict[str, Any] | None = None) -> Graph:
    """Every int8 op and the int8 data movement in one model: an int8 NHWC image and a float
    vector in; int8 class scores, a float vector and an int8 feature map out."""
    b = Builder("kitchen", seed, options)
    x = b.input("image", (1, 9, 8, 3))
    v = b.input("vector", (1, 6), "float32")
    c1 = b.op("QConv2D", [x, w := b.weights((8, 3, 3, 3), 0), b.bias(8, x, w)],
              strides=[1, 1], pads=[1, 1, 1, 1], act_min=-20, act_max=127)
    d1 = b.op("QDepthwiseConv2D", [c1, w := b.weights((1, 3, 3, 16), 3), b.bias(16, c1, w)],
              strides=[2, 2], pads=[1, 1, 1, 0], depth_multiplier=2, dilations=[1, 1])
    g1 = b.op("QConv2D", [d1, w := b.weights((4, 3, 3, 8), 0), b.bias(4, d1, w)],
              strides=[1, 1], dilations=[2, 1], pads=[2, 1, 2, 1])
    mp = b.op("QMaxPool2D", [g1], b.g.quant(g1), kernel=[2, 2], strides=[2, 2],
              pads=[0, 0, 1, 0])
    ap = b.op("QAveragePool2D", [mp], b.g.quant(mp), kernel=[3, 3], strides=[1, 1],
              pads=[1, 1, 1, 1])
    s1 = b.op("QAdd", [mp, ap], act_min=-100, act_max=100)
    m1 = b.op("QMul", [s1, b.const_int8((1, 1, 1, 4))])
    d2 = b.op("QSub", [m1, s1])
    pw = b.op("QConv2D", [d2, w := b.weights((6, 1, 1, 4), 0), b.bias(6, d2, w)])
    tr = b.op("Transpose", [pw], None, perm=[0, 3, 1, 2])
    sl = b.op("Slice", [tr, b.g.add_const("st", np.array([0, 1], np.int64)),
                        b.g.add_const("en", np.array([1, 6], np.int64)),
                        b.g.add_const("ax", np.array([0, 1], np.int64))], None)
    pd = b.op("Pad", [sl, b.g.add_const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64))],
              None, mode="constant")
    flat = b.op("Reshape", [pd, b.g.add_const("shape", np.array([1, -1], np.int64))], None)
    fc = b.op("QFullyConnected", [flat, w := b.weights((10, 60), 0), b.bias(10, flat, w)])
    mean = b.op("QMean", [c1], axes=[1, 2], keepdims=0)
    qv = b.op("Quantize", [v])
    rq = b.op("Requantize", [qv])
    cat = b.op("QConcat", [fc, mean, rq], axis=1)
    lut = b.op("QLut", [cat], table=b.rng.integers(-128, 128, 256).astype(np.int8))
    sm = b.op("QSoftmax", [lut], Quant.per_tensor(1.0 / 256, -128), beta=1.0)
    fl = b.op("Dequantize", [mean], None, dtype="float32")
    fc2 = b.op("QFullyConnected", [cat, b.weights((5, 24), None)], act_min=-128,
               act_max=90)
    return b.finish([sm, fl, fc2, g1])
