"""The token cache's attributes are one typed, versioned record (issue 27): the caches of v0.1.0
read as :class:`CacheAttrs` and write back as the same attributes, and a cache of a newer
format is refused in one line, never silently rebuilt over without ``--force``. (And the
study's read of the metrics tail, :func:`last_step`, refuses a newer line likewise.)

Every test works on a copy of the fixture run (jepactl_tests/fixtures/runs/README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from jepactl.features.cache import (
    CACHE_FORMAT,
    FORMAT_VERSION,
    CacheAttrs,
    CacheError,
    NewerCacheError,
    cache_attrs,
    cache_status,
    read_cache_attrs,
    read_cache_record,
    read_header,
)
from jepactl.formats import NewerFormatError
from jepactl.grid import TokenGrid
from jepactl.train.metrics import METRICS_LINE, MetricsLine, last_step
from jepactl_tests.runfixtures import one_error_line
from jepactl_tests.studyfixtures import jepactl

V0_1_0 = Path(__file__).parent / "fixtures" / "runs" / "v0.1.0-synth-micro"
TASK = "synth-shapes"
SPLITS = ("train", "val")


def fixture_cache(split: str) -> Path:
    return V0_1_0 / "features" / TASK / f"{split}.h5"


def stored(path: Path) -> dict[str, Any]:
    """The attributes of ``path`` as h5py reads them, numpy scalars as Python values."""
    with h5py.File(path, "r") as f:
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}


@pytest.fixture
def newer_run(tmp_path: Path) -> Path:
    """A copy of the v0.1.0 run whose train cache claims format version 2."""
    run = tmp_path / "run"
    shutil.copytree(V0_1_0, run)
    with h5py.File(run / "features" / TASK / "train.h5", "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    return run


@pytest.mark.parametrize("split", SPLITS)
def test_the_v0_1_0_cache_reads_as_a_typed_record(split: str) -> None:
    path = fixture_cache(split)
    record = read_cache_record(path)
    assert record.format_version == CACHE_FORMAT.version == FORMAT_VERSION == 1
    assert record.split == split and record.benchmark == TASK and record.weights == "teacher"
    assert record.checkpoint_step == 4 and record.num_classes == 5 and record.num_clips == 16
    assert record.grid == (4, 8, 8) and record.pooling == "mean"
    assert record.classes == ("disc", "square", "triangle", "ring", "cross")
    assert record.protocol is not None and record.protocol["split"] == split
    assert record.limit == 16 and record.is_complete
    assert (record.shard_rank, record.shard_world, record.ranks) == (None, None, None)
    assert read_header(path).attrs == record


@pytest.mark.parametrize("split", SPLITS)
def test_the_record_writes_back_the_attributes_v0_1_0_wrote(split: str) -> None:
    path = fixture_cache(split)
    raw = stored(path)
    record = read_cache_record(path)
    written = record.to_attrs()
    assert written == raw
    assert {k: type(v) for k, v in written.items()} == {k: type(v) for k, v in raw.items()}
    assert CacheAttrs.from_attrs(written, "again") == record
    assert read_cache_attrs(path) == raw  # the plain view is unchanged too


def test_a_new_cache_s_attributes_are_those_v0_1_0_wrote() -> None:
    """What extract-features writes for the fixture's settings, in the order it wrote them
    (so a new cache's bytes are those of v0.1.0's, less HDF5's timestamps)."""
    raw = stored(fixture_cache("train"))
    old = read_cache_record(fixture_cache("train"))
    assert old.protocol is not None and old.grid is not None and old.classes is not None
    new = cache_attrs(
        checkpoint=str(old.checkpoint), checkpoint_step=4, checkpoint_sha256=old.checkpoint_sha256,
        weights="teacher", benchmark=TASK, split="train", protocol=dict(old.protocol),
        pooling="mean", grid=TokenGrid(*old.grid), num_classes=5, classes=list(old.classes),
        num_clips=16, index_sha256=str(old.index_sha256),
    )  # fmt: skip
    attrs = new.to_attrs()
    assert list(attrs) == [
        "format_version", "checkpoint", "checkpoint_step", "checkpoint_sha256", "weights",
        "benchmark", "split", "protocol", "pooling", "grid", "encoder_output", "num_classes",
        "classes", "num_clips", "index_sha256",
    ]  # fmt: skip
    assert attrs == {k: v for k, v in raw.items() if k != "complete"}
    shard = new.for_shard(1, 2).to_attrs()
    assert list(shard)[-2:] == ["shard_rank", "shard_world"] and shard["shard_world"] == 2


def test_a_newer_cache_is_refused_in_one_line(newer_run: Path) -> None:
    path = newer_run / "features" / TASK / "train.h5"
    for read in (read_cache_record, read_cache_attrs, read_header):
        with pytest.raises(NewerCacheError) as err:
            read(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        assert "token cache format 2" in message and "up to 1" in message
        assert "upgrade jepactl" in message
        assert isinstance(err.value, NewerFormatError) and isinstance(err.value, CacheError)


def test_a_newer_cache_is_rebuilt_over_only_with_force(newer_run: Path) -> None:
    path = newer_run / "features" / TASK / "train.h5"
    with h5py.File(path, "r") as f:
        shape = tuple(f["tokens"].shape)
    identity = read_cache_record(fixture_cache("train"))
    with pytest.raises(NewerCacheError, match=r"format 2.*up to 1.*--force"):
        cache_status(path, identity, shape, force=False)
    assert cache_status(path, identity, shape, force=True) == "stale"
    assert cache_status(fixture_cache("train"), identity, shape, force=False) == "complete"


def test_probe_on_a_newer_cache_is_one_line_and_exit_2(newer_run: Path, tmp_path: Path) -> None:
    before = (newer_run / "features" / TASK / "train.h5").read_bytes()
    res = jepactl("probe", TASK, "--run", str(newer_run), "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    one_error_line(res.stderr, "token cache format 2", "up to 1", "upgrade jepactl", "train.h5")
    assert (newer_run / "features" / TASK / "train.h5").read_bytes() == before  # untouched
    result = f"probes/{TASK}-attentive.json"
    assert (newer_run / result).read_bytes() == (V0_1_0 / result).read_bytes()  # no new one


def test_a_hand_made_cache_needs_only_what_the_probe_reads(tmp_path: Path) -> None:
    """A cache holding the four attributes read_header has always required still reads; one
    without them is named."""
    raw = {"checkpoint_sha256": "a" * 64, "weights": "teacher", "benchmark": "toy",
           "num_classes": 4, "complete": "true"}  # fmt: skip
    record = CacheAttrs.from_attrs(raw, "toy.h5")
    assert record.is_complete and record.pooling is None and record.limit is None
    assert record.to_attrs() == {"format_version": 1, **raw, "complete": True}
    with pytest.raises(CacheError, match=r"toy\.h5: missing attributes \['weights'\]"):
        CacheAttrs.from_attrs({k: v for k, v in raw.items() if k != "weights"}, "toy.h5")
    with pytest.raises(CacheError, match="grid"):
        CacheAttrs.from_attrs({**raw, "grid": "[4, 8]"}, "toy.h5")


# --------------------------------------------------------------------------------------
# The study's reading of metrics.jsonl's tail goes through the metrics line's owner too
# --------------------------------------------------------------------------------------


def test_last_step_reads_the_tail_and_refuses_a_newer_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert last_step(path) is None  # no file yet
    shutil.copy(V0_1_0 / "metrics.jsonl", path)
    assert last_step(path) == 4  # v0.1.0's lines (no version key)
    with path.open("a") as f:
        f.write(json.dumps(MetricsLine(step=6, loss=0.1).to_json()) + '\n{"step": 8, "lo')
    assert last_step(path) == 6  # a torn last line is passed over
    with path.open("a") as f:
        f.write("\n" + json.dumps({METRICS_LINE.key: METRICS_LINE.version + 1, "step": 9}))
    with pytest.raises(NewerFormatError, match="metrics line format 3"):
        last_step(path)
