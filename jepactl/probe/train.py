"""Train a probe head on a frozen-token cache and score it on the val split.

Input: one HDF5 cache per split, written by ``jepactl extract-features``:

- ``tokens`` float16 ``[N, V, L, D]`` (``V`` views per clip, ``L`` tokens, one clip per chunk),
- ``labels`` int64 ``[N]``, ``ids`` utf-8 strings ``[N]``, ``done`` bool ``[N]``,
- attributes ``checkpoint``, ``checkpoint_step``, ``checkpoint_sha256``, ``weights``,
  ``benchmark``, ``protocol`` (a JSON string), ``pooling``, ``num_classes``, ``complete``.

A cache whose ``complete`` attribute is false (an interrupted extraction) is refused, and so is a
train/val pair extracted from different checkpoints or weights.

Reading: the split is loaded into one float16 tensor, in slabs of ``chunk_rows`` contiguous clips,
when it fits ``max_memory_gb``; otherwise each epoch streams it, visiting windows of randomly
chosen slabs (as many as the budget holds) and shuffling within the window. For training every
view of a clip is a separate example; for evaluation the softmax is averaged over a clip's views.

Honest model selection (``sweep=True``): an lr x wd grid of heads trains at once, every head fed
the same batch, so the cache is read once per epoch for the whole grid. A seeded ``holdout``
fraction of the *training* clips is kept out of training and picks the head; only then is the
val cache opened, and only the selected head is scored on it. (The reference's UCF sweep and
V-JEPA 2's multi-head eval report the best head on val, which overstates accuracy.)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jepactl.errors import ConfigError
from jepactl.evaluation.probes import PROBES, build_probe
from jepactl.train.checkpoint import atomic_write_text
from jepactl.utils import derive_seed

DEFAULT_SWEEP_LRS: tuple[float, ...] = (1e-3, 3e-4, 1e-4)
DEFAULT_SWEEP_WDS: tuple[float, ...] = (0.05, 0.01, 0.001)
"""The reference's UCF-101 sweep grid (``eval_ucf101_sweep.py``)."""

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
"""Top-level keys of every result dict (and of ``RUN/probes/<bench>.json``)."""

NO_DECAY = "biases, norm weights and query/cls tokens"
SKLEARN_FEATURES: tuple[str, ...] = ("mean", "flat")
"""Inputs of the scikit-learn probe: token means, or all (pooled) tokens concatenated."""

SelectionCallback = Callable[[dict[str, Any]], None]


class CacheError(ConfigError):
    """A token cache that cannot be used (incomplete, malformed or mismatched)."""


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value.item())
    return str(value)


def _attr_bool(value: Any) -> bool:
    """An HDF5 boolean attribute, also when a writer stored it as text ("false")."""
    if isinstance(value, bytes | str):
        return _attr_str(value).strip().lower() in ("true", "1", "yes")
    return bool(value)


@dataclass(frozen=True)
class CacheHeader:
    """A validated cache's shape and attributes (no token data read)."""

    path: Path
    n: int
    views: int
    tokens: int
    dim: int
    num_classes: int
    benchmark: str
    checkpoint: str
    checkpoint_step: int
    checkpoint_sha256: str
    weights: str
    pooling: str
    protocol: Any

    @property
    def clip_bytes(self) -> int:
        """Bytes of one clip's tokens (all views) in float16."""
        return self.views * self.tokens * self.dim * 2

    @property
    def nbytes(self) -> int:
        """Bytes of the whole ``tokens`` dataset in float16."""
        return self.n * self.clip_bytes


