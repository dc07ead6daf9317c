"""``jepactl study``: the study file, its plan, and a whole study through the local launcher.

The SLURM launcher runs against a real cluster in test_study_slurm.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from runfixtures import one_error_line
from studyfixtures import TASK, TINY_OVERRIDES, jepactl, write_study
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.errors import ConfigError
from jepactl.study.graph import build_stages, probe_flags
from jepactl.study.spec import DEFAULT_PROBE, TASK_NAMES, list_studies, load_study
from jepactl.study.state import Paths, snapshot

runner = CliRunner()


# --------------------------------------------------------------------------------------
# The study file
# --------------------------------------------------------------------------------------


def test_the_mirrors_equal_the_task_registry() -> None:
    """The study's torch-free task list and default probe kinds are the registry's."""
    from jepactl.features.registry import BENCHMARKS, names
    from jepactl.report.compare import task_default_kind

    assert set(TASK_NAMES) == set(names())
    for name, bench in BENCHMARKS.items():
        sk = "-sklearn" if bench.sklearn_features is not None else ""
        assert DEFAULT_PROBE[name] == bench.probe + sk
        if task_default_kind(name) is not None:
            assert DEFAULT_PROBE[name] == task_default_kind(name)


@pytest.mark.parametrize("kind", ["attentive", "linear", "linear-sklearn", "attentive-sweep"])
def test_probe_flags_train_the_kind_they_name(kind: str) -> None:
    from jepactl.probe.records import result_from_json

    flags = probe_flags(kind)
    head = flags[flags.index("--probe") + 1]
    result = {"probe": head, "hparams": {"impl": "sklearn"} if "--sklearn" in flags else {},
              "sweep": {"selected": {}} if "--sweep" in flags else None}  # fmt: skip
    assert result_from_json({**result, "top1": 0.0}, "test").kind == kind


def test_builtin_studies_load_and_table4_is_45_runs() -> None:
    assert {"paper/table3", "paper/table4", "paper/table5", "paper/table6", "synth/quick"} <= set(
        list_studies()
    )
    for name in list_studies():
        load_study(name)
    t4 = load_study("paper/table4")
    assert len(t4.runs) == 45 and {r.seed for r in t4.runs} == {0, 1, 2}
    stages = build_stages(t4)
    assert len(stages) == 45 * 7 + 1
    pretrain = next(s for s in stages if s.kind == "pretrain")
    assert pretrain.gpus == 4 and pretrain.multi_rank
    assert t4.root == Path("runs/paper-table4").resolve()  # absolute: the same from any cwd


def test_stages_are_the_commands_a_person_would_type(tmp_path: Path) -> None:
    study = load_study(str(write_study(tmp_path / "s.yaml")), tmp_path / "root")
    stages = {s.id: s for s in build_stages(study)}
    run = tmp_path / "root" / "runs" / "synth-baseline-s1"
    assert stages["synth-baseline-s1/pretrain"].argv[:7] == (
        "pretrain", "--recipe", "synth/baseline", "--run-dir", str(run), "--seed", "1",
    )  # fmt: skip
    probe = stages["synth-baseline-s1/probe/synth-shapes-linear"]
    assert probe.argv[:4] == ("probe", "synth-shapes", "--run", str(run))
    assert probe.deps == ("synth-baseline-s1/extract/synth-shapes",)
    assert stages["synth-baseline-s1/extract/synth-shapes"].deps == ("synth-baseline-s1/pretrain",)
    assert len(stages["report"].deps) == 4


def test_a_study_without_tasks_reports_after_its_pretraining(tmp_path: Path) -> None:
    """The report waits for every leaf stage; with no tasks those are the pretrainings (it
    once waited on nothing, started at once on SLURM, and failed finding no run)."""
    study = load_study(str(write_study(tmp_path / "s.yaml", tasks=[])), tmp_path / "root")
    stages = {s.id: s for s in build_stages(study)}
    assert set(stages["report"].deps) == {i for i in stages if i.endswith("/pretrain")}
    assert len(stages["report"].deps) == 4


def test_waiting_for_the_child_inside_a_signal_handler_neither_hangs_nor_reaps() -> None:
    """submitit's time-limit handler runs while the main thread sits in ``Popen.wait()``
    (holding its lock): waiting there with ``child.wait()`` deadlocked the job until SLURM
    killed it. ``wait_for_exit`` sees the exit without taking the child's exit status."""
    import signal

    from jepactl.study.slurm import wait_for_exit

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6); exit(3)"])
    seen: list[bool] = []
    old = signal.signal(signal.SIGALRM, lambda *_: seen.append(wait_for_exit(child.pid, 20)))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        assert child.wait() == 3  # blocks holding the lock, as run_stage does; status kept
        assert seen == [True] and time.monotonic() - t0 < 15
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


