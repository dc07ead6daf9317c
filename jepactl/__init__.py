"""jepactl: pretrain Video-JEPA encoders with auxiliary objectives and evaluate them frozen."""

__version__ = "0.1.0"
