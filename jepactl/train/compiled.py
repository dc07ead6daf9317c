"""``train.compile``: the step's forward and backward as one ``torch.compile`` graph.

What is compiled is :meth:`jepactl.train.model.JEPA.losses`: the student on each mask group's
context, the predictor, the teacher and every objective term. Its backward comes with it
(AOTAutograd). The optimizer step and the EMA update stay eager: they are already single
fused (``foreach``/``fused``) kernels per parameter group.

Three things make the step one graph:

* nothing in it reads a number that changes every step: :meth:`JEPA.forward` turns each
  term's λ and its random draws into tensors before the compiled part
  (:class:`jepactl.objectives.base.StepContext`'s ``coefficients`` and ``draws``);
* nothing in it takes a lock or a C iterator Dynamo cannot trace (the shared work is memoised
  with :class:`jepactl.objectives.base.shared`, per-group pairs come from ``paired``);
* RoPE is real ``(cos, sin)`` arithmetic under compilation (inductor cannot lower complex
  numbers), the complex product in eager, where it is faster.

Shapes: a graph is specialised to its mask sizes (``dynamic=False``; with dynamic sizes
inductor's compiled backward fails a stride assertion in torch 2.14). Masks with
``lengths: fixed`` have one size per group, so the step compiles once. With ``batch-min``
lengths every new combination of sizes compiles again, up to :data:`RECOMPILE_LIMIT`, after
which Dynamo runs the new sizes eagerly; every recompile is logged. ``auto`` therefore turns
compilation on only on CUDA and only when every mask group has fixed lengths.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from jepactl.config import Recipe
from jepactl.log import LOGGER

if TYPE_CHECKING:
    from jepactl.train.model import JEPA

#: Compiled graphs of the step kept for different mask sizes before new sizes run eagerly.
RECOMPILE_LIMIT = 8


def compile_decision(recipe: Recipe, device: torch.device) -> tuple[bool, str]:
    """Whether ``train.compile`` compiles this run's step, and why, in words for the log."""
    setting = recipe.train.compile
    batch_min = [i for i, spec in enumerate(recipe.masks) if not fixed_lengths(spec)]
    if setting is False:
        return False, "train.compile: false"
    if setting is True:
        return True, "train.compile: true"
    if device.type != "cuda":
        return False, "train.compile: auto, off on the CPU"
    if batch_min:
        groups = ", ".join(f"masks.{i}" for i in batch_min)
        return False, (
            f"train.compile: auto, off: {groups} cut to the batch minimum, a new shape every "
            "step (set masks.N.lengths=fixed to compile once)"
        )
    return True, "train.compile: auto, on for CUDA with fixed mask lengths"


def fixed_lengths(spec: Mapping[str, Any]) -> bool:
    """Whether a mask group's spec gives the same sizes every batch (``lengths: fixed``)."""
    return spec.get("lengths", "batch-min") == "fixed"


def compile_losses(model: JEPA) -> None:
    """Replace ``model.losses`` by its compiled form, as ``train.compile`` runs it (one graph
    per mask size: ``dynamic=False``, see the module docstring)."""
    model.losses = torch.compile(model.losses, dynamic=False)  # type: ignore[method-assign]


def _dynamo_counts() -> tuple[int, int, dict[str, int]]:
    """Graphs compiled and graph breaks so far in this process (Dynamo's own counters)."""
    from torch._dynamo.utils import counters

    breaks = dict(counters["graph_break"])
    return int(counters["stats"]["unique_graphs"]), sum(breaks.values()), breaks


@dataclass
class CompiledStep:
    """Compiles ``model.losses`` in place and reports, after each step, what compiling cost:
    the first step's time (compilation included), the graphs and graph breaks, and every
    recompile for a new mask size."""

    model: JEPA
    graphs: int = 0
    breaks: int = 0
    _base: tuple[int, int] = (0, 0)
    _started: float = 0.0
    _reported: bool = False

    def __post_init__(self) -> None:
        import torch._dynamo

        torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
        graphs, breaks, _ = _dynamo_counts()
        self._base = (graphs, breaks)
        compile_losses(self.model)

    def before_step(self) -> None:
        self._started = time.perf_counter()

    def after_step(self, step: int) -> None:
        """Log the first compilation, and any recompile since the last step."""
        graphs, breaks, reasons = _dynamo_counts()
        graphs, breaks = graphs - self._base[0], breaks - self._base[1]
        if not self._reported:
            self._reported = True
            seconds = time.perf_counter() - self._started
            LOGGER.info(
                f"compiled the step in {seconds:.1f} s (first step included): {graphs} graph"
                f"{'' if graphs == 1 else 's'}, {breaks} graph break{'' if breaks == 1 else 's'}"
            )
            for reason, count in reasons.items():
                LOGGER.warning(f"graph break ({count}x): {reason.splitlines()[0]}")
        elif graphs > self.graphs:
            full = graphs >= RECOMPILE_LIMIT
            LOGGER.info(
                f"step {step}: recompiled the step for new mask sizes ({graphs} graphs of at "
                f"most {RECOMPILE_LIMIT}"
                + ("; from now on new sizes run eagerly)" if full else ")")
            )
            if breaks > self.breaks:
                LOGGER.warning(f"step {step}: {breaks - self.breaks} more graph break(s)")
        self.graphs, self.breaks = graphs, breaks
