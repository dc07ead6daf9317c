"""A study file: which recipes, seeds, tasks and probes make one comparison, and what each job
may use on a cluster. Validated like a recipe (typed schema, one-line errors naming the nearest
key), without importing torch, so ``study plan`` and ``study status`` answer at once.

::

    display_name: FWM-HW-LD vs the baseline (synthetic, CPU)
    recipes: [synth/baseline, synth/fwm_hw_ld]     # names, YAML paths, or {recipe, name, overrides}
    seeds: [0, 1]                                   # or a count: 3 means 0, 1, 2
    overrides: [optim.epochs=2]                     # applied to every run (as pretrain --set)
    max_steps: null                                 # stop every run early (pretrain --max-steps)
    tasks:
      - {task: synth-shapes, probes: [attentive], limit: 64, epochs: 20}
    controls: [untrained, pixels]                   # the baseline at step 0; raw pixels
    baseline: synth/baseline                        # the Δ reference (default: the recipe
                                                    # whose name says baseline)
    resources:                                      # SLURM; the local launcher reads gpus only
      nodes: 1
      gpus_per_node: 4                            # one rank (SLURM task) per GPU
      cpus_per_task: 10
      time_min: 1440
      partition: gpu
      sbatch: {constraint: a100}
      eval: {gpus: 1, cpus_per_task: 8, time_min: 180}

Built-in studies live beside the package's recipes (``jepactl/studies/<group>/<name>.yaml``);
``jepactl study list`` lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any, Literal

import yaml

from jepactl.config import (
    RUNTIME_KEYS,
    apply_override,
    canonical_data_names,
    config_diff,
    from_dict,
    load_raw,
    parse_override,
    parse_recipe,
    resolve_recipe_path,
    to_dict,
)
from jepactl.errors import ConfigError
from jepactl.rundir import PROBE_KINDS
from jepactl.utils import close_match, suggestion

STUDY_SUFFIX = ".yaml"

#: Every task name ``extract-features`` and ``probe`` accept, aliases included: a mirror of
#: :func:`jepactl.features.registry.names` (a test keeps them equal) so validating a study
#: imports no torch.
TASK_NAMES: tuple[str, ...] = (
    "diving48",
    "ssv2",
    "in100",
    "ucf101",
    "synth-shapes",
    "synth-motion-directions",
    "synth-motion-mixed",
    "synth-motion",
)
TASK_ALIASES: dict[str, str] = {"synth-motion": "synth-motion-directions"}

#: The probe kind ``jepactl probe TASK`` trains by default (the task's protocol): a mirror of
#: each benchmark's ``probe`` and ``sklearn`` defaults (a test keeps them equal).
DEFAULT_PROBE: dict[str, str] = {
    "diving48": "attentive",
    "ssv2": "attentive",
    "in100": "linear",
    "ucf101": "attentive",
    "synth-shapes": "attentive",
    "synth-motion-directions": "linear-sklearn",
    "synth-motion-mixed": "linear-sklearn",
}

CONTROLS = ("untrained", "pixels")


@dataclass
class TaskSpec:
    """One evaluation: a task, the probe kinds to train on it, and demo-sized limits."""

    task: str = ""
    probes: list[str] = field(default_factory=list)  # probe kinds; empty: the task's default
    limit: int = 0  # at most this many clips per split (0: all)
    epochs: int = 0  # probe epochs (0: the task's protocol)
    pool: str = ""  # cache pooling ("": the task's)


@dataclass
class EvalResources:
    """What one extraction or probe job may use."""

    gpus: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 0  # 0: the partition's default
    time_min: int = 240
    partition: str = ""  # "": resources.partition
    sbatch: dict[str, Any] = field(default_factory=dict)  # over resources.sbatch; null drops one


@dataclass
class Resources:
    """What one pretraining run may use (one task per GPU), and its evaluation jobs."""

    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int = 0  # ranks per node (0: one per GPU; 1 without GPUs)
    cpus_per_task: int = 10  # per rank: decoding workers
    mem_gb: int = 0  # per node; 0: the partition's default
    time_min: int = 1440  # the job's limit; a run longer than this is requeued and resumes
    partition: str = ""
    account: str = ""
    qos: str = ""
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option
    signal_delay_s: int = 180  # SIGUSR2 this long before the limit: checkpoint and requeue
    max_requeues: int = 20  # time-limit requeues per job before it counts as failed
    eval: EvalResources = field(default_factory=EvalResources)


@dataclass
class ReportSpec:
    """How ``study report`` shows the results (as ``jepactl compare``)."""

    probe: list[str] = field(default_factory=list)  # KIND or TASK=KIND, as compare --probe
    sort: Literal["delta", "name", "input"] = "delta"
    figure: bool = True  # draw Figure 2 (Δ vs the baseline) into the study root


@dataclass
class RunEntry:
    """A recipe of the study: a name or path, with its own label and overrides if needed."""

    recipe: str = ""
    name: str = ""  # the run folders' stem (default: the recipe name, / as -)
    overrides: list[str] = field(default_factory=list)


@dataclass
class StudyFile:
    display_name: str = ""
    description: str = ""
    recipes: list[str | dict[str, Any]] = field(default_factory=list)
    seeds: int | list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    max_steps: int | None = None
    tasks: list[TaskSpec] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    baseline: str = ""
    report: ReportSpec = field(default_factory=ReportSpec)
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class RunPlan:
    """One pretraining run of a study: a recipe at a seed, resolved."""

    name: str  # folder name under STUDY_ROOT/runs
    recipe: str  # recipe name or path, as given to pretrain --recipe
    seed: int
    overrides: tuple[str, ...]  # everything pretrain --set gets (the study's, then the run's)
    config: dict[str, Any]  # the resolved recipe (plain data), train.seed included
    total_steps: int
    max_steps: int | None  # pretrain --max-steps (0 for an untrained control)
    control: str = ""  # "" (a trained run), "untrained" or "pixels"

    @property
    def target_step(self) -> int:
        """The step the run is done at."""
        if self.max_steps is None:
            return self.total_steps
        return min(self.max_steps, self.total_steps)


@dataclass
class Study:
    """A loaded, validated study: its spec, where it lives, and its runs."""

    name: str
    source: Path  # the study file
    spec: StudyFile
    root: Path
    runs: list[RunPlan]
    tasks: list[TaskSpec]  # canonical task names, probe kinds filled in
    baseline: str  # the run stem of the baseline recipe ("" when none)

    def resolved(self) -> dict[str, Any]:
        """What ``study run`` records in ``STUDY_ROOT/study.yaml`` and later compares."""
        return {
            "study": self.name,
            "spec": to_dict(self.spec),
            "runs": {r.name: {"recipe": r.recipe, "config": r.config} for r in self.runs},
        }


def studies_root() -> Path:
    """The built-in studies (package data); ``JEPACTL_STUDIES`` points elsewhere."""
    env = os.environ.get("JEPACTL_STUDIES")
    if env:
        return Path(env)
    return Path(str(importlib_resources.files("jepactl") / "studies"))


def list_studies(root: Path | None = None) -> list[str]:
    root = root or studies_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def resolve_study_path(name: str) -> Path:
    """A built-in study name (``paper/table4``) or a path to a YAML file."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml"):
        if as_path.is_file():
            return as_path
        raise ConfigError(f"study file {name} does not exist")
    candidate = studies_root() / f"{name}{STUDY_SUFFIX}"
    if candidate.is_file():
        return candidate
    close = close_match(name, list_studies(), cutoff=0.4)
    hint = f" Did you mean '{close}'?" if close else ""
    raise ConfigError(
        f"unknown study '{name}'.{hint} Run `jepactl study list`, or give a YAML file's path."
    )


