"""One training loop for every probe head, on a frozen-token cache, scored on the val split.

Input: the train and val caches of a task (:mod:`jepactl.features.cache`); an incomplete
cache is refused, and so is a train/val pair from different checkpoints, weights or pooling.
For training every view of a clip is a separate example; for evaluation the softmax is
averaged over a clip's views. Heads are :mod:`jepactl.probe.heads`; with ``sweep=True`` a grid
of heads trains at once and :mod:`jepactl.probe.select` picks one on held-out training clips;
the result dict is :mod:`jepactl.probe.result`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jepactl.dist import resolve_device
from jepactl.features.cache import (
    CacheHeader,
    TokenCache,
    check_same_source,
    read_header,
)
from jepactl.log import progress_bars
from jepactl.optim import lr_factor, param_groups
from jepactl.probe.heads import build_probe
from jepactl.probe.records import CheckpointIdentity, ProbeResult, ProbeSettings
from jepactl.probe.result import majority_accuracy, topk_accuracy
from jepactl.probe.select import select, split_holdout
from jepactl.utils import derive_seed

NO_DECAY_NAMES = ("query_tokens", "cls_token")

SelectionCallback = Callable[[dict[str, Any]], None]
#: ``predict(cache, rows)`` -> view-averaged class probabilities ``[n, C]`` and the labels.
Predictor = Callable[[TokenCache, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms for the duration (restores the previous setting)."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


class HeadTrainer:
    """One head, its AdamW (no decay on biases, norms, query/cls tokens) and its schedule:
    ``step(x, y)`` is one optimizer step on a batch of tokens ``[B, L, D]``."""

    def __init__(
        self,
        head: nn.Module,
        lr: float,
        wd: float,
        total: int,
        warmup: int = 0,
        schedule: str = "cosine",
        amp: bool = False,
    ) -> None:
        self.head = head
        self.amp = amp
        self.opt = torch.optim.AdamW(param_groups([head], wd, NO_DECAY_NAMES), lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, total, warmup, schedule)
        )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on ``(x, y)``, one update; returns the (detached) loss."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            logits = self.head(x)
        loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.detach()


def train_heads(
    heads: Sequence[nn.Module],
    configs: Sequence[tuple[float, float]],
    cache: TokenCache,
    rows: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    schedule: str,
    warmup_epochs: float,
    seed: int,
    device: torch.device,
    amp: bool,
    progress: bool,
) -> list[float]:
    """Train every head on the same batches (one cache pass per epoch for all of them).

    Returns each head's mean training loss over the final epoch.
    """
    steps_per_epoch = math.ceil(len(rows) * cache.header.views / batch_size)
    total = steps_per_epoch * epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    trainers = [
        HeadTrainer(head, lr, wd, total, warmup, schedule, amp)
        for head, (lr, wd) in zip(heads, configs, strict=True)
    ]
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe-shuffle"))
    epoch_loss = [float("nan")] * len(heads)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=epochs,
        desc="probe",
        unit="epoch",
        leave=False,
        disable=not (progress and progress_bars()),
    )
    for h in heads:
        h.train()
    for _epoch in range(epochs):
        sums = torch.zeros(len(heads), dtype=torch.float64)
        count = 0
        for x, y in cache.train_batches(rows, batch_size, gen):
            xf = x.to(device, non_blocking=True).float()
            yd = y.to(device, non_blocking=True)
            for i, trainer in enumerate(trainers):
                sums[i] += trainer.step(xf, yd).double().cpu() * len(y)
            count += len(y)
        epoch_loss = (sums / max(1, count)).tolist()
        bar.set_postfix(loss=f"{min(epoch_loss):.4f}")
        bar.update(1)
    bar.close()
    return epoch_loss


def predict(
    heads: Sequence[nn.Module],
    cache: TokenCache,
    rows: torch.Tensor,
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per head, class probabilities ``[n, C]`` averaged over views; plus the labels."""
    for h in heads:
        h.eval()
    out: list[list[torch.Tensor]] = [[] for _ in heads]
    labels = []
    with torch.no_grad():
        for x, y in cache.eval_batches(rows, batch_size):
            b, v = x.shape[:2]
            xf = x.to(device).float().flatten(0, 1)
            for i, h in enumerate(heads):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = h(xf)
                probs = logits.float().softmax(dim=-1).view(b, v, -1).mean(dim=1)
                out[i].append(probs.cpu())
            labels.append(y)
    num_classes = cache.header.num_classes
    probs = [torch.cat(p) if p else torch.empty(0, num_classes) for p in out]
    return probs, torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)


