"""Every fault a long cluster run meets, each handled and proven here (see docs/reliability.md).

Run alone with ``pytest -m faults``. Out-of-space tests use a real tiny tmpfs where this
process may mount one (root, as in CI) and a real file-size limit (``ulimit -f``) elsewhere.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from runfixtures import (
    PYTHON,
    REPO,
    TORCHRUN,
    assert_same_state,
    cli_args,
    remount,
    run,
    signal_after,
    start,
    tiny_fs,
    wait_for_steps,
)
from typer.testing import CliRunner

from jepactl.checkpoint import load
from jepactl.cli import app
from jepactl.errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
    NonFiniteLossError,
    RunLockedError,
)
from jepactl.features import cache as cache_mod
from jepactl.features import extract as extract_mod
from jepactl.features.cache import CacheError, TokenCache, read_header
from jepactl.features.extract import extract_features
from jepactl.features.registry import BENCHMARKS
from jepactl.lock import RunLock
from jepactl.rundir import RunDir
from jepactl.train import loop
from jepactl.train.metrics import read_metrics
from jepactl.train.model import JEPA

pytestmark = pytest.mark.faults
runner = CliRunner()

#: A tiny synth-shapes benchmark: 48 train clips of 4 frames at 32 px.
BENCH = BENCHMARKS["synth-shapes"].with_overrides(
    frames=4, crop=32, options={"n_train": 48, "n_val": 6}
)
CKPT = ["train.checkpoint_every=2", "train.snapshot_every=4"]


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("jepactl") and "error:" in ln]


def assert_one_line_error(stderr: str, *needles: str) -> str:
    """The output ends in exactly one ``jepactl: error:`` line, with no traceback."""
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def pretrain_cmd(run_dir: Path, overrides: list[str], *extra: str) -> list[str]:
    """``jepactl pretrain`` arguments for :data:`runner`."""
    sets = [x for o in overrides for x in ("--set", o)]
    return ["pretrain", "--recipe", "synth/baseline", "--run-dir", str(run_dir), *extra, *sets]


def extract(run_dir: Path, **kw: object) -> dict[str, Path]:
    return extract_features(
        run_dir, BENCH, splits=("train",), batch_size=4, num_workers=0, progress=False,
        device="cpu", **kw,
    )  # type: ignore[arg-type]  # fmt: skip


def tokens_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["tokens"][:], f["done"][:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step tiny run to extract features from."""
    from conftest import TINY

    d = tmp_path_factory.mktemp("trained")
    run(d, list(TINY), 2)
    return d


# --------------------------------------------------------------------------------------
# Already handled: kills and signals
# --------------------------------------------------------------------------------------


