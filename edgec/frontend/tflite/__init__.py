"""TFLite front-end: ``.tflite`` flatbuffers → IR, without TensorFlow.

- :mod:`~edgec.frontend.tflite.reader`: the flatbuffer (schema module of ai-edge-litert or
  tflite-micro) → plain objects;
- :mod:`~edgec.frontend.tflite.importer`: model-level checks, inputs/outputs, the driver;
- :mod:`~edgec.frontend.tflite.context`: what a translation function sees;
- :mod:`~edgec.frontend.tflite.tables`: which translation handles an operator;
- :mod:`~edgec.frontend.tflite.float_ops`: float32 builtins → edgec ops (one function each);
- :mod:`~edgec.frontend.tflite.loops`: WHILE with a static trip count → Scan.
"""