def fit_sklearn(
    train: TokenCache,
    rows: torch.Tensor,
    c_reg: float,
    seed: int,
    max_iter: int,
    features: str = "mean",
) -> Callable[[TokenCache, torch.Tensor], torch.Tensor]:
    """Fit standardised logistic regression on token means (or the flattened tokens, see
    :meth:`TokenCache.clip_features`); return a ``predict`` function giving view-averaged
    probabilities ``[n, C]`` for rows of a cache."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    feats = train.clip_features(rows, features)
    x = feats.flatten(0, 1).numpy()
    y = train.labels[torch.sort(rows).values].repeat_interleave(train.header.views).numpy()
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c_reg, max_iter=max_iter, random_state=seed)
    clf.fit(scaler.transform(x), y)
    classes = torch.from_numpy(clf.classes_.astype(np.int64))

    def predict(cache: TokenCache, eval_rows: torch.Tensor) -> torch.Tensor:
        f = cache.clip_features(eval_rows, features)
        n, v, _ = f.shape
        p = torch.from_numpy(clf.predict_proba(scaler.transform(f.flatten(0, 1).numpy())))
        full = torch.zeros(n * v, cache.header.num_classes, dtype=torch.float64)
        full[:, classes] = p.to(full.dtype)
        return full.view(n, v, -1).mean(dim=1).float()

    return predict


@dataclass
class Fitted:
    """A trained probe, before val is opened."""

    predict: Predictor
    n_train: int
    lr: float | None = None
    wd: float | None = None
    train_loss: float | None = None
    sweep: dict[str, Any] | None = None


def train_probe(
    train_h5: Path,
    val_h5: Path,
    settings: ProbeSettings | None = None,
    *,
    device: str = "auto",
    bf16: bool = True,
    max_memory_gb: float | None = None,
    chunk_rows: int = 256,
    on_selected: SelectionCallback | None = None,
) -> ProbeResult:
    """Train the probe ``settings`` describe (:class:`~jepactl.probe.records.ProbeSettings`;
    default: an attentive probe, 50 epochs; a task's protocol is
    :func:`~jepactl.probe.records.probe_settings`) on ``train_h5`` and score it on ``val_h5``.

    Args:
        train_h5, val_h5: the split caches (see the module docstring for the schema).
        settings: what to train; on CPU the same settings give a bit-identical result.
        device: ``"auto"`` (CUDA when visible), ``"cpu"`` or ``"cuda[:i]"``.
        bf16: bf16 autocast for the probe on CUDA (never on CPU).
        max_memory_gb: budget for holding a split in memory (default: half the RAM); a larger
            split is streamed from disk each epoch.
        chunk_rows: clips per contiguous HDF5 read.
        on_selected: called with the sweep's selection record once it is final, before the val
            cache is opened.

    Returns:
        The :class:`~jepactl.probe.records.ProbeResult` (accuracies in percent), which records
        ``settings``.

    Raises:
        CacheError: an incomplete cache, or train and val from different checkpoints/weights.
    """
    t0 = time.perf_counter()
    s = settings if settings is not None else ProbeSettings()
    train_h5, val_h5 = Path(train_h5), Path(val_h5)
    dev = resolve_device(device)
    job = _ProbeJob(s, train_h5, val_h5, dev, bf16 and dev.type == "cuda", max_memory_gb,
                    chunk_rows)  # fmt: skip
    return _result(job, _fit_and_score(job, on_selected), t0)


@dataclass
class _ProbeJob:
    """One :func:`train_probe` call's settings, caches, device and cache memory budget."""

    s: ProbeSettings
    train_h5: Path
    val_h5: Path
    dev: torch.device
    amp: bool
    max_memory_gb: float | None
    chunk_rows: int


@dataclass
class _Scored:
    """A probe trained on the train cache and its view-averaged predictions on val."""

    train: CacheHeader
    val: CacheHeader
    fitted: Fitted
    probs: torch.Tensor
    labels: torch.Tensor
    train_mode: str
    val_mode: str