IDS = [
    "recipe",
    "task",
    "probe",
    "key",
    "override",
    "baseline",
    "control",
    "resources",
    "run-names",
    "signal",
]
#: A recipe entry named like the baseline's untrained control run.
CLASHING = {"recipe": "synth/fwm_hw_ld", "name": "synth-baseline-untrained"}


@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"recipes": ["synth/baselin"]}, ["unknown recipe 'synth/baselin'", "synth/baseline"]),
        ({"tasks": [{"task": "ssv3"}]}, ["tasks.0.task", "ssv2"]),
        ({"tasks": [{"task": "ssv2", "probes": ["attentiv"]}]}, ["attentive"]),
        ({"seed": [0]}, ["unknown key 'seed'", "seeds"]),
        ({"overrides": ["optim.warmup_epoch=1"]}, ["optim.warmup_epoch", "warmup_epochs"]),
        ({"baseline": "synth/kin_l1"}, ["baseline", "not one of the study's recipes"]),
        ({"controls": ["untrainned"]}, ["untrained"]),
        ({"resources": {"gpus_per_nod": 4}}, ["resources.gpus_per_nod", "gpus_per_node"]),
        (
            {"recipes": ["synth/baseline", CLASHING], "controls": ["untrained"]},
            ["two runs would both be named", "synth-baseline-untrained-s0", "name:"],
        ),
        ({"resources": {"time_min": 2, "signal_delay_s": 600}}, ["signal_delay_s", "time_min"]),
    ],
    ids=IDS,
)
def test_a_bad_study_file_is_one_line(tmp_path: Path, fields: dict, needles: list[str]) -> None:
    path = write_study(tmp_path / "bad.yaml", **fields)
    with pytest.raises(ConfigError):
        load_study(str(path))
    res = runner.invoke(app, ["study", "plan", str(path)])
    assert res.exit_code == 2
    one_error_line(res.output, *needles)
    res = runner.invoke(app, ["study", "run", str(path), "--root", str(tmp_path / "root")])
    assert res.exit_code == 2
    assert not (tmp_path / "root").exists()  # nothing written


def test_an_unknown_builtin_study_suggests_the_close_one() -> None:
    res = runner.invoke(app, ["study", "plan", "paper/tabel4"])
    one_error_line(res.output, "unknown study 'paper/tabel4'", "paper/table4")


def test_plan_and_status_import_no_torch_and_answer_fast(tmp_path: Path) -> None:
    """Table 4 x 3 seeds (316 stages): plan and status without torch, each timed."""
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from jepactl.cli import app\n"
        "try:\n"
        f"    app(['study', sys.argv[1], 'paper/table4', '--root', {str(tmp_path)!r}])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('elapsed', time.perf_counter() - t)\n"
    )
    for command in ("plan", "status"):
        res = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "316 stages" in res.stdout
        # how long it took is a benchmark (docs/studies.md), not an assertion


def test_slurm_without_sbatch_is_one_line_and_submits_nothing(tmp_path: Path) -> None:
    path = write_study(tmp_path / "s.yaml")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no sbatch on it
    res = jepactl("study", "run", str(path), "--launcher", "slurm", "--root", "root",
                  cwd=tmp_path, env=env)  # fmt: skip
    assert res.returncode == 2
    one_error_line(res.stderr, "sbatch is not on PATH", "--launcher local")
    assert not (tmp_path / "root").exists()


def test_slurm_dry_run_prints_chained_sbatch_scripts(tmp_path: Path) -> None:
    """The paper's set-up: one task per GPU, 4 GPUs, the time-limit signal, afterok chains."""
    res = runner.invoke(app, ["study", "run", "paper/table5", "--launcher", "slurm", "--dry-run",
                              "--root", str(tmp_path / "t5")])  # fmt: skip
    assert res.exit_code == 0, res.output
    scripts = res.output.split("### ")[1:]
    pretrain = next(s for s in scripts if s.startswith("mixed-baseline-s0/pretrain"))
    for line in (
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --signal=USR2@180",
        "#SBATCH --time=1440",
        "#SBATCH --mem=256G",
    ):
        assert line in pretrain, pretrain
    assert "--dependency" not in pretrain
    extract = next(s for s in scripts if s.startswith("mixed-baseline-s0/extract/ssv2"))
    assert "#SBATCH --dependency='afterok:<mixed-baseline-s0/pretrain>'" in extract
    assert "#SBATCH --gpus-per-node=1" in extract and "--ntasks-per-node=1" in extract
    report = next(s for s in scripts if s.startswith("report"))
    assert "#SBATCH --dependency='afterany:<" in report
    assert "dry run: 127 stage(s) would run; nothing was submitted" in res.output
    assert not (tmp_path / "t5").exists()


