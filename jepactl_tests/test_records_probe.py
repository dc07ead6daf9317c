"""Issue 27: probe settings, probe results and synth-motion results as typed, versioned
records; the checkpoint's newer-format refusal. Fixture files are read from copies only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from jepactl.checkpoint import CHECKPOINT_FORMAT, RunCheckpoint
from jepactl.cli import app
from jepactl.errors import ConfigError
from jepactl.features.registry import get_benchmark
from jepactl.features.token_batches import SKLEARN_FEATURES
from jepactl.formats import Format, FormatError, NewerFormatError
from jepactl.probe.heads import PROBES
from jepactl.probe.records import (
    PROBE_HEADS,
    RESULT_FORMAT,
    ProbeResult,
    ProbeSettings,
    SynthMotionResult,
    probe_settings,
    read_result,
    result_from_json,
)
from jepactl_tests.runfixtures import one_error_line

V0_1_0 = Path(__file__).parent / "fixtures" / "runs" / "v0.1.0-synth-micro"
runner = CliRunner()


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(V0_1_0, copy)
    return copy


# -- settings ---------------------------------------------------------------------------


def test_the_light_name_lists_match_the_heads_and_features() -> None:
    assert set(PROBE_HEADS) == set(PROBES)
    assert SKLEARN_FEATURES == ("mean", "flat")


def test_probe_settings_are_the_tasks_protocol_with_overrides() -> None:
    ssv2 = get_benchmark("ssv2")
    s = probe_settings(ssv2)
    assert (s.probe, s.epochs, s.lr, s.wd, s.batch_size) == (
        ssv2.probe, ssv2.epochs, ssv2.lr, ssv2.wd, ssv2.batch_size,
    )  # fmt: skip
    # None is "not given"; a given value wins
    assert probe_settings(ssv2, epochs=None, lr=3e-4).lr == 3e-4
    assert probe_settings(ssv2, epochs=None).epochs == ssv2.epochs
    motion = get_benchmark("synth-motion")
    assert motion.sklearn_features is not None
    assert probe_settings(motion).sklearn  # the task's linear probe is scikit-learn's
    assert not probe_settings(motion, "attentive").sklearn  # another head: a torch head
    assert not probe_settings(motion, sklearn=False).sklearn
    with pytest.raises(ConfigError, match="linear probe only"):
        probe_settings(ssv2, "attentive", sklearn=True)


def test_settings_round_trip_and_refuse_unknown_keys() -> None:
    s = ProbeSettings(probe="linear", epochs=3, sweep=True, sweep_lrs=[1e-3], sweep_wds=[0.0])
    assert ProbeSettings.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert "progress" not in s.to_json()  # how it ran, not what
    with pytest.raises(ConfigError, match="unknown probe settings epoch"):
        ProbeSettings.from_json({"epoch": 3})


# -- results ----------------------------------------------------------------------------


def test_format_1_results_read_with_their_settings_rebuilt() -> None:
    probe = read_result(V0_1_0 / "probes" / "synth-shapes-attentive.json")
    assert type(probe) is ProbeResult
    assert probe.top1 == 12.5
    assert probe.settings is not None and probe.settings.epochs == 2
    assert probe.settings.probe == probe.probe == "attentive" and not probe.settings.sklearn
    assert probe.kind == "attentive" and probe.step == 4
    motion = read_result(V0_1_0 / "probes" / "synth-motion-directions.json")
    assert isinstance(motion, SynthMotionResult)
    assert motion.top1 == pytest.approx(60.4167, abs=1e-3)
    assert motion.n_seeds == len(motion.per_seed) == 1
    assert motion.settings is not None and motion.settings.sklearn
    assert motion.kind == "linear-sklearn"


def test_a_result_round_trips_through_the_current_format() -> None:
    old = json.loads((V0_1_0 / "probes" / "synth-motion-directions.json").read_text())
    record = result_from_json(old, "old")
    written = record.to_json()
    assert written[RESULT_FORMAT.key] == RESULT_FORMAT.version == 2
    assert result_from_json(json.loads(json.dumps(written)), "new") == record


def test_a_hand_written_result_needs_only_a_numeric_top1() -> None:
    assert result_from_json({"top1": 3}, "t").settings is None
    with pytest.raises(FormatError, match="no numeric 'top1'"):
        result_from_json({"top1": "high"}, "t")


def newer(data: dict[str, object], fmt: Format) -> dict[str, object]:
    return {**data, fmt.key: fmt.version + 1}


def test_a_newer_result_is_one_line_naming_both_versions(old_run: Path) -> None:
    path = old_run / "probes" / "synth-shapes-attentive.json"
    path.write_text(json.dumps(newer(json.loads(path.read_text()), RESULT_FORMAT)))
    with pytest.raises(NewerFormatError) as exc:
        read_result(path)
    message = str(exc.value)
    assert "probe result format 3" in message and "up to 2" in message
    assert "upgrade jepactl" in message and "\n" not in message
    # compare lists the run as unreadable, with that line, and fails when nothing is left
    res = runner.invoke(app, ["compare", str(old_run)])
    assert res.exit_code == 2
    assert "probe result format 3" in one_error_line(res.output)


# -- the checkpoint ---------------------------------------------------------------------


def test_the_old_checkpoint_reads_as_a_record() -> None:
    state = torch.load(V0_1_0 / "checkpoints" / "latest.pt", weights_only=True)
    record = RunCheckpoint.from_state(state, "latest.pt")
    assert record.step == record.next_step == 4
    assert record.trained_encoders(record.recipe()) == ["student", "teacher"]
    again = record.to_state()
    assert list(again) == list(state)  # the same keys, in the same order: format 1 unchanged


def test_a_newer_checkpoint_is_one_line_and_never_moved_aside(old_run: Path) -> None:
    latest = old_run / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    torch.save(newer(state, CHECKPOINT_FORMAT), latest)
    res = runner.invoke(app, ["extract-features", str(old_run / "x"), "--task", "synth-shapes",
                              "--checkpoint", str(latest), "--workers", "0"])  # fmt: skip
    assert res.exit_code != 0
    line = one_error_line(res.output)
    assert "checkpoint format 2" in line and "up to 1" in line and "upgrade jepactl" in line
    from jepactl_tests.test_fixture_runs import V0_1_0_SETS

    sets = [arg for s in V0_1_0_SETS for arg in ("--set", s)]
    res = runner.invoke(app, ["pretrain", "--recipe", "synth/baseline", "--run-dir",
                              str(old_run), "--max-steps", "6", *sets])  # fmt: skip
    assert res.exit_code != 0
    assert "checkpoint format 2" in one_error_line(res.output)
    assert latest.is_file() and not list(latest.parent.glob("*.corrupt"))  # nothing lost
