"""The package version, in the core layer so every room can record it (exports, results)
without importing the package's top; ``pyproject.toml`` states the same (tested)."""

__version__ = "0.1.0"
