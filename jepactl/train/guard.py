"""Stop (or skip) on a non-finite loss without reading the loss back every step.

By default (``tolerate=0``) the check costs no host synchronisation: each step folds
"is every term finite?" into tensors on the device, and :meth:`NonFiniteGuard.check` reads
them back at the boundaries where the loop synchronises anyway (logging, checkpointing). It
raises :class:`~jepactl.errors.NonFiniteLossError` naming the first bad step and its terms
*before* anything of that interval is logged or saved, so the last checkpoint on disk is the
last good state.

With ``tolerate=N > 0`` (``--skip-nonfinite N``) every step is checked before the optimizer
steps (one synchronisation per step, agreed over ranks): a non-finite step's update (AdamW
and EMA) is skipped, logged, and counted; the run stops when more than ``N`` steps were
skipped over its whole life (the count is saved in checkpoints).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from jepactl.dist import DistInfo
from jepactl.errors import NonFiniteLossError


class NonFiniteGuard:
    """Watches the loss terms of every step; see the module doc."""

    def __init__(self, tolerate: int, device: torch.device, skipped: int = 0) -> None:
        if tolerate < 0:
            raise ValueError(f"tolerate must be >= 0, got {tolerate}")
        self.tolerate = tolerate
        self.skipped = skipped
        self.names: list[str] = []
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_values: torch.Tensor | None = None

    @property
    def skips(self) -> bool:
        """Whether non-finite steps are skipped (and so checked every step)."""
        return self.tolerate > 0

    def observe(self, losses: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """Record step ``step``'s (1-based) terms; returns the on-device "all finite" flag."""
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        finite = torch.isfinite(values).all()
        if not self.names:
            self.names = list(losses)
            self.first_values = torch.zeros_like(values)
        assert self.first_values is not None
        new = (self.first_step < 0) & ~finite
        self.first_step = torch.where(new, step, self.first_step)
        self.first_values = torch.where(new, values, self.first_values)
        return finite

    def skip(self, finite: torch.Tensor, step: int, info: DistInfo) -> bool:
        """``tolerate > 0`` only: whether every rank's step was finite; if not, count a skip
        (the caller then skips the update) and reset the record of the first bad step."""
        bad = torch.tensor([int(not bool(finite))], dtype=torch.int64)
        if info.distributed:
            dist.all_reduce(bad, group=info.control_group)
        if not int(bad):
            return False
        self.skipped += 1
        if self.skipped > self.tolerate:
            raise NonFiniteLossError(
                f"{self.skipped} steps had a non-finite loss (last at step {step}), more than "
                f"--skip-nonfinite {self.tolerate} allows; the last checkpoint is the last good "
                "state: lower optim.lr or check the data, then rerun to resume"
            )
        self.first_step.fill_(-1)
        return True

    def check(self, info: DistInfo, last_good: str) -> None:
        """Raise if any step since the last check had a non-finite term (all ranks agree)."""
        first = self.first_step.reshape(1).cpu()
        if info.distributed:
            # The earliest bad step of any rank; -1 (none) must not win the MIN.
            first = torch.where(first < 0, torch.iinfo(torch.int64).max, first)
            dist.all_reduce(first, op=dist.ReduceOp.MIN, group=info.control_group)
            first = torch.where(first == torch.iinfo(torch.int64).max, -1, first)
        step = int(first)
        if step < 0:
            return
        terms = "some rank's loss"
        if self.first_values is not None and int(self.first_step) == step:
            values = self.first_values.cpu().tolist()
            terms = ", ".join(
                f"{n}={v}" for n, v in zip(self.names, values, strict=True) if not _finite(v)
            )
        raise NonFiniteLossError(
            f"non-finite loss at step {step} ({terms}); stopped without saving, {last_good}: "
            "lower optim.lr or check the data, then rerun to resume, or pass "
            "--skip-nonfinite N to skip up to N such steps"
        )


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
