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
    """A map-style dataset of clips.

    ``load(index, seed)``: ``seed`` drives everything random about the sample (clip start,
    crop, flip), so a sample is a pure function of (index, seed). ``path(index)`` names the
    file behind an index, for error reports. ``clip_frames(index)``: its clip length (1 for a
    one-frame image clip).
    """

    def __len__(self) -> int: ...

    def load(self, index: int, seed: int) -> Sample: ...

    def path(self, index: int) -> str: ...

    def clip_frames(self, index: int) -> int: ...