def read_header(path: Path) -> CacheHeader:
    """Open ``path``, check the schema and that the extraction finished, and return its header.

    Raises:
        FileNotFoundError: no file at ``path``.
        CacheError: ``complete`` is false or missing, some row is not ``done``, or the datasets
            or attributes do not follow the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no token cache at {path}")
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        if not _attr_bool(attrs.get("complete", False)):
            raise CacheError(
                f"{path}: the extraction did not finish (complete=false); "
                "re-run extract-features to resume it"
            )
        for name in ("tokens", "labels"):
            if name not in f:
                raise CacheError(f"{path}: missing dataset {name!r}")
        tokens = f["tokens"]
        if tokens.ndim != 4:
            raise CacheError(f"{path}: tokens must be [N, V, L, D], got shape {tokens.shape}")
        n, views, length, dim = (int(s) for s in tokens.shape)
        if min(n, views, length, dim) < 1:
            raise CacheError(f"{path}: empty tokens dataset, shape {tokens.shape}")
        if f["labels"].shape != (n,):
            raise CacheError(f"{path}: labels shape {f['labels'].shape} != ({n},)")
        if "done" in f and not bool(np.all(f["done"][:])):
            missing = int(n - np.count_nonzero(f["done"][:]))
            raise CacheError(f"{path}: marked complete but {missing} rows are not done")
        missing_attrs = [
            k
            for k in ("checkpoint_sha256", "weights", "benchmark", "num_classes")
            if k not in attrs
        ]
        if missing_attrs:
            raise CacheError(f"{path}: missing attributes {missing_attrs}")
        protocol_text = _attr_str(attrs.get("protocol", "null"))
        try:
            protocol = json.loads(protocol_text)
        except json.JSONDecodeError:
            protocol = protocol_text
        return CacheHeader(
            path=path,
            n=n,
            views=views,
            tokens=length,
            dim=dim,
            num_classes=int(attrs["num_classes"]),
            benchmark=_attr_str(attrs["benchmark"]),
            checkpoint=_attr_str(attrs.get("checkpoint", "")),
            checkpoint_step=int(attrs.get("checkpoint_step", -1)),
            checkpoint_sha256=_attr_str(attrs["checkpoint_sha256"]),
            weights=_attr_str(attrs["weights"]),
            pooling=_attr_str(attrs.get("pooling", "none")),
            protocol=protocol,
        )


def check_same_source(train: CacheHeader, val: CacheHeader) -> None:
    """Refuse a train/val pair that is not from one checkpoint, weights, benchmark and pooling
    (and so the same number of tokens per clip: a clip length or crop that differs between the
    splits would give a different token count)."""
    fields = (
        "checkpoint_sha256",
        "weights",
        "benchmark",
        "pooling",
        "tokens",
        "dim",
        "num_classes",
    )
    for what in fields:
        a, b = getattr(train, what), getattr(val, what)
        if a != b:
            raise CacheError(
                f"train and val caches differ in {what}: {a!r} ({train.path}) vs "
                f"{b!r} ({val.path}); re-extract one of them (extract-features --force)"
            )


def default_memory_gb() -> float:
    """Half of this machine's physical memory, in GiB (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**31
    except (ValueError, OSError, AttributeError):
        return 8.0


