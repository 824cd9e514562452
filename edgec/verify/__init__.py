"""Verification: the compiled C against the source model run in its own framework.

- :mod:`edgec.verify.reference`: the source model's reference runtime (onnxruntime for ONNX,
  torch for ``nn.Module`` / ``file.py:fn`` / ``.pt2``), mapped onto the C model's ports;
- :mod:`edgec.verify.compare`: runs the C (host library, or firmware on a target's emulated
  board) and the reference on the same input sets and compares them within tolerances.

``edgec.api.CompiledModel.verify`` and ``edgec verify`` use it. It takes a compiled model by its
interface (:class:`edgec.mcu.model.CompiledLike`), never importing ``edgec.api``.

May import: ``edgec.frontend`` (loading the source again), ``edgec.mcu`` (runs on targets),
``edgec.backend``, ``edgec.ir``, ``edgec.errors``, ``edgec.tables``; never the API or the CLI.
"""
