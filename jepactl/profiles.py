"""Profiles: the method as the paper writes it (``paper``, the default) or the paper's public
code as it ran (``reference``), behind one switch.

Every departure of the reference code from the paper is a named switch of its own (a recipe
key, a benchmark field, a weights choice; ``docs/reference-differences.md`` lists them all).
``--profile reference`` on ``pretrain`` (or ``profile: reference`` in a recipe) and on
``extract-features``, ``probe``, ``synth-motion`` and ``compare`` sets all of them at once:

* :func:`apply_recipe_profile` rewrites a resolved recipe dict (before validation), per
  section, per mask group and per term type, and returns what it set, so the run can say so;
  the user's explicit ``--set`` overrides are applied after it and win.
* :func:`reference_protocol` gives the evaluation fields of a task's reference protocol
  (pooling, frames, probe kind, epochs, schedule).

Runs record their profile (``profile:`` in ``config.yaml``; ``profile`` in each cache's
attributes and each probe result), and ``compare`` never puts results of two profiles side
by side without saying so. Nothing here imports torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jepactl.errors import ConfigError
from jepactl.utils import suggestion

Profile = Literal["paper", "reference"]
PROFILES: tuple[str, ...] = ("paper", "reference")
#: A task evaluated under the reference profile is its own task, ``<name>@reference``: its own
#: cache folder and result file, and its own column in ``compare``.
SUFFIX = "@reference"


def check_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ConfigError(
            f"unknown profile '{name}'{suggestion(name, PROFILES)} (valid: paper, reference)"
        )
    return name  # type: ignore[return-value]


@dataclass(frozen=True)
class Setting:
    """One reference switch of a recipe: ``key`` (dotted, relative to its ``scope``) set to
    ``value`` where ``when`` holds of the entry's parameters (of the whole recipe for the
    recipe's own keys)."""

    scope: str  # "" (the recipe), "mask" (every mask group), "term:<type>" (every such term)
    key: str
    value: Any
    why: str
    when: Callable[[Mapping[str, Any]], bool] | None = None


#: The recipe's reference switches (docs/reference-differences.md has the table).
RECIPE_SETTINGS: tuple[Setting, ...] = (
    Setting("", "optim.schedule", "constant", "the reference's LR stays at its peak after warm-up"),
    Setting("", "objective.stopgrad_targets", False,
            "EMA-disabled runs: gradient through both branches (no stop-gradient)"),
    Setting("", "model.deep_supervision", True,
            "training output = 4 block levels concatenated (3072-d at ViT-B)"),
    Setting("", "model.pred_embed", "mlp", "predictor input embedding: MLP (3072->768->256)"),
    Setting("", "model.rope_grid", 16, "RoPE row/column positions rescaled onto a 16-cell grid"),
    Setting("", "model.k_bias", True, "attention keys with a trained bias"),
    Setting("", "data.images", "repeat", "images as 16-frame static clips, tubelet 2"),
    Setting("", "data.frame_stride", 1, "UCF-101 runs read consecutive frames (fps 16)",
            lambda raw: (raw.get("data") or {}).get("source") == "ucf101"),
    Setting("mask", "equalize", "truncate", "equal mask lengths by cutting the tail (late frames)"),
    Setting("mask:motion", "sampling", "power", "motion masks: power law, not exp(alpha s)"),
    Setting("mask:motion", "score", "block_mean", "motion masks: block-mean score"),
    Setting("term:ld", "reference_no_grad", True,
            "LD-HW computed under no_grad: the DynHead never trains",
            lambda p: bool(p.get("hard_weighting", False))),
    Setting("term:ld", "clip_logits", None, "hard weights: logits not clipped",
            lambda p: bool(p.get("hard_weighting", False))),
    Setting("term:hw_jepa", "clip_logits", None, "hard weights: logits not clipped"),
)  # fmt: skip


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def apply_recipe_profile(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` (a resolved recipe dict) with its profile's settings applied, and the settings
    as ``key=value`` lines. The ``paper`` profile changes nothing."""
    out = copy.deepcopy(dict(raw))
    profile = check_profile(str(out.get("profile", "paper")))
    if profile == "paper":
        return out, []
    done: list[str] = []
    for s in RECIPE_SETTINGS:
        if s.scope == "":
            if s.when is None or s.when(out):
                _set(out, s.key, s.value)
                done.append(f"{s.key}={_text(s.value)}")
        elif s.scope.startswith("mask"):
            strategy = s.scope.partition(":")[2]
            for i, group in enumerate(out.get("masks") or []):
                if not isinstance(group, dict):
                    continue
                if strategy and group.get("strategy") != strategy:
                    continue
                if s.when is None or s.when(group):
                    group[s.key] = s.value
                    done.append(f"masks.{i}.{s.key}={_text(s.value)}")
        else:
            kind = s.scope.partition(":")[2]
            terms = (out.get("objective") or {}).get("terms") or {}
            for name, params in terms.items():
                if params is False:
                    continue
                params = dict(params or {})
                if str(params.get("type", name)) != kind or (s.when and not s.when(params)):
                    continue
                params[s.key] = s.value
                terms[name] = params
                done.append(f"objective.terms.{name}.{s.key}={_text(s.value)}")
    return out, done


def _text(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


#: The evaluation protocol the reference scripts ran, per task (reference-evaluation.md §A.5):
#: fields of :class:`~jepactl.features.benchmarks.Benchmark` to replace.
REFERENCE_PROTOCOLS: dict[str, dict[str, Any]] = {
    "diving48": {"probe": "attentive-reference", "epochs": 100, "schedule": "constant"},
    "ssv2": {"probe": "attentive-reference", "epochs": 100, "schedule": "constant",
             "pool": "mean"},
    "in100": {"frames": 16, "epochs": 50, "schedule": "constant", "pool": "mean"},
    "ucf101": {"probe": "attentive-reference", "epochs": 100, "schedule": "constant"},
}  # fmt: skip


def reference_protocol(task: str) -> dict[str, Any]:
    """The Benchmark fields the reference profile sets for ``task`` (empty for a task the
    reference never ran, e.g. a plugin's: then only the weights rule and the name change)."""
    return dict(REFERENCE_PROTOCOLS.get(task, {}))


def base_task(name: str) -> tuple[str, Profile]:
    """``ssv2@reference`` -> ``("ssv2", "reference")``; ``ssv2`` -> ``("ssv2", "paper")``."""
    if name.endswith(SUFFIX):
        return name[: -len(SUFFIX)], "reference"
    return name, "paper"
