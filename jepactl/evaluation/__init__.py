"""Frozen evaluation: benchmark definitions, feature extraction to an HDF5 cache, probes."""
