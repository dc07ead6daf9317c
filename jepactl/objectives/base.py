"""What every objective term sees (``StepContext``) and the ``Term`` base class.

A recipe lists terms by registry name with their parameters; the model builds one ``Term`` per
entry and the training step is ``sum(term(ctx) for term in terms)``. Everything a term may read
is a lazily computed, cached attribute of :class:`StepContext`, so shared work (the student's
context encoding, the predictor, the teacher targets) runs once per step and only when some
term asks for it. New terms subclass :class:`Term`, implement :meth:`Term.loss` and register in
:data:`jepactl.objectives.TERMS`; nothing else changes. A term outside the package is named by
its dotted path or an entry point instead (:mod:`jepactl.plugins`, docs/extending.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, overload

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.grid import Masks, TokenGrid

if TYPE_CHECKING:  # the model code (timm) is not needed to validate a recipe
    from jepactl.models import Predictor, VideoViT


T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


class shared(Generic[T]):
    """A :class:`StepContext` attribute computed on first read and kept for the step.

    ``functools.cached_property`` does the same, but on Python 3.11 it takes a lock on every
    first read, which ``torch.compile`` cannot trace (a graph break for every shared value).
    This one stores the value in the instance ``__dict__`` (which then shadows the descriptor),
    with no lock: a step context belongs to one thread.
    """

    def __init__(self, fn: Callable[[Any], T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> shared[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | shared[T]:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


def paired(a: Sequence[A], b: Sequence[B]) -> list[tuple[A, B]]:
    """``list(zip(a, b, strict=True))`` in a form ``torch.compile`` traces (Dynamo has no model
    of the strict ``zip``): the per-group lists of a step always have one entry per mask group."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} entries against {len(b)} mask groups")
    return [(a[i], b[i]) for i in range(len(a))]


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


@dataclass(frozen=True)
class ModelDims:
    """Sizes a term's heads are built for: encoder output width ``out_dim`` (``levels x
    level_dim`` with deep supervision), and the pixel size of a token."""

    out_dim: int
    level_dim: int
    patch_size: int
    tubelet: int


@dataclass
class GridView:
    """Student tokens on the ``T' x H' x W'`` grid, for the temporal terms.

    ``z``: ``[B, T, H, W, D]`` (zeros where no token was encoded); ``present``: ``[B, T, H, W]``
    bool. :attr:`pairs` marks the ``(t, t + 1)`` pairs where both tokens are present.
    """

    z: torch.Tensor
    present: torch.Tensor

    @property
    def pairs(self) -> torch.Tensor:
        """``[B, T - 1, H, W]`` bool: both ``t`` and ``t + 1`` are present."""
        return self.present[:, :-1] & self.present[:, 1:]


def scatter_to_grid(tokens: torch.Tensor, idx: torch.Tensor, grid: TokenGrid) -> GridView:
    """Place ``tokens`` ``[B, K, D]`` at flat indices ``idx`` ``[B, K]`` of an empty grid."""
    b, _, d = tokens.shape
    z = tokens.new_zeros(b, grid.num_tokens, d).scatter(
        1, idx.unsqueeze(-1).expand(-1, -1, d), tokens
    )
    present = torch.zeros(b, grid.num_tokens, dtype=torch.bool, device=idx.device)
    present.scatter_(1, idx, True)
    shape = (b, grid.t, grid.h, grid.w)
    return GridView(z.view(*shape, d), present.view(shape))


TemporalTokens = Literal["context", "full"]