def test_a_queue_that_does_not_answer_leaves_submitted_jobs_alone(tmp_path: Path) -> None:
    """squeue failing (no controller, a timeout) must not read as "every job died": the jobs
    show as unknown, and `study run --launcher slurm` submits nothing beside them."""
    from jepactl.study.state import JobRecord

    path = write_study(tmp_path / "s.yaml")
    root = tmp_path / "root"
    stage = "synth-baseline-s0/pretrain"
    JobRecord(stage, "slurm", job_id="4242", submitted="now").write(Paths(root).job(stage))
    (tmp_path / "bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "bin")}  # no squeue to ask
    status = jepactl("study", "status", str(path), "--root", "root", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "1 unknown" in status.stdout and "job 4242" in status.stdout
    res = jepactl("study", "run", str(path), "--launcher", "slurm", "--dry-run", "--root",
                  "root", cwd=tmp_path, env=env)  # fmt: skip
    assert res.returncode == 2
    one_error_line(res.stderr, "did not say whether 1 submitted job(s) still run", "squeue")
    assert "###" not in res.stdout


def test_evaluation_jobs_take_their_own_partition_and_sbatch_options(tmp_path: Path) -> None:
    """`exclusive` for a 4-GPU run must not make every 1-GPU probe job take a whole node;
    the untrained control's step-0 checkpoint is an evaluation-sized job."""
    from jepactl.study.slurm import parameters

    evaluation = {"gpus": 1, "partition": "small", "sbatch": {"exclusive": None}}
    site = {"constraint": "a100", "exclusive": True}
    resources = {"gpus_per_node": 4, "partition": "gpu", "sbatch": site, "eval": evaluation}
    path = write_study(tmp_path / "s.yaml", resources=resources, controls=["untrained"])
    study = load_study(str(path), tmp_path / "root")
    stages = {s.id: s for s in build_stages(study)}
    run = parameters(study, stages["synth-baseline-s0/pretrain"], "")
    assert run["partition"] == "gpu" and run["gpus_per_node"] == 4
    assert run["additional_parameters"] == {"constraint": "a100", "exclusive": True}
    for sid in ("synth-baseline-s0/probe/synth-shapes-linear", "report",
                "synth-baseline-untrained-s0/pretrain"):  # fmt: skip
        job = parameters(study, stages[sid], "")
        assert job["partition"] == "small", sid
        assert job["additional_parameters"] == {"constraint": "a100"}, sid
        assert job["nodes"] == 1 and job["ntasks_per_node"] == 1
    assert "gpus_per_node" not in parameters(study, stages["report"], "")


def test_the_lock_holder_is_read_without_taking_the_lock(tmp_path: Path) -> None:
    """`study status` names who holds a run's lock, and asks without taking it (a probe that
    took it would make a run starting that instant fail as locked)."""
    from jepactl.study.state import lock_holder

    hold = (f"import time\nfrom pathlib import Path\nfrom jepactl.lock import RunLock\n"
            f"with RunLock(Path({str(tmp_path)!r})):\n    print('held', flush=True)\n"
            "    time.sleep(30)\n")  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        assert lock_holder(tmp_path) == f"pid {child.pid} on {os.uname().nodename}"
    finally:
        child.kill()
        child.wait()
    assert lock_holder(tmp_path) is None


def test_a_job_refuses_a_stage_whose_command_changed_since_it_was_submitted(
    tmp_path: Path,
) -> None:
    """A queued SLURM job reads the study file when it starts: edited meanwhile, it would
    train other settings than were submitted (and than study.yaml records)."""
    from jepactl.study.slurm import StageJob

    path = write_study(tmp_path / "s.yaml")
    study = load_study(str(path), tmp_path / "root")
    stage = next(s for s in build_stages(study) if s.id == "synth-baseline-s0/pretrain")
    job = StageJob(str(path), str(tmp_path / "root"), stage.id, tuple(stage.argv))
    assert job._load()[1].argv == stage.argv
    write_study(path, overrides=[*TINY_OVERRIDES, "optim.lr=0.01"])
    with pytest.raises(ConfigError, match="changed after this job was submitted"):
        job._load()
    from jepactl.study.state import JobRecord

    paths = Paths(tmp_path / "root")
    JobRecord(stage.id, "slurm", job_id="7", submitted="then").write(paths.job(stage.id))
    with pytest.raises(ConfigError):
        job()
    record = JobRecord.read(paths.job(stage.id))
    assert record is not None and "changed after this job" in record.message and record.rc == 2


def test_a_read_only_study_root_is_one_line(tmp_path: Path) -> None:
    """A study root on a read-only disk: one line, nothing run."""
    from runfixtures import tiny_fs

    path = write_study(tmp_path / "s.yaml")
    with tiny_fs(1 << 20, "ro") as where:
        res = jepactl("study", "run", str(path), "--root", str(where / "root"), cwd=tmp_path)
        assert res.returncode != 0
        one_error_line(res.stderr, "Read-only file system")
        assert not (where / "root").exists()


# --------------------------------------------------------------------------------------
# A whole study, locally
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_study(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, subprocess.CompletedProcess[str], float]:
    """2 recipes x 2 seeds x 1 task through `study run --launcher local`."""
    tmp = tmp_path_factory.mktemp("study")
    path = write_study(tmp / "s.yaml")
    t = time.perf_counter()
    res = jepactl("study", "run", str(path), "--root", "root", "--max-parallel", "2", cwd=tmp)
    return tmp, path, res, time.perf_counter() - t


@pytest.mark.slow
def test_local_study_runs_every_stage_and_reports_intervals(local_study) -> None:  # type: ignore[no-untyped-def]
    tmp, _, res, _ = local_study
    assert res.returncode == 0, res.stderr + res.stdout
    assert "13 stage(s) done, 0 failed, 0 not run" in res.stdout
    # the intervals over seeds, and the paper's table with Δ vs the baseline
    assert "Baseline V-JEPA (synthetic, CPU) (baseline)  2" in res.stdout
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith("FWM-HW-LD"))
    assert "] (2)" in row and "[" in row
    report = (tmp / "root" / "report.md").read_text()
    assert "## Mean and 95 % interval over seeds" in report and "Δ" in report
    assert (tmp / "root" / "figure2.png").is_file()
    # what `study run` printed is the report stage's own table, not a second one built after it
    assert (tmp / "root" / "report.txt").read_text() in res.stdout
    for run in (
        "synth-baseline-s0",
        "synth-baseline-s1",
        "synth-fwm_hw_ld-s0",
        "synth-fwm_hw_ld-s1",
    ):
        d = tmp / "root" / "runs" / run
        record = json.loads((d / "checkpoints" / "latest.json").read_text())
        assert record["step"] == record["total_steps"] == 6
        result = json.loads((d / "probes" / "synth-shapes-linear.json").read_text())
        assert result["checkpoint"]["sha256"] == record["sha256"]
        assert (tmp / "root" / "logs" / f"{run}.pretrain.log").is_file()
    configs = [
        tmp / "root" / "runs" / r / "config.yaml"
        for r in ("synth-baseline-s0", "synth-baseline-s1")
    ]
    seeds = {yaml.safe_load(c.read_text())["train"]["seed"] for c in configs}
    assert seeds == {0, 1}


@pytest.mark.slow
def test_a_second_local_run_does_nothing_and_says_so(local_study) -> None:  # type: ignore[no-untyped-def]
    tmp, path, res, _ = local_study
    assert res.returncode == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp / "root" / "runs").rglob("*") if p.is_file()}
    again = jepactl("study", "run", str(path), "--root", "root", cwd=tmp)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: every stage is done" in again.stdout
    after = {p: p.stat().st_mtime_ns for p in (tmp / "root" / "runs").rglob("*") if p.is_file()}
    assert after == before  # nothing redone, nothing touched
    status = jepactl("study", "status", str(path), "--root", "root", cwd=tmp)
    assert "13 stages: 13 done" in status.stdout and "all done" in status.stdout


