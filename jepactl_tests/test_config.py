from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jepactl.config import (
    ConfigError,
    Recipe,
    config_diff,
    dump_yaml,
    list_recipes,
    to_dict,
)
from jepactl.recipe import load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_recipes_load_and_validate() -> None:
    names = list_recipes()
    for required in ("synth/baseline", "single/baseline", "mixed/baseline"):
        assert required in names
    assert not any(n.startswith("base/") for n in names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.display_name and recipe.description


def test_mixed_baseline_has_table1_values() -> None:
    r = load_recipe("mixed/baseline")
    assert (r.model.preset, r.model.patch_size, r.model.tubelet) == ("base", 16, 2)
    assert (r.model.pred_depth, r.model.pred_dim, r.model.pred_heads) == (8, 256, 8)
    assert (r.data.num_frames, r.data.frame_stride, r.data.crop) == (16, 2, 224)
    assert r.data.batch_size == 32 and r.train.precision == "auto"
    assert (r.optim.epochs, r.optim.iters_per_epoch) == (100, 300)
    assert (r.optim.lr, r.optim.start_lr, r.optim.weight_decay) == (6e-4, 1e-4, 0.04)
    assert r.optim.warmup_epochs == 1 and r.optim.ema == 0.99925
    assert r.objective.terms["jepa"]["loss_exp"] == 1.0
    assert [m["num_blocks"] for m in r.masks] == [8, 2]
    assert [m["spatial_scale"] for m in r.masks] == [0.15, 0.7]


def test_base_inheritance_and_typed_overrides(tmp_path: Path) -> None:
    write(tmp_path / "base" / "a.yaml", {"optim": {"lr": 1.0, "epochs": 3}, "train": {"seed": 1}})
    write(
        tmp_path / "x" / "child.yaml",
        {
            "_base_": "../base/a.yaml",
            "optim": {"epochs": 5},
            "masks": [{"strategy": "multiblock"}],
            "objective": {"terms": {"jepa": {}}},
        },
    )
    r = load_recipe(
        "x/child",
        [
            "optim.lr=6e-4",  # PyYAML reads this as a string; the schema makes it a float
            "train.precision=fp32",
            "optim.betas=[0.9,0.95]",
            "model.deep_supervision=true",
            "masks.0.num_blocks=3",
            "objective.terms.jepa.loss_exp=2",
        ],
        root=tmp_path,
    )
    assert r.optim.lr == 6e-4 and isinstance(r.optim.lr, float)
    assert r.optim.epochs == 5 and r.train.seed == 1
    assert r.optim.betas == [0.9, 0.95]
    assert r.model.deep_supervision is True
    assert r.masks[0]["num_blocks"] == 3
    assert r.objective.terms["jepa"]["loss_exp"] == 2.0


def test_child_can_remove_a_term(tmp_path: Path) -> None:
    write(
        tmp_path / "base.yaml",
        {
            "masks": [{"strategy": "multiblock"}],
            "objective": {"terms": {"jepa": {}, "jepa_context": {}}},
        },
    )
    write(
        tmp_path / "c.yaml",
        {"_base_": "base.yaml", "objective": {"terms": {"jepa_context": False}}},
    )
    assert list(load_recipe("c", root=tmp_path).objective.terms) == ["jepa"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'; did you mean 'lr'?"),
        ("modle.preset=base", "unknown key 'modle'; did you mean 'model'?"),
        (
            "objective.terms.jepa.los_exp=1",
            "'objective.terms.jepa.los_exp'; did you mean 'loss_exp'?",
        ),
        ("masks.0.num_block=2", "unknown key 'masks.0.num_block'; did you mean 'num_blocks'?"),
        ("objective.terms.jepa_contxt.weight=1", "did you mean 'jepa_context'?"),
        ("model.preset=bas", "did you mean 'base'?"),
        ("optim.epochs=ten", "optim.epochs: expected an integer, got 'ten'"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        ("train.precision=fp8", "train.precision: 'fp8' is not one of 'auto', 'bf16', 'fp32'"),
        ("model.deep_supervision=3", "expected true/false"),
        ("masks.0.aspect_ratio=[1,2,3]", "masks.0: aspect_ratio must be a pair"),
        ("model.pred_heads=5", "model: predictor width 96 is not divisible by 5 heads"),
        ("objective.terms.jepa_context.warmup_end=3", "warmup_end (3) must exceed"),
        ("objective.terms.jepa.loss_exp=0", "objective.terms.jepa: loss_exp must be > 0"),
        ("model.deep_supervision_blocks=[2,6]", "is set but deep_supervision is false"),
    ],
)
def test_bad_keys_and_types_fail_with_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_recipe("synth/baseline", [override])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_deep_supervision_blocks_must_end_at_the_last_block() -> None:
    with pytest.raises(ConfigError, match="must increase and end with the last block"):
        load_recipe(
            "synth/baseline", ["model.deep_supervision=true", "model.deep_supervision_blocks=[2,4]"]
        )


def test_unknown_recipe_suggests_close_name() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'synth/baseline'"):
        load_recipe("synth/basline")


def test_resolved_config_round_trips() -> None:
    r = load_recipe("synth/baseline", ["optim.lr=3e-4"])
    again = recipe_from_dict(yaml.safe_load(dump_yaml(r)))
    assert again == r
    assert config_diff(to_dict(r), to_dict(again)) == []
    changed = load_recipe("synth/baseline", ["optim.lr=1e-4", "masks.1.num_blocks=3"])
    assert config_diff(to_dict(r), to_dict(changed)) == ["masks.1.num_blocks", "optim.lr"]


def test_defaults_are_a_valid_recipe_shape() -> None:
    assert isinstance(Recipe(), Recipe)


@pytest.mark.slow
def test_recipes_found_after_plain_install(tmp_path: Path) -> None:
    """`pip install .` (non-editable) into a target dir: recipes ship as package data."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("JEPACTL_RECIPES", None)
    code = "import jepactl, jepactl.config as c; print(jepactl.__file__); print(c.list_recipes())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert str(target) in out.splitlines()[0]
    assert "synth/baseline" in out and "mixed/baseline" in out
