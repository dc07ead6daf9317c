"""A researcher's own objective term, mask strategy, dataset reader and evaluation task, from
a package outside jepactl.

The package is written by the test: ``mylab`` with its ``mylab-0.1.dist-info`` (the metadata
``pip install`` would write, entry points included) in a folder put on ``PYTHONPATH``, so
``importlib.metadata`` finds it exactly as it finds an installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY
from runfixtures import assert_same_state, one_error_line, wait_for_steps

from jepactl.checkpoint import load
from jepactl.train.metrics import read_metrics

TERM = '''
import torch
from torch import nn

from jepactl.objectives import StepContext, Term
from jepactl.objectives.base import ModelDims


class Curvature(Term):
    """L = mean ||W z||^2 over the student's context tokens z, with a head W that trains."""

    def __init__(self, weight: float = 0.1, hidden: int = 8, **kwargs):
        super().__init__(weight, **kwargs)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.hidden = hidden

    def setup(self, dims: ModelDims) -> None:
        self.head = nn.Linear(dims.out_dim, self.hidden)

    def loss(self, ctx: StepContext) -> torch.Tensor:
        z = torch.cat([t.flatten(0, 1) for t in ctx.context_tokens]).float()
        return self.head(z).pow(2).mean()
'''
MASK = '''
from jepactl.masks import MultiBlock3D


class Stripes(MultiBlock3D):
    """The multi-block strategy under the plugin's own name."""
'''
READER = '''
from pathlib import Path

from jepactl.data.readers import DatasetIndex, class_folders


def clips(root: Path, split: str = "train") -> DatasetIndex:
    """Class folders of videos under <root>/<split>/."""
    return class_folders(root, name="clips", split=split)
