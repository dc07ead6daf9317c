"""Runs written by past releases still read (jepactl_tests/fixtures/runs/README.md).

Every test works on a copy: the fixture itself is never written to, and never regenerated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepactl.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
V0_1_0 = FIXTURES / "v0.1.0-synth-micro"
#: Every committed run directory (oldest first) and its two results as ``compare`` prints them:
#: ``v0.1.0`` holds every file in format 1; ``formats2`` probe results and metrics lines in
#: format 2 (issue 27), the rest unchanged.
RUNS = {
    "v0.1.0-synth-micro": ("12.50", "60.42"),
    "formats2-synth-micro": ("12.50", "61.25"),
}
#: The overrides every fixture was trained with (their README).
V0_1_0_SETS = [
    "model.preset=micro", "model.patch_size=8", "model.pred_depth=1", "model.pred_dim=32",
    "model.pred_heads=2", "data.crop=32", "data.num_frames=4", "data.batch_size=4",
    "data.num_workers=0", "train.precision=fp32", "train.log_every=2",
    "train.checkpoint_every=2", "train.snapshot_every=4", "monitor.every=0",
]  # fmt: skip
runner = CliRunner()


@pytest.fixture(params=list(RUNS))
def old_run(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    copy = tmp_path / request.param  # named as the fixture it copies
    shutil.copytree(FIXTURES / request.param, copy)
    return copy


def test_every_fixture_is_tested() -> None:
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(RUNS)


def test_compare_reads_the_old_results(old_run: Path) -> None:
    res = runner.invoke(app, ["compare", str(old_run), "--markdown"])
    assert res.exit_code == 0, res.output
    shapes, motion = RUNS[old_run.name]
    assert f"**{motion}**" in res.output and f"**{shapes}**" in res.output  # as written


def test_probe_trains_from_the_old_token_cache(old_run: Path) -> None:
    before = json.loads((old_run / "probes" / "synth-shapes-attentive.json").read_text())
    res = runner.invoke(app, ["probe", "synth-shapes", "--run", str(old_run), "--epochs", "1"])
    assert res.exit_code == 0, res.output
    after = json.loads((old_run / "probes" / "synth-shapes-attentive.json").read_text())
    # a new result, trained from the old cache
    assert after["hparams"]["epochs"] == 1 and before["hparams"]["epochs"] == 2
    assert after["caches"]["train"] == str(old_run / "features" / "synth-shapes" / "train.h5")


def test_extract_features_encodes_with_the_old_checkpoint(old_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "features-run"
    ckpt = old_run / "checkpoints" / "step_0000004.pt"
    args = ["extract-features", str(out), "--task", "synth-shapes", "--pool", "mean"]
    res = runner.invoke(app, [*args, "--limit", "8", "--workers", "0", "--checkpoint", str(ckpt)])
    assert res.exit_code == 0, res.output
    assert "step 4" in res.output
    assert (out / "features" / "synth-shapes" / "train.h5").is_file()


def test_the_old_run_resumes(old_run: Path) -> None:
    from jepactl.train.metrics import read_metrics

    sets = [a for o in V0_1_0_SETS for a in ("--set", o)]
    args = ["pretrain", "--recipe", "synth/baseline", "--run-dir", str(old_run), "--max-steps", "6"]
    res = runner.invoke(app, [*args, *sets])
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "at step 4" in res.output
    steps = [r["step"] for r in read_metrics(old_run / "metrics.jsonl") if "loss" in r]
    assert steps == [2, 4, 6]  # the old lines kept, the new one appended
