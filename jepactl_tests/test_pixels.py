"""The raw-pixel baseline: pixel tokens against a reference cut by hand, the cache -> probe ->
compare path on a pixel directory, and its one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.config import recipes_root
from jepactl.data.loader import IMAGENET_MEAN, IMAGENET_STD
from jepactl.features.cache import read_cache_attrs
from jepactl.features.clips import EvalSource
from jepactl.features.encoder import encode_clips
from jepactl.features.extract import extract_features
from jepactl.features.pixels import PIXEL_STEP, PixelEncoder
from jepactl.features.registry import BENCHMARKS
from jepactl.grid import TokenGrid, pool_tokens
from jepactl.rundir import RunDir

runner = CliRunner()
TASK = "synth-shapes"  # 8 frames of 64 px: with patch 16 and tubelet 2, a 4 x 4 x 4 grid
LIMIT = ["--limit", "24"]
FAST = ["--device", "cpu"]


def reference_tokens(clips: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """uint8 ``[B, T, H, W, C]`` -> ``[B, N, C·tubelet·patch²]``: normalised by hand, each
    cube taken one by one in (t, h, w) raster order, flattened channel, frame, row, column."""
    x = clips.double() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN, dtype=torch.float64)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64
    )
    x = x.permute(0, 4, 1, 2, 3)  # [B, C, T, H, W]
    if x.shape[2] == 1:  # an image: tubelet copies of its frame
        x = x.repeat(1, 1, tubelet, 1, 1)
    _, _, t, h, w = x.shape
    tokens = []
    for ti in range(t // tubelet):
        for hi in range(h // patch):
            for wi in range(w // patch):
                cube = x[
                    :,
                    :,
                    ti * tubelet : (ti + 1) * tubelet,
                    hi * patch : (hi + 1) * patch,
                    wi * patch : (wi + 1) * patch,
                ]
                tokens.append(cube.reshape(len(x), -1))
    return torch.stack(tokens, dim=1).float()


@pytest.mark.parametrize(("frames", "patch", "tubelet"), [(4, 8, 2), (6, 4, 3), (1, 8, 2)])
def test_pixel_tokens_equal_a_reference_cut_by_hand(frames: int, patch: int, tubelet: int) -> None:
    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (3, 2, frames, 16, 24, 3), dtype=torch.uint8, generator=gen)
    enc = PixelEncoder(patch, tubelet)
    assert enc.embed_dim == 3 * tubelet * patch * patch
    ref = reference_tokens(clips.flatten(0, 1), patch, tubelet)
    grid = TokenGrid.of_clip(frames, 16, 24, patch, tubelet)
    for pool in ("none", "time", "space2x2", "mean"):
        got = encode_clips(enc, clips, pool)  # no parameters: on the CPU
        want = pool_tokens(ref, grid, pool).reshape(3, 2, -1, enc.embed_dim)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_patch_embedding_is_a_linear_map_of_the_pixel_tokens() -> None:
    """The token layout is the Conv3d kernel's: conv3d(x, W) == tokens @ W.flatten(1).T."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 16, 16, generator=gen)
    weight = torch.randn(5, 3, 2, 8, 8, generator=gen)
    conv = F.conv3d(x, weight, stride=(2, 8, 8)).flatten(2).transpose(1, 2)
    tokens = PixelEncoder(8, 2)(x)
    torch.testing.assert_close(tokens @ weight.flatten(1).T, conv, rtol=1e-4, atol=1e-4)


