"""Which translation table handles an operator, and TFLite quantization → IR quantization."""

from __future__ import annotations

from edgec.errors import UnsupportedOpError
from edgec.frontend.tflite.context import Ctx, Translator
from edgec.frontend.tflite.float_ops import FLOAT_OPS
from edgec.frontend.tflite.int8_layers import INT8_LAYER_OPS
from edgec.frontend.tflite.int8_ops import INT8_OPS
from edgec.frontend.tflite.loops import translate_while
from edgec.frontend.tflite.reader import TflOperator, TflTensor
from edgec.ir import Quant


def op_kind(cx: Ctx, op: TflOperator) -> str:
    """'int8' when the operator reads or writes int8 tensors (or (de)quantizes), else 'float'."""
    if op.op in ("QUANTIZE", "DEQUANTIZE"):
        return "int8"
    for k in op.inputs + op.outputs:
        if k >= 0 and cx.sg.tensors[k].type == "INT8":
            return "int8"
    return "float"


def tables() -> dict[str, dict[str, Translator]]:
    return {"float": {**FLOAT_OPS, "WHILE": translate_while},
            "int8": {**INT8_OPS, **INT8_LAYER_OPS, "WHILE": translate_while}}


def translator_for(cx: Ctx, op: TflOperator) -> Translator:
    all_tables = tables()
    if op.op == "CUSTOM":
        raise UnsupportedOpError(
            f"{cx.where}: custom op '{op.custom_code}' is not supported; supported builtins: "
            f"{', '.join(sorted(all_tables['float']))}"
        )
    kind = op_kind(cx, op)
    table = all_tables[kind]
    fn = table.get(op.op)
    if fn is None:
        what = "float32" if kind == "float" else "int8"
        supported = ", ".join(sorted(table))
        raise UnsupportedOpError(
            f"{cx.where}: builtin {op.op} is not supported on {what} tensors; supported "
            f"{what} builtins: {supported}"
        )
    return fn


def quant_of(t: TflTensor) -> Quant | None:
    """The IR quantization of an int8 tensor or int32 bias; None when it is not quantized."""
    if t.quant is None or t.type not in ("INT8", "INT32"):
        return None
    axis = t.quant.axis if t.quant.scale.size > 1 else None
    return Quant(t.quant.scale, t.quant.zero_point, axis)
