"""``--profile reference``: the paper's public code as it ran, behind one switch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from runfixtures import one_error_line

from jepactl.checkpoint import load
from jepactl.errors import ConfigError
from jepactl.profiles import RECIPE_SETTINGS
from jepactl.recipe import load_recipe
from jepactl.train.loop import pretrain


def test_the_reference_profile_sets_every_switch_and_an_explicit_set_wins() -> None:
    paper = load_recipe("synth/fwm_hw_ld")
    ref = load_recipe("synth/fwm_hw_ld", ["profile=reference"])
    assert (paper.profile, ref.profile) == ("paper", "reference")
    assert (paper.optim.schedule, ref.optim.schedule) == ("cosine", "constant")
    assert not paper.model.deep_supervision and ref.model.deep_supervision
    assert ref.objective.stopgrad_targets is False and ref.data.images == "repeat"
    assert all(m["equalize"] == "truncate" for m in ref.masks)
    ld = ref.objective.terms["ld"]
    assert ld["reference_no_grad"] is True and ld["clip_logits"] is None
    assert paper.objective.terms["ld"].get("reference_no_grad", False) is False
    assert ref.objective.terms["hw_jepa"]["clip_logits"] is None
    assert (ref.model.pred_embed, ref.model.rope_grid, ref.model.k_bias) == ("mlp", 16, True)
    # with tail truncation, the full complement *is* the reference's target set: kept
    future = load_recipe("single/future_predictive", ["profile=reference"]).masks
    assert all(m["full_complement"] and m["equalize"] == "truncate" for m in future)
    explicit = load_recipe("synth/fwm_hw_ld", ["profile=reference", "optim.schedule=cosine"])
    assert explicit.optim.schedule == "cosine" and explicit.model.deep_supervision
    # LD without hard weighting had gradients in the reference: left alone
    assert (
        "reference_no_grad"
        not in load_recipe("synth/ld", ["profile=reference"]).objective.terms["ld"]
    )
    motion = load_recipe("synth/motion_guided", ["profile=reference"]).masks
    assert all((m["sampling"], m["score"]) == ("power", "block_mean") for m in motion)
    assert {s.scope for s in RECIPE_SETTINGS} >= {"", "mask", "mask:motion", "term:ld"}
    with pytest.raises(ConfigError, match=r"unknown profile 'refrence'.*did you mean 'reference'"):
        load_recipe("synth/baseline", ["profile=refrence"])


def _head(run_dir: Path) -> dict[str, torch.Tensor]:
    terms = load(run_dir / "checkpoints" / "latest.pt")["terms"]
    heads = {k: v for k, v in terms.items() if k.startswith("ld.head.")}
    assert heads, sorted(terms)
    return heads


@pytest.mark.parametrize("profile", ["paper", "reference"])
def test_the_dynamics_head_trains_in_paper_mode_and_never_under_the_reference_profile(
    profile: str, tmp_path: Path
) -> None:
    """The reference's FWM-HW-LD computed LD-HW under ``no_grad``: its DynHead got no gradient
    and kept its initial weights. ``--profile reference`` reproduces that; the paper mode
    trains it."""
    overrides = [f"profile={profile}", *TINY]
    pretrain("synth/fwm_hw_ld", overrides, run_dir=tmp_path, max_steps=0, progress=False)
    start = _head(tmp_path)
    pretrain("synth/fwm_hw_ld", overrides, run_dir=tmp_path, max_steps=3, progress=False)
    after = _head(tmp_path)
    moved = max(float((after[k] - start[k]).abs().max()) for k in start)
    if profile == "reference":
        assert moved == 0.0
    else:
        assert moved > 0.0
    assert f"profile: {profile}" in (tmp_path / "config.yaml").read_text()


def test_pretrain_profile_flag_runs_and_says_what_it_set(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "jepactl", "pretrain", "--recipe", "synth/fwm_hw_ld",
            "--profile", "reference", "--max-steps", "2", "--run-dir", str(tmp_path)]  # fmt: skip
    for o in TINY:
        args += ["--set", o]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "profile reference" in res.stderr and "reference_no_grad=true" in res.stderr
    bad = subprocess.run([*args[:5], "--profile", "refrence"], capture_output=True, text=True)
    assert bad.returncode == 2 and "refrence" in bad.stderr
    one_error_line(
        subprocess.run([sys.executable, "-m", "jepactl", "show-recipe", "synth/baseline",
                        "--set", "profile=refrence"], capture_output=True, text=True).stderr,
        "unknown profile 'refrence'",
    )  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jepactl", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_reference_evaluation_scores_the_initialisation_of_a_no_ema_run_as_its_own_task(
    tmp_path: Path,
) -> None:
    """The reference scored its EMA-disabled runs on their never-updated ``target_encoder``,
    i.e. the initialisation. ``--profile reference`` does that on purpose (``init``, rebuilt
    from the run's seed: equal to the step-0 weights), as its own task ``TASK@reference``
    with ``profile`` in the cache and the result; ``compare`` says where profiles mix."""
    import h5py

    from jepactl.features.encoder import load_frozen_encoder

    run = tmp_path / "noema"
    pretrain("synth/sigreg_no_ema", TINY, run_dir=run, max_steps=0, progress=False)
    step0 = load(run / "checkpoints" / "latest.pt")["student"]
    pretrain("synth/sigreg_no_ema", TINY, run_dir=run, max_steps=2, progress=False)
    init = load_frozen_encoder(run, "init").encoder.state_dict()
    assert init.keys() == step0.keys()
    assert all(torch.equal(init[k], step0[k]) for k in step0)
    trained = load(run / "checkpoints" / "latest.pt")["student"]
    assert any(not torch.equal(trained[k], step0[k]) for k in step0)

    for profile in ("reference", "paper"):
        res = _cli("probe", "synth-shapes", "--run", str(run), "--profile", profile,
                   "--limit", "16", "--epochs", "1")  # fmt: skip
        assert res.returncode == 0, res.stderr
    ref = json.loads((run / "probes" / "synth-shapes@reference-attentive.json").read_text())
    paper = json.loads((run / "probes" / "synth-shapes-attentive.json").read_text())
    assert (ref["profile"], ref["weights"]) == ("reference", "init")
    assert (paper["profile"], paper["weights"]) == ("paper", "student")
    with h5py.File(run / "features" / "synth-shapes@reference" / "train.h5") as f:
        assert json.loads(str(f.attrs["protocol"]))["profile"] == "reference"
    with h5py.File(run / "features" / "synth-shapes" / "train.h5") as f:
        assert "profile" not in json.loads(str(f.attrs["protocol"]))  # older caches match

    mixed = _cli("compare", str(run), "--markdown")
    assert mixed.returncode == 0, mixed.stderr
    assert "synth-shapes (reference)" in mixed.stdout and "MIXED PROFILES" in mixed.stdout
    only = _cli("compare", str(run), "--markdown", "--profile", "paper")  # pretrained so too
    assert only.returncode == 0, only.stderr
    header = next(ln for ln in only.stdout.splitlines() if ln.startswith("| Method"))
    assert header.endswith("| synth-shapes |") and "reference" not in only.stdout
    assert "MIXED" not in only.stdout and "left out 1 task result" in only.stderr


def test_every_switch_the_profile_sets_has_a_row_in_the_reference_differences() -> None:
    from jepactl.profiles import REFERENCE_PROTOCOLS

    doc = (Path(__file__).parents[1] / "docs" / "reference-differences.md").read_text()
    for s in RECIPE_SETTINGS:
        leaf = s.key.rsplit(".", 1)[-1]
        assert any(leaf in ln for ln in doc.splitlines() if ln.startswith("| ")), s.key
    for fields in REFERENCE_PROTOCOLS.values():
        for key in fields:
            assert f"{key}: " in doc or f"`{key}" in doc, key


def test_reference_weights_of_a_checkpoint_file_are_its_teacher(tmp_path: Path) -> None:
    """``extract-features --checkpoint FILE --profile reference``: the file's target encoder,
    what the reference always evaluated (``init`` needs the run, not a file)."""
    from jepactl.features.encoder import load_frozen_encoder

    pretrain("synth/baseline", TINY, run_dir=tmp_path, max_steps=0, progress=False)
    file = tmp_path / "checkpoints" / "latest.pt"
    assert load_frozen_encoder(tmp_path, "reference", checkpoint=file).weights == "teacher"
    assert load_frozen_encoder(tmp_path, "reference").weights == "teacher"
    with pytest.raises(ConfigError, match="give the run, not --checkpoint"):
        load_frozen_encoder(tmp_path, "init", checkpoint=file)
