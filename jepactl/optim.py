"""AdamW with the usual weight-decay exclusions and the per-step learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from jepactl.config import OptimConfig


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and biases / norm weights / other 1-D params (not)."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(modules: Iterable[nn.Module], cfg: OptimConfig) -> torch.optim.AdamW:
    betas = (cfg.betas[0], cfg.betas[1])
    groups = param_groups(modules, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.start_lr, betas=betas, eps=cfg.eps)


def total_steps(cfg: OptimConfig) -> int:
    return cfg.epochs * cfg.iters_per_epoch


def learning_rate(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up ``start_lr -> lr`` over ``warmup_epochs``, then cosine to ``final_lr``.

    ``schedule: constant`` holds ``lr`` after the warm-up: what the paper's code actually ran
    (its cosine went from 6e-4 to 6e-4), although the paper says cosine.
    """
    warmup = round(cfg.warmup_epochs * cfg.iters_per_epoch)
    if step < warmup:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - warmup) / max(1, total_steps(cfg) - warmup))
    return cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ̄ <- m θ̄ + (1 - m) θ`` for every parameter, as one fused foreach op."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
