"""Feature extraction: benchmarks, the HDF5 cache schema, weights choice, resume, stale caches,
pooling, and the torchrun shards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from videofixtures import frame_index, write_image, write_video

from jepactl import checkpoint as ckpt
from jepactl.data.decode import uniform_indices
from jepactl.data.readers import imagenet100_classes
from jepactl.errors import ConfigError
from jepactl.features.benchmarks import Benchmark
from jepactl.features.cache import CacheError, merge_shards
from jepactl.features.clips import EvalSource
from jepactl.features.encoder import encode_clips, load_frozen_encoder
from jepactl.features.extract import extract_features
from jepactl.features.registry import BENCHMARKS, get_benchmark
from jepactl.grid import TokenGrid, pool_tokens
from jepactl.rundir import RunDir
from jepactl.train.loop import pretrain
from jepactl.utils import file_sha256

REPO = Path(__file__).resolve().parents[1]

#: synth-shapes shrunk to the micro encoder: 4 frames of 32x32 (2x2x2 tokens of 64 dims).
SYNTH = BENCHMARKS["synth-shapes"].with_overrides(
    frames=4, crop=32, options={"n_train": 12, "n_val": 6}
)


def _pretrain(run_dir: Path, tiny: list[str], extra: list[str]) -> Path:
    pretrain("synth/baseline", [*tiny, *extra], run_dir=run_dir, max_steps=1, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two one-step runs of the micro encoder: with an EMA teacher, and without."""
    from conftest import TINY

    base = tmp_path_factory.mktemp("runs")
    return {
        "ema": _pretrain(base / "ema", TINY, []),
        "no_ema": _pretrain(base / "no_ema", TINY, ["objective.teacher=none"]),
    }


