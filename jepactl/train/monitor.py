"""Is pretraining learning, or collapsing? Diagnostics and an online probe, logged as it runs.

Every ``monitor.every`` steps (and once at step 0, before the first update: the untrained
control) the encoder that evaluation would use (the EMA teacher, else the student) encodes a
fixed labelled set of synthetic clips (:mod:`jepactl.data.tasks`), in eval mode and without
gradients, so watching never changes what trains. From the pooled features it logs:

* ``rankme``: RankMe (Garrido et al., 2023), the exponential of the entropy of the normalised
  singular values of the ``[N, D]`` feature matrix: :math:`\\exp(-\\sum_k p_k \\log p_k)`,
  :math:`p_k = \\sigma_k / \\sum_j \\sigma_j + \\epsilon`, here of the features centred over
  clips. About 1 for collapsed features, at most ``min(N, D)``. ``rankme_tokens`` is the same
  over every (unpooled) token.
* ``feat_std_mean`` / ``feat_std_min``: the per-dimension standard deviation over clips of the
  centred, L2-normalised features, times :math:`\\sqrt{D}` (about 1 for features spread evenly
  over their dimensions, 0 for collapsed ones; SimSiam's collapse measure, made size-free).
* ``feat_cos``: the mean cosine similarity between two different clips' features (1 when
  every clip maps to the same direction).
* ``probe_knn`` / ``probe_linear``: top-1 accuracy (%) on the second half of the set of a
  cosine k-NN and of a logistic regression, both on features standardised with the first
  half's statistics and fitted on the first half.
  At step 0 the record also holds ``probe_knn_pixels`` / ``probe_linear_pixels``: the same
  probes on raw pixels, cut into the encoder's patches and pooled the same way, and
  ``probe_chance``, the accuracy of guessing.

A warning is printed, and ``collapse`` recorded, when ``rankme < monitor.min_rank`` or
``feat_std_mean < monitor.min_std``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from jepactl.config import MonitorConfig, Recipe
from jepactl.data.loader import to_model_input
from jepactl.data.tasks import TASKS, labelled_set
from jepactl.grid import TokenGrid, pool_tokens
from jepactl.models.vit import VideoViT
from jepactl.train.metrics import (
    COLLAPSE,
    PROBE_CHANCE,
    PROBE_KNN,
    PROBE_LINEAR,
    RANKME,
    pixel_control,
)

_EPS = 1e-7


def rankme(features: torch.Tensor) -> float:
    """RankMe of ``[N, D]`` features (see the module doc)."""
    x = features.double()
    return rankme_of_gram(x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T)


def rankme_of_gram(gram: torch.Tensor) -> float:
    """RankMe from the Gram matrix of the features (``XᵀX`` or ``XXᵀ``): its eigenvalues are
    the squared singular values, so features need never be held at once (see
    :class:`TokenGram`)."""
    sigma = torch.linalg.eigvalsh(gram.double()).clamp_min(0).sqrt()
    p = sigma / sigma.sum().clamp_min(_EPS) + _EPS
    return float(torch.exp(-(p * p.log()).sum()))


def feature_stats(features: torch.Tensor) -> dict[str, float]:
    """RankMe and normalised per-dimension std (mean and min) of the centred ``[N, D]``
    features, and the mean pairwise cosine of the raw ones; ``N >= 2``.

    Centring first makes RankMe and the std measure how clips differ, not the direction all
    of them share: a freshly initialised ViT maps every clip of a black-backdrop task to
    nearly the same direction (pairwise cosine near 1) without being collapsed.
    """
    n, d = features.shape
    if n < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {n}")
    x = features.double()
    centred = x - x.mean(dim=0)
    std = F.normalize(centred, dim=1).std(dim=0) * math.sqrt(d)
    z = F.normalize(x, dim=1)
    total = z.sum(dim=0)
    mean_cos = (total @ total - (z * z).sum()) / (n * (n - 1))  # off-diagonal mean of z z^T
    return {
        RANKME: rankme(centred),
        "feat_std_mean": float(std.mean()),
        "feat_std_min": float(std.min()),
        "feat_cos": float(mean_cos),
    }


class TokenGram:
    """The centred Gram matrix of many ``[n, D]`` token batches, accumulated in float64 as
    ``Σ xxᵀ - N μμᵀ``: RankMe over every token of a set without keeping the tokens (at the
    paper's size, 256 clips are 400 k tokens)."""

    def __init__(self) -> None:
        self.gram: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, tokens: torch.Tensor) -> None:
        x = tokens.reshape(-1, tokens.shape[-1]).double()
        gram, total = x.T @ x, x.sum(dim=0)
        self.gram = gram if self.gram is None else self.gram + gram
        self.total = total if self.total is None else self.total + total
        self.count += x.shape[0]

    def centred(self) -> torch.Tensor:
        if self.gram is None or self.total is None:
            raise ValueError("no tokens added")
        return self.gram - torch.outer(self.total, self.total) / self.count


def collapse_reasons(stats: dict[str, float], cfg: MonitorConfig) -> list[str]:
    """Why these statistics look like a (dimensional) collapse; empty when they do not."""
    reasons = []
    if stats[RANKME] < cfg.min_rank:
        reasons.append(f"RankMe {stats[RANKME]:.2f} < monitor.min_rank {cfg.min_rank}")
    if stats["feat_std_mean"] < cfg.min_std:
        reasons.append(
            f"normalised feature std {stats['feat_std_mean']:.3f} < monitor.min_std {cfg.min_std}"
        )
    return reasons


