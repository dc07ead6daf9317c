"""Pretraining diagnostics and the online probe (jepactl.train.monitor), and `jepactl plot`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.data.tasks import TASKS, labelled_set
from jepactl.errors import ConfigError
from jepactl.grid import TokenGrid
from jepactl.models import build_encoder
from jepactl.recipe import load_recipe
from jepactl.report.curves import learning_summary, plot_curves, read_curves, verdict
from jepactl.train.loop import pretrain
from jepactl.train.metrics import MetricsLog, read_metrics
from jepactl.train.monitor import (
    Monitor,
    TokenGram,
    collapse_reasons,
    feature_stats,
    knn_accuracy,
    linear_accuracy,
    pixel_tokens,
    rankme,
    rankme_of_gram,
)

runner = CliRunner()
MONITOR = ["monitor.every=5", "monitor.clips=24", "monitor.knn_k=3", "monitor.task=directions"]


def test_rankme_counts_equal_directions() -> None:
    q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))
    for r in (1, 4, 16):
        assert rankme(q[:, :r] * 3.0) == pytest.approx(r, rel=1e-4)


def test_token_rankme_streams_the_centred_gram() -> None:
    """Batches added to a TokenGram give the RankMe of all tokens centred at once."""
    torch.manual_seed(0)
    tokens = torch.randn(5, 30, 16) @ torch.randn(16, 16) + 3.0  # a shared offset, as on black
    gram = TokenGram()
    for batch in tokens.split(2):
        gram.add(batch)
    flat = tokens.reshape(-1, 16)
    want = rankme(flat - flat.mean(dim=0))
    assert rankme_of_gram(gram.centred()) == pytest.approx(want, rel=1e-9)


def test_feature_stats_of_spread_and_collapsed_features() -> None:
    spread = feature_stats(torch.randn(512, 32))
    assert spread["feat_std_mean"] == pytest.approx(1.0, abs=0.1)
    assert abs(spread["feat_cos"]) < 0.05
    assert spread["rankme"] > 25
    collapsed = feature_stats(torch.ones(512, 1) @ torch.randn(1, 32))
    assert collapsed["feat_std_mean"] < 1e-6
    assert collapsed["feat_cos"] == pytest.approx(1.0)
    assert collapsed["rankme"] == pytest.approx(1.0, abs=1e-3)


def test_probes_read_separable_and_random_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 16, generator=gen) * 5
    x = centres[y] + torch.randn(200, 16, generator=gen)
    assert knn_accuracy(x[:100], y[:100], x[100:], y[100:], k=5) == 100.0
    assert linear_accuracy(x[:100], y[:100], x[100:], y[100:]) == 100.0
    noise = torch.randn(200, 16, generator=gen)
    assert knn_accuracy(noise[:100], y[:100], noise[100:], y[100:], k=5) < 50.0


def test_pixel_tokens_are_the_encoders_tubelets() -> None:
    clips = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    tokens, grid = pixel_tokens(clips, patch=16, tubelet=2)
    assert grid == TokenGrid(2, 2, 2) and tokens.shape == (2, 8, 2 * 16 * 16 * 3)
    # token (t=1, h=0, w=1) holds frames 2-3, rows 0-15, columns 16-31
    want = clips[0, 2:4, 0:16, 16:32].float() / 255.0
    assert torch.equal(tokens[0, 1 * 4 + 0 * 2 + 1], want.reshape(-1))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_tasks_are_balanced_and_deterministic(task: str) -> None:
    clips, labels = labelled_set(task, 16, 4, 32, seed=3)
    again, _ = labelled_set(task, 16, 4, 32, seed=3)
    assert clips.shape == (16, 4, 32, 32, 3) and clips.dtype == torch.uint8
    assert torch.equal(clips, again)
    assert labels.tolist() == [i % TASKS[task][0] for i in range(16)]


def _monitor() -> tuple[Monitor, torch.nn.Module]:
    recipe = load_recipe("synth/baseline", [*TINY, *MONITOR])
    torch.manual_seed(0)
    return Monitor(recipe, torch.device("cpu")), build_encoder(recipe.model)


def test_collapse_warning_fires_on_a_constant_encoder_only() -> None:
    monitor, encoder = _monitor()
    warnings: list[str] = []
    healthy = monitor.check(encoder, warnings.append)
    assert "collapse" not in healthy and not warnings
    assert not collapse_reasons(healthy, monitor.cfg)
    # A deliberately collapsed encoder: the output norms map every token to their bias.
    with torch.no_grad():
        for norm in encoder.norms:
            norm.weight.zero_()
            norm.bias.normal_()
    collapsed = monitor.check(encoder, warnings.append)
    assert "collapse" in collapsed and len(warnings) == 1
    assert "RankMe" in warnings[0] and "std" in warnings[0]
    assert collapsed["rankme"] < 1.01 and collapsed["feat_cos"] > 0.999


def test_check_leaves_the_encoder_in_its_mode() -> None:
    monitor, encoder = _monitor()
    encoder.train()
    monitor.check(encoder)
    assert encoder.training


def test_pretrain_logs_diagnostics_with_controls_and_trains_the_same(tmp_path: Path) -> None:
    watched = pretrain("synth/baseline", [*TINY, *MONITOR], tmp_path / "on", 10, progress=False)
    plain = pretrain("synth/baseline", TINY, tmp_path / "off", 10, progress=False)  # every=0
    assert watched.step == plain.step == 10
    on, off = (
        read_metrics(tmp_path / "on/metrics.jsonl"),
        read_metrics(tmp_path / "off/metrics.jsonl"),
    )
    first = on[0]
    assert first["step"] == 0 and "loss" not in first
    stats = ("rankme", "rankme_tokens", "feat_std_mean", "feat_std_min", "feat_cos")
    probes = ("probe_knn", "probe_linear", "probe_knn_pixels", "probe_linear_pixels")
    for key in (*stats, *probes):
        assert key in first, key
    checked = [r["step"] for r in on if "probe_linear" in r]
    assert checked == [0, 5, 10]
    # Watching never changes what trains: the same losses and gradient norms at every step.
    trained = [r for r in on if "loss" in r]
    assert [r["step"] for r in trained] == [r["step"] for r in off]
    for a, b in zip(trained, off, strict=True):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]
        assert a["grad_norm"] > 0


def test_checks_are_off_the_throughput_clock() -> None:
    """A check inside a logging interval does not count as training time in clips/s."""
    log = MetricsLog(None, global_batch=8, device=torch.device("cpu"))
    log.add({"jepa": torch.tensor(1.0)}, {}, data_wait=0.0)
    assert log.untimed(lambda: (time.sleep(0.5), {"rankme": 1.0})[1]) == {"rankme": 1.0}
    record = log.flush(step=1)
    assert record["clips_per_s"] > 8 / 0.5  # the 0.5 s check is not in the interval


def test_resume_keeps_the_step0_controls(tmp_path: Path) -> None:
    run = tmp_path / "r"
    pretrain("synth/baseline", [*TINY, *MONITOR], run, 5, progress=False)
    pretrain("synth/baseline", [*TINY, *MONITOR], run, 10, progress=False)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if "probe_knn_pixels" in r] == [0]
    assert [r["step"] for r in records if "probe_linear" in r] == [0, 5, 10]


def test_unknown_monitor_task_is_one_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["show-recipe", "synth/baseline", "--set", "monitor.task=direction"])
    assert res.exit_code == 2
    assert "did you mean 'directions'" in res.output


def test_plot_draws_curves_with_controls(tmp_path: Path) -> None:
    run = tmp_path / "r"
    pretrain("synth/baseline", [*TINY, *MONITOR], run, 10, progress=False)
    curves = read_curves(run)
    assert [s for s, _ in curves.series["probe_linear"]] == [0, 5, 10]
    assert set(curves.controls) == {"probe_knn_pixels", "probe_linear_pixels", "probe_chance"}
    assert curves.controls["probe_chance"] == 12.5  # 8 directions
    res = runner.invoke(app, ["plot", str(run), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_says_how_to_get_missing_curves(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ConfigError, match=r"monitor\.every > 0"):
        plot_curves([read_curves(run)], tmp_path / "c.png")
    res = runner.invoke(app, ["plot", str(tmp_path / "nothing"), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 2 and "no metrics.jsonl" in res.output


def _fake_run(root: Path, name: str, seed: int, values: dict[int, float], pixels: float) -> Path:
    run = root / f"{name}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"display_name: {name}\ntrain: {{seed: {seed}}}\n"
        "monitor: {task: directions, pool: mean, clips: 256}\n"
    )
    lines = [
        {"step": 0, "probe_linear": values[0], "probe_linear_pixels": pixels, "probe_chance": 12.5}
    ]
    lines += [{"step": s, "loss": 0.5, "probe_linear": v} for s, v in values.items() if s]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def test_learning_summary_pairs_each_run_with_its_own_controls(tmp_path: Path) -> None:
    runs = [
        _fake_run(tmp_path, "Base", 0, {0: 30.0, 50: 40.0, 100: 50.0}, 20.0),
        _fake_run(tmp_path, "Base", 1, {0: 34.0, 50: 44.0, 100: 52.0}, 22.0),
        _fake_run(tmp_path, "Base", 2, {0: 32.0, 50: 41.0, 100: 51.0}, 22.0),
    ]
    text = learning_summary([read_curves(r) for r in runs])
    row = next(line for line in text.splitlines() if line.startswith("Base"))
    cells = re.split(r"\s{2,}", row.strip())
    assert cells[1:4] == ["3", "100", "51.0 [48.5, 53.5]"]
    assert cells[4].startswith("32.0 [") and cells[5].startswith("21.3 [")
    # paired: 20, 18, 19 points over step 0 -> mean 19 with a t interval of 19 +- 2.48
    assert cells[6] == "+19.0 [+16.5, +21.5]"
    assert cells[7] == "+29.7 [+28.2, +31.1]"  # 30, 30, 29
    assert "monitor task 'directions'" in text and "chance 12.5 %" in text
    assert "Base: beats its untrained encoder" in text
    one = learning_summary([read_curves(runs[0])])
    assert "+20.0 (n=1)" in one and "run 3 or more seeds" in one


def test_learning_summary_shows_a_shared_control_as_one_value(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path, "Base", i, {0: 30.0, 100: 40.0 + i}, 20.0) for i in (0, 1, 2)]
    row = next(line for line in learning_summary([read_curves(r) for r in runs]).splitlines()
               if line.startswith("Base"))  # fmt: skip
    assert re.split(r"\s{2,}", row.strip())[5] == "20.0 (every run)"
    # gains whose interval straddles 0, or lies below it
    assert verdict([-1.0, 2.0, 0.5]).startswith("cannot be told")
    assert verdict([-3.0, -2.0, -2.5]).startswith("worse")


def test_learning_summary_groups_by_settings_not_by_name(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path / str(i), "Base", i, {0: 30.0, 100: 40.0 + i}, 20.0) for i in (0, 1)]
    config = runs[1] / "config.yaml"
    config.write_text(config.read_text() + "optim: {epochs: 5}\n")
    text = learning_summary([read_curves(r) for r in runs])
    rows = [line for line in text.splitlines() if line.startswith("Base") and "  " in line]
    assert len(rows) == 2 and "[Base-s1]" in rows[1]