def write_recipe(path: Path, **model: int | str) -> Path:
    """A small recipe: the shipped synth/baseline with the micro encoder."""
    base = recipes_root() / "synth" / "baseline.yaml"
    path.write_text(yaml.safe_dump({"_base_": str(base), "model": {"preset": "micro", **model}}))
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def one_line_error(args: list[str], *needles: str) -> str:
    code, _, err = invoke(*args)
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def pixel_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two pixel baselines of one recipe, extracted with ``--pixels`` (pooled to the mean; the
    second its train split only, so ``probe`` extracts its val split) and probed with
    different seeds."""
    tmp = tmp_path_factory.mktemp("pixels")
    recipe = write_recipe(tmp / "tiny.yaml")
    a, b = tmp / "a", tmp / "b"
    code, out, err = invoke(
        "extract-features", str(a), "--task", TASK, "--pixels", str(recipe), "--pool", "mean",
        "--workers", "0", *LIMIT, *FAST,
    )  # fmt: skip
    assert code == 0, err
    assert "train:" in out and "val:" in out
    code, _, err = invoke(
        "extract-features", str(b), "--task", TASK, "--pixels", str(recipe), "--pool", "mean",
        "--workers", "0", "--split", "train", *LIMIT, *FAST,
    )  # fmt: skip
    assert code == 0, err
    for seed, d in enumerate((a, b)):
        code, out, err = invoke(
            "probe", TASK, "--run", str(d), "--probe", "linear", "--epochs", "2", "--seed",
            str(seed), "--pool", "mean", *LIMIT, *FAST,
        )  # fmt: skip
        assert code == 0, err
        assert f"{TASK}: top-1" in out
    return {"a": a, "b": b, "recipe": recipe}


def test_config_marks_the_directory(pixel_dirs: dict[str, Path]) -> None:
    config = RunDir(pixel_dirs["a"]).read_config()
    assert config["display_name"] == "Raw pixels"
    assert config["description"]
    assert config["pixels"] == {
        "recipe": "Baseline V-JEPA (synthetic, CPU)",
        "patch_size": 16,
        "tubelet": 2,
        "normalisation": {"scale": "1/255", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    assert config == RunDir(pixel_dirs["b"]).read_config()
    assert not RunDir(pixel_dirs["a"]).checkpoints.exists()


def test_the_cache_holds_the_pooled_pixels(pixel_dirs: dict[str, Path]) -> None:
    path = RunDir(pixel_dirs["a"]).cache(TASK, "val")
    attrs = read_cache_attrs(path)
    assert attrs["weights"] == "pixels"
    assert attrs["checkpoint_sha256"].startswith("pixels-")
    assert len(attrs["checkpoint_sha256"]) == len("pixels-") + 12
    assert attrs["checkpoint_step"] == PIXEL_STEP
    assert attrs["pooling"] == "mean" and attrs["complete"]
    assert (
        attrs["checkpoint_sha256"]
        == read_cache_attrs(RunDir(pixel_dirs["b"]).cache(TASK, "val"))["checkpoint_sha256"]
    )
    source = EvalSource(BENCHMARKS[TASK], "val", limit=24)
    clips = torch.stack([source[i].clip for i in range(len(source))])
    with h5py.File(path, "r") as f:
        assert f["ids"].asstr()[:].tolist() == [source.id(i) for i in range(len(source))]
        cached = torch.from_numpy(f["tokens"][:]).float()
    want = reference_tokens(clips.flatten(0, 1), 16, 2).mean(dim=1, keepdim=True)
    torch.testing.assert_close(cached, want.reshape(cached.shape), rtol=2e-3, atol=2e-3)


def test_probe_records_pixels_and_a_second_extract_reuses_the_cache(
    pixel_dirs: dict[str, Path],
) -> None:
    a = pixel_dirs["a"]
    result = json.loads(RunDir(a).result(f"{TASK}-linear").read_text())
    assert result["weights"] == "pixels"
    assert result["checkpoint"]["sha256"].startswith("pixels-")
    assert result["pooling"] == "mean"
    caches = [RunDir(a).cache(TASK, s) for s in ("train", "val")]
    before = [p.stat().st_mtime_ns for p in caches]
    for extra in ([], ["--pixels", str(pixel_dirs["recipe"])]):  # marked: --pixels optional
        args = ["extract-features", str(a), "--task", TASK, "--pool", "mean", *extra]
        code, _, err = invoke(*args, *LIMIT, *FAST)
        assert code == 0, err
        assert err.count("is complete and current; nothing to do") == 2, err
    assert [p.stat().st_mtime_ns for p in caches] == before


def test_compare_shows_one_raw_pixels_row(pixel_dirs: dict[str, Path]) -> None:
    a, b = str(pixel_dirs["a"]), str(pixel_dirs["b"])
    code, out, err = invoke("compare", a, b)
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if ln.startswith("Raw pixels ")]
    assert len(rows) == 1 and rows[0].rstrip().endswith("(2)"), out
    assert "untrained" not in out
    code, out, err = invoke("compare", a, b, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(r["label"], len(r["runs"]), r["weights"]) for r in data["rows"]] == [
        ("Raw pixels", 2, ["pixels"])
    ]


def test_one_line_errors(pixel_dirs: dict[str, Path], tmp_path: Path) -> None:
    recipe = str(pixel_dirs["recipe"])
    extract = ["extract-features", "--task", TASK, *LIMIT, *FAST]
    new = tmp_path / "new"
    one_line_error([*extract, str(new), "--pixels", "synth/baselin"], "synth/baseline")
    one_line_error(
        [*extract, str(new), "--pixels", recipe, "--checkpoint", str(tmp_path / "x.pt")],
        "--pixels and --checkpoint",
    )
    one_line_error([*extract, str(new), "--pixels", recipe, "--weights", "teacher"], "weights")
    assert not new.exists()

    trained = tmp_path / "trained"  # a trained run's config: a recipe, no pixels mapping
    RunDir(trained).write_config(yaml.safe_dump({"display_name": "Baseline", "train": {}}))
    one_line_error([*extract, str(trained), "--pixels", recipe], "its own directory")
    bare = tmp_path / "bare"  # a checkpoint without a config
    RunDir(bare).checkpoints.mkdir(parents=True)
    RunDir(bare).latest.write_bytes(b"")
    one_line_error([*extract, str(bare), "--pixels", recipe], "its own directory")
    assert not RunDir(bare).config.exists()

    other = write_recipe(tmp_path / "patch8.yaml", patch_size=8)
    a = str(pixel_dirs["a"])
    before = RunDir(a).config.read_text()
    one_line_error([*extract, a, "--pixels", str(other)], "2x16x16", "2x8x8")
    assert RunDir(a).config.read_text() == before
    one_line_error([*extract, a, "--checkpoint", str(tmp_path / "x.pt")], "raw-pixel baseline")
    one_line_error(["probe", TASK, "--run", a, "--weights", "student", *FAST], "weights")

    broken = tmp_path / "broken"
    RunDir(broken).write_config(yaml.safe_dump({"display_name": "Raw pixels", "pixels": {}}))
    one_line_error(["probe", TASK, "--run", str(broken), *FAST], "pixels.patch_size")


def test_extract_features_help_names_the_option() -> None:
    code, out, _ = invoke("extract-features", "--help")
    assert code == 0 and "--pixels" in "".join(out.split())


def test_a_pixel_cut_that_does_not_fit_the_clips_is_one_line(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "patch24.yaml", patch_size=24)  # 64 px: no whole patches
    one_line_error(
        ["extract-features", str(tmp_path / "d"), "--task", TASK, "--pixels", str(recipe), *FAST],
        "do not fit the encoder",
    )
    assert not (tmp_path / "d").exists()


_TWO_RANKS = """
    import torch
    from pathlib import Path
    from jepactl.features.registry import BENCHMARKS
    from jepactl.features.extract import extract_features
    torch.set_num_threads(1)
    bench = BENCHMARKS["synth-shapes"].with_overrides(
        frames=4, crop=32, options={{"n_train": 12, "n_val": 6}})
    extract_features(Path({run!r}), bench, splits=("train",), batch_size=4, num_workers=0,
                     progress=False, device="cpu", pixels={recipe!r})
