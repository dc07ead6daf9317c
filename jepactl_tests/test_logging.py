"""Status messages: one logger on stderr, -q / -v, RUN/log.txt; --version; shell completion."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import typer.completion
from typer.testing import CliRunner

import jepactl
from jepactl.cli import app
from jepactl.log import set_verbosity
from jepactl.utils import warn

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def default_verbosity() -> Iterator[None]:
    """Each CLI call sets the verbosity; leave the default for the tests that follow."""
    yield
    set_verbosity(0)


def pretrain(run_dir: Path, tiny: list[str], *options: str, steps: int = 1) -> tuple[str, str]:
    """``jepactl [options] pretrain`` of a tiny run; (stdout, stderr)."""
    args = [*options, "pretrain", "-r", "synth/baseline", "--run-dir", str(run_dir),
            "--max-steps", str(steps)]  # fmt: skip
    for o in tiny:
        args += ["--set", o]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.stdout, res.stderr


def test_status_lines_go_to_stderr_and_the_run_log(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    d = tmp_path / "run"
    out, err = pretrain(d, tiny_overrides)
    assert out == ""  # stdout is for results
    assert f"jepactl: starting {d}; encoder" in err
    assert "jepactl: paused at step 1/" in err
    assert "step/s" in err  # the progress bar
    assert "debug:" not in err
    pretrain(d, tiny_overrides, steps=2)
    log = (d / "log.txt").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO "
    assert re.fullmatch(stamp + f"starting {re.escape(str(d))}; encoder .*", log[0])
    assert any(re.fullmatch(stamp + f"resuming {re.escape(str(d))} at step 1;.*", x) for x in log)
    assert re.fullmatch(stamp + "paused at step 2/.*", log[-1])


def test_quiet_prints_no_status_line_nor_progress_bar(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    d = tmp_path / "run"
    out, err = pretrain(d, tiny_overrides, "-q")
    assert out == err == ""
    assert "starting" in (d / "log.txt").read_text()  # the run's log keeps them


def test_quiet_still_shows_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    set_verbosity(-1)
    warn("disk nearly full")
    assert capsys.readouterr().err == "jepactl: warning: disk nearly full\n"


def test_verbose_adds_debug_lines(tmp_path: Path, tiny_overrides: list[str]) -> None:
    d = tmp_path / "run"
    _, err = pretrain(d, tiny_overrides, "--verbose")
    assert "jepactl: debug: steps 0..1 of " in err
    assert "jepactl: starting" in err
    assert "DEBUG steps 0..1" in (d / "log.txt").read_text()


def test_quiet_and_verbose_together_is_one_line() -> None:
    res = runner.invoke(app, ["-q", "-v", "recipes"])
    assert res.exit_code == 2
    assert res.output == "jepactl: error: choose one of --quiet and --verbose\n"


def test_version_matches_pyproject() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout == f"jepactl {jepactl.__version__}\n"
    declared = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert declared is not None and declared.group(1) == jepactl.__version__


def test_shell_completion_is_offered_and_completes_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    res = runner.invoke(app, ["--help"])
    assert "--install-completion" in res.output and "--show-completion" in res.output
    # the shell is detected from the parent processes, which depend on how pytest was started
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    script = runner.invoke(app, ["--show-completion"], prog_name="jepactl")
    assert "_JEPACTL_COMPLETE=complete_bash" in script.output

    def complete(words: str) -> list[str]:
        env = {"_JEPACTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}  # fmt: skip
        return runner.invoke(app, [], prog_name="jepactl", env=env).output.split()

    assert complete("jepactl exp") == ["export"]
    assert complete("jepactl export run --format saf") == ["safetensors"]
    assert complete("jepactl export run --weights st") == ["student"]
