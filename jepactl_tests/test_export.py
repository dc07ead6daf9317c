"""``jepactl export``: safetensors + config.json that reload into the same encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import jepactl
from jepactl.cli import app
from jepactl.config import ModelConfig
from jepactl.errors import CheckpointError, ConfigError
from jepactl.features.encoder import export_encoder, load_frozen_encoder
from jepactl.models import build_encoder, encoder_kwargs, load_exported, save_exported, timm_name
from jepactl.models.export import WEIGHTS_FILE
from jepactl_tests.runfixtures import run as tiny_run

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jepactl_tests.conftest import TINY

    d = tmp_path_factory.mktemp("export") / "run"
    tiny_run(d, TINY, max_steps=2)
    return d


def test_exported_encoder_reloads_with_identical_outputs(trained: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(trained), "--format", "safetensors",
                              "--out", str(tmp_path / "exp")])  # fmt: skip
    assert res.exit_code == 0, res.output
    encoder = load_exported(tmp_path / "exp")
    reference = load_frozen_encoder(trained, "auto").encoder
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(encoder(clip), reference(clip))
    assert not encoder.training
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["jepactl_version"] == jepactl.__version__
    assert config["step"] == 2
    assert config["weights"] == "teacher"  # auto: the EMA encoder, which trained
    assert config["recipe"]
    assert config["vit"]["embed_dim"] == 64
    assert config["model_name"] is None  # the micro preset is no standard ViT size


def test_student_weights_differ_from_the_teacher(trained: Path, tmp_path: Path) -> None:
    student = load_exported(export_encoder(trained, tmp_path / "s", "student"))
    teacher = load_exported(export_encoder(trained, tmp_path / "t", "teacher"))
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert not torch.equal(student(clip), teacher(clip))
    assert json.loads((tmp_path / "s" / "config.json").read_text())["weights"] == "student"


def test_default_folder_is_in_the_run(trained: Path) -> None:
    assert export_encoder(trained) == trained / "export"
    assert (trained / "export" / WEIGHTS_FILE).is_file()


def test_a_wrong_format_is_refused_with_the_formats(trained: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(trained), "--format", "safetensor",
                              "--out", str(tmp_path / "x")])  # fmt: skip
    assert res.exit_code == 2
    assert "is not one of 'safetensors'" in " ".join(res.output.replace("│", " ").split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="did you mean 'safetensors'"):  # the library's check
        export_encoder(trained, tmp_path / "x", fmt="safetensor")


def test_a_half_replaced_export_is_refused(trained: Path, tmp_path: Path) -> None:
    """New weights beside an old config.json (a crash between the two renames) never load."""
    out = export_encoder(trained, tmp_path / "e", "student")
    old_config = (out / "config.json").read_text()
    export_encoder(trained, out, "teacher")
    (out / "config.json").write_text(old_config)
    with pytest.raises(CheckpointError, match="interrupted export"):
        load_exported(out)


def test_no_config_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jepactl export"):
        load_exported(tmp_path)


@pytest.mark.parametrize(
    ("preset", "patch", "deep", "name"),
    [("base", 16, False, "vit_base_patch16"), ("large", 14, False, "vit_large_patch14"),
     ("tiny", 16, False, "vit_tiny_patch16"), ("base", 16, True, None), ("cpu", 16, False, None)],
)  # fmt: skip
def test_timm_style_name_where_the_size_is_standard(
    preset: str, patch: int, deep: bool, name: str | None
) -> None:
    cfg = ModelConfig(preset=preset, patch_size=patch, deep_supervision=deep)
    assert timm_name(encoder_kwargs(cfg)) == name


def test_encoder_kwargs_rebuild_the_recipe_encoder() -> None:
    cfg = ModelConfig(preset="micro", tubelet=1, deep_supervision=True)
    torch.manual_seed(0)
    a = build_encoder(cfg)
    torch.manual_seed(0)
    b = jepactl.models.VideoViT(**encoder_kwargs(cfg))
    assert a.out_blocks == b.out_blocks and a.tubelet == b.tubelet == 1
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "overrides",
    [
        {"positions": "sincos", "pos_grid": [2, 4, 4], "k_bias": True},  # as V-JEPA 1 loads
        {"positions": "rope-vjepa2", "k_bias": True},  # as V-JEPA 2 loads
    ],
)
def test_export_keeps_the_position_scheme_of_public_checkpoints(
    overrides: dict, tmp_path: Path
) -> None:
    """An encoder initialised from a V-JEPA / V-JEPA 2 file (its position scheme and key bias
    in the recipe) exports and reloads to the same outputs: ``config.json`` records them."""
    cfg = ModelConfig(preset="micro", patch_size=8, **overrides)
    torch.manual_seed(0)
    encoder = build_encoder(cfg).eval()
    with torch.no_grad():  # a trained key bias (timm's EVA would keep it at zero)
        for blk in encoder.blocks:
            blk.attn.k_bias.normal_()
    save_exported(encoder, encoder_kwargs(cfg), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vit"]["positions"] == overrides["positions"]
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path)(clip), encoder(clip))
