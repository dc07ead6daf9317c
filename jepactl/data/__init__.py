"""Data sources, sampling and batching."""