@dataclass
class StepContext:
    """Inputs and lazily computed intermediates of one training step.

    ``clips``: normalised pixels ``[B, C, T, H, W]``; ``masks``: one :class:`Masks` per mask
    group; ``step``/``epoch``/``num_epochs``: schedule position (0-based) for term weights;
    ``seed``: the run seed, for terms that draw shared random numbers (identical on every rank).

    ``teacher`` is the EMA target encoder, or ``None`` when the recipe disables EMA: the
    targets are then the online student's own full-clip output, with a stop-gradient unless
    ``stopgrad_targets`` is false (the reference code's reading, where gradient flows through
    both branches).
    """

    clips: torch.Tensor
    masks: list[Masks]
    step: int
    student: VideoViT
    predictor: Predictor
    teacher: Callable[[torch.Tensor], torch.Tensor] | None
    stopgrad_targets: bool = True
    #: Some term reads the full-clip student pass with gradient (``tokens: full``); otherwise
    #: EMA-free stop-gradient targets are computed without building a graph.
    full_clip_grad: bool = False
    epoch: int = 0
    num_epochs: int = 1
    seed: int = 0
    #: Detached diagnostics for metrics.jsonl (not summed into the loss).
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Per term name: its coefficient λ this step as a 0-d tensor, and what :meth:`Term.draw`
    #: drew for it. :class:`jepactl.train.model.JEPA` computes both before the (compiled)
    #: forward, so the step's Python numbers never reach the traced code, where a changing
    #: constant would recompile it every step. Where they are absent (a term called on its
    #: own) :meth:`coefficient` computes λ from ``step``, and the term draws for itself.
    coefficients: dict[str, torch.Tensor] = field(default_factory=dict)
    draws: dict[str, torch.Tensor] = field(default_factory=dict)

    def coefficient(self, term: Term) -> torch.Tensor | float:
        """λ of ``term`` this step."""
        if term.name in self.coefficients:
            return self.coefficients[term.name]
        return term.coefficient(self.step, self.epoch, self.num_epochs)

    @shared
    def grid(self) -> TokenGrid:
        return self.student.grid(self.clips.shape)

    @shared
    def context_tokens(self) -> list[torch.Tensor]:
        """Student encoding of each group's context tokens, ``[B, K, D]`` per group."""
        return self.student.forward_groups(self.clips, [m.context for m in self.masks])

    @shared
    def predictions(self) -> list[Prediction]:
        """Predictor outputs per mask group (context predictions if the predictor has them)."""
        return [
            Prediction(*self.predictor(z, m.context, m.target, self.grid, mask_index=i))
            for i, (z, m) in enumerate(paired(self.context_tokens, self.masks))
        ]

    @shared
    def student_full(self) -> torch.Tensor:
        """The student on the whole clip, with gradient: ``[B, N, D]`` (a second encoder pass;
        computed only if a term or the EMA-free target asks for it)."""
        return self.student(self.clips)

    @shared
    def targets(self) -> torch.Tensor:
        """Level-normalised targets on the full clip, ``[B, N, D]`` float32."""
        if self.teacher is not None:
            with torch.no_grad():
                h = self.teacher(self.clips)
        elif self.stopgrad_targets and not self.full_clip_grad:
            with torch.no_grad():  # the same pass, without keeping its activations
                h = self.student(self.clips)
        else:
            h = self.student_full.detach() if self.stopgrad_targets else self.student_full
        return normalize_targets(h, self.student.embed_dim)

    @shared
    def target_grid(self) -> torch.Tensor:
        """:attr:`targets` on the grid, ``[B, T, H, W, D]``, always without gradient."""
        g = self.grid
        return self.targets.detach().view(-1, g.t, g.h, g.w, self.targets.shape[-1])

    @shared
    def target_delta(self) -> torch.Tensor:
        """Temporal differences of the targets, ``h[t + 1] - h[t]``: ``[B, T - 1, H, W, D]``
        (shared by Delta, LD and VelGate)."""
        h = self.target_grid.detach()
        return h[:, 1:] - h[:, :-1]

    @shared
    def full_view(self) -> GridView:
        """The student's full-clip output on the grid, ``z = f_θ(x)`` (paper Algorithm 2
        line 5), with gradient."""
        g = self.grid
        z = self.student_full.view(-1, g.t, g.h, g.w, self.student_full.shape[-1])
        return GridView(z, torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device))

    @shared
    def context_views(self) -> list[GridView]:
        """Each mask group's student context tokens scattered onto the grid."""
        return [
            scatter_to_grid(z, m.context, self.grid)
            for z, m in paired(self.context_tokens, self.masks)
        ]

    def views(self, tokens: TemporalTokens) -> list[GridView]:
        """The student tokens a temporal term reads: each group's context tokens on the grid
        (the reference), or one full-clip forward (paper Algorithm 2 line 5, literally)."""
        return self.context_views if tokens == "context" else [self.full_view]


