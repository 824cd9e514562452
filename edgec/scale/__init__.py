"""Jobs that outgrow one machine, on Ray: controller tuning, evolution and model x target
verification. One machine by default (``ray.init()`` sized to its cores), a Ray cluster with
``--address``. Ray is the optional extra ``edgec[scale]``.

- :mod:`edgec.scale.session`: starting or joining Ray (the one-line error when it is missing);
- :mod:`edgec.scale.space`: search spaces (TOML: dotted config keys, grids and ranges);
- :mod:`edgec.scale.trial`: one closed-loop trial where a worker runs it (the controller's C
  shipped as text, built there, cached by content hash);
- :mod:`edgec.scale.tune`: ``edgec tune`` (Ray Tune searchers, the resumable results directory,
  the table, the best config, the plot);
- :mod:`edgec.scale.evolve`: ``edgec evolve`` (a seeded separable evolution strategy whose
  generations are evaluated as Ray tasks);
- :mod:`edgec.scale.matrix`: ``edgec verify --matrix`` (model x target pairs as Ray tasks).

May import: ``edgec.mpc``, ``edgec.api``, ``edgec.verify``, ``edgec.mcu``, ``edgec.backend``,
``edgec.errors``, ``edgec.tables``, ``edgec._package``; never the CLI.
"""
