"""Metric sinks: TensorBoard event files mirror metrics.jsonl; W&B offline; one-line errors."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.config import SinkName
from jepactl.errors import ConfigError
from jepactl.train.metrics import read_metrics
from jepactl.train.sinks import SINKS, scalars, sink_kind
from jepactl_tests.runfixtures import run

runner = CliRunner()


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a folder of TensorBoard event files, as (step, value) by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep all
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected(metrics: list[dict[str, typing.Any]]) -> dict[str, list[tuple[int, float]]]:
    """What the event files must hold: each record's scalars at its step, as float32."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in metrics:
        for name, value in scalars(record).items():
            out.setdefault(name, []).append((int(record["step"]), float(np.float32(value))))
    return out


def test_the_registry_and_the_schema_name_the_same_sinks() -> None:
    assert set(SINKS) == set(typing.get_args(SinkName))


def test_tensorboard_events_equal_metrics_jsonl(tmp_path: Path, tiny_overrides: list[str]) -> None:
    pytest.importorskip("tensorboard")
    d = tmp_path / "run"
    run(d, [*tiny_overrides, "tracking.sinks=[tensorboard]", "monitor.every=2",
            "monitor.clips=8", "monitor.knn_k=2"], max_steps=4)  # fmt: skip
    metrics = read_metrics(d / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [0, 1, 2, 3, 4]  # step 0: the monitor's controls
    events = read_events(d / "tensorboard")
    assert {"loss", "lr", "clips_per_s", "rankme"} <= set(events)
    assert events == expected(metrics)


def test_tensorboard_drops_steps_logged_after_the_checkpoint_resumed_from(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """A run killed after its checkpoint at step 3 had logged steps 4 and 5: on resume both
    metrics.jsonl and the event files hold each step once, with the resumed run's values."""
    pytest.importorskip("tensorboard")
    d = tmp_path / "run"
    sink = "tracking.sinks=[tensorboard]"
    run(d, [*tiny_overrides, sink, "train.snapshot_every=3"], max_steps=5)
    (d / "checkpoints" / "latest.pt").unlink()  # resume from the step-3 snapshot
    run(d, [*tiny_overrides, sink, "train.snapshot_every=3"], max_steps=5)
    metrics = read_metrics(d / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [1, 2, 3, 4, 5]
    assert read_events(d / "tensorboard") == expected(metrics)


def test_a_sink_added_on_resume_needs_no_force(tmp_path: Path, tiny_overrides: list[str]) -> None:
    pytest.importorskip("tensorboard")
    d = tmp_path / "run"
    run(d, tiny_overrides, max_steps=2)
    run(d, [*tiny_overrides, "tracking.sinks=[tensorboard]"], max_steps=3)
    assert [s for s, _ in read_events(d / "tensorboard")["loss"]] == [3]


def test_pretrain_log_option_turns_sinks_on(tmp_path: Path, tiny_overrides: list[str]) -> None:
    pytest.importorskip("tensorboard")
    d = tmp_path / "run"
    args = ["pretrain", "-r", "synth/baseline", "--run-dir", str(d), "--max-steps", "2"]
    for o in tiny_overrides:
        args += ["--set", o]
    res = runner.invoke(app, [*args, "--log", "tensorboard"])
    assert res.exit_code == 0, res.output
    assert "sinks:\n  - tensorboard" in (d / "config.yaml").read_text()
    assert [s for s, _ in read_events(d / "tensorboard")["loss"]] == [1, 2]


@pytest.mark.parametrize(("given", "close"), [("tensorbord", "tensorboard"), ("wandbb", "wandb")])
def test_unknown_sink_is_one_line_with_a_suggestion(tmp_path: Path, given: str, close: str) -> None:
    d = tmp_path / "run"
    res = runner.invoke(app, ["pretrain", "-r", "synth/baseline", "--run-dir", str(d),
                              "--log", given])  # fmt: skip
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1
    assert f"did you mean '{close}'" in res.output
    assert not d.exists()  # refused before the run directory is touched
    with pytest.raises(ConfigError, match=f"did you mean '{close}'"):
        sink_kind(given)


@pytest.mark.parametrize(("name", "package"), [("wandb", "wandb"), ("tensorboard", "tensorboard")])
def test_missing_package_is_one_line_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    d = tmp_path / "run"
    res = runner.invoke(app, ["pretrain", "-r", "synth/baseline", "--run-dir", str(d),
                              "--log", name])  # fmt: skip
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert f"pip install 'jepactl[{name}]'" in lines[0]
    assert not d.exists()


def test_wandb_offline_run(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs where wandb is installed (it is not in the test extra): offline, no network."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    d = tmp_path / "run"
    run(d, [*tiny_overrides, "tracking.sinks=[wandb]"], max_steps=2)
    run_id = (d / "wandb" / "jepactl-run-id.txt").read_text().strip()
    offline = list((d / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))  # the run's records
