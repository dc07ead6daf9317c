from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.config import list_recipes
from jepactl.probe.records import result_from_json

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("pretrain", "extract-features", "probe", "synth-motion", "compare", "recipes"):
        assert name in res.output


def test_compare_without_runs_says_what_it_looked_for(tmp_path: Path) -> None:
    res = runner.invoke(app, ["compare", str(tmp_path / "nothing-*")])
    assert res.exit_code == 2
    assert "nothing-*" in res.output


def test_synth_motion_unknown_task_suggests(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth-motion", str(tmp_path), "--task", "direction"])
    assert res.exit_code == 2
    assert "directions" in res.output


def test_recipes_lists_each_with_description() -> None:
    res = runner.invoke(app, ["recipes"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert len(lines) == len(list_recipes())
    assert any(line.startswith("synth/baseline") and "CPU" in line for line in lines)


def test_docs_recipe_table_is_current() -> None:
    res = runner.invoke(app, ["recipes", "--markdown"])
    assert res.exit_code == 0
    doc = (REPO / "docs" / "recipes.md").read_text()
    section = doc.split("<!-- recipes:start -->\n")[1].split("<!-- recipes:end -->")[0]
    assert section == res.output, "regenerate with: jepactl recipes --write docs/recipes.md"


def test_pretrain_reports_bad_key_before_any_work(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "pretrain",
            "--recipe",
            "synth/baseline",
            "--run-dir",
            str(tmp_path / "r"),
            "--set",
            "optim.warmup_epoch=2",
        ],
    )
    assert res.exit_code == 2
    assert "unknown key 'optim.warmup_epoch'; did you mean 'warmup_epochs'?" in res.output
    assert not (tmp_path / "r").exists()


def test_unavailable_source_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JEPACTL_DATA", raising=False)
    res = runner.invoke(
        app, ["pretrain", "--recipe", "mixed/baseline", "--run-dir", str(tmp_path / "r")]
    )
    assert res.exit_code == 2
    assert "--set data.roots.ucf101=" in res.output and "JEPACTL_DATA" in res.output
    assert "ucfTrainTestlist/" in res.output  # the expected tree
    assert "data.source=synth" in res.output
    assert not (tmp_path / "r").exists()


def test_python_dash_m_entry_point() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "jepactl", "--help"], capture_output=True, text=True, check=True
    )
    assert "pretrain" in res.stdout


