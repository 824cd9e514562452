"""Back-ends emit code from an optimised IR graph; they do not change it.

- :mod:`edgec.backend.flatten`: loops (Scan) → ScanBegin, body nodes, ScanEnd for the planner
  and the emitter;
- :mod:`edgec.backend.planner`: the static memory plan (one arena, lifetimes, in-place, views);
- :mod:`edgec.backend.c_emit` (+ ``templates/model.{h,c}.j2``) and :mod:`edgec.backend.c_math`:
  the C99 sources;
- :mod:`edgec.backend.host`: host shared libraries (cached by content) and the ctypes runner;
- :mod:`edgec.backend.report`: the model report as rows for people;
- :mod:`edgec.backend.cuda`: the CUDA target (``<name>.cu``/``.h`` from the C lowering, nvcc and
  host builds, ``CudaModel``).

May import: ``edgec.ir``, ``edgec.errors``, ``edgec.ops``, ``edgec._package``; never the
front-ends, the API, the MCU tooling, the MPC or the CLI.
"""
