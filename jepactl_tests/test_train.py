from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runfixtures import TORCHRUN, assert_same_state, cli_args, run

from jepactl.checkpoint import load
from jepactl.config import ConfigError
from jepactl.train.loop import pretrain
from jepactl.train.metrics import read_metrics

LOSS_FIELDS = ("step", "epoch", "lr", "loss", "jepa", "jepa_context", "jepa_context_unweighted")


@pytest.mark.parametrize("extra", [[], ["model.drop_path=0.3"]], ids=["plain", "drop_path"])
def test_exact_resume(tmp_path: Path, tiny_overrides: list[str], extra: list[str]) -> None:
    """20 steps in one go == 10 steps, then resume to 20 (drop-path draws from the global RNG,
    so it also checks that RNG state is restored and nothing else draws from it)."""
    over = [*tiny_overrides, *extra]
    straight = run(tmp_path / "a", over, 20)
    assert straight.step == 20 and not straight.finished
    first = run(tmp_path / "b", over, 10)
    assert first.step == 10
    resumed = run(tmp_path / "b", over, 20)
    assert resumed.step == 20
    assert_same_state(tmp_path / "a", tmp_path / "b")
    log_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    log_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in log_b] == list(range(1, 21))
    assert [[r[k] for k in LOSS_FIELDS] for r in log_a] == [
        [r[k] for k in LOSS_FIELDS] for r in log_b
    ]
    # The context-loss ramp (steps 5..15) was crossed: its raw value is logged throughout,
    # its weighted value is 0 before the ramp and positive after.
    assert log_b[0]["jepa_context"] == 0.0 and log_b[0]["jepa_context_unweighted"] > 0.0
    assert log_b[-1]["jepa_context"] > 0.0
    for key in ("clips_per_s", "data_wait_frac"):
        assert key in log_b[-1]


def test_exact_resume_restores_heads_and_no_ema(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """A recipe with trained heads (DynHead) and one without a teacher both resume exactly;
    the reference silently re-initialised its heads on resume."""
    over = [o for o in tiny_overrides if "jepa_context" not in o]
    ld = [*over, "objective.terms.ld.hard_weighting=true", "objective.terms.ld.input=dynamics"]
    for recipe, extra in (("synth/ld", ld), ("synth/kin_l1", over)):
        for d, steps in ((tmp_path / recipe / "a", [8]), (tmp_path / recipe / "b", [4, 8])):
            for n in steps:
                pretrain(recipe, extra, run_dir=d, max_steps=n, progress=False)
        assert_same_state(tmp_path / recipe / "a", tmp_path / recipe / "b")
    heads = load(tmp_path / "synth/ld" / "a" / "checkpoints" / "latest.pt")["terms"]
    assert any(k.startswith("ld.") for k in heads)
    no_ema = load(tmp_path / "synth/kin_l1" / "a" / "checkpoints" / "latest.pt")
    assert no_ema["teacher"] is None and no_ema["trained_encoders"] == ["student"]


def test_temporal_terms_can_read_a_full_clip_forward(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [o for o in tiny_overrides if "jepa_context" not in o]
    full = [f"objective.terms.{t}.tokens=full" for t in ("fwm_static", "fwm_orth", "ld")]
    result = pretrain(
        "synth/fwm_hw_ld", [*over, *full], run_dir=tmp_path, max_steps=2, progress=False
    )
    assert result.step == 2
    assert read_metrics(tmp_path / "metrics.jsonl")[-1]["ld"] > 0


def test_mismatched_recipe_is_refused_unless_forced(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    run(tmp_path, tiny_overrides, 2)
    with pytest.raises(ConfigError, match=r"different recipe \(differs in: optim.lr\).*--force"):
        run(tmp_path, [*tiny_overrides, "optim.lr=0.1"], 3)
    assert load(tmp_path / "checkpoints" / "latest.pt")["step"] == 2  # nothing overwritten
    forced = run(tmp_path, [*tiny_overrides, "optim.lr=0.1"], 3, force=True)
    assert forced.step == 3
    assert "lr: 0.1" in (tmp_path / "config.yaml").read_text()


def test_runtime_settings_may_change_on_resume(tmp_path: Path, tiny_overrides: list[str]) -> None:
    run(tmp_path, tiny_overrides, 2)
    resumed = run(tmp_path, [*tiny_overrides, "train.log_every=2", "data.num_workers=1"], 4)
    assert resumed.step == 4


def test_loss_falls(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [*tiny_overrides, "optim.lr=2e-3", "optim.iters_per_epoch=40"]
    run(tmp_path, over, 80)
    losses = [r["jepa"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_finished_run_is_not_restarted(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [*tiny_overrides, "optim.epochs=1", "optim.iters_per_epoch=3"]
    assert run(tmp_path, over, None).finished
    again = run(tmp_path, over, None)
    assert again.step == 3 and again.finished
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3


def test_torchrun_two_ranks_on_cpu(tmp_path: Path, tiny_overrides: list[str]) -> None:
    # The monitor watches on rank 0 at steps that are not logging steps (every 2 vs every 3):
    # every rank must still log (all-reduce) at those steps, or the ranks hang.
    watch = ["train.log_every=3", "monitor.every=2", "monitor.clips=16", "monitor.knn_k=3",
             "monitor.task=directions"]  # fmt: skip
    args = cli_args(tmp_path / "ddp", [*tiny_overrides, *watch], 5, TORCHRUN)
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 rank(s) on cpu" in res.stderr
    state = load(tmp_path / "ddp" / "checkpoints" / "latest.pt")
    assert state["step"] == 5 and len(state["rng"]) == 2
    records = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [2, 3, 4, 5]
    assert [r["step"] for r in records if "probe_linear" in r] == [0, 2, 4]


@pytest.mark.slow
def test_paper_size_vit_b_runs_two_steps(tmp_path: Path) -> None:
    """`mixed/baseline` at paper size (ViT-B, 16 x 224 x 224); batch reduced to fit CI."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "jepactl",
            "pretrain",
            "--recipe",
            "mixed/baseline",
            "--run-dir",
            str(tmp_path),
            "--max-steps",
            "2",
            "--set",
            "data.source=synth",
            "--set",
            "data.batch_size=2",
            "--set",
            "data.num_workers=0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "encoder 86.2M params" in res.stderr
    log = read_metrics(tmp_path / "metrics.jsonl")
    assert log[-1]["step"] == 2 and log[-1]["loss"] > 0


def test_max_steps_zero_saves_the_initialisation(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """`--max-steps 0` writes the untrained encoder (a control for evaluation), and the run
    then resumes from it exactly as a fresh run would have trained."""
    run(tmp_path / "init", tiny_overrides, 0)
    state = load(tmp_path / "init" / "checkpoints" / "latest.pt")
    assert state["step"] == 0
    assert torch.equal(state["student"]["patch_embed.weight"],
                       state["teacher"]["patch_embed.weight"])  # fmt: skip
    run(tmp_path / "init", tiny_overrides, 3)
    run(tmp_path / "straight", tiny_overrides, 3)
    assert_same_state(tmp_path / "init", tmp_path / "straight")