@pytest.mark.slow
def test_a_changed_study_is_refused_naming_the_keys(local_study) -> None:  # type: ignore[no-untyped-def]
    tmp, _, res, _ = local_study
    assert res.returncode == 0
    changed = write_study(tmp / "changed.yaml", overrides=[*TINY_OVERRIDES, "optim.lr=0.01"])
    again = jepactl("study", "run", str(changed), "--root", "root", cwd=tmp)
    assert again.returncode == 2
    one_error_line(again.stderr, "other settings", "synth-baseline-s0: optim.lr", "--force")
    # adding a seed is new work, not a change: its stages are planned, the old ones done
    more = load_study(str(write_study(tmp / "more.yaml", seeds=3)), tmp / "root")
    snap = snapshot(more, build_stages(more), query_slurm=False)
    todo = sorted(s.stage.id for s in snap.stages if s.state != "done")
    assert todo == ["report", "synth-baseline-s2/extract/synth-shapes",
                    "synth-baseline-s2/pretrain", "synth-baseline-s2/probe/synth-shapes-linear",
                    "synth-fwm_hw_ld-s2/extract/synth-shapes", "synth-fwm_hw_ld-s2/pretrain",
                    "synth-fwm_hw_ld-s2/probe/synth-shapes-linear"]  # fmt: skip