def study_name(name: str, path: Path) -> str:
    return name if not Path(name).suffix else path.stem


def default_root(name: str) -> Path:
    return Path("runs") / name.replace("/", "-")


def load_study(name: str, root: Path | None = None) -> Study:
    """Read, validate and resolve a study (built-in name or YAML path). Imports no torch."""
    path = resolve_study_path(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file is a mapping (recipes, seeds, tasks, ...)")
    spec = from_dict(StudyFile, raw)
    label = study_name(name, path)
    # absolute: a stage's command is the same from any directory (a SLURM job's included)
    return build_study(spec, label, path, (root or default_root(label)).resolve())


def build_study(spec: StudyFile, name: str, path: Path, root: Path) -> Study:
    seeds = _seeds(spec.seeds)
    entries = [_entry(e, i, path) for i, e in enumerate(spec.recipes)]
    if not entries:
        raise ConfigError(f"{path}: 'recipes' is empty; list at least one recipe")
    _check_unique([e.name for e in entries], "recipes: two entries are both named", "name:")
    if spec.max_steps is not None and spec.max_steps < 0:
        raise ConfigError(f"max_steps must be >= 0, got {spec.max_steps}")
    tasks = [_task(t, i) for i, t in enumerate(spec.tasks)]
    _check_unique([t.task for t in tasks], "tasks: listed twice:", "")
    for control in spec.controls:
        if control not in CONTROLS:
            raise ConfigError(
                f"controls: unknown control '{control}'{suggestion(control, CONTROLS)}"
            )
    _check_unique(spec.controls, "controls: listed twice:", "")
    baseline = _baseline(spec.baseline, entries)
    if spec.controls and not baseline:
        raise ConfigError(
            "controls need a baseline recipe (the untrained control is the baseline at step 0); "
            "set 'baseline: RECIPE'"
        )
    _check_resources(spec.resources)
    runs: list[RunPlan] = []
    for entry in entries:
        overrides = (*spec.overrides, *entry.overrides)
        for seed in seeds:
            config = resolve_config(entry.recipe, overrides, seed)
            runs.append(RunPlan(
                f"{entry.name}-s{seed}", entry.recipe, seed, overrides, config,
                _total_steps(config), spec.max_steps,
            ))  # fmt: skip
    base = next((e for e in entries if e.name == baseline), None)
    if base is not None:
        overrides = (*spec.overrides, *base.overrides)
        for control in spec.controls:
            for seed in seeds:
                config = resolve_config(base.recipe, overrides, seed)
                runs.append(RunPlan(
                    f"{base.name}-{control}-s{seed}", base.recipe, seed, overrides, config,
                    _total_steps(config), 0, control,
                ))  # fmt: skip
    # a recipe entry named like a control run ("X-untrained") would share its directory
    _check_unique([r.name for r in runs], "two runs would both be named", "name:")
    return Study(name, path, spec, root, runs, tasks, baseline)


def resolve_config(recipe: str, overrides: tuple[str, ...], seed: int) -> dict[str, Any]:
    """The recipe as pretrain resolves it (``_base_``, then ``--set``), checked for structure
    and types (an unknown key names the nearest one); the components' own parameters are
    checked by ``study run`` (:func:`check_components`), which may import torch."""
    raw = load_raw(resolve_recipe_path(recipe))
    for text in (*overrides, f"train.seed={seed}"):
        key, value = parse_override(text)
        apply_override(raw, key, value)
    try:
        return to_dict(parse_recipe(canonical_data_names(raw)))
    except ConfigError as exc:
        raise ConfigError(f"recipe {recipe}: {exc}") from None


def check_components(study: Study) -> None:
    """Validate every run's recipe against the registries (terms, masks, presets): the check
    ``pretrain`` makes first, made for all runs before anything is submitted."""
    from jepactl.recipe import recipe_from_dict

    seen: set[tuple[str, tuple[str, ...]]] = set()
    for run in study.runs:
        if (run.recipe, run.overrides) in seen:
            continue
        seen.add((run.recipe, run.overrides))
        try:
            recipe_from_dict(run.config)
        except ConfigError as exc:
            raise ConfigError(f"recipe {run.recipe}: {exc}") from None


#: How a changed task is named among the changed keys and the forced names (``task:ssv2``).
TASK_PREFIX = "task:"


@dataclass(frozen=True)
class Change:
    """One difference between a study root's record and the study: ``owner`` is the run, or
    ``task:TASK``, that it forces to be redone (``""`` for a study-wide key)."""

    owner: str
    what: str

    def __str__(self) -> str:
        return f"{self.owner}: {self.what}" if self.owner else self.what


def changed_keys(saved: dict[str, Any], study: Study) -> list[Change]:
    """What differs between the study recorded in its root and ``study``, for the runs both
    hold (keys of how a run executes, and a study's own runtime keys, may change; a run or
    task added is new work, not a change)."""
    diff: list[Change] = []
    runs = saved.get("runs")
    runs = runs if isinstance(runs, dict) else {}
    for run in study.runs:
        old = runs.get(run.name)
        if not isinstance(old, dict):
            continue
        if old.get("recipe") != run.recipe:
            diff.append(Change(run.name, f"recipe {old.get('recipe')} -> {run.recipe}"))
            continue
        keys = [k for k in config_diff(old.get("config"), run.config) if k not in RUNTIME_KEYS]
        diff += [Change(run.name, k) for k in keys]
    old_spec = saved.get("spec")
    old_spec = old_spec if isinstance(old_spec, dict) else {}
    for key in ("overrides", "max_steps"):
        if old_spec.get(key) != to_dict(getattr(study.spec, key)):
            diff.append(Change("", key))
    # A task's protocol: its caches and probe results are redone (extract-features --force)
    old_tasks = old_spec.get("tasks")
    by_name = {
        str(t.get("task")): t for t in (old_tasks if isinstance(old_tasks, list) else [])
        if isinstance(t, dict)
    }  # fmt: skip
    for task in study.tasks:
        old = by_name.get(task.task)
        if old is not None:
            diff += [
                Change(
                    f"{TASK_PREFIX}{task.task}", f"{key} {old.get(key)!r} -> {getattr(task, key)!r}"
                )
                for key in ("limit", "pool", "epochs")
                if old.get(key) != getattr(task, key)
            ]
    return diff


# --------------------------------------------------------------------------------------


def _seeds(value: int | list[int]) -> list[int]:
    seeds = list(range(value)) if isinstance(value, int) else list(value)
    if not seeds:
        raise ConfigError("seeds: give at least one seed (a list, or a count such as 3)")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be >= 0, got {seeds}")
    _check_unique([str(s) for s in seeds], "seeds: listed twice:", "")
    return seeds


def _entry(value: str | dict[str, Any], index: int, study_path: Path) -> RunEntry:
    entry = RunEntry(recipe=value) if isinstance(value, str) else from_dict(
        RunEntry, value, f"recipes.{index}"
    )  # fmt: skip
    if not entry.recipe:
        raise ConfigError(f"recipes.{index}: give the recipe's name or path ('recipe: ...')")
    as_path = Path(entry.recipe)
    if as_path.suffix in (".yaml", ".yml") and not as_path.is_absolute():
        beside = study_path.parent / as_path  # a recipe file next to the study file
        if beside.is_file() and not as_path.is_file():
            entry.recipe = str(beside)
    resolve_recipe_path(entry.recipe)  # unknown recipe: one line, nearest name
    if not entry.name:
        stem = Path(entry.recipe).with_suffix("") if as_path.suffix else Path(entry.recipe)
        entry.name = stem.name if as_path.suffix else stem.as_posix().replace("/", "-")
    if "/" in entry.name or entry.name.startswith("."):
        raise ConfigError(f"recipes.{index}.name: '{entry.name}' must be a plain folder name")
    for text in entry.overrides:
        parse_override(text)
    return entry


def _plugin_task_probe(name: str, where: str) -> str:
    """The default probe kind of a task from outside the package (``module:NAME`` or an
    installed ``jepactl.tasks`` entry point): importing it is the check that it exists."""
    from jepactl.plugins import GROUPS, entry_points, is_dotted

    plugins = [p.name for p in entry_points(GROUPS["tasks"])]
    if not is_dotted(name) and name not in plugins:
        valid = [*TASK_NAMES, *plugins]
        raise ConfigError(f"{where}.task: unknown task '{name}'{suggestion(name, valid)}")
    from jepactl.features.registry import get_benchmark

    try:
        bench = get_benchmark(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    return bench.probe + ("-sklearn" if bench.sklearn_features is not None else "")


def _task(spec: TaskSpec, index: int) -> TaskSpec:
    where = f"tasks.{index}"
    task = TASK_ALIASES.get(spec.task, spec.task)
    if task in DEFAULT_PROBE:
        probes = list(spec.probes) or [DEFAULT_PROBE[task]]
    else:
        probes = list(spec.probes) or [_plugin_task_probe(spec.task, where)]
    for kind in probes:
        if kind not in PROBE_KINDS:
            raise ConfigError(
                f"{where}.probes: unknown probe kind '{kind}'{suggestion(kind, PROBE_KINDS)}"
            )
    _check_unique(probes, f"{where}.probes: listed twice:", "")
    for key in ("limit", "epochs"):
        if getattr(spec, key) < 0:
            raise ConfigError(f"{where}.{key} must be >= 0, got {getattr(spec, key)}")
    pools = ("none", "time", "space2x2", "mean")
    if spec.pool and spec.pool not in pools:
        raise ConfigError(
            f"{where}.pool: unknown pooling '{spec.pool}'{suggestion(spec.pool, pools)}"
        )
    return TaskSpec(task, probes, spec.limit, spec.epochs, spec.pool)


def _baseline(name: str, entries: list[RunEntry]) -> str:
    """The entry the Δs are taken against: named (recipe or entry name), else the one whose
    name says baseline; "" when there is none."""
    if name:
        for e in entries:
            if name in (e.recipe, e.name):
                return e.name
        names = [e.recipe for e in entries]
        raise ConfigError(
            f"baseline: '{name}' is not one of the study's recipes{suggestion(name, names)}"
        )
    said = [e.name for e in entries if "baseline" in e.name]
    return said[0] if len(said) == 1 else ""


def _check_resources(res: Resources) -> None:
    zero_ok = ("gpus_per_node", "tasks_per_node", "signal_delay_s")
    for key in ("nodes", *zero_ok, "cpus_per_task", "time_min"):
        if getattr(res, key) < (0 if key in zero_ok else 1):
            raise ConfigError(f"resources.{key} must be positive, got {getattr(res, key)}")
    if res.max_requeues < 0 or res.mem_gb < 0 or res.eval.mem_gb < 0:
        raise ConfigError("resources: max_requeues and mem_gb must be >= 0")
    for key in ("gpus", "cpus_per_task", "time_min"):
        if getattr(res.eval, key) < (0 if key == "gpus" else 1):
            raise ConfigError(
                f"resources.eval.{key} must be positive, got {getattr(res.eval, key)}"
            )
    shortest = min(res.time_min, res.eval.time_min)
    if res.signal_delay_s * 2 > shortest * 60:
        raise ConfigError(
            f"resources.signal_delay_s ({res.signal_delay_s} s) is over half the shortest time "
            f"limit ({shortest} min): a job would be told to stop almost as soon as it starts; "
            "lower it or raise time_min"
        )


def _check_unique(values: list[str], message: str, hint: str) -> None:
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        extra = f"; give one a '{hint}'" if hint else ""
        raise ConfigError(f"{message} {', '.join(twice)}{extra}")


def _total_steps(config: dict[str, Any]) -> int:
    optim = config.get("optim", {})
    return int(optim.get("epochs", 0)) * int(optim.get("iters_per_epoch", 0))
