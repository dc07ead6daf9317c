"""Every evaluation task by name: the dataset benchmarks, the synthetic motion tasks, and
tasks from outside the package.

:data:`BENCHMARKS` is a plain dict of the built-in tasks; ``synth-motion`` is an alias of
``synth-motion-directions``, the task Table 6's numbers come from. :data:`TASK_REGISTRY` adds
a researcher's own (:mod:`jepactl.plugins`): a :class:`Benchmark` instance named by an installed
package's ``jepactl.tasks`` entry point, or by a dotted path (``--task mylab.tasks:SHAPES``).
Its ``reader`` may be a built-in reader, ``synth``, or a plugin reader.
"""

from __future__ import annotations

import dataclasses

from jepactl.errors import ConfigError
from jepactl.features.benchmarks import DATASET_BENCHMARKS, Benchmark
from jepactl.features.synth_motion import registered_benchmarks
from jepactl.plugins import GROUPS, Registry
from jepactl.profiles import base_task, check_profile

__all__ = ["ALIASES", "BENCHMARKS", "TASK_REGISTRY", "get_benchmark", "names"]

BENCHMARKS: dict[str, Benchmark] = {**DATASET_BENCHMARKS, **registered_benchmarks()}
ALIASES: dict[str, str] = {"synth-motion": "synth-motion-directions"}

#: Built-in tasks, entry points of ``jepactl.tasks``, and ``module:NAME`` paths.
TASK_REGISTRY: Registry[Benchmark] = Registry(
    "task", GROUPS["tasks"], BENCHMARKS, Benchmark, kind="instance"
)


def names() -> list[str]:
    """Every name a user may give, aliases and installed plugins included, in registry order."""
    return [*TASK_REGISTRY.names(), *ALIASES]


def get_benchmark(name: str | Benchmark, profile: str = "paper") -> Benchmark:
    """The task ``name`` means (a :class:`Benchmark` is returned as is), under ``profile``:
    ``reference`` (or a name ending ``@reference``) is the task as the reference scripts ran
    it (:meth:`Benchmark.reference`). An entry point's task takes the entry point's name (its
    cache folder and result file are named so); a plugin task named like a built-in one is
    refused (their caches would share a folder)."""
    check_profile(profile)
    if isinstance(name, Benchmark):
        return name.reference() if profile == "reference" else name
    name, named = base_task(name)
    bench = _get(name)
    return bench.reference() if "reference" in (profile, named) else bench


def _get(name: str) -> Benchmark:
    name = ALIASES.get(name, name)
    bench = TASK_REGISTRY.get(name, "task")
    if not TASK_REGISTRY.is_plugin(name):
        return bench
    if name in TASK_REGISTRY.plugins() and bench.name != name:
        bench = dataclasses.replace(bench, name=name)
    if bench.name in BENCHMARKS or bench.name in ALIASES:
        raise ConfigError(
            f"task {name}: its name '{bench.name}' is a built-in task's; give the Benchmark "
            "another name"
        )
    return bench