def knn_accuracy(
    train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, k: int
) -> float:
    """Top-1 (%) of a cosine k-NN on features standardised with the fit set's statistics,
    each neighbour voting with its similarity."""
    k = min(k, len(train))
    mean, std = train.double().mean(dim=0), train.double().std(dim=0).clamp_min(_EPS)
    fit, query = (train.double() - mean) / std, (test.double() - mean) / std
    sim = F.normalize(query, dim=1) @ F.normalize(fit, dim=1).T
    top, idx = sim.topk(k, dim=1)
    classes = int(max(train_y.max(), test_y.max())) + 1
    votes = torch.zeros(len(test), classes, dtype=torch.float64)
    votes.scatter_add_(1, train_y[idx], top.clamp_min(0) + _EPS)
    return 100.0 * float((votes.argmax(dim=1) == test_y).double().mean())


def linear_accuracy(
    train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor
) -> float:
    """Top-1 (%) of an L2 logistic regression (lbfgs, C = 1) on standardised features."""
    scaler = StandardScaler().fit(train.numpy())
    clf = LogisticRegression(max_iter=1000, C=1.0)
    with warnings.catch_warnings():  # an unconverged fit is still a fair online estimate
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(train.numpy()), train_y.numpy())
    pred = clf.predict(scaler.transform(test.numpy()))
    return 100.0 * float(np.mean(pred == test_y.numpy()))


def pixel_tokens(clips: torch.Tensor, patch: int, tubelet: int) -> tuple[torch.Tensor, TokenGrid]:
    """uint8 clips ``[B, T, H, W, C]`` cut into the encoder's tubelets: float tokens
    ``[B, T'·H'·W', tubelet·patch²·C]`` in [0, 1], and their grid."""
    _, t, h, w, _ = clips.shape
    grid = TokenGrid(t // tubelet, h // patch, w // patch)
    x = clips[:, : grid.t * tubelet, : grid.h * patch, : grid.w * patch].float() / 255.0
    tokens = rearrange(
        x, "b (t dt) (h dh) (w dw) c -> b (t h w) (dt dh dw c)", dt=tubelet, dh=patch, dw=patch
    )
    return tokens, grid


class Monitor:
    """The fixed labelled set of a run, and the checks over it (see the module doc)."""

    def __init__(self, recipe: Recipe, device: torch.device, batch_size: int = 32) -> None:
        self.cfg = recipe.monitor
        self.device = device
        self.batch_size = batch_size
        self.patch, self.tubelet = recipe.model.patch_size, recipe.model.tubelet
        clips, labels = labelled_set(
            self.cfg.task, self.cfg.clips, recipe.data.num_frames, recipe.data.crop, self.cfg.seed
        )
        self.clips, self.labels = clips, torch.as_tensor(labels, dtype=torch.int64)
        self.n_fit = self.cfg.clips // 2

    def _probes(self, features: torch.Tensor) -> tuple[float, float]:
        n, y = self.n_fit, self.labels
        fit, score = features[:n], features[n:]
        return (
            knn_accuracy(fit, y[:n], score, y[n:], self.cfg.knn_k),
            linear_accuracy(fit, y[:n], score, y[n:]),
        )

    @torch.no_grad()
    def encode(self, encoder: VideoViT) -> tuple[torch.Tensor, TokenGram]:
        """(pooled features ``[N, ·]`` float32 on the CPU, the Gram matrix of every token)."""
        was_training = encoder.training
        encoder.eval()
        pooled, tokens = [], TokenGram()
        try:
            for start in range(0, len(self.clips), self.batch_size):
                batch = self.clips[start : start + self.batch_size].to(self.device)
                x = to_model_input(batch)
                out = encoder(x)[..., -encoder.embed_dim :].float()
                pooled.append(
                    pool_tokens(out, encoder.grid(x.shape), self.cfg.pool).flatten(1).cpu()
                )
                tokens.add(out)
        finally:
            encoder.train(was_training)
        return torch.cat(pooled), tokens

    def check(self, encoder: VideoViT, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
        """The diagnostics and online-probe accuracies of ``encoder`` (see the module doc)."""
        pooled, tokens = self.encode(encoder)
        record: dict[str, Any] = feature_stats(pooled)
        record["rankme_tokens"] = rankme_of_gram(tokens.centred().cpu())
        record[PROBE_KNN], record[PROBE_LINEAR] = self._probes(pooled)
        reasons = collapse_reasons(record, self.cfg)
        if reasons:
            record[COLLAPSE] = "; ".join(reasons)
            if warn is not None:
                warn(f"possible collapse: {record[COLLAPSE]} (docs/monitoring.md)")
        return record

    def pixel_controls(self) -> dict[str, float]:
        """The online probes on raw pixels, pooled as the encoder's tokens are, and the
        accuracy of guessing (``probe_chance``, %)."""
        pooled = []
        for start in range(0, len(self.clips), self.batch_size):  # float pixels batch by batch
            tokens, grid = pixel_tokens(self.clips[start : start + self.batch_size], self.patch,
                                        self.tubelet)  # fmt: skip
            pooled.append(pool_tokens(tokens, grid, self.cfg.pool).flatten(1))
        knn, linear = self._probes(torch.cat(pooled))
        chance = 100.0 / TASKS[self.cfg.task][0]
        return {pixel_control(PROBE_KNN): knn, pixel_control(PROBE_LINEAR): linear,
                PROBE_CHANCE: chance}  # fmt: skip
