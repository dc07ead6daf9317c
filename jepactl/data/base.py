"""The ``Source`` interface every dataset reader implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Sample:
    """One clip: ``clip`` is uint8 ``[T, H, W, C]`` (an image is a one-frame clip)."""

    clip: torch.Tensor
    label: int
    id: str


class Source(Protocol):
    """A map-style dataset of clips. ``index`` may exceed ``len`` for infinite sources."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
