"""The evaluation path every task takes: pretrain -> extract-features -> probe -> result file.

The synthetic motion task runs on the same path as the dataset tasks, and the probe takes
what the cache records (its pooling) instead of asking for it again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.features import registry
from jepactl.features.synth_motion import PROTOCOLS, data_spec, motion_benchmark
from jepactl.probe.synth_motion import score_run

runner = CliRunner()

#: The default synth-motion protocol shrunk to the micro encoder: 4 frames of 32 px.
TINY = replace(PROTOCOLS["default"], name="tiny", n_train=96, n_val=48, frames=4, size=32)


@pytest.fixture
def small_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """``synth-motion`` (= directions) and ``synth-shapes`` at the micro encoder's size."""
    name = "synth-motion-directions"
    tiny_motion = motion_benchmark(data_spec("directions", TINY, 0), TINY, name=name)
    monkeypatch.setitem(registry.BENCHMARKS, name, tiny_motion)
    shapes = registry.BENCHMARKS["synth-shapes"].with_overrides(
        frames=4, crop=32, options={"n_train": 24, "n_val": 12}
    )
    monkeypatch.setitem(registry.BENCHMARKS, "synth-shapes", shapes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``jepactl pretrain --recipe synth/baseline --max-steps 10`` (tiny model)."""
    from conftest import TINY as TINY_RECIPE

    run = tmp_path_factory.mktemp("flow") / "run"
    sets = [arg for o in TINY_RECIPE for arg in ("--set", o)]
    res = runner.invoke(
        app, ["pretrain", "--recipe", "synth/baseline", "--run-dir", str(run), "--max-steps",
              "10", *sets],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return run


def test_synth_motion_takes_the_extract_probe_path(
    trained: Path, tmp_path: Path, small_tasks: None
) -> None:
    cache = f"synth-motion={tmp_path}"
    res = runner.invoke(app, ["extract-features", str(trained), "--task", "synth-motion",
                              "--root", cache, "--workers", "0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    features = trained / "features" / "synth-motion-directions"
    assert (features / "train.h5").is_file() and (features / "val.h5").is_file()

    res = runner.invoke(app, ["probe", "synth-motion", "--run", str(trained), "--root", cache])
    assert res.exit_code == 0, res.output
    result = json.loads(
        (trained / "probes" / "synth-motion-directions-linear-sklearn.json").read_text()
    )
    assert result["pooling"] == "space2x2"  # the task's pooling, never asked for
    assert result["hparams"]["impl"] == "sklearn" and result["hparams"]["features"] == "flat"
    assert (result["n_train"], result["n_val"]) == (96, 48)
    assert result["top1"] > result["chance"] == 12.5

    # The one-shot command on the same seed gives the same accuracy.
    shot = score_run(trained, "directions", TINY, seeds=1, cache_dir=tmp_path, num_workers=0,
                     progress=False)  # fmt: skip
    assert shot.top1 == result["top1"]


def test_probe_takes_the_pooling_the_cache_was_written_with(
    trained: Path, small_tasks: None
) -> None:
    res = runner.invoke(app, ["extract-features", str(trained), "--task", "synth-shapes",
                              "--pool", "mean", "--workers", "0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["probe", "synth-shapes", "--run", str(trained), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert "nothing to do" in res.output  # the mean-pooled cache was used, not rebuilt
    result = json.loads((trained / "probes" / "synth-shapes-attentive.json").read_text())
    assert result["pooling"] == "mean"


def test_the_old_option_name_still_works(trained: Path, small_tasks: None) -> None:
    res = runner.invoke(app, ["extract-features", str(trained), "--bench", "synth-shapes",
                              "--pool", "mean", "--workers", "0"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--bench is now --task" in res.output


def test_extract_features_needs_a_task(trained: Path) -> None:
    res = runner.invoke(app, ["extract-features", str(trained)])
    assert res.exit_code == 2
    assert "--task" in res.output and "Traceback" not in res.output


def test_synth_motion_is_an_alias(small_tasks: None) -> None:
    assert registry.get_benchmark("synth-motion").name == "synth-motion-directions"
    assert "synth-motion-mixed" in registry.BENCHMARKS


def test_registered_motion_tasks_are_the_default_protocol() -> None:
    """Each registered task is exactly what ``jepactl synth-motion`` builds for data seed 0."""
    default = PROTOCOLS["default"]
    for task in ("directions", "mixed"):
        name = f"synth-motion-{task}"
        built = motion_benchmark(data_spec(task, default, 0), default, name=name)
        assert registry.BENCHMARKS[name] == built
