"""jepactl: pretrain Video-JEPA encoders with auxiliary objectives and evaluate them frozen."""

from jepactl.version import __version__

__all__ = ["__version__"]
