"""PHM layers (PHMLinear, PHConv as in the PHNN paper's code): n = 2..8, dense and factored
lowering against PyTorch, flash of the factored form, ``auto`` by the target's flash, the CLI
option, user-registered classes, strict/sanitised builds, and bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgec
from edgec.backend.host import host_cc
from edgec.errors import EdgecError, UnsupportedOpError
from edgec.frontend.pytorch.lib_phm import register_phm_class
from edgec.nn.phm import PHConv, PHMLinear

STRICT = ("-Wall", "-Wextra", "-Werror", "-std=c99", "-pedantic")
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
RTOL, ATOL = 1e-4, 1e-5


def _check(model: nn.Module, x: torch.Tensor, mode: str) -> edgec.CompiledModel:
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    m = edgec.compile(model, example_inputs=(x,), options={"phm": mode})
    np.testing.assert_allclose(m.run(x.numpy()), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.reference(x.numpy()), expected, rtol=RTOL, atol=ATOL)
    return m


def _ops(m: edgec.CompiledModel) -> list[str]:
    return [n.op for n in m.graph.nodes]


def test_reference_layers_defeat_fx_and_export() -> None:
    """Why edgec recognises these classes: generic tracing cannot capture them."""
    torch.manual_seed(0)
    for layer, x in ((PHMLinear(2, 4, 6), torch.randn(1, 4)),
                     (PHConv(2, 4, 6, 3), torch.randn(1, 4, 5, 5))):
        with pytest.raises(Exception):  # noqa: B017 - any tracing failure
            torch.fx.symbolic_trace(layer)
        with pytest.raises(Exception, match="torch.Size"):  # noqa: B017
            torch.export.export(layer, (x,))
        assert layer.bias is not None  # PHConv's bias exists but forward ignores it


@pytest.mark.parametrize("n", range(2, 9))
@pytest.mark.parametrize("mode", ["dense", "factored"])
def test_phm_linear(n: int, mode: str) -> None:
    torch.manual_seed(n)
    for i, o, batch in ((1, 1, 1), (3, 2, 3), (7, 5, 1)):
        layer = PHMLinear(n, n * i, n * o)
        m = _check(layer, torch.randn(batch, n * i), mode)
        assert ("PhmLinear" in _ops(m)) == (mode == "factored")
    # a 3-D input (leading dims are rows) and a fused activation after the layer
    net = nn.Sequential(PHMLinear(n, 2 * n, 3 * n), nn.ReLU(), PHMLinear(n, 3 * n, n))
    _check(net, torch.randn(2, 3, 2 * n), mode)


@pytest.mark.parametrize("n", range(2, 9))
@pytest.mark.parametrize("mode", ["dense", "factored"])
def test_phm_conv(n: int, mode: str) -> None:
    torch.manual_seed(10 + n)
    cases = ((1, 1, 3, 1, 1, (7, 7)), (2, 1, 3, 0, 2, (5, 6)), (1, 2, 1, 0, 1, (3, 3)),
             (1, 1, 2, 1, 2, (1, 4)), (1, 5, 3, 1, 1, (4, 5)), (2, 9, 1, 0, 1, (2, 3)))
    for i, o, k, pad, stride, (h, w) in cases:
        layer = PHConv(n, n * i, n * o, k, padding=pad, stride=stride)
        m = _check(layer, torch.randn(1 if n % 2 else 2, n * i, h, w), mode)
        assert ("PhmConv" in _ops(m)) == (mode == "factored")


class PHCNN(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.c1 = PHConv(n, n, 2 * n, 3, padding=1)
        self.c2 = PHConv(n, 2 * n, 2 * n, 3, padding=1, stride=2)
        self.fc = PHMLinear(n, 2 * n * 16, 2 * n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("n", [2, 4, 8])
def test_same_numerics_both_ways(n: int) -> None:
    torch.manual_seed(n)
    net = PHCNN(n)
    x = torch.randn(1, n, 8, 8)
    dense = _check(net, x, "dense")
    fact = _check(net, x, "factored")
    np.testing.assert_allclose(fact.run(x.numpy()), dense.run(x.numpy()), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_factored_flash_is_about_one_nth(n: int) -> None:
    torch.manual_seed(0)
    i, o = 48 // n, 40 // n
    lin = PHMLinear(n, n * i, n * o)
    x = torch.randn(1, n * i)
    dense = edgec.compile(lin, example_inputs=(x,), options={"phm": "dense"}).report()
    fact = edgec.compile(lin, example_inputs=(x,), options={"phm": "factored"}).report()
    out, inp = n * o, n * i
    assert dense["weight_bytes"] == 4 * (out * inp + out)
    assert fact["weight_bytes"] == 4 * (n**3 + out * inp // n + out)
    assert fact["params"] == n**3 + out * inp // n + out
    if "structure" in fact:
        assert fact["structure"]["phm_dense_equivalent_params"] == out * inp
    # the convolution: dense flash holds at least out*in*k*k weights, factored n^3 + that / n
    conv = PHConv(n, n * i, n * o, 3, padding=1)
    xc = torch.randn(1, n * i, 6, 6)
    d = edgec.compile(conv, example_inputs=(xc,), options={"phm": "dense"}).report()
    f = edgec.compile(conv, example_inputs=(xc,), options={"phm": "factored"}).report()
    assert d["params"] == out * inp * 9
    assert f["weight_bytes"] == 4 * (n**3 + out * inp * 9 // n)
    assert f["weight_bytes"] < d["weight_bytes"] / n + 4 * n**3 + 1


def test_auto_follows_target_flash() -> None:
    torch.manual_seed(0)
    big = PHMLinear(4, 256, 160)  # 160 KiB dense: over 1/4 of a 256 KiB part, not of 4 MiB
    x = torch.randn(1, 256)
    m0 = edgec.compile(big, example_inputs=(x,), options={"target": "cortex-m0"})
    m4 = edgec.compile(big, example_inputs=(x,), options={"target": "cortex-m4f"})
    assert "PhmLinear" in _ops(m0) and "PhmLinear" not in _ops(m4)
    assert m4.report()["weight_bytes"] > 3 * m0.report()["weight_bytes"]
    explicit = edgec.compile(big, example_inputs=(x,),
                             options={"phm": "auto", "target": "cortex-m0",
                                      "phm_flash_fraction": "0.9"})
    assert "PhmLinear" not in _ops(explicit)
    # greedy in model order: the first layer fits the budget, the second does not
    net = nn.Sequential(PHMLinear(2, 16, 16), PHMLinear(2, 16, 16))
    xs = torch.randn(1, 16)
    m = edgec.compile(net, example_inputs=(xs,), options={"phm_flash_bytes": 2000,
                                                         "phm_flash_fraction": 0.75})
    assert _ops(m).count("PhmLinear") == 1 and _ops(m).index("PhmLinear") == 1
    with torch.no_grad():
        np.testing.assert_allclose(m.run(xs.numpy()), net(xs).numpy(), rtol=RTOL, atol=ATOL)


def test_cli_option(tmp_path: Path) -> None:
    from edgec.cli import main

    src = tmp_path / "net.py"
    src.write_text(
        "import torch\nfrom edgec.nn.phm import PHMLinear\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return PHMLinear(4, 16, 8), (torch.randn(1, 16),)\n"
    )
    for mode, marker in (("factored", "PHM linear, factored"), ("dense", None)):
        out = tmp_path / mode
        rc = main(["compile", f"{src}:make", "-o", str(out), "--option", f"phm={mode}"])
        assert rc == 0
        c = (out / "net.c").read_text()
        assert (marker in c) if marker else ("PHM linear" not in c)
    assert main(["compile", f"{src}:make", "-o", str(tmp_path / "x"), "--option", "phm=x"]) == 2


class MyPHM(nn.Module):
    """A user's own copy of the paper's layer (different module, same attribute names)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(3, 3, 3))
        self.s = nn.Parameter(torch.randn(3, 2, 4))
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sum(torch.stack([torch.kron(self.a[m], self.s[m]) for m in range(3)]), 0)
        return x @ w.T + self.bias


