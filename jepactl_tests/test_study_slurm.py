"""``jepactl study run --launcher slurm`` against a real one-node SLURM cluster.

The cluster is started by ``scripts/with-slurm.sh`` (the README's test command wraps pytest in
it; ``scripts/slurm_cluster.sh start`` by hand). Without one these tests are skipped, except
where ``JEPACTL_REQUIRE_SLURM=1`` (CI) makes a missing cluster a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from runfixtures import assert_same_state
from studyfixtures import jepactl, write_study

from jepactl.study.graph import build_stages
from jepactl.study.spec import load_study
from jepactl.study.state import JobRecord, Paths, Snapshot, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    reason = ""
    if shutil.which("sbatch") is None:
        reason = "sbatch is not on PATH"
    else:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        states = {s.rstrip("*~#$@^-!%") for s in res.stdout.split()}
        if res.returncode != 0 or not states:
            reason = f"sinfo: {res.stderr.strip() or 'no node'}"
        elif not states & {"idle", "mixed", "allocated", "completing"}:  # slurmd down or so
            reason = f"no node takes jobs (sinfo: {', '.join(sorted(states))})"
    if reason:
        message = f"no SLURM cluster ({reason}): start one with scripts/slurm_cluster.sh start"
        if os.environ.get("JEPACTL_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


def wait(path: Path, root: Path, until: str, timeout: float = 600) -> Snapshot:
    """Poll the study until ``until`` holds: ``settled`` (nothing queued or running: each
    stage done, failed, or blocked behind a failed one) or ``done`` (every stage done, and
    each job that ran one has recorded its end: a stage counts as done from its files, which
    its job writes a moment before it records its exit code)."""
    study = load_study(str(path), root)
    stages = build_stages(study)
    paths = Paths(root)
    deadline = time.monotonic() + timeout
    while True:
        snap = snapshot(study, stages)
        live = [s for s in snap.stages if s.live]
        records = [JobRecord.read(paths.job(s.id)) for s in stages]
        ended = all(r is None or r.ended for r in records)
        if until == "done" and all(s.state == "done" for s in snap.stages) and ended:
            return snap
        if until == "settled" and not live:
            return snap
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue", "-h", "--states=all"], capture_output=True, text=True)
            raise AssertionError(
                f"study not {until} after {timeout}s: {snap.counts()}\n{queue.stdout}"
            )
        time.sleep(1)


def submission(root: Path, job_id: str) -> str:
    """The sbatch script submitit wrote for a job."""
    return (root / "slurm" / job_id / f"{job_id}_submission.sh").read_text()


def test_a_study_runs_through_slurm_with_dependencies(tmp_path: Path) -> None:
    """2 recipes x 2 seeds x 1 task: 13 jobs chained with afterok, results and report.md."""
    path = write_study(tmp_path / "s.yaml")
    res = jepactl("study", "run", str(path), "--launcher", "slurm", "--root", "root", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "submitted 13 job(s)" in res.stdout
    root = tmp_path / "root"
    paths = Paths(root)
    pre = JobRecord.read(paths.job("synth-baseline-s0/pretrain"))
    ext = JobRecord.read(paths.job("synth-baseline-s0/extract/synth-shapes"))
    assert pre is not None and ext is not None and pre.job_id and ext.job_id
    assert f"--dependency=afterok:{pre.job_id}" in submission(root, ext.job_id)
    assert "--signal=USR2@180" in submission(root, pre.job_id)
    wait(path, root, "done")
    assert "## Mean and 95 % interval over seeds" in paths.report.read_text()
    record = JobRecord.read(paths.job("report"))
    assert record is not None and record.rc == 0 and record.host
    status = jepactl("study", "status", str(path), "--root", "root", cwd=tmp_path)
    assert "13 stages: 13 done" in status.stdout
    again = jepactl(
        "study", "run", str(path), "--launcher", "slurm", "--root", "root", cwd=tmp_path
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout


def start_long_run(path: Path) -> tuple[Path, JobRecord]:
    """Submit the study at ``path`` (root ``root`` beside it); return the root and the job of
    its ``long-s0`` pretraining once that has logged 5 steps."""
    res = jepactl(
        "study", "run", str(path), "--launcher", "slurm", "--root", "root", cwd=path.parent
    )
    assert res.returncode == 0, res.stderr
    root = path.parent / "root"
    job = JobRecord.read(Paths(root).job("long-s0/pretrain"))
    assert job is not None
    metrics = root / "runs" / "long-s0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 5:
        assert time.monotonic() < deadline, "the long run did not start"
        time.sleep(0.1)
    return root, job


def assert_equals_an_uninterrupted_run(path: Path, root: Path) -> None:
    """``long-s0``, interrupted and resumed, equals the same command never interrupted, run
    with the job's thread count (1 CPU per task)."""
    study = load_study(str(path), root)
    argv = list(next(s for s in build_stages(study) if s.id == "long-s0/pretrain").argv)
    straight = path.parent / "straight"
    argv[argv.index("--run-dir") + 1] = str(straight)
    res = jepactl(*argv, cwd=path.parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert_same_state(straight, root / "runs" / "long-s0")


def test_a_cancelled_run_is_resubmitted_alone_and_resumes_bit_identically(tmp_path: Path) -> None:
    """scancel mid-run: status says failed (its downstream blocked); the same `study run`
    resubmits only what is missing; the resumed run equals one never interrupted."""
    long_over = ["optim.iters_per_epoch=60"]
    long = {"recipe": "synth/baseline", "name": "long", "overrides": long_over}
    path = write_study(tmp_path / "s.yaml", seeds=1, recipes=["synth/baseline", long])
    root, job = start_long_run(path)
    paths = Paths(root)
    metrics = root / "runs" / "long-s0" / "metrics.jsonl"
    subprocess.run(["scancel", job.job_id], check=True)
    snap = wait(path, root, "settled", timeout=300)
    by_id = snap.by_id
    assert by_id["synth-baseline-s0/probe/synth-shapes-linear"].state == "done"
    assert by_id["long-s0/pretrain"].state == "failed"
    assert "CANCELLED" in by_id["long-s0/pretrain"].detail
    assert by_id["long-s0/extract/synth-shapes"].state == "blocked"
    status = jepactl("study", "status", str(path), "--root", "root", cwd=tmp_path)
    assert "failed: long-s0/pretrain: job" in status.stdout
    assert "resume: jepactl study run" in status.stdout and "--launcher slurm" in status.stdout
    step = json.loads((root / "runs" / "long-s0" / "checkpoints" / "latest.json").read_text())[
        "step"
    ]
    assert 0 < step < 60

    again = jepactl(
        "study", "run", str(path), "--launcher", "slurm", "--root", "root", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "submitted 4 job(s)" in again.stdout  # long's 3 stages and the report
    for stage in ("long-s0/pretrain", "long-s0/extract/synth-shapes", "report"):
        assert f"submitted {stage}: job" in again.stderr
    assert "synth-baseline-s0" not in again.stderr.replace("cancelled", "")
    wait(path, root, "done")
    log = paths.log("long-s0/pretrain").read_text()
    assert f"resuming {root.resolve() / 'runs' / 'long-s0'} at step {step}" in log
    assert_equals_an_uninterrupted_run(path, root)
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(1, 61))


def test_the_time_limit_signal_checkpoints_requeues_and_resumes(tmp_path: Path) -> None:
    """SIGUSR2, what `--signal=USR2@...` sends before the time limit (sent here with scancel
    --signal): the run checkpoints, submitit requeues the same job, and it resumes to the end,
    equal to a run never interrupted."""
    long = {"recipe": "synth/baseline", "name": "long", "overrides": ["optim.iters_per_epoch=60"]}
    path = write_study(tmp_path / "s.yaml", seeds=1, recipes=[long], tasks=[])
    root, first = start_long_run(path)
    paths = Paths(root)
    subprocess.run(["scancel", "--signal=USR2", first.job_id], check=True)
    wait(path, root, "done", timeout=400)
    record = JobRecord.read(paths.job("long-s0/pretrain"))
    assert record is not None and record.job_id == first.job_id and record.requeues == 1
    log = paths.log("long-s0/pretrain").read_text()
    assert log.count(f"job {first.job_id}: jepactl pretrain") == 2  # the same job, twice
    assert "stopped by signal at step" in log and "resuming" in log
    assert_equals_an_uninterrupted_run(path, root)


def test_a_run_of_two_tasks_joins_one_process_group_from_the_slurm_environment(
    tmp_path: Path,
) -> None:
    """tasks_per_node: 2 on the CPU: two SLURM tasks, each given RANK / WORLD_SIZE /
    MASTER_ADDR from the SLURM environment, train one run (gloo) as torchrun's ranks would."""
    resources = {"gpus_per_node": 0, "tasks_per_node": 2, "cpus_per_task": 1, "time_min": 10,
                 "eval": {"gpus": 0, "cpus_per_task": 1, "time_min": 10}}  # fmt: skip
    path = write_study(tmp_path / "s.yaml", seeds=1, recipes=["synth/baseline"], tasks=[],
                       resources=resources)  # fmt: skip
    res = jepactl("study", "run", str(path), "--launcher", "slurm", "--root", "root", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    root = tmp_path / "root"
    record = JobRecord.read(Paths(root).job("synth-baseline-s0/pretrain"))
    assert record is not None
    assert "--ntasks-per-node=2" in submission(root, record.job_id)
    wait(path, root, "done", timeout=400)
    log = Paths(root).log("synth-baseline-s0/pretrain").read_text()
    assert "2 rank(s) on cpu" in log
