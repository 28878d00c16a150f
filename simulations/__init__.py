"""flrd.simulations: the harness that runs Flower simulations and compares realized cost with theory."""
