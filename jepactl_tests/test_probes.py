"""Probe heads and probe training from tiny hand-written HDF5 token caches."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from jepactl.features import cache as cache_mod
from jepactl.features.cache import CacheError, TokenCache
from jepactl.optim import lr_factor
from jepactl.probe import train as tp
from jepactl.probe.heads import (
    PROBES,
    AttentiveProbe,
    LinearProbe,
    ReferenceAttentiveProbe,
    build_probe,
)
from jepactl.probe.records import ProbeSettings, result_from_json
from jepactl.probe.result import majority_accuracy, write_result
from jepactl.probe.train import train_probe as train_probe_with

#: The top-level keys every result had before format 2 (format 2 adds its version, the
#: settings and the profile around them).
RESULT_KEYS: tuple[str, ...] = (
    "bench", "top1", "probe", "top5", "majority", "chance", "n_train", "n_val",
    "n_train_examples", "views", "num_classes", "hparams", "checkpoint", "weights", "pooling",
    "protocol", "caches", "seed", "device", "precision", "cache_mode", "train_loss", "sweep",
    "wall_time_s",
)  # fmt: skip


def train_probe(
    train: Path,
    val: Path,
    *,
    device: str = "cpu",
    max_memory_gb: float | None = None,
    chunk_rows: int = 256,
    on_selected: Any = None,
    **settings: Any,
) -> Any:
    """:func:`~jepactl.probe.train.train_probe` with its settings as keywords."""
    return train_probe_with(train, val, ProbeSettings(**settings), device=device,
                            max_memory_gb=max_memory_gb, chunk_rows=chunk_rows,
                            on_selected=on_selected)  # fmt: skip


DIM, TOKENS, CLASSES = 32, 8, 4
FAST: dict[str, Any] = {"epochs": 12, "batch_size": 16, "progress": False, "device": "cpu"}


def write_cache(
    path: Path,
    tokens: np.ndarray,
    labels: np.ndarray,
    *,
    sha: str = "a" * 64,
    weights: str = "teacher",
    complete: bool | str = True,
    done: np.ndarray | None = None,
    num_classes: int = CLASSES,
) -> Path:
    """Write a cache in the extract-features schema."""
    n = len(labels)
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=tokens.astype(np.float16), chunks=(1, *tokens.shape[1:]))
        f.create_dataset("labels", data=labels.astype(np.int64))
        f.create_dataset(
            "ids", data=[f"clip{i:05d}" for i in range(n)], dtype=h5py.string_dtype("utf-8")
        )
        f.create_dataset("done", data=np.ones(n, bool) if done is None else done)
        f.attrs.update(
            {
                "checkpoint": "/runs/toy/checkpoints/latest.pt",
                "checkpoint_step": 123,
                "checkpoint_sha256": sha,
                "weights": weights,
                "benchmark": "toy",
                "protocol": json.dumps({"frames": 16, "crop": 224}),
                "pooling": "none",
                "num_classes": num_classes,
                "complete": complete,
            }
        )
    return path


def separable(
    n: int, seed: int, views: int = 1, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Noise tokens; in a random 3 of the 8 tokens per clip/view, add a class direction."""
    dirs = np.random.default_rng(1234).standard_normal((CLASSES, DIM))
    dirs *= 5.0 / np.linalg.norm(dirs, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = np.arange(n) % CLASSES
        rng.shuffle(labels)
    x = rng.standard_normal((n, views, TOKENS, DIM)).astype(np.float32)
    for i in range(n):
        for v in range(views):
            x[i, v, rng.choice(TOKENS, 3, replace=False)] += dirs[labels[i]]
    return x, labels


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These heads are tiny: one thread is as fast, and immune to a busy machine (two OpenMP
    threads on a shared 2-core box can be 100x slower)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def caches(tmp_path: Path) -> tuple[Path, Path]:
    xt, yt = separable(96, seed=1)
    xv, yv = separable(48, seed=2)
    return write_cache(tmp_path / "train.h5", xt, yt), write_cache(tmp_path / "val.h5", xv, yv)


# ----------------------------------------------------------------------------- probe modules


@pytest.mark.parametrize("kind", sorted(PROBES))
def test_probe_shapes(kind: str) -> None:
    probe = build_probe(kind, DIM, 5)
    assert probe(torch.randn(3, 7, DIM)).shape == (3, 5)
    assert probe(torch.randn(3, DIM)).shape == (3, 5)  # a pooled cache: one token


def test_attentive_options() -> None:
    deep = AttentiveProbe(DIM, 5, num_queries=3, depth=3, num_heads=4)
    assert len(deep.blocks) == 2
    assert deep.query_tokens.shape == (1, 3, DIM)
    assert deep(torch.randn(2, 6, DIM)).shape == (2, 5)
    with pytest.raises(ValueError, match="divisible"):
        AttentiveProbe(DIM, 5, num_heads=5)
    with pytest.raises(ValueError, match="divisible"):
        ReferenceAttentiveProbe(DIM, 5, num_heads=3)
    ref = ReferenceAttentiveProbe(DIM, 5)
    assert ref.cls_token.shape == (1, 1, DIM)
    assert isinstance(ref.attn, torch.nn.MultiheadAttention)


def test_reference_probe_formula() -> None:
    ref = ReferenceAttentiveProbe(DIM, 3).eval()
    x = torch.randn(2, 5, DIM)
    s = torch.cat([ref.cls_token.expand(2, -1, -1), x], dim=1)
    attn, _ = ref.attn(s, s, s)
    want = ref.head(ref.norm(s + attn)[:, 0])
    torch.testing.assert_close(ref(x), want)


def test_linear_probe_is_mean_pool() -> None:
    probe = LinearProbe(DIM, 3)
    x = torch.randn(2, 5, DIM)
    torch.testing.assert_close(probe(x), probe.head(x.mean(1)))


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("probe", "extra"),
    [
        ("attentive", {}),
        ("attentive", {"probe_kwargs": {"depth": 2, "num_heads": 4}}),
        ("attentive-reference", {}),
        ("linear", {"lr": 1e-2}),
        ("linear", {"sklearn": True}),
    ],
)
def test_probes_learn(caches: tuple[Path, Path], probe: str, extra: dict[str, Any]) -> None:
    res = train_probe(*caches, probe=probe, **{**FAST, **extra})
    assert res.top1 > 80.0, res
    assert res.top5 == 100.0  # 4 classes: top-5 covers them all
    assert res.n_train == 96 and res.n_val == 48
    assert res.probe == probe
    assert res.checkpoint is not None and dataclasses.asdict(res.checkpoint) == {
        "path": "/runs/toy/checkpoints/latest.pt",
        "step": 123,
        "sha256": "a" * 64,
    }
    assert res.weights == "teacher"