@pytest.fixture
def run(runs: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the EMA run (tests write caches into it)."""
    return Path(shutil.copytree(runs["ema"], tmp_path / "run"))


def extract(run_dir: Path, bench: Benchmark | str = SYNTH, **kw: object) -> dict[str, Path]:
    kw = {"batch_size": 4, "num_workers": 0, "progress": False, **kw}
    return extract_features(run_dir, bench, **kw)  # type: ignore[arg-type]


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {
            "tokens": f["tokens"][:],
            "labels": f["labels"][:],
            "ids": f["ids"].asstr()[:],
            "done": f["done"][:],
        }


# --------------------------------------------------------------------------------------
# Benchmarks and sources
# --------------------------------------------------------------------------------------


def test_registry_defaults() -> None:
    expect = {
        "diving48": ("diving48", 48, "attentive", "test"),
        "ssv2": ("ssv2", 174, "attentive", "validation"),
        "in100": ("in100", 100, "linear", "val"),
        "ucf101": ("ucf101", 101, "attentive", "test"),
        "synth-shapes": ("synth", 5, "attentive", "val"),
    }
    for name, (reader, classes, probe, val) in expect.items():
        b = get_benchmark(name)
        assert (b.reader, b.num_classes, b.probe, b.splits["val"]) == (reader, classes, probe, val)
        assert b.splits["train"] == "train" and b.doc
    assert BENCHMARKS["in100"].frames == 1 and BENCHMARKS["diving48"].frames == 16
    assert BENCHMARKS["synth-shapes"].frames == 8 and BENCHMARKS["synth-shapes"].crop == 64
    with pytest.raises(ConfigError, match="did you mean 'diving48'"):
        get_benchmark("diving-48")
    with pytest.raises(ConfigError, match="no split 'test'"):
        BENCHMARKS["diving48"].reader_split("test")


def test_synth_source_splits_and_limit() -> None:
    train, val = EvalSource(SYNTH, "train"), EvalSource(SYNTH, "val")
    assert (len(train), len(val)) == (12, 6)
    assert not set(train.ids()) & set(val.ids())
    sample = val[2]
    assert sample.clip.shape == (1, 4, 32, 32, 3) and sample.clip.dtype == torch.uint8
    assert sample.id == val.id(2) and 0 <= sample.label < 5
    assert train.classes == ["disc", "square", "triangle", "ring", "cross"]
    few = EvalSource(SYNTH, "train", limit=4)
    assert few.ids() == [train.id(i) for i in (0, 4, 7, 11)]  # spread over the split
    assert few.fingerprint() != train.fingerprint()
    three = EvalSource(SYNTH.with_overrides(views=3), "train")
    assert three[0].clip.shape == (3, 4, 32, 32, 3)


def make_diving48(root: Path, sizes: list[tuple[int, int]], frames: int = 40) -> None:
    """A Diving-48 layout with real H.264 clips (48 vocabulary entries)."""
    (root / "rgb").mkdir(parents=True)
    vocab = [[[f"c{k}"]] for k in range(48)]
    (root / "Diving48_vocab.json").write_text(json.dumps(vocab))
    rows = []
    for k, size in enumerate(sizes):
        write_video(root / "rgb" / f"v{k}.mp4", frames, size=size)
        rows.append({"vid_name": f"v{k}", "label": 3 * k, "start_frame": 0, "end_frame": frames})
    (root / "Diving48_V2_train.json").write_text(json.dumps(rows))
    (root / "Diving48_V2_test.json").write_text(json.dumps(rows[:1]))


def test_video_source_reference_protocol(tmp_path: Path) -> None:
    """16 frames uniform over the whole video, short side to the crop, centre crop."""
    make_diving48(tmp_path, [(48, 48), (96, 64)])
    bench = BENCHMARKS["diving48"].with_overrides(crop=48)
    source = EvalSource(bench, "train", roots={"diving48": str(tmp_path)})
    square = source[0]
    assert square.clip.shape == (1, 16, 48, 48, 3) and square.label == 0
    assert [frame_index(f) for f in square.clip[0]] == uniform_indices(40, 16)
    wide = source[1]
    assert wide.clip.shape == (1, 16, 48, 48, 3) and wide.label == 3
    assert source.protocol()["reader_split"] == "train"
    assert EvalSource(bench, "val", roots={"diving48": str(tmp_path)}).ids() == ["v0"]


# --------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------


def test_schema(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = extract(run)
    assert paths == {s: run / "features" / "synth-shapes" / f"{s}.h5" for s in ("train", "val")}
    out = capsys.readouterr().err
    assert "12 clips x 1 view(s) x 8 tokens x 64 dims, float16 = 12.3 kB" in out
    latest = run / "checkpoints" / "latest.pt"
    frozen = load_frozen_encoder(run, "teacher")
    for split, n in (("train", 12), ("val", 6)):
        with h5py.File(paths[split], "r") as f:
            assert f["tokens"].shape == (n, 1, 8, 64) and f["tokens"].dtype == np.float16
            assert f["tokens"].chunks == (1, 1, 8, 64)
            assert f["labels"].dtype == np.int64 and f["done"].dtype == bool
            assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
            attrs = dict(f.attrs)
        assert attrs["complete"] and attrs["weights"] == "teacher"
        assert attrs["checkpoint"] == str(latest.resolve()) and attrs["checkpoint_step"] == 1
        assert attrs["checkpoint_sha256"] == file_sha256(latest)
        assert attrs["benchmark"] == "synth-shapes" and attrs["pooling"] == "none"
        assert attrs["num_classes"] == 5 and json.loads(attrs["grid"]) == [2, 2, 2]
        protocol = json.loads(attrs["protocol"])
        assert (protocol["frames"], protocol["crop"], protocol["views"]) == (4, 32, 1)
        data = read(paths[split])
        source = EvalSource(SYNTH, split)
        assert data["done"].all()
        assert data["ids"].tolist() == source.ids()
        assert data["labels"].tolist() == [source[i].label for i in range(n)]
        # The cached rows are the encoder's tokens of those clips (float16-rounded).
        clips = torch.stack([source[i].clip for i in range(4)])
        direct = encode_clips(frozen.encoder, clips, "none")
        np.testing.assert_allclose(data["tokens"][:4], direct.numpy(), atol=2e-2, rtol=1e-2)
    # A second call finds complete, current caches and does nothing.
    before = os.stat(paths["train"]).st_mtime_ns
    assert extract(run) == paths
    assert extract(run, force=True) == paths  # force rebuilds only caches that do not match
    assert os.stat(paths["train"]).st_mtime_ns == before
    assert "complete and current" in capsys.readouterr().err


def test_weights_choice(runs: dict[str, Path], tmp_path: Path) -> None:
    no_ema = Path(shutil.copytree(runs["no_ema"], tmp_path / "no_ema"))
    assert load_frozen_encoder(no_ema).weights == "student"
    assert load_frozen_encoder(runs["ema"]).weights == "teacher"
    assert load_frozen_encoder(runs["ema"], "student").weights == "student"
    with pytest.raises(ConfigError, match="trained no EMA teacher"):
        extract(no_ema, weights="teacher")
    assert not (no_ema / "features").exists()
    paths = extract(no_ema, splits=("val",))
    with h5py.File(paths["val"], "r") as f:
        assert f.attrs["weights"] == "student"


def test_killed_extraction_resumes(run: Path) -> None:
    clean = read(extract(run, splits=("train",))["train"])
    shutil.rmtree(run / "features")

    class Killed(Exception):
        pass

    def kill_after_two(split: str, done: int, total: int) -> None:
        if done >= 8:
            raise Killed

    with pytest.raises(Killed):
        extract(run, splits=("train",), on_batch=kill_after_two)
    path = RunDir(run).cache("synth-shapes", "train")
    with h5py.File(path, "r") as f:
        assert not f.attrs["complete"]
        assert f["done"][:].tolist() == [True] * 8 + [False] * 4

    seen: list[int] = []
    extract(run, splits=("train",), on_batch=lambda s, done, total: seen.append(done))
    assert seen == [12]  # only the missing rows were encoded
    resumed = read(path)
    assert resumed["done"].all()
    assert sorted(resumed["ids"].tolist()) == sorted(set(clean["ids"].tolist()))
    assert resumed["ids"].tolist() == clean["ids"].tolist()
    assert np.array_equal(resumed["labels"], clean["labels"])
    assert np.array_equal(resumed["tokens"], clean["tokens"])
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"]


def test_stale_cache_refused(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = extract(run, splits=("val",))["val"]
    with pytest.raises(CacheError, match=r"other settings.*pooling"):
        extract(run, splits=("val",), pool="mean")
    with pytest.raises(CacheError, match=r"other settings.*protocol"):
        extract(run, splits=("val",), limit=3)
    # The run trains on: the checkpoint changes under the cache.
    latest = run / "checkpoints" / "latest.pt"
    state = ckpt.load(latest)
    state["teacher"]["patch_embed.weight"] += 0.1
    state["step"] = 2
    ckpt.atomic_save(state, latest)
    with pytest.raises(CacheError, match=r"another checkpoint.*step 1.*step 2.*--force"):
        extract(run, splits=("val",))
    old = read(path)["tokens"]
    extract(run, splits=("val",), force=True)
    assert "--force: rebuilding" in capsys.readouterr().err
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"] and f.attrs["checkpoint_step"] == 2
        assert f.attrs["checkpoint_sha256"] == file_sha256(latest)
        assert not np.array_equal(f["tokens"][:], old)


@pytest.mark.parametrize(
    ("pool", "tokens"), [("none", 32), ("time", 16), ("space2x2", 8), ("mean", 1)]
)
def test_pooling_shapes(run: Path, pool: str, tokens: int) -> None:
    bench = SYNTH.with_overrides(crop=64, views=3)  # 2 x 4 x 4 tokens
    path = extract(run, bench, splits=("val",), pool=pool)["val"]
    with h5py.File(path, "r") as f:
        assert f["tokens"].shape == (6, 3, tokens, 64)
        assert f["tokens"].chunks == (1, 3, tokens, 64)
        assert f.attrs["pooling"] == pool and f.attrs["complete"]


def test_pool_tokens_values() -> None:
    grid = TokenGrid(2, 4, 4)
    x = torch.randn(3, grid.num_tokens, 5)
    grid_view = x.view(3, 2, 4, 4, 5)
    assert torch.equal(pool_tokens(x, grid, "none"), x)
    torch.testing.assert_close(pool_tokens(x, grid, "mean"), x.mean(1, keepdim=True))
    torch.testing.assert_close(pool_tokens(x, grid, "time"), grid_view.mean(1).reshape(3, 16, 5))
    s = pool_tokens(x, grid, "space2x2")
    assert s.shape == (3, 8, 5)
    # Token (t, i, j) is the mean of the 2x2 block of row-pair i, column-pair j at time t.
    for t in range(2):
        for i in range(2):
            for j in range(2):
                block = grid_view[:, t, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((1, 2))
                torch.testing.assert_close(s[:, t * 4 + i * 2 + j], block)


def test_video_benchmark_in_workers(run: Path, tmp_path: Path) -> None:
    """Real clips decoded in two DataLoader workers."""
    data = tmp_path / "diving48"
    make_diving48(data, [(48, 48), (96, 64), (64, 48)], frames=20)
    bench = BENCHMARKS["diving48"].with_overrides(frames=4, crop=32)
    paths = extract(run, bench, num_workers=2, batch_size=2, roots={"diving48": str(data)})
    train = read(paths["train"])
    assert train["ids"].tolist() == ["v0", "v1", "v2"] and train["labels"].tolist() == [0, 3, 6]
    assert train["tokens"].shape == (3, 1, 8, 64) and train["done"].all()
    assert read(paths["val"])["ids"].tolist() == ["v0"]


def test_image_benchmark(run: Path, tmp_path: Path) -> None:
    """IN-100 images are one-frame clips (tubelet-1 path); frames > 1 repeats them."""
    data = tmp_path / "in100"
    for split in ("train", "val"):
        for k, wnid in enumerate(imagenet100_classes()):
            write_image(data / split / wnid / f"{wnid}_{k}.JPEG", size=(48, 40))
    bench = BENCHMARKS["in100"].with_overrides(crop=32)
    roots = {"imagenet100": str(data)}
    source = EvalSource(bench, "val", roots=roots, limit=4)
    assert source[0].clip.shape == (1, 1, 32, 32, 3) and source.kind == "image"
    assert [source[i].label for i in range(4)] == [0, 33, 66, 99]
    repeated = EvalSource(bench.with_overrides(frames=2), "val", roots=roots, limit=4)
    assert torch.equal(repeated[1].clip[:, 0], repeated[1].clip[:, 1])
    paths = extract(run, bench, roots=roots, limit=4)
    val = read(paths["val"])
    assert val["tokens"].shape == (4, 1, 4, 64) and val["labels"].tolist() == [0, 33, 66, 99]
    with h5py.File(paths["val"], "r") as f:
        assert json.loads(f.attrs["grid"]) == [1, 2, 2]


# --------------------------------------------------------------------------------------
# Hard kills and torchrun shards
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python(script: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, **(env or {})},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


_EXTRACT = """
    import torch
    from pathlib import Path
    from jepactl.features.registry import BENCHMARKS
    from jepactl.features.extract import extract_features
    torch.set_num_threads(1)
    bench = BENCHMARKS["synth-shapes"].with_overrides(
        frames=4, crop=32, options={{"n_train": 12, "n_val": 6}})
    extract_features(Path({run!r}), bench, splits=("train",), batch_size=4, num_workers=0,
                     progress=False, device="cpu")
"""


def test_two_ranks_match_one(run: Path, tmp_path: Path) -> None:
    """Two gloo ranks write shards; rank 0 merges them into the same cache as one process."""
    single = read(extract(run, splits=("train",))["train"])
    shutil.rmtree(run / "features")
    env = {
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    script = _EXTRACT.format(run=str(run))
    procs = [_python(script, {**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "merged 2 shards" in outputs[0]
    merged = read(RunDir(run).cache("synth-shapes", "train"))
    assert merged["ids"].tolist() == single["ids"].tolist()
    assert np.array_equal(merged["labels"], single["labels"]) and merged["done"].all()
    np.testing.assert_allclose(merged["tokens"], single["tokens"], atol=2e-2, rtol=1e-2)
    assert not list((run / "features" / "synth-shapes").glob("*.rank*.h5"))


def test_merge_rejects_incomplete_shard(run: Path) -> None:
    """The merge checks its inputs; shards are built here by hand from one-rank caches."""
    full = extract(run, splits=("val",))["val"]
    shards = [RunDir(run).shard("synth-shapes", "val", r) for r in range(2)]
    for r, shard in enumerate(shards):
        shutil.copy(full, shard)
        with h5py.File(shard, "r+") as f:
            f.attrs["shard_rank"], f.attrs["shard_world"] = r, 2
    with pytest.raises(CacheError, match="holds 6 rows, expected 3"):
        merge_shards(shards, run / "merged.h5")
    with h5py.File(shards[1], "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(CacheError, match="not complete"):
        merge_shards(shards, run / "merged.h5")
    assert not (run / "merged.h5").exists()
