"""The metrics line and the export config are typed, versioned records (issue 27): each round
trips, the lines of v0.1.0 (no version key) still read, and a newer version is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.config import ModelConfig
from jepactl.errors import ConfigError
from jepactl.formats import FormatError, NewerFormatError
from jepactl.models import build_encoder, encoder_kwargs
from jepactl.models.export import (
    CONFIG_FILE,
    EXPORT_CONFIG,
    ExportConfig,
    ExportInput,
    ExportSource,
    load_exported,
    read_export_config,
    save_exported,
)
from jepactl.report.curves import read_curves
from jepactl.train.metrics import METRICS_LINE, MetricsLine, MetricsLog, keep_up_to, read_metrics
from jepactl_tests.runfixtures import one_error_line

runner = CliRunner()
V0_1_0 = Path(__file__).parent / "fixtures" / "runs" / "v0.1.0-synth-micro"
FULL = MetricsLine(
    step=10, epoch=1, lr=1e-3, bad_samples=0, nonfinite_skipped=2, loss=0.5,
    scalars={"jepa": 0.5, "grad_norm": 3.0, "rankme": 7.5}, collapse="RankMe 1.00 < 2",
    clips_per_s=80.0, data_wait_frac=0.25, max_mem_gib=1.5, time=1.7e9,
)  # fmt: skip


def _newer_line() -> dict:
    return {**FULL.to_json(), METRICS_LINE.key: METRICS_LINE.version + 1}


# --------------------------------------------------------------------------------------
# The metrics line
# --------------------------------------------------------------------------------------


def test_metrics_line_round_trips_through_json() -> None:
    data = json.loads(json.dumps(FULL.to_json()))
    assert next(iter(data)) == METRICS_LINE.key and data[METRICS_LINE.key] == 2
    assert MetricsLine.from_json(data, "x") == FULL
    assert dict(FULL)["jepa"] == 0.5 and FULL["loss"] == 0.5 and "lr" in FULL
    assert METRICS_LINE.key not in FULL  # the mapping view (what the sinks get) has no version
    controls = MetricsLine(step=0, scalars={"probe_chance": 12.5})
    assert "loss" not in controls and controls.get("loss") is None
    assert MetricsLine.from_json(controls.to_json(), "x") == controls


def test_the_log_writes_version_2_lines_that_read_back(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, global_batch=4, device=torch.device("cpu"))
    log.write_controls(0, {"rankme": 3.0, "probe_chance": 12.5})
    log.add({"jepa": torch.tensor(2.0)}, {"grad_norm": torch.tensor(1.0)}, data_wait=0.0)
    written = log.flush(step=1, epoch=0, lr=0.1, bad_samples=0, nonfinite_skipped=0)
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r[METRICS_LINE.key] for r in raw] == [2, 2]
    assert list(raw[1])[:7] == ["format", "step", "epoch", "lr", "bad_samples",
                                "nonfinite_skipped", "loss"]  # fmt: skip
    lines = read_metrics(path)
    assert lines[1] == written and written.loss == 2.0 and written.scalars["grad_norm"] == 1.0
    assert lines[0].step == 0 and lines[0].loss is None and lines[0]["probe_chance"] == 12.5


def test_version_1_lines_of_v0_1_0_read_unchanged() -> None:
    raw = [json.loads(line) for line in (V0_1_0 / "metrics.jsonl").read_text().splitlines()]
    assert raw and all(METRICS_LINE.key not in r for r in raw)  # v0.1.0 wrote no version
    lines = read_metrics(V0_1_0 / "metrics.jsonl")
    assert [dict(line) for line in lines] == raw  # every name and value, in order
    assert [line.step for line in lines] == [r["step"] for r in raw]
    assert all(line.loss is not None and line.clips_per_s is not None for line in lines)


def test_a_newer_line_is_refused_naming_both_versions() -> None:
    with pytest.raises(NewerFormatError) as err:
        MetricsLine.from_json(_newer_line(), "run/metrics.jsonl:3")
    message = str(err.value)
    assert "\n" not in message and "run/metrics.jsonl:3" in message
    assert "metrics line format 3" in message and "up to 2" in message
    assert "upgrade jepactl" in message


def test_a_torn_line_is_skipped_and_a_damaged_one_named(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(FULL.to_json()) + '\n{"step": 11, "lo')
    assert read_metrics(path) == [FULL]
    path.write_text(json.dumps({"step": "eleven"}) + "\n")
    with pytest.raises(FormatError, match=r"metrics\.jsonl:1: metrics line step is 'eleven'"):
        read_metrics(path)


def test_plot_of_a_run_with_a_newer_line_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(V0_1_0, run)
    assert read_curves(run).series["loss"]  # the old lines plot
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(_newer_line()) + "\n")
    res = runner.invoke(app, ["plot", str(run), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 2
    one_error_line(res.output, "metrics line format 3", "up to 2", "upgrade jepactl")
    assert not (tmp_path / "c.png").exists()


def test_resume_keeps_older_lines_as_written(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    old = (V0_1_0 / "metrics.jsonl").read_text().splitlines(keepends=True)
    new = json.dumps(MetricsLine(step=6, loss=0.1).to_json()) + "\n"
    path.write_text("".join(old) + new + '{"step": 8, "lo')
    assert keep_up_to(path, 6) == len(old) + 1
    assert path.read_text() == "".join(old) + new  # a mixed file: v1 lines stay v1
    assert keep_up_to(path, 2) == 1 and path.read_text() == old[0]
    assert keep_up_to(tmp_path / "none.jsonl", 2) == 0


# --------------------------------------------------------------------------------------
# The export config
# --------------------------------------------------------------------------------------

SOURCE = ExportSource(
    jepactl_version="0.1.0", recipe="Baseline", run="run", step=2, weights="teacher",
    checkpoint_sha256="ab" * 32,
    input=ExportInput(layout="float [B, 3, T, H, W]", mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
                      frames=4, frame_stride=2, crop=32),
)  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    cfg = ModelConfig(preset="micro", patch_size=8)
    save_exported(build_encoder(cfg), encoder_kwargs(cfg), out, SOURCE)
    return out


def test_export_config_round_trips_with_todays_keys(exported: Path) -> None:
    config = read_export_config(exported)
    assert config.source == SOURCE and config.model_name is None and config.vit["patch_size"] == 8
    text = (exported / CONFIG_FILE).read_text()
    assert text == json.dumps(config.to_json(), indent=2) + "\n"
    assert list(json.loads(text)) == [
        "format", "format_version", "architecture", "model_name", "patch_size", "tubelet",
        "out_dim", "vit", "jepactl_version", "recipe", "run", "step", "weights",
        "checkpoint_sha256", "input", "weights_file", "weights_sha256",
    ]  # the keys and order of v0.1.0: format version 1 still  # fmt: skip
    assert json.loads(text)["format_version"] == EXPORT_CONFIG.version == 1


def test_export_config_without_a_source(tmp_path: Path) -> None:
    cfg = ModelConfig(preset="micro", patch_size=8)
    save_exported(build_encoder(cfg), encoder_kwargs(cfg), tmp_path)
    config = read_export_config(tmp_path)
    assert config.source is None
    assert ExportConfig.from_json(config.to_json(), tmp_path) == config


def _rewrite(folder: Path, tmp_path: Path, **changes: object) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    data = {**json.loads((copy / CONFIG_FILE).read_text()), **changes}
    (copy / CONFIG_FILE).write_text(json.dumps({k: v for k, v in data.items() if v != "-"}))
    return copy


def test_a_newer_export_config_is_one_line(exported: Path, tmp_path: Path) -> None:
    copy = _rewrite(exported, tmp_path, format_version=2)
    with pytest.raises(NewerFormatError) as err:
        load_exported(copy)
    message = str(err.value)
    assert "\n" not in message and str(copy / CONFIG_FILE) in message
    assert "encoder export config format 2" in message and "up to 1" in message
    assert "upgrade jepactl" in message


def test_a_damaged_export_config_is_one_line(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="has no weights_sha256"):
        read_export_config(_rewrite(exported, tmp_path / "a", weights_sha256="-"))
    with pytest.raises(FormatError, match="input is"):
        read_export_config(_rewrite(exported, tmp_path / "b", input=[1]))
    with pytest.raises(ConfigError, match="not a jepactl encoder export"):
        read_export_config(_rewrite(exported, tmp_path / "c", format="timm"))
