"""A probe's accuracies, the file its result is kept in, and its one-line summaries.

``RUN/probes/<task>-<kind>.json`` holds one :class:`~jepactl.probe.records.ProbeResult`
(accuracies in percent), one file per task and probe kind (its :attr:`~jepactl.probe.records.
ProbeResult.kind`); ``jepactl compare`` reads every such file of a run, one column per task.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from jepactl.probe.records import ProbeResult, write_result_file
from jepactl.rundir import RunDir, result_stem


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


def format_summary(bench: str, result: ProbeResult) -> str:
    """The result as one line, e.g.
    ``ssv2: top-1 12.34% (top-5 30.1%, majority 1.2%) attentive, 50 epochs, seed 0``."""
    head = (
        f"{bench}: top-1 {result.top1:.2f}% (top-5 {_num(result.top5):.1f}%, "
        f"majority {_num(result.majority):.1f}%) {result.probe}"
    )
    if result.sklearn:
        return f"{head} (scikit-learn logistic regression), seed {result.seed}"
    line = f"{head}, {result.epochs} epochs, seed {result.seed}"
    if result.sweep:
        line += "; " + describe_selection(result.sweep)
    return line


def describe_selection(record: Mapping[str, Any]) -> str:
    """The sweep's choice in words, e.g. ``sweep selected lr 0.001 wd 0.05 on held-out train
    (61.2%)``, from the record :func:`jepactl.probe.select.select` returns."""
    sel = record["selected"]
    return (
        f"sweep selected lr {sel['lr']:g} wd {sel['wd']:g} on held-out train "
        f"({sel['holdout_top1']:.1f}%)"
    )


def _num(x: float | None) -> float:
    return float("nan") if x is None else x


def write_result(run_dir: Path | RunDir, task: str, result: ProbeResult) -> str:
    """Atomically write ``RUN/probes/<task>-<kind>.json`` (the result's kind); return the
    one-line summary."""
    write_result_file(RunDir(run_dir).result(result_stem(task, result.kind)), result)
    return format_summary(task, result)


def floor_warning(task: str, result: ProbeResult) -> str | None:
    """A warning when ``result``'s top-1 is below its val split's majority-class floor (always
    predicting the most frequent class scores ``majority``): the probe learned nothing usable,
    or the features carry less than the label frequencies. ``None`` otherwise."""
    top1, majority = result.top1, result.majority
    if majority is None or top1 >= majority:
        return None
    return (
        f"{task} top-1 {top1:.2f}% is below the majority-class floor {majority:.2f}% "
        "(always predicting the most frequent val class); the probe did not learn: try more "
        "epochs, --sweep, or a longer-trained encoder"
    )
