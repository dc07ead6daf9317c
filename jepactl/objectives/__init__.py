"""Objective-term registry: recipe name -> ``Term`` class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from jepactl.objectives.base import StepContext, Term
from jepactl.objectives.jepa import ContextLoss, PredictionLoss, distance_weights

TERMS: dict[str, type[Term]] = {
    "jepa": PredictionLoss,
    "jepa_context": ContextLoss,
}


def build_terms(specs: Mapping[str, Mapping[str, Any]]) -> nn.ModuleDict:
    """One ``Term`` per recipe entry (``{name: {type?: registry name, **params}}``)."""
    terms = nn.ModuleDict()
    for name, params in specs.items():
        params = dict(params)
        term = TERMS[params.pop("type", name)](**params)
        term.name = name
        terms[name] = term
    return terms


__all__ = [
    "TERMS",
    "ContextLoss",
    "PredictionLoss",
    "StepContext",
    "Term",
    "build_terms",
    "distance_weights",
]
