"""Helpers shared by the training and fault tests: tiny runs in-process and through the CLI,
state comparison, signals, and tiny file systems for out-of-space tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from jepactl.checkpoint import load
from jepactl.train.loop import RunResult, pretrain
from jepactl.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
PYTHON = [sys.executable, "-m"]
TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--nproc-per-node",
    "2",
    "--standalone",
    "-m",
]


def run(run_dir: Path, overrides: list[str], max_steps: int | None, **kw: object) -> RunResult:
    """``synth/baseline`` in this process, without a progress bar."""
    return pretrain(
        "synth/baseline", overrides, run_dir=run_dir, max_steps=max_steps, progress=False, **kw
    )  # type: ignore[arg-type]


def one_error_line(output: str, *needles: str) -> str:
    """``output`` holds exactly one ``jepactl: error:`` line, no traceback, with ``needles``."""
    assert "Traceback" not in output, output
    lines = [ln for ln in output.splitlines() if ln.startswith("jepactl: error:")]
    assert len(lines) == 1, output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_same_state(a: Path, b: Path) -> None:
    """Two runs' ``latest.pt`` hold bit-identical weights, heads and optimizer moments."""
    sa, sb = load(a / "checkpoints" / "latest.pt"), load(b / "checkpoints" / "latest.pt")
    assert sa["step"] == sb["step"]
    for key in ("student", "teacher", "predictor", "terms"):
        if sa[key] is None:
            assert sb[key] is None
            continue
        assert sa[key].keys() == sb[key].keys()
        for name in sa[key]:
            assert torch.equal(sa[key][name], sb[key][name]), f"{key}.{name} differs"
    for pa, pb in zip(
        sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"])
        assert torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])


def cli_args(
    run_dir: Path, overrides: list[str], max_steps: int, launcher: list[str] = PYTHON
) -> list[str]:
    """``jepactl pretrain`` of ``synth/baseline`` as a command line."""
    args = [
        *launcher,
        "jepactl",
        "pretrain",
        "--recipe",
        "synth/baseline",
        "--run-dir",
        str(run_dir),
        "--max-steps",
        str(max_steps),
    ]
    for o in overrides:
        args += ["--set", o]
    return args


def start(args: list[str], cwd: Path, **kw: object) -> subprocess.Popen[str]:
    """Start a command with unbuffered Python output, stdout and stderr apart."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )  # type: ignore[call-overload]


def wait_for_steps(
    run_dir: Path, steps: int, proc: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Until ``metrics.jsonl`` logs ``steps`` records (or the process ends)."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(read_metrics(metrics)) >= steps:
            return
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} did not log {steps} steps (exit {proc.poll()})")


def signal_after(
    args: list[str], run_dir: Path, steps: int, cwd: Path, sig: int = signal.SIGTERM
) -> tuple[int, str]:
    """Start a run, send ``sig`` once ``steps`` steps are logged; (exit code, all output)."""
    proc = start(args, cwd)
    wait_for_steps(run_dir, steps, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


@contextlib.contextmanager
def tiny_fs(size: int, options: str = "") -> Iterator[Path]:
    """A tmpfs of ``size`` bytes (a real out-of-space condition); skips the test where this
    process may not mount one (mounting needs root, which CI has)."""
    where = Path(tempfile.mkdtemp(prefix="jepactl-tinyfs-"))
    opts = f"size={size}" + (f",{options}" if options else "")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
    )
    if res.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def remount(where: Path, size: int) -> None:
    """Grow (or shrink) a :func:`tiny_fs` in place."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)
