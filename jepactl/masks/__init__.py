"""Mask strategies: which tokens the encoder sees (context) and which it must predict (target).

Strategies are built from config mappings such as ``{"strategy": "multiblock", "num_blocks": 8,
"spatial_scale": 0.15}`` via :func:`build_mask_strategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jepactl.masks.base import Masks, MaskStrategy, TokenGrid
from jepactl.masks.motion import MotionGuided3D
from jepactl.masks.multiblock import MultiBlock3D
from jepactl.plugins import GROUPS, Registry
from jepactl.utils import suggestion

__all__ = [
    "MASK_REGISTRY",
    "MASK_STRATEGIES",
    "MaskStrategy",
    "Masks",
    "MotionGuided3D",
    "MultiBlock3D",
    "TokenGrid",
    "build_mask_strategy",
]

MASK_STRATEGIES: dict[str, type[MaskStrategy]] = {
    "multiblock": MultiBlock3D,
    "motion": MotionGuided3D,
}
#: Built-in strategies, entry points (group ``jepactl.masks``) and dotted paths.
MASK_REGISTRY: Registry[type[MaskStrategy]] = Registry(
    "mask strategy", GROUPS["masks"], MASK_STRATEGIES
)


def build_mask_strategy(spec: Mapping[str, Any]) -> MaskStrategy:
    """Build the strategy named by ``spec["strategy"]``; the other keys are its kwargs.

    Raises ``ValueError`` if the name is missing or unknown (naming the closest valid one).
    """
    if "strategy" not in spec:
        raise ValueError(
            f"mask spec needs a 'strategy' key (one of {sorted(MASK_STRATEGIES)}), "
            f"got keys {sorted(spec)}"
        )
    kwargs = dict(spec)
    name = str(kwargs.pop("strategy"))
    if name not in MASK_REGISTRY:
        raise ValueError(f"unknown mask strategy {name!r}{suggestion(name, MASK_REGISTRY)}")
    strategy: MaskStrategy = MASK_REGISTRY.get(name)(**kwargs)
    return strategy
