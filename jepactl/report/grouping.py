"""Runs grouped into methods: one :class:`Group` per config, up to the seed and the runtime keys.

Each group is one row of the table, labelled by its display name (with the differing dotted
keys when two groups share a name); an untrained control is a group of its own.
:func:`method_key` is also what ``jepactl plot`` (:mod:`jepactl.report.curves`) groups seeds
by. Cut from the table because it compares configs only and knows nothing of values, Δ or
baselines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jepactl.config import RUNTIME_KEYS, canonical_data_names, config_diff
from jepactl.report.runs import RunRecord
from jepactl.utils import json_ready

#: Keys removed before grouping: the seed and the runtime keys (how a run executed, not what it
#: computed), so they never split a row.
GROUPING_IGNORED = RUNTIME_KEYS | {"train.seed"}
UNTRAINED_SUFFIX = " (untrained)"


@dataclass
class Group:
    """Runs of one method: configs equal up to the seed and the runtime keys."""

    display_name: str
    config: dict[str, Any]
    runs: list[RunRecord]
    order: int
    label: str = ""
    untrained: bool = False

    def values(self, bench: str) -> list[tuple[Any, float]]:
        return [(r.seed, r.results[bench].top1) for r in self.runs if bench in r.results]


# --------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Group runs by config (up to seed and runtime keys) and by whether they were trained (an
    untrained control is its own row); give each group a unique label."""
    groups: dict[tuple[str, bool], Group] = {}
    for order, run in enumerate(runs):
        key = (method_key(run.config), run.untrained)
        if key not in groups:
            name = run.display_name + (UNTRAINED_SUFFIX if run.untrained else "")
            config = strip_keys(run.config, GROUPING_IGNORED)
            groups[key] = Group(name, config, [], order, untrained=run.untrained)
        groups[key].runs.append(run)
    out = list(groups.values())
    _assign_labels(out)
    return out


def method_key(config: dict[str, Any]) -> str:
    """Runs whose configs give the same key are seeds of one method: the config without its
    seed and runtime keys (:data:`GROUPING_IGNORED`), as canonical JSON."""
    canonical = canonical_data_names(config)  # imagenet100 (older runs) is in100
    return json.dumps(strip_keys(canonical, GROUPING_IGNORED), sort_keys=True, default=str)


def strip_keys(config: dict[str, Any], dotted: Iterable[str]) -> dict[str, Any]:
    """A copy of ``config`` without the given dotted keys (absent ones are ignored)."""
    out = json.loads(json.dumps(json_ready(config), default=str))
    for key in dotted:
        *parents, last = key.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _assign_labels(groups: list[Group]) -> None:
    by_name: dict[str, list[Group]] = {}
    for g in groups:
        by_name.setdefault(g.display_name, []).append(g)
    for same in by_name.values():
        for g in same:
            g.label = g.display_name if len(same) == 1 else _disambiguated(g, same)
    _make_unique(groups)


def _disambiguated(group: Group, same: list[Group]) -> str:
    keys: list[str] = []
    for other in same:
        if other is not group:
            keys += [k for k in config_diff(group.config, other.config) if k not in keys]
    shown = [f"{k}={_fmt_config_value(_get_dotted(group.config, k))}" for k in keys[:3]]
    more = ", …" if len(keys) > 3 else ""
    return f"{group.display_name} ({', '.join(shown)}{more})"


def _make_unique(groups: list[Group]) -> None:
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
        if seen[g.label] > 1:
            g.label = f"{g.label} #{seen[g.label]}"


_UNSET = object()


def _get_dotted(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _UNSET
    return node


def _fmt_config_value(value: Any) -> str:
    if value is _UNSET:
        return "unset"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)
