"""A probe's result: its accuracies, the file it is kept in, and summaries over seeds.

``RUN/probes/<task>-<kind>.json`` holds one result with the keys :data:`RESULT_KEYS`
(accuracies in percent), one file per task and probe kind (:func:`jepactl.rundir.probe_kind`);
``jepactl compare`` reads every such file of a run, one column per task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from jepactl.features.cache import CacheHeader
from jepactl.rundir import RunDir, probe_kind, result_stem

RESULT_KEYS: tuple[str, ...] = (
    "bench",
    "probe",
    "top1",
    "top5",
    "majority",
    "chance",
    "n_train",
    "n_val",
    "n_train_examples",
    "views",
    "num_classes",
    "hparams",
    "checkpoint",
    "weights",
    "pooling",
    "protocol",
    "caches",
    "seed",
    "device",
    "precision",
    "cache_mode",
    "train_loss",
    "sweep",
    "wall_time_s",
)
"""Top-level keys of every result dict (and of ``RUN/probes/<task>-<kind>.json``)."""


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percent of rows whose label is among the ``k`` highest scores (``k`` capped at C)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    hit = (probs.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
    return 100.0 * hit.double().mean().item()


def majority_accuracy(labels: torch.Tensor, num_classes: int) -> float:
    """Accuracy (percent) of always predicting the split's most frequent class."""
    if len(labels) == 0:
        return float("nan")
    counts = torch.bincount(labels, minlength=num_classes)
    return 100.0 * counts.max().item() / len(labels)


def checkpoint_identity(header: CacheHeader) -> dict[str, Any]:
    return {
        "path": header.checkpoint,
        "step": header.checkpoint_step,
        "sha256": header.checkpoint_sha256,
    }


def format_summary(bench: str, result: dict[str, Any]) -> str:
    """The result as one line, e.g.
    ``ssv2: top-1 12.34% (top-5 30.1%, majority 1.2%) attentive, 50 epochs, seed 0``."""
    hp = result["hparams"]
    head = (
        f"{bench}: top-1 {result['top1']:.2f}% (top-5 {result['top5']:.1f}%, "
        f"majority {result['majority']:.1f}%) {result['probe']}"
    )
    if hp.get("impl") == "sklearn":
        return f"{head} (scikit-learn logistic regression), seed {result['seed']}"
    line = f"{head}, {hp['epochs']} epochs, seed {result['seed']}"
    if result.get("sweep"):
        sel = result["sweep"]["selected"]
        line += (
            f"; sweep selected lr {sel['lr']:g} wd {sel['wd']:g} on held-out train "
            f"({sel['holdout_top1']:.1f}%)"
        )
    return line


def write_result(run_dir: Path | RunDir, task: str, result: dict[str, Any]) -> str:
    """Atomically write ``RUN/probes/<task>-<kind>.json`` (the kind read from ``result``, see
    :func:`~jepactl.rundir.probe_kind`); return the one-line summary."""
    RunDir(run_dir).write_result(result_stem(task, probe_kind(result)), result)
    return format_summary(task, result)


def floor_warning(task: str, result: dict[str, Any]) -> str | None:
    """A warning when ``result``'s top-1 is below its val split's majority-class floor (always
    predicting the most frequent class scores ``majority``): the probe learned nothing usable,
    or the features carry less than the label frequencies. ``None`` otherwise."""
    top1, majority = result.get("top1"), result.get("majority")
    if not isinstance(top1, int | float) or not isinstance(majority, int | float):
        return None
    if top1 >= majority:
        return None
    return (
        f"{task} top-1 {top1:.2f}% is below the majority-class floor {majority:.2f}% "
        "(always predicting the most frequent val class); the probe did not learn: try more "
        "epochs, --sweep, or a longer-trained encoder"
    )
