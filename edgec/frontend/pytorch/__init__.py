"""The PyTorch front-end: ``nn.Module`` (torch.fx), ``torch.export`` programs and ``.pt2`` files
→ IR, without an ONNX round trip.

- :mod:`~edgec.frontend.pytorch.lowering`: ``TorchLowering`` and the handler tables (the core);
- :mod:`~edgec.frontend.pytorch.importer`: the FX and ATen drivers (``from_module``,
  ``from_exported_program``, ``load_pt2``);
- :mod:`~edgec.frontend.pytorch.nn_modules`: rules for standard torch modules, functions and ATen
  ops;
- ``lib_*``: library families kept whole (spiking neurons, circuit policies, PHM layers, LSM).

May import: ``edgec.ir``, ``edgec.ops``, ``edgec.errors``, ``edgec.passes.sparse`` (shared
option names), ``edgec.mcu.targets`` (PHM ``auto`` reads the target's flash); never the
back-ends or the API.
"""
