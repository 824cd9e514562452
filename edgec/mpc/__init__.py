"""Newton-type MPC on a compiled forward model: configs, controller generation, simulation.

- :mod:`edgec.mpc.config`: TOML controller configs; :mod:`edgec.mpc.build`: the forward model
  + its generated Jacobian + the C runtime (``firmware/mpc/``) as sources, a host library or a
  firmware project;
- :mod:`edgec.mpc.plants`, :mod:`edgec.mpc.pid`: plant models and the tuned PID baseline;
- :mod:`edgec.mpc.reference`: the Python reference of the solver; :mod:`edgec.mpc.simulate`:
  closed loops (plots, CSV, tables); :mod:`edgec.mpc.learn`: learned forward models;
- :mod:`edgec.mpc.target`: the controller on an emulated board, ticks exchanged with the host.

May import: ``edgec.api``, ``edgec.ir``, ``edgec.passes``, ``edgec.backend``, ``edgec.ops``,
``edgec.mcu``, ``edgec.errors``, ``edgec.tables``, ``edgec._package``; never the CLI.
"""