def test_extract_and_probe_end_to_end(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """pretrain (tiny) -> probe (extracts the cache first) -> RUN/probes/<task>-<kind>.json."""
    import json

    from jepactl.train.loop import pretrain

    run = tmp_path / "run"
    tiny = [*tiny_overrides, "objective.teacher=none"]
    pretrain("synth/baseline", tiny, run_dir=run, max_steps=2, progress=False)
    res = runner.invoke(
        app, ["probe", "synth-shapes", "--run", str(run), "--epochs", "2", "--limit", "24"]
    )
    assert res.exit_code == 0, res.output
    assert "synth-shapes: top-1" in res.output
    result = json.loads((run / "probes" / "synth-shapes-attentive.json").read_text())
    assert result["weights"] == "student"  # no EMA teacher was trained
    assert result["n_train"] == 24 and 0 <= result["top1"] <= 100
    again = runner.invoke(
        app, ["probe", "synth-shapes", "--run", str(run), "--epochs", "2", "--limit", "24"]
    )
    assert again.exit_code == 0 and "nothing to do" in again.output  # the cache is reused
    res = runner.invoke(
        app,
        [
            "extract-features",
            str(run),
            "--task",
            "synth-shapes",
            "--weights",
            "teacher",
            "--limit",
            "24",
            "--force",
        ],
    )
    assert res.exit_code == 2 and "teacher" in res.output


def test_show_recipe_validates_the_data_source_like_pretrain(tmp_path: Path) -> None:
    """Issue 15, rough edge 5: a typo in data.source fails in show-recipe too, and the valid
    sources listed include synth."""
    shown = runner.invoke(app, ["show-recipe", "synth/baseline", "--set", "data.source=synthh"])
    assert shown.exit_code == 2
    assert "data.source: unknown source 'synthh'; did you mean 'synth'?" in shown.output
    assert "(valid: synth, mixed, ucf101, ssv2, diving48, in100, csv, folders)" in shown.output
    args = ["pretrain", "-r", "synth/baseline", "--set", "data.source=synthh"]
    trained = runner.invoke(app, [*args, "--run-dir", str(tmp_path / "r")])
    assert trained.exit_code == 2 and trained.output == shown.output
    assert not (tmp_path / "r").exists()


def test_probe_below_the_majority_floor_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15, rough edge 6: a probe under the majority-class floor prints a warning."""
    import jepactl.features.extract as extract
    import jepactl.probe.train as probe_train

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    fake = {"train": run / "train.h5", "val": run / "val.h5"}
    monkeypatch.setattr(extract, "extract_features", lambda *a, **k: fake)

    def scored(top1: float) -> Any:
        return lambda *a, **k: result_from_json({
            "top1": top1, "top5": 90.0, "majority": 40.0, "probe": "attentive", "seed": 0,
            "hparams": {"impl": "torch", "epochs": 2},
        }, "fake")  # fmt: skip

    monkeypatch.setattr(probe_train, "train_probe", scored(25.0))
    res = runner.invoke(app, ["probe", "synth-shapes", "--run", str(run)])
    assert res.exit_code == 0, res.output
    assert "warning: synth-shapes top-1 25.00% is below the majority-class floor 40.00%" in (
        res.output
    )
    monkeypatch.setattr(probe_train, "train_probe", scored(55.0))
    res = runner.invoke(app, ["probe", "synth-shapes", "--run", str(run)])
    assert res.exit_code == 0 and "majority-class floor" not in res.output


def test_probe_without_run_names_the_run_it_picked_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15, rough edge 8: the newest run is named on the first output line."""
    import os

    import jepactl.features.extract as extract
    import jepactl.probe.train as probe_train

    for i, name in enumerate(("older", "newer")):
        latest = tmp_path / "runs" / name / "checkpoints" / "latest.pt"
        latest.parent.mkdir(parents=True)
        latest.write_bytes(b"")
        os.utime(latest, (1_000_000 + i, 1_000_000 + i))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(extract, "extract_features", lambda *a, **k: {"train": 0, "val": 0})
    monkeypatch.setattr(
        probe_train,
        "train_probe",
        lambda *a, **k: result_from_json({
            "top1": 50.0, "top5": 90.0, "majority": 40.0, "probe": "attentive", "seed": 0,
            "hparams": {"impl": "torch", "epochs": 2},
        }, "fake"),
    )  # fmt: skip
    res = runner.invoke(app, ["probe", "synth-shapes"])
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[0]
    assert first.startswith(f"jepactl: probing {Path('runs') / 'newer'} (the newest run")
    assert (tmp_path / "runs" / "newer" / "probes" / "synth-shapes-attentive.json").exists()


def _params(path: list[str]) -> dict[str, Any]:
    """The click parameters of ``jepactl PATH...`` by option name."""
    from typer.main import get_command

    cmd: Any = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return {opt: p for p in cmd.params for opt in getattr(p, "opts", [])}


def _enum_values(annotation: Any) -> set[str] | None:
    """The values of the Enum an option is annotated with (``E`` or ``E | None``)."""
    import enum
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return {m.value for m in candidate}
    return None


def test_choices_are_enumerations_listed_by_help() -> None:
    """Issue 15, rough edge 7: every choice option offers its values (help, completion), and
    they are the library's values."""
    from jepactl.bench import BASELINE_FOR_SIZE
    from jepactl.features.encoder import WEIGHTS
    from jepactl.features.synth_motion import PROTOCOLS, TASKS
    from jepactl.grid import POOLS
    from jepactl.models.export import FORMATS
    from jepactl.probe.heads import PROBES
    from jepactl.report.compare import SORTS

    expected = {
        ("extract-features",): {"--weights": WEIGHTS, "--pool": POOLS},
        ("probe",): {"--weights": WEIGHTS, "--pool": POOLS, "--probe": tuple(PROBES)},
        ("synth-motion",): {
            "--weights": WEIGHTS,
            "--task": (*TASKS, "all"),
            "--protocol": tuple(PROTOCOLS),
        },
        ("compare",): {"--sort": SORTS},
        ("export",): {"--weights": WEIGHTS, "--format": FORMATS},
        ("bench", "step-time"): {"--size": tuple(BASELINE_FOR_SIZE), "--device": ("cpu", "cuda")},
        ("bench", "pretrain"): {"--size": tuple(BASELINE_FOR_SIZE), "--device": ("cpu", "cuda")},
    }
    for path, options in expected.items():
        params = _params(list(path))
        for option, values in options.items():
            choices = _enum_values(params[option].type_descriptor.annotation)
            assert choices == set(values), (path, option)
    text = "".join(runner.invoke(app, ["compare", "--help"]).output.split())
    assert "<delta|name|input>" in text
    res = runner.invoke(app, ["compare", ".", "--sort", "deltaa"])
    assert res.exit_code == 2
    assert "'delta','name','input'" in "".join(res.output.replace("│", " ").split())


def test_every_command_that_computes_takes_device() -> None:
    for path in (
        ["pretrain"],
        ["extract-features"],
        ["probe"],
        ["synth-motion"],
        ["bench", "step-time"],
        ["bench", "pretrain"],
        ["bench", "probe"],
    ):
        assert "--device" in _params(path), path
