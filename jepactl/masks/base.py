"""The ``MaskStrategy`` interface (the token grid and ``Masks`` live in :mod:`jepactl.grid`)."""

from __future__ import annotations

from typing import Protocol

import torch

from jepactl.grid import Masks, TokenGrid

__all__ = ["MaskStrategy", "Masks", "TokenGrid"]


class MaskStrategy(Protocol):
    """Samples the context/target split of one mask group for a batch.

    ``generator`` makes the draw reproducible (the training loop derives one per step and
    rank, so an interrupted run resumes onto the very same masks). ``clips`` (uint8
    ``[B, T, H, W, C]``, as loaded, before normalisation) is available for strategies that look
    at the pixels, such as motion-guided masking. Strategies run in the DataLoader workers,
    on the CPU, so sampling them never waits on the accelerator.
    """

    def __call__(
        self,
        batch_size: int,
        grid: TokenGrid,
        generator: torch.Generator,
        clips: torch.Tensor | None = None,
    ) -> Masks: ...
