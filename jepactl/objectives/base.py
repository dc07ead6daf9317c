"""What every objective term sees (``StepContext``) and the ``Term`` base class.

A recipe lists terms by registry name with their parameters; the model builds one ``Term`` per
entry and the training step is ``sum(term(ctx) for term in terms)``. Everything a term may read
is a lazily computed, cached attribute of :class:`StepContext`, so shared work (the student's
context encoding, the predictor, the teacher targets) runs once per step and only when some
term asks for it. New terms subclass :class:`Term`, implement :meth:`Term.loss` and register in
:data:`jepactl.objectives.TERMS`; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.masks.base import Masks, TokenGrid
from jepactl.models import Predictor, VideoViT


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``tokens[b, idx[b, k]]`` for ``tokens`` ``[B, N, D]`` and ``idx`` ``[B, K]``."""
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def normalize_targets(h: torch.Tensor, level_dim: int) -> torch.Tensor:
    """Parameter-free LayerNorm of each ``level_dim``-wide level of the teacher output.

    With deep supervision the encoder output concatenates several levels; each is normalised
    on its own, as V-JEPA 2.1 does.
    """
    levels = h.shape[-1] // level_dim
    h = h.float().unflatten(-1, (levels, level_dim))
    return F.layer_norm(h, (level_dim,)).flatten(-2)


@dataclass
class Prediction:
    """Predictor outputs of one mask group: targets ``[B, M, D]``, context ``[B, K, D]`` or None."""

    target: torch.Tensor
    context: torch.Tensor | None


@dataclass
class StepContext:
    """Inputs and lazily computed intermediates of one training step.

    ``clips``: normalised pixels ``[B, C, T, H, W]``; ``masks``: one :class:`Masks` per mask
    group; ``step``: global optimisation step (0-based) used by term schedules.
    """

    clips: torch.Tensor
    masks: list[Masks]
    step: int
    student: VideoViT
    predictor: Predictor
    target_encoder: Callable[[torch.Tensor], torch.Tensor]
    #: Detached diagnostics for metrics.jsonl (not summed into the loss).
    logs: dict[str, torch.Tensor] = field(default_factory=dict)

    @cached_property
    def grid(self) -> TokenGrid:
        return self.student.grid(self.clips.shape)

    @cached_property
    def context_tokens(self) -> list[torch.Tensor]:
        """Student encoding of each group's context tokens, ``[B, K, D]`` per group."""
        return [self.student(self.clips, keep=m.context) for m in self.masks]

    @cached_property
    def predictions(self) -> list[Prediction]:
        """Predictor outputs per mask group (context predictions if the predictor has them)."""
        return [
            Prediction(*self.predictor(z, m.context, m.target, self.grid, mask_index=i))
            for i, (z, m) in enumerate(zip(self.context_tokens, self.masks, strict=True))
        ]

    @cached_property
    def targets(self) -> torch.Tensor:
        """Level-normalised target-encoder output on the full clip, ``[B, N, D]`` float32."""
        return normalize_targets(self.target_encoder(self.clips), self.student.embed_dim)


class Term(nn.Module):
    """One weighted loss term.

    ``weight`` is the coefficient (λ). With ``warmup_end > warmup_start`` the coefficient is 0
    before ``warmup_start`` and rises linearly to ``weight`` at ``warmup_end`` (the V-JEPA 2.1
    context-loss ramp); the term is still computed during the ramp so that every parameter it
    touches receives a (zero) gradient and DDP needs no unused-parameter search.
    """

    #: Whether the predictor must also predict the context tokens for this term.
    needs_context_predictions: ClassVar[bool] = False

    def __init__(self, weight: float = 1.0, warmup_start: int = 0, warmup_end: int = 0) -> None:
        super().__init__()
        if warmup_start < 0 or warmup_end < 0:
            raise ValueError("warmup_start and warmup_end must be >= 0")
        if warmup_end and warmup_end <= warmup_start:
            raise ValueError(f"warmup_end ({warmup_end}) must exceed warmup_start ({warmup_start})")
        self.weight = weight
        self.warmup_start = warmup_start
        self.warmup_end = warmup_end
        self.name = type(self).__name__

    def coefficient(self, step: int) -> float:
        if not self.warmup_end or step >= self.warmup_end:
            return self.weight
        if step < self.warmup_start:
            return 0.0
        return self.weight * (step - self.warmup_start) / (self.warmup_end - self.warmup_start)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        """The unweighted loss value (a scalar)."""
        raise NotImplementedError

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """``{name: coefficient * loss}``; a term whose coefficient is not constantly 1 also
        logs its unweighted value, so it can be watched while its weight ramps in."""
        raw = self.loss(ctx)
        if self.weight != 1.0 or self.warmup_end:
            ctx.logs[f"{self.name}_unweighted"] = raw.detach()
        return {self.name: self.coefficient(ctx.step) * raw}
