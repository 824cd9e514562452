"""Cortex-M targets: descriptions, toolchain, firmware projects, emulated runs, flashing, profiles.

- :mod:`edgec.mcu.targets` (``targets/*.toml``) and :mod:`edgec.mcu.toolchain` (finding tools);
- :mod:`edgec.mcu.project`: firmware projects (startup, linker script, main, Makefile, CMake),
  built to ELF/BIN/HEX with the fit checked;
- :mod:`edgec.mcu.qemu`: running on the emulated boards and reading outputs back bit-exactly;
- :mod:`edgec.mcu.flash`: pyOCD, OpenOCD and QEMU+GDB loading;
- :mod:`edgec.mcu.elf`: sections, symbols, flash/RAM use;
- :mod:`edgec.mcu.profile` + :mod:`edgec.mcu.cycle_tables`: exact instruction counts (QEMU TCG
  plugin), estimated cycles, flash/RAM split;
- :mod:`edgec.mcu.run`: a compiled model's outputs on a target (build, run on QEMU, read back);
- :mod:`edgec.mcu.model`: what a compiled model must offer (``edgec.api.CompiledModel`` does).

The MCU layer sits below the API (``m.build(target=...)``, ``m.profile(target=...)`` reach it),
so it takes a compiled model by its interface, never importing ``edgec.api``.

May import: ``edgec.backend``, ``edgec.ir``, ``edgec.ops``, ``edgec.errors``,
``edgec.tables``, ``edgec._package``; never the front-ends directly, the MPC or the CLI.
"""
