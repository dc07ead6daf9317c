"""``--checkpoint FILE`` (extract-features, probe, synth-motion) and ``pretrain --init-from``
on tiny checkpoints saved in the upstream key layouts (built as in ``test_upstream``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from test_upstream import save_checkpoint
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.features import registry
from jepactl.features.synth_motion import PROTOCOLS
from jepactl.models.upstream import load_encoder

runner = CliRunner()

#: ViT-tiny's width (3 heads from the size table) at the "cpu" preset's depth, patch 16.
DIM, DEPTH, PATCH = 192, 6, 16


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upstream")
    paths = {}
    for layout in ("jepa", "vjepa2"):
        paths[layout] = folder / f"{layout}.pth.tar"
        save_checkpoint(paths[layout], layout, depth=DEPTH, dim=DIM, patch=PATCH)
    return paths


@pytest.fixture
def small_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = registry.BENCHMARKS["synth-shapes"].with_overrides(
        frames=4, crop=32, options={"n_train": 24, "n_val": 12}
    )
    monkeypatch.setitem(registry.BENCHMARKS, "synth-shapes", shapes)


def test_extract_features_from_a_checkpoint(
    checkpoints: dict[str, Path], tmp_path: Path, small_shapes: None
) -> None:
    out = tmp_path / "vjepa2-eval"
    res = runner.invoke(app, ["extract-features", str(out), "--task", "synth-shapes", "--pool",
                              "mean", "--workers", "0", "--checkpoint",
                              str(checkpoints["vjepa2"])])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "V-JEPA 2" in res.output and "teacher" in res.output
    cache = out / "features" / "synth-shapes" / "train.h5"
    with h5py.File(cache) as f:
        assert f.attrs["weights"] == "teacher"
        assert f.attrs["checkpoint"] == str(checkpoints["vjepa2"].resolve())
        feats = f["tokens"][:]
    assert feats.shape[-1] == DIM and torch.isfinite(torch.from_numpy(feats).float()).all()


def test_probe_from_a_checkpoint(
    checkpoints: dict[str, Path], tmp_path: Path, small_shapes: None
) -> None:
    out = tmp_path / "jepa-eval"
    ckpt = str(checkpoints["jepa"])
    res = runner.invoke(app, ["probe", "synth-shapes", "--checkpoint", ckpt, "--epochs", "1"])
    assert res.exit_code == 2 and "--run" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["probe", "synth-shapes", "--run", str(out), "--checkpoint", ckpt,
                              "--epochs", "2", "--weights", "student"])  # fmt: skip
    assert res.exit_code == 0, res.output
    (written,) = (out / "probes").glob("synth-shapes-*.json")  # keyed by the probe's kind
    result = json.loads(written.read_text())
    assert result["weights"] == "student"
    assert 0 <= result["top1"] <= 100


def test_synth_motion_from_a_checkpoint(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = replace(PROTOCOLS["default"], n_train=16, n_val=16, frames=4, size=32)
    monkeypatch.setitem(PROTOCOLS, "default", tiny)
    out = tmp_path / "v2"
    ckpt = str(checkpoints["vjepa2"])
    args = ["--checkpoint", ckpt, "--cache-dir", str(tmp_path / "clips"), "--workers", "0"]
    res = runner.invoke(app, ["synth-motion", str(out), str(tmp_path / "b"), *args])
    assert res.exit_code == 2 and "one RUN" in res.output
    res = runner.invoke(app, ["synth-motion", str(out), *args])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "probes" / "synth-motion-directions.json").read_text())
    assert saved["n_train"] == 16 and saved["weights"] == "teacher"


def _tiny_sets() -> list[str]:
    from conftest import TINY

    sets = [o for o in TINY if not o.startswith("model.preset")] + ["model.preset=cpu"]
    return [arg for o in sets for arg in ("--set", o)]


def test_pretrain_init_from_a_checkpoint(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The student and teacher start as the file's target encoder, with its sin-cos table;
    config.yaml records what that needs."""
    run = tmp_path / "run"
    ckpt = checkpoints["jepa"]
    res = runner.invoke(app, ["pretrain", "--recipe", "synth/baseline", "--run-dir", str(run),
                              "--max-steps", "0", "--init-from", str(ckpt),
                              *_tiny_sets()])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "initialised from" in res.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_from"] == str(ckpt.resolve())
    assert config["model"]["positions"] == "sincos" and config["model"]["k_bias"] is True
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    expected = load_encoder(ckpt).encoder.state_dict()
    for key in ("student", "teacher"):
        assert state[key].keys() == expected.keys()
        for name, value in expected.items():
            assert torch.equal(state[key][name], value), f"{key}.{name}"
    # A jepactl run's own checkpoint goes through the same entry point (its recipe's encoder).
    own = load_encoder(run / "checkpoints" / "latest.pt")
    assert (own.layout, own.weights) == ("jepactl", "teacher")
    assert own.encoder.positions == "sincos"
    for name, value in expected.items():
        assert torch.equal(own.encoder.state_dict()[name], value), name


def test_pretrain_init_from_a_mismatched_size(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from conftest import TINY

    sets = [arg for o in TINY for arg in ("--set", o)]  # the micro preset: 64 wide
    res = runner.invoke(app, ["pretrain", "--recipe", "synth/baseline", "--run-dir",
                              str(tmp_path / "run"), "--max-steps", "0", "--init-from",
                              str(checkpoints["vjepa2"]), *sets])  # fmt: skip
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert "192x6" in line and "model.preset=cpu" in line and "Traceback" not in res.output
    assert not (tmp_path / "run" / "config.yaml").exists()