class Term(nn.Module):
    """One weighted loss term.

    ``weight`` is the coefficient (λ). With ``warmup_end > warmup_start`` the coefficient is 0
    before ``warmup_start`` and rises linearly to ``weight`` at ``warmup_end`` (the V-JEPA 2.1
    context-loss ramp); the term is still computed during the ramp so that every parameter it
    touches receives a (zero) gradient and DDP needs no unused-parameter search.
    """

    #: Whether the predictor must also predict the context tokens for this term.
    needs_context_predictions: ClassVar[bool] = False

    def __init__(
        self,
        weight: float = 1.0,
        warmup_start: int = 0,
        warmup_end: int = 0,
        anneal: Literal["none", "cosine"] = "none",
    ) -> None:
        super().__init__()
        if warmup_start < 0 or warmup_end < 0:
            raise ValueError("warmup_start and warmup_end must be >= 0")
        if warmup_end and warmup_end <= warmup_start:
            raise ValueError(f"warmup_end ({warmup_end}) must exceed warmup_start ({warmup_start})")
        if anneal not in ("none", "cosine"):
            raise ValueError(f"anneal must be 'none' or 'cosine', got {anneal!r}")
        self.weight = weight
        self.warmup_start = warmup_start
        self.warmup_end = warmup_end
        self.anneal = anneal
        self.name = type(self).__name__

    def setup(self, dims: ModelDims) -> None:
        """Build the term's heads for the model's sizes (no-op for terms without heads)."""

    def coefficient(self, step: int, epoch: int = 0, num_epochs: int = 1) -> float:
        """λ at this point of training: the ramp-in, then (``anneal: cosine``) the per-epoch
        cosine decay ``λ · ½(1 + cos(π · epoch / epochs))`` of Kinematic-Anneal (§3.2)."""
        scale = 1.0
        if self.anneal == "cosine":
            scale = 0.5 * (1.0 + math.cos(math.pi * epoch / max(num_epochs, 1)))
        if not self.warmup_end or step >= self.warmup_end:
            return self.weight * scale
        if step < self.warmup_start:
            return 0.0
        ramp = (step - self.warmup_start) / (self.warmup_end - self.warmup_start)
        return self.weight * scale * ramp

    def loss(self, ctx: StepContext) -> torch.Tensor:
        """The unweighted loss value (a scalar)."""
        raise NotImplementedError

    def draw(self, step: int, seed: int, device: torch.device) -> torch.Tensor | None:
        """Random numbers the term needs at ``step``, drawn before the step's forward (so a
        compiled step sees them as an input, not as a generator it cannot trace); ``loss``
        reads them back from ``ctx.draws[self.name]``. None: the term draws nothing."""
        return None

    def uses_full_clip(self) -> bool:
        """Whether the term reads the full-clip student pass (``tokens: full``)."""
        return getattr(self, "tokens", None) == "full"

    def _zero_touch(self) -> torch.Tensor | float:
        """0 connected to every trainable parameter of the term's heads.

        A head can drop out of a step's graph (one-frame image batches give temporal terms
        nothing to predict; an energy net's output bias never reaches its own gradient). DDP
        with a static graph needs every parameter to receive a gradient every step, so each
        head parameter gets an explicit zero one.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return sum(p.flatten()[0] * 0.0 for p in params) if params else 0.0

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """``{name: coefficient * loss}``; a term whose coefficient is not constantly 1 also
        logs its unweighted value, so it can be watched while its weight ramps in."""
        raw = self.loss(ctx) + self._zero_touch()
        if self.weight != 1.0 or self.warmup_end or self.anneal != "none":
            ctx.logs[f"{self.name}_unweighted"] = raw.detach()
        return {self.name: ctx.coefficient(self) * raw}
