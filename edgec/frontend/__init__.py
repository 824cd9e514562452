"""Front-ends translate model files into edgec's IR; they do not optimise."""