def test_kill_9_mid_run_resumes_bit_identically(tmp_path: Path, tiny_overrides: list[str]) -> None:
    over = [*tiny_overrides, *CKPT, "data.num_workers=2"]
    d = tmp_path / "killed"
    proc = start(cli_args(d, over, 40), tmp_path)
    wait_for_steps(d, 5, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load(d / "checkpoints" / "latest.pt")["step"]
    assert saved >= 4
    resumed = subprocess.run(cli_args(d, over, saved + 3), cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {d} at step {saved}" in resumed.stderr
    run(tmp_path / "straight", over, saved + 3)
    assert_same_state(tmp_path / "straight", d)
    assert [r["step"] for r in read_metrics(d / "metrics.jsonl")] == list(range(1, saved + 4))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_exits_0_and_resume_matches_straight_run(
    tmp_path: Path, tiny_overrides: list[str], sig: int
) -> None:
    d = tmp_path / "stopped"
    # Two DataLoader workers: pre-emption must not kill them before the checkpoint is written.
    code, out = signal_after(cli_args(d, [*tiny_overrides, "data.num_workers=2"], 40), d, 3,
                             tmp_path, sig)  # fmt: skip
    assert code == 0, out
    assert "stopped by signal" in out
    stopped_at = load(d / "checkpoints" / "latest.pt")["step"]
    assert 3 <= stopped_at < 40
    target = stopped_at + 3
    resumed = subprocess.run(cli_args(d, tiny_overrides, target), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {d} at step {stopped_at}" in resumed.stderr
    run(tmp_path / "straight", tiny_overrides, target)
    assert_same_state(tmp_path / "straight", d)


def test_sigterm_under_torchrun_checkpoints_every_rank(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """torchrun forwards SIGTERM to the ranks; they agree on a step, save, and stop."""
    d = tmp_path / "ddp"
    _, out = signal_after(cli_args(d, tiny_overrides, 40, TORCHRUN), d, 3, tmp_path)
    assert "stopped by signal" in out, out
    state = load(d / "checkpoints" / "latest.pt")
    assert 3 <= state["step"] < 40 and len(state["rng"]) == 2
    resumed = subprocess.run(cli_args(d, tiny_overrides, state["step"] + 2, TORCHRUN),
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {d} at step {state['step']}" in resumed.stderr


_EXTRACT_KILLED = """
    import os, signal, torch
    from pathlib import Path
    from jepactl.features.registry import BENCHMARKS
    from jepactl.features.extract import extract_features
    torch.set_num_threads(1)
    bench = BENCHMARKS["synth-shapes"].with_overrides(
        frames=4, crop=32, options={{"n_train": 48, "n_val": 6}})
    def on_batch(split, done, total):
        if done >= 8:
            os.kill(os.getpid(), signal.SIGKILL)
    extract_features(Path({run!r}), bench, splits=("train",), batch_size=4, num_workers=0,
                     progress=False, device="cpu", on_batch=on_batch)
"""


def test_kill_9_during_extraction_resumes_without_duplicates(trained: Path, tmp_path: Path) -> None:
    """A process killed outright (no HDF5 close) leaves a file that reopens and resumes with
    every clip exactly once."""
    clean, _ = tokens_of(extract(trained)["train"])
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    os.link(trained / "checkpoints" / "latest.pt", run_dir / "checkpoints" / "latest.pt")
    script = textwrap.dedent(_EXTRACT_KILLED.format(run=str(run_dir)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    path = RunDir(run_dir).cache(BENCH.name, "train")
    with h5py.File(path, "r") as f:
        assert not f.attrs["complete"] and f["done"][:].sum() == 8
    resumed, done = tokens_of(extract(run_dir)["train"])
    assert done.all() and np.array_equal(resumed, clean)
    with h5py.File(path, "r") as f, h5py.File(RunDir(trained).cache(BENCH.name, "train")) as g:
        assert f["ids"].asstr()[:].tolist() == g["ids"].asstr()[:].tolist()


def test_pickled_payload_in_a_checkpoint_is_refused(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """A checkpoint holding pickled code is never unpickled: resume moves it aside and falls
    back to the snapshot; evaluation refuses it in one line."""
    over = [*tiny_overrides, *CKPT]
    run(tmp_path / "r", over, 4)
    witness = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (witness,))  # type: ignore[return-value]

    latest = tmp_path / "r" / "checkpoints" / "latest.pt"
    state = load(latest)
    state["extra"] = Payload()
    torch.save(state, latest)
    res = runner.invoke(app, ["extract-features", str(tmp_path / "r"), "--bench", "synth-shapes"])
    assert res.exit_code == 2
    assert_one_line_error(res.stderr, "latest.pt cannot be loaded", "pickled objects")
    assert run(tmp_path / "r", over, 6).step == 6
    assert not witness.exists()
    assert (tmp_path / "r" / "checkpoints" / "latest.pt.corrupt").exists()


def test_compare_reports_a_malformed_result_and_compares_the_rest(tmp_path: Path) -> None:
    for name, text in (("a", '{"bench": "ssv2", "top1": 8.0}'), ("b", '{"bench": "ss'),
                       ("c", '{"bench": "ssv2", "top1": 9.5}')):  # fmt: skip
        (tmp_path / name / "probes").mkdir(parents=True)
        (tmp_path / name / "config.yaml").write_text(f"display_name: {name.upper()}\n")
        (tmp_path / name / "probes" / "ssv2.json").write_text(text)
    res = runner.invoke(app, ["compare", str(tmp_path / "*"), "--baseline", "A"])
    assert res.exit_code == 0, res.output
    assert f"unreadable: {tmp_path / 'b'}: probes/ssv2.json" in res.stdout
    assert "9.50" in res.stdout and "+1.50" in res.stdout


# --------------------------------------------------------------------------------------
# 1. A full disk during extract-features
# --------------------------------------------------------------------------------------


def test_cache_that_does_not_fit_fails_before_any_encoding(trained: Path, tmp_path: Path) -> None:
    with tiny_fs(64 << 10) as fs:
        (tmp_path / "features").symlink_to(fs)
        run_dir = tmp_path
        (run_dir / "checkpoints").mkdir()
        os.link(trained / "checkpoints" / "latest.pt", run_dir / "checkpoints" / "latest.pt")
        encoded: list[int] = []
        with pytest.raises(DiskFullError, match=r"need .* but only .* free"):
            extract(run_dir, on_batch=lambda s, d, t: encoded.append(d))
        assert encoded == []
        res = runner.invoke(app, ["extract-features", str(run_dir), "--bench", "synth-shapes"])
        assert res.exit_code == 1
        assert_one_line_error(res.stderr, "free in", "--pool")


def test_disk_full_while_reserving_the_cache_leaves_no_file(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the free-space estimate is wrong, reserving the file's space (fallocate) is the
    real test: it fails before any row is written, and no file stays behind."""
    monkeypatch.setattr(extract_mod, "free_bytes", lambda path: 1 << 50)
    with tiny_fs(40 << 10) as fs:
        (tmp_path / "features").symlink_to(fs)
        (tmp_path / "checkpoints").mkdir()
        os.link(trained / "checkpoints" / "latest.pt", tmp_path / "checkpoints" / "latest.pt")
        with pytest.raises(DiskFullError, match=r"no space left on device writing .*train\.h5"):
            extract(tmp_path)
        assert sorted(p.name for p in (fs / BENCH.name).iterdir()) == [".lock"]


def test_disk_full_mid_extraction_keeps_the_written_rows_and_resumes(
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """On a file system that cannot reserve space, the writes themselves hit the full disk:
    the error is raised (not printed and lost by h5py), only rows really written are marked
    done, the cache stays incomplete, a probe refuses it, and it resumes once there is space."""
    clean, _ = tokens_of(extract(trained)["train"])
    size = RunDir(trained).cache(BENCH.name, "train").stat().st_size
    monkeypatch.setattr(extract_mod, "free_bytes", lambda path: 1 << 50)
    monkeypatch.setattr(cache_mod, "reserve_space", lambda fd, n: False)
    with tiny_fs(size // 2 // 4096 * 4096) as fs:
        (tmp_path / "features").symlink_to(fs)
        (tmp_path / "checkpoints").mkdir()
        os.link(trained / "checkpoints" / "latest.pt", tmp_path / "checkpoints" / "latest.pt")
        with pytest.raises(DiskFullError, match="no space left on device"):
            extract(tmp_path)
        assert "Exception ignored" not in capfd.readouterr().err
        path = RunDir(tmp_path).cache(BENCH.name, "train")
        partial, done = tokens_of(path)
        assert 0 < done.sum() < len(done)
        assert np.array_equal(partial[done], clean[done])  # every row marked done is written
        with pytest.raises(CacheError, match="did not finish"):
            TokenCache(path)
        remount(fs, 4 * size)
        resumed, done = tokens_of(extract(tmp_path)["train"])
        assert done.all() and np.array_equal(resumed, clean)


def test_probe_refuses_a_cache_marked_complete_with_rows_not_written(trained: Path) -> None:
    path = extract(trained)["train"]
    with h5py.File(path, "r+") as f:
        f["done"][3] = False
    try:
        with pytest.raises(CacheError, match="1 rows are not done"):
            read_header(path)
    finally:
        with h5py.File(path, "r+") as f:
            f["done"][3] = True


# --------------------------------------------------------------------------------------
# 2. A full disk during pretraining
# --------------------------------------------------------------------------------------


def _checkpoint_bytes(tmp_path: Path, over: list[str]) -> int:
    run(tmp_path / "probe-size", over, 1)
    return (tmp_path / "probe-size" / "checkpoints" / "latest.pt").stat().st_size


def test_disk_full_during_pretraining_exits_with_one_line(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """The second checkpoint does not fit: one line naming the path and the space, exit 1,
    the DataLoader workers shut down (no hang), the first checkpoint intact; the same command
    resumes once there is room."""
    over = [*tiny_overrides, "train.checkpoint_every=2", "data.num_workers=2"]
    size = _checkpoint_bytes(tmp_path, over)
    with tiny_fs((int(1.5 * size) + (1 << 20)) // 4096 * 4096) as fs:
        d = fs / "run"
        proc = start(cli_args(d, over, 8), tmp_path)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 1, out + err
        assert_one_line_error(err, "no space left on device writing", "latest.pt", "free in",
                              "it needs about", "rerun")  # fmt: skip
        assert load(d / "checkpoints" / "latest.pt")["step"] == 2
        assert not list((d / "checkpoints").glob(".*tmp"))
        remount(fs, 4 * size + (4 << 20))
        again = subprocess.run(cli_args(d, over, 8), cwd=tmp_path, capture_output=True,
                               text=True, timeout=180)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert f"resuming {d} at step 2" in again.stderr
        assert load(d / "checkpoints" / "latest.pt")["step"] == 8


def _file_size_limit(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_that_fails_half_way_leaves_no_torn_checkpoint(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """A real write failure in the middle of the checkpoint (a file-size limit, no root
    needed): the temp file is removed, the error is one line, the workers do not hang it."""
    over = [*tiny_overrides, "train.checkpoint_every=2", "data.num_workers=2"]
    size = _checkpoint_bytes(tmp_path, over)
    d = tmp_path / "run"
    proc = start(cli_args(d, over, 4), tmp_path, preexec_fn=lambda: _file_size_limit(size // 2))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, out + err
    assert_one_line_error(err, "file too large", "latest.pt")
    assert not list((d / "checkpoints").iterdir())


# --------------------------------------------------------------------------------------
# 3. A corrupt, truncated or missing latest.pt
# --------------------------------------------------------------------------------------


def _truncate(p: Path) -> None:
    with open(p, "r+b") as f:  # in place: the way a dying node leaves a file
        f.truncate(p.stat().st_size // 2)


CORRUPTIONS = {
    "truncated": _truncate,
    "random": lambda p: p.write_bytes(os.urandom(4096)),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS))
def test_corrupt_latest_resumes_from_the_newest_snapshot(
    tmp_path: Path, tiny_overrides: list[str], corrupt: str, capfd: pytest.CaptureFixture[str]
) -> None:
    over = [*tiny_overrides, *CKPT]
    run(tmp_path / "r", over, 10)  # latest at 10, snapshots at 4 and 8
    ckpts = tmp_path / "r" / "checkpoints"
    snap = ckpts / "step_0000008.pt"
    assert snap.stat().st_nlink == 1 and snap.stat().st_ino != (ckpts / "latest.pt").stat().st_ino
    before = snap.read_bytes()
    CORRUPTIONS[corrupt](ckpts / "latest.pt")
    assert snap.read_bytes() == before  # an independent file: untouched
    capfd.readouterr()
    assert run(tmp_path / "r", over, 12).step == 12
    err = capfd.readouterr().err
    assert "latest.pt cannot be loaded" in err and "moved it to latest.pt.corrupt" in err
    assert "resuming from" in err and "step_0000008.pt (step 8)" in err
    assert (ckpts / "latest.pt.corrupt").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == list(range(1, 13))
    run(tmp_path / "straight", over, 12)
    assert_same_state(tmp_path / "straight", tmp_path / "r")


def test_deleted_latest_resumes_from_snapshots_instead_of_restarting(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, *CKPT]
    run(tmp_path / "r", over, 10)
    (tmp_path / "r" / "checkpoints" / "latest.pt").unlink()
    res = runner.invoke(app, pretrain_cmd(tmp_path / "r", over, "--max-steps", "12"))
    assert res.exit_code == 0, res.output
    assert "resuming" in res.stderr and "at step 8" in res.stderr
    assert (tmp_path / "r" / "checkpoints" / "step_0000004.pt").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == list(range(1, 13))


def test_no_readable_checkpoint_is_refused_and_nothing_is_overwritten(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, *CKPT]
    run(tmp_path / "r", over, 4)
    for p in (tmp_path / "r" / "checkpoints").glob("*.pt"):
        _truncate(p)
    metrics = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="holds no readable checkpoint"):
        run(tmp_path / "r", over, 6)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == metrics
    res = runner.invoke(app, pretrain_cmd(tmp_path / "r", []))
    assert res.exit_code == 2
    assert_one_line_error(res.stderr, "holds no readable checkpoint", "move the run directory")


# --------------------------------------------------------------------------------------
# 4. A torn last line of metrics.jsonl (and bad_samples.jsonl)
# --------------------------------------------------------------------------------------


def test_torn_metrics_line_is_dropped_with_a_warning(
    tmp_path: Path, tiny_overrides: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    over = [*tiny_overrides, "train.checkpoint_every=4"]
    run(tmp_path, over, 4)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "epoch": 0, "lo')  # a kill mid-write
    with (tmp_path / "bad_samples.jsonl").open("a") as f:
        f.write('{"step": 2, "id": "x"}\n{"step": 3, "i')
    capfd.readouterr()
    assert run(tmp_path, over, 6).step == 6
    err = capfd.readouterr().err
    assert "metrics.jsonl:5: dropped an unreadable (torn) line" in err
    assert "bad_samples.jsonl:2: dropped" in err
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "bad_samples.jsonl").read_text() == '{"step": 2, "id": "x"}\n'


# --------------------------------------------------------------------------------------
# 5. A non-finite loss
# --------------------------------------------------------------------------------------


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "train.checkpoint_every=2"]
    run(tmp_path, over, 4)
    good = load(tmp_path / "checkpoints" / "latest.pt")
    res = runner.invoke(
        app, pretrain_cmd(tmp_path, [*over, "optim.lr=1e8"], "--max-steps", "12", "--force")
    )
    assert res.exit_code == 1, res.output
    line = assert_one_line_error(res.stderr, "non-finite loss at step", "(step 4) is the last good")
    assert "jepa=nan" in line or "jepa=inf" in line
    kept = load(tmp_path / "checkpoints" / "latest.pt")
    assert kept["step"] == 4 and torch.equal(kept["student"]["patch_embed.weight"],
                                             good["student"]["patch_embed.weight"])  # fmt: skip
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(r["loss"]) for r in records)


def _nan_at(monkeypatch: pytest.MonkeyPatch, steps: set[int]) -> None:
    """Make the ``jepa`` term NaN at the given (0-based) steps."""
    forward = JEPA.forward

    def patched(self: JEPA, clips: torch.Tensor, masks: list[torch.Tensor], step: int):  # type: ignore[no-untyped-def]
        losses, logs = forward(self, clips, masks, step)
        if step in steps:
            losses["jepa"] = losses["jepa"] * float("nan")
        return losses, logs

    monkeypatch.setattr(JEPA, "forward", patched)


def test_skip_nonfinite_skips_and_logs_up_to_n_steps(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_at(monkeypatch, {2})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3 \(jepa=nan\)"):
        run(tmp_path / "strict", tiny_overrides, 6)
    assert not (tmp_path / "strict" / "checkpoints").exists()

    result = run(tmp_path / "skip", tiny_overrides, 6, skip_nonfinite=2)
    assert result.step == 6
    state = load(tmp_path / "skip" / "checkpoints" / "latest.pt")
    assert state["nonfinite_skipped"] == 1
    assert all(torch.isfinite(v).all() for v in state["student"].values())
    records = read_metrics(tmp_path / "skip" / "metrics.jsonl")
    assert [r["nonfinite_skipped"] for r in records] == [0, 0, 1, 1, 1, 1]
    assert all(np.isfinite(r["loss"]) for r in records)

    _nan_at(monkeypatch, {1, 2, 3})
    with pytest.raises(NonFiniteLossError, match="3 steps had a non-finite loss"):
        run(tmp_path / "many", tiny_overrides, 6, skip_nonfinite=2)


# --------------------------------------------------------------------------------------
# 6. Two processes on one run directory
# --------------------------------------------------------------------------------------


def test_second_process_is_refused_and_a_killed_holder_releases_the_lock(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    over = [*tiny_overrides, "train.checkpoint_every=2", "optim.iters_per_epoch=5000"]
    d = tmp_path / "r"
    first = start(cli_args(d, over, 10_000), tmp_path)
    try:
        wait_for_steps(d, 2, first)
        second = subprocess.run(cli_args(d, over, 10_000), cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert_one_line_error(second.stderr, f"{d} is in use by pid {first.pid} on "
                              f"{socket.gethostname()}", "--run-dir")  # fmt: skip
        assert first.poll() is None  # the holder was not disturbed
    finally:
        first.kill()
        first.communicate(timeout=60)
    steps = [r["step"] for r in read_metrics(d / "metrics.jsonl")]
    assert steps == sorted(set(steps))  # one writer: no interleaved records
    third = subprocess.run(cli_args(d, over, steps[-1] + 1), cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert "resuming" in third.stderr


def test_run_lock_in_one_process_and_for_a_feature_cache(trained: Path) -> None:
    with RunLock(trained / "x"), pytest.raises(RunLockedError, match="by this process"):
        RunLock(trained / "x").acquire()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from jepactl.lock import RunLock; "
         f"RunLock({str(RunDir(trained).cache(BENCH.name, 'train').parent)!r}).acquire(); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid}"):
            extract(trained)
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------------------
# 7. Invalid values: one line, before any work
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "optim.lr=-1"], "optim: lr must be > 0"),
        (["--set", "optim.lr=nan"], "optim.lr: expected a finite number"),
        (["--set", "optim.ema=5"], "optim: ema must be in [0, 1]"),
        (["--set", "optim.start_lr=-1e-4"], "optim: start_lr must be >= 0"),
        (["--set", "optim.lr=[1,"], "--set optim.lr=[1,: the value is not valid YAML"),
        (["--set", "train.checkpoint_every=0"], "train: checkpoint_every must be >= 1"),
        (["--set", "train.log_every=0"], "train: log_every must be >= 1"),
        (["--set", "model.drop_path=1.5"], "model: drop_path must be in [0, 1)"),
        (["--max-steps", "-1"], "--max-steps must be >= 0"),
        (["--skip-nonfinite", "-2"], "--skip-nonfinite must be >= 0"),
    ],
)
def test_invalid_values_are_one_line_errors_before_any_work(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    d = tmp_path / "r"
    res = runner.invoke(app, pretrain_cmd(d, [], *args))
    assert res.exit_code == 2, res.output
    assert_one_line_error(res.stderr, needle)
    assert not d.exists()
    sets = [a for a in args if "=" in a]
    if sets:  # the recipe itself is invalid: show-recipe says so too
        shown = runner.invoke(app, ["show-recipe", "synth/baseline", "--set", sets[0]])
        assert shown.exit_code == 2
        assert_one_line_error(shown.stderr, needle)


def test_read_only_run_directory_is_one_line(tmp_path: Path, tiny_overrides: list[str]) -> None:
    with tiny_fs(1 << 20, "ro") as fs:
        res = runner.invoke(app, pretrain_cmd(fs / "r", []))
        assert res.exit_code == 2, res.output
        assert_one_line_error(res.stderr, "Read-only file system", str(fs / "r"))


def test_unreadable_checkpoint_is_one_line_for_evaluation(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"\0" * 100)
    res = runner.invoke(app, ["extract-features", str(tmp_path), "--bench", "synth-shapes"])
    assert res.exit_code == 2
    assert_one_line_error(res.stderr, "latest.pt cannot be loaded", "not a checkpoint archive")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = runner.invoke(app, ["--debug", "show-recipe", "synth/baseline", "--set", "optim.lr=-1"])
    assert isinstance(res.exception, ConfigError)
    again = runner.invoke(app, ["show-recipe", "synth/baseline", "--set", "optim.lr=-1"])
    assert again.exit_code == 2, "--debug of one invocation leaked into the next"


def test_python_dash_m_prints_one_line_and_exit_2(tmp_path: Path) -> None:
    res = subprocess.run([*PYTHON, "jepactl", "show-recipe", "synth/baseline", "--set",
                          "optim.ema=5"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 2
    assert_one_line_error(res.stderr, "ema must be in [0, 1]")


def test_checkpoint_with_non_finite_weights_is_never_written(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finite loss with an overflowing update: the weight check before saving catches it."""
    original = loop.ema_update
    calls: list[int] = []

    def poisoned(teacher: torch.nn.Module, student: torch.nn.Module, m: float) -> None:
        original(teacher, student, m)
        calls.append(1)
        if len(calls) == 2:  # the update of step 2, after its (finite) loss
            with torch.no_grad():
                next(student.parameters()).fill_(float("inf"))

    monkeypatch.setattr(loop, "ema_update", poisoned)
    with pytest.raises(NonFiniteLossError, match="weights at step 2 are not finite"):
        run(tmp_path, [*tiny_overrides, "train.checkpoint_every=2"], 4)
    assert not (tmp_path / "checkpoints" / "latest.pt").exists()