"""


def rank(script: str, r: int, port: str) -> subprocess.Popen[str]:
    """Rank ``r`` of two gloo ranks running ``script``."""
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": port, "RANK": str(r), "LOCAL_RANK": str(r)}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_two_ranks_write_the_pixel_cache_of_one(tmp_path: Path) -> None:
    """Under torchrun (two gloo ranks) a new pixel directory is marked and its shards merged
    into the cache one process writes."""
    recipe = str(write_recipe(tmp_path / "tiny.yaml", patch_size=8))
    bench = BENCHMARKS[TASK].with_overrides(frames=4, crop=32, options={"n_train": 12, "n_val": 6})
    one = extract_features(
        tmp_path / "one", bench, ("train",), batch_size=4, num_workers=0, progress=False,
        device="cpu", pixels=recipe,
    )["train"]  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    script = textwrap.dedent(_TWO_RANKS.format(run=str(tmp_path / "two"), recipe=recipe))
    procs = [rank(script, r, port) for r in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "merged 2 shards" in outputs[0]
    two = RunDir(tmp_path / "two")
    assert two.read_config() == RunDir(tmp_path / "one").read_config()
    with h5py.File(one, "r") as f, h5py.File(two.cache(TASK, "train"), "r") as g:
        assert f["ids"].asstr()[:].tolist() == g["ids"].asstr()[:].tolist()
        assert np.array_equal(f["tokens"][:], g["tokens"][:])
        assert f.attrs["checkpoint_sha256"] == g.attrs["checkpoint_sha256"]
