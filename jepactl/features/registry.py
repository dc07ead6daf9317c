"""Every benchmark by name: the dataset benchmarks and the synthetic motion tasks.

A plain dict registry (:data:`BENCHMARKS`); ``synth-motion`` is an alias of
``synth-motion-directions``, the task Table 6's numbers come from.
"""

from __future__ import annotations

from jepactl.errors import ConfigError
from jepactl.features.benchmarks import DATASET_BENCHMARKS, Benchmark
from jepactl.features.synth_motion import registered_benchmarks
from jepactl.utils import suggestion

__all__ = ["ALIASES", "BENCHMARKS", "get_benchmark", "names"]

BENCHMARKS: dict[str, Benchmark] = {**DATASET_BENCHMARKS, **registered_benchmarks()}
ALIASES: dict[str, str] = {"synth-motion": "synth-motion-directions"}


def names() -> list[str]:
    """Every name a user may give, aliases included, in registry order."""
    return [*BENCHMARKS, *ALIASES]


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """The registered benchmark ``name`` (a :class:`Benchmark` is returned as is)."""
    if isinstance(name, Benchmark):
        return name
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark '{name}'{suggestion(name, names())}")
    return BENCHMARKS[name]
