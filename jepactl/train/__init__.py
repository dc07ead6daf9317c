"""Pretraining: the JEPA model wrapper, the loop, optimisation, checkpoints, distribution."""
