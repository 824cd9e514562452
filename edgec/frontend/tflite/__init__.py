"""TFLite front-end: ``.tflite`` flatbuffers → IR (see reader.py, importer.py)."""
