"""Conv's kernel variants (stencil, im2col with the edgec_dot4 microkernel, table gather, direct
fallback) against onnxruntime: on the host, and on emulated Cortex-M boards where the inline
assembly (M4F, M7) and the plain-C path (M0 soft float, M4F with -DEDGEC_NO_ASM) both run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import edgec
from edgec.ir import Graph
from edgec.mcu.project import build_firmware
from edgec.mcu.qemu import run_qemu
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from edgec.ops.conv import conv_geom, conv_kernel, tap_runs
from tests.helpers import ATOL, RTOL, check_model, make_model, ort_run

#: (name, out channels, group, kernel, attributes, expected kernel variant)
CONVS_2D = [
    ("im2col_rest", 6, 1, 3, {"pads": [1, 1, 1, 1]}, "im2col"),
    ("im2col_groups", 8, 2, 3, {"strides": [2, 1], "dilations": [2, 1], "pads": [2, 1, 1, 2]},
     "im2col"),
    ("pointwise", 12, 1, 1, {}, "im2col"),
    ("table_gather", 4, 1, 7, {"pads": [3, 3, 3, 3]}, "im2col"),
    ("depthwise", 8, 8, 3, {"pads": [1, 1, 1, 1]}, "stencil"),
    ("multiplier", 16, 8, 5, {"strides": [2, 2], "pads": [2, 1, 0, 2]}, "stencil"),
    ("depthwise_same", 8, 8, 3, {"auto_pad": "SAME_LOWER", "strides": [1, 2]}, "stencil"),
    ("depthwise_large", 8, 8, 7, {"pads": [3, 3, 3, 3]}, "direct"),
    ("few_channels", 3, 1, 3, {"pads": [0, 1, 0, 1]}, "direct"),
]  # fmt: skip
CONVS_1D = [
    ("im2col_1d", 9, 1, 3, {"pads": [1, 1]}, "im2col"),
    ("depthwise_1d", 5, 5, 3, {"strides": [2], "pads": [0, 2]}, "stencil"),
]
X2D = (1, 8, 9, 11)
X1D = (2, 5, 37)


def conv_bank(x_shape: tuple[int, ...], convs: list) -> onnx.ModelProto:
    """One model, one output per conv of ``convs`` (all reading ``x``; ReLU on every other)."""
    rng = np.random.default_rng(7)
    dims = len(x_shape) - 2
    nodes, inits, outs = [], {}, []
    for i, (name, c_out, group, k, attrs, _) in enumerate(convs):
        w = rng.uniform(-1, 1, (c_out, x_shape[1] // group, *([k] * dims))).astype(np.float32)
        inits[f"{name}_w"] = w
        inits[f"{name}_b"] = rng.uniform(-0.5, 0.5, c_out).astype(np.float32)
        conv_out = name if i % 2 else f"{name}_pre"
        nodes.append(
            helper.make_node(
                "Conv", ["x", f"{name}_w", f"{name}_b"], [conv_out], group=group, **attrs
            )
        )
        if not i % 2:
            nodes.append(helper.make_node("Relu", [conv_out], [name]))
        outs.append(name)
    return make_model(nodes, {"x": x_shape}, outs, inits, name=f"convs{dims}d")


MODELS = {"2d": (X2D, CONVS_2D), "1d": (X1D, CONVS_1D)}


@pytest.mark.parametrize("key", sorted(MODELS))
def test_kernel_variants_are_the_intended_ones(key: str) -> None:
    x_shape, convs = MODELS[key]
    m = edgec.compile(conv_bank(x_shape, convs))
    g: Graph = m.graph
    kinds = {
        n.outputs[0].removesuffix("_pre"): conv_kernel(
            conv_geom(n, g), g.const(n.inputs[1]) is not None
        )
        for n in g.nodes
        if n.op == "Conv"
    }
    assert kinds == {name: kind for name, *_, kind in convs}


@pytest.mark.parametrize("key", sorted(MODELS))
def test_kernel_variants_on_host(key: str) -> None:
    x_shape, convs = MODELS[key]
    check_model(conv_bank(x_shape, convs))


STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
CORTEX_M4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")


@pytest.mark.parametrize("key", sorted(MODELS))
def test_kernel_variants_strict_and_sanitized(key: str, tmp_path: Path) -> None:
    """Strict C99 on the host and for the M4F (assembly enabled), clean under ASan/UBSan."""
    x_shape, convs = MODELS[key]
    model = conv_bank(x_shape, convs)
    m = edgec.compile(model)
    cm = m.cmodel
    m.write(tmp_path)
    outs = ", ".join(f"y + {sum(p.size for p in cm.outputs[:i])}" for i in range(len(cm.outputs)))
    total = sum(p.size for p in cm.outputs)
    (tmp_path / "driver.c").write_text(
        f'#include <stdio.h>\n#include "{cm.name}.h"\n'
        f"static float x[{cm.inputs[0].size}], y[{total}];\n"
        "int main(void) {\n"
        '    FILE *f = fopen("in.bin", "rb");\n'
        "    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;\n    fclose(f);\n"
        f"    if ({cm.name}_run(x, {outs}) != 0) return 3;\n"
        '    f = fopen("out.bin", "wb");\n'
        "    if (!f || fwrite(y, sizeof y, 1, f) != 1) return 4;\n"
        "    fclose(f);\n    return 0;\n}\n"
    )
    x = np.random.default_rng(5).uniform(-2, 2, x_shape).astype(np.float32)
    x.tofile(tmp_path / "in.bin")
    cc = ["gcc", *STRICT, "-O1", *SANITIZE, "driver.c", f"{cm.name}.c", "-lm", "-o", "driver"]
    proc = subprocess.run(cc, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run(["./driver"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr[-4000:]
    got = np.fromfile(tmp_path / "out.bin", np.float32)
    expected = np.concatenate([e.reshape(-1) for e in ort_run(model, {"x": x})])
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    arm = shutil.which("arm-none-eabi-gcc")
    if arm is not None:
        args = [arm, *CORTEX_M4, *STRICT, "-O2", "-c", f"{cm.name}.c", "-o", "m4.o"]
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]


def test_tap_runs_cover_the_axis() -> None:
    from edgec.ops.conv import Axis

    axis = Axis(9, 5, kernel=5, stride=2, dilation=1, pad_begin=2, pad_end=2)
    runs = tap_runs(axis)
    assert runs == [(0, 1, 2, 5), (1, 4, 0, 5), (4, 5, 0, 3)]
    assert [r for o0, o1, k0, k1 in runs for r in [(k0, k1)] * (o1 - o0)] == axis.tap_ranges()


# -- on emulated boards ------------------------------------------------------------------------

#: (target, extra C flags): the assembly path (M4F, M7) and the plain-C path (M4F without the
#: assembly, M3 soft float; the 2-D bank's activations do not fit the M0 board's 16 KiB of RAM)
BOARDS = {
    "m4f-asm": ("cortex-m4f", ()),
    "m4f-c": ("cortex-m4f", ("-DEDGEC_NO_ASM",)),
    "m3-softfloat": ("cortex-m3", ()),
    "m7-asm": ("cortex-m7", ()),
}


@pytest.mark.qemu
@pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
)
@pytest.mark.parametrize(("target", "flags"), list(BOARDS.values()), ids=list(BOARDS))
@pytest.mark.parametrize("key", sorted(MODELS))
def test_kernel_variants_on_board(
    key: str, target: str, flags: tuple[str, ...], tmp_path: Path
) -> None:
    x_shape, convs = MODELS[key]
    model = conv_bank(x_shape, convs)
    m = edgec.compile(model)
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, x_shape).astype(np.float32)
    build = build_firmware(m, load_target(target), tmp_path, [[x]], extra_cflags=flags)
    assert build.warnings == [], build.warnings
    res = run_qemu(build, timeout_s=60)
    assert res.returncode == 0 and "EDGEC-END ok" in res.stdout
    expected = ort_run(model, {"x": x})
    (got,) = res.outputs
    assert len(got) == len(expected)
    for name, g_, e_ in zip(m.output_names, got, expected, strict=True):
        assert np.abs(e_).max() > 1e-3, f"{name}: degenerate output"
        np.testing.assert_allclose(g_, e_.reshape(g_.shape), rtol=RTOL, atol=ATOL, err_msg=name)
