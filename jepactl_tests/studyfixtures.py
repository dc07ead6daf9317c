"""Tiny studies for the ``jepactl study`` tests: written by the test, run for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

#: conftest.TINY, in study form, at 6 steps a run (checkpoint every 2).
TINY_OVERRIDES = [
    "model.preset=micro",
    "model.pred_depth=1",
    "model.pred_dim=32",
    "model.pred_heads=2",
    "data.crop=32",
    "data.num_frames=4",
    "data.batch_size=4",
    "data.num_workers=0",
    "optim.epochs=1",
    "optim.iters_per_epoch=6",
    "optim.warmup_epochs=0.25",
    "objective.terms.jepa_context.warmup_start=2",
    "objective.terms.jepa_context.warmup_end=4",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.precision=fp32",
    "monitor.every=0",
]
TASK = {"task": "synth-shapes", "probes": ["linear"], "limit": 24, "epochs": 3}


def write_study(path: Path, **fields: Any) -> Path:
    """A study file: 2 synth recipes x 2 seeds x synth-shapes (linear probe), tiny sizes."""
    study: dict[str, Any] = {
        "display_name": "tiny study",
        "recipes": ["synth/baseline", "synth/fwm_hw_ld"],
        "seeds": 2,
        "overrides": list(TINY_OVERRIDES),
        "tasks": [dict(TASK)],
        "baseline": "synth/baseline",
        "resources": {
            "gpus_per_node": 0,
            "cpus_per_task": 1,
            "time_min": 10,
            "eval": {"gpus": 0, "cpus_per_task": 1, "time_min": 10},
        },
    }
    study.update(fields)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def jepactl(
    *args: str, cwd: Path, timeout: float = 600, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``jepactl ARGS`` in a child process (the real entry point, no shared state)."""
    return subprocess.run(
        [sys.executable, "-m", "jepactl", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, **kw,
    )  # fmt: skip