def test_user_registered_class() -> None:
    torch.manual_seed(1)
    layer = MyPHM()
    x = torch.randn(2, 12)
    qual = f"{MyPHM.__module__}.{MyPHM.__qualname__}"
    register_phm_class(qual, "linear")
    m = _check(layer, x, "factored")
    assert "PhmLinear" in _ops(m)
    with pytest.raises(EdgecError, match="kind='dense'"):
        register_phm_class(qual, "dense")


@pytest.mark.parametrize("mode", ["factored", "dense"])
def test_strict_and_sanitized(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = PHCNN(4)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = net(x).numpy().reshape(-1)
    m = edgec.compile(net, example_inputs=(x,), options={"phm": mode}, name="phcnn")
    m.write(tmp_path)
    flat = ", ".join(f"{v:.9g}f" for v in x.numpy().reshape(-1))
    n_out = expected.size
    (tmp_path / "main.c").write_text(
        f'#include <stdio.h>\n#include "phcnn.h"\nstatic const float x[{x.numel()}] = {{{flat}}};\n'
        f"int main(void)\n{{\n    float y[{n_out}];\n    phcnn_run(x, y);\n"
        f'    for (int i = 0; i < {n_out}; ++i) printf("%.9g\\n", (double)y[i]);\n'
        f"    return 0;\n}}\n"
    )
    exe = tmp_path / "run"
    subprocess.run([host_cc(), *STRICT, *SANITIZE, "-O1", "-I", str(tmp_path), "-o", str(exe),
                    str(tmp_path / "main.c"), str(tmp_path / "phcnn.c"), "-lm"], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    np.testing.assert_allclose(np.array(out, np.float32), expected, rtol=RTOL, atol=ATOL)
    if shutil.which("arm-none-eabi-gcc"):
        subprocess.run(
            ["arm-none-eabi-gcc", *STRICT, "-O2", "-mcpu=cortex-m4", "-mthumb",
             "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-c", "-o", str(tmp_path / "m.o"),
             str(tmp_path / "phcnn.c")],
            check=True,
        )


def test_bad_input() -> None:
    torch.manual_seed(0)
    layer = PHMLinear(2, 4, 6)
    x = torch.randn(1, 4)
    with pytest.raises(EdgecError, match="option phm='sparse'"):
        edgec.compile(layer, example_inputs=(x,), options={"phm": "sparse"})
    with pytest.raises(EdgecError, match="phm_flash_fraction=2.0"):
        edgec.compile(layer, example_inputs=(x,), options={"phm_flash_fraction": 2})
    with pytest.raises(EdgecError, match="unknown target 'nope'"):
        edgec.compile(layer, example_inputs=(x,), options={"target": "nope"})
    with pytest.raises(UnsupportedOpError, match=r"input \[1, 5\] must end in 4 features"):
        edgec.compile(layer, example_inputs=(torch.randn(1, 5),))
    bad = PHMLinear(2, 4, 6)
    bad.a = nn.Parameter(torch.randn(2, 3, 2))
    with pytest.raises(UnsupportedOpError, match=r"PHM factors A \[2, 3, 2\]"):
        edgec.compile(bad, example_inputs=(x,))
    conv = PHConv(2, 4, 4, 3)
    with pytest.raises(UnsupportedOpError, match=r"must be \[N, 4, H, W\]"):
        edgec.compile(conv, example_inputs=(torch.randn(1, 6, 5, 5),))
    conv.stride = (1, 2, 3)
    with pytest.raises(UnsupportedOpError, match="stride"):
        edgec.compile(conv, example_inputs=(torch.randn(1, 4, 5, 5),))
    for err in (EdgecError, UnsupportedOpError):
        try:
            edgec.compile(bad, example_inputs=(x,))
        except err as exc:
            assert "\n" not in str(exc)
    with pytest.raises(ValueError, match="multiples of n=3"):
        PHMLinear(3, 4, 6)
