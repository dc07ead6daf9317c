"""AdamW with the usual weight-decay exclusions, learning-rate schedules and the EMA update.

Shared by pretraining (:func:`build_optimizer`, :func:`learning_rate`) and the probes
(:func:`param_groups`, :func:`lr_factor`): one definition of which parameters decay and of
the cosine decay.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

import torch
from torch import nn

from jepactl.config import OptimConfig


def param_groups(
    modules: Iterable[nn.Module], weight_decay: float, no_decay: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices (decayed), and biases, norm weights and other 1-D
    parameters (not decayed), as are parameters whose last name is in ``no_decay`` (the
    probes' ``query_tokens`` and ``cls_token``)."""
    decay: list[nn.Parameter] = []
    kept: list[nn.Parameter] = []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            leaf = name.rsplit(".", 1)[-1]
            (kept if p.ndim <= 1 or leaf == "bias" or leaf in no_decay else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": kept, "weight_decay": 0.0},
    ]


def build_optimizer(modules: Iterable[nn.Module], cfg: OptimConfig) -> torch.optim.AdamW:
    betas = (cfg.betas[0], cfg.betas[1])
    groups = param_groups(modules, cfg.weight_decay)
    # fused: one kernel per step for all parameters (CPU and CUDA; 1-2 % of the CPU synth
    # step, docs/performance.md), the same update as the per-parameter loop
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.start_lr, betas=betas, eps=cfg.eps, fused=fused)


def total_steps(cfg: OptimConfig) -> int:
    return cfg.epochs * cfg.iters_per_epoch


def decay_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """After the warm-up: 1 for ``constant``, else cosine from 1 at ``warmup`` to 0 at
    ``total`` (and 0 after it)."""
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up ``start_lr -> lr`` over ``warmup_epochs``, then cosine to ``final_lr``.

    ``schedule: constant`` holds ``lr`` after the warm-up: what the paper's code actually ran
    (its cosine went from 6e-4 to 6e-4), although the paper says cosine.
    """
    warmup = round(cfg.warmup_epochs * cfg.iters_per_epoch)
    if step < warmup:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / warmup
    factor = decay_factor(step, total_steps(cfg), warmup, cfg.schedule)
    return cfg.final_lr + (cfg.lr - cfg.final_lr) * factor


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """A probe's LR multiplier at optimizer step ``step`` (0-based) of ``total``: linear
    warm-up over ``warmup`` steps (``1/warmup`` at the first), then :func:`decay_factor`."""
    if step < warmup:
        return (step + 1) / warmup
    return decay_factor(step, total, warmup, schedule)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ̄ <- m θ̄ + (1 - m) θ`` for every parameter, as one fused foreach op."""
    t_params: list[torch.Tensor] = list(teacher.parameters())
    s_params: list[torch.Tensor] = list(student.parameters())
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
