"""The CUDA back-end: an optimised IR graph → ``<name>.cu`` + ``<name>.h`` (device code over the
CUDA runtime), and the builds that run it.

- :mod:`edgec.backend.cuda.emit`: the sources. Strategy ``fused``: the whole network per sample
  in one kernel, one thread per sample, made of the C back-end's own kernels (the same lowering,
  :func:`edgec.backend.c_emit.lower_c`) compiled as device functions; the same file also builds
  with a host C++ compiler (``EDGEC_HOST_BUILD``), which is how its numerics are checked without
  a GPU;
- :mod:`edgec.backend.cuda.layers`: strategy ``layers`` (one kernel per layer group: CUTLASS
  GEMMs and implicit-GEMM convolutions, own pool/elementwise kernels, one planned NHWC
  workspace; fp32/tf32/bf16) and the size-based choice between the strategies;
- :mod:`edgec.backend.cuda.build`: nvcc (device) and host C++ builds, cached by content;
- :mod:`edgec.backend.cuda.runner`: ctypes runners over those builds (numpy or torch tensors);
- :mod:`edgec.backend.cuda.model`: ``CudaModel``, what ``edgec.compile(..., target="cuda")``
  returns.

May import: ``edgec.ir``, ``edgec.errors``, ``edgec.ops``, ``edgec._package`` and the rest of
``edgec.backend``; never the front-ends, the API, the MCU tooling, the MPC or the CLI.
"""
