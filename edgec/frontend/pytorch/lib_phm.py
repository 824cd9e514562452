"""PHM layers (``PHMLinear``, ``PHConv``) written as in the PHNN paper's public code.

The reference layers (``edgec.nn.phm``, and users' copies of the paper's code) cannot be
traced or exported (their Kronecker product builds a ``torch.Size`` from tensors), so edgec keeps
each one as a leaf module and reads its factors ``A`` (attribute ``a`` or ``A``, ``[n, n, n]``)
and ``F`` (``s`` or ``F``, ``[n, out/n, in/n(, k, k)]``) directly.

Compile option ``phm`` (``edgec.compile(..., options={"phm": "factored"})``, CLI
``--option phm=factored``):

* ``dense`` materialises ``W = sum_m A[m] (x) F[m]`` at compile time (a plain Gemm / Conv:
  fastest, ``out*in*k`` weights in flash);
* ``factored`` keeps only ``A`` and ``F`` in flash (``n^3 + out*in*k/n`` weights) and computes
  the Kronecker sums inside the kernel (``PhmLinear`` / ``PhmConv``, see ``edgec.ops.phm``);
* ``auto`` (the default) walks the PHM layers in model order and materialises a layer while the
  dense weight bytes of the PHM layers materialised so far, this one included, stay within
  ``phm_flash_fraction`` (default 0.25) of the target's flash; the others are factored. The
  target is option ``target`` (a name from ``targets/`` or a ``.toml`` path, default
  ``cortex-m4f``); ``phm_flash_bytes`` overrides its flash size.

``PHConv``'s unused ``bias`` is ignored, as its ``forward`` ignores it; ``PHMLinear`` adds its bias.

Your own PHM classes: edgec matches handlers by qualified class name. If your model defines its
own copy of the paper's layers (say ``mynet.layers.PHMLinear``), register it before compiling::

    from edgec.frontend.pytorch.lib_phm import register_phm_class
    register_phm_class("mynet.layers.PHMLinear", "linear")
    register_phm_class("mynet.layers.PHConv", "conv")

The class must hold the factors under one of the names above; convolutions read ``stride`` and
``padding`` (ints or pairs) and a ``bias`` is used only for ``"linear"`` layers (pass
``use_bias=True`` to add a convolution's bias too).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from edgec.errors import EdgecError
from edgec.frontend.pytorch.lowering import (
    FUNCTIONS,
    TensorRef,
    TorchLowering,
    function_handler,
    module_handler,
)
from edgec.frontend.pytorch.nn_modules import conv, linear
from edgec.ops.phm import materialise

PHM_MODES = ("dense", "factored", "auto")
DEFAULT_FLASH_FRACTION = 0.25
#: flash size assumed when the target description cannot be read
DEFAULT_FLASH_BYTES = 1 << 20

_dense_bytes_used: weakref.WeakKeyDictionary[TorchLowering, int] = weakref.WeakKeyDictionary()


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _first_attr(lw: TorchLowering, m: Any, names: tuple[str, ...], what: str) -> np.ndarray:
    for key in names:
        v = getattr(m, key, None)
        if v is not None and hasattr(v, "detach"):
            return _np(v)
    raise lw.unsupported(
        f"PHM layer {type(m).__name__} has no {what} (looked for attribute "
        f"{' or '.join(names)}); supported: the PHNN reference layers' a/s and A/F"
    )


def _factors(lw: TorchLowering, m: Any, f_rank: int) -> tuple[np.ndarray, np.ndarray]:
    a = _first_attr(lw, m, ("a", "A"), "factor A")
    f = _first_attr(lw, m, ("s", "F"), "factor F")
    n = a.shape[0] if a.ndim else 0
    if a.shape != (n, n, n) or f.ndim != f_rank or f.shape[0] != n or not 2 <= n <= 16:
        raise lw.unsupported(
            f"PHM factors A {list(a.shape)} and F {list(f.shape)}: supported A [n, n, n] "
            f"(2 <= n <= 16) with F of rank {f_rank} holding n factors"
        )
    return a, f


#: compile options this module reads (collected by :func:`edgec.api.known_options`)
OPTIONS = {
    "phm": "auto | factored | dense: PHM weights as Kronecker factors or materialised",
    "phm_flash_fraction": "0..1: share of the target's flash auto lets dense PHM use",
    "phm_flash_bytes": "flash bytes auto budgets against (default: the target's flash)",
    "target": "target name whose flash size sizes the PHM budget (edgec targets)",
}


def phm_mode(lw: TorchLowering) -> str:
    mode = str(lw.options.get("phm", "auto")).lower()
    if mode not in PHM_MODES:
        raise EdgecError(f"option phm={mode!r}: expected one of {', '.join(PHM_MODES)}")
    return mode


def flash_budget(lw: TorchLowering) -> int:
    """Bytes of flash ``auto`` lets materialised PHM weights use."""
    try:
        frac = float(lw.options.get("phm_flash_fraction", DEFAULT_FLASH_FRACTION))
    except ValueError:
        raise EdgecError(
            f"option phm_flash_fraction={lw.options['phm_flash_fraction']!r}: expected a number"
        ) from None
    if not 0.0 <= frac <= 1.0:
        raise EdgecError(f"option phm_flash_fraction={frac}: expected a value in [0, 1]")
    return int(frac * target_flash_bytes(lw))


def target_flash_bytes(lw: TorchLowering) -> int:
    if "phm_flash_bytes" in lw.options:
        try:
            return int(lw.options["phm_flash_bytes"])
        except ValueError:
            raise EdgecError(
                f"option phm_flash_bytes={lw.options['phm_flash_bytes']!r}: expected an integer"
            ) from None
    try:
        from edgec.mcu.targets import load_target
    except ImportError:  # pragma: no cover - targets are part of edgec
        return DEFAULT_FLASH_BYTES
    return int(load_target(lw.options.get("target") or None).flash_size)


def choose_factored(lw: TorchLowering, dense_params: int) -> bool:
    """Whether this layer is factored (``auto`` accounts dense bytes per lowering)."""
    mode = phm_mode(lw)
    if mode != "auto":
        return mode == "factored"
    used = _dense_bytes_used.get(lw, 0)
    need = 4 * dense_params
    if used + need <= flash_budget(lw):
        _dense_bytes_used[lw] = used + need
        return False
    return True


def _lower_linear(
    lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict, use_bias: bool = True
) -> TensorRef:
    if len(args) != 1 or kwargs:
        raise lw.unsupported("PHM linear layers take one input tensor")
    x = lw.as_tensor(args[0])
    a, f = _factors(lw, m, 3)
    bias_p = getattr(m, "bias", None) if use_bias else None
    bias = None if bias_p is None else _np(bias_p).reshape(-1)
    return phm_linear(lw, x, a, f, bias, path or "phm")


def phm_linear(
    lw: TorchLowering, x: TensorRef, a: np.ndarray, f: np.ndarray, bias: np.ndarray | None,
    base: str,
) -> TensorRef:
    """``x W^T + bias`` with ``W = sum_m A[m] (x) F[m]``: dense or factored per option ``phm``."""
    n, o, i = (int(d) for d in f.shape)
    if bias is not None and bias.shape != (n * o,):
        raise lw.unsupported(f"PHM linear bias {list(bias.shape)}: expected [{n * o}]")
    if lw.shape(x)[-1:] != (n * i,):
        raise lw.unsupported(f"input {list(lw.shape(x))} must end in {n * i} features")
    if not choose_factored(lw, n * o * n * i):
        return linear(lw, x, materialise(a, f), bias, base)
    ins = [x, lw.const(a, f"{base}_A"), lw.const(f, f"{base}_F")]
    if bias is not None:
        ins.append(lw.const(bias, f"{base}_bias"))
    return lw.add1("PhmLinear", ins, base=base)


def _pair(lw: TorchLowering, v: Any, what: str) -> list[int]:
    vals = list(v) if isinstance(v, (tuple, list)) else [v, v]
    if len(vals) != 2 or not all(isinstance(k, int) and k >= 0 for k in vals):
        raise lw.unsupported(f"PHM convolution {what}={v!r}: supported an int or a pair of ints")
    return [int(k) for k in vals]


def _lower_conv(
    lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict, use_bias: bool = False
) -> TensorRef:
    if len(args) != 1 or kwargs:
        raise lw.unsupported("PHM convolutions take one input tensor")
    x = lw.as_tensor(args[0])
    a, f = _factors(lw, m, 5)
    bias_p = getattr(m, "bias", None) if use_bias else None
    bias = None if bias_p is None else _np(bias_p).reshape(-1)
    stride, padding = getattr(m, "stride", 1), getattr(m, "padding", 0)
    return phm_conv(lw, x, a, f, bias, stride, padding, path or "phconv")


def phm_conv(
    lw: TorchLowering, x: TensorRef, a: np.ndarray, f: np.ndarray, bias: np.ndarray | None,
    stride_v: Any, padding_v: Any, base: str,
) -> TensorRef:
    """A 2-D convolution with weight ``sum_m A[m] (x) F[m]``: dense or factored per ``phm``."""
    n, o, i, kh, kw = (int(d) for d in f.shape)
    stride = _pair(lw, stride_v, "stride")
    pad = _pair(lw, padding_v, "padding")
    if min(stride) < 1:
        raise lw.unsupported(f"PHM convolution stride={stride}: must be >= 1")
    if len(lw.shape(x)) != 4 or lw.shape(x)[1] != n * i:
        raise lw.unsupported(f"input {list(lw.shape(x))} must be [N, {n * i}, H, W]")
    if not choose_factored(lw, n * o * n * i * kh * kw):
        return conv(lw, x, materialise(a, f), bias, stride, pad, 1, 1, base)
    ins = [x, lw.const(a, f"{base}_A"), lw.const(f, f"{base}_F")]
    if bias is not None:
        ins.append(lw.const(bias, f"{base}_bias"))
    attrs = {"strides": stride, "pads": [pad[0], pad[1], pad[0], pad[1]]}
    return lw.add1("PhmConv", ins, attrs, base=base)


def register_phm_class(qualname: str, kind: str, use_bias: bool | None = None) -> None:
    """Recognise the module class ``qualname`` (``module.Class``) as a PHM ``"linear"`` or
    ``"conv"`` layer; ``use_bias`` defaults to True for linear and False for conv layers."""
    if kind not in ("linear", "conv"):
        raise EdgecError(f"register_phm_class: kind={kind!r}, expected 'linear' or 'conv'")
    bias = (kind == "linear") if use_bias is None else bool(use_bias)
    lower = _lower_linear if kind == "linear" else _lower_conv

    def handler(lw: TorchLowering, m: Any, path: str, args: tuple, kwargs: dict) -> TensorRef:
        return lower(lw, m, path, args, kwargs, bias)

    module_handler(qualname)(handler)


# --- PHM layers written as plain code: a folded weight that is a sum of Kronecker products ----


def kron_factors(lw: TorchLowering, w: Any, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(A, F)`` when the constant ``w`` was folded from parameters ``A`` ``[n, n, n]`` and
    ``F`` ``[n, out/n, in/n(, k, k)]`` and equals ``sum_m A[m] (x) F[m]`` (however the code
    wrote the product: ``torch.kron``, broadcasting, ``einsum``...)."""
    if not isinstance(w, TensorRef) or w not in lw.folded:
        return None
    dense = lw.g.const(w)
    if dense is None or dense.ndim != rank - 1:
        return None
    srcs = list(lw.folded[w].values())
    for a in srcs:
        n = a.shape[0] if a.ndim == 3 else 0
        if a.shape != (n, n, n) or not 2 <= n <= 16:
            continue
        for f in srcs:
            if f.ndim != rank or f.shape[0] != n:
                continue
            if dense.shape != (n * f.shape[1], n * f.shape[2], *f.shape[3:]):
                continue
            scale = float(np.abs(dense).max()) or 1.0
            if np.allclose(materialise(a, f), dense, rtol=1e-5, atol=1e-6 * scale):
                return a, f
    return None