def test_a_changed_task_protocol_is_refused_and_its_caches_are_not_done(local_study) -> None:  # type: ignore[no-untyped-def]
    """A task's limit changed: refused naming it; its caches (built with the old limit) and
    probes no longer count as done, and --force rebuilds them (extract-features --force)."""
    tmp, _, res, _ = local_study
    assert res.returncode == 0
    path = write_study(tmp / "fewer.yaml", tasks=[{**TASK, "limit": 16}])
    again = jepactl("study", "run", str(path), "--root", "root", cwd=tmp)
    assert again.returncode == 2
    one_error_line(again.stderr, "other settings", "task:synth-shapes: limit 24 -> 16", "--force")
    study = load_study(str(path), tmp / "root")
    snap = snapshot(study, build_stages(study), query_slurm=False)
    todo = {s.stage.id for s in snap.stages if s.state != "done"}
    assert {s.id for s in build_stages(study) if s.kind != "pretrain"} == todo
    forced = build_stages(study, forced={"task:synth-shapes"})
    assert all("--force" in s.argv for s in forced if s.kind == "extract")
    assert not any("--force" in s.argv for s in forced if s.kind == "pretrain")


@pytest.mark.slow
def test_a_failed_stage_shows_its_log_and_the_rerun_resumes_it(tmp_path: Path) -> None:
    """A pretraining stage that stopped part-way (SIGTERM: it checkpoints) is failed, with its
    log's last line; the same `study run` resumes it from its checkpoint and finishes."""
    longer = [*TINY_OVERRIDES, "optim.iters_per_epoch=60"]
    path = write_study(
        tmp_path / "s.yaml", recipes=["synth/baseline"], seeds=1, overrides=longer, tasks=[]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "jepactl", "study", "run", str(path), "--root", "root"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = tmp_path / "root" / "runs" / "synth-baseline-s0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 5
    ):
        time.sleep(0.1)
    proc.send_signal(subprocess.signal.SIGTERM)  # type: ignore[attr-defined]
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping: SIGTERM" in err and "resume: jepactl study run" in out
    status = jepactl("study", "status", str(path), "--root", "root", cwd=tmp_path)
    line = next(
        ln
        for ln in status.stdout.splitlines()
        if ln.startswith("failed: synth-baseline-s0/pretrain")
    )
    assert "stopped before it was done" in line and "synth-baseline-s0.pretrain.log" in line
    record = json.loads((metrics.parent / "checkpoints" / "latest.json").read_text())
    assert 0 < record["step"] < 60
    again = jepactl("study", "run", str(path), "--root", "root", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    log = (tmp_path / "root" / "logs" / "synth-baseline-s0.pretrain.log").read_text()
    run = (tmp_path / "root" / "runs" / "synth-baseline-s0").resolve()
    assert f"resuming {run} at step {record['step']}" in log
    assert json.loads((metrics.parent / "checkpoints" / "latest.json").read_text())["step"] == 60
    assert Paths(tmp_path / "root").report.is_file()


def test_the_checkpoint_record_is_tied_to_its_file(tmp_path: Path) -> None:
    """checkpoints/latest.json says latest.pt's step and sha256; a record of another file reads
    as none, and rerunning pretrain on a finished run written without one writes it."""
    from conftest import TINY
    from runfixtures import run

    from jepactl.rundir import RunDir
    from jepactl.utils import file_sha256

    d = RunDir(tmp_path / "run")
    run(d.root, list(TINY), 3)
    record = d.checkpoint_record()
    assert record is not None and record.step == 3 and record.total_steps == 40
    assert record.sha256 == file_sha256(d.latest) and not record.finished
    d.latest.write_bytes(d.latest.read_bytes() + b"\0")  # another file now
    assert d.checkpoint_record() is None
    run(tmp_path / "old", list(TINY), 2)
    old = RunDir(tmp_path / "old")
    old.latest_record.unlink()  # as written before records were kept
    run(old.root, list(TINY), 2)  # nothing to train: resumed and done
    again = old.checkpoint_record()
    assert again is not None and again.step == 2 and again.sha256 == file_sha256(old.latest)
