"""Shared fixtures: a tiny, fast version of the synthetic recipe for end-to-end tests."""

from __future__ import annotations

import os

import pytest
import torch

# Keep tests on a predictable thread count (CI has 2 cores).
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = [
    "model.preset=micro",
    "model.pred_depth=1",
    "model.pred_dim=32",
    "model.pred_heads=2",
    "data.crop=32",
    "data.num_frames=4",
    "data.batch_size=4",
    "data.num_workers=0",
    "optim.epochs=2",
    "optim.iters_per_epoch=20",
    "optim.warmup_epochs=0.25",
    "objective.terms.jepa_context.warmup_start=5",
    "objective.terms.jepa_context.warmup_end=15",
    "train.log_every=1",
    "train.checkpoint_every=1000",
    "train.snapshot_every=0",
    "train.precision=fp32",
    "monitor.every=0",  # tests that watch a run turn it on themselves
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