_plain_linear = FUNCTIONS["linear"]
_plain_conv2d = FUNCTIONS["conv2d"]


@function_handler("linear")
def _f_linear_phm(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    w = args[1] if len(args) > 1 else kwargs.get("weight")
    fac = kron_factors(lw, w, 3)
    if fac is None:
        return _plain_linear(lw, args, kwargs)
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    bias = None if b is None else lw.g.const(lw.as_tensor(b))
    return phm_linear(lw, lw.as_tensor(args[0]), fac[0], fac[1], bias, "phm")


@function_handler("conv2d")
def _f_conv2d_phm(lw: TorchLowering, args: tuple, kwargs: dict) -> TensorRef:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    given = dict(zip(names, args, strict=False)) | kwargs
    fac = kron_factors(lw, given.get("weight"), 5)
    dilation, groups = given.get("dilation", 1), given.get("groups", 1)
    padding = given.get("padding", 0)
    if fac is None or groups != 1 or dilation not in (1, (1, 1), [1, 1]) or isinstance(
        padding, str
    ):
        return _plain_conv2d(lw, args, kwargs)
    b = given.get("bias")
    bias = None if b is None else lw.g.const(lw.as_tensor(b))
    x = lw.as_tensor(given["input"])
    return phm_conv(lw, x, fac[0], fac[1], bias, given.get("stride", 1), padding, "phconv")


register_phm_class("edgec.nn.phm.PHMLinear", "linear")
register_phm_class("edgec.nn.phm.PHConv", "conv")