def test_same_seed_same_result(caches: tuple[Path, Path]) -> None:
    kw = {**FAST, "epochs": 3}
    a = train_probe(*caches, seed=7, **kw)
    b = train_probe(*caches, seed=7, **kw)
    c = train_probe(*caches, seed=8, **kw)
    a, b, c = (dataclasses.replace(r, wall_time_s=None) for r in (a, b, c))
    assert a == b
    assert a.train_loss != c.train_loss


def test_streaming_matches_schema_and_learns(caches: tuple[Path, Path]) -> None:
    res = train_probe(*caches, max_memory_gb=1e-5, chunk_rows=8, **FAST)
    assert res.cache_mode == {"train": "stream", "val": "stream"}
    assert res.top1 > 80.0


@pytest.mark.parametrize("budget", [None, 1e-7, 3.5e-7])
def test_epoch_visits_every_example_once(tmp_path: Path, budget: float | None) -> None:
    n, views = 37, 2
    x = np.zeros((n, views, 2, 4), np.float32)
    x[:, :, 0, 0] = np.arange(n)[:, None] * 10 + np.arange(views)  # encodes (row, view)
    path = write_cache(tmp_path / "c.h5", x, np.arange(n) % CLASSES)
    cache = TokenCache(path, max_memory_gb=budget, chunk_rows=5)
    assert cache.mode == ("memory" if budget is None else "stream")
    rows = torch.tensor([0, 3, 4, 5, 11, 20, 21, 36])
    gen = torch.Generator().manual_seed(0)
    batches = list(cache.train_batches(rows, 3, gen))
    assert all(len(b[0]) == 3 for b in batches[:-1]) and 1 <= len(batches[-1][0]) <= 3
    seen = sorted(int(v) for xb, _ in batches for v in xb[:, 0, 0].float().round().tolist())
    assert seen == sorted(int(r) * 10 + v for r in rows.tolist() for v in range(views))
    for xb, yb in batches:  # labels travel with their tokens
        assert torch.equal(yb, (xb[:, 0, 0].float() // 10).long() % CLASSES)
    evals = list(cache.eval_batches(rows, 3))
    got = torch.cat([xb[:, :, 0, 0] for xb, _ in evals]).float()
    assert torch.equal(got[:, 0], rows.float() * 10)
    assert evals[0][0].shape[1:] == (views, 2, 4)


def test_multiview_training_and_softmax_average(tmp_path: Path) -> None:
    xt, yt = separable(64, seed=3, views=2)
    xv, yv = separable(32, seed=4, views=3)
    train = write_cache(tmp_path / "train.h5", xt, yt)
    val = write_cache(tmp_path / "val.h5", xv, yv)
    res = train_probe(train, val, probe="linear", lr=1e-2, **FAST)
    assert res.n_train == 64 and res.n_train_examples == 128
    assert res.views == {"train": 2, "val": 3}
    assert res.top1 > 80.0

    cache = TokenCache(val)
    torch.manual_seed(0)
    head = LinearProbe(DIM, CLASSES)
    (probs,), labels = tp.predict(
        [head], cache, torch.arange(32), 5, torch.device("cpu"), amp=False
    )
    tokens = torch.from_numpy(xv).half().float()
    with torch.no_grad():
        want = torch.stack([head(tokens[:, v]).softmax(-1) for v in range(3)]).mean(0)
    torch.testing.assert_close(probs, want)
    assert torch.equal(labels, torch.from_numpy(yv))


def test_sweep_selects_before_val_is_touched(
    caches: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_h5, ready_val = caches
    val_h5 = tmp_path / "later" / "val.h5"  # does not exist until selection is final
    events: list[str] = []
    real_file = h5py.File

    def recording_file(name: Any, *args: Any, **kwargs: Any) -> h5py.File:
        events.append(f"open:{Path(name).name}:{Path(name).parent.name}")
        return real_file(name, *args, **kwargs)

    def on_selected(record: dict[str, Any]) -> None:
        events.append("selected")
        assert not val_h5.exists()
        val_h5.parent.mkdir()
        val_h5.write_bytes(ready_val.read_bytes())

    monkeypatch.setattr(cache_mod.h5py, "File", recording_file)
    res = train_probe(
        train_h5,
        val_h5,
        sweep=True,
        sweep_lrs=(3e-3, 1e-5),
        sweep_wds=(0.01, 0.0),
        holdout=0.25,
        on_selected=on_selected,
        **FAST,
    )
    first_val = events.index("open:val.h5:later")
    assert events.index("selected") < first_val
    assert all("later" not in e for e in events[:first_val])
    sw = res.sweep
    assert sw["selection_split"] == "train-holdout"
    assert len(sw["grid"]) == 4 and sw["n_holdout"] == 24
    assert res.n_train == 96 - 24
    assert sw["selected"]["lr"] == 3e-3  # lr 1e-5 barely moves in 12 epochs
    assert sw["selected"] in sw["grid"]
    assert (res.hparams["lr"], res.hparams["wd"]) == (
        sw["selected"]["lr"],
        sw["selected"]["wd"],
    )
    assert res.top1 > 80.0


def test_sweep_without_val_fails_only_after_training(caches: tuple[Path, Path]) -> None:
    selected: list[dict[str, Any]] = []
    with pytest.raises(FileNotFoundError):
        train_probe(
            caches[0],
            caches[1].with_name("missing.h5"),
            sweep=True,
            sweep_lrs=(1e-3,),
            sweep_wds=(0.01,),
            on_selected=selected.append,
            **{**FAST, "epochs": 1},
        )
    assert len(selected) == 1


def test_incomplete_cache_refused(tmp_path: Path, caches: tuple[Path, Path]) -> None:
    x, y = separable(8, seed=5)
    bad = write_cache(tmp_path / "partial.h5", x, y, complete=False)
    with pytest.raises(CacheError, match="complete"):
        train_probe(bad, caches[1], **FAST)
    with pytest.raises(CacheError, match="complete"):
        train_probe(caches[0], bad, **FAST)
    as_text = write_cache(tmp_path / "text.h5", x, y, complete="false")
    with pytest.raises(CacheError, match="complete"):
        TokenCache(as_text)
    done = np.ones(8, bool)
    done[3] = False
    torn = write_cache(tmp_path / "torn.h5", x, y, done=done)
    with pytest.raises(CacheError, match="not done"):
        TokenCache(torn)


@pytest.mark.parametrize(
    ("field", "kw"), [("checkpoint_sha256", {"sha": "b" * 64}), ("weights", {"weights": "student"})]
)
def test_mismatched_source_refused(
    tmp_path: Path, caches: tuple[Path, Path], field: str, kw: dict[str, Any]
) -> None:
    x, y = separable(16, seed=6)
    other = write_cache(tmp_path / "other.h5", x, y, **kw)
    with pytest.raises(CacheError, match=field):
        train_probe(caches[0], other, **FAST)
    with pytest.raises(CacheError, match=field):  # the sweep checks after selection
        train_probe(caches[0], other, sweep=True, sweep_lrs=(1e-3,), sweep_wds=(0.0,), **FAST)


def test_majority_floor(tmp_path: Path, caches: tuple[Path, Path]) -> None:
    labels = np.array([2] * 10 + [0] * 5 + [1] * 3 + [3] * 2)
    x, y = separable(20, seed=7, labels=labels)
    val = write_cache(tmp_path / "imbalanced.h5", x, y)
    res = train_probe(caches[0], val, **{**FAST, "epochs": 1})
    assert res.majority == 50.0
    assert res.chance == 25.0
    assert majority_accuracy(torch.tensor([1, 1, 0]), 5) == pytest.approx(200 / 3)


def test_result_json(tmp_path: Path, caches: tuple[Path, Path]) -> None:
    res = train_probe(*caches, probe="attentive-reference", **{**FAST, "epochs": 2})
    assert tuple(res.to_json()) == ("format_version", *RESULT_KEYS, "settings", "profile")
    line = write_result(tmp_path / "run", "toy", res)
    # keyed by probe kind (issue 15, edge 2): another kind of probe never overwrites it
    saved = json.loads((tmp_path / "run" / "probes" / "toy-attentive-reference.json").read_text())
    assert saved == res.to_json()
    assert result_from_json(saved, "saved") == res  # read back as the same record
    for key in ("top1", "top5", "majority", "n_train", "n_val", "seed", "wall_time_s"):
        assert key in saved
    assert {"epochs", "lr", "wd", "batch_size", "schedule"} <= set(saved["hparams"])
    assert re.fullmatch(
        r"toy: top-1 \d+\.\d\d% \(top-5 \d+\.\d%, majority \d+\.\d%\) "
        r"attentive-reference, 2 epochs, seed 0",
        line,
    ), line
    assert not list((tmp_path / "run" / "probes").glob(".*tmp"))


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "cosine") < 1e-3
    assert lr_factor(99, 100, 0, "constant") == 1.0


def test_bad_arguments(caches: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="unknown probe"):
        train_probe(*caches, probe="mlp", **FAST)
    with pytest.raises(ValueError, match="linear"):
        train_probe(*caches, probe="attentive", sklearn=True, **FAST)
    with pytest.raises(ValueError, match="schedule"):
        train_probe(*caches, schedule="step", **FAST)


def test_token_count_mismatch_refused(tmp_path: Path, caches: tuple[Path, Path]) -> None:
    """A val cache cut with another clip length or crop has another token count."""
    x, y = separable(16, seed=8)
    short = write_cache(tmp_path / "short.h5", np.ascontiguousarray(x[:, :, :4]), y)
    with pytest.raises(CacheError, match="tokens"):
        train_probe(caches[0], short, **FAST)


def test_probe_kinds_never_overwrite_each_other(tmp_path: Path) -> None:
    """An attentive, a linear and a swept probe of one task: three files (issue 15, edge 2)."""
    base = {"top1": 50.0, "top5": 90.0, "majority": 20.0, "seed": 0}
    torch_hp = {"impl": "torch", "epochs": 2}
    write_result(
        tmp_path, "ssv2", result_from_json({**base, "probe": "attentive", "hparams": torch_hp}, "t")
    )
    write_result(
        tmp_path, "ssv2", result_from_json({**base, "probe": "linear", "hparams": torch_hp}, "t")
    )
    sweep = {"selected": {"lr": 1e-3, "wd": 0.0, "holdout_top1": 40.0}}
    swept = {**base, "probe": "attentive", "hparams": torch_hp, "sweep": sweep}
    write_result(tmp_path, "ssv2", result_from_json(swept, "t"))
    write_result(
        tmp_path,
        "in100",
        result_from_json({**base, "probe": "linear", "hparams": {"impl": "sklearn"}}, "t"),
    )
    names = sorted(p.name for p in (tmp_path / "probes").iterdir())
    assert names == [
        "in100-linear-sklearn.json",
        "ssv2-attentive-sweep.json",
        "ssv2-attentive.json",
        "ssv2-linear.json",
    ]
