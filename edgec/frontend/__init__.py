"""Front-ends translate model files and objects into edgec's IR; they do not optimise.

- :mod:`edgec.frontend.onnx_import`: ONNX files and ``ModelProto`` (opsets 7-21, external data,
  local functions);
- :mod:`edgec.frontend.pytorch`: ``nn.Module`` (torch.fx), ``torch.export`` programs, ``.pt2``;
- :mod:`edgec.frontend.tflite`: ``.tflite`` flatbuffers (float32 and int8, WHILE loops);
- :mod:`edgec.frontend.keras`: ``.keras``/``.h5``/SavedModel through TensorFlow's converter.

May import: ``edgec.ir``, ``edgec.errors``, ``edgec.ops`` (shape inference while building),
``edgec.passes`` (shared option names only) and ``edgec.mcu.targets`` (target data for
size-driven lowering choices); never the back-ends, the API, the MCU tooling or the CLI.
"""