def _fit_and_score(job: _ProbeJob, on_selected: SelectionCallback | None) -> _Scored:
    """Train the probe on the train cache, then (selection final) open val and predict it;
    train and val must come from the same source."""
    if not job.s.sweep:
        # No selection happens, so the val header may be checked before the (long) training.
        val_header: CacheHeader | None = read_header(job.val_h5)
    else:
        val_header = None
    train = TokenCache(job.train_h5, max_memory_gb=job.max_memory_gb, chunk_rows=job.chunk_rows)
    th = train.header
    if val_header is not None:
        check_same_source(th, val_header)
    with _deterministic(job.dev.type == "cpu"):
        fitted = _fit(job.s, train, job.dev, job.amp, on_selected)
        train_mode = train.mode
        train.release()
        # Selection is final: only now is the val split opened.
        val = TokenCache(job.val_h5, max_memory_gb=job.max_memory_gb, chunk_rows=job.chunk_rows)
        check_same_source(th, val.header)
        probs, labels = fitted.predict(val, torch.arange(val.header.n))
        val_mode = val.mode
        val.release()
    return _Scored(th, val.header, fitted, probs, labels, train_mode, val_mode)


def _result(job: _ProbeJob, scored: _Scored, t0: float) -> ProbeResult:
    """The result of a probe scored on val; ``t0`` is when the call began
    (``time.perf_counter``)."""
    s, th, vh, fitted = job.s, scored.train, scored.val, scored.fitted
    probs, labels = scored.probs, scored.labels
    n_classes = th.num_classes
    return ProbeResult(
        bench=th.benchmark,
        probe=s.probe,
        top1=round(topk_accuracy(probs, labels, 1), 4),
        top5=round(topk_accuracy(probs, labels, 5), 4),
        majority=round(majority_accuracy(labels, n_classes), 4),
        chance=round(100.0 / n_classes, 4),
        n_train=fitted.n_train,
        n_val=len(labels),
        n_train_examples=fitted.n_train * th.views,
        views={"train": th.views, "val": vh.views},
        num_classes=n_classes,
        hparams=s.hparams(fitted.lr, fitted.wd),
        checkpoint=CheckpointIdentity(th.checkpoint, th.checkpoint_step, th.checkpoint_sha256),
        weights=th.weights,
        pooling=th.pooling,
        protocol={"train": th.protocol, "val": vh.protocol},
        caches={"train": str(job.train_h5), "val": str(job.val_h5)},
        seed=s.seed,
        device=job.dev.type,
        precision="bf16-autocast" if job.amp else "fp32",
        cache_mode={"train": scored.train_mode, "val": scored.val_mode},
        train_loss=fitted.train_loss,
        sweep=fitted.sweep,
        wall_time_s=round(time.perf_counter() - t0, 3),
        settings=s,
    )


def _fit(
    s: ProbeSettings,
    train: TokenCache,
    dev: torch.device,
    amp: bool,
    on_selected: SelectionCallback | None,
) -> Fitted:
    """Train the probe ``s`` asks for on ``train`` (never touching val)."""
    th = train.header
    all_rows = torch.arange(th.n)
    if s.sklearn:
        predict_proba = fit_sklearn(
            train, all_rows, s.sklearn_c, s.seed, s.sklearn_max_iter, s.sklearn_features
        )
        return Fitted(lambda cache, rows: (predict_proba(cache, rows), cache.labels), th.n)

    def fit(heads: Sequence[nn.Module], configs: Sequence[tuple[float, float]],
            rows: torch.Tensor) -> list[float]:  # fmt: skip
        return train_heads(
            heads, configs, train, rows, epochs=s.epochs, batch_size=s.batch_size,
            schedule=s.schedule, warmup_epochs=s.warmup_epochs, seed=s.seed, device=dev,
            amp=amp, progress=s.progress,
        )  # fmt: skip

    def new_head() -> nn.Module:
        torch.manual_seed(s.seed)  # every head starts from the same init
        return build_probe(s.probe, th.dim, th.num_classes, **s.probe_kwargs).to(dev)

    def predictor(head: nn.Module) -> Predictor:
        def run(cache: TokenCache, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            (probs,), labels = predict([head], cache, rows, s.eval_batch_size, dev, amp)
            return probs, labels

        return run

    if not s.sweep:
        head = new_head()
        (loss,) = fit([head], [(s.lr, s.wd)], all_rows)
        return Fitted(predictor(head), th.n, s.lr, s.wd, loss)
    train_rows, hold_rows = split_holdout(th.n, s.holdout, s.seed)
    configs = [(a, b) for a in s.sweep_lrs for b in s.sweep_wds]
    heads = [new_head() for _ in configs]
    losses = fit(heads, configs, train_rows)
    hold_probs, hold_labels = predict(heads, train, hold_rows, s.eval_batch_size, dev, amp)
    best, record = select(configs, hold_probs, hold_labels, losses, s.holdout)
    if on_selected is not None:
        on_selected(dict(record))
    lr, wd = configs[best]
    return Fitted(predictor(heads[best]), len(train_rows), lr, wd, losses[best], record)
