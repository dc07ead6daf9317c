"""The trainable JEPA: student encoder, predictor, objective terms, and the EMA teacher."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from jepactl.config import Recipe
from jepactl.data.loader import to_model_input
from jepactl.grid import Masks
from jepactl.models import build_encoder, build_predictor
from jepactl.models.vit import VideoViT
from jepactl.objectives import ModelDims, StepContext, Term, build_terms


def term_specs(
    terms: Mapping[str, Mapping[str, Any] | bool | None],
) -> dict[str, Mapping[str, Any]]:
    """The recipe's term entries as parameter mappings; :func:`jepactl.config.parse_recipe`
    has already turned ``name: {}``/empty values into ``{}`` and dropped ``name: false``."""
    specs: dict[str, Mapping[str, Any]] = {}
    for name, params in terms.items():
        if not isinstance(params, Mapping):
            raise TypeError(
                f"objective.terms.{name} is {params!r}, not a mapping of parameters "
                "(recipes must go through jepactl.config.parse_recipe)"
            )
        specs[name] = params
    return specs


class JEPA(nn.Module):
    """Everything that trains, in one module, so one DDP wrapper syncs all of it.

    ``forward`` returns the recipe's named, weighted loss terms; the caller sums them. The
    teacher (absent when the recipe disables EMA) is a submodule, saved and moved with the
    rest, but excluded from DDP: it receives no gradient and is updated by EMA on every rank
    identically.
    """

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.student = build_encoder(recipe.model)
        dims = ModelDims(
            self.student.out_dim,
            self.student.embed_dim,
            recipe.model.patch_size,
            recipe.model.tubelet,
        )
        self.terms = build_terms(term_specs(recipe.objective.terms), dims)
        terms = [cast(Term, t) for t in self.terms.values()]  # build_terms holds only Terms
        predict_context = any(t.needs_context_predictions for t in terms)
        self.predictor = build_predictor(recipe.model, self.student.out_dim, predict_context)
        recompute = recipe.train.activation_checkpointing  # the teacher runs without gradients
        self.student.grad_checkpointing = self.predictor.grad_checkpointing = recompute
        # "EMA disabled" builds no teacher at all, so nothing untrained can be evaluated later.
        self.teacher: VideoViT | None = None
        if recipe.objective.teacher == "ema":
            self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.stopgrad_targets = recipe.objective.stopgrad_targets
        self.full_clip_grad = any(t.uses_full_clip() for t in terms)
        self.seed = recipe.train.seed
        self.num_epochs = recipe.optim.epochs
        self.iters_per_epoch = recipe.optim.iters_per_epoch

    def teacher_names(self) -> list[str]:
        """State names DDP must leave alone."""
        if self.teacher is None:
            return []
        return [f"teacher.{n}" for n, _ in self.teacher.named_parameters()] + [
            f"teacher.{n}" for n, _ in self.teacher.named_buffers()
        ]

    def train(self, mode: bool = True) -> JEPA:
        """The teacher always stays in eval mode (no drop-path on the targets)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(
        self, clips: torch.Tensor, masks: list[Masks], step: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Returns the weighted loss terms (to be summed) and detached diagnostics.

        ``clips``: uint8 ``[B, T, H, W, C]`` as loaded (normalised at the start of
        :meth:`losses`, so a compiled step fuses the conversion into one pass), or already
        normalised float ``[B, C, T, H, W]``."""
        ctx = self.context(clips, masks, step)
        return self.losses(ctx), ctx.logs

    def context(self, clips: torch.Tensor, masks: list[Masks], step: int) -> StepContext:
        """The step's :class:`StepContext`. The step's Python numbers become tensors here
        (each term's λ, its random draws), so :meth:`losses`, the part ``train.compile``
        compiles, never reads a number that changes from step to step."""
        epoch = step // self.iters_per_epoch
        terms = [cast(Term, t) for t in self.terms.values()]
        values = [t.coefficient(step, epoch, self.num_epochs) for t in terms]
        coefs = torch.tensor(values, dtype=torch.float32)
        if clips.device.type == "cuda":  # a pinned copy does not wait for the device
            coefs = coefs.pin_memory()
        coefs = coefs.to(clips.device, non_blocking=True)
        draws: dict[str, torch.Tensor] = {}
        for term in terms:
            drawn = term.draw(step, self.seed, clips.device)
            if drawn is not None:
                draws[term.name] = drawn
        return StepContext(
            clips=clips,
            masks=masks,
            step=step,
            student=self.student,
            predictor=self.predictor,
            teacher=self.teacher,
            stopgrad_targets=self.stopgrad_targets,
            full_clip_grad=self.full_clip_grad,
            epoch=epoch,
            num_epochs=self.num_epochs,
            seed=self.seed,
            coefficients={t.name: coefs[i] for i, t in enumerate(terms)},
            draws=draws,
        )

    def losses(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Student, predictor, teacher and every term on one step's context: the region
        ``train.compile`` compiles. It reads only tensors of ``ctx`` (a term that reads
        ``ctx.step`` itself makes the compiled step recompile when the step changes)."""
        if ctx.clips.dtype == torch.uint8:
            ctx.clips = to_model_input(ctx.clips)
        losses: dict[str, torch.Tensor] = {}
        for term in self.terms.values():
            losses.update(term(ctx))
        return losses

    def trainable(self) -> list[nn.Module]:
        return [self.student, self.predictor, self.terms]