class TokenCache:
    """One split's tokens, in memory when they fit ``max_memory_gb``, else streamed from disk.

    Labels are always in memory. Rows are addressed by their index in the file.
    """

    def __init__(self, path: Path, max_memory_gb: float | None = None, chunk_rows: int = 256):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.header = read_header(path)
        self.path = self.header.path
        self.chunk_rows = chunk_rows
        budget = default_memory_gb() if max_memory_gb is None else max_memory_gb
        self.budget_bytes = int(budget * 2**30)
        with h5py.File(self.path, "r") as f:
            labels = np.asarray(f["labels"][:], dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.header.num_classes):
            raise CacheError(
                f"{self.path}: labels outside [0, {self.header.num_classes}) "
                f"(min {labels.min()}, max {labels.max()})"
            )
        self.labels = torch.from_numpy(labels)
        self.in_memory = self.header.nbytes <= self.budget_bytes
        self._tokens: torch.Tensor | None = self._load_all() if self.in_memory else None

    @property
    def mode(self) -> str:
        """``"memory"`` or ``"stream"``."""
        return "memory" if self.in_memory else "stream"

    def _load_all(self) -> torch.Tensor:
        h = self.header
        out = torch.empty((h.n, h.views, h.tokens, h.dim), dtype=torch.float16)
        dest = out.numpy()
        with h5py.File(self.path, "r") as f:
            ds = f["tokens"]
            for s in range(0, h.n, self.chunk_rows):
                e = min(s + self.chunk_rows, h.n)
                ds.read_direct(dest, source_sel=np.s_[s:e], dest_sel=np.s_[s:e])
        return out

    def release(self) -> None:
        """Drop the in-memory tokens."""
        self._tokens = None

    def _chunk_bounds(self, rows: torch.Tensor) -> list[tuple[int, int]]:
        """The ``chunk_rows`` slabs that hold at least one of ``rows``."""
        used = torch.unique(rows // self.chunk_rows).tolist()
        return [(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.header.n)) for c in used]

    def _read_slabs(
        self, bounds: Sequence[tuple[int, int]]
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, end, tokens[start:end])`` per slab, from memory or read from disk."""
        if self._tokens is not None:
            for s, e in bounds:
                yield s, e, self._tokens[s:e]
            return
        with h5py.File(self.path, "r") as f:
            ds = f["tokens"]
            for s, e in bounds:
                yield s, e, torch.from_numpy(ds[s:e])

    def _window_slabs(self) -> int:
        """Slabs held at once when streaming (at least one)."""
        slab_bytes = self.chunk_rows * self.header.clip_bytes
        return max(1, self.budget_bytes // max(1, slab_bytes))

    def train_batches(
        self, rows: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch over every (clip, view) of ``rows``: ``([B, L, D] fp16, [B])``.

        All batches are full except possibly the last. In memory the shuffle is global; when
        streaming it is over windows of randomly ordered slabs, carrying leftovers forward.
        """
        views = self.header.views
        if self._tokens is not None:
            ex_row = rows.repeat_interleave(views)
            ex_view = torch.arange(views).repeat(len(rows))
            perm = torch.randperm(len(ex_row), generator=generator)
            for i in range(0, len(perm), batch_size):
                idx = perm[i : i + batch_size]
                r, v = ex_row[idx], ex_view[idx]
                yield self._tokens[r, v], self.labels[r]
            return
        member = torch.zeros(self.header.n, dtype=torch.bool)
        member[rows] = True
        bounds = self._chunk_bounds(rows)
        order = torch.randperm(len(bounds), generator=generator).tolist()
        window = self._window_slabs()
        carry_x: torch.Tensor | None = None
        carry_y: torch.Tensor | None = None
        for w in range(0, len(order), window):
            xs, ys = [], []
            for s, _e, block in self._read_slabs([bounds[j] for j in order[w : w + window]]):
                local = torch.nonzero(member[s : s + len(block)]).squeeze(1)
                xs.append(block[local].flatten(0, 1))
                ys.append(self.labels[s + local].repeat_interleave(views))
            if carry_x is not None and carry_y is not None:
                xs.insert(0, carry_x)
                ys.insert(0, carry_y)
            x, y = torch.cat(xs), torch.cat(ys)
            perm = torch.randperm(len(x), generator=generator)
            full = len(perm) - len(perm) % batch_size
            for i in range(0, full, batch_size):
                idx = perm[i : i + batch_size]
                yield x[idx], y[idx]
            carry_x, carry_y = x[perm[full:]], y[perm[full:]]
        if carry_x is not None and carry_y is not None and len(carry_x):
            yield carry_x, carry_y

    def eval_batches(
        self, rows: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``rows`` in ascending file order, all views: ``([B, V, L, D] fp16, [B])``."""
        rows = torch.sort(rows).values
        if self._tokens is not None:
            for i in range(0, len(rows), batch_size):
                r = rows[i : i + batch_size]
                yield self._tokens[r], self.labels[r]
            return
        member = torch.zeros(self.header.n, dtype=torch.bool)
        member[rows] = True
        for s, _e, block in self._read_slabs(self._chunk_bounds(rows)):
            local = torch.nonzero(member[s : s + len(block)]).squeeze(1)
            for i in range(0, len(local), batch_size):
                idx = local[i : i + batch_size]
                yield block[idx], self.labels[s + idx]

    def clip_features(self, rows: torch.Tensor, how: str = "mean") -> torch.Tensor:
        """Per-view features ``[len(rows), V, F]`` float32, in ascending row order: the token
        mean (``how="mean"``, ``F = D``) or all tokens concatenated in cache order
        (``how="flat"``, ``F = L·D``: keeps where and when each token is)."""
        if how not in SKLEARN_FEATURES:
            raise ValueError(f"features must be one of {SKLEARN_FEATURES}, got {how!r}")
        reduce = (lambda x: x.float().mean(dim=2)) if how == "mean" else (
            lambda x: x.float().flatten(2)
        )  # fmt: skip
        feats = [reduce(x) for x, _ in self.eval_batches(rows, self.chunk_rows)]
        if not feats:
            width = self.header.dim if how == "mean" else self.header.tokens * self.header.dim
            return torch.empty(0, self.header.views, width)
        return torch.cat(feats)


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when visible), ``cpu`` or ``cuda[:i]``; a RuntimeError for an unknown
    device or CUDA that is not there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} but no CUDA device is visible")
    return torch.device(device)


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


def param_groups(module: nn.Module, wd: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only (not biases, norms, query/cls)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim <= 1 or leaf in ("query_tokens", "cls_token"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": wd},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """LR multiplier at optimizer step ``step`` (0-based) of ``total``: linear warm-up over
    ``warmup`` steps, then constant or cosine to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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


def _predict(
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


def _mean_nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    p = probs.gather(1, labels.unsqueeze(1)).clamp_min(1e-12)
    return -p.log().mean().item()


def _split_holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``n`` clip rows into (train, holdout), both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {fraction}")
    n_hold = round(fraction * n)
    if n_hold < 1 or n_hold >= n:
        raise ValueError(f"holdout={fraction} of {n} training clips leaves an empty side")
    g = torch.Generator().manual_seed(derive_seed(seed, "probe-holdout"))
    perm = torch.randperm(n, generator=g)
    return torch.sort(perm[n_hold:]).values, torch.sort(perm[:n_hold]).values


def _train_heads(
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
    n_examples = len(rows) * cache.header.views
    steps_per_epoch = math.ceil(n_examples / batch_size)
    total = steps_per_epoch * epochs
    warmup = round(warmup_epochs * steps_per_epoch)
    optims, scheds = [], []
    for head, (lr, wd) in zip(heads, configs, strict=True):
        opt = torch.optim.AdamW(param_groups(head, wd), lr=lr)
        optims.append(opt)
        scheds.append(
            torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, schedule))
        )
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe-shuffle"))
    epoch_loss = [float("nan")] * len(heads)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="probe", unit="epoch", leave=False)
    for h in heads:
        h.train()
    for _epoch in range(epochs):
        sums = torch.zeros(len(heads), dtype=torch.float64)
        count = 0
        for x, y in cache.train_batches(rows, batch_size, gen):
            xf = x.to(device, non_blocking=True).float()
            yd = y.to(device, non_blocking=True)
            for i, (head, opt, sched) in enumerate(zip(heads, optims, scheds, strict=True)):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = head(xf)
                loss = F.cross_entropy(logits.float(), yd)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                sums[i] += loss.detach().double().cpu() * len(y)
            count += len(y)
        epoch_loss = (sums / max(1, count)).tolist()
        if bar is not None:
            bar.set_postfix(loss=f"{min(epoch_loss):.4f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    return epoch_loss


def _sklearn_probe(
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


def _identity(header: CacheHeader) -> dict[str, Any]:
    return {
        "path": header.checkpoint,
        "step": header.checkpoint_step,
        "sha256": header.checkpoint_sha256,
    }


def train_probe(
    train_h5: Path,
    val_h5: Path,
    probe: str = "attentive",
    epochs: int = 50,
    lr: float = 1e-3,
    wd: float = 0.01,
    batch_size: int = 16,
    seed: int = 0,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    device: str = "auto",
    sweep: bool = False,
    sweep_lrs: Sequence[float] = DEFAULT_SWEEP_LRS,
    sweep_wds: Sequence[float] = DEFAULT_SWEEP_WDS,
    holdout: float = 0.1,
    progress: bool = True,
    sklearn: bool = False,
    *,
    probe_kwargs: dict[str, Any] | None = None,
    bf16: bool = True,
    max_memory_gb: float | None = None,
    chunk_rows: int = 256,
    sklearn_c: float = 1.0,
    sklearn_max_iter: int = 1000,
    sklearn_features: str = "mean",
    on_selected: SelectionCallback | None = None,
) -> dict[str, Any]:
    """Train a probe on ``train_h5`` and score it on ``val_h5``; return the result dict.

    Args:
        train_h5, val_h5: the split caches (see the module docstring for the schema).
        probe: a key of :data:`jepactl.evaluation.probes.PROBES`.
        epochs, lr, wd, batch_size: AdamW training of the head (no decay on biases, norms,
            query/cls tokens). ``lr``/``wd`` are ignored by the sweep.
        seed: seeds the probe init (``torch.manual_seed``), the shuffles and the holdout split;
            on CPU the same seed gives a bit-identical result.
        schedule: ``"cosine"`` (per step, to zero) or ``"constant"``, after ``warmup_epochs`` of
            linear warm-up.
        device: ``"auto"`` (CUDA when visible), ``"cpu"`` or ``"cuda[:i]"``.
        sweep: train the ``sweep_lrs x sweep_wds`` grid at once and select on a seeded
            ``holdout`` fraction of the training clips; val is opened only after selection.
        progress: show a per-epoch progress bar.
        sklearn: (``probe="linear"``) scikit-learn logistic regression on standardised
            token-mean features (``C = sklearn_c``) instead of the torch head;
            ``sklearn_features="flat"`` feeds it all tokens concatenated instead (for a small
            pooled grid, e.g. ``--pool space2x2``).
        probe_kwargs: extra constructor arguments (``depth``, ``num_heads``, ``num_queries``...).
        bf16: bf16 autocast for the probe on CUDA (never on CPU).
        max_memory_gb: budget for holding a split in memory (default: half the RAM); a larger
            split is streamed from disk each epoch.
        chunk_rows: clips per contiguous HDF5 read.
        on_selected: called with the sweep's selection record once it is final, before the val
            cache is opened.

    Returns:
        A dict with the keys :data:`RESULT_KEYS` (accuracies in percent).

    Raises:
        CacheError: an incomplete cache, or train and val from different checkpoints/weights.
    """
    t0 = time.perf_counter()
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; valid: {', '.join(sorted(PROBES))}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if sklearn and probe != "linear":
        raise ValueError("sklearn=True is the linear probe only (probe='linear')")
    if sklearn_features not in SKLEARN_FEATURES:
        raise ValueError(f"sklearn_features must be one of {SKLEARN_FEATURES}")
    if sklearn and sweep:
        raise ValueError("the sweep trains torch heads; it does not combine with sklearn=True")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if sweep and (not sweep_lrs or not sweep_wds):
        raise ValueError("the sweep needs at least one lr and one wd")
    train_h5, val_h5 = Path(train_h5), Path(val_h5)
    dev = resolve_device(device)
    amp = bf16 and dev.type == "cuda"
    kwargs = dict(probe_kwargs or {})
    eval_bs = max(batch_size, 64)  # no gradients, so larger batches

    val_header: CacheHeader | None = None
    if not sweep:
        # No selection happens, so the val header may be checked before the (long) training.
        val_header = read_header(val_h5)
    train = TokenCache(train_h5, max_memory_gb=max_memory_gb, chunk_rows=chunk_rows)
    th = train.header
    if val_header is not None:
        check_same_source(th, val_header)
    all_rows = torch.arange(th.n)
    sweep_record: dict[str, Any] | None = None
    selected_head: nn.Module | None = None
    predict_sklearn = None
    train_loss: float | None = None

    def fit(
        heads: Sequence[nn.Module], configs: Sequence[tuple[float, float]], rows: torch.Tensor
    ) -> list[float]:
        return _train_heads(
            heads, configs, train, rows, epochs=epochs, batch_size=batch_size, schedule=schedule,
            warmup_epochs=warmup_epochs, seed=seed, device=dev, amp=amp, progress=progress,
        )  # fmt: skip

    with _deterministic(dev.type == "cpu"):
        if sklearn:
            train_rows = all_rows
            predict_sklearn = _sklearn_probe(
                train, train_rows, sklearn_c, seed, sklearn_max_iter, sklearn_features
            )
            used_lr, used_wd = None, None
        elif sweep:
            train_rows, hold_rows = _split_holdout(th.n, holdout, seed)
            configs = [(a, b) for a in sweep_lrs for b in sweep_wds]
            heads = []
            for _ in configs:
                torch.manual_seed(seed)  # every head starts from the same init
                heads.append(build_probe(probe, th.dim, th.num_classes, **kwargs).to(dev))
            losses = fit(heads, configs, train_rows)
            hold_probs, hold_labels = _predict(heads, train, hold_rows, eval_bs, dev, amp)
            grid = [
                {
                    "lr": a,
                    "wd": b,
                    "holdout_top1": round(topk_accuracy(p, hold_labels, 1), 4),
                    "holdout_nll": round(_mean_nll(p, hold_labels), 6),
                    "train_loss": loss,
                }
                for (a, b), p, loss in zip(configs, hold_probs, losses, strict=True)
            ]
            # Best held-out top-1; ties go to the lower held-out NLL, then to grid order.
            best = min(
                range(len(grid)),
                key=lambda i: (-grid[i]["holdout_top1"], grid[i]["holdout_nll"], i),
            )
            selected_head = heads[best]
            used_lr, used_wd = configs[best]
            train_loss = losses[best]
            sweep_record = {
                "selection_split": "train-holdout",
                "holdout_fraction": holdout,
                "n_holdout": len(hold_rows),
                "grid": grid,
                "selected": dict(grid[best]),
            }
            del heads, hold_probs
            if on_selected is not None:
                on_selected(dict(sweep_record))
        else:
            train_rows = all_rows
            torch.manual_seed(seed)
            selected_head = build_probe(probe, th.dim, th.num_classes, **kwargs).to(dev)
            (train_loss,) = fit([selected_head], [(lr, wd)], train_rows)
            used_lr, used_wd = lr, wd
        train_mode = train.mode
        train.release()

        # Selection is final: only now is the val split opened.
        val = TokenCache(val_h5, max_memory_gb=max_memory_gb, chunk_rows=chunk_rows)
        check_same_source(th, val.header)
        val_rows = torch.arange(val.header.n)
        if predict_sklearn is not None:
            probs = predict_sklearn(val, val_rows)
            labels = val.labels
        else:
            assert selected_head is not None
            (probs,), labels = _predict([selected_head], val, val_rows, eval_bs, dev, amp)
        val_mode = val.mode
        val.release()

    hparams: dict[str, Any]
    if sklearn:
        hparams = {
            "impl": "sklearn",
            "model": (
                "LogisticRegression(lbfgs) on standardised "
                + ("token means" if sklearn_features == "mean" else "concatenated tokens")
            ),
            "features": sklearn_features,
            "C": sklearn_c,
            "max_iter": sklearn_max_iter,
        }
    else:
        hparams = {
            "impl": "torch",
            "epochs": epochs,
            "lr": used_lr,
            "wd": used_wd,
            "batch_size": batch_size,
            "schedule": schedule,
            "warmup_epochs": warmup_epochs,
            "optimizer": "AdamW",
            "no_weight_decay": NO_DECAY,
            "probe_kwargs": kwargs,
        }
    n_classes = th.num_classes
    return {
        "bench": th.benchmark,
        "probe": probe,
        "top1": round(topk_accuracy(probs, labels, 1), 4),
        "top5": round(topk_accuracy(probs, labels, 5), 4),
        "majority": round(majority_accuracy(labels, n_classes), 4),
        "chance": round(100.0 / n_classes, 4),
        "n_train": len(train_rows),
        "n_val": len(labels),
        "n_train_examples": len(train_rows) * th.views,
        "views": {"train": th.views, "val": val.header.views},
        "num_classes": n_classes,
        "hparams": hparams,
        "checkpoint": _identity(th),
        "weights": th.weights,
        "pooling": th.pooling,
        "protocol": {"train": th.protocol, "val": val.header.protocol},
        "caches": {"train": str(train_h5), "val": str(val_h5)},
        "seed": seed,
        "device": dev.type,
        "precision": "bf16-autocast" if amp else "fp32",
        "cache_mode": {"train": train_mode, "val": val_mode},
        "train_loss": train_loss,
        "sweep": sweep_record,
        "wall_time_s": round(time.perf_counter() - t0, 3),
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


def write_result(run_dir: Path, bench: str, result: dict[str, Any]) -> str:
    """Atomically write ``run_dir/probes/<bench>.json``; return the one-line summary."""
    path = Path(run_dir) / "probes" / f"{bench}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return format_summary(bench, result)
