"""Real-data pipeline: official layouts on generated videos, the weighted mix, broken files."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from videofixtures import write_image, write_video

from jepactl.cli import app
from jepactl.config import ConfigError, DataConfig
from jepactl.data.loader import DataQualityError, Mixture, StepBatchSampler, StepDataset
from jepactl.data.readers import csv_index, imagenet100_classes
from jepactl.data.sources import ClipSpec, IndexedSource, MixtureSource, build_source
from jepactl.train.loop import pretrain
from jepactl.train.metrics import read_metrics

TINY = [
    "model.preset=micro",
    "model.pred_depth=1",
    "model.pred_dim=32",
    "model.pred_heads=2",
    "data.crop=32",
    "data.decode_short_side=40",
    "data.num_frames=4",
    "data.batch_size=4",
    "data.num_workers=0",
    "train.log_every=1",
    "train.precision=fp32",
]


def test_mixture_realises_the_weights_and_keeps_batches_homogeneous() -> None:
    offsets = [0, 100, 400, 450]  # ucf101 100 clips, ssv2 300, imagenet100 50
    mixture = Mixture(offsets, [0.2, 0.6, 0.2], frames=[16, 16, 1], seed=3)
    counts: Counter[int] = Counter()
    for step in range(10_000 // 32 + 1):
        batch = mixture.draw(step, 32)
        parts = np.searchsorted(offsets, batch, side="right") - 1
        assert len({16 if p < 2 else 1 for p in parts}) == 1  # images and videos never mix
        counts.update(parts.tolist())
    total = sum(counts.values())
    for part, weight in enumerate([0.2, 0.6, 0.2]):
        assert abs(counts[part] / total - weight) < 0.01, (part, counts[part] / total)


def test_ranks_take_disjoint_slices_of_the_same_global_draw() -> None:
    mixture = Mixture([0, 10, 20], [0.5, 0.5], frames=[16, 1], seed=0)
    a = StepBatchSampler(mixture, 8, rank=0, world_size=2, start_step=0, end_step=5)
    b = StepBatchSampler(mixture, 8, rank=1, world_size=2, start_step=0, end_step=5)
    for step in range(5):
        both = a.indices(step) + b.indices(step)
        assert both == mixture.draw(step, 8)
        assert len({i >= 10 for i in both}) == 1  # the same kind of batch on both ranks


def _csv_dataset(tmp: Path, bad: int = 3) -> Path:
    """4 good clips in three codecs plus ``bad`` broken files, indexed by a CSV."""
    rows = []
    for i, suffix in enumerate([".avi", ".webm", ".mp4", ".mp4"]):
        rows.append(f"{write_video(tmp / f'good{i}{suffix}', 24, size=(64, 48))} {i % 2}")
    broken = write_video(tmp / "truncated.mp4", 24, size=(64, 48))
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "text.mp4").write_text("not a video\n")
    rows += [f"{tmp / n} 0" for n in ("truncated.mp4", "empty.mp4", "text.mp4")][:bad]
    index = tmp / "index.csv"
    index.write_text("\n".join(rows) + "\n")
    return index


def test_broken_files_are_replaced_and_recorded(tmp_path: Path) -> None:
    index = csv_index(_csv_dataset(tmp_path))
    spec = ClipSpec(4, 2, 32, 40, (0.3, 1.0), (0.75, 1.35), 0.5, "frame")
    source = IndexedSource(index, spec)
    dataset = StepDataset(source, seed=0)
    names = [Path(e.path).name for e in index.entries]
    for bad_name in ("truncated.mp4", "empty.mp4", "text.mp4"):
        i = names.index(bad_name)
        step, sample, bad = dataset[(7, 0, i)]
        assert step == 7 and sample.clip.shape == (4, 32, 32, 3)
        assert bad and bad[0]["path"].endswith(bad_name) and bad[0]["error"]
        again = dataset[(7, 0, i)]  # the replacement is deterministic
        assert again[1].id == sample.id and again[2] == bad


def test_pretrain_records_bad_samples_and_stops_past_the_threshold(tmp_path: Path) -> None:
    index = _csv_dataset(tmp_path / "data")
    data = ["data.source=csv", f"data.roots.csv={index}", "optim.iters_per_epoch=50"]
    result = pretrain(
        "single/baseline",
        [*TINY, *data, "data.max_bad_fraction=1.0"],
        run_dir=tmp_path / "ok",
        max_steps=6,
        progress=False,
    )
    assert result.step == 6
    records = [
        json.loads(x) for x in (tmp_path / "ok" / "bad_samples.jsonl").read_text().splitlines()
    ]
    assert records and {Path(r["path"]).name for r in records} <= {
        "truncated.mp4",
        "empty.mp4",
        "text.mp4",
    }
    assert read_metrics(tmp_path / "ok" / "metrics.jsonl")[-1]["bad_samples"] == len(records)
    with pytest.raises(DataQualityError, match="max_bad_fraction"):
        pretrain(
            "single/baseline",
            [*TINY, *data, "data.max_bad_fraction=0.0"],
            run_dir=tmp_path / "strict",
            max_steps=40,
            progress=False,
        )
    assert (tmp_path / "strict" / "checkpoints" / "latest.pt").exists()  # stopped cleanly


def _official_layouts(root: Path) -> dict[str, Path]:
    ucf = root / "ucf101"
    for cls in ("ApplyEyeMakeup", "Archery"):
        for g in (1, 2):
            write_video(ucf / "UCF-101" / cls / f"v_{cls}_g0{g}_c01.avi", 20, size=(64, 48))
    lists = ucf / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\nArchery/v_Archery_g02_c01.avi\n"
    )
    ssv2 = root / "ssv2"
    for vid in ("1", "2", "3"):
        write_video(ssv2 / "20bn-something-something-v2" / f"{vid}.webm", 20, size=(64, 48))
    (ssv2 / "labels.json").write_text(
        json.dumps({"Pushing something": "0", "Lifting something": "1"})
    )
    items = [
        {"id": v, "template": t, "label": "x", "placeholders": []}
        for v, t in (
            ("1", "Pushing [something]"),
            ("2", "Lifting [something]"),
            ("3", "Pushing [something]"),
        )
    ]
    (ssv2 / "train.json").write_text(json.dumps(items))
    (ssv2 / "validation.json").write_text(json.dumps(items[:1]))
    in100 = root / "imagenet100"
    for wnid in imagenet100_classes():  # every class folder must exist; two hold images
        (in100 / "train" / wnid).mkdir(parents=True)
    for wnid in ("n02869837", "n01749939"):
        for k in range(2):
            write_image(in100 / "train" / wnid / f"{wnid}_{k}.JPEG", (50, 40), (200, 30 * k, 10))
    return {"ucf101": ucf, "ssv2": ssv2, "imagenet100": in100}


def test_mixed_recipe_trains_on_official_layouts(tmp_path: Path) -> None:
    roots = _official_layouts(tmp_path / "data")
    sets = [f"data.roots.{k}={v}" for k, v in roots.items()]
    result = pretrain(
        "mixed/baseline", [*TINY, *sets], run_dir=tmp_path / "run", max_steps=3, progress=False
    )
    assert result.step == 3
    assert not (tmp_path / "run" / "bad_samples.jsonl").exists()


def test_imagenet_images_are_one_frame_clips_or_repeated(tmp_path: Path) -> None:
    roots = _official_layouts(tmp_path / "data")
    cfg = DataConfig(
        source="imagenet100",
        roots={"imagenet100": str(roots["imagenet100"])},
        num_frames=4,
        crop=32,
        decode_short_side=40,
    )
    sample = build_source(cfg, seed=0).load(0, seed=1)
    assert sample.clip.shape == (1, 32, 32, 3)
    cfg.images = "repeat"
    repeated = build_source(cfg, seed=0).load(0, seed=1).clip
    assert repeated.shape == (4, 32, 32, 3) and bool((repeated == repeated[:1]).all())


def test_missing_dataset_fails_before_training_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JEPACTL_DATA", raising=False)
    with pytest.raises(ConfigError, match=r"data\.roots\.ucf101"):
        pretrain("mixed/baseline", TINY, run_dir=tmp_path / "r", max_steps=1, progress=False)
    assert not (tmp_path / "r").exists()
    monkeypatch.setenv("JEPACTL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError) as info:
        pretrain("single/baseline", TINY, run_dir=tmp_path / "r", max_steps=1, progress=False)
    assert str(tmp_path / "nowhere") in str(info.value) and "UCF-101/" in str(info.value)


def test_data_check_reports_broken_files(tmp_path: Path) -> None:
    index = _csv_dataset(tmp_path)
    res = CliRunner().invoke(
        app,
        [
            "data",
            "check",
            "csv",
            "--root",
            str(index),
            "--workers",
            "1",
            "--frames",
            "16",
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert res.exit_code == 1, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["checked"] == 7
    kinds = {Path(p["path"]).name: p["kind"] for p in report["problems"]}
    assert kinds["empty.mp4"] == kinds["text.mp4"] == "undecodable"
    assert kinds["good0.avi"] == "too_short"  # 24 frames < one clip: (16 - 1) * 2 + 1 = 31
    assert "truncated.mp4" in kinds


def test_jepactl_data_env_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _official_layouts(tmp_path / "data")
    monkeypatch.setenv("JEPACTL_DATA", str(tmp_path / "data"))
    source = build_source(
        DataConfig(source="ssv2", num_frames=4, crop=32, decode_short_side=40), seed=0
    )
    assert len(source) == 3 and os.path.exists(source.path(0))


def test_torchrun_heads_survive_image_only_batches(tmp_path: Path) -> None:
    """Under DDP (static graph) a one-frame image batch gives the temporal heads nothing to
    predict; every head parameter must still get a gradient on every rank."""
    import subprocess
    import sys

    roots = _official_layouts(tmp_path / "data")
    sets = [f"data.roots.{k}={v}" for k, v in roots.items()] + ["data.mix.imagenet100=2.0"]
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "jepactl",
        "pretrain",
        "--recipe",
        "mixed/fwm_hw_ld",
        "--run-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "6",
    ]
    for o in [*TINY, *sets]:
        args += ["--set", o]
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["step"] == 6


def test_epochs_visit_every_item_once_per_pass() -> None:
    from jepactl.data.loader import Epochs

    sampling = Epochs(num_samples=10, seed=1)
    first = [i for step in range(5) for i in sampling.draw(step, 4)]  # 20 draws = 2 passes
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert first[:10] != first[10:]  # a new permutation each pass


def test_the_same_item_twice_in_a_step_gets_two_crops(tmp_path: Path) -> None:
    index = csv_index(_csv_dataset(tmp_path, bad=0))
    spec = ClipSpec(4, 2, 32, 40, (0.3, 1.0), (0.75, 1.35), 0.5, "frame")
    dataset = StepDataset(IndexedSource(index, spec), seed=0)
    a, b = dataset[(3, 0, 1)][1].clip, dataset[(3, 1, 1)][1].clip
    assert not torch.equal(a, b)
    assert torch.equal(a, dataset[(3, 0, 1)][1].clip)


def test_an_index_mixing_images_and_videos_is_split_by_clip_length(tmp_path: Path) -> None:
    rows = [f"{write_video(tmp_path / f'v{i}.mp4', 20, size=(64, 48))} 0" for i in range(3)]
    rows += [f"{write_image(tmp_path / f'i{i}.jpg', (50, 40), (9, 9, 9))} 1" for i in range(2)]
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    cfg = DataConfig(
        source="csv",
        roots={"csv": str(tmp_path / "index.csv")},
        num_frames=4,
        crop=32,
        decode_short_side=40,
    )
    source = build_source(cfg, seed=0)
    assert isinstance(source, MixtureSource)
    assert sorted(s.clip_frames(0) for s in source.sources) == [1, 4]
    assert source.weights == pytest.approx([0.4, 0.6])
    data = ["data.source=csv", f"data.roots.csv={tmp_path / 'index.csv'}"]
    result = pretrain(
        "single/baseline", [*TINY, *data], run_dir=tmp_path / "run", max_steps=4, progress=False
    )
    assert result.step == 4


# --------------------------------------------------------------------------------------
# Issue 15, rough edges 3 and 4: every missing dataset at once; one vocabulary
# --------------------------------------------------------------------------------------


def test_every_missing_dataset_of_a_recipe_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JEPACTL_DATA", raising=False)
    roots = _official_layouts(tmp_path / "data")
    sets = [*TINY, f"data.roots.ucf101={roots['ucf101']}"]  # ssv2 and in100 are not given
    with pytest.raises(ConfigError) as info:
        pretrain("mixed/baseline", sets, run_dir=tmp_path / "r", max_steps=1, progress=False)
    message = str(info.value)
    assert message.startswith("2 of 3 datasets cannot be read: [1] ssv2: ")
    assert "[2] in100: " in message and "ucf101:" not in message
    for hint in ("--set data.roots.ssv2=", "--set data.roots.in100=", "labels.json", "val/"):
        assert hint in message  # where to point it, and each layout expected
    assert not (tmp_path / "r").exists()


def test_data_check_recipe_checks_every_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JEPACTL_DATA", raising=False)
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", "--recipe", "mixed/baseline"])
    assert res.exit_code == 2
    for name in ("ucf101", "ssv2", "in100"):  # all three in one error, with the real option
        assert f"--root {name}=/path/to/{name}" in res.output
    assert "data.roots" not in res.output
    roots = _official_layouts(tmp_path / "data")
    args = ["data", "check", "--recipe", "mixed/baseline", "--frames", "4", "--stride", "1"]
    args += ["--workers", "1", "--report", str(tmp_path / "r.json")]
    for name, path in roots.items():  # imagenet100= is the alias of in100
        args += ["--root", f"{name}={path}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("ucf101", "ssv2", "in100"):
        assert f"{name}/train at {roots['imagenet100' if name == 'in100' else name]}" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["dataset"] for r in report] == ["ucf101", "ssv2", "in100"]
    res = runner.invoke(app, ["data", "check", "--recipe", "mixed/baseline", "--root", "/x"])
    assert res.exit_code == 2 and "give NAME=PATH" in res.output


def test_one_vocabulary_for_datasets_and_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JEPACTL_DATA", raising=False)
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", "ssv2"])
    assert res.exit_code == 2
    assert "pass --root ssv2=/path/to/ssv2" in res.output and "data.roots" not in res.output
    in100 = _official_layouts(tmp_path / "data")["imagenet100"]
    check = ["--split", "train", "--frames", "1", "--stride", "1", "--workers", "1"]
    for name, root in (("in100", f"in100={in100}"), ("imagenet100", str(in100))):
        res = runner.invoke(app, ["data", "check", name, "--root", root, *check])
        assert res.exit_code == 0, res.output
        assert f"in100/train at {in100}: 4 files checked, no problems" in res.output
    res = runner.invoke(app, ["data", "check", "in100", "--root", f"ssv2={in100}"])
    assert res.exit_code == 2 and "no dataset 'ssv2' in this command" in res.output
    # the evaluation commands take the same --root NAME=PATH, and a bare PATH for their one
    res = runner.invoke(
        app, ["extract-features", str(tmp_path), "--task", "in100", "--root", "ssv2=/x"]
    )
    assert res.exit_code == 2 and "(it reads in100)" in res.output
    res = runner.invoke(
        app, ["extract-features", str(tmp_path), "--task", "synth-shapes", "--root", "/x"]
    )
    assert res.exit_code == 2 and "it reads no dataset" in res.output
    # recipes: the alias is the dataset, in an override too
    res = runner.invoke(app, ["show-recipe", "mixed/baseline", "--set", "data.mix.imagenet100=2"])
    assert res.exit_code == 0, res.output
    assert "in100: 2" in res.output and "imagenet100" not in res.output


def test_older_configs_with_the_alias_compare_equal() -> None:
    from jepactl.config import canonical_data_names

    old = {"data": {"source": "imagenet100", "mix": {"imagenet100": 0.2}, "roots": {}}}
    assert canonical_data_names(old) == {
        "data": {"source": "in100", "mix": {"in100": 0.2}, "roots": {}}
    }