'''
TASK = """
from jepactl.features.benchmarks import Benchmark

CLIPS = Benchmark(
    name="clips", reader="clips", splits={"train": "train", "val": "val"}, num_classes=2,
    frames=4, crop=32, probe="linear", epochs=3, batch_size=4,
)
"""
ENTRY_POINTS = """[jepactl.objectives]
curvature = mylab.terms:Curvature

[jepactl.masks]
stripes = mylab.masks:Stripes

[jepactl.readers]
clips = mylab.data:clips

[jepactl.tasks]
lab-clips = mylab.tasks:CLIPS
"""
CKPT = ["train.checkpoint_every=2", "train.snapshot_every=4"]
MASK_SET = "masks.0.strategy=stripes"  # the entry point's name


def dist_info(root: Path, name: str, entry_points: str) -> None:
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    pkg = root / "mylab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "terms.py").write_text(TERM)
    (pkg / "masks.py").write_text(MASK)
    (pkg / "data.py").write_text(READER)
    (pkg / "tasks.py").write_text(TASK)
    (pkg / "broken.py").write_text("raise ImportError('mylab.broken needs scipy')\n")
    dist_info(root, "mylab", ENTRY_POINTS)
    return root


def env_with(*paths: Path) -> dict[str, str]:
    extra = [str(p) for p in paths]
    old = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([*extra, *([old] if old else [])])}  # fmt: skip


def jepactl(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jepactl", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def recipe(tmp: Path, term_type: str, **params: object) -> Path:
    extra = "".join(f", {k}: {v}" for k, v in params.items())
    path = tmp / "mine.yaml"
    path.write_text(
        "_base_: synth/baseline.yaml\ndisplay_name: Curvature\n"
        f"objective:\n  terms:\n    mine: {{type: {term_type}, weight: 0.1{extra}}}\n"
    )
    return path


def pretrain_args(path: Path, run_dir: Path, steps: int) -> list[str]:
    args = [sys.executable, "-m", "jepactl", "pretrain", "--recipe", str(path), "--run-dir",
            str(run_dir), "--max-steps", str(steps), "--set", MASK_SET]  # fmt: skip
    for o in [*TINY, *CKPT]:
        args += ["--set", o]
    return args


def test_a_plugin_term_with_a_head_and_a_plugin_mask_train_and_resume_bit_identically(
    plugin: Path, tmp_path: Path
) -> None:
    """``type: mylab.terms:Curvature`` (a dotted path) and ``strategy: stripes`` (an entry
    point): the term logs its loss, its head trains and is checkpointed, and a run killed with
    SIGKILL resumes to the very state of one never interrupted."""
    env = env_with(plugin)
    path = recipe(tmp_path, "mylab.terms:Curvature")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(pretrain_args(path, killed, 40), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_steps(killed, 5, proc)  # type: ignore[arg-type]
    proc.kill()
    proc.communicate(timeout=60)
    saved = int(load(killed / "checkpoints" / "latest.pt")["step"])
    assert saved >= 4
    resumed = subprocess.run(pretrain_args(path, killed, saved + 3), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} at step {saved}" in resumed.stderr
    straight = tmp_path / "straight"
    res = subprocess.run(pretrain_args(path, straight, saved + 3), cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert_same_state(straight, killed)
    state = load(straight / "checkpoints" / "latest.pt")  # the head is checkpointed (and
    assert {"mine.head.weight", "mine.head.bias"} <= set(state["terms"])  # compared above)
    records = read_metrics(straight / "metrics.jsonl")
    assert all("mine" in r for r in records), records[0]
    config = (straight / "config.yaml").read_text()
    assert "mylab.terms:Curvature" in config and "strategy: stripes" in config


def test_the_head_of_a_plugin_term_trains(plugin: Path, tmp_path: Path) -> None:
    """The head's weights move from their initial values (it is in the optimizer)."""
    env = env_with(plugin)
    path = recipe(tmp_path, "curvature")  # the entry point's name
    one, three = tmp_path / "one", tmp_path / "three"
    for run_dir, steps in ((one, 1), (three, 3)):
        res = subprocess.run(pretrain_args(path, run_dir, steps), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr
    a = load(one / "checkpoints" / "latest.pt")["terms"]["mine.head.weight"]
    b = load(three / "checkpoints" / "latest.pt")["terms"]["mine.head.weight"]
    assert not (a == b).all()


def test_recipes_lists_plugins_and_show_recipe_validates_them(plugin: Path, tmp_path: Path) -> None:
    env = env_with(plugin)
    listing = jepactl("recipes", "--components", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert any(ln.split()[:3] == ["term", "curvature", "mylab.terms:Curvature"] for ln in lines)
    assert any("stripes" in ln and "mylab 0.1" in ln for ln in lines)
    assert any(ln.split()[:2] == ["term", "jepa"] and "built-in" in ln for ln in lines)
    bad = jepactl("show-recipe", str(recipe(tmp_path, "curvature", hidden=0)), env=env,
                  cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2
    one_error_line(bad.stderr, "objective.terms.mine", "hidden must be >= 1")
    typo = jepactl("show-recipe", str(recipe(tmp_path, "curvatur")), env=env, cwd=tmp_path)
    one_error_line(typo.stderr, "unknown objective term 'curvatur'", "did you mean 'curvature'")


def test_a_plugin_that_fails_to_import_is_one_line(plugin: Path, tmp_path: Path) -> None:
    env = env_with(plugin)
    for kind in ("mylab.broken:Curvature", "nolab.terms:Curvature", "mylab.terms:Missing"):
        res = jepactl("show-recipe", str(recipe(tmp_path, kind)), env=env, cwd=tmp_path)
        assert res.returncode == 2
        one_error_line(res.stderr, "objective.terms.mine", f"could not import {kind}")
    res = jepactl("show-recipe", str(recipe(tmp_path, "mylab.broken:X")), env=env, cwd=tmp_path)
    one_error_line(res.stderr, "ImportError: mylab.broken needs scipy")
    res = jepactl("show-recipe", str(recipe(tmp_path, "mylab.terms:torch")), env=env, cwd=tmp_path)
    one_error_line(res.stderr, "mylab.terms:torch is not a class")
    res = jepactl("show-recipe", "synth/baseline", "--set", "data.source=mylab.data:nope",
                  env=env, cwd=tmp_path)  # fmt: skip
    one_error_line(res.stderr, "data.source: could not import mylab.data:nope", "AttributeError")
    res = jepactl("extract-features", str(tmp_path), "--task", "mylab.tasks:Benchmark",
                  env=env, cwd=tmp_path)  # fmt: skip
    one_error_line(res.stderr, "task: mylab.tasks:Benchmark is a type, not a")


def test_an_entry_point_named_like_a_builtin_is_an_error_naming_both(
    plugin: Path, tmp_path: Path
) -> None:
    clash = tmp_path / "clash-site"
    clash.mkdir()
    dist_info(clash, "clashlab", "[jepactl.objectives]\njepa = mylab.terms:Curvature\n")
    env = env_with(plugin, clash)
    res = jepactl("show-recipe", "synth/baseline", env=env, cwd=tmp_path)
    assert res.returncode == 2
    one_error_line(res.stderr, "clashlab 0.1", "'jepa'", "jepactl.objectives.jepa:PredictionLoss",
                   "rename")  # fmt: skip


def test_a_plugin_reader_and_task_feed_pretraining_extraction_probe_and_compare(
    plugin: Path, tmp_path: Path
) -> None:
    """``data.source: clips`` (an entry point of ``jepactl.readers``) pretrains on the
    package's videos, ``--task lab-clips`` (a ``jepactl.tasks`` entry point) extracts and
    probes, and ``compare`` puts the plugin-term run beside the baseline on that task."""
    from videofixtures import write_video

    data = tmp_path / "videos"
    for split, n in (("train", 4), ("val", 2)):
        for label in ("left", "right"):
            for i in range(n):
                write_video(data / split / label / f"{label}{i}.avi", 8, size=(32, 32), seed=i)
    env = env_with(plugin)
    mine = recipe(tmp_path, "mylab.terms:Curvature")
    runs = {"mine": mine, "baseline": Path("synth/baseline")}
    for name, path in runs.items():
        run_dir = tmp_path / "runs" / name
        args = [*pretrain_args(path, run_dir, 2)[3:], "--set", "data.source=clips",
                "--set", f"data.roots.clips={data}"]  # fmt: skip
        res = jepactl(*args, env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        for cmd in (["extract-features", str(run_dir), "--task", "lab-clips"],
                    ["probe", "lab-clips", "--run", str(run_dir)]):  # fmt: skip
            cmd += ["--root", f"clips={data}"]
            res = jepactl(*cmd, env=env, cwd=tmp_path)
            assert res.returncode == 0, res.stderr
        assert (run_dir / "features" / "lab-clips" / "train.h5").is_file()
        assert (run_dir / "probes" / "lab-clips-linear.json").is_file()
    table = jepactl("compare", str(tmp_path / "runs"), "--markdown", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = [ln for ln in table.stdout.splitlines() if ln.startswith("|")]
    assert "lab-clips" in rows[0], table.stdout
    assert any(ln.startswith("| Curvature |") for ln in rows), table.stdout  # with its Δ:
    assert "Δ" in table.stdout and "No Δ" not in table.stdout, table.stdout
    study = tmp_path / "study.yaml"
    study.write_text(f"recipes: [synth/baseline, {{recipe: {mine}, name: mine}}]\n"
                     "tasks: [{task: lab-clips}]\nbaseline: synth/baseline\n")  # fmt: skip
    code = f"from jepactl.study.spec import load_study; print(load_study({str(study)!r}).tasks)"
    loaded = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "task='lab-clips', probes=['linear']" in loaded.stdout, loaded.stderr
    missing = jepactl("extract-features", str(tmp_path / "runs" / "mine"), "--task",
                      "lab-clip", env=env, cwd=tmp_path)  # fmt: skip
    one_error_line(missing.stderr, "unknown task 'lab-clip'", "did you mean 'lab-clips'")
